"""pycromanager backend: a stop's withdrawn events in the counts, the lead before the first
image, and a missing pycromanager named before anything is made."""

from __future__ import annotations

import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest
import useq

from livescope.record import read_frames
from livescope.schema import DecisionAck, LivescopeError, StopRun, clock_ns
from livescope.scope import PycromanagerAgent, SimulatedMicroscope

from ..conftest import ROOT
from .test_pycromanager import _plan, _registry_is_clean
from .test_pycromanager import profile as profile
from .test_pycromanager import scope as scope


def _events_add_up(summary: dict[str, Any]) -> None:
    """The feed's counts agree with the frames: taken means acquired, the rest is left."""
    events = summary["events"]
    assert events["planned_taken"] == summary["frames_acquired"], summary
    assert events["planned_taken"] == summary["events_submitted"], summary
    assert events["left"] == events["planned"] - summary["frames_acquired"], summary


def test_an_event_the_feeder_holds_at_a_stop_counts_as_left(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    # the feeder took the next time point's first event from the feed and waited for its
    # time; the stop came, it never handed it over, and it stayed counted as taken
    acks: list[DecisionAck] = []
    interval_s = 1.0 * scope.time_acceleration  # (1 s on the wall clock)
    agent = PycromanagerAgent(
        scope.core, scope.profile, _plan(loops=3, interval_s=interval_s), tmp_path / "run",
        sim=scope, bus="off", watchdog_s=20,
    )  # fmt: skip
    agent.feed.lead_s = 5.0  # (the feed hands the next time point out long before it is due)
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
    assert summary["ok"] is True, summary["error"]
    assert summary["frames_acquired"] == 4
    _events_add_up(summary)
    assert summary["events"]["left"] == 8


def test_a_lead_longer_than_the_interval_does_not_acquire_early_time_points(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    # until the first image pycromanager's clock has not started: events handed over
    # lead_s early went without a start time, and were acquired on arrival (a lead of 2 s
    # and an interval of 0.5 s: 4 time points within 10 ms)
    interval_s = 0.5
    plan = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=interval_s, loops=4),
    )
    # (no ``sim``: the plan's times are wall-clock seconds)
    PycromanagerAgent(scope.core, scope.profile, plan, tmp_path, bus="off", lead_s=2.0).run()
    frames = read_frames(tmp_path)
    assert [f["index"]["t"] for f in frames] == [0, 1, 2, 3]
    t0 = frames[0]["t_camera_ns"]
    after_s = [(f["t_camera_ns"] - t0) / 1e9 for f in frames]
    # (the first frame is taken a few ms after the plan's start: a little slack)
    for t, s in enumerate(after_s):
        assert s > t * interval_s - 0.05, after_s


def _pyproject_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = (d.split("#")[0].strip() for d in deps if d.startswith("pycromanager"))
    return str(pin)


@pytest.mark.parametrize(
    ("backend", "missing"),
    [
        pytest.param("python", "pycromanager", id="python-pycromanager"),
        pytest.param("python", "mmpycorex", id="python-mmpycorex"),
        pytest.param("python", "ndstorage", id="python-ndstorage"),
        pytest.param("java", "pycromanager", id="java-pycromanager"),
    ],
)
def test_a_missing_pycromanager_is_named_before_the_run_folder_is_made(
    scope: SimulatedMicroscope,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    missing: str,
) -> None:
    # a bare ModuleNotFoundError from within the run, after the run folder was made
    for name in [m for m in sys.modules if m == missing or m.startswith(f"{missing}.")]:
        monkeypatch.setitem(sys.modules, name, None)  # (as if not installed)
    monkeypatch.setitem(sys.modules, missing, None)
    run = tmp_path / "run"
    core = scope.core if backend == "python" else None
    with pytest.raises(LivescopeError) as info:
        PycromanagerAgent(core, scope.profile, _plan(loops=1), run, backend=backend,  # type: ignore[arg-type]
                          sim=scope, bus="off")  # fmt: skip
    message = str(info.value)
    assert repr(missing) in message, message
    assert _pyproject_pin() in message, message
    assert not run.exists()


def test_the_recordings_memory_ceiling_given_is_the_one_kept(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    # (the pycromanager backend took the argument and kept the default ceiling)
    agent = PycromanagerAgent(scope.core, scope.profile, _plan(loops=2), tmp_path / "run",
                              sim=scope, bus="off", recording_memory_bytes=1)  # fmt: skip
    with pytest.raises(LivescopeError, match=r"the run was cancelled: 0 of \d+ frame\(s\) record"):
        agent.run()
    _registry_is_clean()
