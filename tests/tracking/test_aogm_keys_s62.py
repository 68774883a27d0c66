"""``evaluate_tracking``'s ``aogm`` gives the AOGM and its normaliser by name.

py-ctcmetrics' ``AOGM_0`` (the AOGM of an empty result) came out as the key ``"0"``,
and the AOGM itself was missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from livescope.tracking import evaluate_tracking
from tests.inference.test_metrics_review import _ctc, _frame


def test_the_aogm_its_normaliser_and_the_operations_are_named(tmp_path: Path) -> None:
    gt = [_frame((5, 250), np.uint16) for _ in range(3)]
    res = [_frame((10, 20), np.uint16), _frame((10, 20), np.uint16), _frame((10,), np.uint16)]
    r, g = _ctc(tmp_path, res, gt, "10 0 2 0\n20 0 1 0\n", "5 0 2 0\n250 0 2 0\n")
    out = evaluate_tracking(r, g)
    # cell 250 missed in frame 2: one FN (weight 10) and its link 1 -> 2 missing, one EA
    # (weight 1.5); 6 vertices and 4 edges: an empty result's AOGM is 10*6 + 1.5*4 = 66
    aogm = out["aogm"]
    assert (aogm["total"], aogm["empty"]) == (11.5, 66.0)
    assert {k: aogm[k] for k in ("ns", "fn", "fp", "ed", "ea", "ec")} == {
        "ns": 0.0, "fn": 1.0, "fp": 0.0, "ed": 0.0, "ea": 1.0, "ec": 0.0,
    }  # fmt: skip
    assert "0" not in aogm
    assert out["tra"] == round(1 - aogm["total"] / aogm["empty"], 5)
