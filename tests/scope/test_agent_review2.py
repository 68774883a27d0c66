"""The scope agent and its fan-out, second review: each test a bug found and fixed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

import pytest
import useq

from livescope.bus import BUS_FILE
from livescope.record import ZARR_NAME
from livescope.schema import LivescopeError
from livescope.scope import ScopeAgent, SimulatedMicroscope

_AGENT_THREADS = ("livescope-decisions", "livescope-bus-control", "livescope-decision-log-sync")


def _plan() -> useq.MDASequence:
    return useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=1, loops=2),
    )


def _started_since(before: set[threading.Thread]) -> list[str]:
    """The agent's threads started since ``before`` and still running."""
    return sorted(
        t.name for t in threading.enumerate() if t not in before and t.name in _AGENT_THREADS
    )


@pytest.mark.parametrize("bus", ["inline", "shm"])
def test_an_agent_refused_a_recorded_folder_leaves_no_bus_behind(
    sim: SimulatedMicroscope, tmp_path: Path, bus: str
) -> None:
    # a run folder used again (its recording is there): the recorder refused it after the
    # frame bus and the decision server were bound, and nothing closed them: their threads
    # and sockets (and the shared-memory ring) stayed for as long as the process lived
    run = tmp_path / "run"
    (run / ZARR_NAME).mkdir(parents=True)
    before = set(threading.enumerate())
    with pytest.raises(LivescopeError, match="already exists"):
        ScopeAgent(sim.core, sim.profile, _plan(), run, sim=sim, bus=bus)  # type: ignore[arg-type]
    assert _started_since(before) == []
    assert not (run / BUS_FILE).exists()


def test_closing_an_agent_whose_recording_cannot_be_closed_still_releases_the_bus(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # the recording's folder went away (a lost share, an external drive unplugged) before
    # the run began: closing the recorder raised, and close() stopped there, leaving
    # bus.json (a worker takes the run for live), the decision server and the bus
    run = tmp_path / "run"
    before = set(threading.enumerate())
    agent = ScopeAgent(sim.core, sim.profile, _plan(), run, sim=sim, bus="shm")
    assert (run / BUS_FILE).exists()
    assert _started_since(before)
    shutil.rmtree(run / ZARR_NAME)
    with pytest.raises(FileNotFoundError):  # (the recorder's error is not swallowed)
        agent.close()
    assert not (run / BUS_FILE).exists()
    assert _started_since(before) == []


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is sent differently on Windows")
def test_a_run_stopped_by_ctrl_c_leaves_the_core_free_for_the_next_run(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # pymmcore-plus ends its run (idle, sequenceFinished) only when the run ends or raises
    # an Exception: after a Ctrl+C the core said it was still acquiring, for good, and every
    # later run on it (the next cell of a notebook, a viewer's) was refused "Cannot register
    # a new engine when the current engine is running an acquisition"
    plan = _plan().replace(time_plan=useq.TIntervalLoops(interval=120, loops=50))
    agent = ScopeAgent(sim.core, sim.profile, plan, tmp_path / "r1", sim=sim, bus="off")
    finished: list[object] = []
    sim.core.mda.events.sequenceFinished.connect(finished.append)

    def ctrl_c_at_the_second_frame(written: int) -> None:  # (the writer's thread)
        if written == 2:
            os.kill(os.getpid(), signal.SIGINT)

    # (a shell starting the tests in the background hands SIGINT down ignored: Python's
    # own handler, as a terminal's Ctrl+C meets it)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            agent.run(ctrl_c_at_the_second_frame)
    finally:
        signal.signal(signal.SIGINT, before)
        sim.core.mda.events.sequenceFinished.disconnect(finished.append)
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text(encoding="utf-8"))
    assert summary["interrupted"] is True
    assert 2 <= summary["frames_acquired"] < 50
    assert not sim.core.mda.is_running()
    assert len(finished) == 1  # (listeners, a viewer's, see the run end)
    short = _plan()
    again = ScopeAgent(sim.core, sim.profile, short, tmp_path / "r2", sim=sim, bus="off")
    assert again.run()["frames_acquired"] == 2
