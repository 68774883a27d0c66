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
* ``guardrails.max_decisions_per_min``: decisions per minute of run time.

Where light is booked: an event that names a plan position, or gives its plan
index, books to that position; sub-sequence positions (``p0~rule-3``) book to
their parent (``p0``): it is the same patch of sample. An added event at a place
of its own (stage x/y with no plan position: no name and no index, or a name or
index the plan does not have) books to where its light lands, the camera's
field (default objective) centred on it: to every plan position whose field (at
its plan coordinates, moves aside) it overlaps, and to every stage area it
overlaps. The areas are field-sized squares of a grid from the stage origin,
named ``area(+i,+j)``: the square [i·w, (i+1)·w) × [j·h, (j+1)·h) µm for a
field w µm wide and h µm high. An event that names a plan position and gives
its own x/y books to that position and to every other plan position its field
overlaps, and, if its field misses its position's, to where it lands as well.
So a policy cannot light one patch of sample past its budget by naming each
frame's place anew, by moving it a little each time, or by filing it under
another position.
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
    parent_position,
    plan_events,
    planned_light_s,
)

__all__ = ["Guardrails", "parent_position"]


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
        self._kind = {c.name: c.kind for c in profile.channels.presets}
        # an event may name its position or give its plan index: both book to the same
        # place, the one the agent images it at (the position's first plan event's, grid
        # tile included, as the agent's event queue names it)
        self._positions = PlanPositions()  # named as the agent's event queue names them
        self._plan: set[str] = set()  # the plan's budgets (positions, grid tiles)
        self._centres: dict[str, tuple[float, float]] = {}  # budget -> its field's centre, µm
        self._neighbours: dict[str, list[tuple[str, float, float]]] = {}
        """Per plan position, the others whose fields an event overlapping its field may
        overlap too (centres within two fields): usually none."""
        self._landed: dict[tuple[float, float], tuple[str, ...]] = {}  # recent `_landing`s
        self._fov_um = profile.field_of_view_um
        self._summed: tuple[Decision | None, dict[str, float], dict[str, float]] = (None, {}, {})
        """The fluorescence seconds per position and per position/channel of the last
        decision `check` passed (the decision first): `commit` books them without walking
        the events again."""
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
        # the centres as an array (one comparison however many positions the plan has)
        self._centre_xy = np.array(list(self._centres.values()), float).reshape(-1, 2)
        self._centre_names = list(self._centres)
        h, w = self._fov_um
        for name, (cx, cy) in self._centres.items():
            xy = self._centre_xy
            near = np.flatnonzero((np.abs(xy[:, 0] - cx) < 2 * w) & (np.abs(xy[:, 1] - cy) < 2 * h))
            self._neighbours[name] = [
                (k, *self._centres[k]) for i in near if (k := self._centre_names[i]) != name
            ]

    def _event_position(self, ev: useq.MDAEvent) -> str:
        """Name the position an added event images, as the agent's event queue does."""
        p, g = ev.index.get("p", 0), ev.index.get("g")
        if (found := self._positions.resolve(ev.pos_name, p, g)) is not None:
            return found
        base = ev.pos_name or self._positions.base_of(p) or f"p{p}"  # not a plan position
        return base if g is None else f"{base}_g{g}"

    def _light_keys(self, ev: useq.MDAEvent) -> tuple[str, ...]:
        """Return the budgets an added event's light is booked to (see the module).

        (The plan's own events book to their positions: `planned_light_s`.)
        """
        x, y = ev.x_pos, ev.y_pos
        if ev.pos_name or "p" in ev.index or x is None or y is None:
            # (an event with neither a position nor x/y is refused by the agent; checked
            # here as the plan's first position's, as the agent's queue would file it)
            name = parent_position(self._event_position(ev))
            if x is None or y is None:
                return (name,)
            if name in self._plan:
                # its position's, and any other position its field overlaps; away from
                # its position's field, where it lands too (a name buys no new budget)
                h, w = self._fov_um
                c = self._centres.get(name)
                if c is not None and abs(x - c[0]) < w and abs(y - c[1]) < h:
                    return (name, *(k for k, cx, cy in self._neighbours[name]
                                    if abs(x - cx) < w and abs(y - cy) < h))  # fmt: skip
                return (name, *self._landing(float(x), float(y)))
        return self._landing(float(x), float(y))

    def _landing(self, x: float, y: float) -> tuple[str, ...]:
        """Return the plan positions and stage areas a field centred at x, y µm overlaps."""
        if (known := self._landed.get((x, y))) is not None:
            return known  # (a decision's events share their place)
        h, w = self._fov_um
        xy = self._centre_xy
        near = np.flatnonzero((np.abs(xy[:, 0] - x) < w) & (np.abs(xy[:, 1] - y) < h))
        keys = [self._centre_names[i] for i in near]
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

    def _book_frame(self, ev: useq.MDAEvent, sign: float = 1.0) -> None:
        ch = ev.channel.config if ev.channel else ""
        if self._kind.get(ch) != "fluorescence":
            return
        s = sign * self._exposure(ev) / 1000.0
        for key in self._light_keys(ev):
            self.dose_s[key] += s
            self.dose_ch_s[f"{key}/{ch}"] += s

    def check(self, decision: Decision, now_s: float, *, rate: float = 1.0) -> str | None:
        """Return why ``decision`` breaks a limit at run time ``now_s``, or None if it passes.

        ``rate``: how many times ``guardrails.max_decisions_per_min`` may pass
        in the last minute (0: not checked). The agent's second check allows
        twice as many: its clock, when a decision arrives, is not the field's
        sample time the worker counts by, so a burst the worker spread over
        two minutes may reach it within one; twice the limit still stops a
        client that floods the channel.
        """
        g, dose = self.profile.guardrails, self.profile.light_dose
        recent = [t for t in self.sent_at if now_s - t < 60.0]
        if rate > 0 and len(recent) + 1 > rate * g.max_decisions_per_min:
            return (
                f"rate: {len(recent)} decisions in the last minute of run time; "
                f"guardrails.max_decisions_per_min = {g.max_decisions_per_min:g}"
                + (f" (x{rate:g} here)" if rate != 1 else "")
            )
        try:
            if isinstance(decision, Move):
                self.profile.check_stage_travel(
                    decision.x_um, decision.y_um, decision.z_um, f"move {decision.position}"
                )
        except LivescopeError as exc:
            return f"stage: {exc}"
        if isinstance(decision, ChangeInterval) and decision.interval_s < g.min_interval_s:
            return (
                f"interval: {decision.interval_s:g} s is shorter than "
                f"guardrails.min_interval_s = {g.min_interval_s:g} s"
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
        gaps = [b - a for a, b in itertools.pairwise(times)]
        if gaps and min(gaps) < g.min_interval_s:
            return (
                f"interval: added time points {min(gaps):g} s apart; "
                f"guardrails.min_interval_s = {g.min_interval_s:g} s"
            )
        add: dict[str, float] = defaultdict(float)
        add_ch: dict[str, float] = defaultdict(float)
        places: set[tuple[float | None, float | None, float | None]] = set()
        booked_to: dict[tuple[Any, ...], tuple[str, ...]] = {}  # a decision's events share
        for i, ev in enumerate(events):
            if (xyz := (ev.x_pos, ev.y_pos, ev.z_pos)) not in places:  # events share places
                places.add(xyz)
                try:
                    self.profile.check_stage_travel(*xyz, f"event {i}")
                except LivescopeError as exc:
                    return f"stage: {exc}"
            ch = ev.channel.config if ev.channel else ""
            if self._kind.get(ch) != "fluorescence":
                continue
            exp = self._exposure(ev)
            if exp > dose.max_exposure_ms_per_frame:
                return (
                    f"light dose: event {i} exposure {exp:g} ms > "
                    f"light_dose.max_exposure_ms_per_frame = {dose.max_exposure_ms_per_frame:g} ms"
                )
            at = (ev.pos_name, ev.index.get("p"), ev.index.get("g"), ev.x_pos, ev.y_pos)
            if (keys := booked_to.get(at)) is None:
                keys = booked_to[at] = self._light_keys(ev)
            for key in keys:
                add[key] += exp / 1000.0
                add_ch[f"{key}/{ch}"] += exp / 1000.0
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
                if (total := booked.get(key, 0.0) + s) > limit + 1e-9:
                    where = key if key.startswith("area(") else what + key  # (a stage area)
                    return (
                        f"light dose: {where} would get {total:.2f} s of fluorescence; "
                        f"light_dose.{field} = {limit:g} s"
                    )
        self._summed = (decision, add, add_ch)  # `commit` books them as they are
        return None

    def commit(self, decision: Decision, now_s: float) -> None:
        """Book a decision that passed `check`, before it is sent.

        Decisions fired together are checked one after the other against what
        the ones before them booked, so a batch can never exceed a limit.
        """
        self.sent_at = [t for t in self.sent_at if now_s - t < 60.0] + [now_s]
        if isinstance(decision, AddEvents):
            self.extra_frames += len(decision.events)
            summed, add, add_ch = self._summed
            if summed is not decision:  # not the decision checked last
                for ev in decision.events:
                    self._book_frame(ev)
                return
            for key, s in add.items():
                self.dose_s[key] += s
            for key, s in add_ch.items():
                self.dose_ch_s[key] += s

    def release(self, decision: Decision, now_s: float) -> None:
        """Give back what `commit` booked for a decision the agent refused."""
        if now_s in self.sent_at:
            self.sent_at.remove(now_s)
        if isinstance(decision, AddEvents):
            self.extra_frames -= len(decision.events)
            for ev in decision.events:
                self._book_frame(ev, sign=-1.0)
            # a place booked only by this decision is dropped, not left at 0.0 (or at
            # a float's residue: `commit` adds the decision's sums, this takes its
            # frames back one by one)
            for books in (self.dose_s, self.dose_ch_s):
                for key in [k for k, v in books.items() if abs(v) < 1e-9]:
                    del books[key]

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
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from `state` (the plan's own dose is part of it)."""
        self.dose_s = defaultdict(float, {str(k): float(v) for k, v in state["dose_s"].items()})
        self.dose_ch_s = defaultdict(
            float, {str(k): float(v) for k, v in state["dose_ch_s"].items()}
        )
        self.extra_frames = int(state["extra_frames"])
        self.sent_at = [float(t) for t in state["sent_at"]]
