"""pycromanager backend, independent review: failures pycromanager keeps to itself.

Each test failed before its fix (reproducers under /tmp/review_pm/).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import useq

from livescope.record import read_frames
from livescope.schema import LivescopeError
from livescope.scope import PycromanagerAgent, SimulatedMicroscope

from .test_pycromanager import _plan, _registry_is_clean
from .test_pycromanager import profile as profile
from .test_pycromanager import scope as scope


def _refuse_position_b(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the core refuse the stage move to position B (y = 100 µm) as a limit switch would."""
    real = core.setXYPosition

    def refuse_b(*args: Any) -> Any:
        if args and args[-1] == 100.0:  # (position B)
            raise RuntimeError("XY stage hit its limit switch")
        return real(*args)

    monkeypatch.setattr(core, "setXYPosition", refuse_b)


def test_a_hook_that_raises_while_the_queue_is_full_ends_the_run_with_its_error(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    # pycromanager aborted, then waited for the end of its event queue, which the feeder
    # (waiting for room: the aborted events never free theirs) never put: the run hung
    # until the watchdog, which reported a stall in place of the hook's error
    calls: list[dict] = []

    def hook(event: dict) -> dict:
        calls.append(event)
        if len(calls) == 2:
            time.sleep(0.5)  # (the feeder fills the queue meanwhile)
            raise RuntimeError("autofocus lost the sample")
        return event

    agent = PycromanagerAgent(
        scope.core, scope.profile, _plan(loops=3, interval_s=0), tmp_path / "run", sim=scope,
        bus="off", watchdog_s=20, post_hardware_hook_fn=hook,
    )  # fmt: skip
    t0 = time.perf_counter()
    with pytest.raises(LivescopeError, match=r"acquired 1 of \d+ events: autofocus lost"):
        agent.run()
    assert time.perf_counter() - t0 < 10
    assert len(read_frames(tmp_path / "run")) == 1
    _registry_is_clean()


def test_an_event_whose_stage_move_the_core_refuses_fails_alone_with_the_cores_error(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pycromanager's engine put the failure on stderr only and went on without the event:
    # its frame was waited for, the feeder stopped once queue_ahead of them were missing,
    # and the watchdog reported a stall; the core's error was nowhere
    core = scope.core
    _refuse_position_b(core, monkeypatch)
    agent = PycromanagerAgent(
        core, scope.profile, _plan(), tmp_path / "run", sim=scope, bus="off", watchdog_s=20,
    )  # fmt: skip
    t0 = time.perf_counter()
    with pytest.raises(
        LivescopeError,
        match=r"acquired 4 of 8 events: event t=0, p=1, c=0 was not acquired: .*"
        r"RuntimeError: XY stage hit its limit switch",
    ):
        agent.run()
    assert time.perf_counter() - t0 < 10
    frames = read_frames(tmp_path / "run")
    assert sorted((f["position"], f["index"]["t"], f["channel"]) for f in frames) == [
        ("A", t, c) for t in (0, 1) for c in ("DAPI", "Phase")
    ]
    failed = agent.engine.failed_events
    assert sorted((e.pos_name, e.index["t"], e.channel.config) for e in failed) == [  # type: ignore[union-attr]
        ("B", t, c) for t in (0, 1) for c in ("DAPI", "Phase")
    ]
    _registry_is_clean()
    assert "set_xy_position" not in vars(core)  # (the reporting aliases are undone too)


def test_a_position_giving_x_or_y_alone_moves_that_axis(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    # pycromanager moves the XY stage only for an event with both x and y: the converted
    # event had neither, the stage stayed at A, and B's and C's frames were taken there
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0.0, y=50.0, z=0, name="A"),
                         useq.Position(x=400.0, name="B"), useq.Position(y=-300.0, name="C")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
    )  # fmt: skip
    PycromanagerAgent(
        scope.core, scope.profile, seq, tmp_path / "run", sim=scope, bus="off", watchdog_s=20
    ).run()
    where = {f["position"]: (f["x_um"], f["y_um"]) for f in read_frames(tmp_path / "run")}
    assert where == {"A": (0.0, 50.0), "B": (400.0, 50.0), "C": (400.0, -300.0)}
    assert tuple(scope.core.getXYPosition()) == (400.0, -300.0)
    _registry_is_clean()


def test_an_acquisition_pycromanager_ends_before_the_plan_does_fails_the_run(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    """(A guard: the feeder now stops when pycromanager's events end; an end not asked
    for, e.g. Micro-Manager's viewer closed on the Java backend, must not read as a run
    that ended as planned.)"""
    agent = PycromanagerAgent(
        scope.core, scope.profile, _plan(loops=3, interval_s=300), tmp_path / "run",
        sim=scope, bus="off", watchdog_s=20,
    )  # fmt: skip

    def end_it(written: int) -> None:
        if written == 4:  # (time point 0 is in; time point 1 is not yet due)
            agent._acq.abort()  # (as pycromanager does when its viewer is closed)

    t0 = time.perf_counter()
    with pytest.raises(LivescopeError, match=r"pycromanager acquired 4 of \d+ events"):
        agent.run(end_it)
    assert time.perf_counter() - t0 < 10
    _registry_is_clean()


def test_a_stall_after_the_core_refused_the_last_event_names_the_cores_error(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with one event in the queue, no later event reveals its failure: the watchdog ends
    # the run, and its message said nothing of the core's error
    core = scope.core
    _refuse_position_b(core, monkeypatch)
    agent = PycromanagerAgent(
        core, scope.profile, _plan(), tmp_path / "run", sim=scope, bus="off", watchdog_s=1,
        queue_ahead=1,
    )  # fmt: skip
    with pytest.raises(
        LivescopeError, match=r"stalled: .*the core raised RuntimeError: XY stage hit its limit"
    ):
        agent.run()
    _registry_is_clean()
