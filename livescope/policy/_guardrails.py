"""Guardrails: every decision is checked against the hardware profile before it is sent.

`Guardrails.check` returns the reason a decision breaks a limit (or None); a
decision that passes is booked at once (`Guardrails.commit`), so the next one
is checked against it, and given back (`Guardrails.release`) if the agent
refuses it. Limits (``HardwareProfile``):

* stage travel (``stages``): every added event and every move;
* light dose (``light_dose``): fluorescence exposure per position over the run
  (the plan's own frames count), per position and channel, and the longest
  single exposure; frames added over the run (``max_extra_frames_per_run``);
* ``guardrails.min_interval_s``: no interval (a changed time-lapse interval,
  or the spacing of an added time-lapse) shorter than this;
* ``guardrails.max_decisions_per_min``: decisions per minute of run time, over
  a sliding minute (a limit under one, over the time one decision is allowed:
  0.5 is one in any 120 s); stops are neither limited nor counted: a stop only
  saves light; after the clock steps back, decisions stamped later than it
  count for a window from the step (where it stepped back is saved with the
  books: `Guardrails.state`); a decision checked at a run time that is no
  number (NaN, infinity) is refused, as the rate cannot be counted there; a
  rehearsed decision (run id ``REHEARSAL``, checked at sample time 0 before
  the first field) is checked as any other, but notes no step of the clock;
* ``guardrails.max_added_span_s``: no added frame that starts later than this
  after the decision is applied (its ``delay_s`` plus the event's start);
* ``guardrails.max_decision_age_s``: no close-up, move or interval change that
  answers a frame taken longer ago than this (the agent's check: it alone
  knows when each frame was taken); a stop is never refused as stale.

Where light is booked: an event that names a plan position, or gives its plan
index, books to that position; sub-sequence positions (``p0~rule-3``) book to
their parent (``p0``): it is the same patch of sample. An added event at a place
of its own (stage x/y with no plan position: no name and no index, or a name or
index the plan does not have) books to where its light lands, the camera's
field (default objective) centred on it: to every plan position whose field
(where it is now, moves applied) it overlaps, and to every stage area it
overlaps. The areas are field-sized squares of a grid from the stage origin,
named ``area(+i,+j)``: the square [i·w, (i+1)·w) × [j·h, (j+1)·h) µm for a
field w µm wide and h µm high. An event that names a plan position and gives
its own x/y books to that position and to every other plan position its field
overlaps, and, if its field misses its position's, to where it lands as well;
one that gives only its x or only its y is imaged, as the agent does, with the
other taken from its position's plan place (no move applied) and books the same.
So a policy cannot light one patch of sample past its budget by naming each
frame's place anew, by moving it a little each time, or by filing it under
another position. An event that names a plan position and gives no x/y is
imaged as the position's plan frames are, at its centre (where it is now): it
books to the position, and to every position a move put over its field.

A move (``Move``) takes a position's field to a new place, with every event
that follows it there (the plan's, and added ones without x/y). Where its
field then overlaps another position's field more than the two overlap in the
plan (a grid's tiles, say), each lights the other's sample: the light of each
one's following events is booked to the other, counted whole (the plan's
frames of the whole run, and every added one so far: the guardrails do not
know which were imaged already, so they never count less than the sample
gets), and a move that would take either past a budget is refused. Booked
once per pair: moving away and back books only what was added since. The
plan's own overlaps book nothing (the plan check holds each position to its
budget). Not counted: light already booked to a place that a position is
moved to later (the plan place another position left, events given x/y there,
stage areas): the moved position is held to its own budgets there.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import useq

from livescope.schema import (
    AddEvents,
    ChangeInterval,
    Decision,
    HardwareProfile,
    LivescopeError,
    Move,
    PlanPositions,
    StopPosition,
    StopRun,
    parent_position,
    past_limit,
    plan_events,
    planned_light_s,
)

from ._rehearsal import REHEARSAL

__all__ = ["STALE_REFUSAL", "Guardrails", "parent_position"]

_RELEASED_SAVED = 256
"""Decisions given back whose ids `Guardrails.state` saves, the latest: an answer read again
comes within seconds, and the state is written every field (4,096 ids were ~150 kB)."""

_STALE = "stale: "  # how `Guardrails.check`'s reason for a frame too old begins
STALE_REFUSAL = "guardrail: " + _STALE
"""How the agent's answer begins when it refuses a decision whose frame is too old
(``guardrails.max_decision_age_s``; the agent puts ``guardrail: `` before its check's
reason): the worker gives such a firing back to its rule (`PolicyEngine.give_back`)."""

_PerChannel = dict[str, float]
_Pairs = dict[tuple[str, str], _PerChannel]
"""(from, to) -> seconds of fluorescence per channel: ``from``'s light booked to ``to``."""
_UNDO_KEPT = 4096
"""Decisions whose bookings are kept, to be given back as booked if refused (as many as
a worker keeps waiting for an answer; an older refusal gives nothing back, and leaves a
moved position where it is)."""


