"""The online tracker: linking, gaps, divisions, state, scaling, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from livescope.schema import LivescopeError
from livescope.tracking import (
    OnlineTracker,
    TrackerConfig,
    measure_objects,
    track_sequence,
)


def disks(shape: tuple[int, int], cells: list[tuple[float, float, float]]) -> np.ndarray:
    """Label image with one disk (row, col, radius) per cell, labels in a shuffled order."""
    lab = np.zeros(shape, np.int32)
    order = np.random.default_rng(len(cells)).permutation(len(cells))
    for k, (y, x, r) in zip(order, cells, strict=True):
        y0, y1 = max(0, int(y - r) - 1), min(shape[0], int(y + r) + 2)
        x0, x1 = max(0, int(x - r) - 1), min(shape[1], int(x + r) + 2)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        lab[y0:y1, x0:x1][(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = k + 1
    return lab


def test_measure_objects() -> None:
    lab = np.zeros((20, 30), np.uint16)
    lab[2:6, 3:7] = 5  # 16 px, centre (3.5, 4.5)
    lab[10:20, 25:30] = 2  # touches the bottom and right edges
    img = np.full(lab.shape, 3.0)
    img[lab == 5] = 10.0
    o = measure_objects(lab, img)
    assert o.labels.tolist() == [2, 5]
    assert o.areas.tolist() == [50.0, 16.0]
    assert o.centroids[1].tolist() == [3.5, 4.5]
    assert o.on_border is not None
    assert o.on_border.tolist() == [True, False]
    assert o.intensities is not None
    assert o.intensities.tolist() == [3.0, 10.0]
    assert len(measure_objects(np.zeros((8, 8), np.int32))) == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((4, 4, 2), np.int32), "2-D"),
        (np.zeros((4, 4), np.float32), "integer"),
        (np.full((4, 4), -1, np.int32), "negative"),
    ],
)
def test_bad_labels_are_refused(bad: np.ndarray, message: str) -> None:
    with pytest.raises(LivescopeError, match=message):
        OnlineTracker().update(bad)


def test_frames_out_of_order_or_twice_are_ignored_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tr = OnlineTracker()
    cells = [(10.0, 10.0, 4.0), (30.0, 30.0, 4.0)]
    first = tr.update(disks((48, 48), cells), frame=3)
    state = tr.state()
    with caplog.at_level("WARNING", logger="livescope.tracking"):
        again = tr.update(disks((48, 48), cells), frame=3)
        back = tr.update(disks((48, 48), cells[:1]), frame=1)
    assert "frame 3 came after frame 3 (a second time): ignored" in caplog.text
    assert "frame 1 came after frame 3 (out of order): ignored" in caplog.text
    assert again.ignored
    assert back.ignored
    assert not first.ignored
    assert again.track_ids.tolist() == [0, 0]
    assert back.track_ids.tolist() == [0]
    assert tr.state() == state  # tracks and lineage untouched
    assert tr.update(disks((48, 48), cells), frame=4).mapping() == first.mapping()


def test_tracker_config_is_checked() -> None:
    with pytest.raises(LivescopeError, match="gate_radii"):
        TrackerConfig(gate_radii=0)


def test_moving_cells_keep_their_ids() -> None:
    rng = np.random.default_rng(1)
    pos = rng.uniform(20, 180, (12, 2))
    # keep cells apart so that ground truth is unambiguous
    pos = np.array([[20 + 40 * (k % 4), 30 + 50 * (k // 4)] for k in range(12)], float)
    tr = OnlineTracker()
    first: dict[tuple[int, int], int] = {}
    for t in range(15):
        lab = disks((200, 200), [(y, x, 6) for y, x in pos])
        up = tr.update(lab)
        ids = [int(lab[round(y), round(x)]) for y, x in pos]
        tids = [up.mapping()[i] for i in ids]
        if t == 0:
            first = {(k, 0): tid for k, tid in enumerate(tids)}
        assert tids == [first[(k, 0)] for k in range(12)]
        pos += rng.normal(0, 2.0, pos.shape)
    assert len(tr.lineage) == 12
    assert not any(tr.lineage.values())


def test_gap_is_closed() -> None:
    tr = OnlineTracker()
    a = tr.update(disks((100, 100), [(50, 50, 6), (20, 20, 6)]))
    ids0 = {int(v) for v in a.track_ids}
    tr.update(disks((100, 100), [(20, 21, 6)]))  # the first cell is missed twice
    tr.update(disks((100, 100), [(20, 22, 6)]))
    up = tr.update(disks((100, 100), [(52, 51, 6), (20, 23, 6)]))
    assert {int(v) for v in up.track_ids} == ids0


def test_division_is_found_and_recorded() -> None:
    frames = [disks((120, 120), [(60, 60, 9)]) for _ in range(5)]
    frames += [
        disks((120, 120), [(60, 60 - 4 * k - 8, 6), (60, 60 + 4 * k + 8, 6)]) for k in range(5)
    ]
    seq = track_sequence(frames)
    assert len(seq.divisions) == 1
    d = seq.divisions[0]
    assert d.frame == 5
    assert set(seq.parents) == {d.parent, *d.daughters}
    assert seq.parents[d.daughters[0]] == seq.parents[d.daughters[1]] == d.parent
    ids5 = np.unique(seq.id_frames[5])
    assert set(ids5[ids5 > 0].tolist()) == set(d.daughters)


def test_late_daughter_moves_the_split_back() -> None:
    """One daughter is seen at once, its sister only 3 frames later (as in GOWT1 01)."""
    frames = [disks((120, 120), [(60, 60, 9)]) for _ in range(5)]
    frames += [disks((120, 120), [(60, 60 - 4 * k - 8, 6)]) for k in range(3)]
    frames += [disks((120, 120), [(60, 60 - 4 * k - 8, 6), (60, 60 + 4 * k + 8, 6)])
               for k in range(3, 6)]  # fmt: skip
    seq = track_sequence(frames)
    assert len(seq.divisions) == 1
    d = seq.divisions[0]
    assert (d.frame, d.detected_at) == (5, 8)
    # frames 5..7 were returned under the parent's id, and are revised to the daughter's
    first_daughter_id = int(seq.id_frames[5].max())
    assert first_daughter_id in d.daughters
    assert int(seq.id_frames[4].max()) == d.parent


def test_cell_entering_at_the_edge_is_not_a_daughter() -> None:
    frames = [disks((100, 100), [(50, 90, 7)]) for _ in range(5)]
    frames += [disks((100, 100), [(50, 90, 7), (50, 101, 5)])]  # appears cut by the edge
    seq = track_sequence(frames)
    assert seq.divisions == []


def test_state_saves_and_resumes_identically(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pos = np.array([[20 + 35 * (k % 5), 25 + 40 * (k // 5)] for k in range(15)], float)
    frames = []
    for _ in range(20):
        frames.append(disks((200, 200), [(y, x, 6) for y, x in pos]))
        pos += rng.normal(0, 2.0, pos.shape)
    whole = OnlineTracker()
    expected = [whole.update(f).mapping() for f in frames]
    first = OnlineTracker()
    got = [first.update(f).mapping() for f in frames[:10]]
    first.save(tmp_path / "state.json")
    resumed = OnlineTracker.load(tmp_path / "state.json")
    assert resumed.frame == 9
    got += [resumed.update(f).mapping() for f in frames[10:]]
    assert got == expected
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(LivescopeError, match="cannot read tracker state"):
        OnlineTracker.load(tmp_path / "bad.json")


def _dividing_frames() -> list[np.ndarray]:
    """12 drifting cells; the one at (30, 30) divides at frame 6."""
    rng = np.random.default_rng(7)
    pos = [[30 + 45 * (k % 4), 30 + 45 * (k // 4), 6.0] for k in range(12)]
    out = []
    for t in range(20):
        if t == 6:
            y, x, _ = pos.pop(0)
            pos += [[y - 5, x, 4.5], [y + 5, x, 4.5]]
        out.append(disks((200, 200), [(p[0], p[1], p[2]) for p in pos]))
        for p in pos:
            p[0] += rng.normal(0, 1.5)
            p[1] += rng.normal(0, 1.5)
    return out


def test_a_state_saved_by_the_previous_version_resumes() -> None:
    """data/tracker_state_v1.json: the first 10 frames, saved by the tracker before its
    state became column lists (version 1, one dict per track; commit ee456f4)."""
    frames = _dividing_frames()
    whole = OnlineTracker()
    expected = [whole.update(f).mapping() for f in frames]
    assert set(whole.lineage.values()) == {0, 5}  # the division is in the saved part
    state = json.loads((Path(__file__).parent / "data" / "tracker_state_v1.json").read_text())
    assert state["version"] == 1
    resumed = OnlineTracker.from_state(state)
    again = OnlineTracker()
    for f in frames[:10]:
        again.update(f)
    assert resumed.state() == again.state()
    assert [resumed.update(f).mapping() for f in frames[10:]] == expected[10:]
    assert resumed.lineage == whole.lineage


def test_a_bad_state_is_refused_clearly() -> None:
    tr = OnlineTracker()
    for f in _dividing_frames()[:8]:
        tr.update(f)
    good = tr.state()
    bad = json.loads(json.dumps(good))
    bad["tracks"]["hf"] = bad["tracks"]["hf"][:-1]  # one row short
    with pytest.raises(LivescopeError, match="track column hf has shape"):
        OnlineTracker.from_state(bad)
    bad = json.loads(json.dumps(good))
    bad["parents"] = [[1, 2], [0]]
    with pytest.raises(LivescopeError, match="bad lineage"):
        OnlineTracker.from_state(bad)
    with pytest.raises(LivescopeError, match="version 3 is not 1 or 2"):
        OnlineTracker.from_state({**good, "version": 3})
    with pytest.raises(LivescopeError, match="malformed: missing 'next_id'"):
        OnlineTracker.from_state({k: v for k, v in good.items() if k != "next_id"})
    with pytest.raises(LivescopeError, match="malformed"):
        OnlineTracker.from_state([good])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "needs"),
    [("gap_cost", -0.5, ">= 0"), ("area_weight", -1.0, ">= 0"), ("gate_px", 0.0, "> 0"),
     ("velocity_smoothing", 1.5, "in \\[0, 1\\]")],
)  # fmt: skip
def test_a_config_that_would_break_linking_is_refused(field: str, value: float, needs: str) -> None:
    with pytest.raises(LivescopeError, match=f"{field} must be {needs}"):
        TrackerConfig(**{field: value})  # type: ignore[arg-type]


def test_assignment_stays_local_with_thousands_of_cells() -> None:
    """Spatial gating: 2,500 cells never make one big assignment problem."""
    cells: list[tuple[float, float, float]] = [
        (10 + 20 * (k % 50), 10 + 20 * (k // 50), 4) for k in range(2500)
    ]
    tr = OnlineTracker()
    tr.update(disks((1000, 1000), cells))
    up = tr.update(disks((1000, 1000), [(y + 1, x - 1, r) for y, x, r in cells]))
    assert len(set(up.track_ids.tolist())) == 2500
    assert tr.gated_pairs < 3 * 2500  # pairs inside the gates, not all 2,500^2


def test_sparse_large_label_ids_are_measured_like_compact_ones() -> None:
    lab = disks((64, 64), [(10, 10, 4), (40, 30, 6), (60, 60, 5)])
    image = np.random.default_rng(0).random(lab.shape)
    big = np.where(lab > 0, lab.astype(np.uint64) * 2**33 + 7, 0)  # ids near 2**34
    a, b = measure_objects(lab, image), measure_objects(big, image)  # no 2**34-long counts
    assert b.labels.tolist() == [int(v) * 2**33 + 7 for v in a.labels.tolist()]
    np.testing.assert_allclose(b.centroids, a.centroids)
    np.testing.assert_allclose(b.areas, a.areas)
    assert a.intensities is not None
    assert b.intensities is not None
    np.testing.assert_allclose(b.intensities, a.intensities)
    assert a.on_border is not None
    assert b.on_border is not None
    assert b.on_border.tolist() == a.on_border.tolist()


def test_a_snapshot_keeps_the_state_of_its_frame_while_the_tracker_goes_on() -> None:
    """The worker takes a snapshot per field and turns it into JSON later, on another thread."""
    frames = _dividing_frames()
    tr = OnlineTracker()
    for f in frames[:5]:
        tr.update(f)
    at_5 = tr.state()
    snap = tr.snapshot()
    for f in frames[5:]:  # a cell divides (frame 6): new tracks, lineage, moved tracks
        tr.update(f)
    assert len(tr.lineage) > len(snap.parents)
    assert set(tr.lineage.values()) == {0, 5}
    assert set(snap.parents.values()) == {0}
    assert snap.state() == at_5
    assert json.loads(json.dumps(snap.state())) == at_5
    resumed = OnlineTracker.from_state(snap.state())
    again = OnlineTracker.from_state(at_5)
    assert [resumed.update(f).mapping() for f in frames[5:]] == [
        again.update(f).mapping() for f in frames[5:]
    ]
