"""`eval seg` timings in steady state, the IoU >= t rule, and 3-D stacks in `eval track`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from livescope.inference import SegmentationResult, evaluate_segmentation, match_counts
from livescope.inference._classical import classical_segmentation
from livescope.schema import LivescopeError
from livescope.tracking import evaluate_tracking

from ..conftest import run_cli


def _folders(root: Path, n: int) -> tuple[Path, Path]:
    """``n`` images of a bright square and their labels."""
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        frame = rng.integers(90, 110, (64, 64)).astype(np.uint16)
        frame[20:40, 20:40] += 1000
        lab = np.zeros((64, 64), np.uint16)
        lab[20:40, 20:40] = 1
        tifffile.imwrite(images / f"{i}.tif", frame)
        tifffile.imwrite(labels / f"{i}.tif", lab)
    return images, labels


class _FirstCallSlow:
    """An engine whose first `segment` pays a one-time cost (imports, compiling): 1 s more.

    The timings are stated, not measured: what is reported does not hang on the machine.
    """

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def segment(self, frame: np.ndarray, **_: Any) -> SegmentationResult:
        once = 0.0 if self.frames else 1000.0
        self.frames.append(frame)
        labels = np.zeros(frame.shape, np.int32)
        labels[20:40, 20:40] = 1
        return SegmentationResult(labels, 5.0 + once, 2.0 + once)


def test_eval_seg_times_images_after_one_untimed_whole_call(tmp_path: Path) -> None:
    """(`Engine.warmup` runs the model only: the first image's post-processing, and with
    ``--diameter`` its rescaling, paid their one-time costs inside the figures: ms_post 837
    reported on DSB2018's 2 images, ~183 warm.)"""
    images, labels = _folders(tmp_path, 2)
    engine = _FirstCallSlow()
    out = evaluate_segmentation(engine, images, labels)  # type: ignore[arg-type]
    assert (out["ms_engine"], out["ms_post"]) == (5.0, 2.0)
    # the first image once more, untimed, before it is timed; then each image once
    assert len(engine.frames) == 3
    assert np.array_equal(engine.frames[0], engine.frames[1])
    assert (out["images"], out["ap50"]) == (2, 1.0)


def test_classical_pipeline_is_warmed_on_the_first_image_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, labels = _folders(tmp_path, 2)
    calls: list[np.ndarray] = []

    def counted(frame: np.ndarray) -> Any:
        calls.append(frame)
        return classical_segmentation(frame)

    monkeypatch.setattr("livescope.inference._evaluate.classical_segmentation", counted)
    out = evaluate_segmentation(None, images, labels, classical=True)
    assert len(calls) == 3  # the first image untimed, then each image timed
    assert np.array_equal(calls[0], calls[1])
    assert out["images"] == 2


def test_a_nucleus_found_at_exactly_the_threshold_counts_as_found() -> None:
    """A pair counts at IoU >= t, as StarDist's ``matching`` (DSB2018's metric: IoU > t)."""
    truth = np.zeros((8, 20), np.uint16)
    pred = np.zeros_like(truth)
    truth[0:4, 0:4] = 1  # half of it found: IoU 8/16, exactly 0.5
    pred[0:2, 0:4] = 1
    truth[0:4, 10:14] = 2  # three quarters of it found: IoU 12/16, exactly 0.75
    pred[0:3, 10:14] = 2
    c = match_counts(truth, pred)
    assert (c.tp[0.5], c.tp[0.55], c.tp[0.75], c.tp[0.8]) == (2, 1, 1, 0)


def _ctc(folder: Path, stem: str, planes: int) -> None:
    """Two frames of one cell, each a stack of ``planes`` planes, and its track file."""
    folder.mkdir(parents=True)
    for t in range(2):
        m = np.zeros((planes, 32, 32), np.uint16)
        m[:, 10:20, 10:20] = 1
        tifffile.imwrite(folder / f"{stem}{t:03d}.tif", m, photometric="minisblack")
    track = "res_track.txt" if stem == "mask" else "man_track.txt"
    (folder / track).write_text("1 0 1 0\n")


def test_eval_track_refuses_3d_stacks_of_other_plane_counts_naming_both(tmp_path: Path) -> None:
    """(Only the first page's shape was compared: py-ctcmetrics then failed with a traceback,
    `eval track --json` printing nothing.)"""
    _ctc(tmp_path / "GT" / "TRA", "man_track", planes=5)
    _ctc(tmp_path / "res", "mask", planes=6)
    with pytest.raises(LivescopeError) as exc:
        evaluate_tracking(tmp_path / "res", tmp_path / "GT")
    msg = str(exc.value)
    assert "mask000.tif is (6, 32, 32) px" in msg
    assert "man_track000.tif is (5, 32, 32) px" in msg
    assert "label images of one size" in msg
    res = run_cli(
        "eval", "track", "--res", str(tmp_path / "res"), "--gt", str(tmp_path / "GT"), "--json"
    )
    assert res.returncode == 2, res.stderr  # (a user's error, said as JSON; a crash exits 1)
    assert "(6, 32, 32)" in json.loads(res.stdout)["error"]


def test_eval_track_refuses_ground_truth_stacks_of_other_plane_counts(tmp_path: Path) -> None:
    _ctc(tmp_path / "GT" / "TRA", "man_track", planes=5)
    _ctc(tmp_path / "res", "mask", planes=5)
    m = np.zeros((4, 32, 32), np.uint16)
    m[:, 10:20, 10:20] = 1
    tifffile.imwrite(tmp_path / "GT" / "TRA" / "man_track001.tif", m, photometric="minisblack")
    with pytest.raises(LivescopeError, match=r"man_track001\.tif is \(4, 32, 32\) px but "
                       r"man_track000\.tif is \(5, 32, 32\) px"):  # fmt: skip
        evaluate_tracking(tmp_path / "res", tmp_path / "GT")


def test_eval_track_scores_3d_stacks_of_one_size(tmp_path: Path) -> None:
    _ctc(tmp_path / "GT" / "TRA", "man_track", planes=3)
    _ctc(tmp_path / "res", "mask", planes=3)
    out = evaluate_tracking(tmp_path / "res", tmp_path / "GT")
    assert (out["tra"], out["frames"]) == (1.0, 2)


def test_eval_track_scores_a_plane_saved_as_a_stack_of_one_against_a_plane(tmp_path: Path) -> None:
    """(Shapes are compared whole now: (1, H, W), as tifffile keeps a plane's shape, is still
    the size of an (H, W) marker.)"""
    _ctc(tmp_path / "GT" / "TRA", "man_track", planes=1)
    for t in range(2):
        tifffile.imwrite(
            tmp_path / "GT" / "TRA" / f"man_track{t:03d}.tif",
            tifffile.imread(tmp_path / "GT" / "TRA" / f"man_track{t:03d}.tif")[0],
        )
    _ctc(tmp_path / "res", "mask", planes=1)
    with tifffile.TiffFile(tmp_path / "res" / "mask000.tif") as tf:
        assert tf.series[0].shape == (1, 32, 32)
    assert evaluate_tracking(tmp_path / "res", tmp_path / "GT")["tra"] == 1.0
