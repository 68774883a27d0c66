"""Online (causal) cell tracking with gap closing, divisions and a lineage graph.

Each `OnlineTracker.update` takes one frame's instance labels and returns the
track id of every object in it. Linking is a linear assignment between the
tracks alive (or lost for at most ``max_gap`` frames) and the new objects, solved
separately on each connected group of gated candidates (spatial gating with a
k-d tree), so the cost per frame grows about linearly with the number of cells.

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

A frame that comes out of order or a second time is ignored with a warning in
the log: its objects get track id 0 and the tracks and lineage stay as they were.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import LivescopeError, write_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "Division",
    "ObjectTable",
    "OnlineTracker",
    "Revision",
    "TrackUpdate",
    "TrackerConfig",
    "measure_objects",
]

_BIG = 1e9


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
    """Frames a track may be missed and still be continued (gap closing)."""
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
        for name in ("gate_radii", "gate_px", "no_link_cost", "division_radii"):
            if getattr(self, name) <= 0:
                raise LivescopeError(f"tracker config: {name} must be > 0")
        if self.max_gap < 1:
            raise LivescopeError("tracker config: max_gap must be >= 1 (1 = no gaps)")


@dataclass(frozen=True)
class ObjectTable:
    """Per-object measurements of one label image (rows follow ``labels``)."""

    labels: NDArray[np.int64]
    centroids: NDArray[np.float64]  # (n, 2) row, col
    areas: NDArray[np.float64]
    intensities: NDArray[np.float64] | None = None
    on_border: NDArray[np.bool_] | None = None  # touches the edge of the frame
    shape: tuple[int, int] = (0, 0)  # of the frame

    def __len__(self) -> int:
        return int(self.labels.size)


def measure_objects(
    labels: NDArray[np.integer[Any]], image: NDArray[Any] | None = None
) -> ObjectTable:
    """Label, centroid and area (and mean intensity, given ``image``) of each object.

    Vectorised (one pass of bincount over the pixels), whatever the number of objects.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise LivescopeError(f"tracking needs 2-D label images, got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise LivescopeError(f"tracking needs integer label images, got dtype {lab.dtype}")
    if lab.size and int(lab.min()) < 0:
        raise LivescopeError("label images must not hold negative labels")
    flat = lab.ravel()
    idx = np.flatnonzero(flat)  # foreground only: cheap on sparse frames
    ids = flat[idx].astype(np.int64, copy=False)
    n = int(ids.max()) + 1 if ids.size else 1
    area = np.bincount(ids, minlength=n).astype(np.float64)
    rows, cols = np.divmod(idx, lab.shape[1])
    sr = np.bincount(ids, weights=rows, minlength=n)
    sc = np.bincount(ids, weights=cols, minlength=n)
    present = np.flatnonzero(area > 0)
    present = present[present != 0]
    a = area[present]
    cent = (
        np.stack([sr[present] / a, sc[present] / a], axis=1) if present.size else np.zeros((0, 2))
    )
    edge = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]).astype(np.int64)
    border = np.isin(present, edge)
    inten = None
    if image is not None:
        img = np.asarray(image)
        if img.shape != lab.shape:
            raise LivescopeError(f"image shape {img.shape} differs from labels {lab.shape}")
        si = np.bincount(ids, weights=img.ravel()[idx].astype(np.float64), minlength=n)
        inten = si[present] / a
    return ObjectTable(
        present.astype(np.int64), cent, a, inten, border, (lab.shape[0], lab.shape[1])
    )


def _edge_distance(p: tuple[float, float], shape: tuple[int, int]) -> float:
    if shape == (0, 0):
        return math.inf
    return min(p[0], p[1], shape[0] - 1 - p[0], shape[1] - 1 - p[1])


@dataclass
class _Track:
    id: int
    parent: int
    born: int
    last_seen: int
    pos: list[tuple[int, float, float]]  # recent (frame, row, col)
    areas: list[float]  # recent areas
    velocity: tuple[float, float] = (0.0, 0.0)
    seen: int = 1
    ended: bool = False  # divided (or ended for good)
    on_border: bool = False  # its last object touched the frame's edge

    @property
    def radius(self) -> float:
        return math.sqrt(self.median_area / math.pi)

    @property
    def median_area(self) -> float:
        return float(statistics.median(self.areas))  # a few values: faster than numpy

    @property
    def last(self) -> tuple[float, float]:
        return self.pos[-1][1], self.pos[-1][2]