def _accumulate(books: _PerChannel, chs: Mapping[str, float], sign: float = 1.0) -> bool:
    """Add ``sign`` times ``chs`` into ``books`` (per channel); return whether all is ~0."""
    for ch, s in chs.items():
        books[ch] = books.get(ch, 0.0) + sign * s
    return all(abs(s) < 1e-12 for s in books.values())


def _timeless(decision: Decision, now_s: float) -> bool:
    """Whether ``decision`` counts towards the rate (no stop) at a ``now_s`` that is no number."""
    return not math.isfinite(now_s) and not isinstance(decision, StopPosition | StopRun)


def _check_time(doing: str, decision: Decision, now_s: float) -> None:
    """Raise ValueError if a decision counted towards the rate is booked at no number."""
    if _timeless(decision, now_s):
        raise ValueError(
            f"{doing}: now_s = {now_s:g} s is not a finite run time; book a decision at the "
            "run time `Guardrails.check` passed it at (a stop books nothing, at any time)"
        )


def _net(pairs: _Pairs) -> tuple[dict[str, float], dict[str, float]]:
    """Return what a move's pairs book per budget and per budget/channel."""
    add: dict[str, float] = defaultdict(float)
    add_ch: dict[str, float] = defaultdict(float)
    for (_, dst), chs in pairs.items():
        for ch, s in chs.items():
            add[dst] += s
            add_ch[f"{dst}/{ch}"] += s
    return add, add_ch


