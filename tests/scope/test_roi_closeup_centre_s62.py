"""A close-up or recentring on a cell in an off-centre camera ROI images it at the ROI's centre.

The stage position is the whole sensor's centre: moving it to the cell's own stage
place put the cell at the sensor's centre, at the corner of a quarter-sensor ROI. The
stage goes where the ROI's frames have the cell at their centre (`Observation.aim_xy`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from livescope.policy import Observation, Rule
from livescope.scope import SimulatedMicroscope
from tests.policy.test_policy import observation

PX = 0.65


def _cell(
    sim: SimulatedMicroscope, t: float, roi: tuple[int, int, int, int]
) -> tuple[int, float, float]:
    """A cell well inside ``roi``'s frame at stage (0, 0): id, row, column in that frame."""
    g = sim.ground_truth(t, 0.0, 0.0, pixel_size_um=PX, roi=roi)
    h, w = g.labels.shape
    for cid in np.unique(g.labels[g.labels > 0]).tolist():
        rr, cc = np.nonzero(g.labels == cid)
        if rr.min() > 10 and cc.min() > 10 and rr.max() < h - 11 and cc.max() < w - 11:
            return int(cid), float(rr.mean()), float(cc.mean())
    raise AssertionError("no cell whole in the frame")


@pytest.mark.parametrize(
    ("roi", "offset_px"),
    [
        pytest.param((0, 0, 256, 256), (-128.0, -128.0), id="top-left-quarter"),
        pytest.param((300, 40, 200, 120), (144.0, -156.0), id="off-centre-oblong"),
        pytest.param((0, 0, 512, 512), (0.0, 0.0), id="whole-sensor"),
    ],
)
@pytest.mark.parametrize("action", ["acquire", "recentre"])
def test_the_cell_is_at_the_centre_of_the_frames_taken_where_the_stage_goes(
    roi: tuple[int, int, int, int], offset_px: tuple[float, float], action: str
) -> None:
    t = 600.0
    with SimulatedMicroscope("sim", seed=3) as sim:
        cid, row, col = _cell(sim, t, roi)
        w, h = roi[2], roi[3]
        roi_um = (offset_px[0] * PX, offset_px[1] * PX)

        def field(t: int, tracks: list[int]) -> Observation:
            base = observation(t, tracks, ys=[row] * len(tracks), xs=[col] * len(tracks),
                               stage=(0.0, 0.0, 0.0))  # fmt: skip
            return replace(base, shape=(h, w), pixel_size_um=PX, roi_offset_um=roi_um)

        do = {"acquire": {"channels": ["DAPI"]}} if action == "acquire" else {"recentre": {}}
        rule = Rule("r", {"enter_region": {"region": [0, 0, h, w]}}, do)
        assert list(rule.decide(field(0, []))) == []  # (the position's first field)
        (fired,) = rule.decide(field(1, [1]))  # (the cell comes in)
        d = fired.decision
        if action == "acquire":
            x, y = d.events[0].x_pos, d.events[0].y_pos  # type: ignore[union-attr]
        else:
            x, y = d.x_um, d.y_um  # type: ignore[union-attr]
        g = sim.ground_truth(t, float(x), float(y), pixel_size_um=PX, roi=roi)
        rr, cc = np.nonzero(g.labels == cid)
        assert rr.size, "the cell is not in the ROI's frame at all"
        assert abs(rr.mean() - (h - 1) / 2) < 2, rr.mean()
        assert abs(cc.mean() - (w - 1) / 2) < 2, cc.mean()
