"""pycromanager backend: a pycromanager acquisition (Python backend) on the simulated scope.

Each pycromanager 1.0.2 / ndstorage 0.1.18 defect met (docs/design/replay.md, section 3)
has a test here, named after what livescope does about it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq

from livescope.bus import DecisionClient
from livescope.record import FrameKey, RecordingReader, open_dataset, read_frames
from livescope.schema import AddEvents, DecisionAck, HardwareProfile, LivescopeError, clock_ns
from livescope.scope import (
    PycromanagerAgent,
    ScopeAgent,
    SimulatedMicroscope,
    adapt_core,
    to_pycromanager_event,
)

from ..conftest import ROOT


@pytest.fixture(scope="module")
def profile(sim_profile: HardwareProfile) -> HardwareProfile:
    """The simulated rig with a 64x64 camera (fast)."""
    cam = sim_profile.camera.replace(sensor_shape_px=(64, 64))
    return sim_profile.replace(camera=cam.model_dump())


@pytest.fixture
def scope(profile: HardwareProfile) -> Iterator[SimulatedMicroscope]:
    with SimulatedMicroscope(profile) as sim:
        yield sim


def _plan(loops: int = 2, interval_s: float = 120.0, positions: int = 2) -> useq.MDASequence:
    return useq.MDASequence(
        stage_positions=[useq.Position(x=300.0 * i, y=100.0 * i, z=0, name="AB"[i])
                         for i in range(positions)],
        channels=[useq.Channel(config="Phase", exposure=5.0),
                  useq.Channel(config="DAPI", exposure=10.0)],
        time_plan=useq.TIntervalLoops(interval=interval_s, loops=loops),
    )  # fmt: skip


def _registry_is_clean() -> None:
    from mmpycorex import launcher
    from pycromanager.acquisition.acq_eng_py.internal.engine import Engine

    assert launcher._PYMMCORES == []
    engine = Engine.get_instance()
    assert engine is None or engine.core is None


def _run_interrupted(agent: PycromanagerAgent, progress: Callable[[int], None]) -> None:
    """Run ``agent``, expecting the KeyboardInterrupt of a Ctrl+C ``progress`` presses."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            agent.run(progress)
    finally:
        signal.signal(signal.SIGINT, before)


def _adler(image: np.ndarray) -> int:
    return zlib.adler32(np.ascontiguousarray(image).tobytes())


def _run_with_a_closeup(
    agent: PycromanagerAgent, added: list[useq.MDAEvent]
) -> tuple[DecisionAck, dict[str, Any]]:
    """Run ``agent``, sending a close-up of ``added`` once the first frame is in."""
    first_frame = threading.Event()
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(agent.run(lambda n: first_frame.set())))
    thread.start()
    client = DecisionClient(agent.server.endpoint)  # type: ignore[union-attr]
    try:
        assert first_frame.wait(30)
        ack = client.send(AddEvents(run_id=agent.run_id, events=added, rule="closeup"))
    finally:
        thread.join(60)
        client.close()
    assert not thread.is_alive()
    return ack, result


# ----------------------------------------------------------------- acceptance


