"""Decisions and rigs the queue must not get wrong: missing stages, moves, stops, bursts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import useq
from pymmcore_plus.mda import SkipEvent

import livescope.scope._sim as sim_module
from livescope.record import read_frames
from livescope.schema import (
    AddEvents,
    LivescopeError,
    Move,
    PlanError,
    StopPosition,
    check_plan,
    clock_ns,
)
from livescope.scope import EventFeed, LivescopeEngine, ScopeAgent, SimulatedMicroscope
from livescope.scope._devices import SimZStage

# ------------------------------------------------------------ rigs without a stage


def _z_stack() -> useq.MDASequence:
    return useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=10, name="A")],
        channels=[useq.Channel(config="DAPI", exposure=5.0)],
        z_plan=useq.ZRangeAround(range=4, step=2),
    )


def test_a_plan_that_sets_z_on_a_rig_without_a_focus_drive_is_refused(
    sim: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (UniMMCore keeps its Python focus drive on setFocusDevice(""): as a cfg without one)
    monkeypatch.setattr(sim.core, "getFocusDevice", lambda: "")
    with pytest.raises(LivescopeError, match="no focus drive; set Core-Focus in the cfg"):
        ScopeAgent(sim.core, sim.profile, _z_stack(), tmp_path / "run", sim=sim, bus="off")
    assert not (tmp_path / "run").exists()  # refused before anything ran or moved


def test_a_plan_at_two_places_on_a_rig_without_an_xy_stage_is_refused(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    sim.core.setXYStageDevice("")
    two = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, name="A"), useq.Position(x=500, y=0, name="B")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
    )
    with pytest.raises(LivescopeError, match=r"2 places.*no XY stage; set Core-XYStage in the cfg"):
        ScopeAgent(sim.core, sim.profile, two, tmp_path / "run", sim=sim, bus="off")
    # one place: the sample sits there
    one = two.replace(stage_positions=[useq.Position(x=0, y=0, name="A")])
    summary = ScopeAgent(sim.core, sim.profile, one, tmp_path / "one", sim=sim, bus="off").run()
    assert summary["ok"]
    assert summary["frames_acquired"] == 1


def test_decisions_a_rig_without_a_stage_cannot_carry_out_are_refused(
    sim: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # they were accepted, booked against the light budget, and then failed in the engine
    sim.core.setXYStageDevice("")
    monkeypatch.setattr(sim.core, "getFocusDevice", lambda: "")
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, name="A")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=60, loops=3),
    )
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path / "run", sim=sim, bus="off")
    rid = agent.run_id

    def add(t: int, **where: object) -> AddEvents:
        return AddEvents(run_id=rid, delay_s=600, events=[useq.MDAEvent(
            index={"t": t}, channel={"config": "DAPI"}, **where)])  # fmt: skip

    refused = {
        "elsewhere": agent._on_decision(add(10, x_pos=40.0, y_pos=0.0), clock_ns()),
        "z": agent._on_decision(add(11, pos_name="A", z_pos=5.0), clock_ns()),
        "move": agent._on_decision(Move(run_id=rid, position="A", x_um=40, y_um=0), clock_ns()),
    }
    assert not any(ack.accepted for ack in refused.values())
    assert (
        "no XY stage (Core-XYStage) and the plan images (0.0, 0.0)" in refused["elsewhere"].reason
    )
    assert "no focus drive (Core-Focus)" in refused["z"].reason
    assert "move A" in refused["move"].reason
    assert "no XY stage" in refused["move"].reason
    # where the sample sits, by name or at its x/y: accepted
    assert agent._on_decision(add(12, pos_name="A"), clock_ns()).accepted
    assert agent._on_decision(add(13, x_pos=0.0, y_pos=0.0), clock_ns()).accepted
    agent.feed.stop()
    agent.close()


def test_the_engine_refuses_a_stage_move_the_rig_has_no_device_for(
    sim: SimulatedMicroscope, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = LivescopeEngine(sim.core, sim.profile, sim=sim)
    phase: dict[str, object] = {"channel": {"config": "Phase"}, "exposure": 5.0}
    sim.core.setXYStageDevice("")
    engine.setup_event(useq.MDAEvent(x_pos=0.0, y_pos=0.0, **phase))  # where it sits
    with pytest.raises(SkipEvent):  # not recorded at a place it never reached
        engine.setup_event(useq.MDAEvent(index={"p": 1}, x_pos=500.0, y_pos=0.0, **phase))
    monkeypatch.setattr(sim.core, "getFocusDevice", lambda: "")
    with pytest.raises(SkipEvent):
        engine.setup_event(useq.MDAEvent(index={"p": 0, "z": 1}, z_pos=12.0, **phase))
    assert len(engine.failed_events) == 2
    assert "Core-XYStage" in (engine.first_failure or "")


# ------------------------------------------------------------ moves and stops


def _time_lapse(*positions: useq.Position, loops: int = 3, **kw: object) -> useq.MDASequence:
    return useq.MDASequence(
        stage_positions=list(positions),
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=60, loops=loops),
        **kw,
    )


def test_a_move_gives_z_to_a_position_the_plan_gives_none(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    seq = _time_lapse(useq.Position(x=0, y=0, name="A"))  # no z: wherever the focus is
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path / "run", sim=sim, bus="off")
    move = Move(run_id=agent.run_id, position="A", x_um=20, y_um=0, z_um=25.0)
    assert agent._on_decision(move, clock_ns()).accepted
    assert [(agent.feed.preview(e).x_pos, agent.feed.preview(e).z_pos) for e in seq] == [
        (20.0, 25.0)
    ] * 3
    # an x/y move later keeps that focus
    assert agent._on_decision(Move(run_id=agent.run_id, position="A", x_um=30, y_um=0), clock_ns())
    assert {agent.feed.preview(e).z_pos for e in seq} == {25.0}
    agent.feed.stop()
    agent.close()


@pytest.mark.parametrize("plan_z", [10.0, None])
def test_a_closeup_at_its_own_xy_takes_the_positions_focus_after_a_move(
    sim: SimulatedMicroscope, tmp_path: Path, plan_z: float | None
) -> None:
    # a position refocused (Move z), then a close-up centred on a cell (x/y of its own, no z):
    # it was imaged at the plan's z, not where the position is now in focus
    seq = _time_lapse(useq.Position(x=0, y=0, z=plan_z, name="A"))
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path / "run", sim=sim, bus="off")
    rid = agent.run_id
    assert agent._on_decision(
        Move(run_id=rid, position="A", x_um=5.0, y_um=0.0, z_um=14.0), clock_ns()
    ).accepted

    def closeup(t: int, **z: float) -> useq.MDAEvent:
        return useq.MDAEvent(index={"t": t}, pos_name="A", x_pos=12.0, y_pos=3.0,
                             channel={"config": "DAPI"}, **z)  # fmt: skip

    d = AddEvents(run_id=rid, delay_s=600, events=[closeup(40), closeup(41, z_pos=11.0)])
    assert agent._on_decision(d, clock_ns()).accepted
    added = sorted(
        (agent.feed.preview(e) for _, _, e in agent.feed._heap if e.metadata.get("added_by")),
        key=lambda e: e.index["t"],
    )
    # its own x/y kept; the position's focus now, or the z the decision gave
    assert [(e.x_pos, e.y_pos, e.z_pos) for e in added] == [(12.0, 3.0, 14.0), (12.0, 3.0, 11.0)]
    agent.feed.stop()
    agent.close()


def test_a_stop_drops_queued_closeups_in_the_stopped_field(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    seq = _time_lapse(
        useq.Position(x=0, y=0, z=0, name="A"), useq.Position(x=1000, y=0, z=0, name="B"), loops=5
    )
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path / "run", sim=sim, bus="off")
    rid = agent.run_id

    def closeup(t: int, x: float) -> AddEvents:  # a place of its own
        return AddEvents(run_id=rid, delay_s=600, events=[useq.MDAEvent(
            index={"t": t}, x_pos=x, y_pos=0.0, channel={"config": "DAPI"})])  # fmt: skip

    assert agent._on_decision(closeup(40, 10.0), clock_ns()).accepted  # in A's field
    assert agent._on_decision(closeup(41, 1010.0), clock_ns()).accepted  # in B's
    ack = agent._on_decision(StopPosition(run_id=rid, position="A"), clock_ns())
    assert ack.reason == "6 pending event(s) dropped"  # A's 5 and the close-up
    added = [e.x_pos for _, _, e in agent.feed._heap if e.metadata.get("added_by")]
    assert added == [1010.0]
    agent.feed.stop()
    agent.close()


def _stack_lapse() -> useq.MDASequence:
    return useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=10, name="A")],
        channels=[useq.Channel(config="Phase", exposure=5.0), useq.Channel(config="DAPI")],
        z_plan=useq.ZRangeAround(range=4, step=2),
        time_plan=useq.TIntervalLoops(interval=60, loops=3),
        axis_order="tpcz",
    )


@pytest.mark.parametrize("kind", ["move", "stop"])
def test_a_move_or_stop_mid_field_takes_effect_from_the_next_field(
    kind: str, sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    agent = ScopeAgent(sim.core, sim.profile, _stack_lapse(), run, sim=sim, bus="off")
    rid = agent.run_id
    acks = []

    def mid_field(ev: useq.MDAEvent) -> None:  # as from a worker one time point behind
        if not acks and dict(ev.index) == {"t": 1, "p": 0, "c": 0, "z": 1}:
            d = Move(run_id=rid, position="A", x_um=100.0, y_um=0.0) if kind == "move" else (
                StopPosition(run_id=rid, position="A"))  # fmt: skip
            acks.append(agent._on_decision(d, clock_ns()))

    sim.core.mda.events.eventStarted.connect(mid_field)
    try:
        agent.run()
    finally:
        sim.core.mda.events.eventStarted.disconnect(mid_field)
    # the field of t=1 is imaged whole, at one place; t=2's (6 events) moved or dropped
    assert acks[0].accepted
    assert acks[0].reason == f"6 pending event(s) {'moved' if kind == 'move' else 'dropped'}"
    xs = {f["index"]["t"]: set() for f in read_frames(run)}
    for f in read_frames(run):
        xs[f["index"]["t"]].add(f["x_um"])
    assert xs == ({0: {0.0}, 1: {0.0}, 2: {100.0}} if kind == "move" else {0: {0.0}, 1: {0.0}})
    assert sum(1 for f in read_frames(run) if f["index"]["t"] == 1) == 6


def test_a_move_between_fields_of_a_time_point_counts_the_fields_not_begun(
    sim: SimulatedMicroscope,
) -> None:
    seq = _time_lapse(
        useq.Position(x=0, y=0, z=0, name="A"), useq.Position(x=300, y=0, z=0, name="B"), loops=2
    )
    feed = EventFeed(seq, LivescopeEngine(sim.core, sim.profile, sim=sim), 6000.0)
    events = iter(feed)
    first = next(events)
    assert first.pos_name == "A"
    assert feed.move("B", 310.0, 0.0, None) == 2  # B's field of t=0 has not begun: it moves
    assert feed.move("A", 10.0, 0.0, None) == 1  # A's of t=0 has: only t=1's
    rest = [(e.pos_name, e.index["t"], e.x_pos) for e in events]
    assert rest == [("B", 0, 310.0), ("A", 1, 10.0), ("B", 1, 310.0)]


# ------------------------------------------------------------ the plan's order


def test_a_plan_that_images_positions_before_time_points_is_refused(
    sim: SimulatedMicroscope,
) -> None:
    pos = [useq.Position(x=0, y=0, name="A"), useq.Position(x=50, y=0, name="B")]
    with pytest.raises(PlanError, match="agent acquires time point by time point"):
        check_plan(_time_lapse(*pos, axis_order="ptc"), sim.profile)
    check_plan(_time_lapse(*pos, axis_order="tpc"), sim.profile)
    check_plan(_time_lapse(pos[0], axis_order="ptc"), sim.profile)  # one position: same order


# ------------------------------------------------------------ hardware-timed bursts


class _PiezoZ(SimZStage):
    """A sequenceable focus drive, as a piezo on a real rig."""

    def get_sequence_max_length(self) -> int:
        return 1000

    def send_sequence(self, sequence: object) -> None:
        self.sequence = sequence

    def start_sequence(self) -> None:
        pass

    def stop_sequence(self) -> None:
        pass


def test_a_new_interval_counts_from_the_last_hardware_timed_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sim_module, "SimZStage", _PiezoZ)
    with SimulatedMicroscope("sim") as piezo_sim:
        seq = useq.MDASequence(
            stage_positions=[useq.Position(x=0, y=0, z=10, name="A")],
            channels=[useq.Channel(config="Phase", exposure=5.0)],
            z_plan=useq.ZRangeAround(range=4, step=2),
            time_plan=useq.TIntervalLoops(interval=60, loops=5),
        )
        engine = LivescopeEngine(piezo_sim.core, piezo_sim.profile, sim=piezo_sim)
        feed = EventFeed(seq, engine, 1e6)
        events = iter(feed)
        bursts = [next(events) for _ in range(3)]
        assert all(getattr(b, "events", None) for b in bursts)  # z-stacks run as bursts
        now = feed.now()
        assert feed.change_interval(120.0) == 6
        after = feed.now()
        later = list(events)
        times = [e.events[0].metadata["sample_time_s"] for e in later]
        # from when t=2's burst began: planned at 120 s, or later (the plan ran far behind
        # at this clock scale), never before; or when the change came, if that is later
        # still (the old upper bound, now + 120 s, pinned a change too late for it)
        assert 240.0 <= times[0] <= max(now + 120.0, after)
        assert times[1] - times[0] == 120.0
        # the simulated sample is rendered at the burst's time, not at 0
        engine.setup_event(later[-1])
        assert piezo_sim.time_s == times[1]


# ------------------------------------------------------------ time points all due at once


def _fast(loops: int = 4) -> useq.MDASequence:
    """Two positions, time points as fast as the rig goes (interval 0): one batch."""
    seq = _time_lapse(
        useq.Position(x=0, y=0, z=0, name="A"), useq.Position(x=300, y=0, z=0, name="B")
    )
    return seq.replace(time_plan=useq.TIntervalLoops(interval=0, loops=loops))


def _order(events: list[useq.MDAEvent]) -> list[tuple[str, int]]:
    return [(str(e.pos_name), e.index["t"]) for e in events]


def test_a_closeup_goes_after_the_time_point_in_progress_when_all_are_due_at_once(
    sim: SimulatedMicroscope,
) -> None:
    # the plan's every time point was one batch: a close-up asked for during t=0 waited
    # for the end of the whole plan
    feed = EventFeed(_fast(), LivescopeEngine(sim.core, sim.profile, sim=sim), 6000.0)
    events = iter(feed)
    first = next(events)
    closeup = useq.MDAEvent(
        index={"t": 0}, x_pos=10.0, y_pos=0.0, pos_name="A~closeup-1",
        channel={"config": "Phase"}, exposure=5.0, min_start_time=feed.now(),
        metadata={"added_by": "d1"},
    )  # fmt: skip
    feed.add([closeup])
    rest = list(events)
    assert _order([first, *rest]) == [
        ("A", 0), ("B", 0),  # the time point begun (the engine looks one event ahead)
        ("A~closeup-1", 0),
        *((p, t) for t in (1, 2, 3) for p in "AB"),
    ]  # fmt: skip


def test_a_new_interval_applies_to_time_points_that_were_all_due_at_once(
    sim: SimulatedMicroscope,
) -> None:
    feed = EventFeed(_fast(), LivescopeEngine(sim.core, sim.profile, sim=sim), 1e6)
    events = iter(feed)
    assert _order([next(events), next(events)]) == [("A", 0), ("B", 0)]
    before = feed.now()
    assert feed.change_interval(60.0) == 6  # (those of t=1..3 were left as they were: 0)
    after = feed.now()
    rest = list(events)
    assert _order(rest) == [(p, t) for t in (1, 2, 3) for p in "AB"]
    # t=1 is due 60 s after t=0 began (0 s), or when the change came if that is later:
    # at this clock scale 60 s pass in 60 µs, and the old [60, 60, 120, 120, 180, 180]
    # was then the bug (all overdue, run back to back); 60 s apart from t=1 on either way
    times = [e.metadata["sample_time_s"] for e in rest]
    assert max(60.0, before) <= times[0] <= max(60.0, after)
    assert times == [times[0] + dt for dt in (0.0, 0.0, 60.0, 60.0, 120.0, 120.0)]


def test_a_new_interval_after_time_points_taken_as_fast_as_possible_counts_from_now(
    sim: SimulatedMicroscope,
) -> None:
    # an interval-0 plan's time points are all planned at 0 s: a new interval counted from
    # there, so the time points after it came as fast as before until the plan caught up
    # with the clock (on a rig: an hour at interval 0, then 5 min asked, gave 12 at once)
    feed = EventFeed(_fast(loops=8), LivescopeEngine(sim.core, sim.profile, sim=sim), 100.0)
    events = iter(feed)
    assert _order([next(events) for _ in range(6)])[-1] == ("B", 2)
    time.sleep(0.1)  # 10 s of plan time at this clock scale
    began = feed.now()
    assert _order([next(events)]) == [("A", 3)]  # t=3 begins about now
    assert began >= 10.0
    assert feed.change_interval(2.0) == 8  # t=4..7 at A and B
    rest = list(events)
    assert _order(rest) == [("B", 3), *((p, t) for t in range(4, 8) for p in "AB")]
    times = [e.metadata["sample_time_s"] for e in rest[1:]]
    assert times[0] >= began + 2.0  # t=4: 2 s after t=3 began (was 2 s after plan time 0)
    assert times == [times[0] + dt for dt in (0.0, 0.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0)]


def _two_channels() -> useq.MDASequence:
    """One place, two channels, as fast as the rig goes: fields of two events."""
    return useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A")],
        channels=[useq.Channel(config="Phase", exposure=5.0),
                  useq.Channel(config="DAPI", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=0, loops=4),
    )  # fmt: skip


@pytest.mark.parametrize("decision", ["closeup", "interval"])
def test_the_time_point_the_engine_looked_ahead_into_is_not_split(
    sim: SimulatedMicroscope, decision: str
) -> None:
    # the engine's iterator reads one event ahead: t=1's first event was taken with t=0,
    # so a new interval re-timed t=1's second event only (and was answered one short),
    # and a close-up asked for after t=0 went after t=1
    feed = EventFeed(_two_channels(), LivescopeEngine(sim.core, sim.profile, sim=sim), 1e6)
    events = iter(feed)
    t0 = [next(events), next(events)]
    assert [(e.index["t"], e.channel.config) for e in t0] == [(0, "Phase"), (0, "DAPI")]
    if decision == "interval":
        before = feed.now()
        assert feed.change_interval(60.0) == 6
        after = feed.now()
        times = [e.metadata["sample_time_s"] for e in events]
        # (t=1 at 60 s, or when the change came if later: at this clock scale the old
        # exact 60.0 was the bug of a change too late for it, see the test above)
        assert max(60.0, before) <= times[0] <= max(60.0, after)
        assert times == [times[0] + dt for dt in (0.0, 0.0, 60.0, 60.0, 120.0, 120.0)]
        return
    feed.add([useq.MDAEvent(
        index={"t": 0}, x_pos=10.0, y_pos=0.0, pos_name="A~closeup-1",
        channel={"config": "Phase"}, exposure=5.0, min_start_time=feed.now(),
        metadata={"added_by": "d1"},
    )])  # fmt: skip
    assert _order(list(events)) == [("A~closeup-1", 0), *((p, t) for t in (1, 2, 3) for p in "AA")]


def test_a_stop_then_a_new_interval_count_the_events_once(sim: SimulatedMicroscope) -> None:
    # the events a stop had dropped from a batch of time points all due at once were put
    # back by a new interval: counted as re-timed, and dropped again by a second stop
    places = [useq.Position(x=300.0 * i, y=0, z=0, name=name) for i, name in enumerate("ABC")]
    seq = _fast().replace(stage_positions=places)
    feed = EventFeed(seq, LivescopeEngine(sim.core, sim.profile, sim=sim), 1e6)
    events = iter(feed)
    assert _order([next(events), next(events)]) == [("A", 0), ("B", 0)]
    assert feed.stop_position("C") == 4  # (C's t=0 field has not begun)
    assert feed.change_interval(60.0) == 6  # A's and B's t=1..3
    assert feed.stop_position("C") == 0
    assert _order(list(events)) == [(p, t) for t in (1, 2, 3) for p in "AB"]
