"""A position's view (pixel size, frame shape) across a resume, late fields and the CTC result."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from livescope.pipeline import FrameAnalyzer, PipelineWorker, WorkerConfig
from livescope.record import read_ctc, rewrite_ctc_result
from livescope.schema import LivescopeError
from livescope.tracking import OnlineTracker, TrackUpdate

NO_ENGINES = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)


def _cells(shape: tuple[int, ...]) -> np.ndarray:
    """Three discs, each at the same fraction of the frame whatever its size."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape[:2], np.int32)
    r = min(shape[:2]) / 32
    for k, (fy, fx) in enumerate(((0.3, 0.3), (0.5, 0.6), (0.7, 0.4)), start=1):
        labels[(yy - fy * shape[0]) ** 2 + (xx - fx * shape[1]) ** 2 < r * r] = k
    return labels


def _segmenting(analyzer: FrameAnalyzer) -> FrameAnalyzer:
    """``analyzer`` with a segmentation engine that finds `_cells` in any frame."""

    def segment(img: np.ndarray, normalised: bool = False) -> SimpleNamespace:
        return SimpleNamespace(labels=_cells(img.shape))

    seg = SimpleNamespace(segment=segment)
    analyzer.segmenter_name = "cells"
    analyzer._segmenter = lambda px: seg  # type: ignore[method-assign,assignment,return-value]
    return analyzer


def _field(analyzer: FrameAnalyzer, t: int, shape: tuple[int, int], px: float) -> TrackUpdate:
    frame = (_cells(shape) > 0).astype(np.uint16) * 100 + 10
    tracks = analyzer.analyse(fluorescence=frame, position="p0", pixel_size_um=px, frame=t).tracks
    assert tracks is not None
    return tracks


def _recorded_run(tmp_path: Path, timepoints: int) -> Path:
    """A finished simulated run of one position (512x512 px at 0.65 µm), no worker attached."""
    from livescope.schema import load_profile
    from livescope.scope import demo_sequence, run_simulated

    prof = load_profile("sim")
    run = tmp_path / "run"
    run_simulated(prof, demo_sequence(prof, timepoints=timepoints, positions=1), run, seed=3)
    return run


def test_a_resumed_worker_ends_the_tracks_at_another_objective(tmp_path: Path) -> None:
    # the trackers were restored, not their views: a 20x field after the restart continued
    # the 10x tracks (its cells linked by pixels), none reported lost
    run = _recorded_run(tmp_path, timepoints=3)
    w = PipelineWorker(run, NO_ENGINES)
    _segmenting(w.analyzer)
    assert w.run(attach_timeout_s=0.1)["fields_analysed"] == 3
    saved = json.loads((run / "results" / "state.json").read_text())
    before = set(saved["trackers"]["p0"]["tracks"]["id"])
    assert len(before) == 3
    resumed = PipelineWorker(run, NO_ENGINES, resume=True)
    try:
        up = _field(_segmenting(resumed.analyzer), 3, (512, 512), 0.65 / 1.5)
    finally:
        resumed._finish(failed=True)
    assert set(up.lost) == before
    assert not set(up.track_ids.tolist()) & before
    assert saved["views"] == {"p0": [0.65, [512, 512]]}


def test_a_resumed_worker_keeps_the_tracks_of_the_same_view(tmp_path: Path) -> None:
    run = _recorded_run(tmp_path, timepoints=3)
    w = PipelineWorker(run, NO_ENGINES)
    _segmenting(w.analyzer)
    w.run(attach_timeout_s=0.1)
    resumed = PipelineWorker(run, NO_ENGINES, resume=True)
    try:
        assert resumed.analyzer.views == {"p0": (0.65, (512, 512))}
        up = _field(_segmenting(resumed.analyzer), 3, (512, 512), 0.65)
    finally:
        resumed._finish(failed=True)
    assert up.lost == ()
    assert sorted(up.track_ids.tolist()) == [1, 2, 3]


def _state_with_views(tmp_path: Path, views: object) -> None:
    tracker = OnlineTracker()
    tracker.update(_cells((64, 64)), frame=0)
    res = tmp_path / "results"
    res.mkdir(parents=True)
    state = {"version": 1, "run_id": "r", "done": {"p0": 0}, "counts": {},
             "trackers": {"p0": tracker.state()}, "class_cols": []}  # fmt: skip
    if views is not None:
        state["views"] = views
    (res / "state.json").write_text(json.dumps(state))


