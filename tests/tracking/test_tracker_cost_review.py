"""Costs of the tracker that grew with a long run or one odd object, and the exactness kept."""

from __future__ import annotations

import copy
import json
import math
import tracemalloc
from typing import Any

import numpy as np
import pytest

from livescope.tracking import ObjectTable, OnlineTracker

SHAPE = (512, 512)


def _table(cells: list[tuple[float, float, float]]) -> ObjectTable:
    """Objects at (row, col) with an area each, none on the edge, labelled 1..n."""
    n = len(cells)
    arr = np.array(cells, np.float64).reshape(n, 3)
    return ObjectTable(
        labels=np.arange(1, n + 1, dtype=np.int64),
        centroids=arr[:, :2].copy(),
        areas=arr[:, 2].copy(),
        on_border=np.zeros(n, bool),
        shape=SHAPE,
    )


def _scene(seed: int, frames: int) -> list[ObjectTable]:
    """Cells that drift, divide (two daughters of ~45 %), vanish and appear, at random."""
    rng = np.random.default_rng(seed)
    cells = [(float(y), float(x), 80.0) for y, x in rng.uniform(40, 470, (30, 2))]
    out = []
    for _ in range(frames):
        nxt = []
        for y, x, a in cells:
            y, x = y + rng.normal(0, 1.0), x + rng.normal(0, 1.0)
            u = rng.random()
            if u < 0.06 and a > 60:  # divides
                r = math.sqrt(a / math.pi)
                nxt += [(y - 0.8 * r, x, 0.45 * a), (y + 0.8 * r, x, 0.45 * a)]
            elif u < 0.09:  # vanishes (its track is lost for good)
                continue
            else:
                nxt.append((y, x, min(a * 1.08, 80.0)))  # daughters grow back
        if rng.random() < 0.5:  # a cell appears
            y, x = rng.uniform(40, 470, 2)
            nxt.append((float(y), float(x), 80.0))
        cells = [(min(max(y, 20.0), 490.0), min(max(x, 20.0), 490.0), a) for y, x, a in nxt]
        out.append(_table(cells))
    return out


@pytest.mark.parametrize("restored", [False, True], ids=["fresh", "restored"])
def test_a_snapshot_stays_as_it_was_while_tracks_divide_end_and_start(restored: bool) -> None:
    """Lineage shared between snapshots and the tracker never shows a later change."""
    frames = _scene(3, 24)
    tr = OnlineTracker()
    for t, f in enumerate(frames[:4]):
        tr.update(f, t)
    if restored:  # (its order of tracks comes from the state, not from its own updates)
        tr = OnlineTracker.from_state(json.loads(json.dumps(tr.state())))
    taken: list[tuple[int, Any, dict[str, Any]]] = []
    divided = 0
    for t in range(4, len(frames)):
        if t % 3 == 1:
            taken.append((t, tr.snapshot(), copy.deepcopy(tr.state())))
        divided += len(tr.update(frames[t], t).divisions)
    assert divided >= 3  # (the scene is worth it: divisions after the snapshots)
    assert len(tr.lineage) > len(taken[0][2]["parents"][0])
    for t, snap, then in taken:
        assert snap.state() == then
        for key in ("parents", "first_frame", "last_frame"):
            want = dict(zip(*then[key], strict=True))
            got = getattr(snap, key)
            assert dict(got) == want
            assert len(got) == len(want)
            assert [got.get(k) for k in tr.lineage] == [want.get(k) for k in tr.lineage]
        # from the snapshot's state a tracker goes on exactly as from the copy
        a, b = OnlineTracker.from_state(snap.state()), OnlineTracker.from_state(then)
        for u, f in enumerate(frames[t:], t):
            assert a.update(f, u).mapping() == b.update(f, u).mapping()
        assert a.state() == b.state() == tr.state()


