"""The event feed on large plans and under stops: what it keeps, looks at and counts.

The keys of the planned events (`EventFeed.is_taken`) took ~110 bytes an event
(48 MB for 96 positions x 1,500 time points x 3 channels); a move looked at every
queued event, lock held (~250 ms on such a plan); a stop that came while the
engine held a burst of several places (it looks ahead to join them) had the
stopped place's events acquired all the same, though counted as dropped.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterable, Iterator

import pytest
import useq

import livescope.scope._feed as feed_module
from livescope.scope import EventFeed, LivescopeEngine, SimulatedMicroscope
from livescope.scope._feed import event_key


def _plate(wells: int, loops: int, channels: Iterable[str] = ("Phase", "DAPI"),
           *, x_um: float = 1000.0) -> useq.MDASequence:  # fmt: skip
    return useq.MDASequence(
        stage_positions=[useq.Position(x=x_um * i, y=0.0, z=0.0, name=f"W{i}")
                         for i in range(wells)],
        channels=[useq.Channel(config=c, exposure=5.0) for c in channels],
        time_plan=useq.TIntervalLoops(interval=60.0, loops=loops),
        axis_order="tpcz",
    )  # fmt: skip


def _closeup(n: int, x: float, pos_name: str, t: int) -> useq.MDAEvent:
    return useq.MDAEvent(
        index={"t": t}, pos_name=pos_name, x_pos=x, y_pos=0.0, channel={"config": "DAPI"},
        exposure=5.0, min_start_time=0.0, metadata={"added_by": f"d{n}", "explicit_xy": True},
    )  # fmt: skip


def _subs(events: Iterable[useq.MDAEvent]) -> Iterator[useq.MDAEvent]:
    """The events handed out, a hardware-timed burst's one by one."""
    for e in events:
        yield from getattr(e, "events", None) or (e,)


def test_is_taken_answers_as_a_set_of_the_keys_would(sim: SimulatedMicroscope) -> None:
    seq = _plate(wells=3, loops=40)
    feed = EventFeed(seq, LivescopeEngine(sim.core, sim.profile), 1.0)
    added = [_closeup(n, 10.0 * n, name, t) for n, (name, t) in enumerate([
        ("W0~closeup-1", 1000), ("W0~closeup-1", 1001), ("W1", 41),  # just past the plan
        ("W1", 10**9), ("W2", -3), ("xy9", 5), ("W2", 39)])]  # fmt: skip
    feed.add(added)
    keys = {event_key(e) for e in [*seq, *added]}
    probes = keys | {
        (p, t, c, z)
        for p in ("W0", "W1", "W2", "W3", "W0~closeup-1", "xy9")
        for t in (-3, -1, 0, 7, 39, 40, 41, 42, 999, 1000, 1001, 1002, 10**9, 10**30)
        for c in ("Phase", "DAPI", "GFP")
        for z in (0, 1, 10**30)
    }
    assert {k for k in probes if feed.is_taken(k)} == keys


def test_the_planned_keys_take_a_bit_a_time_point_not_a_tuple(
    sim: SimulatedMicroscope,
) -> None:
    # 4 positions x 1,000 time points x 2 channels: a set of the keys held ~880 kB
    seq = _plate(wells=4, loops=1000)
    events = list(seq)
    n = len(events)
    engine = LivescopeEngine(sim.core, sim.profile)
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        feed = EventFeed(seq, engine, 1.0, events=events)
        held = tracemalloc.get_traced_memory()[0]
        del feed.__dict__["_planned_keys"]  # (what is freed is what they held)
        freed = held - tracemalloc.get_traced_memory()[0]
    finally:
        if not tracing:
            tracemalloc.stop()
    assert 0 < freed < n  # under a byte an event


