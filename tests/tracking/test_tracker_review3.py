"""The online tracker (review 3): resuming exactly, determinism, config and state limits."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from livescope.schema import LivescopeError
from livescope.tracking import ObjectTable, OnlineTracker, TrackerConfig, TrackUpdate

SHAPE = (160, 160)


def _table(cells: list[tuple[float, float, float]]) -> ObjectTable:
    """Objects (row, col, area) as the segmentation would give them, labels 1..n."""
    n = len(cells)
    cen = np.array([c[:2] for c in cells], float).reshape(n, 2)
    area = np.array([c[2] for c in cells], float)
    edge = np.array([min(y, x, SHAPE[0] - 1 - y, SHAPE[1] - 1 - x) < 4 for y, x, _ in cells], bool)
    return ObjectTable(np.arange(1, n + 1, dtype=np.int64), cen, area, None, edge, SHAPE)


def _scenario(seed: int, frames: int = 24) -> list[tuple[int, ObjectTable]]:
    """Drifting cells that divide, are missed, leave through the edge; empty frames, jumps."""
    rng = np.random.default_rng(seed)
    cells = [[rng.uniform(5, 155), rng.uniform(5, 155), rng.uniform(60, 150), 0.0]
             for _ in range(14)]  # fmt: skip
    out, t = [], 0
    for k in range(frames):
        grown = []
        for c in cells:
            c[0] = float(np.clip(c[0] + rng.normal(0, 2), 0, SHAPE[0] - 1))
            c[1] = float(np.clip(c[1] + rng.normal(0, 2), 0, SHAPE[1] - 1))
            c[3] += 1
            if c[3] > 4 and rng.random() < 0.06:  # divides: two halves, a radius apart
                d, ang = math.sqrt(c[2] / math.pi), rng.uniform(0, math.pi)
                for s in (-1, 1):
                    y = float(np.clip(c[0] + s * d * math.cos(ang), 0, SHAPE[0] - 1))
                    x = float(np.clip(c[1] + s * d * math.sin(ang), 0, SHAPE[1] - 1))
                    grown.append([y, x, c[2] / 2, 0.0])
            else:
                c[2] *= 1.02
                grown.append(c)
        cells = grown[:60]
        seen = [] if k % 9 == 8 else [c for c in cells if rng.random() > 0.1]
        out.append((t, _table([(c[0], c[1], c[2]) for c in seen])))
        t += 1 + (int(rng.integers(1, 3)) if rng.random() < 0.08 else 0)
    return out


def _as_tuple(up: TrackUpdate) -> tuple[object, ...]:
    return (up.frame, up.labels.tolist(), up.track_ids.tolist(), up.born, up.lost,
            up.divisions, up.revisions, up.ignored)  # fmt: skip


def test_a_tracker_resumed_at_any_frame_goes_on_exactly_as_the_one_saved() -> None:
    """Save after every frame, resume from the JSON, feed both the same frames: same
    updates (ids, births, losses, divisions, revisions), same state and spans."""
    seq = _scenario(11)
    whole = OnlineTracker()
    expected = [_as_tuple(whole.update(o, frame=t)) for t, o in seq]
    assert any(u[5] for u in expected)  # divisions are in it
    assert any(u[6] for u in expected)  # and late daughters' revisions
    assert any(not u[2] for u in expected)  # and empty frames
    for cut in range(1, len(seq), 2):
        saved = OnlineTracker()
        for t, o in seq[:cut]:
            saved.update(o, frame=t)
        resumed = OnlineTracker.from_state(json.loads(json.dumps(saved.state())))
        for t, o in seq[cut:]:
            a, b = saved.update(o, frame=t), resumed.update(o, frame=t)
            assert _as_tuple(a) == _as_tuple(b)
        assert [_as_tuple(saved.update(o, frame=t)) for t, o in seq[:1]] == [
            _as_tuple(resumed.update(o, frame=t)) for t, o in seq[:1]
        ]  # (an old frame again: both ignore it)
        assert resumed.state() == saved.state()
        assert list(resumed.spans().items()) == list(saved.spans().items())
        assert resumed.lineage == saved.lineage == whole.lineage


def test_ids_go_on_after_frames_without_objects() -> None:
    tr = OnlineTracker()
    two = _table([(40, 40, 100), (100, 100, 100)])
    first = [tr.update(two).mapping() for _ in range(3)][-1]
    assert tr.update(_table([])).lost == (1, 2)
    assert tr.update(two).mapping() == first  # a gap of one frame is closed
    for _ in range(5):
        tr.update(_table([]))
    again = tr.update(two).mapping()
    assert sorted(again.values()) == [3, 4]  # new tracks, ids not reused


_DETERMINISM = """
import hashlib, sys
sys.path.insert(0, {root!r})
from tests.tracking.test_tracker_review3 import _scenario, _as_tuple
from livescope.tracking import OnlineTracker
h = hashlib.sha256()
for seed in (3, 4):
    tr = OnlineTracker()
    for t, o in _scenario(seed):
        h.update(repr(_as_tuple(tr.update(o, frame=t))).encode())
    h.update(repr(tr.state()).encode())