def _tracker_with_past(past: int) -> OnlineTracker:
    """A tracker with a hundred live tracks and ``past`` ended ones in its lineage."""
    rng = np.random.default_rng(1)
    scene = _table([(float(y), float(x), 80.0) for y, x in rng.uniform(40, 470, (100, 2))])
    tr = OnlineTracker()
    for t in range(3):
        tr.update(scene, t)
    state = tr.state()
    old = list(range(state["next_id"], state["next_id"] + past))
    for key, value in (("parents", 0), ("first_frame", 0), ("last_frame", 1)):
        ids, values = state[key]
        state[key] = [old + ids, [value] * past + values]
    state["next_id"] += past
    tr = OnlineTracker.from_state(state)
    tr.update(scene, 3)
    return tr


def _snapshot_bytes(tr: OnlineTracker) -> int:
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        snap = tr.snapshot()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    assert len(snap.parents) == len(tr.lineage)
    return peak - before


def test_a_snapshot_costs_the_live_tracks_not_every_track_that_ever_was() -> None:
    """One snapshot per field, on the worker's main thread: it copied every past track.

    (Memory a snapshot allocates, not time: with 50,000 past tracks the old copies of
    the three lineage dicts took megabytes.)
    """
    few, many = _tracker_with_past(0), _tracker_with_past(50_000)
    assert _snapshot_bytes(many) < 2 * _snapshot_bytes(few) + 16_384


def _brute_force(cen: np.ndarray, last_pos: np.ndarray, bound: np.ndarray) -> list[list[int]]:
    d = np.hypot(last_pos[None, :, 0] - cen[:, None, 0], last_pos[None, :, 1] - cen[:, None, 1])
    return [np.flatnonzero(row).tolist() for row in d <= bound[None, :]]


@pytest.mark.parametrize("huge", [False, True], ids=["cells", "cells-and-a-blob"])
def test_daughters_are_searched_near_each_parent_within_its_own_reach(huge: bool) -> None:
    """A 200,000 px² blob made every birth search near every parent; the pairs stay exact."""
    rng = np.random.default_rng(7)
    n_par, n_birth = 400, 300
    last_pos = rng.uniform(0, 1024, (n_par, 2))
    # reaches over several groups: division_radii * radius + gate_px + span
    areas = rng.uniform(20, 2000, n_par)
    if huge:  # in the middle: every birth is within its reach
        areas[17], last_pos[17] = 200_000.0, (512.0, 512.0)
    bound = 4.0 * np.sqrt(areas / math.pi) + 10.0 + rng.uniform(0, 15, n_par)
    # births: some at random, some just inside or outside a parent's bound
    cen = rng.uniform(0, 1024, (n_birth, 2))
    k = rng.integers(0, n_par, 100)
    ang = rng.uniform(0, 2 * math.pi, 100)
    dist = bound[k] * rng.choice([0.999, 1.001], 100)
    cen[:100] = last_pos[k] + np.stack([np.cos(ang), np.sin(ang)], 1) * dist[:, None]
    objs = ObjectTable(
        labels=np.arange(1, n_birth + 11, dtype=np.int64),
        centroids=np.concatenate([rng.uniform(0, 1024, (10, 2)), cen]),  # rows 0-9: linked
        areas=np.full(n_birth + 10, 50.0),
        shape=(1024, 1024),
    )
    births = list(range(10, n_birth + 10))
    near = OnlineTracker._near_parents(births, objs, last_pos, bound)
    want = _brute_force(cen, last_pos, bound)
    assert [sorted(p.tolist()) for p in near] == want
    if huge:
        assert all(17 in w for w in want)
    assert sum(map(len, want)) > n_birth  # (some births have several candidate parents)


def test_one_birth_and_one_parent_group_give_one_list() -> None:
    objs = _table([(100.0, 100.0, 50.0)])
    near = OnlineTracker._near_parents(
        [0], objs, np.array([[100.0, 130.0], [100.0, 300.0]]), np.array([40.0, 40.0])
    )
    assert [p.tolist() for p in near] == [[0]]