def test_acquisition_runs_through_the_agent_with_an_adaptive_decision(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    agent = PycromanagerAgent(
        scope.core, scope.profile, _plan(loops=3, interval_s=300), run, sim=scope, bus="inline"
    )
    added = [useq.MDAEvent(index={"t": 100 + i, "p": 0}, channel={"config": "DAPI"})
             for i in range(2)]  # fmt: skip
    ack, result = _run_with_a_closeup(agent, added)
    assert ack.accepted, ack
    assert ack.events_added == 2

    planned = 2 * 2 * 3
    assert result["frames_acquired"] == result["frames_written"] == planned + 2
    assert result["events_submitted"] == result["images_saved"] == planned + 2
    assert result["backend"] == "pycromanager-python"
    assert result["decisions_accepted"] == 1

    frames = read_frames(run)
    assert [f["seq"] for f in frames] == list(range(planned + 2))
    extra = [f for f in frames if f["added_by"]]
    assert [f["index"] for f in extra] == [{"t": 100, "p": 0, "c": 1}, {"t": 101, "p": 0, "c": 1}]
    assert all(f["added_by"] == ack.decision_id for f in extra)
    assert all(f["position"] == "A" and f["channel"] == "DAPI" for f in extra)
    assert all(f["pixel_size_um"] == 0.65 for f in frames)

    # every frame is in the recording and in pycromanager's NDTiff dataset, same pixels
    reader = RecordingReader(run)
    with open_dataset(result["ndtiff"]) as nd:
        assert len(nd.frames) == len(frames)
        for f in frames:
            assert _adler(reader.read(f)) == f["adler32"], f["seq"]
            key = FrameKey(f["position"], f["index"]["t"], f["channel"])
            assert _adler(nd.read(key)) == f["adler32"], f["seq"]
    _registry_is_clean()


def test_a_closeup_asked_for_during_an_interval_0_plan_is_not_queued_behind_it(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    # the feeder handed pycromanager every time point at once: the feed ended at the
    # start, and a close-up asked for at the first frame was refused ("the run has ended")
    run = tmp_path / "run"
    loops = 30
    acks: list[DecisionAck] = []

    def at_first_frame(event: dict[str, Any]) -> dict[str, Any]:  # (pycromanager's thread)
        if not acks:
            added = [useq.MDAEvent(index={"t": 100, "p": 0}, channel={"config": "DAPI"})]
            closeup = AddEvents(run_id=agent.run_id, events=added, rule="closeup")
            acks.append(agent._on_decision(closeup, clock_ns()))
        return event

    agent = PycromanagerAgent(
        scope.core, scope.profile, _plan(loops=loops, interval_s=0), run, sim=scope, bus="off",
        post_camera_hook_fn=at_first_frame,
    )  # fmt: skip
    result = agent.run()
    assert acks[0].accepted, acks[0]
    assert result["frames_acquired"] == 2 * 2 * loops + 1
    frames = read_frames(run)
    (closeup,) = [k for k, f in enumerate(frames) if f["added_by"]]
    # after the events pycromanager held and the time point in progress, not at the end
    assert closeup <= agent.queue_ahead + 2 * 2, [f["index"] for f in frames]


def test_frames_are_the_pixels_the_camera_made(profile: HardwareProfile, tmp_path: Path) -> None:
    """Two defects darkened frames: ndstorage's buffered reader returned stale zeros in
    image_saved_fn, and UniMMCore's autoshutter leaves a Python shutter closed."""
    plan = _plan(loops=2)
    runs = {}
    for name, cls in (("mda", ScopeAgent), ("pycromanager", PycromanagerAgent)):
        with SimulatedMicroscope(profile) as sim:
            cls(sim.core, profile, plan, tmp_path / name, sim=sim, bus="off").run()
        runs[name] = read_frames(tmp_path / name)
    assert len(runs["pycromanager"]) == 8
    # same scope, same seed, same events: bit-identical frames
    assert [f["adler32"] for f in runs["pycromanager"]] == [f["adler32"] for f in runs["mda"]]
    for a, b in zip(runs["mda"], runs["pycromanager"], strict=True):
        assert (a["index"], a["sample_time_s"], a["x_um"], a["y_um"], a["exposure_ms"]) == (
            b["index"], b["sample_time_s"], b["x_um"], b["y_um"], b["exposure_ms"])  # fmt: skip


def test_a_real_rig_times_frames_by_micro_managers_elapsed_time_and_has_a_pixel_size(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    # the core without its simulated clock, as on a real rig: each frame's sample time is
    # Micro-Manager's ElapsedTime-ms (it was left out, and the worker had no clock)
    # and without a pixel-size calibration (Micro-Manager's 0): the profile's pixel size
    for name in list(scope.core.getAvailablePixelSizeConfigs()):
        scope.core.deletePixelSizeConfig(name)
    plan = _plan(loops=2, interval_s=0.3, positions=1)
    PycromanagerAgent(scope.core, scope.profile, plan, tmp_path, bus="off").run()
    frames = read_frames(tmp_path)
    assert {f["pixel_size_um"] for f in frames} == {scope.profile.objective.pixel_size_um}
    times = [f["sample_time_s"] for f in frames]
    assert len(times) == 4
    assert None not in times
    by_t = [[s for f, s in zip(frames, times, strict=True) if f["index"]["t"] == t]
            for t in (0, 1)]  # fmt: skip
    assert max(by_t[0]) < min(by_t[1])
    assert min(by_t[1]) - min(by_t[0]) >= 0.29  # the interval's real wait, in s


def test_frames_are_timed_when_the_camera_took_them_not_when_saved_and_read_back(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a frame reaches livescope after pycromanager has saved it and it is read back: its
    # latency (t_camera_ns) and the age the agent checks decisions by started only then
    from livescope.scope import _pycromanager

    real, read_at = _pycromanager.read_saved_frame, []

    def slow_disk(dataset, axes):  # type: ignore[no-untyped-def]
        read_at.append(time.perf_counter_ns())
        time.sleep(0.15)
        return real(dataset, axes)

    monkeypatch.setattr(_pycromanager, "read_saved_frame", slow_disk)
    agent = PycromanagerAgent(  # no sim: the plan's clock is the wall clock
        scope.core, scope.profile, _plan(loops=2, interval_s=0.5, positions=1), tmp_path,
        bus="off",
    )  # fmt: skip
    agent.run()
    frames = read_frames(tmp_path)
    assert len(frames) == len(read_at) == 4
    for f, t_read in zip(frames, read_at, strict=True):
        assert f["t_camera_ns"] < t_read, f["index"]
    assert agent._fanout is not None
    taken = agent._fanout.frame_times
    assert len(taken) == 4
    for t in (0, 1):  # a time point's two channels, snapped one after the other
        a, b = (f for f in frames if f["index"]["t"] == t)
        # read back 0.15 s apart (or more): stamped then, they were as far apart
        assert abs(b["t_camera_ns"] - a["t_camera_ns"]) < 0.1e9, (a["index"], b["index"])
        assert abs(taken[b["seq"]] - taken[a["seq"]]) < 0.1, (a["index"], b["index"])


def test_a_slow_first_set_up_does_not_delay_the_later_time_points(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    # pycromanager counts min_start_time from its first image: a first event slow to set
    # up (a long stage move) made every later time point (and close-up) that much late
    moves = [0.6]

    def long_first_move(event: dict) -> dict:
        if moves:
            time.sleep(moves.pop())
        return event

    plan = _plan(loops=2, interval_s=1.0, positions=1)
    # events handed over 0.3 s early: pycromanager itself must wait for their time
    PycromanagerAgent(
        scope.core, scope.profile, plan, tmp_path, bus="off", lead_s=0.3,
        pre_hardware_hook_fn=long_first_move,
    ).run()  # fmt: skip
    frames = read_frames(tmp_path)
    first = {t: min(f["sample_time_s"] for f in frames if f["index"]["t"] == t) for t in (0, 1)}
    # t = 1 is due 1.0 s after the run's start, which the first image took 0.6 s to reach
    # (1.0 s after the first image before; ~0.1 s had the events no time on pycromanager's clock)
    assert 0.3 < first[1] - first[0] < 0.8, first


def test_frames_of_a_plan_without_positions_get_the_stage_position(
    profile: HardwareProfile, tmp_path: Path
) -> None:
    """pycromanager tags a frame only with the position its event asked for: a plan
    without stage positions lost them, and the simulator's ground truth refused the run."""
    plan = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=60.0, loops=2),
    )
    runs = {}
    for name, cls in (("mda", ScopeAgent), ("pycromanager", PycromanagerAgent)):
        with SimulatedMicroscope(profile) as sim:
            sim.core.setXYPosition(120.0, -40.0)
            sim.core.waitForSystem()
            cls(sim.core, profile, plan, tmp_path / name, sim=sim, bus="off").run()
        runs[name] = read_frames(tmp_path / name)
    assert [(f["x_um"], f["y_um"]) for f in runs["pycromanager"]] == [(120.0, -40.0)] * 2
    for a, b in zip(runs["mda"], runs["pycromanager"], strict=True):
        assert (a["x_um"], a["y_um"], a["z_um"]) == (b["x_um"], b["y_um"], b["z_um"])


# ----------------------------------------------------------------- defects


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param(
            useq.MDAEvent(index={"t": 2, "p": 1, "c": 0}, pos_name="B", x_pos=1.0, y_pos=2.0,
                          z_pos=3.0, channel={"config": "Phase"}, exposure=5.0,
                          min_start_time=0.4),
            {"axes": {"time": 2, "position": "B", "channel": "Phase"},
             "config_group": ["Channel", "Phase"], "exposure": 5.0, "x": 1.0, "y": 2.0, "z": 3.0,
             "min_start_time": 0.4},
            id="planned",
        ),
        pytest.param(
            useq.MDAEvent(index={"t": 100, "p": 0, "c": 1}, x_pos=0.0, y_pos=0.0,
                          channel={"config": "DAPI"}, metadata={"added_by": "d-1",
                                                                "sample_time_s": 60.0}),
            {"axes": {"time": 100, "position": "p0", "channel": "DAPI"},
             "config_group": ["Channel", "DAPI"], "x": 0.0, "y": 0.0},
            id="added-by-a-decision",
        ),
        pytest.param(
            useq.MDAEvent(index={"t": 0, "p": 0, "g": 3, "z": 2}, channel={"config": "DAPI"}),
            {"axes": {"time": 0, "position": "p0_g3", "channel": "DAPI", "z": 2},
             "config_group": ["Channel", "DAPI"]},
            id="grid-and-z",
        ),
        pytest.param(
            useq.MDAEvent(index={"t": 1}),
            {"axes": {"time": 1, "position": "p0"}},
            id="no-channel",
        ),
    ],
)  # fmt: skip
def test_converted_events_never_carry_tags(event: useq.MDAEvent, expected: dict) -> None:
    """An event with tags crashes pycromanager's submit thread; the acquisition hangs."""
    out = to_pycromanager_event(event)
    assert "tags" not in out
    assert out == expected


def test_an_autofocus_plan_is_refused_before_anything_moves(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    # its autofocus event became a snap, and the image event after it was refused as a
    # duplicate of its axes: the run failed part-way
    af = useq.AxesBasedAF(autofocus_device_name="Z", axes=("p",))
    plan = _plan(loops=1).model_copy(update={"autofocus_plan": af})
    plan = useq.MDASequence.model_validate(plan.model_dump())
    assert any(not isinstance(e.action, useq.AcquireImage) for e in plan)
    with pytest.raises(LivescopeError, match="the pycromanager backend acquires images only"):
        PycromanagerAgent(scope.core, scope.profile, plan, tmp_path / "run", bus="off")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "hook", ["pre_hardware_hook_fn", "post_hardware_hook_fn", "post_camera_hook_fn"]
)
def test_a_two_argument_hook_is_refused_before_anything_moves(
    scope: SimulatedMicroscope, tmp_path: Path, hook: str
) -> None:
    """A hook taking (event, event_queue) ends pycromanager's acquisition with 0 images."""
    where = scope.core.getXYPosition()
    with pytest.raises(
        LivescopeError, match=rf"{hook}\(event, queue\) must take one argument, the event"
    ):
        PycromanagerAgent(
            scope.core, scope.profile, _plan(), tmp_path / "run", sim=scope, bus="off",
            **{hook: lambda event, queue: event},
        )  # fmt: skip
    assert not (tmp_path / "run").exists()
    assert scope.core.getXYPosition() == where
    assert scope._frames_rendered == 0


def test_hooks_that_return_nothing_or_tags_keep_every_event(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    """A hook returning None cancels its event; one returning tags hangs the acquisition."""
    seen: list[dict] = []

    def hook(event: dict) -> dict | None:
        seen.append(event)
        return None if len(seen) % 2 else {**event, "tags": {"livescope": 1}}

    summary = PycromanagerAgent(
        scope.core, scope.profile, _plan(), tmp_path / "run", sim=scope, bus="off",
        pre_hardware_hook_fn=hook, watchdog_s=5,
    ).run()  # fmt: skip
    assert len(seen) == 8
    assert summary["frames_written"] == summary["images_saved"] == 8
    assert len(read_frames(tmp_path / "run")) == 8


def test_a_shortfall_raises_and_every_frame_acquired_is_recorded(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    """pycromanager aborts on a failing hook and only prints the traceback: counted here."""
    calls = []

    def hook(event: dict) -> dict:
        calls.append(event)
        if len(calls) == 3:
            raise RuntimeError("autofocus lost the sample")
        return event

    agent = PycromanagerAgent(
        scope.core, scope.profile, _plan(), tmp_path / "run", sim=scope, bus="off",
        post_hardware_hook_fn=hook,
    )  # fmt: skip
    with pytest.raises(LivescopeError, match=r"acquired 2 of \d+ events: autofocus lost"):
        agent.run()
    frames = read_frames(tmp_path / "run")
    assert len(frames) == 2
    assert [f["adler32"] for f in frames] == [
        _adler(RecordingReader(tmp_path / "run").read(f)) for f in frames
    ]
    assert agent.engine.failed_events  # the summary counts the frames that never came
    _registry_is_clean()


def test_an_image_that_cannot_be_read_back_makes_the_run_fail_in_its_summary_too(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the event was taken off the pending list before its image failed to be read: the
    # summary said ok, with no frame failed, while run() raised
    from livescope.scope import _pycromanager

    real, calls = _pycromanager.read_saved_frame, []

    def flaky(dataset, axes):  # type: ignore[no-untyped-def]
        calls.append(axes)
        if len(calls) == 2:
            raise OSError("the NDTiff file could not be read")
        return real(dataset, axes)

    monkeypatch.setattr(_pycromanager, "read_saved_frame", flaky)
    agent = PycromanagerAgent(
        scope.core, scope.profile, _plan(), tmp_path / "run", sim=scope, bus="off",
    )  # fmt: skip
    with pytest.raises(LivescopeError, match=r"acquired \d+ of \d+ events: the NDTiff file"):
        agent.run()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["ok"] is False
    assert "the NDTiff file could not be read" in summary["error"]
    _registry_is_clean()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_watchdog_aborts_a_hung_acquisition(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event with tags kills pycromanager's submit thread: the acquisition hangs silently."""
    from livescope.scope import _pycromanager

    def with_tags(event: useq.MDAEvent, **kwargs: Any) -> dict:
        return {**to_pycromanager_event(event, **kwargs), "tags": {"livescope": 1}}

    monkeypatch.setattr(_pycromanager, "to_pycromanager_event", with_tags)
    agent = PycromanagerAgent(
        scope.core, scope.profile, _plan(), tmp_path / "run", sim=scope, bus="off",
        watchdog_s=0.5,
    )  # fmt: skip
    t0 = time.perf_counter()
    with pytest.raises(LivescopeError, match=r"acquired 0 of \d+ events: pycromanager stalled: "
                       r"no image for .*\(watchdog 0\.5 s\); acquisition aborted"):  # fmt: skip
        agent.run()
    assert time.perf_counter() - t0 < 5
    assert read_frames(tmp_path / "run") == []
    _registry_is_clean()


def test_two_cores_in_one_process_each_get_their_own_frames(
    profile: HardwareProfile, tmp_path: Path
) -> None:
    """pycromanager's engine is a singleton bound to the first core it saw."""
    with SimulatedMicroscope(profile) as a, SimulatedMicroscope(profile, seed=7) as b:
        entered, release = threading.Event(), threading.Event()

        def hold(event: dict) -> dict:
            entered.set()
            release.wait(10)
            return event

        first = PycromanagerAgent(a.core, profile, _plan(), tmp_path / "a", sim=a, bus="off",
                                  pre_hardware_hook_fn=hold)  # fmt: skip
        thread = threading.Thread(target=first.run)
        thread.start()
        try:
            assert entered.wait(30)
            meanwhile = PycromanagerAgent(b.core, profile, _plan(), tmp_path / "b0", sim=b,
                                          bus="off")  # fmt: skip
            with pytest.raises(LivescopeError, match="another pycromanager acquisition"):
                meanwhile.run()
        finally:
            release.set()
            thread.join(60)
        second = PycromanagerAgent(b.core, profile, _plan(loops=3), tmp_path / "b", sim=b,
                                   bus="off").run()  # fmt: skip
        assert len(read_frames(tmp_path / "a")) == 8
        assert second["frames_written"] == 12
        assert (a._frames_rendered, b._frames_rendered) == (8, 12)
    _registry_is_clean()


def test_java_backend_connects_on_the_port_without_registering_the_core(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Java's engine stands in as the Python one on an adapted core (no Micro-Manager here)."""
    import pycromanager
    from mmpycorex import launcher
    from pycromanager.acquisition.python_backend_acquisitions import PythonBackendAcquisition

    ports = []

    def java(*, port: int, show_display: bool, **kwargs: Any) -> Any:
        ports.append((port, list(launcher._PYMMCORES)))
        assert show_display is False  # (closing Micro-Manager's viewer ended the run)
        return PythonBackendAcquisition(**kwargs)

    monkeypatch.setattr(pycromanager, "JavaBackendAcquisition", java)
    with adapt_core(scope.core) as remote:  # the bridge's core: snake_case names only
        launcher._PYMMCORES.remove(remote)
        try:
            agent = PycromanagerAgent(remote, scope.profile, _plan(loops=1), tmp_path / "run",
                                      backend="java", port=4999, sim=scope, bus="off")  # fmt: skip
            summary = agent.run()
        finally:
            launcher._PYMMCORES.append(remote)
    assert ports == [(4999, [])]
    assert summary["backend"] == "pycromanager-java"
    assert summary["frames_written"] == 4


def test_the_core_registration_is_undone_and_the_interpreter_exits_cleanly(
    tmp_path: Path,
) -> None:
    """A core left in mmpycorex's list can abort interpreter exit (not reproduced here)."""
    script = f"""
import useq
from mmpycorex import launcher
from livescope.schema import load_profile
from livescope.scope import PycromanagerAgent, SimulatedMicroscope
prof = load_profile("sim")
prof = prof.replace(camera=prof.camera.replace(sensor_shape_px=(32, 32)).model_dump())
plan = useq.MDASequence(channels=["Phase"], time_plan={{"interval": 60, "loops": 2}})
sim = SimulatedMicroscope(prof)
s = PycromanagerAgent(sim.core, prof, plan, {str(tmp_path / "run")!r}, sim=sim, bus="off").run()
print(s["frames_written"], len(launcher._PYMMCORES), hasattr(sim.core, "snap_image"))
"""  # the simulated microscope is left open on purpose: exit must still be clean
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "0", "False"]


def test_no_micro_manager_on_the_port_is_one_clear_message(tmp_path: Path) -> None:
    """No traceback of the bridge's own thread beside livescope's message."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    plan = tmp_path / "plan.yaml"
    plan.write_text("channels: [{config: DAPI, exposure: 10}]\n")
    script = f"""
import time
from livescope.schema import LivescopeError, load_plan, load_profile
from livescope.scope import PycromanagerAgent
try:
    PycromanagerAgent(None, load_profile("widefield-2048-scmos"), load_plan({str(plan)!r}),
                      {str(tmp_path / "run")!r}, backend="java", port={port}, bus="off")
except LivescopeError as exc:
    print(exc)
time.sleep(2)  # the failed bridge's socket thread ends (with its exception) meanwhile
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"no Micro-Manager answered on port {port}")
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is sent differently on Windows")
def test_ctrl_c_aborts_the_events_pycromanager_already_holds(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events handed over ahead of time must not go on being acquired after a Ctrl+C.

    (A guard: the run aborts the acquisition on Ctrl+C; before it did so, closing
    the dataset also stopped these events, so this test passed then too.)
    """
    import os
    import signal

    renders: list[float] = []
    render = scope.render_into

    def slow_render(*args: Any, **kwargs: Any) -> Any:
        renders.append(time.perf_counter())
        time.sleep(0.3)  # (the time point's 4 events take 1.2 s; Ctrl+C comes after the first)
        return render(*args, **kwargs)

    monkeypatch.setattr(scope, "render_into", slow_render)
    run = tmp_path / "run"
    agent = PycromanagerAgent(
        scope.core, scope.profile, _plan(loops=3, interval_s=300), run, sim=scope, bus="off"
    )

    def press_ctrl_c(written: int) -> None:
        if written == 1:
            os.kill(os.getpid(), signal.SIGINT)

    _run_interrupted(agent, press_ctrl_c)
    n = len(renders)
    time.sleep(1.0)
    assert len(renders) == n, "frames were still acquired after the run had stopped"
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["interrupted"] is True
    assert summary["frames_acquired"] == summary["frames_written"] < 4
    assert len(read_frames(run)) == summary["frames_written"]
    _registry_is_clean()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is sent differently on Windows")
def test_ctrl_c_again_stops_waiting_and_pycromanager_ends_in_the_background(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second Ctrl+C must not wait for a slow event, nor take the core from
    pycromanager's engine before it has ended (its threads would then wait for ever
    and the process never exit); the core is handed back once it has."""
    import os
    import signal

    from pycromanager.acquisition.acq_eng_py.internal.engine import Engine

    from livescope.scope._fanout import _CtrlCHeld

    slow = threading.Event()
    render = scope.render_into

    def slow_render(*args: Any, **kwargs: Any) -> Any:
        time.sleep(3.0 if slow.is_set() else 0.3)  # (the event in flight at Ctrl+C is slow)
        return render(*args, **kwargs)

    monkeypatch.setattr(scope, "render_into", slow_render)
    agent = PycromanagerAgent(
        scope.core, scope.profile, _plan(loops=3, interval_s=300), tmp_path / "run", sim=scope,
        bus="off",
    )  # fmt: skip

    def press_again_while_it_waits() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            held = getattr(signal.getsignal(signal.SIGINT), "__self__", None)
            if isinstance(held, _CtrlCHeld):
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
                return
            time.sleep(0.005)

    def press_ctrl_c(written: int) -> None:
        if written == 1:
            slow.set()
            threading.Thread(target=press_again_while_it_waits, daemon=True).start()
            os.kill(os.getpid(), signal.SIGINT)

    _run_interrupted(agent, press_ctrl_c)
    assert agent._pm_running(), "run() waited for the slow event despite the second Ctrl+C"
    engine = Engine.get_instance()
    assert engine is not None
    assert engine.core is scope.core  # (left to pycromanager)
    with pytest.raises(LivescopeError, match="still ending"), adapt_core(scope.core):
        pass
    deadline = time.monotonic() + 20
    while agent._pm_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not agent._pm_running(), "pycromanager did not end in the background"
    time.sleep(0.5)  # (the core is handed back within 0.1 s of its end)
    _registry_is_clean()