def test_a_state_saved_without_views_resumes_as_before(tmp_path: Path) -> None:
    _state_with_views(tmp_path, None)
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    try:
        assert w.analyzer.views == {}
        assert list(w.analyzer.trackers) == ["p0"]
    finally:
        w._finish(failed=True)


@pytest.mark.parametrize(
    "views",
    [
        pytest.param({"p0": [0.65]}, id="no-shape"),
        pytest.param({"p0": ["wide", [64, 64]]}, id="pixel-size-no-number"),
        pytest.param({"p0": [0.65, 64]}, id="shape-no-list"),
        pytest.param([0.65, [64, 64]], id="no-mapping"),
    ],
)
def test_a_damaged_view_in_the_state_is_refused_naming_the_file(
    tmp_path: Path, views: object
) -> None:
    _state_with_views(tmp_path, views)
    with pytest.raises(LivescopeError, match=r"cannot read worker state .*state\.json"):
        PipelineWorker(tmp_path, NO_ENGINES, resume=True)


def test_a_late_field_of_the_view_before_leaves_the_tracks_as_they_are() -> None:
    # the late field, ignored by the tracker, still went through the view check: it ended
    # the new view's tracks (reported lost), and the next field started every track again
    an = _segmenting(FrameAnalyzer(segmenter=None))
    for t in range(3):
        _field(an, t, (256, 256), 0.65)
    binned = _field(an, 3, (128, 128), 1.3)
    assert binned.lost == (1, 2, 3)
    new = sorted(binned.track_ids.tolist())
    assert new == [4, 5, 6]
    assert sorted(_field(an, 4, (128, 128), 1.3).track_ids.tolist()) == new
    late = _field(an, 2, (256, 256), 0.65)
    assert late.ignored
    assert late.lost == ()
    assert an.views["p0"] == (1.3, (128, 128))
    after = _field(an, 5, (128, 128), 1.3)
    assert sorted(after.track_ids.tolist()) == new
    assert after.lost == ()


def _masks(folder: Path, sizes: list[int]) -> None:
    folder.mkdir(parents=True)
    for t, size in enumerate(sizes):
        tifffile.imwrite(folder / f"mask{t:03d}.tif", _cells((size, size)).astype(np.uint16))


def test_masks_of_two_sizes_make_no_ctc_result(tmp_path: Path) -> None:
    # written as they were, the result held masks of two sizes, which read_ctc and
    # py-ctcmetrics refuse
    live = tmp_path / "live"
    _masks(live, [256, 256, 128, 128])
    with pytest.raises(LivescopeError, match=r"mask002\.tif: 128x128 px, .*mask000\.tif 256x256"):
        rewrite_ctc_result(live, {1: 0, 2: 0, 3: 0}, out=tmp_path / "res")
    assert not (tmp_path / "res" / "res_track.txt").exists()
    assert not list((tmp_path / "res").glob("mask*.tif"))
    with pytest.raises(LivescopeError, match="two sizes"):  # in place: nothing relabelled
        rewrite_ctc_result(live, {1: 0, 2: 0, 3: 0})
    assert not (live / "res_track.txt").exists()
    assert [int(tifffile.imread(p).max()) for p in sorted(live.glob("*.tif"))] == [3] * 4


def test_masks_of_one_size_with_a_frame_missing_still_make_a_result(tmp_path: Path) -> None:
    live = tmp_path / "live"
    _masks(live, [128, 128, 128])
    (live / "mask001.tif").unlink()
    rewrite_ctc_result(live, {1: 0, 2: 0, 3: 0}, out=tmp_path / "res")
    frames, tracks = read_ctc(tmp_path / "res")
    assert [f.shape for f in frames] == [(128, 128)] * 3
    assert len(tracks) == 6  # (a track after its gap is one of its own)


def test_the_worker_counts_a_position_whose_view_changed_as_no_ctc_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = PipelineWorker(tmp_path, NO_ENGINES)
    w.analyzer.trackers["p0"] = OnlineTracker()
    folder = tmp_path / "results" / "ctc" / "p0"
    _masks(folder, [256, 128])
    with caplog.at_level(logging.ERROR, logger="livescope"):
        summary = w._finish()
    assert summary["ctc_results_not_written"] == 1
    said = "\n".join(r.getMessage() + str(r.exc_info[1] if r.exc_info else "")
                     for r in caplog.records)  # fmt: skip
    for named in ("ctc/p0", "128x128", "256x256"):
        assert named in said.replace("\\", "/")
    assert sorted(p.name for p in folder.iterdir()) == ["mask000.tif", "mask001.tif"]
