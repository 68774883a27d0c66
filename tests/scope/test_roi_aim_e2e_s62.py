"""A cell in a camera ROI off the sensor's centre is aimed at where it is, from frames.jsonl on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from livescope.pipeline import FrameResult
from livescope.pipeline._jobs import Field
from livescope.pipeline._observe import observe
from livescope.scope import ScopeAgent, SimulatedMicroscope, demo_sequence
from livescope.tracking import OnlineTracker, measure_objects


@pytest.mark.parametrize("roi", [(0, 0, 256, 256), (300, 40, 200, 120), None])
def test_a_recorded_frames_cells_are_aimed_at_where_they_are(
    sim: SimulatedMicroscope, tmp_path: Path, roi: tuple[int, int, int, int] | None
) -> None:
    if roi is not None:
        sim.core.setROI(*roi)
    seq = demo_sequence(sim.profile, timepoints=2, positions=1, interval_s=60.0)
    run = tmp_path / "run"
    assert ScopeAgent(sim.core, sim.profile, seq, run, sim=sim, bus="off").run()["ok"]
    lines = [json.loads(s) for s in (run / "frames.jsonl").read_text().splitlines() if s]
    misses = []
    for info in lines:
        truth = sim.truth_for(info, roi=roi)
        labels = truth.labels.astype(np.int32)
        nuclear = np.full(labels.shape, 300, np.uint16)
        tracker = OnlineTracker()
        objects = measure_objects(labels, nuclear)
        res = FrameResult(
            info["position"],
            0,
            labels=labels,
            tracks=tracker.update(objects, frame=0),
            objects=objects,
        )
        fld = Field(info["position"], 0, {("DAPI", 0): nuclear}, info, 0)
        obs = observe(
            fld,
            res,
            nuclear_frame=nuclear,
            pixel_size_um=info["pixel_size_um"],
            run_id="r",
            engines={},
            tracker=tracker.snapshot(),
        )
        state = sim.sample.state_at(info["sample_time_s"])
        at = {int(i): k for k, i in enumerate(state.ids.tolist())}
        h, w = labels.shape
        for lab, y, x in zip(obs.cells.labels, obs.cells.y, obs.cells.x, strict=True):
            rr, cc = np.nonzero(labels == lab)
            if rr.min() == 0 or cc.min() == 0 or rr.max() == h - 1 or cc.max() == w - 1:
                continue
            sx, sy = obs.stage_xy(y, x)
            k = at[int(lab)]
            misses.append(float(np.hypot(sx - state.x_um[k], sy - state.y_um[k])))
    assert len(misses) >= 4
    print(roi, "misses um max", round(max(misses), 2))
    assert max(misses) < 2.0
