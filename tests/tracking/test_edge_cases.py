"""Edge cases: resumed sequences, huge ids, frame jumps, gaps before a division, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livescope.schema import LivescopeError
from livescope.tracking import (
    ObjectTable,
    OnlineTracker,
    TrackerConfig,
    measure_objects,
    track_sequence,
)
from tests.tracking.test_tracker import disks


def _late_daughter_frames() -> list[np.ndarray]:
    """A cell divides at frame 5; its second daughter is first seen at frame 8."""
    frames = [disks((120, 120), [(60, 60, 9)]) for _ in range(5)]
    frames += [disks((120, 120), [(60, 60 - 4 * k - 8, 6)]) for k in range(3)]
    frames += [disks((120, 120), [(60, 60 - 4 * k - 8, 6), (60, 60 + 4 * k + 8, 6)])
               for k in range(3, 6)]  # fmt: skip
    return frames


@pytest.mark.parametrize("start", [6, 7])
def test_a_sequence_on_a_resumed_tracker_takes_revisions_of_earlier_frames(start: int) -> None:
    """The split (frame 5) is found at frame 8 and revises frames 5..7, some of them
    given before the sequence began (IndexError, or a wrapped index, before)."""
    frames = _late_daughter_frames()
    whole = track_sequence(frames)
    tr = OnlineTracker()
    for f in frames[:start]:
        tr.update(f)
    part = track_sequence(frames[start:], tracker=tr)
    assert part.divisions == whole.divisions
    assert part.maps == whole.maps[start:]


def test_id_frames_with_huge_label_ids_stay_small_in_memory() -> None:
    """Label ids near 2**41: the id image is looked up, not a table as long as the top id."""
    frames = [disks((64, 64), [(20, 20 + k, 5), (40, 40, 5)]).astype(np.uint64) for k in range(3)]
    huge = [np.where(f > 0, f * 2**40 + 3, 0) for f in frames]
    small, big = track_sequence(frames), track_sequence(huge)
    for k in range(3):
        np.testing.assert_array_equal(big.id_frames[k], small.id_frames[k])
    signed = track_sequence([f.astype(np.int64) for f in huge])  # (int64 labels too)
    np.testing.assert_array_equal(signed.id_frames[2], small.id_frames[2])


def test_a_cell_gone_after_a_frame_jump_is_reported_lost() -> None:
    """The worker passes the time index: a jump means frames were missed. A cell seen on
    the previous frame given and not on this one is lost (was never reported)."""
    tr = OnlineTracker()
    two = disks((100, 100), [(30, 30, 6), (70, 70, 6)])
    ids = [tr.update(two, frame=t).mapping() for t in range(3)][-1]
    up = tr.update(disks((100, 100), [(30, 30, 6)]), frame=4)
    assert up.lost == (ids[2],)
    assert tr.update(disks((100, 100), [(30, 30, 6)]), frame=5).lost == ()
    # a jump past max_gap: every track is lost, once
    up = tr.update(disks((100, 100), []), frame=20)
    assert up.lost == (ids[1],)


def test_a_parent_missed_before_it_divides_ends_where_it_was_last_seen() -> None:
    tr = OnlineTracker()
    for _ in range(5):
        tr.update(disks((120, 120), [(60, 60, 9)]))
    tr.update(disks((120, 120), []))  # frames 5 and 6: missed
    tr.update(disks((120, 120), []))
    up = tr.update(disks((120, 120), [(60, 52, 6), (60, 68, 6)]))
    (d,) = up.divisions
    spans = tr.spans()
    assert spans[d.parent] == (0, 4)  # (not 6: it was never seen on 5 and 6)
    assert spans[d.daughters[0]] == spans[d.daughters[1]] == (7, 7)


def _table(labels: list[int], cents: list[list[float]], areas: list[float]) -> ObjectTable:
    return ObjectTable(np.array(labels, np.int64), np.array(cents, float), np.array(areas, float))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        pytest.param(_table([1, 2], [[10, 10], [np.nan, 40]], [50, 50]),
                     "centroid of label 2 is \\[nan", id="nan-centroid"),
        pytest.param(_table([1, 2], [[10, 10], [40, np.inf]], [50, 50]),
                     "centroid of label 2", id="inf-centroid"),
        pytest.param(_table([1, 2], [[10, 10], [40, 40]], [50, np.nan]),
                     "area of label 2 is nan", id="nan-area"),
        pytest.param(_table([1, 2], [[10, 10], [40, 40]], [50, 0]),
                     "area of label 2 is 0", id="zero-area"),
        pytest.param(_table([3, 3], [[10, 10], [40, 40]], [50, 50]),
                     "label 3 is listed more than once", id="duplicate-label"),
        pytest.param(_table([0, 2], [[10, 10], [40, 40]], [50, 50]),
                     "label 0 \\(labels are > 0\\)", id="background-label"),
        pytest.param(_table([1, 2], [[10, 10], [40, 40]], [50]),
                     "areas has shape \\(1,\\), not \\(2,\\)", id="short-column"),
    ],
)  # fmt: skip
def test_a_bad_object_table_is_refused_and_the_tracker_goes_on(
    bad: ObjectTable, message: str
) -> None:
    """A NaN centroid was stored and broke every later frame; a duplicate label lost a cell."""
    good = _table([1, 2], [[10, 10], [40, 40]], [50, 50])
    tr = OnlineTracker()
    first = tr.update(good).mapping()
    state = tr.state()
    with pytest.raises(LivescopeError, match=message):
        tr.update(bad)
    assert tr.state() == state
    assert tr.update(good).mapping() == first


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        pytest.param(np.zeros((0, 64), np.int32), "with pixels, got shape \\(0, 64\\)",
                     id="no-rows"),
        pytest.param(np.zeros((64, 0), np.uint16), "with pixels", id="no-columns"),
        pytest.param(np.full((8, 8), 2**63 + 5, np.uint64), "ids below 2\\*\\*63",
                     id="uint64-top-bit"),
    ],
)  # fmt: skip
def test_label_images_the_tracker_cannot_take_are_refused_clearly(
    bad: np.ndarray, message: str
) -> None:
    with pytest.raises(LivescopeError, match=message):
        measure_objects(bad)
    with pytest.raises(LivescopeError, match=message):
        OnlineTracker().update(bad)


@pytest.mark.parametrize("tolerance", [-1, 1.5, True])
def test_a_bad_division_tolerance_is_refused_before_scoring(
    tmp_path: Path, tolerance: object
) -> None:
    """(-1 ran the whole scoring, then failed on a missing key 'tp_div(-1)'.)"""
    import tifffile

    from livescope.tracking import evaluate_tracking

    mask = np.zeros((16, 16), np.uint16)
    mask[4:9, 4:9] = 1
    (tmp_path / "res").mkdir()
    (tmp_path / "gt" / "TRA").mkdir(parents=True)
    for t in range(2):
        tifffile.imwrite(tmp_path / "res" / f"mask{t:03d}.tif", mask)
        tifffile.imwrite(tmp_path / "gt" / "TRA" / f"man_track{t:03d}.tif", mask)
    for f in (tmp_path / "res" / "res_track.txt", tmp_path / "gt" / "TRA" / "man_track.txt"):
        f.write_text("1 0 1 0\n")
    assert evaluate_tracking(tmp_path / "res", tmp_path / "gt", div_tolerance=np.int64(0))["tra"]
    with pytest.raises(LivescopeError, match="div_tolerance must be a whole number of frames"):
        evaluate_tracking(tmp_path / "res", tmp_path / "gt", div_tolerance=tolerance)  # type: ignore[arg-type]


def test_a_state_whose_ids_would_clash_is_refused() -> None:
    """A next_id not above the ids it holds resumed and gave two cells one track id."""
    tr = OnlineTracker()
    tr.update(disks((100, 100), [(30, 30, 6), (70, 70, 6)]))
    good = tr.state()
    with pytest.raises(LivescopeError, match="next_id 2 is not above the largest track id 2"):
        OnlineTracker.from_state({**good, "next_id": 2})
    twice = {**good, "tracks": {c: v[:1] * 2 for c, v in good["tracks"].items()}}
    with pytest.raises(LivescopeError, match="in the track table twice"):
        OnlineTracker.from_state(twice)
    orphan = {**good, "parents": [[1], [0]]}
    with pytest.raises(LivescopeError, match="track 2 has no lineage entry"):
        OnlineTracker.from_state(orphan)
    assert OnlineTracker.from_state(good).state() == good


def test_a_division_window_of_zero_is_refused() -> None:
    """(It found no division at all, not even on the division's own frame.)"""
    with pytest.raises(LivescopeError, match="division_window must be >= 1"):
        TrackerConfig(division_window=0)
    frames = [disks((120, 120), [(60, 60, 9)]) for _ in range(5)]
    frames += [disks((120, 120), [(60, 52, 6), (60, 68, 6)])]
    assert len(track_sequence(frames, config=TrackerConfig(division_window=1)).divisions) == 1