print(h.hexdigest())
"""


def test_the_same_frames_give_the_same_ids_whatever_the_hash_seed() -> None:
    """Two processes with other string hashes (set and dict orders): same updates, same state."""
    root = str(Path(__file__).resolve().parents[2])  # (the repository: tests.tracking...)
    script = _DETERMINISM.format(root=root)
    digests = set()
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, timeout=60, check=True, cwd=root)  # fmt: skip
        digests.add(run.stdout.strip())
    assert len(digests) == 1


@pytest.mark.parametrize(
    "field", ["gate_radii", "gate_px", "no_link_cost", "division_radii", "area_weight", "gap_cost"]
)
def test_an_infinite_config_value_is_refused(field: str) -> None:
    """(no_link_cost=inf failed every frame with scipy's "no full matching exists";
    gap_cost or area_weight inf gave NaN costs; an infinite gate paired every track with
    every object.)"""
    with pytest.raises(LivescopeError, match=f"tracker config: {field} must be .*finite"):
        TrackerConfig(**{field: math.inf})  # type: ignore[arg-type]


@pytest.mark.parametrize("next_id", [0, -5, 2**63])
def test_a_state_whose_next_id_is_no_track_id_is_refused(next_id: int) -> None:
    """next_id 0 gave a cell track id 0 ("no track", "no parent"); 2**63 failed mid-frame."""
    tr = OnlineTracker()
    tr.update(_table([]))
    state = {**tr.state(), "next_id": next_id}
    with pytest.raises(LivescopeError, match=f"next_id {next_id} is not a track id"):
        OnlineTracker.from_state(state)


def test_a_lost_parent_divides_into_the_free_births_when_its_nearest_went_to_another() -> None:
    """Cell A is missed as it divides; three small objects appear around it. The nearest
    (j1) is a better daughter of B, which divides beside it: A's daughters are the other
    two. (j1 stayed held for A, and A never divided: both became tracks without a parent.)"""
    cfg = TrackerConfig(gate_px=2.0, gate_radii=0.5)  # (births beyond A's gate stay births)
    tr = OnlineTracker(cfg)
    for _ in range(5):
        ids = tr.update(_table([(50, 50, 200), (50, 90, 200)])).track_ids.tolist()
    a, b = ids
    # sib of B (continues it), j1 near A, j2 and j3 farther from A and out of B's reach
    up = tr.update(_table([(50, 92, 100), (50, 60, 100), (35, 50, 100), (50, 34, 100)]))
    got = up.mapping()
    assert {d.parent: set(d.daughters) for d in up.divisions} == {
        b: {got[1], got[2]},
        a: {got[3], got[4]},
    }
    assert up.born == ()
    assert tr.lineage[got[3]] == tr.lineage[got[4]] == a
