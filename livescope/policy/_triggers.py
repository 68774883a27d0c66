"""Rule triggers (``when``): what in a field's results makes a rule fire.

One class per kind (`TRIGGERS`: ``mitosis``, ``division``, ``cell_count``,
``enter_region``, ``feature``, ``track_lost``); each checks an `Observation`
and returns `Hit` s, and keeps what it must remember between fields (state).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._observation import FEATURES, Observation

__all__ = ["TRIGGERS", "Hit", "Trigger"]

FORGET_AFTER_T = 100
"""Time points of its position after which a cell a trigger remembers and no field has
shown is forgotten: its track has ended (the tracker closes gaps of a few time points,
``max_gap``, and never gives an id again)."""


@dataclass(frozen=True)
class Hit:
    """Where and on what a trigger fired (track and pixel centroid when it is a cell)."""

    track: int | None = None
    y: float | None = None
    x: float | None = None
    inputs: Mapping[str, Any] | None = None


class Trigger:
    """A rule's ``when``: checks each observation for hits (subclasses, one per kind)."""

    kind = ""

    def check(self, obs: Observation) -> list[Hit]:  # pragma: no cover (abstract)
        raise NotImplementedError

    def release(self, position: str, hit: Hit) -> None:
        """Take back a hit of ``position``: it may hit again later.

        For a hit the rule did not fire on (cooldown), or one whose decision the
        microscope refused as stale. Triggers on a condition that lasts (a cell
        in mitosis, inside a region, a feature or count past its threshold) hit
        again on a later field while the condition holds; events (a division, a
        lost track) are gone.
        """
        return None

    def rearmed(self, position: str) -> bool:
        """Return whether the last field checked re-armed ``position``'s hit without a cell.

        (``cell_count``: its count went back past the threshold by the
        hysteresis.) The rule then forgets that hit given back (`Rule.give_back`,
        once per cell): the next crossing is another, given back as the first was.
        """
        return False

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        return None


def _key(obs: Observation, track: int) -> str:
    return cell_key(obs.position, track)


def cell_key(position: str, track: int | None) -> str:
    """Return a cell's key in rules' and triggers' memory: ``position/track`` (or ``position/``)."""
    return f"{position}/{'' if track is None else track}"


def _divided(obs: Observation) -> set[str]:
    """Return the keys of tracks that ended by dividing: the parents of the field's cells.

    The tracker ends a track that divides and never gives its id again, so what a
    trigger remembers of it is never looked up again once its daughters have
    been checked (they carry it on); kept, it grew with every cell cycle of a
    long run, and the policies' state is written as JSON after every field.
    """
    c = obs.cells
    parents = {parent for parent, _ in obs.divisions}
    if c.parents.size:
        parents.update(c.parents.tolist())
    parents -= {0, *c.tracks.tolist()}  # (0: none known; a parent still seen is no parent)
    return {_key(obs, int(p)) for p in parents}


class _LastSeen:
    """When each cell a trigger remembers was last seen (per position: track -> time point).

    Tracks that end without dividing (a cell that died or left the field, a
    tracking break) are in no field's divisions: kept, what a trigger remembered
    of them grew with every such track of a long run (~90 bytes a field per
    position for a 300-cell field losing 5% of its tracks a field), in the
    policies' state written after every field and in each field's scans.
    """

    def __init__(self) -> None:
        self.t: dict[str, dict[int, int | None]] = {}

    def ended(self, obs: Observation, held: set[str]) -> list[str]:
        """Note the field's cells among ``held``; return the keys of its position's gone ones.

        Called at the end of each field's check. The keys returned (cells not
        seen for over `FORGET_AFTER_T` time points) are forgotten here, and are
        for the trigger to forget too.
        """
        mine = self.t.setdefault(obs.position, {})
        for track in obs.cells.tracks.tolist():
            if _key(obs, track) in held:
                mine[track] = obs.t
        gone = []
        for track, t in list(mine.items()):
            if t is None:  # (restored from a state saved without it: from now)
                mine[track] = obs.t
            elif obs.t - t > FORGET_AFTER_T:
                del mine[track]
                gone.append(_key(obs, track))
        return gone

    def note(self, position: str, track: int) -> None:
        """Take ``track`` of ``position`` as seen on that position's next field (if not known)."""
        self.t.setdefault(position, {}).setdefault(track, None)

    def restore(self, held: set[str]) -> None:
        """Take the cells in ``held`` (a restored state's) as seen on their position's next field.

        (The times are not saved: a restart only delays forgetting.)
        """
        self.t = {}
        for key in held:
            position, _, track = key.rpartition("/")
            if track.isdigit():
                self.t.setdefault(position, {}).setdefault(int(track), None)


