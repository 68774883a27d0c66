"""Ctrl+C in a hardware-timed burst, and the truth of a frame whose ROI moved since.

Ctrl+C while the engine waited for the camera left a burst's frames never taken
counted taken (7 acquired, 60 taken, none left); Ctrl+C in a frame's signal (the
runner left the burst unfinished) counted its frames already acquired as left (3
acquired, none taken, 60 left). The simulated ground truth of a frame was drawn
where the camera's ROI sat when the truth writer ran, not where the frame's own
did (``roi_offset_px``): a same-size ROI moved since gave another place's truth.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from livescope.scope import LivescopeEngine, ScopeAgent, SimulatedMicroscope, demo_sequence
from livescope.scope import _fanout as fanout_module
from livescope.scope._truth import GroundTruthWriter

from .test_burst_stops_s62 import LOOPS, _burst, _burst_plan, _frames


def _interrupted_run(sim: SimulatedMicroscope, run: Path) -> dict[str, Any]:
    agent = ScopeAgent(sim.core, sim.profile, _burst_plan(), run, sim=sim, bus="off")
    with pytest.raises(KeyboardInterrupt):
        agent.run()
    summary: dict[str, Any] = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    return summary


def _assert_three_taken_the_rest_left(summary: dict[str, Any], run: Path) -> None:
    """The run's 3 frames were recorded, counted acquired and taken; the rest left."""
    frames = _frames(run)
    counts = summary["events"]
    assert len(frames) == 3
    assert summary["frames_acquired"] == len(frames)
    assert (counts["planned"], counts["planned_taken"]) == (LOOPS, len(frames))
    assert counts["left"] == LOOPS - len(frames)


def test_ctrl_c_while_the_engine_waits_for_the_camera_leaves_the_rest(
    sim: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pop = sim.core.popNextImageAndMD
    popped = [0]

    def pop_then_ctrl_c(*args: Any) -> Any:  # (the 4th frame's wait: Ctrl+C lands here)
        popped[0] += 1
        if popped[0] == 4:
            raise KeyboardInterrupt
        return pop(*args)

    monkeypatch.setattr(sim.core, "popNextImageAndMD", pop_then_ctrl_c)
    _assert_three_taken_the_rest_left(_interrupted_run(sim, tmp_path / "run"), tmp_path / "run")


def test_ctrl_c_in_a_frames_signal_counts_the_frames_acquired(
    sim: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_frame = fanout_module.FrameFanout.on_frame
    ready = [0]

    def on_frame_then_ctrl_c(self: Any, *args: Any, **kwargs: Any) -> None:
        on_frame(self, *args, **kwargs)
        ready[0] += 1
        if ready[0] == 3:  # (raised in the runner's frameReady: the burst is left unfinished)
            raise KeyboardInterrupt

    monkeypatch.setattr(fanout_module.FrameFanout, "on_frame", on_frame_then_ctrl_c)
    _assert_three_taken_the_rest_left(_interrupted_run(sim, tmp_path / "run"), tmp_path / "run")


@pytest.mark.parametrize("closed_first", [True, False], ids=["closed-first", "cut-off-first"])
def test_a_burst_left_unfinished_is_cut_off_once(
    sim: SimulatedMicroscope, closed_first: bool
) -> None:
    engine = LivescopeEngine(sim.core, sim.profile)
    engine.use_hardware_sequencing = True
    burst = _burst(engine, 6)
    events = list(burst.events)  # type: ignore[attr-defined]
    engine.burst_handed(burst)
    frames = engine.exec_event(burst)
    assert isinstance(frames, types.GeneratorType)
    try:
        assert next(frames) is not None
        assert next(frames) is not None
        if closed_first:  # (the runner closed it: GeneratorExit at the frame in hand)
            frames.close()
            assert engine.cut_off_events() == events[2:]
        else:  # (the run ended with the runner still in it)
            assert engine.cut_off_events() == events[2:]
            frames.close()
        assert engine.cut_off_events() == []  # (not counted left twice)
        assert engine.failed_events == []
    finally:
        if sim.core.isSequenceRunning():
            sim.core.stopSequenceAcquisition()


def test_truth_is_drawn_where_the_frames_roi_was(sim: SimulatedMicroscope, tmp_path: Path) -> None:
    sim.core.setROI(0, 0, 256, 256)
    run = tmp_path / "run"
    plan = demo_sequence(sim.profile, timepoints=1, positions=1)
    ScopeAgent(sim.core, sim.profile, plan, run, sim=sim, bus="off").run()
    info = _frames(run)[0]
    rows, cols = sim.profile.camera.sensor_shape_px
    assert info["roi_offset_px"] == [128 - cols / 2, 128 - rows / 2]
    own = sim.truth_for(info, roi=(0, 0, 256, 256)).labels
    assert len(np.unique(own)) > 1  # (cells in the frame's field)
    sim.core.setROI(256, 256, 256, 256)  # (moved, same size, before the truth is drawn)
    writer = GroundTruthWriter(sim, tmp_path / "truth")
    writer.write(np.zeros(info["shape"], np.uint16), info)  # type: ignore[arg-type]
    got = tifffile.imread(tmp_path / "truth" / info["position"] / "cell_ids" / "t0000.tif")
    np.testing.assert_array_equal(got, own)


def test_truth_of_a_frame_without_an_roi_offset_is_the_current_rois(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    sim.core.setROI(0, 0, 256, 256)
    run = tmp_path / "run"
    plan = demo_sequence(sim.profile, timepoints=1, positions=1)
    ScopeAgent(sim.core, sim.profile, plan, run, sim=sim, bus="off").run()
    info = _frames(run)[0]
    del info["roi_offset_px"]  # (recorded before frames said where their ROI was)
    sim.core.setROI(256, 256, 256, 256)
    writer = GroundTruthWriter(sim, tmp_path / "truth")
    writer.write(np.zeros(info["shape"], np.uint16), info)  # type: ignore[arg-type]
    got = tifffile.imread(tmp_path / "truth" / info["position"] / "cell_ids" / "t0000.tif")
    np.testing.assert_array_equal(got, sim.truth_for(info, roi=(256, 256, 256, 256)).labels)
