"""Track files saved as "UTF-8 with BOM" (Windows Notepad) are read like any other.

`livescope eval track` refused them ("line 1: '\\ufeff10 0 2 0' is not 'label begin end
parent'") and py-ctcmetrics cannot read them; the report's lineage failed on their
first line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livescope.tracking import evaluate_tracking
from livescope.view import write_report
from tests.inference.test_metrics_review import _ctc, _frame
from tests.view.test_report_robustness import make_run, not_drawn, section

BOM = "\ufeff".encode()


def _with_bom(path: Path) -> None:
    path.write_bytes(BOM + path.read_bytes())


@pytest.mark.parametrize("which", ["res", "gt", "both"])
def test_eval_track_scores_track_files_with_a_bom_as_without(tmp_path: Path, which: str) -> None:
    gt = [_frame((5, 250), np.uint16) for _ in range(3)]
    res = [_frame((10, 20), np.uint16), _frame((10, 20), np.uint16), _frame((10,), np.uint16)]
    (tmp_path / "plain").mkdir()
    (tmp_path / "bom").mkdir()
    r, g = _ctc(tmp_path / "plain", res, gt, "10 0 2 0\n20 0 1 0\n", "5 0 2 0\n250 0 2 0\n")
    want = evaluate_tracking(r, g)
    r, g = _ctc(tmp_path / "bom", res, gt, "10 0 2 0\n20 0 1 0\n", "5 0 2 0\n250 0 2 0\n")
    if which in ("res", "both"):
        _with_bom(r / "res_track.txt")
    if which in ("gt", "both"):
        _with_bom(g / "TRA" / "man_track.txt")
    assert evaluate_tracking(r, g) == want
    assert (r / "res_track.txt").read_bytes().startswith(BOM) == (which != "gt")  # (untouched)


def test_the_reports_lineage_reads_a_track_file_with_a_bom(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", positions=("p0",))
    _with_bom(run / "results" / "ctc" / "p0" / "res_track.txt")
    page = write_report(run).read_text(encoding="utf-8")
    assert not not_drawn(page)
    assert "expected 'L B E P'" not in page
    assert "<img" in section(page, "lineage")
