"""The agent's event feed, reviewed a third time: each test a bug found and fixed."""

from __future__ import annotations

from pathlib import Path

import useq

from livescope.schema import AddEvents, Move, clock_ns
from livescope.scope import EventFeed, LivescopeEngine, ScopeAgent, SimulatedMicroscope


def _lapse(loops: int = 3, interval_s: float = 60.0) -> useq.MDASequence:
    return useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=interval_s, loops=loops),
    )


def _closeup(t: int, due_s: float, decision: str = "d1") -> useq.MDAEvent:
    """An event a decision added: a close-up frame of A's, due at plan time ``due_s``."""
    return useq.MDAEvent(
        index={"t": t}, x_pos=10.0, y_pos=0.0, pos_name="A~closeup-1",
        channel={"config": "Phase"}, exposure=5.0, min_start_time=due_s,
        metadata={"added_by": decision},
    )  # fmt: skip


def _order(events: list[useq.MDAEvent]) -> list[tuple[str, int]]:
    return [(str(e.pos_name), e.index["t"]) for e in events]


def test_an_added_event_due_after_the_next_time_point_waits_for_it(
    sim: SimulatedMicroscope,
) -> None:
    # every added event due within the feed's lead (a pycromanager feeder's, or 3 s of plan
    # time on the simulated rig) went before the plan's next time point, even one due
    # after it: the time point, on time, started late by that much
    feed = EventFeed(_lapse(), LivescopeEngine(sim.core, sim.profile, sim=sim), 1.0)
    feed.lead_s = 1000.0  # (so that nothing waits: every event is within the lead)
    events = iter(feed)
    assert _order([next(events)]) == [("A", 0)]
    feed.add([_closeup(100, 30.0), _closeup(101, 90.0)])
    assert _order(list(events)) == [
        ("A~closeup-1", 100), ("A", 1), ("A~closeup-1", 101), ("A", 2)
    ]  # fmt: skip


def test_a_move_counts_only_the_events_it_moves(sim: SimulatedMicroscope, tmp_path: Path) -> None:
    # a close-up centred on a cell (x/y and z of its own) stays where it is when its
    # position moves: the answer counted it as moved all the same
    agent = ScopeAgent(sim.core, sim.profile, _lapse(), tmp_path / "run", sim=sim, bus="off")
    rid = agent.run_id
    closeup = useq.MDAEvent(index={"t": 40}, pos_name="A", x_pos=12.0, y_pos=3.0, z_pos=1.0,
                            channel={"config": "DAPI"})  # fmt: skip
    assert agent._on_decision(AddEvents(run_id=rid, delay_s=600, events=[closeup]), clock_ns())
    ack = agent._on_decision(Move(run_id=rid, position="A", x_um=5.0, y_um=0.0), clock_ns())
    assert ack.accepted
    assert ack.reason == "3 pending event(s) moved"  # the plan's 3 time points
    moved = [agent.feed.preview(e) for _, _, e in agent.feed._heap]
    assert sorted((e.x_pos, e.y_pos) for e in moved) == [(5.0, 0.0)] * 3 + [(12.0, 3.0)]
    agent.feed.stop()
    agent.close()
