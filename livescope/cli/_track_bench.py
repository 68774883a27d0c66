"""Benchmarks of the tracker: scaling with cell count, and peers on the same input."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import LivescopeError, require_data_root
from livescope.tracking import (
    ObjectTable,
    OnlineTracker,
    TrackedSequence,
    TrackerConfig,
    evaluate_tracking,
    track_sequence,
)

__all__ = [
    "bench_scaling",
    "compare_peers_gowt1",
    "compare_peers_simulated",
    "strip_ids",
    "write_result",
]


def strip_ids(frames: Sequence[NDArray[Any]], seed: int = 0) -> list[NDArray[np.int64]]:
    """Shuffle the object ids of every frame (to test tracking alone, from scratch)."""
    rng = np.random.default_rng(seed)
    out = []
    for m in frames:
        m = np.asarray(m).astype(np.int64)
        ids = np.unique(m)
        ids = ids[ids > 0]
        lut = np.zeros(int(m.max()) + 1, np.int64)
        lut[ids] = rng.permutation(ids.size) + 1
        out.append(lut[m])
    return out


def write_result(seq: TrackedSequence, folder: Path) -> Path:
    """Write a tracked sequence as a CTC result folder."""
    from livescope.record import relabel_for_ctc, write_ctc

    masks, tracks, _ = relabel_for_ctc(seq.id_frames, seq.parents)
    return write_ctc(folder, masks, tracks, kind="res")


def _moving_cells(n_cells: int, n_frames: int, seed: int) -> list[NDArray[np.int32]]:
    """Disks of radius 4-6 px on persistent random walks, ~8 % of a square field.

    Label ``k + 1`` is cell ``k`` in every frame (the truth); a disk painted over by
    its neighbours is missing from that frame, as an undetected cell would be.
    """
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(n_cells * 80 / 0.08))
    lo, hi = 10.0, side - 10.0
    pos = rng.uniform(lo, hi, (n_cells, 2))
    vel = rng.normal(0, 1.0, (n_cells, 2))
    radius = rng.integers(4, 7, n_cells)
    stamps = {}
    for r in (4, 5, 6):
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        stamps[r] = yy**2 + xx**2 <= r * r
    frames = []
    for _ in range(n_frames):
        lab = np.zeros((side, side), np.int32)
        centres = np.rint(pos).astype(int).tolist()
        for k, ((y, x), r) in enumerate(zip(centres, radius.tolist(), strict=True)):
            lab[y - r : y + r + 1, x - r : x + r + 1][stamps[r]] = k + 1
        frames.append(lab)
        vel = 0.8 * vel + rng.normal(0, 0.6, vel.shape)  # ~1.4 px per frame, persistent
        pos += vel
        for bad, edge in ((pos < lo, lo), (pos > hi, hi)):  # bounce off the field's margin
            pos[bad] = 2 * edge - pos[bad]
            vel[bad] *= -1
    return frames


def bench_scaling(cells: Sequence[int], frames: int = 20) -> dict[str, Any]:
    """Tracker ms per frame (object measurement included) at each cell count.

    The first frame of each count is not timed (it only starts tracks), so
    ``frames`` must be at least 2.

    Raises
    ------
    LivescopeError
        for no cell counts, a count < 1 or ``frames`` < 2, before anything runs.

    """
    if not cells or frames < 2:
        raise LivescopeError(
            f"need >= 1 cell count and >= 2 frames, got {len(cells)} counts and {frames} frames"
        )
    rows = []
    for n in sorted(cells):
        if n < 1:
            raise LivescopeError(f"cell count must be >= 1, got {n}")
        labs = _moving_cells(n, frames, seed=n)
        tr = OnlineTracker()
        ms = []
        for lab in labs:
            t0 = time.perf_counter()
            tr.update(lab)
            ms.append(1000 * (time.perf_counter() - t0))
        med = float(np.median(ms[1:]))
        rows.append({"cells": n, "frame_px": labs[0].shape[0], "ms_per_frame": round(med, 2),
                     "us_per_cell": round(1000 * med / n, 2)})  # fmt: skip
    ratio = rows[-1]["us_per_cell"] / rows[0]["us_per_cell"] if len(rows) > 1 else 1.0
    return {"rows": rows, "us_per_cell_ratio_largest_vs_smallest": round(ratio, 3)}


def _truth(inp: Sequence[NDArray[Any]], labs: Sequence[NDArray[Any]]) -> list[dict[int, int]]:
    """Per frame: input label -> true cell id (the two images label the same pixels)."""
    out = []
    for a, b in zip(inp, labs, strict=True):
        fg = b > 0
        pairs = np.unique(np.stack([a[fg], b[fg]]).astype(np.int64), axis=1)
        out.append(dict(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True)))
    return out


def _links(maps: Sequence[Mapping[int, int]], truth: Sequence[Mapping[int, int]]) -> set[Any]:
    """Each track's consecutive appearances, as pairs of (frame, true cell id) nodes."""
    last: dict[int, tuple[int, int]] = {}
    out = set()
    for f, m in enumerate(maps):
        for label, tid in m.items():
            node = (f, truth[f][label])
            if tid in last:
                out.add((last[tid], node))
            last[tid] = node
    return out


