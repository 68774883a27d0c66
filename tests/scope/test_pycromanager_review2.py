"""pycromanager backend, second independent review.

Each test failed on the code before its fix.
"""

from __future__ import annotations

import gc
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import useq

from livescope.record import read_frames
from livescope.schema import DecisionAck, HardwareProfile, LivescopeError, StopRun, clock_ns
from livescope.scope import PycromanagerAgent, ScopeAgent, SimulatedMicroscope

from .test_pycromanager import _plan, _registry_is_clean
from .test_pycromanager import profile as profile
from .test_pycromanager import scope as scope
from .test_pycromanager_review import _refuse_position_b


def test_a_stop_run_ends_the_run_after_the_current_frame_not_after_the_queued_ones(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    # the feeder stopped, but the queue_ahead events already handed to pycromanager were
    # all still acquired (a stop asked for because of bleaching took 4 more frames)
    acks: list[DecisionAck] = []

    def stop_at_first_frame(event: dict[str, Any]) -> dict[str, Any]:  # (engine thread)
        if not acks:
            acks.append(agent._on_decision(StopRun(run_id=agent.run_id), clock_ns()))
        return event

    agent = PycromanagerAgent(
        scope.core, scope.profile, _plan(loops=5, interval_s=0), tmp_path / "run", sim=scope,
        bus="off", watchdog_s=20, queue_ahead=4, post_camera_hook_fn=stop_at_first_frame,
    )  # fmt: skip
    summary = agent.run()
    assert acks[0].accepted, acks[0]
    frames = read_frames(tmp_path / "run")
    assert [f["index"] for f in frames] == [{"t": 0, "p": 0, "c": 0}]
    assert summary["ok"] is True, summary["error"]
    assert summary["frames_written"] == summary["images_saved"] == summary["events_submitted"] == 1
    assert scope._frames_rendered == 1
    # the events withdrawn are left, not taken (the feed counted them taken: 4 for 1 frame,
    # 16 left where 19 were never acquired; the mda backend counts a stopped event as left)
    events = summary["events"]
    assert events["planned_taken"] == 1, summary
    assert events["left"] == events["planned"] - 1 == 19, summary
    _registry_is_clean()


@pytest.mark.parametrize(
    ("option", "says"),
    [
        pytest.param({"queue_ahead": 0}, "queue_ahead must be >= 1", id="queue_ahead"),
        # (NaN: the feeder waited for ever with nothing handed over, the watchdog silent)
        pytest.param({"lead_s": float("nan")}, "lead_s must be a finite number", id="lead_s"),
    ],
)
def test_a_bad_queue_ahead_is_refused_before_the_run_folder_or_bus_is_opened(
    scope: SimulatedMicroscope, tmp_path: Path, option: dict[str, float], says: str
) -> None:
    # it was checked after ScopeAgent had opened the decision server, the frame bus and
    # the run folder: their threads and sockets were left open by the refused agent
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(LivescopeError, match=says):
        PycromanagerAgent(
            scope.core, scope.profile, _plan(), tmp_path / "run", sim=scope, bus="inline",
            **option,  # type: ignore[arg-type]
        )  # fmt: skip
    assert not (tmp_path / "run").exists()
    assert {t.ident for t in threading.enumerate() if t.is_alive()} <= before


def test_a_stop_run_while_the_feeder_waits_for_the_next_time_point_is_no_failure(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    # the feeder, holding the next time point's event until it was due, left at the stop
    # without noting that the end was asked for: pycromanager's end then read as one not
    # asked for, and the run failed ("ended the acquisition before the plan was done")
    acks: list[DecisionAck] = []
    interval_s = 1.0 * scope.time_acceleration  # (1 s on the wall clock)
    agent = PycromanagerAgent(
        scope.core, scope.profile, _plan(loops=3, interval_s=interval_s), tmp_path / "run",
        sim=scope, bus="off", watchdog_s=20,
    )  # fmt: skip
    # the feed hands the next time point out well before the feeder's lead (by a hair it
    # always does: its clock starts before the feeder's), so the feeder waits with it
    agent.feed.lead_s = 5.0
    waiting = threading.Event()
    real_wait = agent._halt.wait

    def halt_wait(timeout: float | None = None) -> bool:
        waiting.set()  # (the feeder holds an event until it is due)
        return real_wait(timeout)

    agent._halt.wait = halt_wait  # type: ignore[method-assign]

    def stop_once_waiting(written: int) -> None:
        if written == 4 and waiting.wait(10):
            acks.append(agent._on_decision(StopRun(run_id=agent.run_id), clock_ns()))

    summary = agent.run(stop_once_waiting)
    assert acks, "the feeder never waited with an event"
    assert acks[0].accepted, acks[0]
    assert summary["ok"] is True, summary["error"]
    assert summary["frames_written"] == 4
    _registry_is_clean()


def test_frames_at_positions_without_z_get_the_focus_position(
    profile: HardwareProfile, tmp_path: Path
) -> None:
    # pycromanager tags z only for an event giving it, and the stage was read only for an
    # event without x or y: frames at positions giving x and y alone (the usual plan) had
    # no z, where the mda backend records the focus drive's
    plan = useq.MDASequence(
        stage_positions=[useq.Position(x=10.0, y=20.0, name="A"),
                         useq.Position(x=-30.0, y=40.0, z=5.0, name="B")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
    )  # fmt: skip
    runs = {}
    for name, cls in (("mda", ScopeAgent), ("pycromanager", PycromanagerAgent)):
        with SimulatedMicroscope(profile) as sim:
            sim.core.setPosition(3.0)
            sim.core.waitForSystem()
            cls(sim.core, profile, plan, tmp_path / name, sim=sim, bus="off").run()
        runs[name] = [(f["position"], f["x_um"], f["y_um"], f["z_um"])
                      for f in read_frames(tmp_path / name)]  # fmt: skip
    assert runs["pycromanager"] == runs["mda"]
    assert runs["pycromanager"] == [("A", 10.0, 20.0, 3.0), ("B", -30.0, 40.0, 5.0)]


# (pyjavaz leaves the failed bridge's ZMQ socket to the garbage collector)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_micro_manager_gone_when_the_run_starts_is_a_livescope_error_naming_the_port(
    scope: SimulatedMicroscope, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Micro-Manager closed (or its server turned off) after the agent was made: the run
    # raised pycromanager's bare Exception (a traceback from the CLI, not its message),
    # and the bridge's dying socket thread printed two more tracebacks of its own
    from mmpycorex import launcher

    from livescope.scope import adapt_core

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    printed: list[str] = []
    before = threading.excepthook
    threading.excepthook = lambda args: printed.append(repr(args.exc_value))
    try:
        with adapt_core(scope.core) as remote:  # (the bridge's core, as in test_pycromanager)
            launcher._PYMMCORES.remove(remote)
            try:
                agent = PycromanagerAgent(
                    remote, scope.profile, _plan(loops=1), tmp_path / "run", backend="java",
                    port=port, sim=scope, bus="off",
                )  # fmt: skip
                with pytest.raises(LivescopeError, match=rf"Micro-Manager on port {port}") as info:
                    agent.run()
            finally:
                launcher._PYMMCORES.append(remote)
        for t in threading.enumerate():  # (the bridge's socket thread dies meanwhile)
            if t.name.startswith(f"BridgeSocketThread_port{port}"):
                t.join(10)
        # (the tracebacks of the error and of its log records hold the failed bridge: its
        # socket is closed here, under this test's warning filter)
        del info, agent
        caplog.clear()
        gc.collect()
    finally:
        threading.excepthook = before
    assert printed == []


def test_a_last_event_the_core_refuses_is_reported_with_the_cores_error(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a failed event is found out when a later one begins; after the last one none does,
    # and the run ended with "acquired 1 of 2 events (see stderr)": the core's error,
    # which the agent held, was named nowhere
    core = scope.core
    _refuse_position_b(core, monkeypatch)
    plan = useq.MDASequence(
        stage_positions=[useq.Position(x=0.0, y=0.0, z=0, name="A"),
                         useq.Position(x=300.0, y=100.0, z=0, name="B")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
    )  # fmt: skip
    agent = PycromanagerAgent(
        core, scope.profile, plan, tmp_path / "run", sim=scope, bus="off", watchdog_s=20
    )
    with pytest.raises(
        LivescopeError,
        match=r"acquired 1 of 2 events: event p=1, c=0 was not acquired: .*"
        r"RuntimeError: XY stage hit its limit switch",
    ):
        agent.run()
    assert [f["position"] for f in read_frames(tmp_path / "run")] == ["A"]
    assert [e.pos_name for e in agent.engine.failed_events] == ["B"]
    _registry_is_clean()


def test_a_channel_preset_holding_the_exposure_does_not_override_the_events(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pycromanager 1.0.2 sets an event's exposure before its channel preset, and again
    # after it only when it differs from the previous event's: a preset holding the
    # camera's exposure (common in Micro-Manager configs) set it, the frame was exposed
    # 40 ms and recorded as 5 ms
    core = scope.core
    real = core.setConfig

    def preset_with_exposure(group: str, config: str) -> None:
        real(group, config)
        if config == "DAPI":  # (UniMMCore cannot hold a Python camera's property in a preset)
            core.setExposure(40.0)

    monkeypatch.setattr(core, "setConfig", preset_with_exposure)
    at_snap: list[tuple[str, float]] = []

    def note_exposure(event: dict[str, Any]) -> dict[str, Any]:
        at_snap.append((event["axes"]["channel"], core.getExposure()))
        return event

    plan = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=5.0),
                  useq.Channel(config="DAPI", exposure=5.0)],
    )  # fmt: skip
    PycromanagerAgent(
        core, scope.profile, plan, tmp_path / "run", sim=scope, bus="off",
        post_camera_hook_fn=note_exposure,
    ).run()  # fmt: skip
    assert at_snap == [("Phase", 5.0), ("DAPI", 5.0)]
    frames = read_frames(tmp_path / "run")
    assert [(f["channel"], f["exposure_ms"]) for f in frames] == [("Phase", 5.0), ("DAPI", 5.0)]
