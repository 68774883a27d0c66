"""Independent review of the segmentation scoring (``_metrics``, ``_evaluate``)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from livescope.inference import evaluate_segmentation, match_counts, scores
from livescope.schema import LivescopeError


def _grid(n: int, side: int, pitch: int) -> np.ndarray:
    """``n`` x ``n`` square nuclei of ``side`` px, one every ``pitch`` px, labels 1, 2, ..."""
    lab = np.zeros((n * pitch, n * pitch), np.int32)
    for k in range(n * n):
        r, c = divmod(k, n)
        lab[r * pitch : r * pitch + side, c * pitch : c * pitch + side] = k + 1
    return lab


def test_matching_many_nuclei_takes_memory_in_proportion_to_the_pixels() -> None:
    """(Every true object was tabled against every predicted one: 2.7 GB and 11 s for 8,100
    nuclei in a 1080² image; a large tile of densely packed nuclei ran out of memory.)"""
    truth = _grid(55, 2, 3)  # 3,025 nuclei in 165² px
    pred = truth.copy()
    pred[::3] = 0  # each nucleus found without its top row: IoU 0.5
    tracemalloc.start()
    try:
        c = match_counts(truth, pred)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (c.n_true, c.n_pred, c.tp[0.5], c.tp[0.55]) == (3025, 3025, 3025, 0)
    # a table of 3,025 x 3,025 float64 alone is 73 MB; the image is 109 kB
    assert peak < 100 * truth.nbytes


def test_ties_at_iou_one_half_are_one_match_per_group() -> None:
    truth = np.zeros((8, 40), np.uint16)
    pred = np.zeros_like(truth)
    truth[0:4, 0:4] = 1  # a nucleus cut in two equal halves: IoU 0.5 with each
    pred[0:4, 0:2], pred[0:4, 2:4] = 1, 2
    truth[0:4, 10:12], truth[0:4, 12:14] = 2, 3  # two equal nuclei found as one
    pred[0:4, 10:14] = 3
    truth[0:4, 20:24] = 4  # found a little too large: IoU 16/20, no tie
    pred[0:4, 20:25] = 4
    truth[0:2, 30:36] = 5  # half of it found, and half as much again beside it: IoU 6/15
    pred[0:1, 30:39] = 5
    c = match_counts(truth, pred)
    # one match per tie group, one for nucleus 4; at 0.55 only nucleus 4 (0.8)
    assert (c.tp[0.5], c.tp[0.55], c.tp[0.8], c.tp[0.85]) == (3, 1, 1, 0)
    # nucleus 3 (or 2) is merged, 5 is held half by prediction 5 (misdrawn); pred 2 (or 1) is
    # a piece of a matched nucleus
    assert c.errors == {
        "merged": 1, "split": 0, "missed": 0, "misdrawn": 1, "spurious": 0, "fragment": 1
    }  # fmt: skip
    s = scores(c)
    assert (s["precision"], s["recall"]) == (0.6, 0.6)


@pytest.mark.parametrize(
    ("true_dtype", "pred_dtype"),
    [
        pytest.param(np.uint8, np.float32, id="float-predictions"),
        pytest.param(np.uint64, np.int64, id="huge-ids"),
    ],
)
def test_labels_of_any_type_and_ids_are_scored_alike(true_dtype: type, pred_dtype: type) -> None:
    truth = _grid(4, 5, 8)
    pred = np.roll(truth, 1, axis=1)  # each nucleus found one column to the right: IoU 20/30
    t = np.where(truth > 0, truth.astype(np.uint64) * (2**40 if true_dtype is np.uint64 else 1), 0)
    c = match_counts(t.astype(true_dtype), pred.astype(pred_dtype))
    assert (c.n_true, c.n_pred, c.tp[0.65], c.tp[0.7]) == (16, 16, 16, 0)


def _folders(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """An image folder with one noisy frame of three nuclei (a.png), an empty labels folder."""
    truth = np.zeros((40, 40), np.uint8)
    truth[4:14, 4:14], truth[20:32, 6:16], truth[8:18, 24:36] = 1, 2, 3
    rng = np.random.default_rng(0)
    frame = np.where(truth > 0, 200, 20) + rng.integers(0, 12, truth.shape)
    for d in ("images", "labels"):
        (tmp_path / d).mkdir()
    Image.fromarray(frame.astype(np.uint8)).save(tmp_path / "images" / "a.png")
    return tmp_path / "images", tmp_path / "labels", truth


def test_palette_png_labels_are_scored_by_their_indices(tmp_path: Path) -> None:
    """(A label image saved as an indexed-colour PNG, as annotation tools do, was read as its
    colours: refused as an image of another shape, though its indices are the nuclei's ids.)"""
    images, labels, truth = _folders(tmp_path)
    png = Image.fromarray(truth, mode="P")
    png.putpalette([0, 0, 0, 230, 25, 75, 60, 180, 75, 255, 225, 25])  # a colour per nucleus
    png.save(labels / "a.png")
    out = evaluate_segmentation(None, images, labels, classical=True)
    assert (out["n_true"], out["n_pred"], out["ap50"]) == (3, 3, 1.0)


def test_colour_labels_are_named_as_colour(tmp_path: Path) -> None:
    images, labels, truth = _folders(tmp_path)
    colours = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25]], np.uint8)
    Image.fromarray(colours[truth]).save(labels / "a.png")  # RGB, each nucleus a colour
    with pytest.raises(LivescopeError, match=r"a\.png is a colour image, each nucleus a colour"):
        evaluate_segmentation(None, images, labels, classical=True)
