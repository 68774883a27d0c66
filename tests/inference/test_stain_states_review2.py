"""Second review of the virtual stain's and the cell states' evaluation: blank frames, pairing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.inference import StainEngine, cell_crops, evaluate_stain, parse_crop
from livescope.schema import LivescopeError

STAIN = "nuclei-stain"


@pytest.fixture(scope="module")
def stain() -> StainEngine:
    return StainEngine(STAIN, backend="onnxruntime")


def _field(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A label-free frame and its nuclear stain: a few round nuclei on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :128]
    nuclei = np.zeros((128, 128))
    for cy, cx in rng.uniform(15, 113, (6, 2)):
        nuclei += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 50)
    phase = 1000 + 300 * nuclei - 150 * np.roll(nuclei, 2, axis=1) + rng.normal(0, 20, nuclei.shape)
    dapi = 100 + 2000 * nuclei + rng.normal(0, 10, nuclei.shape)
    return phase.clip(0, None).astype(np.uint16), dapi.clip(0, None).astype(np.uint16)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three label-free/stain pairs (128²) in an input and a target folder."""
    root = tmp_path_factory.mktemp("stain-pairs")
    inp, target = root / "input", root / "target"
    inp.mkdir()
    target.mkdir()
    for i in range(3):
        phase, dapi = _field(i)
        tifffile.imwrite(inp / f"f{i}.tif", phase)
        tifffile.imwrite(target / f"f{i}.tif", dapi)
    return inp, target


def _copy(src: Path, dst: Path, blank: dict[str, str]) -> None:
    """Copy a folder's images, ``blank`` (file name -> 'zero' or 'flat') made constant."""
    dst.mkdir()
    for p in sorted(src.iterdir()):
        img = tifffile.imread(p)
        if p.name in blank:
            img = np.zeros_like(img) if blank[p.name] == "zero" else np.full_like(img, 100)
        tifffile.imwrite(dst / p.name, img)