def _track_state(tr: _Track) -> dict[str, Any]:
    """Return a track's fields, lists copied (``asdict`` deep-copies every tuple: 10x slower)."""
    return {
        "id": tr.id, "parent": tr.parent, "born": tr.born, "last_seen": tr.last_seen,
        "pos": list(tr.pos), "areas": list(tr.areas), "velocity": tr.velocity, "seen": tr.seen,
        "ended": tr.ended, "on_border": tr.on_border,
    }  # fmt: skip


@dataclass(frozen=True)
class Division:
    """``parent`` ends at ``frame - 1``; ``daughters`` begin at ``frame`` or later."""

    parent: int
    daughters: tuple[int, int]
    frame: int
    detected_at: int


@dataclass(frozen=True)
class Revision:
    """In frames ``first..last`` (already returned), track ``old`` is now ``new``."""

    old: int
    new: int
    first: int
    last: int


@dataclass(frozen=True)
class TrackUpdate:
    """What one frame gave: a track id per object, and lineage events."""

    frame: int
    labels: NDArray[np.int64]
    track_ids: NDArray[np.int64]
    born: tuple[int, ...] = ()
    lost: tuple[int, ...] = ()
    divisions: tuple[Division, ...] = ()
    revisions: tuple[Revision, ...] = ()
    ignored: str = ""
    """Why this frame was not tracked (its track ids are 0); empty when it was."""

    def mapping(self) -> dict[int, int]:
        """Label -> track id."""
        return dict(zip(self.labels.tolist(), self.track_ids.tolist(), strict=True))


@dataclass
class _State:
    frame: int = -1
    next_id: int = 1
    tracks: dict[int, _Track] = field(default_factory=dict)
    parents: dict[int, int] = field(default_factory=dict)  # lineage: track -> parent (0 none)
    first_frame: dict[int, int] = field(default_factory=dict)
    last_frame: dict[int, int] = field(default_factory=dict)


