"""Runs through the livescope engine: MDA on the simulated core, recorded by the sinks."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq
import yaml
import zarr

from livescope.record import read_ctc, read_frames
from livescope.schema import (
    AddEvents,
    FrameInfo,
    HardwareProfile,
    LivescopeError,
    StageLimitError,
    StopRun,
    clock_ns,
    load_profile,
)
from livescope.scope import LivescopeEngine, ScopeAgent, SimulatedMicroscope, run_simulated


def test_hardware_timed_burst(sim_profile: HardwareProfile, tmp_path: Path) -> None:
    seq = useq.MDASequence(
        stage_positions=[(100.0, 100.0, 0.0)],
        channels=[useq.Channel(config="DAPI", exposure=20.0)],
        time_plan=useq.TIntervalLoops(interval=0, loops=8),
    )
    summary = run_simulated(sim_profile, seq, tmp_path / "run")
    assert summary["frames_acquired"] == 8
    frames = read_frames(tmp_path / "run")
    assert all(f["hardware_triggered"] for f in frames)
    times = [f["sample_time_s"] for f in frames]
    assert np.allclose(np.diff(times), 0.020)  # one frame period each
    data = zarr.open_group(tmp_path / "run" / "data.ome.zarr", mode="r")["0/0"]
    assert data.shape[0] == 8
    last = np.asarray(data[7, 0, 0]).astype(float)
    assert np.percentile(last, 99.9) > sim_profile.camera.offset_adu + 150  # lit nuclei, not dark
    gt, tracks = read_ctc(tmp_path / "run" / "ground_truth" / "p0", kind="gt")
    assert len(gt) == 8
    assert tracks


def test_a_stop_cuts_a_hardware_timed_burst_short(sim: SimulatedMicroscope, tmp_path: Path) -> None:
    # the engine's wrapper did not pass the runner's stop on: a burst of 60 frames ran to
    # its end (seconds on a real camera) after the run was stopped
    seq = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=20.0)],
        time_plan=useq.TIntervalLoops(interval=0, loops=60),
    )
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path, sim=sim, bus="off")
    stopped: list[bool] = []

    def stop_at_the_third(img: Any, event: useq.MDAEvent, meta: Any) -> None:
        if event.index.get("t") == 2 and not stopped:
            stopped.append(agent._on_decision(StopRun(run_id=agent.run_id), clock_ns()).accepted)

    sim.core.mda.events.frameReady.connect(stop_at_the_third)
    summary = agent.run()
    assert stopped == [True]
    assert 3 <= summary["frames_acquired"] < 20
    assert summary["frames_failed"] == 0  # cut short on purpose: none failed
    assert summary["frames_written"] == summary["frames_acquired"]


def test_time_lapse_waits_are_scaled(sim_profile: HardwareProfile, tmp_path: Path) -> None:
    seq = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=600, loops=3),  # 20 min of sample time
    )
    summary = run_simulated(sim_profile, seq, tmp_path / "run")
    assert summary["duration_s"] < 10  # 1200 s / 600 = 2 s of waiting
    assert [f["sample_time_s"] for f in read_frames(tmp_path / "run")] == [0.0, 600.0, 1200.0]


def test_a_real_rig_times_frames_by_the_acquisition_clock(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # the core without its simulated clock, as on a real rig: frames are timed by
    # pymmcore-plus's own clock (seconds since the acquisition began), not left
    # without a time (the worker would then have had nothing to time cooldowns by)
    seq = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=0.2, loops=3),
    )
    ScopeAgent(sim.core, sim.profile, seq, tmp_path, bus="off").run()
    times = [f["sample_time_s"] for f in read_frames(tmp_path)]
    assert None not in times
    assert 0.0 <= times[0] < times[1] < times[2]
    # the interval's real waits, in s: time point k is due 0.2 k s after the start (the
    # runner waits until then), so no frame comes before it; two frames may come less
    # than 0.2 s apart, where the first was late (a busy machine: 0.216 then 0.188 s)
    assert all(t >= 0.2 * k - 0.002 for k, t in enumerate(times)), times


def test_a_core_without_pixel_calibration_stamps_the_profiles_pixel_size(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # Micro-Manager says 0 without a pixel-size calibration; 1 µm/px (as before) would
    # have put close-ups and recentring at 1/0.65 times their distance on this rig
    for name in list(sim.core.getAvailablePixelSizeConfigs()):
        sim.core.deletePixelSizeConfig(name)
    assert sim.core.getPixelSizeUm() == 0
    seq = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=60, loops=2),
    )
    ScopeAgent(sim.core, sim.profile, seq, tmp_path, sim=sim, bus="off").run()
    px = sim.profile.objective.pixel_size_um
    assert px != 1.0
    assert [f["pixel_size_um"] for f in read_frames(tmp_path)] == [px, px]
    attrs = zarr.open_group(tmp_path / "data.ome.zarr", mode="r")["0"].attrs.asdict()
    scale = attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert scale["scale"][-2:] == [px, px]


def test_the_bus_is_sized_for_a_camera_larger_than_its_profile_says(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    small = sim.profile.replace(camera=sim.profile.camera.replace(sensor_shape_px=(64, 64)))
    seq = useq.MDASequence(channels=[useq.Channel(config="Phase", exposure=5.0)])
    agent = ScopeAgent(sim.core, small, seq, tmp_path, sim=sim, bus="shm")
    try:
        assert agent.publisher is not None
        assert agent.publisher.ring is not None
        assert agent.publisher.ring.v.slot_bytes >= 512 * 512 * 2  # the camera's, not 64²'s
    finally:
        agent.close()


def test_a_camera_turned_against_the_stage_takes_micro_manager_s_orientation(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # a close-up or recentring centred on a cell went off it when the camera was
    # transposed or mirrored against the stage (the affine was only warned about)
    seq = useq.MDASequence(channels=[useq.Channel(config="Phase", exposure=5.0)])
    # the simulated core as a rig's (its affine set as a user's Micro-Manager would be)
    rig = sim.profile.replace(kind="micromanager", simulation=None, micromanager_config="rig.cfg")
    mirrored = rig.replace(camera=rig.camera.replace(orientation=(-1.0, 0.0, 0.0, 1.0)))
    config, px = sim.core.getCurrentPixelSizeConfig(), sim.core.getPixelSizeUm()
    before = tuple(sim.core.getPixelSizeAffine())

    def agent(profile: HardwareProfile, run: Path) -> HardwareProfile:
        ScopeAgent(sim.core, profile, seq, run, bus="off").close()
        return load_profile(run / "profile.yaml")  # what the worker reads

    try:
        # Micro-Manager's default (a plain scale, also binned): the profile's orientation
        for k, scale in enumerate((px, 2 * px)):
            sim.core.setPixelSizeAffine(config, (scale, 0.0, 0.0, 0.0, scale, 0.0))
            assert agent(mirrored, tmp_path / f"plain{k}").camera.orientation == (-1, 0, 0, 1)
        cases = [((0.0, px, 0.0, px, 0.0, 0.0), (0.0, 1.0, 1.0, 0.0)),  # transposed
                 ((-px, 0.0, 5.0, 0.0, px, 0.0), (-1.0, 0.0, 0.0, 1.0))]  # mirrored  # fmt: skip
        for affine, expected in cases:
            run = tmp_path / f"{expected}"
            run.mkdir()
            # a profile already there (`livescope run` writes it before the agent starts)
            (run / "profile.yaml").write_text(
                yaml.safe_dump(rig.model_dump(mode="json")), encoding="utf-8"
            )
            sim.core.setPixelSizeAffine(config, affine)
            assert agent(rig, run).camera.orientation == expected
        sim.core.setPixelSizeAffine(config, (px, 0.5 * px, 0.0, 0.0, px, 0.0))  # sheared
        with pytest.raises(LivescopeError, match=r"pixel size affine \(0.65, 0.325; 0, 0.65\) "
                           "is not a turn or mirror"):  # fmt: skip
            ScopeAgent(sim.core, rig, seq, tmp_path / "c", bus="off")
        sim.core.setPixelSizeAffine(config, (0.0, px, 0.0, px, 0.0, 0.0))
        with pytest.raises(LivescopeError, match="turns or mirrors the simulated microscope's"):
            ScopeAgent(sim.core, sim.profile, seq, tmp_path / "d", sim=sim, bus="off")
    finally:
        sim.core.setPixelSizeAffine(config, before)
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_a_channel_without_an_exposure_is_imaged_at_its_default(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # the camera kept the previous channel's exposure (400 ms) while the light-dose
    # budget and the guardrails booked the channel's default
    seq = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=400.0), useq.Channel(config="DAPI")],
        time_plan=useq.TIntervalLoops(interval=60, loops=2),
    )
    run_simulated(sim.profile, seq, tmp_path, seed=1)
    dapi = sim.profile.channels.get("DAPI").default_exposure_ms
    assert {(f["channel"], f["exposure_ms"]) for f in read_frames(tmp_path)} == {
        ("Phase", 400.0),
        ("DAPI", dapi),
    }


@pytest.mark.parametrize(
    ("b", "why"),
    [pytest.param((800.0, 800.0, 0.0), r"the XY stage did not move to \(800, 800\) µm", id="xy"),
     pytest.param((0.0, 0.0, 30.0), "the focus drive did not move to 30 µm", id="focus")],
)  # fmt: skip
def test_a_stage_that_refuses_a_move_fails_its_frames_not_the_rest_of_the_run(
    sim: SimulatedMicroscope, tmp_path: Path, b: tuple[float, float, float], why: str
) -> None:
    # the stock engine logged a refused XY move and imaged wherever the stage was (B's
    # frames were pictures of A, and the run said ok); a refused focus move ended the run
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A"),
                         useq.Position(x=b[0], y=b[1], z=b[2], name="B")],
        channels=[useq.Channel(config="Phase", exposure=20.0)],
        time_plan=useq.TIntervalLoops(interval=60, loops=2), axis_order="tpcz",
    )  # fmt: skip
    move, focus = sim._xy.set_position_um, sim.core.setZPosition

    def refuse_xy(x: float, y: float) -> None:
        if (x, y) == b[:2]:
            raise RuntimeError("refused by the device")
        move(x, y)

    def refuse_z(z: float) -> None:
        if z == b[2]:
            raise RuntimeError("refused by the device")
        focus(z)

    if b[2]:  # B differs from A in z only
        sim.core.setZPosition = refuse_z  # type: ignore[method-assign]
    else:
        sim._xy.set_position_um = refuse_xy  # type: ignore[method-assign]
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path, sim=sim, bus="off")
    with pytest.raises(LivescopeError, match=r"2 frame\(s\) could not be acquired; the first, "
                       rf"event t=0, p=1, c=0: {why}: refused by the device"):  # fmt: skip
        agent.run()
    frames = read_frames(tmp_path)
    assert [(f["position"], f["index"]["t"]) for f in frames] == [("A", 0), ("A", 1)]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not summary["ok"]
    assert summary["frames_failed"] == 2
    assert why.replace("\\", "") in summary["error"]


def test_a_channel_micro_manager_lacks_is_refused_in_the_plan_and_in_decisions(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # pymmcore-plus failed the whole run when it reached the first such frame (and a
    # decision adding one was accepted first)
    sim.core.deleteConfig("Channel", "DAPI")
    both = useq.MDASequence(channels=[useq.Channel(config="Phase", exposure=5.0),
                                      useq.Channel(config="DAPI", exposure=5.0)])  # fmt: skip
    with pytest.raises(LivescopeError, match=r"the plan's channel\(s\) 'DAPI' are not presets "
                       "of group 'Channel' in Micro-Manager's configuration"):  # fmt: skip
        ScopeAgent(sim.core, sim.profile, both, tmp_path / "a", sim=sim, bus="off")
    assert not (tmp_path / "a").exists()
    phase = useq.MDASequence(channels=[useq.Channel(config="Phase", exposure=5.0)])
    agent = ScopeAgent(sim.core, sim.profile, phase, tmp_path / "b", sim=sim, bus="off")
    try:
        added = useq.MDAEvent(index={"t": 5}, x_pos=0.0, y_pos=0.0, channel={"config": "DAPI"},
                              exposure=10.0)  # fmt: skip
        ack = agent._on_decision(AddEvents(run_id=agent.run_id, events=[added]), clock_ns())
    finally:
        agent.close()
    assert not ack.accepted
    assert "channel 'DAPI' is not a preset of group 'Channel' in Micro-Manager's" in ack.reason


@pytest.mark.parametrize(
    "positions",
    [pytest.param([], id="no-positions"),
     pytest.param([useq.Position(x=0, y=0, name="A")], id="position-without-z")],
)  # fmt: skip
def test_a_relative_z_plan_without_a_position_z_is_centred_on_the_focus(
    sim: SimulatedMicroscope, tmp_path: Path, positions: list[useq.Position]
) -> None:
    # useq counts it from the position's z: without one, its planes were at -2, 0, 2 µm
    # (on a real focus drive, far from the sample)
    seq = useq.MDASequence(
        stage_positions=positions,
        channels=[useq.Channel(config="DAPI", exposure=10.0)],
        z_plan=useq.ZRangeAround(range=4, step=2),
    )
    sim.core.setPosition(50.0)
    ScopeAgent(sim.core, sim.profile, seq, tmp_path, sim=sim, bus="off").run()
    assert [f["z_um"] for f in read_frames(tmp_path)] == [48.0, 50.0, 52.0]


def test_a_config_micro_manager_cannot_load_is_one_clear_error(tmp_path: Path) -> None:
    # (it was an OSError naming the device adapter, not the file: a traceback)
    from livescope.scope import run_micromanager

    cfg = tmp_path / "rig.cfg"
    cfg.write_text("Device,Camera,NoSuchAdapter,Cam\nProperty,Core,Initialize,1\n")
    rig = load_profile("widefield-2048-scmos").replace(micromanager_config=str(cfg))
    seq = useq.MDASequence(channels=[useq.Channel(config="Phase")])
    with pytest.raises(
        LivescopeError, match=f"Micro-Manager could not load the configuration {cfg}"
    ):
        run_micromanager(rig, seq, tmp_path / "run", bus="off")
    assert not (tmp_path / "run").exists()


def test_the_guardrails_take_the_field_of_the_objective_in_use(
    sim: SimulatedMicroscope, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # they took the profile's default objective's: on one of half the magnification the
    # field is twice as wide, and close-ups booked too little light to its neighbours
    seq = useq.MDASequence(channels=[useq.Channel(config="Phase", exposure=5.0)])
    rig = sim.profile.replace(default_objective="20x")
    assert sim.core.getPixelSizeUm() == 0.65  # the 10x is in
    agent = ScopeAgent(sim.core, rig, seq, tmp_path / "a", sim=sim, bus="off")
    agent.close()
    assert agent.profile.objective.name == "10x"
    assert agent.profile.field_of_view_um == sim.profile.field_of_view_um
    assert load_profile(tmp_path / "a" / "profile.yaml").default_objective == "10x"
    config = sim.core.getCurrentPixelSizeConfig()
    sim.core.setPixelSizeUm(config, 0.5)  # none of the profile's
    agent = ScopeAgent(sim.core, rig, seq, tmp_path / "b", sim=sim, bus="off")
    agent.close()
    assert agent.profile.objective.name == "20x"
    assert "pixel size 0.5 µm (binning 1) is none of the profile's objectives'" in caplog.text


def test_a_multi_camera_is_refused_before_anything_is_written(
    sim: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (the core says what Micro-Manager's Multi Camera device makes it say)
    monkeypatch.setattr(sim.core, "getNumberOfCameraChannels", lambda: 2)
    seq = useq.MDASequence(channels=[useq.Channel(config="Phase", exposure=5.0)])
    with pytest.raises(LivescopeError, match=r"has 2 camera channels \(a multi-camera\)"):
        ScopeAgent(sim.core, sim.profile, seq, tmp_path / "run", sim=sim, bus="shm")
    assert not (tmp_path / "run").exists()


class _FailingSink:
    def __init__(self) -> None:
        self.closed = False
        self.seen = 0

    def write(self, image: Any, info: FrameInfo) -> None:
        self.seen += 1
        if self.seen == 3:
            raise OSError("disk full")

    def close(self) -> None:
        self.closed = True


def test_a_failing_sink_cancels_the_run_and_is_raised(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    seq = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=60, loops=50),
    )
    sink = _FailingSink()
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path, sim=sim, bus="off", extra_sinks=[sink])
    with pytest.raises(LivescopeError, match="disk full"):
        agent.run()
    assert sink.closed
    assert sink.seen < 50  # cancelled, not run to the end


def test_a_full_disk_is_reported_once_and_leaves_no_half_written_summary(
    sim: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    seq = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=60, loops=50),
    )
    full = OSError(errno.ENOSPC, "No space left on device")

    class Full(_FailingSink):
        def write(self, image: Any, info: FrameInfo) -> None:
            self.seen += 1
            if self.seen >= 3:
                raise full

    write_text = Path.write_text

    def no_space(self: Path, *args: Any, **kwargs: Any) -> int:
        if "summary.json" in self.name:  # (the summary, or the temporary file it is written to)
            self.write_bytes(b"{")  # as a full disk does: the file made, its text cut short
            raise full
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", no_space)
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path, sim=sim, bus="inline",
                       extra_sinks=[Full()])  # fmt: skip
    # the sink's error is the one reported (not the summary's that came after it), naming
    # it, with how far the recording got (it holds the frame the other sink failed on)
    with pytest.raises(
        LivescopeError,
        match=r"Full failed \(not the recording\) after 3 of \d+ frame\(s\) were recorded: "
        r"\[Errno 28\] No space",
    ):
        agent.run()
    # no summary.json, not an empty or cut-short one: the folder reads as a run cut short
    assert not (tmp_path / "summary.json").exists()
    assert [p.name for p in tmp_path.iterdir() if "summary.json" in p.name] == []
    assert agent.server is not None
    assert not agent.server._thread.is_alive()  # closed all the same


def test_engine_refuses_positions_outside_travel(sim: SimulatedMicroscope) -> None:
    seq = useq.MDASequence(
        stage_positions=[(0.0, 0.0, 0.0), (3000.0, 0.0, 0.0)],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
    )
    engine = LivescopeEngine(sim.core, sim.profile, sim=sim)
    sim.core.mda.set_engine(engine)
    with pytest.raises(StageLimitError, match=r"stages\.xy\.x_range_um"):
        sim.core.mda.run(seq)
    assert engine.failed_events == []
    assert sim.core.getXYPosition() == (0.0, 0.0)


def test_an_agent_whose_caller_fails_before_the_run_is_closed(
    sim_profile: HardwareProfile, tmp_path: Path
) -> None:
    import threading

    from livescope.scope import demo_sequence

    def worker_did_not_start(agent: ScopeAgent) -> None:
        raise LivescopeError("the pipeline worker did not start")

    seq = demo_sequence(sim_profile, timepoints=1, positions=1)
    with pytest.raises(LivescopeError, match="did not start"):
        run_simulated(sim_profile, seq, tmp_path / "r", bus="inline", on_ready=worker_did_not_start)
    # its sockets and threads are gone with it (a caller that goes on leaks nothing)
    assert [t.name for t in threading.enumerate() if t.name.startswith("livescope-")] == []
    assert not (tmp_path / "r" / "bus.json").exists()


def test_a_run_expands_its_plan_once(
    sim_profile: HardwareProfile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command's plan check, run_simulated's and the agent's share one expansion."""
    from livescope.schema import check_plan

    expanded = []
    iterate = useq.MDASequence.__iter__

    def counting(self: useq.MDASequence) -> Any:
        expanded.append(self.uid)
        return iterate(self)

    monkeypatch.setattr(useq.MDASequence, "__iter__", counting)
    seq = useq.MDASequence(
        channels=[useq.Channel(config="DAPI", exposure=10.0)],
        time_plan=useq.TIntervalLoops(interval=0, loops=3),
    )
    check_plan(seq, sim_profile)  # as `livescope agent` / `run` / `demo --plan` do first
    summary = run_simulated(sim_profile, seq, tmp_path / "run", bus="off")
    assert summary["frames_acquired"] == 3
    assert expanded == [seq.uid]
    # another plan object is expanded on its own
    other = seq.model_copy(update={"time_plan": useq.TIntervalLoops(interval=0, loops=2)})
    check_plan(other, sim_profile)
    assert len(expanded) == 2