def test_a_blank_frame_in_a_folder_is_listed_unscored_not_the_end_of_the_scores(
    stain: StainEngine, pairs: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a black DAPI frame (f0) and a label-free frame without contrast (f2: its stain is all
    # zero): Pearson r is undefined for both; the folder's other frame is still scored
    inp, target = pairs
    _copy(inp, tmp_path / "input", {"f2.tif": "flat"})
    _copy(target, tmp_path / "target", {"f0.tif": "zero"})
    with caplog.at_level(logging.WARNING, logger="livescope"):
        out = evaluate_stain(stain, tmp_path / "input", tmp_path / "target")
    alone = evaluate_stain(stain, inp / "f1.tif", target / "f1.tif")
    assert out["frames"] == 1
    assert [u["input"] for u in out["unscored"]] == ["f0.tif", "f2.tif"]
    assert "the target is constant" in out["unscored"][0]["why"]
    assert "the prediction is constant" in out["unscored"][1]["why"]
    assert all("Pearson r is undefined" in u["why"] for u in out["unscored"])
    for k in ("pearson", "ssim", "psnr"):
        assert out[k] == alone[k]
        assert [r[k] for r in out["per_frame"]] == [None, alone[k], None]
    assert len(out["per_frame"]) == 3  # every frame ran, and its time counts
    assert "f0.tif: not scored" in caplog.text
    assert alone["unscored"] == []


def test_a_single_blank_pair_has_no_scores_said_not_an_error(
    stain: StainEngine, pairs: tuple[Path, Path], tmp_path: Path
) -> None:
    inp, target = pairs
    blank = tmp_path / "blank.tif"
    tifffile.imwrite(blank, np.full((128, 128), 7, np.uint16))
    out = evaluate_stain(stain, inp / "f0.tif", blank)
    assert (out["pearson"], out["ssim"], out["psnr"], out["frames"]) == (None, None, None, 0)
    assert out["unscored"][0]["input"] == "f0.tif"
    # constant only inside the crop (the target's normalisation is over the whole frame)
    flat = tifffile.imread(target / "f1.tif").copy()
    flat[:, 100:] = flat.min()
    tifffile.imwrite(tmp_path / "f1.tif", flat)
    out = evaluate_stain(stain, inp / "f1.tif", tmp_path / "f1.tif", crop=parse_crop(":,100:"))
    assert out["frames"] == 0
    assert "the target is constant inside the crop" in out["unscored"][0]["why"]


def test_a_crop_too_small_to_score_names_the_file(
    stain: StainEngine, pairs: tuple[Path, Path]
) -> None:
    inp, target = pairs
    with pytest.raises(LivescopeError, match=r"^f0.tif: \(5, 128\) px is too small to score"):
        evaluate_stain(stain, inp, target, crop=parse_crop("0:5,:"))


@pytest.mark.parametrize("what", ["folder", "file"])
def test_input_and_target_the_same_are_refused(
    stain: StainEngine, pairs: tuple[Path, Path], what: str
) -> None:
    # each frame scored against itself gave figures that mean nothing, without a word
    inp, _ = pairs
    path = inp if what == "folder" else inp / "f0.tif"
    with pytest.raises(LivescopeError, match=f"input and target are the same {what}"):
        evaluate_stain(stain, path, path)


def test_crops_of_a_few_cells_in_a_large_frame_cost_the_cells_not_the_frame() -> None:
    # a frame-sized int64 copy, two frame-sized weights and two padded copies of the frame
    # took ~30 bytes per pixel (1.6 GB for two cells in an 8192² mosaic)
    import tracemalloc

    image = np.zeros((2048, 2048), np.float32)
    labels = np.zeros(image.shape, np.int32)
    labels[100:110, 100:110] = 1
    labels[1000:1010, 2040:] = 2  # cut by the border
    tracemalloc.start()
    try:
        ids, crops = cell_crops(image, labels, 48)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ids.tolist() == [1, 2]
    assert crops[:, 1].sum(axis=(1, 2)).tolist() == [100, 80]
    assert peak < image.size  # under a byte per pixel of the frame


def _crops_cell_by_cell(image: np.ndarray, labels: np.ndarray, size: int) -> np.ndarray:
    """The crops as the docstring says, one cell at a time (the reference)."""
    h, w = labels.shape
    out = []
    for cid in np.unique(labels[labels > 0]):
        ys, xs = np.nonzero(labels == cid)
        y0, x0 = int(np.round(ys.mean())) - size // 2, int(np.round(xs.mean())) - size // 2
        crop = np.zeros((2, size, size), np.float32)
        for dy in range(size):
            for dx in range(size):
                if 0 <= y0 + dy < h and 0 <= x0 + dx < w:
                    crop[0, dy, dx] = image[y0 + dy, x0 + dx]
                    crop[1, dy, dx] = labels[y0 + dy, x0 + dx] == cid
        out.append(crop)
    return np.stack(out)


@pytest.mark.parametrize(
    ("dtype", "step"),
    [
        pytest.param(np.uint16, 1, id="uint16"),
        pytest.param(np.uint32, 3, id="uint32-gaps"),
        pytest.param(np.int64, 1, id="int64"),
        pytest.param(np.uint64, 1_000_003, id="uint64-sparse"),
    ],
)
def test_crops_match_cell_by_cell_for_every_label_type(dtype: type, step: int) -> None:
    rng = np.random.default_rng(step)
    h, w = 37, 53
    yy, xx = np.mgrid[:h, :w]
    labels = np.zeros((h, w), np.int64)
    for k in range(1, 12):  # at the borders, 1-2 px specks, cells cut by later ones
        cy, cx, r = rng.uniform(-3, h + 3), rng.uniform(-3, w + 3), rng.uniform(0.6, 7)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k * step
    labels = labels.astype(dtype)
    image = rng.random((h, w)).astype(np.float32)
    ids, crops = cell_crops(image, labels, 15)
    assert ids.dtype == np.int64
    assert ids.tolist() == np.unique(labels[labels > 0]).tolist()
    np.testing.assert_array_equal(crops, _crops_cell_by_cell(image, labels, 15))
