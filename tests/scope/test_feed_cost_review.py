"""The event feed's costs on large plans (a plate's wells x channels x hundreds of time points).

Each decision holds the feed's lock, and the runner waits on it (the camera idles):
a new interval copied every queued event, a stop and each close-up falling due in an
interval-0 plan looked at every queued event. The last test pins what the feed hands
out, in order and time, against a simple model of it.
"""

from __future__ import annotations

import heapq
import math
import random
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import useq

import livescope.scope._feed as feed_module
from livescope.scope import EventFeed, LivescopeEngine, SimulatedMicroscope

FOV_UM = (100.0, 100.0)


def _plate(wells: int, loops: int, interval_s: float) -> useq.MDASequence:
    return useq.MDASequence(
        stage_positions=[useq.Position(x=1000.0 * i, y=0.0, z=0.0, name=f"W{i}")
                         for i in range(wells)],
        channels=[useq.Channel(config="Phase", exposure=5.0),
                  useq.Channel(config="DAPI", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=interval_s, loops=loops),
        axis_order="tpcz",
    )  # fmt: skip


def _feed(sim: SimulatedMicroscope, seq: useq.MDASequence) -> EventFeed:
    engine = LivescopeEngine(sim.core, sim.profile)  # (no time scaling: times as queued)
    engine.use_hardware_sequencing = False  # (one time point at a time)
    return EventFeed(seq, engine, 1.0, field_of_view_um=FOV_UM)


def _closeup(n: int, x: float, due_s: float, pos_name: str, **meta: Any) -> useq.MDAEvent:
    return useq.MDAEvent(
        index={"t": 1000 + n}, pos_name=pos_name, x_pos=x, y_pos=0.0,
        channel={"config": "DAPI"}, exposure=5.0, min_start_time=due_s,
        metadata={"added_by": f"d{n}", **meta},
    )  # fmt: skip


class _Clock:
    """A stand-in for the feed's `time` module: plan time moves only when the test says."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(feed_module, "time", types.SimpleNamespace(perf_counter=c.perf_counter))
    return c


def test_a_new_interval_copies_no_queued_event(
    sim: SimulatedMicroscope, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a pydantic copy of each queued event, lock held: ~1 s for 50,000 events, the runner
    # waiting on the lock all along; the time is now the queue's, given to each event as
    # it is handed out
    feed = _feed(sim, _plate(wells=4, loops=20, interval_s=60.0))
    events = iter(feed)
    first = [next(events) for _ in range(8)]  # time point 0
    copied: list[useq.MDAEvent] = []
    copy = useq.MDAEvent.model_copy

    def counted(self: useq.MDAEvent, *args: Any, **kwargs: Any) -> useq.MDAEvent:
        copied.append(self)
        return copy(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(useq.MDAEvent, "model_copy", counted)
        assert feed.change_interval(5.0) == 8 * 19
    assert copied == []
    feed.lead_s = 1e6  # (nothing waits)
    rest = list(events)
    assert [e.min_start_time for e in first] == [0.0] * 8
    assert [(e.index["t"], e.min_start_time) for e in rest] == [
        (t, 5.0 * t) for t in range(1, 20) for _ in range(8)
    ]


def test_a_stop_looks_only_at_the_events_it_may_drop(
    sim: SimulatedMicroscope, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a stop looked at every queued event of every position (~50-300 ms for a plate's plan)
    feed = _feed(sim, _plate(wells=4, loops=30, interval_s=60.0))
    feed.add([
        _closeup(1, 1010.0, 100.0, "W1~closeup-1", explicit_xy=True),  # W1's own close-up
        _closeup(2, 1020.0, 101.0, "xy2"),  # a place of its own in W1's field
        _closeup(3, 3020.0, 102.0, "xy3"),  # one in W3's
        _closeup(4, 3010.0, 103.0, "W3~closeup-1", explicit_xy=True),
    ])  # fmt: skip
    looked_at: list[str] = []
    name_of = feed_module.position_name

    def spied(event: useq.MDAEvent) -> str:
        looked_at.append(name_of(event))
        return looked_at[-1]

    with monkeypatch.context() as m:
        m.setattr(feed_module, "position_name", spied)
        assert feed.stop_position("W1") == 30 * 2 + 2  # its events, its close-up, xy2
    # (a place of its own is looked at: where it lies decides)
    assert set(looked_at) <= {"W1", "W1~closeup-1", "xy2", "xy3", "W3~closeup-1"}
    left = sorted((feed_module.position_name(e), e.index["t"]) for _, _, e in feed._heap)
    assert left == sorted(
        [(f"W{p}", t) for p in (0, 2, 3) for t in range(30) for _ in range(2)]
        + [("xy3", 1003), ("W3~closeup-1", 1004)]
    )


def test_a_closeup_falling_due_is_taken_without_re_sorting_the_queue(
    sim: SimulatedMicroscope, clock: _Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an interval-0 plan has every time point due: each close-up falling due rebuilt and
    # re-sorted the whole queue (~6-16 ms a time on the runner thread for a plate's plan)
    feed = _feed(sim, _plate(wells=4, loops=30, interval_s=0.0))
    events = iter(feed)
    assert next(events).index["t"] == 0
    feed.add([_closeup(n, 10.0, 4.5 + n, "W0~closeup-1", explicit_xy=True) for n in range(3)])
    sorts: list[int] = []
    heapify = heapq.heapify

    def counted(heap: list[Any]) -> None:
        sorts.append(len(heap))
        heapify(heap)

    clock.now = 6.0  # the first two are due
    with monkeypatch.context() as m:
        m.setattr(heapq, "heapify", counted)
        got = [next(events) for _ in range(7 + 2)]
    assert sorts == []
    assert [(e.pos_name, e.index["t"]) for e in got] == [
        (f"W{p}", 0) for p in (0, 1, 1, 2, 2, 3, 3)
    ] + [("W0~closeup-1", 1000), ("W0~closeup-1", 1001)]
    heap = feed._heap
    assert all(heap[(i - 1) // 2] <= heap[i] for i in range(1, len(heap)))  # still a heap
    assert len(heap) == 8 * 29 + 1


class _Model:
    """What the feed hands out, in a few slow lines (lead tiny, no burst, no replay)."""

    def __init__(self, seq: useq.MDASequence, lead_s: float) -> None:
        # each pending event: [due, order, event, its min_start_time when handed out]
        self.pending: list[list[Any]] = [
            [float(e.min_start_time or 0.0), i, e, e.min_start_time] for i, e in enumerate(seq)
        ]
        self.places = {p.name: (p.x, p.y) for p in seq.stage_positions}
        self.order = len(self.pending)
        self.lead_s = lead_s
        self.last_t: tuple[int, float] = (-1, 0.0)
        self.timing = False
        self.stopped: set[str] = set()

    def add(self, events: list[useq.MDAEvent]) -> None:
        for e in events:
            self.pending.append([float(e.min_start_time or 0.0), self.order, e, e.min_start_time])
            self.order += 1

    def next_batch(self, now: float) -> list[list[Any]]:
        added = [p for p in self.pending if p[2].metadata.get("added_by")]
        due = sorted((p for p in added if p[0] <= now + self.lead_s), key=lambda p: p[:2])
        if due:
            return due
        queue = sorted(self.pending, key=lambda p: p[:2])
        batch = queue[:1]
        for p in queue[1:]:
            if p[0] != batch[0][0] or p[2].index.get("t", 0) != batch[0][2].index.get("t", 0):
                break
            batch.append(p)
        return batch

    def hand_out(self, p: list[Any], now: float) -> tuple[str, int, str, float | None]:
        self.pending.remove(p)
        ev, t = p[2], p[2].index.get("t", 0)
        if not ev.metadata.get("added_by") and t > self.last_t[0]:
            begun = float(p[3] or 0.0)
            self.last_t = (t, max(begun, now) if self.timing else begun)
        self.timing = True
        return (feed_module.position_name(ev), t, ev.channel.config, p[3])

    def change_interval(self, iv: float, now: float) -> int:
        t_cur, t_start = self.last_t
        nxt = max(t_cur + 1, 0)
        next_due = max(t_start + (nxt - max(t_cur, 0)) * iv, now)
        n = 0
        for p in self.pending:
            t = p[2].index.get("t", 0)
            if t > t_cur and not p[2].metadata.get("added_by"):
                p[0] = p[3] = next_due + (t - nxt) * iv
                n += 1
        return n

    def stop(self, name: str) -> int:
        self.stopped.add(name)
        fields = [self.places[s] for s in self.stopped]
        h, w = FOV_UM

        def dropped(ev: useq.MDAEvent) -> bool:
            place = feed_module.position_name(ev)
            if place.split("~")[0] in self.stopped:
                return True
            if not ev.metadata.get("explicit_xy") and place.split("~")[0] in self.places:
                return False
            return any(abs(ev.x_pos - x) < w / 2 and abs(ev.y_pos - y) < h / 2 for x, y in fields)

        before = len(self.pending)
        self.pending = [p for p in self.pending if not dropped(p[2])]
        return before - len(self.pending)


@pytest.mark.parametrize("interval_s", [0.0, 10.0], ids=["interval-0", "interval-10"])
@pytest.mark.parametrize("seed", [1, 2])
def test_a_large_plan_with_decisions_is_handed_out_as_a_simple_model_says(
    sim: SimulatedMicroscope, clock: _Clock, seed: int, interval_s: float
) -> None:
    # order and time of every event handed out, with new intervals, stops and close-ups
    # (sub-positions, places of their own) arriving between time points
    rng = random.Random(seed)
    seq = _plate(wells=8, loops=25, interval_s=interval_s)
    feed = _feed(sim, seq)
    model = _Model(seq, feed.lead_s)
    events: Iterator[useq.MDAEvent] = iter(feed)
    n_added = stops = 0
    decide: list[Callable[[], None]] = []

    def new_interval() -> None:
        iv = float(rng.choice([0, 3, 10, 25]))
        assert feed.change_interval(iv) == model.change_interval(iv, clock.now)

    def stop() -> None:
        nonlocal stops
        live = sorted(set(model.places) - model.stopped)
        if stops < 3 and len(live) > 1:
            stops += 1
            name = rng.choice(live)
            assert feed.stop_position(name) == model.stop(name)

    def closeups() -> None:
        nonlocal n_added
        live = sorted(set(model.places) - model.stopped)
        added = []
        for _ in range(rng.randint(1, 3)):
            n_added += 1
            well = rng.choice(live)
            x = model.places[well][0] + rng.uniform(-30, 30)
            due = clock.now + rng.randint(-3, 20) + 0.5  # (never within the lead of now)
            if rng.random() < 0.5:
                added.append(_closeup(n_added, x, due, f"{well}~closeup-1", explicit_xy=True))
            else:  # a place of its own, in a live well's field or far from any
                x = x if rng.random() < 0.5 else 50_000.0 + x
                added.append(_closeup(n_added, x, due, f"xy{n_added}"))
        feed.add(added)
        model.add(added)

    decide += [new_interval, stop, closeups, closeups, lambda: None]
    handed = 0
    while model.pending:
        if handed:
            for _ in range(rng.randint(0, 2)):
                rng.choice(decide)()
            clock.now += rng.randint(0, 3)
        batch = model.next_batch(clock.now)
        if batch[0][0] > clock.now + model.lead_s:  # (the runner waits until it is due)
            clock.now = float(math.ceil(batch[0][0]))
            batch = model.next_batch(clock.now)
        for p in batch:
            ev = next(events)
            got = (feed_module.position_name(ev), ev.index.get("t", 0), ev.channel.config,
                   ev.min_start_time)  # fmt: skip
            assert got == model.hand_out(p, clock.now), f"event {handed}"
            handed += 1
    assert next(events, None) is None
    assert handed > 8 * 25 * 2 // 2
