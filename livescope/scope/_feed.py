"""The agent's event queue: the plan's events, fed to the MDA runner just in time.

`EventFeed` holds the events still to acquire; decisions add, move, re-time or
stop them while the run goes on (see `ScopeAgent`).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import useq

from livescope.schema import LivescopeError, PlanPositions, parent_position

from ._engine import SAMPLE_TIME_KEY, LivescopeEngine, sample_time_s
from ._fanout import position_name
from ._feed_index import PlannedKeys, QueueEntry, heap_remove, next_plan_due

__all__ = ["EventFeed", "event_key"]

logger = logging.getLogger("livescope")


def event_key(event: useq.MDAEvent) -> tuple[str, int, str, int]:
    """Return (position, t, channel, z): an event's place in the plan."""
    ch = event.channel.config if event.channel else ""
    return (position_name(event), event.index.get("t", 0), ch, event.index.get("z", 0))


def _same_frame_settings(a: useq.MDAEvent, b: useq.MDAEvent) -> bool:
    """Whether two events image the same place, channel, plane and exposure."""
    return (
        position_name(a) == position_name(b)
        and a.channel == b.channel
        and (a.x_pos, a.y_pos, a.z_pos, a.exposure) == (b.x_pos, b.y_pos, b.z_pos, b.exposure)
        and bool(a.metadata.get("added_by")) == bool(b.metadata.get("added_by"))
    )


def _field(event: useq.MDAEvent) -> tuple[str, int]:
    """Return (position, t): the field an event belongs to."""
    return (position_name(event), event.index.get("t", 0))


def _place_key(event: useq.MDAEvent) -> tuple[str, bool]:
    """Return (position, imaged at x/y of its own): where a stop looks for an event."""
    return (position_name(event), bool(event.metadata.get("explicit_xy")))


