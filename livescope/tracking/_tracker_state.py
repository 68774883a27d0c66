"""What an `OnlineTracker` holds: its parameters, its state and the snapshots of it.

`TrackerConfig` is the tracker's parameters; `_State` its frame counter, next
track id and lineage (the per-track arrays are its `TrackTable`); a
`TrackerSnapshot` is that state at one frame, with the lineage read through
`_LineageView`s instead of copied, and is what `OnlineTracker.state` saves.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from numpy.typing import NDArray

from livescope.schema import LivescopeError


@dataclass(frozen=True)
class TrackerConfig:
    """Tracking parameters; distances in pixels, radii are each track's median radius."""

    gate_radii: float = 2.0
    """A one-frame link may span this many radii of the track's cell ..."""
    gate_px: float = 10.0
    """... plus this many pixels."""
    area_weight: float = 0.25
    """Cost of a change of size: weight on (log area ratio)^2."""
    no_link_cost: float = 0.6
    """Cost of starting or ending a track (a link is kept while cheaper than both)."""
    max_gap: int = 3
    """Frames between sightings a link may span (gap closing): 1 = no gaps, 3 = up to 2 missed."""
    gap_cost: float = 0.15
    """Extra cost per missed frame of a gap-closing link."""
    velocity_smoothing: float = 0.5
    """Weight of the newest displacement in the velocity estimate."""
    divisions: bool = True
    division_radii: float = 4.0
    """A daughter appears within this many parent radii (+ gate_px) of the parent."""
    division_window: int = 6
    """Frames back over which a late daughter can still be attached to its parent."""
    daughter_area_max: float = 0.8
    """Each daughter is smaller than this fraction of the parent's median area."""
    daughter_separation_min: float = 0.8
    """The daughters' centres are at least this many parent radii apart."""
    border_daughter_area_min: float = 0.35
    """A daughter touching the frame's edge shows at least this fraction of the parent's
    area (a cell only just entering the field shows less)."""
    split_margin: float = 0.5
    """A late daughter moves the split back only if that fits the midpoint this many
    radii better than the last frame does."""
    min_parent_age: int = 3
    """A track must have been seen this many frames before it can divide."""

    def __post_init__(self) -> None:
        # (infinity passed too: no_link_cost failed every frame with "no full matching
        # exists", a zero gap or area change times an infinite weight gave NaN costs, an
        # infinite gate or division radius paired every track with every object)
        for name in ("gate_radii", "gate_px", "no_link_cost", "division_radii"):
            if not (math.isfinite(value := getattr(self, name)) and value > 0):
                raise LivescopeError(f"tracker config: {name} must be > 0 and finite, not {value}")
        for name in ("area_weight", "gap_cost"):  # link costs stay >= 0
            if not (math.isfinite(value := getattr(self, name)) and value >= 0):
                raise LivescopeError(f"tracker config: {name} must be >= 0 and finite, not {value}")
        if not 0 <= self.velocity_smoothing <= 1:
            raise LivescopeError("tracker config: velocity_smoothing must be in [0, 1]")
        for name in ("daughter_area_max", "daughter_separation_min", "border_daughter_area_min",
                     "split_margin"):  # fmt: skip
            # (NaN compares false: every division test failed, and none was ever found)
            if not math.isfinite(value := getattr(self, name)) or value < 0:
                raise LivescopeError(f"tracker config: {name} must be a number >= 0, not {value}")
        for name in ("max_gap", "division_window", "min_parent_age"):
            # (a fraction of a frame failed deep in the track table's arrays)
            if not isinstance(value := getattr(self, name), int) or isinstance(value, bool):
                raise LivescopeError(f"tracker config: {name} must be a whole number of frames")
        if self.max_gap < 1:
            raise LivescopeError("tracker config: max_gap must be >= 1 (1 = no gaps)")
        if self.division_window < 1:  # (0 found no division at all)
            raise LivescopeError(
                "tracker config: division_window must be >= 1 (1 = no late daughters)"
            )


@dataclass
class _State:
    frame: int = -1
    next_id: int = 1
    parents: dict[int, int] = field(default_factory=dict)  # lineage: track -> parent (0 none)
    first_frame: dict[int, int] = field(default_factory=dict)
    last_frame: dict[int, int] = field(default_factory=dict)
    # every track id in the order the tracks started (the lineage dicts' order), only
    # ever appended to: snapshots share it (`_LineageView`)
    order: list[int] = field(default_factory=list)
    # the frames' (rows, cols) so far (None: none of known shape yet; not in the state)
    shape: tuple[int, int] | None = None
    # time points that had nothing to segment (`OnlineTracker.skip`), as runs [first, last]
    # in increasing order; those before every live track's recent frames are dropped
    skipped: list[list[int]] = field(default_factory=list)


