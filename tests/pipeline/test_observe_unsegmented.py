"""A field nothing was segmented in: its cells are unknown to the rules, not none."""

from __future__ import annotations

import dataclasses

import numpy as np

from livescope.pipeline import FrameResult
from livescope.pipeline._jobs import Field
from livescope.pipeline._observe import observe
from livescope.policy import Rule

from ..policy.test_policy import obs


def _unsegmented(t: int) -> FrameResult:
    return FrameResult("p0", t)  # (a phase frame alone: no nuclear frame, no virtual stain)


def test_a_field_without_segmentation_is_said_so() -> None:
    fld = Field("p0", 3, {("Phase", 0): np.zeros((64, 64), np.uint16)},
                {"seq": 9, "x_um": 0.0, "y_um": 0.0}, 0)  # fmt: skip
    seen = observe(fld, _unsegmented(3), nuclear_frame=None, pixel_size_um=0.5, run_id="r",
                   engines={}, tracker=None)  # fmt: skip
    assert seen.segmented is False
    assert len(seen.cells) == 0
    assert obs(0, [1]).segmented  # (the default: what the rules saw before)


def test_cell_count_below_does_not_fire_on_a_field_not_segmented() -> None:
    # (a plan taking DAPI every few time points, with no virtual stain: every field between
    # fired 'below 1' as a field of no cells)
    rule = Rule("emptied", {"cell_count": {"below": 1}}, {"record": {}})
    assert list(rule.decide(obs(0, [1, 2]))) == []
    unknown = dataclasses.replace(obs(1, []), segmented=False)
    assert list(rule.decide(unknown)) == []
    assert len(list(rule.decide(obs(2, [])))) == 1  # a field segmented and empty: it fires


def test_a_run_of_mitosis_fields_goes_on_over_a_field_not_segmented() -> None:
    rule = Rule("m", {"mitosis": {"p_min": 0.5, "frames": 2}}, {"record": {}})
    assert list(rule.decide(obs(0, [7], [0.9]))) == []
    assert list(rule.decide(dataclasses.replace(obs(1, []), segmented=False))) == []
    fired = list(rule.decide(obs(2, [7], [0.9])))
    assert [f.track for f in fired] == [7]