class EventFeed:
    """The queue of events still to acquire, consumed by the MDA runner.

    Times are plan seconds (``min_start_time``). Thread-safe: the runner iterates
    on its thread, decisions arrive on the decision-server thread.

    On the wall clock, an event is handed to the runner only ``lead_s`` before it
    is due: until then the feed waits, and events a decision adds in the
    meantime (due earlier) go first, as do moves, stops and new intervals. A
    runner given the next time point at once would wait for it with the event
    in hand, and a close-up asked for now would start only after it. The feed
    keeps the schedule's clock (the runner's event timer is reset only at the
    first event), and a pause of the runner stops that clock from the moment it
    is asked for to the moment it is lifted (`pause_toggled`, on the runner's
    ``sequencePauseToggled`` signal): later events come that much later. (The
    runner also counts a pause it sees while it holds an event, in 0.1 s steps:
    after such a pause it may hold the next events up to 0.1 s longer than
    ``lead_s``.) Since the runner hardly waits itself, pymmcore-plus's
    ``awaitingEvent`` signal (a GUI's countdown) is seldom emitted.
    """

    lead_s: float = 0.005
    """Wall-clock seconds before its time that an event is handed over (the runner
    waits out the rest; pycromanager's feeder takes its own lead)."""
    runner_cancelled: Callable[[], bool] | None = None
    """Set by the agent: True once the runner was cancelled (the feed then stops
    waiting, so that the runner sees the cancel at once)."""
    runner_pausing: Callable[[], bool] | None = None
    """Set by the agent: True while the runner is paused or a pause is asked for.
    `pause_toggled` trusts it over the signal's argument (signals from two threads
    may arrive out of order), and a paused feed looks at it as it waits."""

    def __init__(
        self,
        sequence: useq.MDASequence,
        engine: LivescopeEngine,
        clock_scale: float,
        clock: Callable[[], float] | None = None,
        *,
        events: Iterable[useq.MDAEvent] | None = None,
        field_of_view_um: tuple[float, float] | None = None,
    ):
        # ``events``: the sequence's events, if the caller has expanded it already;
        # ``field_of_view_um``: (height, width) of the camera's field, for stopped places
        self._engine = engine
        self._scale = clock_scale  # plan seconds per wall-clock second
        self._clock = clock  # plan seconds since the start, when not the wall clock (replay)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # events added, moved, stopped
        self._heap: list[QueueEntry] = []
        self._order = itertools.count()
        # what became of the events (`counts`), the plan's and those decisions added
        self._counts = dict.fromkeys(
            ("planned", "added", "planned_taken", "added_taken", "planned_stopped",
             "added_stopped"), 0,
        )  # fmt: skip
        self.positions: dict[str, tuple[float | None, float | None, float | None]] = {}
        self.p_of: dict[str, int] = {}
        # an added event may give a position's name or index, and a grid tile
        self._plan_positions = PlanPositions()
        self._planned_keys = PlannedKeys()
        self._stopped_positions: set[str] = set()
        self._stopped_fields: list[tuple[str, float, float]] = []  # (name, x, y) of each
        self._fov_um = field_of_view_um
        self._added_positions: set[str] = set()  # places that only decisions' events image
        self._added_xy: dict[str, tuple[float, float]] = {}  # an added place -> its x, y
        self._offsets: dict[str, tuple[float, float, float]] = {}
        self._z_set: dict[str, float] = {}  # a moved position the plan gives no z -> its z
        # the events taken off the queue together (one time point), and the fields
        # (position, t) of it already begun, each with the move it began with: a move or
        # stop takes effect from a position's next field, never within one
        self._batch: list[useq.MDAEvent] = []
        self._rest: collections.deque[QueueEntry] = collections.deque()  # the batch not yet handed
        # the queued events decisions added (order number -> queue entry), and a heap of
        # (due, order) of them that may hold some no longer queued: what is due is found,
        # and taken, without a look at every plan event (an interval-0 plan has them all due)
        self._queued_added: dict[int, QueueEntry] = {}
        self._added_index: list[tuple[float, int]] = []
        # the queued events by `_place_key` (order number -> event): a stop finds those it
        # drops without a look at every other position's
        self._queued_at: dict[tuple[str, bool], dict[int, useq.MDAEvent]] = {}
        # order numbers of queued events `change_interval` re-timed: the queue entry holds
        # their time, the event is given it only when it is handed out (a copy of each of
        # 100,000 events would hold the lock, and the runner, for seconds)
        self._retimed: set[int] = set()
        self._begun: dict[tuple[str, int], tuple[tuple[float, float, float] | None, float | None]]
        self._begun = {}
        self.stopped = False
        self.finished = False
        # the clock: (wall time of plan time 0, wall time a pause began or None), one
        # tuple so that `now` reads both at once without the lock
        self._clock0: tuple[float | None, float | None] = (None, None)
        self._last_t: tuple[int, float] = (-1, 0.0)  # last time index handed out, its time
        self._timing = False  # the clock restarted at the first event (`__iter__`)
        stage = list(sequence.stage_positions)
        for event in sequence if events is None else events:
            self._push(event)
            name = self._plan_positions.add(event)
            p = event.index.get("p", 0)
            if p < len(stage):  # the position itself, not its first plane
                sp = stage[p]
                if "g" not in event.index:
                    self.positions.setdefault(name, (sp.x, sp.y, sp.z))
                elif sp.z is not None:  # a grid tile: its own x/y, its position's z
                    self.positions.setdefault(name, (event.x_pos, event.y_pos, sp.z))
            self.positions.setdefault(name, (event.x_pos, event.y_pos, event.z_pos))
            self.p_of.setdefault(name, p)
        self._plan_xyz = dict(self.positions)

    def _push(self, event: useq.MDAEvent) -> None:
        entry = (float(event.min_start_time or 0.0), next(self._order), event)
        self._requeue(entry)
        self._planned_keys.add(event_key(event))
        self._counts["added" if event.metadata.get("added_by") else "planned"] += 1

    @property
    def counts(self) -> dict[str, int]:
        """Return how many events the plan has and decisions added, and what became of them.

        ``planned`` and ``added``: events the plan holds and decisions added (a
        replay's that it never serves are not added); ``planned_taken`` and
        ``added_taken``: of those, handed to the runner (a burst counts each of
        its events; one the hardware then fails is counted here too);
        ``planned_stopped`` and ``added_stopped``: dropped by a stop of their
        position or place (what `stop_position` returns, summed); ``left``: the
        rest, still queued, never taken because the run stopped or ended first,
        or skipped by the engine (frames a replay's recording lacks); an event
        handed out that the runner gave back unacquired (`untake`) counts there
        too. Any thread.
        """
        with self._lock:
            counts = dict(self._counts)
        counts["left"] = (
            counts["planned"] + counts["added"] - counts["planned_taken"]
            - counts["added_taken"] - counts["planned_stopped"] - counts["added_stopped"]
        )  # fmt: skip
        return counts

    def untake(self, event: useq.MDAEvent) -> None:
        """Count an event handed out as never taken: the runner gave it back unacquired.

        pycromanager's feeder takes events ahead of its engine: those a
        `StopRun` catches before the engine begins them are given back, and
        count as ``left`` (`counts`), as on the MDA path, where a stop keeps
        them from being handed out at all; so are a hardware-timed burst's
        that a stop of the run cut off (`LivescopeEngine.cut_off_events`). Any
        thread.
        """
        with self._lock:
            self._counts["added_taken" if event.metadata.get("added_by") else "planned_taken"] -= 1

    def _requeue(self, entry: QueueEntry) -> None:
        """Put an entry on the queue (lock held)."""
        heapq.heappush(self._heap, entry)
        self._queued_at.setdefault(_place_key(entry[2]), {})[entry[1]] = entry[2]
        if entry[2].metadata.get("added_by"):
            self._queued_added[entry[1]] = entry
            heapq.heappush(self._added_index, entry[:2])

    def _unqueued(self, entries: Iterable[QueueEntry]) -> None:
        """Forget entries taken off the heap (lock held)."""
        for _, order, ev in entries:
            key = _place_key(ev)
            at = self._queued_at.get(key)
            if at is not None:
                at.pop(order, None)
                if not at:
                    del self._queued_at[key]
            self._queued_added.pop(order, None)

    # ------------------------------------------------------------ runner side

    def now(self) -> float:
        """Plan time since the run started, seconds."""
        if self._clock is not None:
            return self._clock()
        t0, paused_at = self._clock0
        if t0 is None:
            return 0.0
        wall = time.perf_counter() if paused_at is None else paused_at
        return max(0.0, wall - t0) * self._scale

    def pause_toggled(self, paused: bool) -> None:
        """Stop (``paused``) or restart the feed's clock; any thread (the runner's signal).

        A pause does not count towards the plan: every later event comes that
        much later. Where `runner_pausing` is set, the runner's own state decides,
        not ``paused``. Asking twice, or lifting a pause never asked for, changes
        nothing.
        """
        if self.runner_pausing is not None:
            paused = self.runner_pausing()
        with self._lock:
            self._set_paused(paused)

    def _set_paused(self, paused: bool) -> None:
        """Stop or restart the clock (lock held)."""
        t0, paused_at = self._clock0
        wall = time.perf_counter()
        if paused and paused_at is None:
            self._clock0 = (t0, wall)
        elif not paused and paused_at is not None:
            if t0 is not None:  # the part of the pause since the clock started
                t0 += wall - max(paused_at, t0)
            self._clock0 = (t0, None)
        self._changed.notify_all()

    def __iter__(self) -> Iterator[useq.MDAEvent]:
        """Yield events (runner thread) until the plan is done or the run is stopped.

        Decisions apply to every event not yet handed to the runner, from a
        position's next field (position, t) on: a field already begun is imaged
        whole, where it began, even if its position is moved or stopped meanwhile.
        """
        with self._lock:
            self._clock0 = (time.perf_counter(), self._clock0[1])
        first = True
        try:
            while True:
                with self._lock:
                    drained = not self.stopped and not self._heap
                # before the run ends, an engine may wait for work in flight (a replay waits
                # for the worker's last fields, whose decisions may still add events)
                if drained and getattr(self._engine, "drain", lambda: False)():
                    continue
                with self._lock:
                    if self.stopped or not self._heap:
                        self.finished = True
                        return
                    if not first and self._wait_for_head():
                        continue  # something changed, or a while passed: look again
                    entries = self._take_added_due() or self._take_time_point()
                    self._batch, self._begun = [e for _, _, e in entries], {}
                    self._rest = collections.deque(entries)
                joined = self._engine.event_iterator(self._hand_out())
                parts: collections.deque[useq.MDAEvent] = collections.deque()
                while (event := parts.popleft() if parts else next(joined, None)) is not None:
                    with self._lock:
                        if self._is_stopped():  # a decision may have stopped the run
                            self.finished = True
                            return
                        subs = getattr(event, "events", None) or (event,)
                        kept = [e for e in subs if not self._dropped(e)]
                        rejoin: list[useq.MDAEvent] | None = None
                        if len(kept) < len(subs):
                            rejoin = kept
                        else:
                            for e in subs:  # (a field begun keeps the move it began with)
                                name = position_name(e)
                                self._begun.setdefault(
                                    _field(e), (self._offsets.get(name), self._z_set.get(name))
                                )
                                self._counts["added_taken" if e.metadata.get("added_by")
                                             else "planned_taken"] += 1  # fmt: skip
                            event = self._moved(event, begun=True)
                            if getattr(event, "events", None):  # (a stop may end it early,
                                self._engine.burst_handed(event)  # see `stop_position`)
                    if rejoin is not None:
                        # a stop came while the engine held events it joins into a burst
                        # (it looks ahead): those it dropped, and counted, are left out,
                        # the rest joined again (a burst of several places went whole)
                        if rejoin:  # (ahead of any other part, in order)
                            parts.extendleft(reversed(list(self._engine.event_iterator(rejoin))))
                        continue
                    if first:  # the runner's event timer starts at the first event
                        event = event.model_copy(update={"reset_event_timer": True})
                        with self._lock:
                            self._clock0, first = (time.perf_counter(), self._clock0[1]), False
                            self._timing = True
                    elif event.reset_event_timer:  # useq sets it per position (p before t):
                        # the feed's clock times every event, so the runner's never restarts
                        event = event.model_copy(update={"reset_event_timer": False})
                    yield event
                with self._lock:  # (left for events decisions added: see `_hand_out`)
                    for entry in self._rest:
                        if not self._dropped(entry[2]):  # (a stop dropped it, and counted it)
                            self._requeue(entry)
                    self._rest.clear()
                    self._batch = []
        finally:
            with self._lock:
                self.finished = True

    def _hand_out(self) -> Iterator[useq.MDAEvent]:
        """Yield the batch's events to the engine's iterator, which may join them in bursts.

        A batch holds one time point, or several at one place all due at once
        that a hardware-timed burst may take together (`_take_time_point`):
        those are left between two time points when events a decision added
        are due, which go first (`__iter__` puts the rest back). The time
        point an event belongs to counts as begun once the engine's iterator,
        which looks one event ahead, has taken it (`change_interval`).
        """
        last_t: int | None = None
        while True:
            with self._lock:
                if not self._rest:
                    return
                due, order, ev = self._rest[0]
                t = ev.index.get("t", 0)
                added = bool(ev.metadata.get("added_by"))
                if last_t is not None and t != last_t and not added and self._added_due_now():
                    return
                self._rest.popleft()
                if order in self._retimed:  # (`change_interval` re-timed it in the queue)
                    self._retimed.discard(order)
                    ev = ev.model_copy(update={"min_start_time": due})
                if not added and t > self._last_t[0]:
                    # begun when planned, or now if the plan is behind (interval 0): a new
                    # interval counts from then, not from a plan time long past
                    begun = sample_time_s(ev, float(ev.min_start_time or 0.0))
                    if self._clock is None and self._timing:  # (not a replay's clock)
                        begun = max(begun, self.now())
                    self._last_t = (t, begun)
            last_t = t
            yield ev

    def _take_time_point(self) -> list[QueueEntry]:
        """Take the next time point's events off the queue, in order (lock held).

        Events due at once go together, one time point at a time; later time
        points at the same place, in the same channel, plane and exposure, go
        along when the engine runs hardware-timed bursts, which may join them
        (an interval-0 time-lapse of one place runs as one burst).
        """
        due, _, head = self._heap[0]
        taken = [heapq.heappop(self._heap)]
        burst = bool(getattr(self._engine, "use_hardware_sequencing", False))
        prev = head
        while self._heap and self._heap[0][0] == due:
            ev = self._heap[0][2]
            if ev.index.get("t", 0) != prev.index.get("t", 0) and not (
                burst and _same_frame_settings(prev, ev)
            ):
                break
            taken.append(heapq.heappop(self._heap))
            prev = ev
        self._unqueued(taken)
        return taken

    def _take_added_due(self) -> list[QueueEntry]:
        """Take the events decisions added that are due off the queue, in order (lock held).

        They go before plan events that are overdue (the plan is behind, or all
        its time points are due at once): a close-up asked for now is imaged
        after the time point in progress, not after every late one. A replay's
        clock serves the recording's order: nothing is taken. One due only
        within the lead (not yet late) goes after a plan event due before it
        that is not late either: the lead may be long (a pycromanager feeder's,
        or seconds of plan time on an accelerated clock), and the time point,
        on time, would start late. One time point (events due at once) of each
        decision is taken at a time: where it is late, the decision's later ones
        move later by as much (`_keep_spacing`).
        """
        if not self._added_due_now():
            return []
        now, index = self.now(), self._added_index
        due_by = now + self.lead_s * self._scale  # (`_due_by`, at the same moment)
        plan_next: float | None = None  # when the next plan event is due (looked up once)
        due: set[int] = set()
        first: dict[str, float] = {}  # a decision -> when its time point taken now was due
        later: list[tuple[float, int]] = []  # a decision's later time points, due too
        while index and index[0][0] <= due_by:
            if index[0][1] in self._queued_added and index[0][0] > now:
                if plan_next is None:
                    plan_next = next_plan_due(self._heap, self._queued_added)
                # (a plan event already late waits: see above; at the same time, it goes first)
                if now < plan_next <= index[0][0]:
                    break
            at, order = heapq.heappop(index)
            if order in self._queued_added:
                # one time point (its events due at once) of a decision at a time: the
                # rest are re-timed from when it is taken (`_keep_spacing`)
                if first.setdefault(self._queued_added[order][2].metadata["added_by"], at) == at:
                    due.add(order)
                else:
                    later.append((at, order))
        for held in later:
            heapq.heappush(index, held)
        if not due:  # (all wait for a plan event due first)
            return []
        # (due, order): never the events; each taken out of the heap where it is, the plan's
        # events left as they are
        taken = sorted(self._queued_added[order] for order in due)
        for entry in taken:
            heap_remove(self._heap, entry)
        self._unqueued(taken)
        self._keep_spacing({d: now - at for d, at in first.items() if now > at})
        return taken

    def _keep_spacing(self, late: dict[str, float]) -> None:
        """Move the queued events of decisions whose time point is taken late (lock held).

        ``late``: a decision id -> how many seconds late. Its later time points
        were timed when the decision was applied; one taken late (it waited for
        a time point in progress, or the plan is behind) would leave them
        overdue, all taken at once: a close-up time-lapse's frames came back to
        back, not ``interval_s`` apart. They move later by as much, so they stay
        as far apart as asked from when it began (the plan's own time points do
        not move: `change_interval` re-times those). Each is given its new time
        (and sample time) and queued anew.
        """
        if not late:
            return
        moving = [e for e in self._queued_added.values() if e[2].metadata["added_by"] in late]
        if not moving:
            return
        if len(moving) <= 16:  # (a few: each taken out where it is, not the queue re-sorted)
            for entry in moving:
                heap_remove(self._heap, entry)
        else:
            gone = {order for _, order, _ in moving}
            self._heap = [h for h in self._heap if h[1] not in gone]
            heapq.heapify(self._heap)
        self._unqueued(moving)
        for due, _, ev in sorted(moving, key=lambda e: e[:2]):
            when = due + late[ev.metadata["added_by"]]
            meta = {**ev.metadata, SAMPLE_TIME_KEY: when}
            ev = ev.model_copy(update={"min_start_time": when, "metadata": meta})
            self._requeue((when, next(self._order), ev))

    def _added_due_now(self) -> bool:
        """Whether an event a decision added is due (lock held; never on a replay's clock)."""
        if self._clock is not None or not self._queued_added:
            return False
        index = self._added_index
        while index and index[0][1] not in self._queued_added:
            heapq.heappop(index)  # (taken, or dropped by a stop)
        return bool(index) and index[0][0] <= self._due_by()

    def _due_by(self) -> float:
        """Plan time by which an event is due now (it is handed over ``lead_s`` early)."""
        return self.now() + self.lead_s * self._scale

    def _wait_for_head(self) -> bool:
        """Wait while the next event is not yet due (lock held); True if it waited.

        Returns at the latest after 0.25 s, or when a decision changes the
        queue. A replay's clock (``clock``) is not waited on.
        """
        if self._clock is not None or self._clock0[0] is None:
            return False
        if self.runner_cancelled is not None and self.runner_cancelled():
            return False  # hand the event over: the runner ends the run on it
        if self._clock0[1] is not None:
            self._changed.wait(0.25)  # until the pause is lifted (its clock is stopped)
            if self.runner_pausing is not None and not self.runner_pausing():
                self._set_paused(False)  # a lift whose signal went astray
            return True
        wait_s = (self._heap[0][0] - self.now()) / self._scale - self.lead_s
        if wait_s <= 0:
            return False
        self._changed.wait(min(wait_s, 0.25))
        return True

    def preview(self, event: useq.MDAEvent) -> useq.MDAEvent:
        """Return the event as it would be yielded now (moves applied)."""
        with self._lock:
            return self._moved(event)

    def preview_added(
        self, events: list[useq.MDAEvent]
    ) -> list[tuple[useq.MDAEvent, tuple[str, int, str, int], bool, str | None]]:
        """Return, per event: where it is imaged now, its plan key, if taken, what stopped it.

        Its place in the plan (position, t, channel, z) is taken when planned
        or added before; the last item names the stopped position it is at (its
        own, or the one its sub-sequence position belongs to), or is None. One
        look at the queue for a decision's events (the agent checks each before
        adding any).
        """
        with self._lock:
            out = []
            for ev in events:
                key = event_key(ev)
                stopper = self._stopper(key[0])
                if stopper is None and (
                    ev.metadata.get("explicit_xy") or parent_position(key[0]) not in self.positions
                ):  # imaged at its own x/y (a place of its own, or a position's, e.g. a close-up)
                    stopper = self._stopped_field_at(ev.x_pos, ev.y_pos)
                out.append((self._moved(ev), key, key in self._planned_keys, stopper))
            return out

    def _dropped(self, ev: useq.MDAEvent) -> bool:
        """Whether a stop drops an event of the batch (lock held): not if its field began."""
        if not self._stopped_positions or _field(ev) in self._begun:
            return False  # (no stop: the demo's hot path)
        return self._stopped(position_name(ev)) or self._in_stopped_field(ev)

    def _moved(self, event: useq.MDAEvent, *, begun: bool = False) -> useq.MDAEvent:
        """Apply position moves: x/y to the new centre, z shifted by the same offset.

        ``begun``: an event of a field already begun keeps the move its field began
        with (a field is never split between two places).
        """
        subs = getattr(event, "events", None)
        if subs:
            # a hardware-timed burst (of one position or several): its events moved, and
            # its stage sequences, merged before the move reached it, rebuilt from them
            # (they imaged the plan's places)
            moved = tuple(self._moved(e, begun=begun) for e in subs)
            if all(m is e for m, e in zip(moved, subs, strict=True)):
                return event
            update: dict[str, Any] = {"events": moved}
            first = moved[0]
            for axis in ("x", "y", "z"):
                if getattr(event, f"{axis}_pos") is not None:
                    update[f"{axis}_pos"] = getattr(first, f"{axis}_pos")
                if getattr(event, f"{axis}_sequence", None):
                    update[f"{axis}_sequence"] = tuple(getattr(m, f"{axis}_pos") for m in moved)
            zs = {m.z_pos for m in moved}
            if event.z_pos is None and not getattr(event, "z_sequence", None) and len(zs) == 1:
                update["z_pos"] = first.z_pos  # a move gave z to positions the plan gave none
            return event.model_copy(update=update)
        name = position_name(event)
        offset, z_set = self._offsets.get(name), self._z_set.get(name)
        if begun and _field(event) in self._begun:
            offset, z_set = self._begun[_field(event)]
        # an event at x/y of its own (a close-up centred on a cell) keeps them, and its z
        # too unless it took its position's (then it is refocused with the position)
        explicit = bool(event.metadata.get("explicit_xy"))
        if offset is None or (explicit and not event.metadata.get("z_from_plan")):
            return event
        dx, dy, dz = offset
        update = {}
        if event.x_pos is not None and not explicit:
            update["x_pos"] = event.x_pos + dx
        if event.y_pos is not None and not explicit:
            update["y_pos"] = event.y_pos + dy
        if event.z_pos is not None and dz:
            update["z_pos"] = event.z_pos + dz
        elif event.z_pos is None and z_set is not None:
            # the plan gives the position no z (imaged wherever the focus is): a move's
            # z is where to image it
            update["z_pos"] = z_set
        return event.model_copy(update=update) if update else event

    # ------------------------------------------------------------ decisions

    def _is_stopped(self) -> bool:
        return self.stopped

    def _stopped(self, position: str) -> bool:
        """Whether a position, or the one a sub-sequence position belongs to, was stopped."""
        return self._stopper(position) is not None

    def _stopper(self, position: str) -> str | None:
        """Return the stopped position an event at ``position`` falls under, or None."""
        stopped = self._stopped_positions
        if not stopped:
            return None
        if position in stopped:
            return position
        parent = parent_position(position)
        return parent if parent in stopped else None

    def _stopped_field_at(self, x: float | None, y: float | None) -> str | None:
        """Return the stopped position or place whose field holds stage x, y µm, or None."""
        if self._fov_um is None or x is None or y is None:
            return None
        h, w = self._fov_um
        for name, cx, cy in self._stopped_fields:
            if abs(x - cx) < w / 2 and abs(y - cy) < h / 2:
                return name
        return None

    def _in_stopped_field(self, ev: useq.MDAEvent) -> bool:
        """Whether an event imaged at x/y of its own lies in a stopped field (lock held).

        As `preview_added` refuses such an event sent after the stop.
        """
        name = position_name(ev)
        if not ev.metadata.get("explicit_xy") and parent_position(name) in self.positions:
            return False  # imaged where its position is (moves applied), not at its own x/y
        return self._stopped_field_at(ev.x_pos, ev.y_pos) is not None

    def position_of(self, pos_name: str | None, p: int | None, g: int | None) -> str | None:
        """Return the plan position an added event means (`PlanPositions.resolve`), or None."""
        return self._plan_positions.resolve(pos_name, p, g)

    def tile_of(self, position: str) -> tuple[str, int | None]:
        """Return a plan position's own name and grid tile (``A_g1`` → ``("A", 1)``)."""
        return self._plan_positions.tile_of(position)

    def has_position(self, name: str) -> bool:
        """Return True if ``name`` is a position of the plan or a place added events image."""
        with self._lock:
            return name in self.positions or name in self._added_positions

    def added_places(self) -> tuple[str, ...]:
        """Return the places only decisions' events image (named by them, not the plan)."""
        with self._lock:
            return tuple(self._added_positions)

    def stop(self) -> None:
        """Stop after the current event."""
        with self._lock:
            self.stopped = True
            self._heap.clear()
            self._queued_added.clear()
            self._added_index.clear()
            self._queued_at.clear()
            self._retimed.clear()
            self._changed.notify_all()

    def stop_position(self, name: str) -> int:
        """Drop every pending event of position ``name`` and its sub-sequences; return how many.

        Sub-sequence positions (``name~rule-3``) are the same patch of sample.
        Events added for any of them later are refused (the agent asks
        `preview_added`), and so are events imaged at x/y of their own (a place
        of its own, or another position's event given x/y, such as a close-up)
        centred in the field of the position (where it is imaged now) or of
        any of its sub-sequences; such events already queued are dropped too. A
        field (position, t) already begun is finished; the count includes the
        events of the time point being acquired that are dropped. A
        hardware-timed burst handed to the runner takes later time points
        along, begun with it: it ends after the frame in hand, and its events
        on to its end that the stop drops are counted (one that images other
        places after the stopped position's last frame goes on; see
        `LivescopeEngine.end_burst`).
        """
        with self._lock:
            dropped_before = [self._dropped(e) for e in self._batch]
            self._stopped_positions.add(name)
            x, y, _ = self.positions.get(name, (None, None, None))
            fields = [] if x is None or y is None else [(name, x, y)]
            fields += [(name, *xy) for k, xy in self._added_xy.items()
                       if k == name or parent_position(k) == name]  # fmt: skip
            self._stopped_fields += fields
            # the queued events of stopped positions, and those imaged at x/y of their own
            # that lie in a stopped field: looked up by place, not at each queued event
            drop: dict[int, useq.MDAEvent] = {}
            for (place, explicit), at in self._queued_at.items():
                if self._stopped(place):
                    drop.update(at)
                elif explicit or parent_position(place) not in self.positions:
                    drop.update((o, ev) for o, ev in at.items() if self._in_stopped_field(ev))
            if drop:
                self._heap = [h for h in self._heap if h[1] not in drop]
                heapq.heapify(self._heap)
                self._unqueued((0.0, o, ev) for o, ev in drop.items())
                self._retimed.difference_update(drop)
            self._changed.notify_all()
            # (and those of the time point being acquired whose field has not begun)
            gone = list(drop.values()) + [
                e for e, was in zip(self._batch, dropped_before, strict=True)
                if not was and self._dropped(e)
            ]  # fmt: skip
            for e in gone:
                self._counts["added_stopped" if e.metadata.get("added_by")
                             else "planned_stopped"] += 1  # fmt: skip
            # (the burst's events were counted taken as it was handed over)
            cut_off = self._engine.end_burst(
                lambda e: self._stopped(position_name(e)) or self._in_stopped_field(e)
            )
            for e in cut_off:
                added = "added" if e.metadata.get("added_by") else "planned"
                self._counts[f"{added}_taken"] -= 1
                self._counts[f"{added}_stopped"] += 1
            return len(gone) + len(cut_off)

    def moved_coordinates(
        self, name: str, x: float, y: float, z: float | None
    ) -> list[tuple[float | None, float | None, float | None]]:
        """Where the pending events of ``name`` would be imaged after such a move."""
        with self._lock:
            px, py, pz = self._plan_xyz[name]
            if px is None or py is None:
                return [(x, y, z)]
            dx, dy = x - px, y - py
            dz = 0.0 if z is None or pz is None else z - pz
            out: list[tuple[float | None, float | None, float | None]] = [(x, y, z)]
            # its queued events looked up by place (`_queued_at`), not among every queued one
            queued = self._queued_at.get((name, False), {}).values()
            for ev in itertools.chain(queued, self._pending_in_batch()):
                if position_name(ev) == name and not ev.metadata.get("explicit_xy"):
                    out.append((
                        None if ev.x_pos is None else ev.x_pos + dx,
                        None if ev.y_pos is None else ev.y_pos + dy,
                        z if ev.z_pos is None and pz is None else
                        None if ev.z_pos is None else ev.z_pos + dz,
                    ))  # fmt: skip
            return out

    def move(self, name: str, x: float, y: float, z: float | None) -> int:
        """Image position ``name`` centred at (x, y[, z]) from its next field on.

        Applied as an offset from the plan's coordinates, so z-stacks keep their
        planes; a position the plan gives no z is imaged at ``z`` (µm). A field
        (position, t) already begun is finished where it began. Returns how many
        pending events it affects (those of the time point being acquired too).
        """
        with self._lock:
            px, py, pz = self._plan_xyz[name]
            # (no z: an x/y move keeps the focus an earlier move gave the position)
            dz = self._offsets.get(name, (0.0, 0.0, 0.0))[2] if z is None or pz is None else z - pz
            if px is None or py is None:
                raise LivescopeError(f"position {name!r} has no planned x/y to move from")
            self._offsets[name] = (x - px, y - py, dz)
            if z is not None and pz is None:
                self._z_set[name] = z
            old = self.positions[name]
            self.positions[name] = (x, y, old[2] if z is None else z)

            def follows(ev: useq.MDAEvent) -> bool:  # (as `_moved`: an event at x/y and z
                # of its own, a close-up centred on a cell, stays where it is)
                meta = ev.metadata
                return position_name(ev) == name and (
                    not meta.get("explicit_xy") or bool(meta.get("z_from_plan"))
                )

            # (its queued events looked up by place, not among every queued one)
            queued = itertools.chain.from_iterable(
                self._queued_at.get((name, explicit), {}).values() for explicit in (False, True)
            )
            return sum(1 for e in queued if follows(e)) + sum(
                1 for e in self._pending_in_batch() if follows(e)
            )

    def _pending_in_batch(self) -> list[useq.MDAEvent]:
        """Return the events of the batch whose field has not begun, and not dropped (lock held)."""
        return [e for e in self._batch if _field(e) not in self._begun and not self._dropped(e)]

    def change_interval(self, interval_s: float) -> int:
        """Re-time pending events of later time points to ``interval_s`` apart.

        Called on the decision-server thread. Counted from when the time point
        in progress began: when it was planned, or when it was handed out if the
        plan was behind (an interval-0 plan). A change that comes later than the
        new interval after that makes the next time point due now, not overdue,
        and later ones ``interval_s`` after it (on the run's clock, not a
        replay's). Logs when the next time point is due; returns how many
        events were re-timed.
        """
        with self._lock:
            t_cur, t_start = self._last_t
            n = 0
            # the next time point is due an interval after the one in progress began, or
            # now if that has passed: counted from its start, time points the change came
            # too late for would all be overdue and run back to back, with no interval
            nxt = max(t_cur + 1, 0)
            next_due = t_start + (nxt - max(t_cur, 0)) * interval_s
            if self._clock is None and self._timing:  # (as `_hand_out`: not a replay's clock)
                next_due = max(next_due, self.now())
            first: tuple[int, float] | None = None  # the earliest re-timed time point, its time

            def later(ev: useq.MDAEvent) -> bool:
                return ev.index.get("t", 0) > t_cur and not ev.metadata.get("added_by")

            # (a batch of time points all due at once gives back those not handed out yet)
            # (not those a stop dropped: they are skipped, and were counted by the stop)
            moved = [e for e in self._rest if later(e[2]) and not self._dropped(e[2])]
            if moved:
                self._rest = collections.deque(e for e in self._rest if not later(e[2]))
                taken = {id(e) for _, _, e in moved}
                self._batch = [e for e in self._batch if id(e) not in taken]
                for entry in moved:
                    self._requeue(entry)
            # the new time in the queue entry only: the event is given it when handed out
            # (`_hand_out`), not copied here while the runner waits on the lock
            heap, retimed = self._heap, self._retimed
            for i, (_, order, ev) in enumerate(heap):
                t = ev.index.get("t", 0)
                if t > t_cur and not ev.metadata.get("added_by"):  # (`later`, inlined)
                    due = next_due + (t - nxt) * interval_s
                    heap[i] = (due, order, ev)
                    retimed.add(order)
                    n += 1
                    if first is None or t < first[0]:
                        first = (t, due)
            heapq.heapify(self._heap)
            self._changed.notify_all()
            now = self.now()
        if first is not None:  # (the answer says only how many: when is the user's question)
            logger.info(
                "new interval %g s: time point t=%d is due at %.3f s of plan time (now %.3f s)",
                interval_s, first[0], first[1], now,
            )  # fmt: skip
        return n

    def add(self, events: list[useq.MDAEvent], *, wake: bool = True) -> None:
        """Schedule events (already checked and timed).

        ``wake=False`` leaves a waiting runner asleep until `wake` (or its next
        look, within 0.25 s): the agent wakes it once a burst of decisions is
        answered, so that it does not take the GIL from the answers.
        """
        with self._lock:
            if self.finished or self.stopped:
                raise LivescopeError("the run has ended; no events can be added")
            for ev in events:
                self._push(ev)
                self._note_place(ev)
            if wake:
                self._changed.notify_all()

    def note_added(self, events: Iterable[useq.MDAEvent]) -> None:
        """Note the places of accepted events that are not queued, for later decisions.

        A replay serves only what its recording holds; a later decision may
        still name the place of an event it did not serve.
        """
        with self._lock:
            for ev in events:
                self._note_place(ev)

    def _note_place(self, ev: useq.MDAEvent) -> None:
        """Note an added event's place (lock held): its name, and where it is if new."""
        name = position_name(ev)
        self._added_positions.add(name)
        if name not in self.positions and ev.x_pos is not None and ev.y_pos is not None:
            self._added_xy.setdefault(name, (float(ev.x_pos), float(ev.y_pos)))

    def wake(self) -> None:
        """Let a runner waiting for its next event look at the queue again."""
        with self._lock:
            self._changed.notify_all()

    def position_plan(self, name: str) -> tuple[float | None, float | None, float | None]:
        """Return the plan's (x, y, z) of a position, before any move."""
        return self._plan_xyz[name]

    def is_taken(self, key: tuple[str, int, str, int]) -> bool:
        """Return True if an event with this (position, t, channel, z) is planned or done."""
        with self._lock:
            return key in self._planned_keys