def _mothers(obs: Observation) -> dict[int, int]:
    """Return the mother of each of the field's tracks that has a known one (track: mother)."""
    c = obs.cells
    mothers = {d: parent for parent, daughters in obs.divisions for d in daughters}
    if c.parents.size:
        tracks, parents = c.tracks.tolist(), c.parents.tolist()
        mothers.update((t, p) for t, p in zip(tracks, parents, strict=True) if p)
    return mothers


class _Mitosis(Trigger):
    """A cell in mitosis on ``frames`` fields in a row: one hit per track and mitosis.

    A field that did not score the cell (NaN) neither adds to its run nor ends it.

    A cell already fired on is that mitosis, and so are its daughters while
    they are in it (anaphase, telophase; or a tracker's split within it). Such
    a daughter is re-armed, its own next mitosis (a cell cycle later) to fire,
    once seen out of mitosis on ``frames`` fields in a row and not in it again
    for ``rearm_after_s`` from the first of them (sample seconds; 0 by default:
    a rule's cooldown holds back a repeat on the same cell, and in the demo's
    runs no cell dipped out of a mitosis and back in; a longer time guards a
    rule without a cooldown against such dips of the classifier, at the cost
    of a mitosis begun sooner than that). This holds for a
    daughter of a mitosis fired on, and for a daughter that fired on its
    mother's mitosis (first seen in it, the mother never fired on, so it was
    never seen out of mitosis). A cell first seen in mitosis with no parent is
    never re-armed: its daughters are that mitosis, and its track ends there.
    Both daughters of a mitosis not fired on may hit (a rule's cooldown radius
    holds the second back).
    """

    kind = "mitosis"

    def __init__(self, p_min: float = 0.5, frames: int = 2, rearm_after_s: float = 0) -> None:
        if not 0 < p_min <= 1:
            raise ValueError(f"mitosis.p_min must be in (0, 1], got {p_min}")
        if frames < 1:
            raise ValueError(f"mitosis.frames must be >= 1, got {frames}")
        if not 0 <= rearm_after_s < math.inf:
            raise ValueError(f"mitosis.rearm_after_s must be >= 0 seconds, got {rearm_after_s}")
        self.p_min, self.frames = float(p_min), int(frames)
        self.rearm_after_s = float(rearm_after_s)
        self.runs: dict[str, int] = {}
        self.fired: set[str] = set()
        self.inherited: set[str] = set()
        """Daughters of a fired mitosis (or of such a daughter) still in it."""
        self.rearm: set[str] = set()
        """Fired daughters that fired on their mother's mitosis, still in it."""
        self.leaving: dict[str, int] = {}
        """Cells in ``inherited`` or ``rearm`` seen out of mitosis: on how many fields in a row."""
        self.out_since: dict[str, float] = {}
        """... and since when (sample seconds)."""
        self.own: set[str] = set()
        """Daughters of a fired mitosis re-armed: their next mitosis is their own."""
        self.newest: dict[str, int] = {}
        """Per position, the highest track id seen so far (the tracker counts ids up)."""
        self.fresh: set[str] = set()
        """Tracks seen in mitosis on every field since they were first seen (last field)."""
        self.seen = _LastSeen()

    def _out_of_it(self, key: str, p: float, now: float) -> bool:
        """Count a held cell's field out of (or in) mitosis; True once it is re-armed."""
        n = self.leaving.get(key, 0)
        if p < self.p_min:
            if n == 0:
                self.out_since[key] = now
            n = self.leaving[key] = n + 1
        elif np.isfinite(p):  # in it again (no score: nothing learnt)
            if not self._rearmed(key, n, now):  # (out long enough: a mitosis of its own)
                self.leaving[key] = 0
                self.out_since.pop(key, None)
                return False
            return True
        return self._rearmed(key, n, now)

    def _rearmed(self, key: str, n: int, now: float) -> bool:
        # (a state saved before `out_since` existed: its count alone, as then)
        if n < self.frames or now - self.out_since.get(key, -math.inf) < self.rearm_after_s:
            return False
        self.leaving.pop(key, None)
        self.out_since.pop(key, None)
        return True

    def _held(self) -> set[str]:
        """Return the cells this trigger remembers for longer than a field."""
        return self.fired | self.inherited | self.rearm | self.own | set(self.leaving)

    def check(self, obs: Observation) -> list[Hit]:
        hits = self._check(obs)
        for key in self.seen.ended(obs, self._held()):
            for held in (self.fired, self.inherited, self.rearm, self.own):
                held.discard(key)
            self.leaving.pop(key, None)
            self.out_since.pop(key, None)
        return hits

    def _check(self, obs: Observation) -> list[Hit]:
        c = obs.cells
        if len(c) == 0:
            return []
        prefix = obs.position + "/"
        # the first field seen at a position (a rule added, or a state saved before
        # `newest`, after a restart): none of its tracks is taken as first seen now
        newest = self.newest.get(obs.position, int(c.tracks.max()))
        self.newest[obs.position] = max(newest, int(c.tracks.max()))
        if not np.isfinite(c.p_mitosis).any():  # (not scored: nothing learnt, none fresh)
            self.fresh = {k for k in self.fresh if not k.startswith(prefix)}
            return []
        hits = []
        seen: dict[str, int] = {}
        fresh: set[str] = set()
        now = obs.sample_time_s
        for i in range(len(c)):
            track = int(c.tracks[i])
            key = _key(obs, track)
            p = float(c.p_mitosis[i])
            scored = bool(np.isfinite(p))  # (a cell not scored: nothing learnt of it)
            if p >= self.p_min and (track > newest or key in self.fresh):
                fresh.add(key)  # (a track id above every one seen before: first seen now)
            if key in self.fired:
                if key not in self.rearm or not self._out_of_it(key, p, now):
                    continue
                self.rearm.discard(key)
                self.fired.discard(key)
            parent = int(c.parents[i]) if c.parents.size else 0
            if (
                parent
                and key not in self.own
                and (
                    key in self.inherited  # (held until out of it itself, whatever its mother)
                    or (pk := _key(obs, parent)) in self.fired
                    or pk in self.inherited
                )
            ):
                # a daughter of a fired mitosis (or of such a daughter: a tracker's
                # split within it)
                if not self._out_of_it(key, p, now):
                    self.inherited.add(key)
                    continue
                self.inherited.discard(key)
                self.own.add(key)
            if not scored:  # its run neither grows nor ends, as on a field not scored at all
                seen[key] = self.runs.get(key, 0)
                continue
            run = self.runs.get(key, 0) + 1 if p >= self.p_min else 0
            seen[key] = run
            if run >= self.frames:
                self.fired.add(key)
                if parent and key in fresh:  # never seen out of it: its mother's mitosis
                    self.rearm.add(key)
                hits.append(
                    Hit(
                        int(c.tracks[i]),
                        float(c.y[i]),
                        float(c.x[i]),
                        {
                            "p_mitosis": round(p, 4),
                            "frames": run,
                            "state": c.state[i] if c.state else "",
                        },
                    )
                )
        self.runs = {k: v for k, v in self.runs.items() if not k.startswith(prefix)}
        self.runs.update({k: v for k, v in seen.items() if v})
        self.fresh = {k for k in self.fresh if not k.startswith(prefix)} | fresh
        # (only now: on a field not scored its daughters were not checked, and still
        # look their mother up on the next)
        if ended := _divided(obs):
            self.fired -= ended
            self.inherited -= ended
            self.rearm -= ended
            self.own -= ended
            for key in ended:
                self.leaving.pop(key, None)
                self.out_since.pop(key, None)
        return hits

    def release(self, position: str, hit: Hit) -> None:
        if hit.track is not None:
            key = cell_key(position, hit.track)
            self.fired.discard(key)  # its run goes on: it hits next field
            self.rearm.discard(key)

    def state(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "fired": sorted(self.fired),
            "inherited": sorted(self.inherited),
            "rearm": sorted(self.rearm),
            "leaving": self.leaving,
            "out_since": self.out_since,
            "own": sorted(self.own),
            "newest": self.newest,
            "fresh": sorted(self.fresh),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.runs = {str(k): int(v) for k, v in state.get("runs", {}).items()}
        self.fired = set(state.get("fired", []))
        self.inherited = set(state.get("inherited", []))
        self.rearm = set(state.get("rearm", []))
        self.leaving = {str(k): int(v) for k, v in state.get("leaving", {}).items()}
        self.out_since = {str(k): float(v) for k, v in state.get("out_since", {}).items()}
        self.own = set(state.get("own", []))
        self.newest = {str(k): int(v) for k, v in state.get("newest", {}).items()}
        self.fresh = set(state.get("fresh", []))
        self.seen.restore(self._held())


class _Division(Trigger):
    kind = "division"

    def check(self, obs: Observation) -> list[Hit]:
        hits = []
        c = obs.cells
        for parent, daughters in obs.divisions:
            rows = [r for d in daughters if (r := obs.track_row(d)) is not None]
            # between the daughters placed (one whose centroid is no number left the other's
            # place unknown too); none placed: their NaN, which the rule says it cannot aim at
            rows = [r for r in rows if math.isfinite(c.y[r]) and math.isfinite(c.x[r])] or rows
            if rows:
                y = float(np.mean([c.y[r] for r in rows]))
                x = float(np.mean([c.x[r] for r in rows]))
                hits.append(Hit(parent, y, x, {"daughters": list(daughters)}))
            else:
                hits.append(Hit(parent, None, None, {"daughters": list(daughters)}))
        return hits


class _CellCount(Trigger):
    kind = "cell_count"

    def __init__(
        self, above: float | None = None, below: float | None = None, hysteresis: float = 0.1
    ) -> None:
        if (above is None) == (below is None):
            raise ValueError("cell_count needs exactly one of 'above' or 'below'")
        # (a count is never below 0, and always above a negative number: such a rule
        # would never fire, or fire once on the first field whatever it holds)
        if below is not None and below <= 0:
            raise ValueError(f"cell_count.below must be > 0 (1: no cells), got {below}")
        if above is not None and above < 0:
            raise ValueError(f"cell_count.above must be >= 0, got {above}")
        if not 0 <= hysteresis < 1:
            raise ValueError(f"cell_count.hysteresis must be in [0, 1), got {hysteresis}")
        self.above, self.below, self.hysteresis = above, below, float(hysteresis)
        self.armed: dict[str, bool] = {}
        self._rearmed = ""  # the position the last field checked re-armed ("": none)

    def check(self, obs: Observation) -> list[Hit]:
        self._rearmed = ""
        n = len(obs.cells)
        armed = self.armed.get(obs.position, True)
        if self.above is not None:
            crossed, rearm = n > self.above, n <= self.above * (1 - self.hysteresis)
        else:
            assert self.below is not None
            crossed, rearm = n < self.below, n >= self.below * (1 + self.hysteresis)
        if armed and crossed:
            self.armed[obs.position] = False
            return [Hit(None, None, None, {"cells": n})]
        if not armed and rearm:
            self.armed[obs.position] = True
            self._rearmed = obs.position
        return []

    def release(self, position: str, hit: Hit) -> None:
        self.armed[position] = True

    def rearmed(self, position: str) -> bool:
        return bool(self._rearmed) and self._rearmed == position

    def state(self) -> dict[str, Any]:
        return {"armed": self.armed}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.armed = {str(k): bool(v) for k, v in state.get("armed", {}).items()}


class _CellSetTrigger(Trigger):
    """A trigger on a lasting condition of a cell: the set of cells (position/track) in it.

    A cell hits when it enters the set; a hit not fired on (cooldown) leaves it,
    so it may hit again while the condition holds. Saved as ``{state_key: [...]}``.

    A daughter is born in the set when her mother was in it (`_inherit`): a
    division is no crossing, so she hits only once she herself has left the
    condition and entered it again. A daughter of a mother not in the set (never
    seen, seen outside it, or her hit held back by a cooldown) starts with no
    state, and hits if she is in the condition.
    """

    state_key = ""

    def __init__(self) -> None:
        self.cells: set[str] = set()
        self.seen = _LastSeen()

    def check(self, obs: Observation) -> list[Hit]:
        hits = self._check(obs)
        self.cells.difference_update(self.seen.ended(obs, self.cells))
        return hits

    def _check(self, obs: Observation) -> list[Hit]:  # pragma: no cover (abstract)
        raise NotImplementedError

    def _inherit(self, obs: Observation) -> None:
        """Put the field's daughters of mothers in the set into it, before they are checked.

        Called on each field before its cells are checked; the mothers that
        divided are forgotten only after (`_divided`), so a daughter is given
        her mother's state on the field she is first seen on, whether or not
        that field measured her (a centroid or a feature not made is NaN).
        """
        seen = set(obs.cells.tracks.tolist())  # (a parent still seen is no parent: `_divided`)
        for track, mother in _mothers(obs).items():
            if mother not in seen and _key(obs, mother) in self.cells:
                self.cells.add(_key(obs, track))

    def release(self, position: str, hit: Hit) -> None:
        if hit.track is not None:
            self.cells.discard(cell_key(position, hit.track))

    def state(self) -> dict[str, Any]:
        return {self.state_key: sorted(self.cells)}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.cells = set(state.get(self.state_key, []))
        self.seen.restore(self.cells)


class _EnterRegion(_CellSetTrigger):
    """A cell entering the rectangle ``region`` (``[y0, x0, y1, x1]`` px of the frame).

    The cells inside it on the first field it checks at a position (the
    position's first, or the first after the rule was added to a run) entered
    nothing: they are taken as inside, with no hit. From the next field on, a
    cell hits when seen inside after it was seen outside, or when its track
    first appears there (a daughter of a mother inside excepted: `_inherit`).
    """

    kind = "enter_region"
    state_key = "inside"

    def __init__(self, region: Sequence[float]) -> None:
        if (
            not isinstance(region, list | tuple | np.ndarray)
            or len(region) != 4
            or not all(
                isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
                and math.isfinite(v) for v in region
            )
            or not (region[0] < region[2] and region[1] < region[3])
        ):  # fmt: skip
            # (YAML's "100" is a string, and a bare number no rectangle)
            raise ValueError(
                f"enter_region.region must be [y0, x0, y1, x1] px (4 numbers, y0 < y1, "
                f"x0 < x1), got {region!r}"
            )
        super().__init__()
        self.region = tuple(float(v) for v in region)
        self.positions: set[str] = set()
        """Positions a field has been checked at (their first field fires on no one)."""
        self.every_seen = False
        """Every position taken as seen: resumed from a state saved before `positions` were
        (its run had begun; a position whose cells were all outside had had fields too)."""

    def _check(self, obs: Observation) -> list[Hit]:
        # a cell is forgotten once it is seen outside the region, not when a field
        # misses it (it would fire again when seen inside on the next: as `feature`),
        # nor when its centroid is no number (not seen anywhere)
        c = obs.cells
        self._inherit(obs)
        y0, x0, y1, x1 = self.region
        now = (c.y >= y0) & (c.y < y1) & (c.x >= x0) & (c.x < x1)
        hits = []
        prefix = obs.position + "/"
        mine = {k for k in self.cells if k.startswith(prefix)}
        if mine:
            gone = set(c.tracks[~now & np.isfinite(c.y) & np.isfinite(c.x)].tolist())
            self.cells -= {k for k in mine if k[len(prefix) :] and int(k[len(prefix) :]) in gone}
        # (its cells inside entered nothing)
        first = not self.every_seen and obs.position not in self.positions
        self.positions.add(obs.position)
        for i in np.flatnonzero(now).tolist():
            key = _key(obs, int(c.tracks[i]))
            if key not in self.cells:
                self.cells.add(key)
                if not first:
                    hits.append(Hit(int(c.tracks[i]), float(c.y[i]), float(c.x[i]), {}))
        self.cells -= _divided(obs)  # (only now: their daughters took their state)
        return hits

    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "positions": sorted(self.positions),
            **({"every_seen": True} if self.every_seen else {}),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        super().restore(state)
        self.positions = {str(p) for p in state.get("positions", ())}
        # (a state saved before `positions` were: the run had begun at every position, the
        # ones whose cells were all outside too, whose next field is no first)
        self.every_seen = bool(state.get("every_seen", "positions" not in state))


class _Feature(_CellSetTrigger):
    kind = "feature"
    state_key = "high"

    def __init__(self, feature: str, above: float, rearm_below: float | None = None) -> None:
        if feature not in FEATURES:
            raise ValueError(
                f"feature.feature must be one of {', '.join(FEATURES)}, got {feature!r}"
            )
        if feature.startswith("p_"):  # (a probability: 0..1, as mitosis.p_min; not a percent)
            for name, v in (("above", above), ("rearm_below", rearm_below)):
                if v is not None and not 0 <= v <= 1:
                    raise ValueError(
                        f"feature.{name} must be in [0, 1] for {feature} (a probability), got {v}"
                    )
        rearm = above if rearm_below is None else rearm_below
        if rearm > above:
            raise ValueError(f"feature.rearm_below ({rearm}) must be <= above ({above})")
        super().__init__()
        self.feature, self.above, self.rearm = feature, float(above), float(rearm)

    def _check(self, obs: Observation) -> list[Hit]:
        c = obs.cells
        self._inherit(obs)
        values = c.feature(self.feature)
        hits = []
        for i in range(len(c)):
            v = float(values[i])
            if not math.isfinite(v):
                continue
            key = _key(obs, int(c.tracks[i]))
            if key in self.cells:
                if v < self.rearm:
                    self.cells.discard(key)
            elif v >= self.above:
                self.cells.add(key)
                # (6 significant digits: rounded to 4 decimals, a stain or intensity on a
                # scale below 1e-4 was logged as 0.0, beside the threshold it passed)
                hits.append(Hit(int(c.tracks[i]), float(c.y[i]), float(c.x[i]),
                                {self.feature: float(f"{v:.6g}")}))  # fmt: skip
        self.cells -= _divided(obs)  # (only now: their daughters took their state)
        return hits


class _TrackLost(Trigger):
    """A track seen on the previous field and not on this one: once per track.

    Not a parent that divided (its daughters carry it on). A field's `lost`
    says only that a track was not seen; whether the tracker has ended it (no
    longer able to close the gap, ``max_gap``) no observation tells, and a cell
    the segmentation missed on one field comes back under the same id on the
    next. So a track hits on its first loss only: seen again and lost again, it
    does not hit again. A hit the rule did not fire on (held back by its
    cooldown or ``max_fires``) or gave back (a stale refusal) is not used up:
    the track hits on its next loss. A track no field of its position has shown
    for `FORGET_AFTER_T` time points is forgotten (the tracker has ended it).
    """

    kind = "track_lost"

    def __init__(self) -> None:
        self.fired: set[str] = set()
        """The tracks (position/track) that hit."""
        self.seen = _LastSeen()

    def check(self, obs: Observation) -> list[Hit]:
        divided = {parent for parent, _ in obs.divisions}  # (its daughters carry it on)
        hits = []
        for track in obs.lost:
            key = _key(obs, int(track))
            if track in divided or key in self.fired:
                continue
            self.fired.add(key)
            self.seen.note(obs.position, int(track))  # (not in this field: lost)
            hits.append(Hit(int(track), None, None, {}))
        self.fired -= _divided(obs)  # (the tracker never gives a parent's id again)
        self.fired.difference_update(self.seen.ended(obs, self.fired))
        return hits

    def release(self, position: str, hit: Hit) -> None:
        if hit.track is not None:
            self.fired.discard(cell_key(position, hit.track))

    def state(self) -> dict[str, Any]:
        return {"fired": sorted(self.fired)}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.fired = {str(k) for k in state.get("fired", [])}
        self.seen.restore(self.fired)


TRIGGERS: dict[str, type[Trigger]] = {
    t.kind: t for t in (_Mitosis, _Division, _CellCount, _EnterRegion, _Feature, _TrackLost)
}
