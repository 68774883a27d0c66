"""Review of the simulated microscope and the engine: each test a bug found and fixed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq

from livescope.schema import HardwareProfile
from livescope.scope import LivescopeEngine, SimulatedMicroscope, SimulatedSample


def _snap(sim: SimulatedMicroscope) -> np.ndarray:
    core = sim.core
    core.setConfig("Channel", "DAPI")
    core.setExposure(50.0)
    core.setShutterOpen(True)
    core.snapImage()
    return np.asarray(core.getImage()).copy()


def test_camera_roi_frame_is_a_crop_of_the_full_frame_and_truth_follows(
    sim_profile: HardwareProfile,
) -> None:
    # the camera rendered a field of the ROI's shape into its full-sensor buffer: every
    # snap with a ROI set (a plan's event ROI too) failed with a broadcast error
    x, y, w, h = 100, 50, 200, 120
    frames, truths = [], []
    for roi in (None, (x, y, w, h)):
        with SimulatedMicroscope(sim_profile, seed=3) as s:
            s.set_time(600.0)
            s.core.setXYPosition(150.0, -80.0)
            if roi is not None:
                s.core.setROI(*roi)
            frames.append(_snap(s))
            truths.append(s.ground_truth())
    full, cropped = frames
    assert cropped.shape == (h, w)
    assert np.array_equal(cropped, full[y : y + h, x : x + w])
    assert np.array_equal(truths[1].labels, truths[0].labels[y : y + h, x : x + w])
    assert set(truths[1].cell_ids) == set(np.unique(truths[1].labels[truths[1].labels > 0]))


def test_core_reports_the_cameras_bit_depth(sim: SimulatedMicroscope) -> None:
    # UniMMCore reported the dtype's 16 bits for the 12-bit simulated camera
    assert sim.core.getImageBitDepth() == sim.profile.camera.bit_depth == 12
    assert _snap(sim).dtype == np.uint16


@pytest.mark.parametrize("exposure", [math.inf, math.nan, -1.0, 0.0])
def test_camera_refuses_exposures_no_camera_takes(
    sim: SimulatedMicroscope, exposure: float
) -> None:
    # an infinite exposure was accepted: the next snap failed deep in the sample
    # ("cannot convert float NaN to integer"), a sequence would sleep forever
    sim.core.setExposure(20.0)
    with pytest.raises(ValueError, match="exposure must be"):
        sim.core.setExposure(exposure)
    assert sim.core.getExposure() == 20.0


def test_sample_time_must_be_finite(sim: SimulatedMicroscope) -> None:
    # set_time(inf) was accepted; the next frame failed with an OverflowError
    with pytest.raises(ValueError, match="finite"):
        sim.set_time(math.inf)
    with pytest.raises(ValueError, match="finite"):
        sim.sample.state_at(math.inf)
    assert sim.time_s == 0.0


def test_lineage_keeps_every_cell_after_an_earlier_time_is_simulated_again(
    sim_profile: HardwareProfile,
) -> None:
    # asking for a time more than 2 h back re-simulated from the seed and forgot the
    # lineage of every later cell (the run's lineage.json lost its divisions)
    assert sim_profile.simulation is not None
    params = sim_profile.simulation.replace(sample_size_um=(600.0, 600.0))
    s = SimulatedSample(params, seed=2)
    s.state_at(3 * 3600.0)
    before = [(r.cell_id, r.parent_id, r.end_s, r.fate) for r in s.records()]
    assert sum(f == "divided" for *_, f in before) > 5
    s.state_at(0.0)
    assert [(r.cell_id, r.parent_id, r.end_s, r.fate) for r in s.records()] == before
    s.state_at(3 * 3600.0)  # simulated again as far: the same lineage
    assert [(r.cell_id, r.parent_id, r.end_s, r.fate) for r in s.records()] == before


def _run(sim: SimulatedMicroscope, seq: useq.MDASequence) -> list[dict[str, Any]]:
    sim.core.mda.set_engine(LivescopeEngine(sim.core, sim.profile, sim))
    got: list[dict[str, Any]] = []
    sim.core.mda.events.frameReady.connect(lambda img, ev, meta: got.append(meta))
    sim.core.mda.run(seq)
    return got


def test_burst_frames_metadata_carries_each_frames_sample_time(sim: SimulatedMicroscope) -> None:
    # every frame of a hardware-timed burst said the burst's start time in
    # ``livescope.sample_time_s`` (what `truth_for` reads), while frame k shows the
    # sample k frame periods later
    seq = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=20.0)],
        time_plan=useq.TIntervalLoops(interval=0, loops=6),
    )
    metas = _run(sim, seq)
    assert len(metas) == 6
    assert all(m.get("hardware_triggered") for m in metas)
    times = [m["livescope.sample_time_s"] for m in metas]
    assert np.allclose(times, np.arange(6) * 0.020)
    cam = [float(m["camera_metadata"]["livescope.sample_time_s"]) for m in metas]
    assert times == pytest.approx(cam)


def test_truth_for_takes_the_engines_frame_metadata(sim: SimulatedMicroscope) -> None:
    # truth_for asked for ``x_um``/``y_um``, which the engine's metadata never has (it
    # has ``position``), and told the user to record with the livescope engine
    seq = useq.MDASequence(
        stage_positions=[(120.0, -40.0, 0.0)],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=60, loops=2),
    )
    meta = _run(sim, seq)[-1]
    truth = sim.truth_for(meta)
    assert (truth.time_s, truth.x_um, truth.y_um) == (60.0, 120.0, -40.0)
    expected = sim.ground_truth(60.0, 120.0, -40.0)
    assert np.array_equal(truth.labels, expected.labels)
    # a recorded frame's FrameInfo works too
    info = {"sample_time_s": 60.0, "x_um": 120.0, "y_um": -40.0}
    assert np.array_equal(sim.truth_for(info).labels, expected.labels)


def test_ground_truth_numbers_ctc_frames_by_time_point_with_one_not_acquired(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # t=2 was not acquired (the rig refused it): the truth numbered its frames 0..3 by their
    # place in the list, so t=3's truth was frame 2 and scored against the result's t=2
    from livescope.record import read_ctc
    from livescope.schema import FrameInfo
    from livescope.scope import GroundTruthWriter

    writer = GroundTruthWriter(sim, tmp_path / "truth")
    for seq, t in enumerate((0, 1, 3, 4)):
        info = FrameInfo(
            seq=seq, index={"t": t}, position="p0", channel="DAPI", x_um=0.0, y_um=0.0,
            z_um=0.0, exposure_ms=20.0, pixel_size_um=0.65, sample_time_s=600.0 * t,
            runner_time_ms=0.0, t_camera_ns=0, hardware_triggered=False, added_by=None,
            adler32=0, shape=(512, 512), dtype="uint16", event={},
        )  # fmt: skip
        writer.write(np.zeros((512, 512), np.uint16), info)
    writer.close()
    frames, _ = read_ctc(tmp_path / "truth" / "p0", kind="gt")
    assert len(frames) == 5
    assert not frames[2].any()  # t=2: empty
    cells_at = [int(len(np.unique(f)) - 1) for f in frames]
    truth = [len(sim.ground_truth(600.0 * t, 0.0, 0.0).cell_ids) for t in (0, 1, 3, 4)]
    assert [cells_at[t] for t in (0, 1, 3, 4)] == truth
    assert writer.summary["positions"]["p0"]["frames"] == 5
