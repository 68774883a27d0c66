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
another position. An event that names a plan position and gives no x/y is
imaged as the position's plan frames are, at its centre (where it is now,
moves applied): it books to the position, and to any other position a move
put over its field (or it over another's).

A move (``Move``) takes a position's field, and the plan's frames still to
come there, to a new place. Where its new field overlaps another plan
position's field (where that one is now) that its plan field did not, each
lights the other's sample: the moving position's fluorescence frames still to
come (the plan's, from the time index the run has reached) are booked to the
other position, and the other's to it. A move that would take either past a
budget is refused. Moving again gives back what is still to come of that
booking (what was imaged meanwhile stays booked). The plan's own overlaps are
the plan's choice: they book nothing (the plan check holds each position to
its budget).
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

_Pairs = dict[tuple[str, str], dict[str, float]]
"""(from, to) -> seconds of fluorescence per channel: ``from``'s frames booked to ``to``."""


def _net(back: _Pairs, new: _Pairs) -> tuple[dict[str, float], dict[str, float]]:
    """Return what a move books per budget and per budget/channel (given back: negative)."""
    add: dict[str, float] = defaultdict(float)
    add_ch: dict[str, float] = defaultdict(float)
    for sign, pairs in ((-1.0, back), (1.0, new)):
        for (_, dst), chs in pairs.items():
            for ch, s in chs.items():
                add[dst] += sign * s
                add_ch[f"{dst}/{ch}"] += sign * s
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
        self._kind = {c.name: c.kind for c in profile.channels.presets}
        # an event may name its position or give its plan index: both book to the same
        # place, the one the agent images it at (the position's first plan event's, grid
        # tile included, as the agent's event queue names it)
        self._positions = PlanPositions()  # named as the agent's event queue names them
        self._plan: set[str] = set()  # the plan's budgets (positions, grid tiles)
        self._centres: dict[str, tuple[float, float]] = {}  # budget -> its field's centre, µm
        self._neighbours: dict[str, list[str]] = {}
        """Per plan position, the others whose fields an event overlapping its field may
        overlap too (centres within two fields): usually none."""
        self._landed: dict[tuple[float, float], tuple[str, ...]] = {}  # recent `_landing`s
        self._fov_um = profile.field_of_view_um
        self._summed: tuple[Decision | None, dict[str, float], dict[str, float]] = (None, {}, {})
        """The fluorescence seconds per position and per position/channel of the last
        decision `check` passed (the decision first): `commit` books them without walking
        the events again."""
        self._frames: dict[str, list[tuple[int, str, float]]] = defaultdict(list)
        """Per plan position, its planned fluorescence frames: (time index, channel, s)."""
        self._cross: dict[tuple[str, str], dict[str, float]] = {}
        """(from, to) -> the seconds per channel of ``from``'s frames still to come that
        were booked to ``to`` when a move made their fields overlap."""
        self._plan_overlaps: dict[str, frozenset[str]] = {}  # at the plan's places
        self._undo: dict[str, tuple[Any, ...]] = {}  # decision id -> what its commit changed
        self._summed_move: tuple[Decision | None, _Pairs, _Pairs] = (None, {}, {})
        if sequence is not None:
            events = (
                plan_events(sequence) if isinstance(sequence, useq.MDASequence) else tuple(sequence)
            )  # (walked twice: a generator would be spent by the first)
            for ev in events:
                self._plan.add(key := parent_position(self._positions.add(ev)))
                if ev.x_pos is not None and ev.y_pos is not None:
                    self._centres.setdefault(key, (float(ev.x_pos), float(ev.y_pos)))
                ch = ev.channel.config if ev.channel else ""
                if self._kind.get(ch) == "fluorescence" and isinstance(
                    ev.action, useq.AcquireImage
                ):  # (as `planned_light_s` counts it)
                    t = int(ev.index.get("t", 0))
                    self._frames[key].append((t, ch, self._exposure(ev) / 1000.0))
            for (key, ch), s in planned_light_s(events, profile).items():  # the plan's own light
                self.dose_s[key] += s
                self.dose_ch_s[f"{key}/{ch}"] += s
        self._plan_centres = dict(self._centres)
        # the centres as an array (one comparison however many positions the plan has)
        self._centre_xy = np.array(list(self._centres.values()), float).reshape(-1, 2)
        self._centre_names = list(self._centres)
        self._row = {k: i for i, k in enumerate(self._centre_names)}
        for name, (cx, cy) in self._centres.items():
            self._neighbours[name] = self._near(cx, cy, 2, name)
        for name, (cx, cy) in self._centres.items():
            self._plan_overlaps[name] = frozenset(self._near(cx, cy, 1, name))

    def _near(self, x: float, y: float, fields: float, but: str | None = None) -> list[str]:
        """Return the plan positions centred (now) within ``fields`` fields of x, y µm."""
        h, w = self._fov_um
        xy = self._centre_xy
        near = np.flatnonzero(
            (np.abs(xy[:, 0] - x) < fields * w) & (np.abs(xy[:, 1] - y) < fields * h)
        )
        return [k for i in near if (k := self._centre_names[i]) != but]

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
            c = self._centres.get(name)
            centres, (h, w) = self._centres, self._fov_um
            if x is None or y is None:
                if c is None:
                    return (name,)
                # imaged as its position's plan frames are, where the position is now:
                # its own, and a position a move put over it (or it over)
                plan = self._plan_overlaps[name]
                return (name, *(k for k in self._neighbours[name]
                                if k not in plan and abs(c[0] - centres[k][0]) < w
                                and abs(c[1] - centres[k][1]) < h))  # fmt: skip
            if name in self._plan:
                # its position's, and any other position its field overlaps; away from
                # its position's field, where it lands too (a name buys no new budget)
                if c is not None and abs(x - c[0]) < w and abs(y - c[1]) < h:
                    return (name, *(k for k in self._neighbours[name]
                                    if abs(x - centres[k][0]) < w
                                    and abs(y - centres[k][1]) < h))  # fmt: skip
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

    def check(
        self, decision: Decision, now_s: float, *, rate: float = 1.0, t_index: int | None = None
    ) -> str | None:
        """Return why ``decision`` breaks a limit at run time ``now_s``, or None if it passes.

        ``rate``: how many times ``guardrails.max_decisions_per_min`` may pass
        in the last minute (0: not checked). The agent's second check allows
        twice as many: its clock, when a decision arrives, is not the field's
        sample time the worker counts by, so a burst the worker spread over
        two minutes may reach it within one; twice the limit still stops a
        client that floods the channel.

        ``t_index``: the plan's time index the run has reached (the worker's:
        the field's; the agent's: the last it handed out). A move books the
        plan's frames from there on (see the module); None counts them all.
        Give `commit` the same.
        """
        g, dose = self.profile.guardrails, self.profile.light_dose
        recent = [t for t in self.sent_at if now_s - t < 60.0]
        if rate > 0 and len(recent) + 1 > rate * g.max_decisions_per_min:
            return (
                f"rate: {len(recent)} decisions in the last minute of run time; "
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
            back, new = self._move_light(decision, t_index)
            onto = sorted({dst for _, dst in new} - {decision.position})
            where = f"moving {decision.position} over {', '.join(onto)}'s field: " if onto else ""
            if (why := self._over_budget(*_net(back, new), where)) is not None:
                return why
            self._summed_move = (decision, back, new)
            return None
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
        if (why := self._over_budget(add, add_ch)) is not None:
            return why
        self._summed = (decision, add, add_ch)  # `commit` books them as they are
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
                if s > 0 and (total := booked.get(key, 0.0) + s) > limit + 1e-9:
                    where = key if key.startswith("area(") else what + key  # (a stage area)
                    return (
                        f"light dose: {doing}{where} would get {total:.2f} s of fluorescence; "
                        f"light_dose.{field} = {limit:g} s"
                    )
        return None

    # ------------------------------------------------------------ moves

    def _pending(self, name: str, t_index: int | None) -> dict[str, float]:
        """Return the seconds per channel of ``name``'s planned fluorescence still to come."""
        out: dict[str, float] = defaultdict(float)
        for t, ch, s in self._frames.get(name, ()):
            if t_index is None or t >= t_index:
                out[ch] += s
        return out

    def _move_light(self, d: Move, t_index: int | None) -> tuple[_Pairs, _Pairs]:
        """Return what a move gives back of its position's bookings, and what it books.

        Each a mapping (from, to) -> seconds per channel: ``from``'s frames still
        to come, booked to ``to`` (see the module).
        """
        name = d.position
        back: _Pairs = {}
        new: _Pairs = {}
        if name not in self._centres:
            return back, new  # no planned x/y (the agent refuses to move it)
        for pair, chs in self._cross.items():
            if name in pair:
                pend = self._pending(pair[0], t_index)
                back[pair] = {ch: min(s, pend.get(ch, 0.0)) for ch, s in chs.items()}
        for other in self._near(d.x_um, d.y_um, 1, name):  # (fields overlap)
            if other in self._plan_overlaps[name]:
                continue
            for pair in ((name, other), (other, name)):
                if chs := self._pending(pair[0], t_index):
                    new[pair] = chs
        return back, new

    def _set_centre(self, name: str, xy: tuple[float, float]) -> None:
        """Place a position's field at ``xy`` µm (a move, or its undoing)."""
        self._centres[name] = xy
        self._centre_xy[self._row[name]] = xy
        self._landed.clear()
        self._summed = (None, {}, {})  # (what a check summed may have lit it)
        for k in {name, *self._neighbours[name], *self._near(*xy, 2)}:
            self._neighbours[k] = self._near(*self._centres[k], 2, k)

    def _commit_move(self, d: Move, t_index: int | None) -> None:
        summed, back, new = self._summed_move
        if summed is not d:  # not the decision checked last
            back, new = self._move_light(d, t_index)
        if d.position not in self._centres:
            return
        add, add_ch = _net(back, new)
        before = {pair: chs for pair, chs in self._cross.items() if d.position in pair}
        for pair in back:
            del self._cross[pair]
        self._cross.update(new)
        for books, adding in ((self.dose_s, add), (self.dose_ch_s, add_ch)):
            for key, s in adding.items():
                books[key] += s
        self._undo[d.decision_id] = (self._centres[d.position], before, new, add, add_ch)
        if len(self._undo) > 256:  # (a refusal comes within seconds)
            del self._undo[next(iter(self._undo))]
        self._set_centre(d.position, (float(d.x_um), float(d.y_um)))

    def _release_move(self, d: Move) -> None:
        if (undo := self._undo.pop(d.decision_id, None)) is None:
            return
        centre, before, new, add, add_ch = undo
        for pair in new:
            self._cross.pop(pair, None)
        self._cross.update(before)
        for books, adding in ((self.dose_s, add), (self.dose_ch_s, add_ch)):
            for key, s in adding.items():
                books[key] -= s
        self._set_centre(d.position, centre)

    def commit(self, decision: Decision, now_s: float, *, t_index: int | None = None) -> None:
        """Book a decision that passed `check`, before it is sent.

        Decisions fired together are checked one after the other against what
        the ones before them booked, so a batch can never exceed a limit.
        ``t_index`` as given to `check`.
        """
        self.sent_at = [t for t in self.sent_at if now_s - t < 60.0] + [now_s]
        if isinstance(decision, Move):
            self._commit_move(decision, t_index)
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
        if isinstance(decision, Move):
            self._release_move(decision)
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
        centres, plan = self._centres, self._plan_centres
        return {
            "dose_s": dict(self.dose_s),
            "dose_ch_s": dict(self.dose_ch_s),
            "extra_frames": self.extra_frames,
            "sent_at": self.sent_at,
            "moved": {k: list(xy) for k, xy in centres.items() if xy != plan[k]},
            "cross": [[src, dst, chs] for (src, dst), chs in self._cross.items()],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from `state` (the plan's own dose is part of it)."""
        self.dose_s = defaultdict(float, {str(k): float(v) for k, v in state["dose_s"].items()})
        self.dose_ch_s = defaultdict(
            float, {str(k): float(v) for k, v in state["dose_ch_s"].items()}
        )
        self.extra_frames = int(state["extra_frames"])
        self.sent_at = [float(t) for t in state["sent_at"]]
        for k, (x, y) in state.get("moved", {}).items():
            if k in self._centres:
                self._set_centre(k, (float(x), float(y)))
        self._cross = {
            (str(src), str(dst)): {str(ch): float(s) for ch, s in chs.items()}
            for src, dst, chs in state.get("cross", [])
        }
