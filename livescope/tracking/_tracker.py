"""Online (causal) cell tracking with gap closing, divisions and a lineage graph.

Each `OnlineTracker.update` takes one frame's instance labels and returns the
track id of every object in it. Linking is a linear assignment between the
tracks seen at most ``max_gap`` frames ago (``max_gap - 1`` missed) and the new objects over the
pairs inside each track's gate only (spatial gating with a k-d tree, one sparse
assignment), so the cost per frame grows about linearly with the number of cells.

A division is one parent and two daughters. After linking, an object that
found no track is a daughter when it appears within ``division_radii`` parent
radii of where a recent track was, and the pair it forms with that track's
current object is plausible (both smaller than the parent, apart from each
other). The division is placed at the frame after the parent's position closest
to the daughters' midpoint, up to ``division_window`` frames back: a daughter
that is first seen a few frames late still gets the right split, and the
`TrackUpdate` says which already-returned frames changed track ids. An object
touching the frame's edge is a cell entering the field, not a daughter, unless
its parent was near the edge too; a track that left through the edge can only
come back through it.

A time point that had nothing to segment (a nuclear channel imaged every few
time points, ``acquire_every``, and no virtual stain) is told with `OnlineTracker.skip`.
Gaps are then counted in time points that could have been segmented: ``max_gap``,
the gap cost per missed frame, the edge rule and ``division_window`` count the
frames on which a cell could have been seen and was not, so a cell seen on every
nuclear frame keeps its track. The motion (velocity, prediction, the gate's growth
with the gap) stays in time points: a cell moves as far in four of them whether or
not it was imaged. Frame numbers (spans, divisions, revisions, updates) are always
the real ones. A time point that had a nuclear image and was not given (a field
dropped) is a gap as before.

A frame that comes out of order or a second time is ignored with a warning in
the log: its objects get track id 0 and the tracks and lineage stay as they were.
A frame whose label image has another shape than the frames before (a new camera
ROI or binning) is refused: its pixel positions are not those of the tracks, so a
new view needs a new tracker (the pipeline's `FrameAnalyzer` starts one); one
that also comes out of order is ignored as such, changing nothing either. The
shape is not part of the saved state: a tracker resumed from one takes the shape
of its next frame.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import LivescopeError, write_atomic

from ._objects import ObjectTable, check_objects, measure_objects
from ._track_table import TrackTable, row_median
from ._tracker_state import TrackerConfig, TrackerSnapshot, _LineageView, _State
from ._updates import Division, Revision, TrackUpdate

logger = logging.getLogger(__name__)

__all__ = ["OnlineTracker", "TrackerConfig", "TrackerSnapshot"]

_MAX_FRAME = 2**62
"""Largest frame number `OnlineTracker.update` takes (its frames are int64 arrays)."""


def _skipped_runs(given: Any) -> list[list[int]]:
    """Read a state's ``skipped``: runs ``[first, last]`` of frames, increasing, apart, >= 0."""
    runs: list[list[int]] = []
    for run in given if isinstance(given, list) else [given]:
        ok = (
            isinstance(run, list)
            and len(run) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in run)
        )
        if not ok or not 0 <= run[0] <= run[1] <= _MAX_FRAME or (runs and run[0] <= runs[-1][1]):
            raise LivescopeError(
                f"tracker state: skipped holds {run!r}; it must be runs [first, last] of whole "
                "frames, 0 <= first <= last, in increasing order without overlaps"
            )
        runs.append([int(run[0]), int(run[1])])
    return runs


def _edge_distance(p: tuple[float, float], shape: tuple[int, int]) -> float:
    if shape == (0, 0):
        return math.inf
    return min(p[0], p[1], shape[0] - 1 - p[0], shape[1] - 1 - p[1])