def test_a_burst_without_positions_records_where_the_stage_is(
    sim_profile: HardwareProfile, tmp_path: Path
) -> None:
    """pymmcore-plus reads no stage for a hardware-timed burst; its frames still say where."""
    seq = useq.MDASequence(
        channels=[useq.Channel(config="DAPI", exposure=10.0)],
        time_plan=useq.TIntervalLoops(interval=0, loops=4),
    )
    with SimulatedMicroscope(sim_profile) as sim:
        sim.core.setXYPosition(150.0, -80.0)
        sim.core.waitForSystem()
        ScopeAgent(sim.core, sim.profile, seq, tmp_path / "run", sim=sim, bus="off").run()
    frames = read_frames(tmp_path / "run")
    assert len(frames) == 4
    assert all(f["hardware_triggered"] for f in frames)
    assert {(f["x_um"], f["y_um"]) for f in frames} == {(150.0, -80.0)}


def test_the_demo_plan_refuses_positions_whose_fields_would_overlap(
    sim_profile: HardwareProfile,
) -> None:
    from livescope.scope import demo_sequence

    h, w = sim_profile.field_of_view_um
    seq = demo_sequence(sim_profile, timepoints=1, positions=5)
    xy = [(p.x, p.y) for p in seq.stage_positions]
    for (x0, y0), (x1, y1) in itertools.pairwise(xy):  # neighbours: fields apart
        assert abs(x1 - x0) >= w or abs(y1 - y0) >= h
    with pytest.raises(LivescopeError, match=r"6 positions do not fit .* at most 5; for more"):
        demo_sequence(sim_profile, timepoints=1, positions=6)
