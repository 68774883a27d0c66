"""Tracker edges: a change of frame shape, float frame numbers, daughters too close,
and an ignored frame as the pipeline's analyzer reports it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from livescope.schema import LivescopeError
from livescope.tracking import ObjectTable, OnlineTracker, measure_objects
from tests.tracking.test_tracker import disks

# --- a frame of another shape (ROI change) ----------------------------------------------------


def test_a_frame_of_another_shape_is_refused_and_changes_nothing() -> None:
    """A 100x100 view, then a 100x140 one (a wider ROI): the cell at (30, 30) of the new
    view continued the track of the cell at (30, 30) of the old one, as if it were there."""
    tr = OnlineTracker()
    for _ in range(3):
        tr.update(disks((100, 100), [(30, 30, 6), (70, 70, 6)]))
    before = tr.state()
    wider = disks((100, 140), [(30, 30, 6), (70, 110, 6)])
    with pytest.raises(LivescopeError, match=r"frame 3 is 100x140 pixels, .* were 100x100"):
        tr.update(wider)
    assert tr.state() == before
    # the old view goes on; a new tracker takes the new one
    same = tr.update(disks((100, 100), [(30, 30, 6), (70, 70, 6)]))
    assert sorted(same.track_ids.tolist()) == [1, 2]
    assert sorted(OnlineTracker().update(wider).track_ids.tolist()) == [1, 2]


def test_an_object_table_of_unknown_shape_is_not_checked() -> None:
    """An `ObjectTable` made without a ``shape`` ((0, 0): not known) links as before."""
    tr = OnlineTracker()
    tr.update(disks((100, 100), [(30, 30, 6)]))
    measured = measure_objects(disks((100, 100), [(31, 30, 6)]))
    unknown = ObjectTable(measured.labels, measured.centroids, measured.areas)
    assert tr.update(unknown).track_ids.tolist() == [1]
    with pytest.raises(LivescopeError, match="the frames before were 100x100"):
        tr.update(disks((80, 100), [(31, 30, 6)]))  # (the known shape is still checked)


# --- the frame number ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [pytest.param(3.0, id="float"), pytest.param(np.float64(3.0), id="numpy-float"),
     pytest.param(np.float32(3.0), id="numpy-float32"), pytest.param(np.uint8(3), id="numpy-uint")],
)  # fmt: skip
def test_a_whole_frame_number_of_any_number_type_is_taken(frame: Any) -> None:
    """A time index read back as a float (3.0) was refused as "not a whole number"."""
    tr = OnlineTracker()
    up = tr.update(disks((100, 100), [(30, 30, 6)]), frame=frame)
    assert (up.frame, tr.frame) == (3, 3)
    assert type(up.frame) is int


@pytest.mark.parametrize(
    "frame",
    [pytest.param(2.5, id="fraction"), pytest.param(np.float64(2.5), id="numpy-fraction"),
     pytest.param(math.nan, id="nan"), pytest.param(math.inf, id="inf"),
     pytest.param(-1.0, id="negative"), pytest.param("3", id="text")],
)  # fmt: skip
def test_a_frame_number_that_is_no_whole_number_is_refused(frame: Any) -> None:
    tr = OnlineTracker()
    with pytest.raises(LivescopeError, match="frame must be a whole number >= 0"):
        tr.update(disks((100, 100), [(30, 30, 6)]), frame=frame)
    assert tr.frame == -1


# --- daughters of a parent lost on the frame it divides -----------------------------------------


def _lost_parent_frames(apart: float) -> list[np.ndarray]:
    """A cell (radius 9) for 5 frames, then two small objects ``apart`` pixels apart
    (rows), both 35 px to its right: beyond the parent's gate (28 px: its track does
    not continue into either, it is lost), within its division reach (46 px)."""
    frames = [disks((120, 120), [(60, 60, 9)]) for _ in range(5)]
    half = apart / 2
    frames += [disks((120, 120), [(60 - half, 95, 4), (60 + half, 95, 4)]) for _ in range(3)]
    return frames


@pytest.mark.parametrize(
    ("apart", "divides"),
    [pytest.param(6.0, False, id="one-cell-cut-in-two"), pytest.param(30.0, True, id="apart")],
)
def test_daughters_closer_than_the_separation_minimum_are_no_division(
    apart: float, divides: bool
) -> None:
    """Two touching objects 6.5 px apart (0.72 parent radii; daughter_separation_min is
    0.8) were taken as the daughters of a parent lost that frame: only a parent that
    continued into one of them had its daughters' separation checked."""
    tr = OnlineTracker()
    ups = [tr.update(f) for f in _lost_parent_frames(apart)]
    assert ups[5].lost == (1,)  # (the parent's track did not continue)
    divisions = [d for up in ups for d in up.divisions]
    lineage = tr.lineage
    if divides:
        assert [(d.parent, d.frame) for d in divisions] == [(1, 5)]
        assert lineage == {1: 0, 2: 1, 3: 1}
    else:
        assert divisions == []
        assert set(ups[5].born) == {2, 3}
        assert lineage == {1: 0, 2: 0, 3: 0}


# --- an ignored frame in the pipeline -----------------------------------------------------------


def _field(seed: int) -> np.ndarray:
    """Four bright nuclei (12 µm at 0.65 µm per pixel) on a noisy 128x128 field."""
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    img = rng.normal(100, 3, (128, 128))
    for centre in ((40, 40), (40, 88), (88, 40), (88, 88)):
        img[disk(centre, 9.2, shape=img.shape)] += 700
    return np.asarray(img.clip(0, None), np.uint16)


def test_a_frame_the_tracker_ignores_is_reported_with_its_position(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A field given again (t=1 after t=1) has its cells with track 0 in the cell table,
    stored as such: the only word was the tracker's, naming no position."""
    from livescope.pipeline import FrameAnalyzer

    with FrameAnalyzer(backend="onnxruntime", nucleus_diameter_um=12) as fa:
        for t in (0, 1):
            fa.analyse(fluorescence=_field(t), position="B2", pixel_size_um=0.65, frame=t)
        caplog.clear()
        again = fa.analyse(fluorescence=_field(2), position="B2", pixel_size_um=0.65, frame=1)
    assert again.tracks is not None
    assert again.tracks.ignored
    rows = again.cell_table()
    assert rows
    assert {r["track"] for r in rows} == {0}
    assert "position 'B2' t=1: not tracked (frame 1 came after frame 1 (a second time)" in (
        caplog.text
    )
    assert f"its {len(rows)} cell(s) have track 0" in caplog.text


def test_a_field_after_one_the_tracker_ignored_is_numbered_after_the_last_tracked() -> None:
    """The next default frame number counts on from the last frame tracked: after an
    ignored frame 0 it was 1 again, a second time, and that field was ignored too."""
    from livescope.pipeline import FrameAnalyzer

    with FrameAnalyzer(backend="onnxruntime", nucleus_diameter_um=12) as fa:
        for t in (0, 1):
            fa.analyse(fluorescence=_field(t), position="B2", pixel_size_um=0.65, frame=t)
        assert fa.analyse(fluorescence=_field(2), position="B2", pixel_size_um=0.65,
                          frame=0).tracks.ignored  # fmt: skip
        nxt = fa.analyse(fluorescence=_field(2), position="B2", pixel_size_um=0.65)
    assert nxt.frame == 2
    assert nxt.tracks is not None
    assert not nxt.tracks.ignored