class _LineageView(Mapping[int, int]):
    """One lineage column (track id -> value) as it was when a snapshot was taken.

    It reads the tracker's own dict, which goes on changing, instead of copying it
    (32 ms per snapshot at 300,000 past tracks, one per field on the worker's main
    thread): a track id is only ever added, and its value changes only while the
    track is in the track table (its last frame). So the snapshot's tracks are the
    first ``n`` of the ids in start order (``next_id`` is above all of them, below
    every later one), and a copy of the values that may still change is kept.
    Another thread may read it while the tracker updates (each dict or list lookup
    is atomic; no dict is iterated).
    """

    __slots__ = ("_live", "_n", "_next_id", "_order", "_values")

    def __init__(
        self, values: dict[int, int], order: list[int], next_id: int, live: dict[int, int]
    ) -> None:
        self._values, self._order, self._live = values, order, live
        self._n, self._next_id = len(order), next_id

    def __getitem__(self, tid: int) -> int:
        if tid in self._live:
            return self._live[tid]
        if tid not in self._values or not tid < self._next_id:  # (started after the snapshot)
            raise KeyError(tid)
        return self._values[tid]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order[: self._n])

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"

    def columns(self) -> list[list[int]]:
        """Return ``[track ids, values]`` in the order the tracks started (as a state has it)."""
        ids, live, values = self._order[: self._n], self._live, self._values
        return [ids, [live[k] if k in live else values[k] for k in ids]]


@dataclass(frozen=True, eq=False)
class TrackerSnapshot:
    """An `OnlineTracker`'s state at one frame (see `OnlineTracker.snapshot`).

    It stays as it was while the tracker goes on: ``tracks`` are copies, and the
    lineage mappings (track id -> parent, first and last frame) are read-only views
    that share the entries of ended tracks with the tracker.
    """

    config: TrackerConfig
    frame: int
    next_id: int
    tracks: dict[str, NDArray[Any]]
    parents: Mapping[int, int]
    first_frame: Mapping[int, int]
    last_frame: Mapping[int, int]
    skipped: tuple[tuple[int, int], ...] = ()
    """Runs ``(first, last)`` of time points that had nothing to segment (`OnlineTracker.skip`)
    that a gap may still span; ``frame`` is the last one tracked, these may go past it."""

    def state(self, *, ended: bool = True) -> dict[str, Any]:
        """Return it as `OnlineTracker.state` does (JSON-ready; `OnlineTracker.from_state`).

        ``ended=False``: with the lineage of the tracks in the table only, the rows
        that may still change. The others' never change again: a caller that saves
        a state per frame keeps them once, elsewhere (`ended_since`), and gives
        them back to `OnlineTracker.from_state` (``ended``); in the state they
        made it grow with every track the run ever started.
        """
        if ended:
            # lineage of every track ever started, as [track ids, values]
            lineage = [_lineage_columns(m) for m in (self.parents, self.first_frame,
                                                     self.last_frame)]  # fmt: skip
        else:
            ids = sorted(self.tracks["id"].tolist())  # (start order: ids are given in it)
            lineage = [[ids, [m[k] for k in ids]]
                       for m in (self.parents, self.first_frame, self.last_frame)]  # fmt: skip
        return {
            "version": 2,
            "config": asdict(self.config),
            "frame": self.frame,
            "next_id": self.next_id,
            "tracks": {c: a.tolist() for c, a in self.tracks.items()},
            "parents": lineage[0],
            "first_frame": lineage[1],
            "last_frame": lineage[2],
            "skipped": [list(r) for r in self.skipped],
        }

    def ended_since(self, before: TrackerSnapshot | None) -> list[list[int]]:
        """Return the lineage rows of the tracks that ended after ``before``, by track id.

        A row is ``[track id, parent, first frame, last frame]``, final: a track
        ended (lost for good, or divided) has left the table, and only a track in
        it changes its row (a division found late ends its parent earlier while
        the parent is still there). ``before``: an earlier snapshot of this
        tracker's lineage (of the tracker it was made from at a change of view,
        or of the state it was restored from), whose ended tracks the caller has
        already; None: every ended track. It costs the tracks in the two tables
        and those started in between, not the tracks that ended before.
        """
        if before is None:
            ids = set(self.parents)
        else:
            ids = set(before.tracks["id"].tolist())
            ids.update(k for k in range(before.next_id, self.next_id) if k in self.parents)
        ids.difference_update(self.tracks["id"].tolist())
        return [[k, self.parents[k], self.first_frame[k], self.last_frame[k]] for k in sorted(ids)]


def _lineage_columns(m: Mapping[int, int]) -> list[list[int]]:
    if isinstance(m, _LineageView):
        return m.columns()
    return [list(m), list(m.values())]