def test_a_move_looks_only_at_the_moved_positions_events(
    sim: SimulatedMicroscope, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a move and the check of where it takes each event looked at every queued event of
    # every position, the lock held (~250 ms each on a plate's plan, the runner waiting)
    seq = _plate(wells=4, loops=30)
    feed = EventFeed(seq, LivescopeEngine(sim.core, sim.profile), 1.0)
    feed.add([_closeup(1, 1010.0, "W1", 1000), _closeup(2, 3010.0, "W3", 1000)])
    looked_at: list[str] = []
    name_of = feed_module.position_name

    def spied(event: useq.MDAEvent) -> str:
        looked_at.append(name_of(event))
        return looked_at[-1]

    with monkeypatch.context() as m:
        m.setattr(feed_module, "position_name", spied)
        coords = feed.moved_coordinates("W1", 1005.0, 2.0, None)
        moved = feed.move("W1", 1005.0, 2.0, None)
    assert set(looked_at) == {"W1"}
    # each of W1's events, its own close-up (at x/y of its own) apart, 5 µm right, 2 up
    plan_w1 = [e for e in seq if e.pos_name == "W1"]
    assert moved == len(plan_w1)
    assert sorted(coords[1:]) == sorted([(1005.0, 2.0, 0.0)] * len(plan_w1))
    assert coords[0] == (1005.0, 2.0, None)


def _stop_while_the_engine_holds(
    feed: EventFeed, engine: LivescopeEngine, position: str, after: int
) -> list[int]:
    """Stop ``position`` once the engine has taken ``after`` events, before it joins them.

    As a decision arriving then on the decision-server thread; returns what it dropped.
    """
    real = engine.event_iterator
    dropped: list[int] = []

    def handed(events: Iterable[useq.MDAEvent]) -> Iterator[useq.MDAEvent]:
        for i, e in enumerate(events):
            if i == after and not dropped:
                dropped.append(feed.stop_position(position))
            yield e

    engine.event_iterator = lambda events: real(handed(events))  # type: ignore[method-assign]
    return dropped


def test_a_stop_while_a_burst_of_several_places_is_joined_leaves_its_events_out(
    sim: SimulatedMicroscope,
) -> None:
    # two positions imaging one place join into a hardware-timed burst (on a rig whose
    # stage takes sequences, any two do); W0 stopped while the engine held its event and
    # not yet W1's: the burst went whole, W0 imaged though counted as dropped
    seq = _plate(wells=2, loops=3, channels=("DAPI",), x_um=0.0)
    engine = LivescopeEngine(sim.core, sim.profile)
    assert engine.use_hardware_sequencing
    feed = EventFeed(seq, engine, 1.0)
    feed.lead_s = 1e6  # (nothing waits)
    dropped = _stop_while_the_engine_holds(feed, engine, "W0", after=1)
    got = [(e.pos_name, e.index["t"]) for e in _subs(feed)]
    assert dropped == [3]  # W0 at t = 0, 1, 2
    assert got == [("W1", t) for t in range(3)]


def test_counts_say_what_became_of_the_planned_and_added_events(
    sim: SimulatedMicroscope,
) -> None:
    seq = _plate(wells=3, loops=4)
    engine = LivescopeEngine(sim.core, sim.profile)
    engine.use_hardware_sequencing = False  # (one event at a time: the stop falls mid-run)
    feed = EventFeed(seq, engine, 1.0)
    feed.lead_s = 1e6  # (nothing waits)
    assert feed.counts == {"planned": 24, "added": 0, "planned_taken": 0, "added_taken": 0,
                           "planned_stopped": 0, "added_stopped": 0, "left": 24}  # fmt: skip
    events = iter(feed)
    got = [next(events) for _ in range(3)]  # W0's t=0 and W1's first
    feed.add([_closeup(n, 2010.0, "W2~closeup-1", 1000 + n) for n in range(2)])
    feed.add([_closeup(5, 10.0, "W0~closeup-1", 1005)])
    dropped = feed.stop_position("W2")
    got += [next(events) for _ in range(5)]
    feed.stop()
    got += list(events)
    plan_taken = sum(1 for e in got if not e.metadata.get("added_by"))
    counts = feed.counts
    assert counts == {
        "planned": 24, "added": 3, "planned_taken": plan_taken,
        "added_taken": len(got) - plan_taken, "planned_stopped": 8, "added_stopped": 2,
        "left": 24 + 3 - len(got) - dropped,
    }  # fmt: skip
    assert dropped == 10  # W2's 8 and its 2 close-ups
    assert len(got) == 8
    assert counts["left"] > 0  # (the stopped run never took them)