class OnlineTracker:
    """Causal tracker: one call per frame, in frame order.

    >>> tr = OnlineTracker()
    >>> up = tr.update(labels_t0)        # doctest: +SKIP
    >>> up.mapping()                     # {label: track id}  # doctest: +SKIP
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._s = _State()
        self._keep = max(self.config.division_window + 1, 8)
        """Recent positions a track keeps (the division window and the area median)."""
        self._t = TrackTable(self._keep)
        self._new: list[dict[str, Any]] = []  # tracks started this frame
        self.gated_pairs = 0
        """Track-object pairs inside the gates in the last frame (diagnostic: the size of
        the sparse assignment problem, about linear in the number of cells)."""

    # ------------------------------------------------------------------ public

    @property
    def frame(self) -> int:
        """Index of the last frame given to `update` or `skip` (-1 before the first)."""
        s = self._s
        return max(s.frame, s.skipped[-1][1]) if s.skipped else s.frame

    @property
    def lineage(self) -> dict[int, int]:
        """Parent of every track ever started (0: none)."""
        return dict(self._s.parents)

    def spans(self) -> dict[int, tuple[int, int]]:
        """First and last frame of every track."""
        return {t: (self._s.first_frame[t], self._s.last_frame[t]) for t in self._s.first_frame}

    def update(
        self,
        labels: NDArray[np.integer[Any]] | ObjectTable,
        frame: int | None = None,
        image: NDArray[Any] | None = None,
    ) -> TrackUpdate:
        """Link one frame's objects to the tracks.

        Frames must come in increasing order: one that does not (out of order,
        or a second time) is ignored with a warning, and its update has track
        ids 0 and says why in ``ignored``. ``frame`` (default: the last one + 1)
        is a whole number >= 0 and <= 2**62 (an int, a numpy integer or a float
        such as 3.0); another raises `LivescopeError`, as does a label image (or
        `ObjectTable` ``shape``) of another shape than the frames before (see
        the module), before anything changes.
        """
        s, cfg, tb = self._s, self.config, self._t
        t = self._frame_number(frame)
        if isinstance(labels, ObjectTable):
            check_objects(labels)  # (a NaN position would break every later frame)
            objs = labels
        else:
            objs = measure_objects(labels, image)
        n = len(objs)
        if t <= self.frame:
            again = "a second time" if t == self.frame else "out of order"
            why = f"frame {t} came after frame {self.frame} ({again}): ignored"
            logger.warning("tracker: %s; tracks and lineage unchanged", why)
            return TrackUpdate(t, objs.labels.copy(), np.zeros(n, np.int64), ignored=why)
        shape = (int(objs.shape[0]), int(objs.shape[1]))  # (0, 0): not known, not checked
        if shape != (0, 0) and s.shape is not None and shape != s.shape:
            # (linked in pixels, a cell of the new view continued whichever track sat at
            # its coordinates in the old one, every edge test measured from the wrong edge)
            raise LivescopeError(
                f"tracker: frame {t} is {shape[0]}x{shape[1]} pixels, the frames before were "
                f"{s.shape[0]}x{s.shape[1]}: positions of two views cannot be linked; start a "
                "new OnlineTracker for the new view (or crop or pad the labels to the old shape)"
            )
        # candidates: tracks seen within max_gap frames that could have been segmented
        # (divided ones are gone already)
        cands = np.flatnonzero(self._frames_since(t, tb.last_seen) <= cfg.max_gap)
        orows, trows = self._link(cands, objs, t)  # object row -> track row
        ids = np.zeros(n, np.int64)
        ids[orows] = tb.id[trows]
        linked = np.zeros(n, bool)
        linked[orows] = True
        births = np.flatnonzero(~linked).tolist()
        divisions: list[Division] = []
        revisions: list[Revision] = []
        if cfg.divisions and births:
            births = self._divide(births, orows, trows, ids, objs, t, divisions, revisions)
        born = []
        for r in births:
            ids[r] = self._new_track(objs, r, t, parent=0)
            born.append(int(ids[r]))
        cont = ids[orows] == tb.id[trows]  # not taken over by a daughter
        self._extend(trows[cont], orows[cont], objs, t)
        # seen on the previous frame given (t - 1, or earlier after a jump), not on this one
        lost = tuple(tb.id[tb.last_seen == s.frame].tolist()) if s.frame >= 0 else ()
        # forget tracks lost for good or divided (their lineage stays), add the new ones
        tb.take(~tb.ended & (self._frames_since(t, tb.last_seen) <= cfg.max_gap))
        tb.append(self._new)
        self._new = []
        s.frame = t
        if shape != (0, 0):
            s.shape = shape
        self._forget_skipped()
        return TrackUpdate(t, objs.labels.copy(), ids, tuple(born), lost, tuple(divisions),
                           tuple(revisions))  # fmt: skip

    def skip(self, frame: int) -> bool:
        """Say that time point ``frame`` had nothing to segment (no nuclear image).

        Gaps are counted without it (see the module): a cell seen on the frames
        before and after it has missed no frame. Frames come in increasing order,
        as `update`'s: one at or before the last frame given is ignored (returns
        False); ``frame`` is checked as `update` checks it (`LivescopeError`).
        """
        t = self._frame_number(frame)
        if t <= self.frame:
            return False
        runs = self._s.skipped
        if runs and runs[-1][1] == t - 1:
            runs[-1] = [runs[-1][0], t]  # (a new list: snapshots hold tuples anyway)
        else:
            runs.append([t, t])
        self._forget_skipped()
        return True

    def _frame_number(self, frame: int | None) -> int:
        """``frame`` as an int (None: the next one), or `LivescopeError` if it is not one."""
        given: Any = frame  # (from a caller that may not be typed)
        # (3.0 too: a time index read back from JSON or a column of floats)
        whole = not isinstance(given, bool) and (
            isinstance(given, Integral)
            or (isinstance(given, Real) and math.isfinite(given) and float(given).is_integer())
        )
        if given is None:
            t = self.frame + 1
        elif not whole or given < 0:
            # (int() floored 2.7 to 2 without a word; -1 was "a second time" of no frame)
            raise LivescopeError(f"tracker: frame must be a whole number >= 0, got {given!r}")
        else:
            t = int(given)
        if t > _MAX_FRAME:
            # (numpy's int64 frame arrays failed with "Python int too large to convert to C
            # long" on this frame or the next; 2**62 leaves room for the gaps and -1 slots)
            got = t if given is None else given
            raise LivescopeError(
                f"tracker: frame must be a whole number >= 0 and at most 2**62, got {got!r}"
            )
        return t

    def _skipped_upto(self, x: NDArray[np.int64]) -> NDArray[np.int64]:
        """How many skipped time points there are at or before each frame of ``x``.

        Only differences of it mean anything (runs before the live tracks are dropped).
        """
        runs = self._s.skipped
        if not runs:
            return np.zeros(np.shape(x), np.int64)
        a = np.asarray(runs, np.int64)
        first, last = a[:, 0], a[:, 1]
        before = np.concatenate([[0], np.cumsum(last - first + 1)[:-1]])
        i = np.searchsorted(first, x, side="right") - 1
        k = np.maximum(i, 0)
        n = before[k] + np.minimum(x, last[k]) - first[k] + 1
        return np.where(i >= 0, n, 0).astype(np.int64)

    def _frames_since(self, t: int, since: NDArray[np.int64]) -> NDArray[np.int64]:
        """Count the frames from ``since`` to ``t`` that could have been segmented.

        ``since``: tracked frames before ``t``; ``t - since`` less the skipped time
        points between them.
        """
        since = np.asarray(since, np.int64)
        skipped = self._skipped_upto(np.asarray(t - 1, np.int64)) - self._skipped_upto(since)
        out: NDArray[np.int64] = (t - since) - skipped
        return out

    def _window_start(self, t: int, frames: int) -> int:
        """Return the first of the last ``frames`` segmentable frames before ``t`` (>= 0)."""
        upto_t = int(self._skipped_upto(np.asarray(t - 1)))
        first = t - frames
        while first > 0:  # (moves back over the skipped ones among them; once per run at most)
            wider = t - frames - (upto_t - int(self._skipped_upto(np.asarray(first - 1))))
            if wider == first:
                break
            first = wider
        return max(first, 0)

    def _forget_skipped(self) -> None:
        """Drop the skipped runs before every live track's oldest recent frame.

        No gap or window reaches them again. The last run stays while it is past the
        last tracked frame (`frame` is it).
        """
        s, hf = self._s, self._t.hf
        if not s.skipped:
            return
        known = hf[hf >= 0]
        oldest = int(known.min()) if known.size else s.frame + 1
        keep = [r for r in s.skipped if r[1] >= oldest]
        if not keep and s.skipped[-1][1] > s.frame:
            keep = [s.skipped[-1]]
        s.skipped = keep

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """Everything needed to resume (JSON-serialisable; lists, no per-track objects)."""
        return self.snapshot().state()

    def snapshot(self) -> TrackerSnapshot:
        """Take the tracker's state as it is now, cheaply (`TrackerSnapshot.state`).

        For a caller that must not wait for the JSON-ready form: the pipeline worker
        takes one per field on its way to the decisions and leaves the rest to its
        store thread, which may read it while this tracker updates. It costs the
        tracks in the table (some tens of microseconds for a hundred), not the
        tracks that ended before: their lineage is shared, not copied.
        """
        s = self._s
        # the last frames that may still change: those of the tracks still in the table
        live = {tid: s.last_frame[tid] for tid in self._t.id.tolist()}
        return TrackerSnapshot(
            self.config, s.frame, s.next_id, self._t.saved_columns(),
            _LineageView(s.parents, s.order, s.next_id, {}),
            _LineageView(s.first_frame, s.order, s.next_id, {}),
            _LineageView(s.last_frame, s.order, s.next_id, live),
            tuple((a, b) for a, b in s.skipped),
        )  # fmt: skip

    def save(self, path: Any) -> None:
        """Write `state` as JSON (atomically: a crash never leaves half a file)."""
        write_atomic(path, json.dumps(self.state()))

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], ended: Sequence[Sequence[int]] = ()
    ) -> OnlineTracker:
        """Make a tracker that continues where the one that wrote ``state`` stopped.

        ``ended``: the lineage rows (`TrackerSnapshot.ended_since`) of the tracks
        whose lineage the state left out (`TrackerSnapshot.state` with ``ended=False``).
        """
        try:
            return cls._from_state(state, ended)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise LivescopeError(f"tracker state is malformed: {what}") from exc

    def _check_ids(self) -> None:
        """Refuse a loaded state whose ids would clash (two cells, one track id)."""
        s, ids = self._s, self._t.id.tolist()
        if len(set(ids)) != len(ids):
            raise LivescopeError("tracker state: a track id is in the track table twice")
        if unknown := sorted(set(ids) - set(s.parents)):
            raise LivescopeError(f"tracker state: track {unknown[0]} has no lineage entry")
        if not 1 <= s.next_id < 2**63:
            # (0 is "no track" in every update and "no parent" in the lineage; an id
            # past int64 failed mid-frame, half the frame's tracks started)
            raise LivescopeError(
                f"tracker state: next_id {s.next_id} is not a track id (1 to 2**63 - 1)"
            )
        if s.parents and s.next_id <= max(s.parents):
            raise LivescopeError(
                f"tracker state: next_id {s.next_id} is not above the largest track id "
                f"{max(s.parents)} (new tracks would reuse ids)"
            )

    def _check_frames(self) -> None:
        """Refuse a loaded state whose frames disagree (its tracks could never link again)."""
        s, tb = self._s, self._t
        if s.frame < -1:
            raise LivescopeError(f"tracker state: frame {s.frame} (-1 before the first, else >= 0)")
        # (a track seen after the state's frame gave a negative gap on the next one: a NaN
        # gate, every cell a new track, without a word)
        if len(tb) and int(tb.last_seen.max()) > s.frame:
            r = int(np.argmax(tb.last_seen))
            raise LivescopeError(
                f"tracker state: track {int(tb.id[r])} was last seen on frame "
                f"{int(tb.last_seen[r])}, after the state's frame {s.frame}"
            )
        # (a tracked frame inside a skipped run: its gaps were counted one short)
        tracked = np.concatenate([[s.frame], tb.hf[tb.hf >= 0]]) if s.frame >= 0 else tb.hf[:0]
        on = self._skipped_upto(tracked) - self._skipped_upto(tracked - 1)
        if on.any():
            f = int(tracked[np.flatnonzero(on)[0]])
            raise LivescopeError(f"tracker state: frame {f} is both tracked and skipped")
        if not (set(s.parents) == set(s.first_frame) == set(s.last_frame)):
            # (a track without its span failed later, in `spans` or at its division)
            raise LivescopeError(
                "tracker state: parents, first_frame and last_frame name different tracks"
            )

    def _add_ended(self, ended: Sequence[Sequence[int]]) -> None:
        """Add the lineage rows of ended tracks (`from_state`); keep the start order."""
        if not ended:
            return
        s = self._s
        for row in ended:
            tid, parent, first, last = (int(v) for v in row)
            if tid in s.parents:
                raise LivescopeError(f"tracker state: track {tid}'s lineage is given twice")
            s.parents[tid], s.first_frame[tid], s.last_frame[tid] = parent, first, last
        order = sorted(s.parents)  # (ids are given in start order)
        s.parents, s.first_frame, s.last_frame = (
            {k: m[k] for k in order} for m in (s.parents, s.first_frame, s.last_frame)
        )

    @classmethod
    def _from_state(cls, state: Mapping[str, Any], ended: Sequence[Sequence[int]]) -> OnlineTracker:
        version = state.get("version")
        if version not in (1, 2):
            raise LivescopeError(f"tracker state version {version!r} is not 1 or 2")
        tr = cls(TrackerConfig(**state["config"]))
        s = tr._s
        s.frame = int(state["frame"])
        s.next_id = int(state["next_id"])
        s.skipped = _skipped_runs(state.get("skipped", []))  # (none before it was kept)
        if version == 2:
            tr._t.load_columns(state["tracks"])
            try:
                s.parents, s.first_frame, s.last_frame = (
                    {int(k): int(v) for k, v in zip(*state[key], strict=True)}
                    for key in ("parents", "first_frame", "last_frame")
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise LivescopeError(f"tracker state: bad lineage ({exc})") from exc
            tr._add_ended(ended)
            s.order = list(s.parents)
            tr._check_ids()
            tr._check_frames()
            return tr
        rows = []  # version 1: one dict per track
        for d in state["tracks"]:
            if d.get("ended"):
                continue  # divided: only its lineage matters
            pos = [tuple(p) for p in d["pos"]]
            if not pos or len(d["areas"]) != len(pos):
                raise LivescopeError(
                    f"tracker state: track {d.get('id')} needs as many areas as positions, "
                    f"at least one (got {len(pos)} positions, {len(d['areas'])} areas)"
                )
            rows.append({"id": int(d["id"]), "last_seen": int(d["last_seen"]),
                         "seen": int(d["seen"]), "border": bool(d["on_border"]),
                         "vel": tuple(d["velocity"]),
                         "frames": [int(p[0]) for p in pos], "pos": [p[1:] for p in pos],
                         "areas": [float(a) for a in d["areas"]]})  # fmt: skip
        tr._t.append(rows)
        # through the checks a version-2 table gets (a NaN position broke every later
        # frame; an area <= 0 or a wrong last_seen left the track unable to link)
        tr._t.load_columns(tr._t.saved_columns())
        s.parents = {int(k): int(v) for k, v in state["parents"].items()}
        s.first_frame = {int(k): int(v) for k, v in state["first_frame"].items()}
        s.last_frame = {int(k): int(v) for k, v in state["last_frame"].items()}
        tr._add_ended(ended)
        s.order = list(s.parents)
        tr._check_ids()
        tr._check_frames()
        return tr

    @classmethod
    def load(cls, path: Any) -> OnlineTracker:
        """Read a state written by `save`."""
        from pathlib import Path

        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LivescopeError(f"cannot read tracker state {path}: {exc}") from exc
        return cls.from_state(state)

    # ------------------------------------------------------------------ internals

    def _new_track(
        self,
        objs: ObjectTable,
        row: int,
        t: int,
        parent: int,
        before: tuple[list[int], list[tuple[float, float]], list[float]] = ([], [], []),
        born: int | None = None,
    ) -> int:
        """Start a track on object ``row``; return its id.

        ``before``: frames, positions and areas it already had (a late daughter). It
        joins the table at the end of the frame.
        """
        s = self._s
        tid = s.next_id
        s.next_id += 1
        cy, cx = (float(v) for v in objs.centroids[row])
        frames = [*before[0], t]
        self._new.append({
            "id": tid, "last_seen": t,
            "seen": len(frames), "frames": frames, "pos": [*before[1], (cy, cx)],
            "areas": [*before[2], float(objs.areas[row])],
            "border": bool(objs.on_border[row]) if objs.on_border is not None else False,
        })  # fmt: skip
        s.parents[tid] = parent
        s.order.append(tid)
        s.first_frame[tid] = t if born is None else born
        s.last_frame[tid] = t
        return tid

    def _extend(
        self, trows: NDArray[np.int64], orows: NDArray[np.int64], objs: ObjectTable, t: int
    ) -> None:
        """Continue track rows ``trows`` with objects ``orows`` (all at once)."""
        if trows.size == 0:
            return
        cfg, tb = self.config, self._t
        cen = np.asarray(objs.centroids, np.float64)[orows]
        gap = (t - tb.last_seen[trows]).astype(np.float64)[:, None]
        a = cfg.velocity_smoothing
        tb.vel[trows] = a * ((cen - tb.hp[trows, -1]) / gap) + (1 - a) * tb.vel[trows]
        # push the new position; the oldest of a full history drops out
        for h, new in ((tb.hf, t), (tb.hp, cen), (tb.ha, objs.areas[orows])):
            h[trows, :-1] = h[trows, 1:]
            h[trows, -1] = new
        tb.last_seen[trows] = t
        tb.seen[trows] += 1
        tb.border[trows] = (
            np.asarray(objs.on_border, bool)[orows] if objs.on_border is not None else False
        )
        tb.med[trows] = row_median(tb.ha[trows])
        self._s.last_frame.update(dict.fromkeys(tb.id[trows].tolist(), t))

    def _link(
        self, cands: NDArray[np.int64], objs: ObjectTable, t: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Gated linear assignment (sparse: only pairs inside the gates are considered).

        Return the linked object rows and their track rows.
        """
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import min_weight_full_bipartite_matching
        from scipy.spatial import cKDTree

        cfg, tb = self.config, self._t
        self.gated_pairs = 0
        none = np.zeros(0, np.int64), np.zeros(0, np.int64)
        if cands.size == 0 or len(objs) == 0:
            return none
        # every candidate at once: last and predicted position, gate, median area. The
        # motion is in time points (a cell moves on while it is not imaged), the misses in
        # frames that could have been segmented (`skip`)
        gap = (t - tb.last_seen[cands]).astype(np.float64)
        missed = self._frames_since(t, tb.last_seen[cands]) - 1
        last = tb.hp[cands, -1]
        pred = last + 0.5 * tb.vel[cands] * gap[:, None]
        median_area = tb.med[cands]
        gate = (cfg.gate_radii * np.sqrt(median_area / math.pi) + cfg.gate_px) * np.sqrt(gap)
        tree = cKDTree(objs.centroids)
        # Pairs within each track's gate of its last or predicted position, all found
        # around the midpoint of the two (gate + half their distance). One query per
        # group of tracks whose reaches are within a factor 1.4 of each other (so one
        # huge cell does not widen every other track's search).
        mid = 0.5 * (last + pred)
        reach = gate + 0.5 * np.hypot(*(pred - last).T)
        group = np.floor(2 * np.log2(reach)).astype(np.int64)
        found_i, found_j = [], []
        for g in np.unique(group):
            sel = np.flatnonzero(group == g)
            near = cKDTree(mid[sel]).sparse_distance_matrix(
                tree, float(reach[sel].max()), output_type="ndarray"
            )
            found_i.append(sel[near["i"]])
            found_j.append(near["j"])
        ei, ej = np.concatenate(found_i), np.concatenate(found_j)
        cen = np.asarray(objs.centroids, np.float64)[ej]
        d = np.minimum(np.hypot(*(cen - last[ei]).T), np.hypot(*(cen - pred[ei]).T)) / gate[ei]
        inside = d <= 1.0
        ei, ej, d = ei[inside], ej[inside], d[inside]
        if objs.on_border is not None:  # a track that left the field comes back through the edge
            left = tb.border[cands]
            ok = ~((missed[ei] > 0) & left[ei] & ~np.asarray(objs.on_border, bool)[ej])
            ei, ej, d = ei[ok], ej[ok], d[ok]
        if ei.size == 0:
            return none
        da = np.log(np.maximum(np.asarray(objs.areas, np.float64)[ej], 1.0)) - np.log(
            np.maximum(median_area[ei], 1.0)
        )
        cost = d * d + cfg.area_weight * da * da + cfg.gap_cost * missed[ei]
        self.gated_pairs = int(ei.size)
        # One sparse assignment over every gated pair (a block per connected group would
        # give the same answer). Rows: tracks, then objects; columns: objects, then tracks.
        # A track may end (its own column), an object may start a track (its own row), and
        # for each pair the mirrored entry keeps a full matching possible. Adding 1 to every
        # weight changes no choice (every full matching has the same number of entries)
        # and keeps zero-cost entries from being read as missing.
        ti, ri = np.unique(ei, return_inverse=True)
        oj, cj = np.unique(ej, return_inverse=True)
        a, b = ti.size, oj.size
        rows = np.concatenate([ri, np.arange(a), a + np.arange(b), a + cj])
        cols = np.concatenate([cj, b + np.arange(a), np.arange(b), b + ri])
        weight = np.concatenate([cost, np.full(a + b, cfg.no_link_cost), np.zeros(ri.size)])
        m = csr_matrix((weight + 1.0, (rows, cols)), shape=(a + b, b + a))
        r, c = min_weight_full_bipartite_matching(m)
        link = (r < a) & (c < b)
        return oj[c[link]].astype(np.int64), cands[ti[r[link]]].astype(np.int64)

    def _divide(
        self,
        births: list[int],
        orows: NDArray[np.int64],
        trows: NDArray[np.int64],
        ids: NDArray[np.int64],
        objs: ObjectTable,
        t: int,
        divisions: list[Division],
        revisions: list[Revision],
    ) -> list[int]:
        """Attach unlinked objects to recent tracks as daughters; return the rest."""
        cfg, tb = self.config, self._t
        obj_of = np.full(len(tb), -1, np.int64)  # track row -> object it was linked to
        obj_of[trows] = orows
        alive = self._frames_since(t, tb.last_seen) <= cfg.max_gap
        par = np.flatnonzero((tb.seen >= cfg.min_parent_age) & alive)
        # a parent is near a birth if one of its positions in the window is: within its
        # reach plus its span (farthest such position from its last one) of its last position.
        # The window is division_window frames that could have been segmented (`skip`)
        first = self._window_start(t, cfg.division_window)  # (>= 0; -1 marks an empty slot)
        hp = tb.hp[par]
        in_window = (tb.hf[par] >= first) & (tb.hf[par] < t)
        if not in_window.any():
            return births
        span = np.where(in_window, np.hypot(*np.moveaxis(hp - hp[:, -1:], -1, 0)), 0.0).max(1)
        radius = np.sqrt(tb.med / math.pi)
        bound = cfg.division_radii * radius[par] + cfg.gate_px + span
        last_pos = hp[:, -1]
        near = self._near_parents(births, objs, last_pos, bound)
        shape = objs.shape
        proposals: list[tuple[float, int, int, int, int]] = []  # score, birth, row, sib, split
        for j, near_j in zip(births, near, strict=True):
            border_birth = objs.on_border is not None and bool(objs.on_border[j])
            yj, xj = (float(v) for v in objs.centroids[j])
            for k in par[near_j].tolist():
                r, parent_area = float(radius[k]), float(tb.med[k])
                last = (float(tb.hp[k, -1, 0]), float(tb.hp[k, -1, 1]))
                if border_birth and (
                    _edge_distance(last, shape) > 2 * r + cfg.gate_px
                    or objs.areas[j] < cfg.border_daughter_area_min * parent_area
                ):
                    continue  # a cell entering the field, not a daughter
                reach = cfg.division_radii * r + cfg.gate_px
                recent = tb.recent(k, first, t)
                if not recent:
                    continue
                if min(math.hypot(yj - py, xj - px) for _, py, px in recent) > reach:
                    continue
                if objs.areas[j] > cfg.daughter_area_max * parent_area:
                    continue
                sib = int(obj_of[k])
                if sib >= 0:  # parent continued into a sibling this frame
                    ys, xs = (float(v) for v in objs.centroids[sib])
                    if objs.areas[sib] > cfg.daughter_area_max * parent_area:
                        continue
                    if self._too_close(objs, sib, j, r):
                        continue
                    my, mx = (ys + yj) / 2, (xs + xj) / 2
                    dists = [(math.hypot(my - py, mx - px), -f) for f, py, px in recent]
                    score, neg_f = min(dists)  # ties: the latest frame
                    f_best = -neg_f
                    # move the split back only when a past position fits clearly better
                    latest = dists[-1][0]
                    split = f_best + 1 if score + cfg.split_margin * r < latest else t
                    score = min(score, latest)
                else:  # parent lost this frame: needs a second daughter among the births
                    score, split = math.hypot(yj - last[0], xj - last[1]), t
                proposals.append((score / r, j, k, sib, split))
        proposals.sort()
        used_births: set[int] = set()
        used_parents: set[int] = set()
        pending_lost: dict[int, list[int]] = {}
        for _, j, k, sib, split in proposals:
            if j in used_births or k in used_parents:
                continue
            if sib >= 0:
                self._split(k, sib, j, split, t, objs, ids, divisions, revisions)
                used_births.add(j)
                used_parents.add(k)
            else:
                # a birth held for this parent may have gone to another since: pair the two
                # best still free (one taken kept the parent from ever dividing this frame)
                pending = pending_lost.setdefault(k, [])
                pending[:] = [b for b in pending if b not in used_births]
                if pending and self._too_close(objs, pending[0], j, float(radius[k])):
                    continue  # (as a sibling is: two halves of one cell, not daughters)
                pending.append(j)
                if len(pending) == 2:
                    j1, j2 = pending
                    pid = int(tb.id[k])
                    tb.ended[k] = True
                    ids[j1] = self._new_track(objs, j1, t, parent=pid)
                    ids[j2] = self._new_track(objs, j2, t, parent=pid)
                    divisions.append(Division(pid, (int(ids[j1]), int(ids[j2])), t, t))
                    used_births |= {j1, j2}
                    used_parents.add(k)
        return [j for j in births if j not in used_births]

    def _too_close(self, objs: ObjectTable, a: int, b: int, radius: float) -> bool:
        """Whether objects ``a`` and ``b`` are too close to be a parent's two daughters."""
        (ya, xa), (yb, xb) = (objs.centroids[a], objs.centroids[b])
        return math.hypot(float(ya - yb), float(xa - xb)) < (
            self.config.daughter_separation_min * radius
        )

    @staticmethod
    def _near_parents(
        births: list[int],
        objs: ObjectTable,
        last_pos: NDArray[np.float64],
        bound: NDArray[np.float64],
    ) -> list[NDArray[np.int64]]:
        """For each birth, the parents (indices into ``last_pos``) within their ``bound`` of it.

        One search per group of parents whose bounds are within a factor 1.4 of each
        other, as in `_link`: with one search as wide as the largest bound, one huge
        object (a debris blob) made every birth a candidate daughter of every parent.
        """
        from scipy.spatial import cKDTree

        cen = np.asarray(objs.centroids, np.float64)[births]
        btree = cKDTree(cen)
        group = np.floor(2 * np.log2(bound)).astype(np.int64)
        found_b, found_p = [], []
        for g in np.unique(group):
            sel = np.flatnonzero(group == g)
            # (a hair wider than the group's bound: the test below is the one that counts,
            # the tree's distances may differ from it in the last bit)
            reach = float(bound[sel].max()) * (1 + 1e-9)
            pairs = cKDTree(last_pos[sel]).sparse_distance_matrix(
                btree, reach, output_type="ndarray"
            )
            found_p.append(sel[pairs["i"]])
            found_b.append(pairs["j"])
        b, p = np.concatenate(found_b), np.concatenate(found_p)
        d = np.hypot(last_pos[p, 0] - cen[b, 0], last_pos[p, 1] - cen[b, 1])
        b, p = b[d <= bound[p]], p[d <= bound[p]]
        order = np.lexsort((p, b))
        b, p = b[order], p[order].astype(np.int64)
        return np.split(p, np.searchsorted(b, np.arange(1, len(births))))

    def _split(
        self,
        k: int,
        sib: int,
        j: int,
        split: int,
        t: int,
        objs: ObjectTable,
        ids: NDArray[np.int64],
        divisions: list[Division],
        revisions: list[Revision],
    ) -> None:
        """End the parent in row ``k`` at ``split - 1``: ``sib`` and ``j`` are its daughters.

        ``sib`` is the object the parent was linked to this frame; its track takes over
        the parent's frames ``split..t-1``.
        """
        s, tb = self._s, self._t
        pid = int(tb.id[k])
        split = max(split, s.first_frame[pid] + 1)
        # the sibling's track takes over the parent's frames split..t-1
        kept = tb.hf[k] >= split
        before = (tb.hf[k][kept].tolist(), [tuple(p) for p in tb.hp[k][kept].tolist()],
                  tb.ha[k][kept].tolist())  # fmt: skip
        # spans are frames the track was seen on (a gap may precede or follow the split)
        born = before[0][0] if before[0] else t
        d1 = self._new_track(objs, sib, t, parent=pid, before=before, born=born)
        if split < t:
            revisions.append(Revision(pid, d1, split, t - 1))
        earlier = tb.hf[k][(tb.hf[k] >= 0) & (tb.hf[k] < split)]
        s.last_frame[pid] = int(earlier.max()) if earlier.size else split - 1
        tb.ended[k] = True
        d2 = self._new_track(objs, j, t, parent=pid)
        ids[sib], ids[j] = d1, d2
        divisions.append(Division(pid, (d1, d2), split, t))