def _longest_link(
    objs: Sequence[ObjectTable], truth: Sequence[Mapping[int, int]], links: set[Any]
) -> float:
    """Longest distance a true cell's centroid moves along one of the true ``links``."""
    at = {}
    for f, o in enumerate(objs):
        for lab, (y, x) in zip(o.labels.tolist(), o.centroids.tolist(), strict=True):
            at[(f, truth[f][lab])] = (y, x)
    return max((math.dist(at[a], at[b]) for a, b in links), default=0.0)


def compare_peers_simulated(
    cells: int = 2000, frames: int = 20, seed: int = 0, repeats: int = 3
) -> dict[str, Any]:
    """Ours, laptrack and trackpy on the same detections of ``cells`` moving cells.

    Speed is linking alone, on objects measured once for all three (ours also
    from label images, measurement included: its live latency), the median of up
    to ``repeats`` timed runs each after one untimed warm-up. Links are scored
    against the truth: precision and recall of consecutive appearances of a track.
    """
    if cells < 1 or frames < 3 or repeats < 1:
        raise LivescopeError(
            f"need >= 1 cell, >= 3 frames and >= 1 repeat, got {cells}, {frames} and {repeats}"
        )
    from livescope.tracking import measure_objects
    from livescope.tracking._peers import PEERS, objects_table, peer_track

    labs = _moving_cells(cells, frames, seed)
    inp = strip_ids(labs, seed)
    truth = _truth(inp, labs)
    true_links = _links(truth, truth)  # the true cell id is the track
    t0 = time.perf_counter()
    objs = [measure_objects(lab) for lab in inp]
    measure_ms = 1000 * (time.perf_counter() - t0) / frames
    n_obj = sum(len(o) for o in objs)
    cfg = OnlineTracker().config
    # the peers' search radius: the longest true link (gaps included), rounded up: the
    # tightest radius that can make every link, fastest and most accurate for them (ours
    # uses its own gates)
    gate = float(np.ceil(_longest_link(objs, truth, true_links)))

    def score(maps: Sequence[Mapping[int, int]], seconds: float, tracks: int) -> dict[str, Any]:
        found = _links(maps, truth)
        hit = len(found & true_links)
        return {"seconds": round(seconds, 4), "objects_per_s": round(n_obj / seconds),
                "ms_per_frame": round(1000 * seconds / frames, 2),
                "link_precision": round(hit / max(len(found), 1), 5),
                "link_recall": round(hit / max(len(true_links), 1), 5),
                "tracks": tracks}  # fmt: skip

    out: dict[str, Any] = {"cells": cells, "frames": frames, "frame_px": labs[0].shape[0],
                           "objects_per_frame": round(n_obj / frames, 1),
                           "peer_search_radius_px": gate, "max_gap": cfg.max_gap,
                           "measure_ms_per_frame": round(measure_ms, 2)}  # fmt: skip
    # every tracker runs once on the first frames before it is timed (imports, caches),
    # then up to `repeats` times (while a run takes under 5 s): the median run counts
    warm = inp[:3]
    track_sequence(warm)

    def ours_linking() -> list[float]:  # one update per frame on the measured objects
        tracker, ms = OnlineTracker(), []
        for o in objs:
            t1 = time.perf_counter()
            tracker.update(o)
            ms.append(1000 * (time.perf_counter() - t1))
        return ms

    runs = [ours_linking()]
    while len(runs) < repeats and sum(runs[-1]) < 5000:
        runs.append(ours_linking())
    # ours again from the label images (measurement included), for the lineage-aware result
    t1 = time.perf_counter()
    seq = track_sequence(inp)
    live_ms = 1000 * (time.perf_counter() - t1) / frames
    ours = score(seq.maps, float(np.median([sum(r) for r in runs])) / 1000, seq.n_tracks)
    per_frame = [m for r in runs for m in r[1:]]  # the first frame only starts tracks
    ours |= {"runs": len(runs), "ms_per_frame_p50": round(float(np.median(per_frame)), 2),
             "ms_per_frame_p99": round(float(np.percentile(per_frame, 99)), 2),
             "ms_per_frame_with_measurement": round(live_ms, 2)}  # fmt: skip
    out["livescope"] = ours
    try:
        table = objects_table(objs)
    except LivescopeError as exc:
        table, out["peers_skipped"] = None, str(exc)
    fastest = 0
    for name in PEERS if table is not None else ():
        try:
            peer_track(name, warm, max_distance=gate, max_gap=cfg.max_gap)
            secs: list[float] = []
            while not secs or (len(secs) < repeats and secs[-1] < 5.0):
                t1 = time.perf_counter()
                peer = peer_track(name, inp, max_distance=gate, max_gap=cfg.max_gap, table=table)
                secs.append(time.perf_counter() - t1)
        except LivescopeError as exc:
            out[name] = {"skipped": str(exc)}
            continue
        out[name] = score(peer.maps, float(np.median(secs)), peer.n_tracks) | {"runs": len(secs)}
        fastest = max(fastest, out[name]["objects_per_s"])
    if fastest:
        out["objects_per_s_vs_faster_peer"] = round(ours["objects_per_s"] / fastest, 2)
    return out