class OnlineTracker:
    """Causal tracker: one call per frame, in frame order.

    >>> tr = OnlineTracker()
    >>> up = tr.update(labels_t0)        # doctest: +SKIP
    >>> up.mapping()                     # {label: track id}  # doctest: +SKIP
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._s = _State()
        self.largest_block = 0
        """Tracks + objects in the largest assignment block of the last frame (diagnostic)."""

    # ------------------------------------------------------------------ public

    @property
    def frame(self) -> int:
        """Index of the last frame given (-1 before the first)."""
        return self._s.frame

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
        ids 0 and says why in ``ignored``.
        """
        s, cfg = self._s, self.config
        t = s.frame + 1 if frame is None else int(frame)
        objs = labels if isinstance(labels, ObjectTable) else measure_objects(labels, image)
        n = len(objs)
        if t <= s.frame:
            again = "a second time" if t == s.frame else "out of order"
            why = f"frame {t} came after frame {s.frame} ({again}): ignored"
            logger.warning("tracker: %s; tracks and lineage unchanged", why)
            return TrackUpdate(t, objs.labels.copy(), np.zeros(n, np.int64), ignored=why)
        # candidates: tracks seen within max_gap frames that have not divided
        cands = [tr for tr in s.tracks.values() if not tr.ended and t - tr.last_seen <= cfg.max_gap]
        self.largest_block = 0
        assign = self._link(cands, objs, t)  # object row -> track id
        ids = np.zeros(n, np.int64)
        for row, tid in assign.items():
            ids[row] = tid
        births = [r for r in range(n) if r not in assign]
        divisions: list[Division] = []
        revisions: list[Revision] = []
        if cfg.divisions and births:
            births = self._divide(births, assign, ids, objs, t, divisions, revisions)
        born = []
        for r in births:
            ids[r] = self._new_track(objs, r, t, parent=0).id
            born.append(int(ids[r]))
        for row, tid in assign.items():
            if ids[row] == tid:
                self._extend(s.tracks[tid], objs, row, t)
        lost = tuple(tr.id for tr in cands if tr.last_seen < t and t - tr.last_seen == 1)
        # forget tracks lost for good (their lineage stays)
        for tid in [k for k, tr in s.tracks.items() if tr.ended or t - tr.last_seen > cfg.max_gap]:
            del s.tracks[tid]
        s.frame = t
        return TrackUpdate(t, objs.labels.copy(), ids, tuple(born), lost, tuple(divisions),
                           tuple(revisions))  # fmt: skip

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """Everything needed to resume (JSON-serialisable)."""
        s = self._s
        return {
            "version": 1,
            "config": asdict(self.config),
            "frame": s.frame,
            "next_id": s.next_id,
            "tracks": [_track_state(tr) for tr in s.tracks.values()],
            "parents": {str(k): v for k, v in s.parents.items()},
            "first_frame": {str(k): v for k, v in s.first_frame.items()},
            "last_frame": {str(k): v for k, v in s.last_frame.items()},
        }

    def save(self, path: Any) -> None:
        """Write `state` as JSON (atomically: a crash never leaves half a file)."""
        write_atomic(path, json.dumps(self.state()))

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> OnlineTracker:
        """Make a tracker that continues where the one that wrote ``state`` stopped."""
        if state.get("version") != 1:
            raise LivescopeError(f"tracker state version {state.get('version')!r} is not 1")
        tr = cls(TrackerConfig(**state["config"]))
        s = tr._s
        s.frame = int(state["frame"])
        s.next_id = int(state["next_id"])
        for d in state["tracks"]:
            d = dict(d)
            d["pos"] = [tuple(p) for p in d["pos"]]
            d["velocity"] = tuple(d["velocity"])
            s.tracks[int(d["id"])] = _Track(**d)
        s.parents = {int(k): int(v) for k, v in state["parents"].items()}
        s.first_frame = {int(k): int(v) for k, v in state["first_frame"].items()}
        s.last_frame = {int(k): int(v) for k, v in state["last_frame"].items()}
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

    def _new_track(self, objs: ObjectTable, row: int, t: int, parent: int) -> _Track:
        s = self._s
        cy, cx = objs.centroids[row]
        tr = _Track(s.next_id, parent, t, t, [(t, float(cy), float(cx))],
                    [float(objs.areas[row])])  # fmt: skip
        tr.on_border = bool(objs.on_border[row]) if objs.on_border is not None else False
        s.next_id += 1
        s.tracks[tr.id] = tr
        s.parents[tr.id] = parent
        s.first_frame[tr.id] = t
        s.last_frame[tr.id] = t
        return tr

    def _extend(self, tr: _Track, objs: ObjectTable, row: int, t: int) -> None:
        cfg = self.config
        cy, cx = (float(v) for v in objs.centroids[row])
        ly, lx = tr.last
        gap = t - tr.last_seen
        a = cfg.velocity_smoothing
        vy, vx = (cy - ly) / gap, (cx - lx) / gap
        tr.velocity = (a * vy + (1 - a) * tr.velocity[0], a * vx + (1 - a) * tr.velocity[1])
        tr.pos.append((t, cy, cx))
        tr.areas.append(float(objs.areas[row]))
        keep = max(cfg.division_window + 1, 8)
        del tr.pos[:-keep]
        del tr.areas[:-keep]
        tr.last_seen = t
        tr.seen += 1
        tr.on_border = bool(objs.on_border[row]) if objs.on_border is not None else False
        self._s.last_frame[tr.id] = t

    def _link(self, cands: list[_Track], objs: ObjectTable, t: int) -> dict[int, int]:
        """Gated linear assignment, solved per connected group of candidates."""
        from scipy.optimize import linear_sum_assignment
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components
        from scipy.spatial import cKDTree

        cfg = self.config
        if not cands or len(objs) == 0:
            return {}
        # every candidate at once: last and predicted position, gate, log median area
        gap = np.array([t - tr.last_seen for tr in cands], np.float64)
        last = np.array([tr.last for tr in cands], np.float64)
        vel = np.array([tr.velocity for tr in cands], np.float64)
        pred = last + 0.5 * vel * gap[:, None]
        median_area = np.array([tr.median_area for tr in cands], np.float64)
        gate = (cfg.gate_radii * np.sqrt(median_area / math.pi) + cfg.gate_px) * np.sqrt(gap)
        tree = cKDTree(objs.centroids)
        nt, no = len(cands), len(objs)
        codes = []
        for at in (last, pred):
            near = tree.query_ball_point(at, gate)
            counts = np.fromiter((len(x) for x in near), np.int64, count=nt)
            objs_near = np.fromiter(itertools.chain.from_iterable(near), np.int64)
            codes.append(np.repeat(np.arange(nt, dtype=np.int64), counts) * no + objs_near)
        code = np.unique(np.concatenate(codes))
        if code.size == 0:
            return {}
        ei, ej = code // no, code % no
        if objs.on_border is not None:  # a track that left the field comes back through the edge
            left = np.array([tr.on_border for tr in cands], bool)
            ok = ~((gap[ei] > 1) & left[ei] & ~np.asarray(objs.on_border, bool)[ej])
            ei, ej = ei[ok], ej[ok]
        if ei.size == 0:
            return {}
        cen = np.asarray(objs.centroids, np.float64)[ej]
        d = np.minimum(np.hypot(*(cen - last[ei]).T), np.hypot(*(cen - pred[ei]).T)) / gate[ei]
        da = np.log(np.maximum(np.asarray(objs.areas, np.float64)[ej], 1.0)) - np.log(
            np.maximum(median_area[ei], 1.0)
        )
        cost = d * d + cfg.area_weight * da * da + cfg.gap_cost * (gap[ei] - 1)
        graph = coo_matrix((np.ones(ei.size), (ei, nt + ej)), shape=(nt + no, nt + no))
        _, comp = connected_components(graph, directed=False)
        edge_comp = comp[ei]
        per_comp = np.bincount(edge_comp)
        out: dict[int, int] = {}
        # one track and one object: linking costs `cost`, not linking 2 x no_link_cost
        single = per_comp[edge_comp] == 1
        linked = single & (cost < 2 * cfg.no_link_cost)
        for i, j in zip(ei[linked].tolist(), ej[linked].tolist(), strict=True):
            out[j] = cands[i].id
        if single.any():
            self.largest_block = 2
        order = np.argsort(edge_comp[~single], kind="stable")
        ks_all = np.flatnonzero(~single)[order]
        bounds = np.flatnonzero(np.diff(edge_comp[ks_all])) + 1
        for ks in np.split(ks_all, bounds) if ks_all.size else []:
            ti = sorted(set(ei[ks].tolist()))
            oj = sorted(set(ej[ks].tolist()))
            ri = {v: r for r, v in enumerate(ti)}
            cj = {v: c for c, v in enumerate(oj)}
            a, b = len(ti), len(oj)
            self.largest_block = max(self.largest_block, a + b)
            m = np.full((a + b, b + a), _BIG)
            for k in ks.tolist():
                i, j = int(ei[k]), int(ej[k])
                m[ri[i], cj[j]] = cost[k]
                m[a + cj[j], b + ri[i]] = 0.0  # lower-right: keeps the matching complete
            m[np.arange(a), b + np.arange(a)] = cfg.no_link_cost  # track ends
            m[a + np.arange(b), np.arange(b)] = cfg.no_link_cost  # object starts a track
            rows, cols = linear_sum_assignment(m)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                if r < a and c < b and m[r, c] < _BIG:
                    out[oj[c]] = cands[ti[r]].id
        return out

    def _divide(
        self,
        births: list[int],
        assign: dict[int, int],
        ids: NDArray[np.int64],
        objs: ObjectTable,
        t: int,
        divisions: list[Division],
        revisions: list[Revision],
    ) -> list[int]:
        """Attach unlinked objects to recent tracks as daughters; return the rest."""
        cfg, s = self.config, self._s
        row_of = {tid: row for row, tid in assign.items()}
        from scipy.spatial import cKDTree

        proposals: list[tuple[float, int, int, int, int]] = []  # score, birth, parent, sib, split
        parents = [
            tr
            for tr in s.tracks.values()
            if not tr.ended and tr.seen >= cfg.min_parent_age and t - tr.last_seen <= cfg.max_gap
        ]
        if not parents:
            return births
        tree = cKDTree(np.array([tr.last for tr in parents]))
        reach_max = max(
            cfg.division_radii * tr.radius
            + cfg.gate_px
            + max(math.hypot(p[1] - tr.last[0], p[2] - tr.last[1]) for p in tr.pos)
            for tr in parents
        )
        shape = objs.shape
        for j in births:
            border_birth = objs.on_border is not None and bool(objs.on_border[j])
            yj, xj = objs.centroids[j]
            for k in tree.query_ball_point(objs.centroids[j], reach_max):
                tr = parents[k]
                r, parent_area = tr.radius, tr.median_area
                if border_birth and (
                    _edge_distance(tr.last, shape) > 2 * r + cfg.gate_px
                    or objs.areas[j] < cfg.border_daughter_area_min * parent_area
                ):
                    continue  # a cell entering the field, not a daughter
                reach = cfg.division_radii * r + cfg.gate_px
                recent = [p for p in tr.pos if p[0] >= t - cfg.division_window and p[0] < t]
                if not recent:
                    continue
                if min(math.hypot(yj - py, xj - px) for _, py, px in recent) > reach:
                    continue
                if objs.areas[j] > cfg.daughter_area_max * parent_area:
                    continue
                sib = row_of.get(tr.id, -1)
                if sib >= 0:  # parent continued into a sibling this frame
                    ys, xs = objs.centroids[sib]
                    if objs.areas[sib] > cfg.daughter_area_max * parent_area:
                        continue
                    if math.hypot(ys - yj, xs - xj) < cfg.daughter_separation_min * r:
                        continue
                    my, mx = (ys + yj) / 2, (xs + xj) / 2
                    dists = [(math.hypot(my - py, mx - px), -f) for f, py, px in recent]
                    score, neg_f = min(dists)  # ties: the latest frame
                    f_best = -neg_f
                    # move the split back only when a past position fits clearly better
                    last = dists[-1][0]
                    split = f_best + 1 if score + cfg.split_margin * r < last else t
                    score = min(score, last)
                else:  # parent lost this frame: needs a second daughter among the births
                    score, split = math.hypot(yj - tr.last[0], xj - tr.last[1]), t
                proposals.append((score / r, j, tr.id, sib, split))
        proposals.sort()
        used_births: set[int] = set()
        used_parents: set[int] = set()
        pending_lost: dict[int, list[tuple[int, int]]] = {}
        for _, j, pid, sib, split in proposals:
            if j in used_births or pid in used_parents:
                continue
            if sib >= 0:
                self._split(pid, sib, j, split, t, objs, ids, divisions, revisions)
                used_births.add(j)
                used_parents.add(pid)
            else:
                pending_lost.setdefault(pid, []).append((j, split))
                if len(pending_lost[pid]) == 2:
                    (j1, _), (j2, _) = pending_lost[pid]
                    if j1 in used_births or j2 in used_births:
                        continue
                    parent = s.tracks[pid]
                    parent.ended = True
                    d1 = self._new_track(objs, j1, t, parent=pid)
                    d2 = self._new_track(objs, j2, t, parent=pid)
                    ids[j1], ids[j2] = d1.id, d2.id
                    divisions.append(Division(pid, (d1.id, d2.id), t, t))
                    used_births |= {j1, j2}
                    used_parents.add(pid)
        return [j for j in births if j not in used_births]

    def _split(
        self,
        pid: int,
        sib: int,
        j: int,
        split: int,
        t: int,
        objs: ObjectTable,
        ids: NDArray[np.int64],
        divisions: list[Division],
        revisions: list[Revision],
    ) -> None:
        """Parent ``pid`` ends at ``split - 1``; its continuation and object ``j`` are daughters."""
        s = self._s
        parent = s.tracks[pid]
        split = max(split, s.first_frame[pid] + 1)
        d1 = self._new_track(objs, sib, t, parent=pid)
        # the sibling's track takes over the parent's frames split..t-1
        kept = [p for p in parent.pos if p[0] >= split]
        d1.pos = [*kept, *d1.pos]
        d1.areas = parent.areas[len(parent.pos) - len(kept) :] + d1.areas
        d1.born = split
        d1.seen = len(d1.pos)
        s.first_frame[d1.id] = split
        if split < t:
            revisions.append(Revision(pid, d1.id, split, t - 1))
        s.last_frame[pid] = split - 1
        parent.ended = True
        d2 = self._new_track(objs, j, t, parent=pid)
        ids[sib], ids[j] = d1.id, d2.id
        divisions.append(Division(pid, (d1.id, d2.id), split, t))
