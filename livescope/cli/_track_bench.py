"""Benchmarks of the tracker: scaling with cell count, and peers on the same input."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import LivescopeError, data_root
from livescope.tracking import OnlineTracker, TrackedSequence, evaluate_tracking, track_sequence

__all__ = ["bench_scaling", "compare_peers_gowt1", "strip_ids", "write_result"]


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


def _disks(n_cells: int, n_frames: int, seed: int) -> list[NDArray[np.int32]]:
    """Drifting disks (radius 5 px) on a field sized for ~8% cover."""
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(n_cells * 80 / 0.08))
    pos = rng.uniform(10, side - 10, (n_cells, 2))
    yy, xx = np.mgrid[-5:6, -5:6]
    disk = yy**2 + xx**2 <= 25
    frames = []
    for _ in range(n_frames):
        lab = np.zeros((side, side), np.int32)
        for k, (y, x) in enumerate(pos.astype(int)):
            y0, x0 = np.clip(y - 5, 0, side - 11), np.clip(x - 5, 0, side - 11)
            lab[y0 : y0 + 11, x0 : x0 + 11][disk] = k + 1
        frames.append(lab)
        pos = np.clip(pos + rng.normal(0, 1.5, pos.shape), 10, side - 10)
    return frames


def bench_scaling(cells: Sequence[int], frames: int = 20) -> dict[str, Any]:
    """Tracker ms per frame (object measurement included) at each cell count."""
    rows = []
    for n in sorted(cells):
        if n < 1:
            raise LivescopeError(f"cell count must be >= 1, got {n}")
        labs = _disks(n, frames, seed=n)
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


def compare_peers_gowt1(seed: int = 0) -> dict[str, Any]:
    """Ours, laptrack and trackpy on GOWT1 01's ground-truth markers with ids removed."""
    from livescope.record import read_ctc
    from livescope.tracking._peers import PEERS, peer_track

    root = data_root()
    gt = root / "ctc-Fluo-N2DH-GOWT1" / "01_GT" if root else None
    if gt is None or not (gt / "TRA" / "man_track.txt").is_file():
        return {"skipped": "ctc-Fluo-N2DH-GOWT1 not found (set LIVESCOPE_DATA)"}
    frames, _ = read_ctc(gt, kind="gt")
    inp = strip_ids(frames, seed)
    tracker = OnlineTracker()
    # peers get one search radius: the median of our per-cell gates on frame 0
    radii = np.sqrt(np.bincount(inp[0].ravel())[1:] / np.pi)
    radius = float(np.median(radii[radii > 0]))
    gate = tracker.config.gate_radii * radius + tracker.config.gate_px
    out: dict[str, Any] = {"search_radius_px": round(gate, 1), "max_gap": tracker.config.max_gap}
    runs: dict[str, Any] = {"livescope": lambda: track_sequence(inp, tracker=tracker)}
    for name in PEERS:
        runs[name] = lambda name=name: peer_track(
            name, inp, max_distance=gate, max_gap=tracker.config.max_gap
        )
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in runs.items():
            try:
                t0 = time.perf_counter()
                seq = run()
                ms = 1000 * (time.perf_counter() - t0) / len(inp)
            except LivescopeError as exc:
                out[name] = {"skipped": str(exc)}
                continue
            r = evaluate_tracking(write_result(seq, Path(tmp) / name), gt)
            out[name] = {k: r[k] for k in ("tra", "det", "lnk", "div_precision", "div_recall",
                                           "div_f1", "divisions_found", "tracks")}  # fmt: skip
            out[name]["ms_per_frame"] = round(ms, 2)
    return out
