"""The scope agent, read-only review: each test a bug found and fixed (reproducers under
/tmp/review_agent/)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import useq

from livescope.schema import AddEvents
from livescope.scope import ScopeAgent, SimulatedMicroscope

from .test_agent import Running
from .test_agent import running as running  # (a fixture)


@pytest.mark.parametrize(
    ("index", "said"),
    [({"t": -1, "p": 0}, "t=-1"), ({"t": 0, "p": 0, "z": -1}, "z=-1")],
    ids=["t", "z"],
)
def test_an_added_event_at_a_negative_index_is_refused(
    running: Running, index: dict[str, int], said: str
) -> None:
    # accepted: its frame was written outside the recording's array (no reader sees it)
    # and livescope's reader wrapped the index round and served another frame in its place
    ev = useq.MDAEvent(index=index, channel={"config": "Phase"})
    ack = running.client.send(AddEvents(run_id=running.agent.run_id, events=[ev]))
    assert not ack.accepted
    assert f"index {said} is negative" in ack.reason


def test_an_agent_that_cannot_start_closes_what_it_opened(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # the core ran another acquisition (a GUI's): run() raised before its try, leaving
    # bus.json (a worker saw a live run) and the decision server, bus and writer threads
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=1, loops=3),
    )
    run = tmp_path / "run"
    agent = ScopeAgent(sim.core, sim.profile, seq, run, sim=sim, bus="inline")
    assert (run / "bus.json").exists()
    other = sim.core.run_mda(useq.MDASequence(time_plan=useq.TIntervalLoops(interval=0.3, loops=6)))
    try:
        deadline = time.monotonic() + 10
        while not sim.core.mda.is_running() and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(RuntimeError, match="running an acquisition"):
            agent.run()
    finally:
        other.join(30)
    assert not (run / "bus.json").exists()
    left = [t.name for t in threading.enumerate() if t.name.startswith("livescope-")]
    assert not [n for n in left if n in ("livescope-decisions", "livescope-writer")], left
    assert agent.server is not None
    assert not agent.server._thread.is_alive()