def compare_peers_gowt1(seed: int = 0) -> dict[str, Any]:
    """Ours, laptrack and trackpy on GOWT1 01's ground-truth markers with ids removed.

    Timings include measuring the objects from the label images, for all three.
    """
    from livescope.record import read_ctc
    from livescope.tracking._peers import PEERS, peer_track

    try:
        root = require_data_root()
    except LivescopeError as exc:  # (a part of the bench: skipped, saying why)
        return {"skipped": str(exc)}
    gt = root / "ctc-Fluo-N2DH-GOWT1" / "01_GT"
    if not (gt / "TRA" / "man_track.txt").is_file():
        return {"skipped": f"{gt} holds no TRA/man_track.txt"}
    frames, _ = read_ctc(gt, kind="gt")
    inp = strip_ids(frames, seed)
    n_obj = sum(int(np.count_nonzero(np.bincount(f.ravel())[1:])) for f in inp)
    cfg = TrackerConfig()
    # peers get one search radius: the median of our per-cell gates on frame 0
    radii = np.sqrt(np.bincount(inp[0].ravel())[1:] / np.pi)
    radius = float(np.median(radii[radii > 0]))
    gate = cfg.gate_radii * radius + cfg.gate_px
    out: dict[str, Any] = {"search_radius_px": round(gate, 1), "max_gap": cfg.max_gap}
    runs: dict[str, Any] = {"livescope": lambda f: track_sequence(f, config=cfg)}
    for name in PEERS:
        runs[name] = lambda f, name=name: peer_track(
            name, f, max_distance=gate, max_gap=cfg.max_gap
        )
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in runs.items():
            try:
                run(inp[:3])  # imports and caches, before the timed run
                t0 = time.perf_counter()
                seq = run(inp)
                sec = time.perf_counter() - t0
            except LivescopeError as exc:
                out[name] = {"skipped": str(exc)}
                continue
            r = evaluate_tracking(write_result(seq, Path(tmp) / name), gt)
            out[name] = {k: r[k] for k in ("tra", "det", "lnk", "div_precision", "div_recall",
                                           "div_f1", "divisions_found", "tracks")}  # fmt: skip
            out[name] |= {"seconds": round(sec, 4), "objects_per_s": round(n_obj / sec),
                          "ms_per_frame": round(1000 * sec / len(inp), 2)}  # fmt: skip
    return out