class Guardrails:
    """Checks decisions against a rig's limits and books what accepted ones use.

    Parameters
    ----------
    profile
        The rig.
    sequence
        The plan (or its events, if already expanded): its own fluorescence exposure
        counts against each position's budget.

    """

    def __init__(
        self,
        profile: HardwareProfile,
        sequence: useq.MDASequence | Iterable[useq.MDAEvent] | None = None,
    ) -> None:
        self.profile = profile
        self.dose_s: dict[str, float] = defaultdict(float)  # position -> fluorescence s
        self.dose_ch_s: dict[str, float] = defaultdict(float)  # "position/channel" -> s
        self.extra_frames = 0
        self.sent_at: list[float] = []  # run times of decisions passed
        self._back_s: float | None = None
        """Run time the clock was first seen behind a decision passed (it stepped back),
        while it still is: those decisions count as passed then (`_recent`)."""
        self._released: dict[str, None] = {}
        """Ids of the decisions given back (`release`), the latest `_UNDO_KEPT`: a refusal
        answered twice gives back once."""
        self._kind = {c.name: c.kind for c in profile.channels.presets}
        # an event may name its position or give its plan index: both book to the same
        # place, the one the agent images it at (the position's first plan event's, grid
        # tile included, as the agent's event queue names it)
        self._positions = PlanPositions()  # named as the agent's event queue names them
        self._plan: set[str] = set()  # the plan's budgets (positions, grid tiles)
        self._centres: dict[str, tuple[float, float]] = {}  # budget -> its field's centre, µm
        self._neighbours: dict[str, set[str]] = {}
        """Per plan position, the others centred (now) within two fields of it: those
        whose fields an event overlapping its field may overlap too (usually none)."""
        self._landed: dict[tuple[float, float], tuple[str, ...]] = {}  # recent `_landing`s
        self._fov_um = profile.field_of_view_um
        self._summed: tuple[Decision | None, tuple[Any, ...]] = (None, ())
        """What the last decision `check` passed books (the decision first): `commit`
        books it without walking the events again."""
        self._own: dict[str, _PerChannel] = defaultdict(lambda: defaultdict(float))
        """Per plan position, the light of the events that follow it when it moves: the
        plan's, and added ones without x/y (per channel, s)."""
        self._cross: _Pairs = {}
        """What of each one's following light was booked to the other, per pair of
        positions a move made overlap."""
        self._moves: dict[str, list[tuple[str, tuple[float, float]]]] = {}
        """Per moved position, the moves booked, in order: (decision id, centre). Only
        those a refusal can still give back (their bookings kept: `_undo`), after the
        latest older one: where the position goes back to if they are all refused (one
        per field of a cell-following policy, kept for days they grew without end)."""
        self._undo: dict[str, tuple[Any, ...]] = {}  # decision id -> what its commit booked
        if sequence is not None:
            events = (
                plan_events(sequence) if isinstance(sequence, useq.MDASequence) else tuple(sequence)
            )  # (walked twice: a generator would be spent by the first)
            for ev in events:
                self._plan.add(key := parent_position(self._positions.add(ev)))
                if ev.x_pos is not None and ev.y_pos is not None:
                    self._centres.setdefault(key, (float(ev.x_pos), float(ev.y_pos)))
            for (key, ch), s in planned_light_s(events, profile).items():  # the plan's own light
                self.dose_s[key] += s
                self.dose_ch_s[f"{key}/{ch}"] += s
                self._own[key][ch] += s
        self._plan_centres = dict(self._centres)
        # the centres as an array (one comparison however many positions the plan has)
        self._centre_xy = np.array(list(self._centres.values()), float).reshape(-1, 2)
        self._centre_names = list(self._centres)
        self._row = {k: i for i, k in enumerate(self._centre_names)}
        for name, (cx, cy) in self._centres.items():
            self._neighbours[name] = set(self._near(cx, cy, 2, name))

    @property
    def _rate_allowed(self) -> int:
        """How many decisions may pass in `_rate_window_s` (before the check's ``rate``)."""
        # (1e-9: a limit of 60 written 60.000000000001 is still 60)
        return max(1, math.ceil(self.profile.guardrails.max_decisions_per_min - 1e-9))

    @property
    def _rate_window_s(self) -> float:
        """Run time over which ``guardrails.max_decisions_per_min`` is counted, s.

        The time the limit allows `_rate_allowed` (its whole number, rounded
        up) decisions in: a minute for a whole number; 120 s for 0.5 (one every
        two minutes: over a minute not even one would pass, and none of a rule's
        firings was ever sent); 80 s for 1.5, two (over a minute 1.5 let one
        through, 1 a minute).
        """
        limit = self.profile.guardrails.max_decisions_per_min
        return 60.0 * self._rate_allowed / limit

    def _recent(self, now_s: float, *, note: bool = True) -> list[float]:
        """Return the run times of the decisions passed that count towards the rate at ``now_s``.

        Those in the window before ``now_s`` (`_rate_window_s`). One stamped later
        than ``now_s`` (the clock stepped back: a replay restarted, a worker
        restarted on older fields, a system clock set back) counts as passed when
        the clock was first seen behind it, for a window from then: not until the
        clock reaches its stamp again (every decision refused meanwhile, for hours
        after a replay restarted), and not dropped either (the rate given back
        at once). Sets where the clock stepped back (``_back_s``), nothing else,
        and that only if ``note`` (not for a rehearsal's check: `check`).
        """
        window_s = self._rate_window_s
        # (max, not a generator over them: this runs at every check and commit)
        if not self.sent_at or max(self.sent_at) <= now_s:
            if note:
                self._back_s = None
            return [t for t in self.sent_at if now_s - t < window_s]
        back_s = now_s if self._back_s is None or self._back_s > now_s else self._back_s
        if note:
            self._back_s = back_s
        # (not stamped anew: a field from before the step, such as the worker's rehearsal
        # at sample time 0 after a restart, would give back every decision's place)
        ahead = now_s - back_s < window_s
        return [t for t in self.sent_at if (now_s - t < window_s if t <= now_s else ahead)]

    def _near(self, x: float, y: float, fields: float, but: str | None = None) -> list[str]:
        """Return the plan positions centred (now) less than ``fields`` fields from x, y µm."""
        h, w = self._fov_um
        xy = self._centre_xy
        near = np.flatnonzero(
            (np.abs(xy[:, 0] - x) < fields * w) & (np.abs(xy[:, 1] - y) < fields * h)
        )
        return [k for i in near if (k := self._centre_names[i]) != but]

    def _shared_um2(self, a: tuple[float, float], b: tuple[float, float]) -> float:
        """Return the area two fields centred at ``a`` and ``b`` share, µm²."""
        h, w = self._fov_um
        return max(0.0, w - abs(a[0] - b[0])) * max(0.0, h - abs(a[1] - b[1]))

    def _put_over(self, name: str, other: str, at: tuple[float, float] | None = None) -> bool:
        """Whether a move put ``name``'s field over ``other``'s (each where it is now).

        True where the two share more than their plan fields do (``at``: ``name``'s
        centre, if not where it is).
        """
        here = self._shared_um2(self._centres[name] if at is None else at, self._centres[other])
        plan = self._shared_um2(self._plan_centres[name], self._plan_centres[other])
        return here > plan + 1e-6

    def _event_position(self, ev: useq.MDAEvent) -> str:
        """Name the position an added event images, as the agent's event queue does."""
        p, g = ev.index.get("p", 0), ev.index.get("g")
        if (found := self._positions.resolve(ev.pos_name, p, g)) is not None:
            return found
        base = ev.pos_name or self._positions.base_of(p) or f"p{p}"  # not a plan position
        return base if g is None else f"{base}_g{g}"

    def _light_keys(self, ev: useq.MDAEvent) -> tuple[tuple[str, ...], str | None]:
        """Return the budgets an added event's light is booked to, and what it follows.

        See the module. The second: the plan position it follows when that moves
        (None: it stays where it is).

        (The plan's own events book to their positions: `planned_light_s`.)
        """
        x, y = ev.x_pos, ev.y_pos
        if ev.pos_name or "p" in ev.index or x is None or y is None:
            # (an event with neither a position nor x/y is refused by the agent; checked
            # here as the plan's first position's, as the agent's queue would file it)
            position = self._event_position(ev)
            name = parent_position(position)
            c = self._centres.get(name)
            if (
                (x is None) != (y is None) and (ev.pos_name or "p" in ev.index)
                and position in self._positions and name in self._plan_centres
            ):  # fmt: skip
                # one axis given: the agent images it there, the other at the position's
                # plan place (given x/y: no move applied), so it lands as if both were given
                px, py = self._plan_centres[name]
                x, y = (px if x is None else x), (py if y is None else y)
            if x is None or y is None:
                if c is None:
                    return (name,), None
                # imaged as its position's plan frames are, where the position is now
                over = (k for k in self._neighbours[name] if self._put_over(name, k))
                return (name, *sorted(over)), name  # (sorted: both sides name one first)
            if name in self._plan:
                # its position's, and any other position its field overlaps; away from
                # its position's field, where it lands too (a name buys no new budget)
                h, w = self._fov_um
                if c is not None and abs(x - c[0]) < w and abs(y - c[1]) < h:
                    centres = self._centres
                    return (name, *sorted(k for k in self._neighbours[name]
                                          if abs(x - centres[k][0]) < w
                                          and abs(y - centres[k][1]) < h)), None  # fmt: skip
                return (name, *self._landing(float(x), float(y))), None
        return self._landing(float(x), float(y)), None

    def _landing(self, x: float, y: float) -> tuple[str, ...]:
        """Return the plan positions and stage areas a field centred at x, y µm overlaps."""
        if (known := self._landed.get((x, y))) is not None:
            return known  # (a decision's events share their place)
        h, w = self._fov_um
        keys = self._near(x, y, 1)
        for i in range(math.floor(x / w - 0.5), math.ceil(x / w + 0.5)):
            keys += [f"area({i:+d},{j:+d})"
                     for j in range(math.floor(y / h - 0.5), math.ceil(y / h + 0.5))]  # fmt: skip
        if len(self._landed) >= 4096:
            self._landed.clear()
        self._landed[x, y] = out = tuple(keys)
        return out

    def _exposure(self, ev: useq.MDAEvent) -> float:
        if ev.exposure is not None:
            return float(ev.exposure)
        if ev.channel is None:
            return 0.0
        try:
            return self.profile.channels.get(ev.channel.config).default_exposure_ms
        except KeyError:
            return 0.0

    def _sum_light(
        self, events: Iterable[useq.MDAEvent]
    ) -> tuple[dict[str, float], dict[str, float], _Pairs]:
        """Return what added events book.

        Per budget, per budget/channel, and what follows a position when it moves:
        ``(position, position)`` -> per channel, its own; ``(position, other)``, booked
        to another a move put over it (as `_cross`).
        """
        add: dict[str, float] = defaultdict(float)
        add_ch: dict[str, float] = defaultdict(float)
        follow: _Pairs = {}
        booked_to: dict[tuple[Any, ...], tuple[tuple[str, ...], str | None]] = {}
        for ev in events:
            ch = ev.channel.config if ev.channel else ""
            if self._kind.get(ch) != "fluorescence":
                continue
            s = self._exposure(ev) / 1000.0
            at = (ev.pos_name, ev.index.get("p"), ev.index.get("g"), ev.x_pos, ev.y_pos)
            if (found := booked_to.get(at)) is None:  # (a decision's events share places)
                found = booked_to[at] = self._light_keys(ev)
            keys, follows = found
            for key in keys:
                add[key] += s
                add_ch[f"{key}/{ch}"] += s
            if follows is not None:  # its own, and positions a move put over it
                for key in keys:
                    _accumulate(follow.setdefault((follows, key), {}), {ch: s})
        return add, add_ch, follow

    def _book(self, add: Mapping[str, float], add_ch: Mapping[str, float], sign: float) -> None:
        for books, adding in ((self.dose_s, add), (self.dose_ch_s, add_ch)):
            for key, s in adding.items():
                books[key] += sign * s
            if sign < 0:
                # a place booked only by what is given back is dropped, not left at 0.0
                # (or at a float's residue)
                for key in [k for k in adding if abs(books.get(k, 1.0)) < 1e-9]:
                    del books[key]

    def check(
        self, decision: Decision, now_s: float, *, rate: float = 1.0, age_s: float | None = None
    ) -> str | None:
        """Return why ``decision`` breaks a limit at run time ``now_s``, or None if it passes.

        ``age_s``: how long ago the frame it answers was taken (the agent's
        check, which knows; None: not checked), s of the sample's time.

        ``rate``: how many times ``guardrails.max_decisions_per_min`` may pass
        in the last minute (`_rate_window_s`; 0: not checked; a stop is never
        limited by it, nor counted: it only saves light). The agent's second
        check allows twice as many: its clock, when a decision arrives, is
        not the field's sample time the worker counts by, so a burst the
        worker spread over two minutes may reach it within one; twice the
        limit still stops a client that floods the channel.

        A decision checked at a ``now_s`` that is no number (NaN, infinity) is
        refused (``time: ``; a stop is not: it only saves light). A check notes
        where the clock stepped back (`_recent`), except one that does not
        count the rate (``rate`` 0: the agent's rehearsal) and one of a
        rehearsed decision (run id ``REHEARSAL``: the worker's, at sample time 0
        after a restart, before any field), which leave the books as they were.
        """
        g, dose = self.profile.guardrails, self.profile.light_dose
        if (
            age_s is not None and g.max_decision_age_s is not None
            and age_s > g.max_decision_age_s
            and not isinstance(decision, StopPosition | StopRun)  # (a late stop only saves light)
        ):  # fmt: skip
            return (
                f"{_STALE}it answers frame {decision.seq}, taken {age_s:.1f} s ago; "
                f"guardrails.max_decision_age_s = {g.max_decision_age_s:g} s"
            )
        if _timeless(decision, now_s):
            # (NaN passes no comparison: the rate would not be checked, and booked there it
            # would empty the window)
            return (
                f"time: checked at run time {now_s:g} s, which is no number of seconds "
                "(the field's sample time, or the agent's clock, is wrong)"
            )
        window_s = self._rate_window_s
        recent = self._recent(now_s, note=rate > 0 and decision.run_id != REHEARSAL)
        if (
            rate > 0 and len(recent) + 1 > rate * self._rate_allowed
            and not isinstance(decision, StopPosition | StopRun)  # (a stop only saves light)
        ):  # fmt: skip
            last = "minute" if window_s == 60.0 else f"{window_s:.4g} s"
            return (
                f"rate: {len(recent)} decisions in the last {last} of run time; "
                f"guardrails.max_decisions_per_min = {g.max_decisions_per_min:g}"
                + (f" (x{rate:g} here)" if rate != 1 else "")
            )
        if isinstance(decision, Move):
            try:
                self.profile.check_stage_travel(
                    decision.x_um, decision.y_um, decision.z_um, f"move {decision.position}"
                )
            except LivescopeError as exc:
                return f"stage: {exc}"
            pairs = self._move_light(decision.position, (decision.x_um, decision.y_um))
            over = sorted({dst for _, dst in pairs} - {decision.position})
            doing = f"moving {decision.position} over {', '.join(over)}'s field: " if over else ""
            if (why := self._over_budget(*_net(pairs), doing)) is not None:
                return why
            self._summed = (decision, (pairs,))
            return None
        # (a number NaN passes no comparison, so each limit is written to pass only a
        # number within it: a decision copied with ``model_copy(update=...)`` is not
        # validated again, and a NaN exposure booked would turn its budgets off for good)
        if isinstance(decision, ChangeInterval) and not (
            math.isfinite(iv := decision.interval_s) and iv >= g.min_interval_s
        ):
            return f"interval: {iv:g} s is " + (
                f"shorter than guardrails.min_interval_s = {g.min_interval_s:g} s"
                if math.isfinite(iv)
                else "not a finite number of seconds"
            )
        if not isinstance(decision, AddEvents):
            return None
        events = decision.events
        if self.extra_frames + len(events) > dose.max_extra_frames_per_run:
            return (
                f"frame budget: {len(events)} more frames would make "
                f"{self.extra_frames + len(events)} added this run; "
                f"light_dose.max_extra_frames_per_run = {dose.max_extra_frames_per_run}"
            )
        times = sorted({float(e.min_start_time or 0.0) for e in events})
        if not (math.isfinite(decision.delay_s) and all(math.isfinite(t) for t in times)):
            return (
                f"time: delay_s {decision.delay_s:g} s and the events' min_start_time "
                f"({', '.join(f'{t:g}' for t in times[:8])}) must be finite numbers of seconds"
            )
        if (
            g.max_added_span_s is not None
            and (reach := decision.delay_s + max(times[-1], 0.0)) > g.max_added_span_s
        ):
            return (
                f"time: the added frames start up to {reach:g} s after the decision "
                f"(delay_s {decision.delay_s:g} s + last event at {times[-1]:g} s); "
                f"guardrails.max_added_span_s = {g.max_added_span_s:g} s"
            )
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # (a float's tolerance: a close-up's k-th time point starts at k x interval_s,
        # and 3 x 0.3 - 2 x 0.3 is 0.29999999999999993: every close-up at the shortest interval
        # the rig allows was refused, though its rule passed at load)
        if gaps and min(gaps) < g.min_interval_s - 1e-9:
            return (
                f"interval: added time points {min(gaps):g} s apart; "
                f"guardrails.min_interval_s = {g.min_interval_s:g} s"
            )
        places: set[tuple[float | None, float | None, float | None]] = set()
        for i, ev in enumerate(events):
            if (xyz := (ev.x_pos, ev.y_pos, ev.z_pos)) not in places:  # events share places
                places.add(xyz)
                try:
                    self.profile.check_stage_travel(*xyz, f"event {i}")
                except LivescopeError as exc:
                    return f"stage: {exc}"
            ch = ev.channel.config if ev.channel else ""
            if (
                self._kind.get(ch) == "fluorescence"
                and not (exp := self._exposure(ev)) <= dose.max_exposure_ms_per_frame
            ):
                limit = dose.max_exposure_ms_per_frame
                return (
                    f"light dose: event {i} exposure {exp:g} ms "
                    + ("is not a number; " if math.isnan(exp) else "> ")
                    + f"light_dose.max_exposure_ms_per_frame = {limit:g} ms"
                )
        summed = self._sum_light(events)
        if (why := self._over_budget(summed[0], summed[1])) is not None:
            return why
        self._summed = (decision, summed)  # `commit` books them as they are
        return None

    def _over_budget(
        self, add: Mapping[str, float], add_ch: Mapping[str, float], doing: str = ""
    ) -> str | None:
        """Return why booking ``add`` (per budget) and ``add_ch`` breaks a light budget."""
        dose = self.profile.light_dose
        budgets = [(add, self.dose_s, "position ", "max_fluorescence_s_per_position",
                    dose.max_fluorescence_s_per_position)]  # fmt: skip
        if dose.max_fluorescence_s_per_channel is not None:
            budgets.append((add_ch, self.dose_ch_s, "", "max_fluorescence_s_per_channel",
                            dose.max_fluorescence_s_per_channel))  # fmt: skip
        for adding, booked, what, field, limit in budgets:
            for key, s in adding.items():
                # (a float's tolerance: the worker books and gives back what the agent
                # refuses, the agent never books it; both must reach the same verdict; a
                # check books nothing, not even a zero)
                if not (total := booked.get(key, 0.0) + s) <= limit + 1e-9:  # (NaN too)
                    where = key if key.startswith("area(") else what + key  # (a stage area)
                    return (
                        f"light dose: {doing}{where} would get {past_limit(total, limit)} s of "
                        f"fluorescence; light_dose.{field} = {limit:g} s"
                    )
        return None

    # ------------------------------------------------------------ moves

    def _move_light(self, name: str, at: tuple[float, float]) -> _Pairs:
        """Return what ``name`` centred at ``at`` µm books.

        Per pair (from, to) a move put one over the other: what of ``from``'s
        following light is not booked to ``to`` yet.
        """
        pairs: _Pairs = {}
        if name not in self._centres:
            return pairs  # no planned x/y (the agent refuses to move it)
        for other in self._near(*at, 1, name):  # (fields that overlap)
            if not self._put_over(name, other, at):
                continue
            for pair in ((name, other), (other, name)):
                booked = self._cross.get(pair, {})
                own = self._own.get(pair[0], {})
                more = {ch: s - booked.get(ch, 0.0) for ch, s in own.items()}
                if more := {ch: s for ch, s in more.items() if s > 1e-12}:
                    pairs[pair] = more
        return pairs

    def _book_pairs(self, pairs: _Pairs, sign: float) -> None:
        for pair, chs in pairs.items():
            if _accumulate(self._cross.setdefault(pair, {}), chs, sign):
                del self._cross[pair]
        self._book(*_net(pairs), sign)

    def _follow(self, follow: _Pairs, sign: float) -> None:
        """Note (or give back) added events' light that follows their position."""
        for (name, key), chs in follow.items():
            if key == name:
                _accumulate(self._own[name], chs, sign)
            elif _accumulate(self._cross.setdefault((name, key), {}), chs, sign):
                del self._cross[name, key]

    def _set_centre(self, name: str, xy: tuple[float, float]) -> None:
        """Place a position's field at ``xy`` µm (a move, or a move given back)."""
        if self._centres[name] == xy:
            return
        self._centres[name] = xy
        self._centre_xy[self._row[name]] = xy
        self._landed.clear()
        near = set(self._near(*xy, 2, name))
        for k in self._neighbours[name] - near:
            self._neighbours[k].discard(name)
        for k in near:
            self._neighbours[k].add(name)
        self._neighbours[name] = near

    def _remember(self, decision: Decision, booked: tuple[Any, ...]) -> None:
        self._undo[decision.decision_id] = booked
        if len(self._undo) > _UNDO_KEPT:
            old_id = next(iter(self._undo))
            old = self._undo.pop(old_id)
            if isinstance(old[0], str):  # a move's booking: (position, pairs)
                # a refusal of it, or of any move before it, now gives nothing back: the
                # moves before it are no longer needed (it is where the position goes
                # back to if the later ones are refused)
                moves = self._moves.get(old[0], [])
                at = next((i for i, m in enumerate(moves) if m[0] == old_id), 0)
                del moves[:at]

    # ------------------------------------------------------------ booking

    def commit(self, decision: Decision, now_s: float) -> None:
        """Book a decision that passed `check`, before it is sent.

        Decisions fired together are checked one after the other against what
        the ones before them booked, so a batch can never exceed a limit. A stop
        books nothing, not even towards the rate (`check` does not limit it).

        Raises
        ------
        ValueError
            if ``now_s`` is no number (NaN, infinity; not for a stop): `check`
            refuses a decision there. Nothing is booked.

        """
        _check_time("commit", decision, now_s)
        self._released.pop(decision.decision_id, None)  # (booked again: may be given back)
        if not isinstance(decision, StopPosition | StopRun):
            self.sent_at = [*self._recent(now_s), now_s]
        checked, summed = self._summed
        self._summed = (None, ())
        if isinstance(decision, Move):
            name, at = decision.position, (float(decision.x_um), float(decision.y_um))
            if name not in self._centres:
                return
            pairs = summed[0] if checked is decision else self._move_light(name, at)
            self._book_pairs(pairs, 1.0)
            self._moves.setdefault(name, []).append((decision.decision_id, at))
            self._remember(decision, (name, pairs))
            self._set_centre(name, at)
        elif isinstance(decision, AddEvents):
            self.extra_frames += len(decision.events)
            add, add_ch, follow = (
                summed if checked is decision else self._sum_light(decision.events)
            )
            self._book(add, add_ch, 1.0)
            self._follow(follow, 1.0)
            self._remember(decision, (add, add_ch, follow))

    def release(self, decision: Decision, now_s: float) -> None:
        """Give back what `commit` booked for a decision the agent refused.

        In any order: what a decision booked is given back as it was booked
        (its light not, if it is no longer known: an answer later than
        `_UNDO_KEPT` decisions, or from before a restart; its frames and its
        place in the rate are given back even then), and a refused move leaves its
        position where the moves still booked put it, with what they overlap
        booked (a move no longer known leaves it where it is). A decision given
        back already, and not committed since, gives back nothing more (a
        refusal answered twice must not free another decision's frames or
        place in the rate; the latest `_UNDO_KEPT` given back are known, and
        saved with the books: `state`).

        Raises
        ------
        ValueError
            if ``now_s`` is no number (NaN, infinity; not for a stop): `commit`
            books nothing there. Nothing is given back.

        """
        _check_time("release", decision, now_s)
        self._summed = (None, ())
        if decision.decision_id in self._released:
            return
        self._released[decision.decision_id] = None
        if len(self._released) > _UNDO_KEPT:
            del self._released[next(iter(self._released))]
        if not isinstance(decision, StopPosition | StopRun) and now_s in self.sent_at:
            self.sent_at.remove(now_s)  # (a stop was not counted: `commit`)
        booked = self._undo.pop(decision.decision_id, None)
        if isinstance(decision, Move):
            name = decision.position
            if name not in self._centres:
                return
            if booked is None:
                # no longer known: nor are the moves before it (`_remember`), so where it
                # would go back to is not known either
                return
            self._book_pairs(booked[1], -1.0)
            moves = self._moves.get(name, [])
            at = next((i for i, m in enumerate(moves) if m[0] == decision.decision_id), None)
            if at is None:
                return
            del moves[at]
            # the later moves' places: what the refused move booked for them (a pair
            # booked once) is booked again, as theirs: given back if they are refused too
            for later_id, place in moves[at:]:
                if not (extra := self._move_light(name, place)):
                    continue
                self._book_pairs(extra, 1.0)
                if (later := self._undo.get(later_id)) is not None:
                    pairs = {pair: dict(chs) for pair, chs in later[1].items()}
                    for pair, chs in extra.items():
                        _accumulate(pairs.setdefault(pair, {}), chs)
                    self._undo[later_id] = (name, pairs)
            self._set_centre(name, moves[-1][1] if moves else self._plan_centres[name])
        elif isinstance(decision, AddEvents):
            self.extra_frames -= len(decision.events)
            if booked is not None:
                add, add_ch, follow = booked
                self._book(add, add_ch, -1.0)
                self._follow(follow, -1.0)

    def usage(self) -> dict[str, Any]:
        """Return what has been booked: added frames, fluorescence seconds per position."""
        return {
            "extra_frames": self.extra_frames,
            "fluorescence_s": {k: round(v, 3) for k, v in sorted(self.dose_s.items())},
        }

    def state(self) -> dict[str, Any]:
        """Everything needed to resume after a worker restart (JSON)."""
        return {
            "dose_s": dict(self.dose_s),
            "dose_ch_s": dict(self.dose_ch_s),
            "extra_frames": self.extra_frames,
            "sent_at": self.sent_at,
            "following": {k: dict(v) for k, v in self._own.items()},
            "cross": [[src, dst, chs] for (src, dst), chs in self._cross.items()],
            # (where each moved position is: a restarted worker knows none of the moves
            # before it, so a refusal of one gives nothing back)
            "moves": {k: [[v[-1][0], *v[-1][1]]] for k, v in self._moves.items() if v},
            # (a refusal read again by the restarted worker gives back nothing more, and a
            # clock that stepped back counts on from where it did)
            "released": list(self._released)[-_RELEASED_SAVED:],
            "back_s": self._back_s,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from `state` (the plan's own dose is part of it).

        A state saved by an older livescope (no ``released`` nor ``back_s``) knows
        no decision given back, nor a step of the clock.
        """
        self.dose_s = defaultdict(float, {str(k): float(v) for k, v in state["dose_s"].items()})
        self.dose_ch_s = defaultdict(
            float, {str(k): float(v) for k, v in state["dose_ch_s"].items()}
        )
        self.extra_frames = int(state["extra_frames"])
        # (a time that is no number, in a state saved before they were refused, is left
        # out: compared as neither before nor after any time, it upset the rate's window)
        self.sent_at = [t for t in map(float, state["sent_at"]) if math.isfinite(t)]
        self._released = dict.fromkeys(str(i) for i in state.get("released", []))
        self._back_s = None if (back_s := state.get("back_s")) is None else float(back_s)
        for k, chs in state.get("following", {}).items():
            self._own[str(k)] = defaultdict(float, {str(c): float(s) for c, s in chs.items()})
        self._cross = {
            (str(src), str(dst)): {str(ch): float(s) for ch, s in chs.items()}
            for src, dst, chs in state.get("cross", [])
        }
        for k, moves in state.get("moves", {}).items():
            if k in self._centres and moves:
                # (a state saved by an older livescope lists every move: the last is where it is)
                i, x, y = moves[-1]
                self._moves[k] = [(str(i), (float(x), float(y)))]
                self._set_centre(k, self._moves[k][-1][1])
