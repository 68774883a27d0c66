"""Scores of the shipped segmentation engine on real annotated data (fit, not generalisation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.inference import paired_files, read_image
from livescope.schema import LivescopeError

from ..conftest import run_cli


def _eval(shared: Path, sub: str, engine: str = "nuclei-unet", *extra: str) -> dict:
    res = run_cli(
        "eval", "seg", "--engine", engine, "--images", str(shared / sub / "images"),
        "--labels", str(shared / sub / "labels"), "--json", *extra,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_eval_reports_every_score(shared_data: Path) -> None:
    out = _eval(shared_data, "nuclei-mnfinder/validation")
    keys = {"ap50", "map", "f1", "precision", "recall", "n_true", "n_pred", "ms_engine", "ms_post"}
    assert keys <= set(out)
    assert out["n_true"] == 232
    assert 0 < out["map"] < out["ap50"] <= 1


# Issue 4's targets (measured on the shipped engine: AP50 0.827; DSB2018 F1 0.813).
def test_mnfinder_validation_ap50_target(shared_data: Path) -> None:
    assert _eval(shared_data, "nuclei-mnfinder/validation")["ap50"] >= 0.80


# strict: once a better model meets it, this fails until the mark is removed.
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,  # only the missed target; a crash still fails
    reason="issue 4 target F1 >= 0.88 on DSB2018 not met yet (0.813)",
)
def test_dsb2018_f1_target(shared_data: Path) -> None:
    assert _eval(shared_data, "nuclei-dsb2018")["f1"] >= 0.88


def test_network_beats_the_classical_pipeline(shared_data: Path) -> None:
    net = _eval(shared_data, "nuclei-mnfinder/validation")
    classical = _eval(shared_data, "nuclei-mnfinder/validation", engine="classical")
    assert net["ap50"] > classical["ap50"] + 0.2


def test_eval_seg_rescales_frames_to_a_stated_nucleus_diameter(shared_data: Path) -> None:
    as_is = _eval(shared_data, "nuclei-dsb2018")
    # the size the engine segments best (2 x its card's object_radius_px, 9.3): no change
    same = _eval(shared_data, "nuclei-dsb2018", "nuclei-unet", "--diameter", "18.6")
    assert same["scale"] == 1.0
    assert (same["f1"], same["n_pred"]) == (as_is["f1"], as_is["n_pred"])
    zoomed = _eval(shared_data, "nuclei-dsb2018", "nuclei-unet", "--diameter", "12")
    assert zoomed["scale"] == pytest.approx(1.55)
    assert zoomed["n_true"] == as_is["n_true"]  # (labels scored at the images' size)
    assert zoomed["n_pred"] != as_is["n_pred"]


def test_pairs_skip_dot_files_and_unreadable_images_are_named(tmp_path: Path) -> None:
    for d in ("images", "labels"):
        (tmp_path / d).mkdir()
        tifffile.imwrite(tmp_path / d / "a.tif", np.zeros((8, 8), np.uint16))
    (tmp_path / "images" / "._a.tif").write_bytes(b"\x00\x05\x16\x07")  # macOS metadata
    assert [p.name for p, _ in paired_files(tmp_path / "images", tmp_path / "labels")] == ["a.tif"]
    with pytest.raises(LivescopeError, match=r"\._a\.tif: cannot read it as an image"):
        read_image(tmp_path / "images" / "._a.tif")


def test_labels_without_their_image_are_named_not_skipped_unseen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # an image misnamed (or left out) had its labels pass unscored without a word
    for d in ("images", "labels"):
        (tmp_path / d).mkdir()
        tifffile.imwrite(tmp_path / d / "a.tif", np.zeros((8, 8), np.uint16))
    tifffile.imwrite(tmp_path / "labels" / "b.tif", np.zeros((8, 8), np.uint16))
    (tmp_path / "labels" / "._b.tif").write_bytes(b"\x00\x05\x16\x07")  # (not an image)
    with caplog.at_level("WARNING", logger="livescope"):
        pairs = paired_files(tmp_path / "images", tmp_path / "labels")
    assert [p.name for p, _ in pairs] == ["a.tif"]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1, said
    assert "1 label file(s)" in said[0]
    assert said[0].endswith("not scored: b.tif")


def test_a_binary_mask_as_labels_is_refused(tmp_path: Path) -> None:
    from livescope.inference import evaluate_segmentation

    for d in ("images", "labels"):
        (tmp_path / d).mkdir()
    mask = np.zeros((32, 32), np.uint8)
    mask[2:8, 2:8] = mask[20:28, 20:28] = 255
    tifffile.imwrite(tmp_path / "images" / "a.tif", mask.astype(np.uint16) * 4 + 100)
    tifffile.imwrite(tmp_path / "labels" / "a.tif", mask)
    with pytest.raises(LivescopeError, match=r"a\.tif: the labels look like a binary mask"):
        evaluate_segmentation(None, tmp_path / "images", tmp_path / "labels", classical=True)
    labels = (mask > 0).astype(np.uint16)
    labels[20:28, 20:28] = 2
    tifffile.imwrite(tmp_path / "labels" / "a.tif", labels)
    nan = mask.astype(np.float32)
    nan[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "images" / "a.tif", nan)
    with pytest.raises(LivescopeError, match=r"a\.tif: the image holds NaN"):
        evaluate_segmentation(None, tmp_path / "images", tmp_path / "labels", classical=True)
    from livescope.inference import SegmentationEngine

    with (  # the file is named with an engine too
        SegmentationEngine("nuclei-unet") as engine,
        pytest.raises(LivescopeError, match=r"a\.tif: the image holds NaN"),
    ):
        evaluate_segmentation(engine, tmp_path / "images", tmp_path / "labels")
    with pytest.raises(LivescopeError, match=r"nope does not exist"):
        evaluate_segmentation(None, tmp_path / "nope", tmp_path / "labels", classical=True)


def test_a_tiff_cut_short_before_its_directory_is_named_as_damaged(tmp_path: Path) -> None:
    import struct

    # (writers that put the image directory after the pixels, as GOWT1's files have it: a
    # copy cut short keeps a header pointing past its end, and tifffile reads 0 pixels)
    (tmp_path / "a.tif").write_bytes(b"II*\x00" + struct.pack("<I", 279520) + bytes(5000))
    with pytest.raises(LivescopeError, match=r"a\.tif: no pixels could be read \(a truncated"):
        read_image(tmp_path / "a.tif")


def test_grey_or_one_channel_saved_as_colour_is_scored_as_its_plane(
    tmp_path: Path, shared_data: Path
) -> None:
    from skimage.io import imsave

    from livescope.inference import evaluate_segmentation

    src = shared_data / "nuclei-dsb2018"
    plain = evaluate_segmentation(None, src / "images", src / "labels", classical=True)
    for d in ("images", "labels"):
        (tmp_path / d).mkdir()
    for p in sorted((src / "images").glob("*.tif")):
        grey = tifffile.imread(p)
        labels = tifffile.imread(src / "labels" / p.name)
        if grey.dtype == np.uint8:  # grey as RGBA, as the Data Science Bowl's PNGs are
            rgba = np.stack([grey] * 3 + [np.full_like(grey, 255)], -1)
            imsave(tmp_path / "images" / f"{p.stem}.png", rgba, check_contrast=False)
            imsave(tmp_path / "labels" / f"{p.stem}.png", labels, check_contrast=False)
        else:  # a blue-only DAPI image (16-bit RGB: TIFF)
            blue = np.zeros((*grey.shape, 3), grey.dtype)
            blue[..., 2] = grey
            tifffile.imwrite(tmp_path / "images" / p.name, blue, photometric="rgb")
            tifffile.imwrite(tmp_path / "labels" / p.name, labels)
    assert [read_image(p).ndim for p in sorted((tmp_path / "images").iterdir())] == [2, 2]
    coloured = evaluate_segmentation(None, tmp_path / "images", tmp_path / "labels", classical=True)
    for key in ("ap50", "f1", "n_true", "n_pred"):
        assert coloured[key] == plain[key], key
    # colour whose channels differ, or an alpha that varies, is not one plane
    rgba[:4, :4, 3] = 0
    assert read_image_from(tmp_path / "x.png", rgba).shape == rgba.shape
    rgba[..., 3] = rgba[0, 0, 3]
    rgba[..., 0] //= 2
    assert read_image_from(tmp_path / "x.png", rgba).shape == rgba.shape


def read_image_from(path: Path, image: np.ndarray) -> np.ndarray:
    from skimage.io import imsave

    imsave(path, image, check_contrast=False)
    return read_image(path)


def _labels_refused(tmp_path: Path, image: np.ndarray, labels: np.ndarray) -> str:
    from livescope.inference import evaluate_segmentation

    for d, a in (("images", image), ("labels", labels)):
        (tmp_path / d).mkdir(exist_ok=True)
        tifffile.imwrite(tmp_path / d / "a.tif", a, photometric="minisblack")
    with pytest.raises(LivescopeError) as info:
        evaluate_segmentation(None, tmp_path / "images", tmp_path / "labels", classical=True)
    return str(info.value)


def test_ground_truth_that_is_not_instance_labels_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((64, 64), np.uint16)
    labels[4:20, 4:20], labels[30:50, 30:50] = 1, 2
    image = rng.integers(100, 4000, labels.shape).astype(np.uint16)
    assert "fractional values (float32)" in _labels_refused(
        tmp_path, image, labels.astype(np.float32) + 0.5
    )
    assert "negative values" in _labels_refused(tmp_path, image, labels.astype(np.int16) - 1)
    assert "were --images and --labels swapped?" in _labels_refused(tmp_path, labels, image)
    assert "not one 2-D plane" in _labels_refused(tmp_path, np.stack([image] * 4), labels)
    # whole-number floats are labels all the same
    from livescope.inference import evaluate_segmentation

    tifffile.imwrite(tmp_path / "labels" / "a.tif", labels.astype(np.float32))
    tifffile.imwrite(tmp_path / "images" / "a.tif", (labels > 0) * 1000 + 100)
    r = evaluate_segmentation(None, tmp_path / "images", tmp_path / "labels", classical=True)
    assert r["n_true"] == 2


def test_eval_bad_folders_give_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "images" / "a.tif").write_bytes(b"")
    res = run_cli("eval", "seg", "--engine", "nuclei-unet", "--images", str(tmp_path / "images"),
                  "--labels", str(tmp_path / "labels"), "--json")  # fmt: skip
    assert res.returncode == 2
    assert "no label file" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli(
        "eval", "seg", "--engine", "nope", "--images", str(tmp_path), "--labels", str(tmp_path)
    )
    assert res.returncode == 2
    assert "no engine 'nope'" in res.stderr


def test_labels_given_as_images_are_refused(tmp_path: Path) -> None:
    from livescope.inference import evaluate_segmentation

    labels = np.zeros((64, 64), np.uint16)
    labels[4:20, 4:20], labels[30:50, 30:50] = 1, 2
    for d in ("labels", "copy"):
        (tmp_path / d).mkdir()
        tifffile.imwrite(tmp_path / d / "a.tif", labels)
    folder = tmp_path / "labels"
    with pytest.raises(LivescopeError, match=r"--images and --labels are the same folder"):
        evaluate_segmentation(None, folder, tmp_path / "." / "labels", classical=True)
    with pytest.raises(LivescopeError, match=r"a\.tif: the image is its own label image"):
        evaluate_segmentation(None, tmp_path / "copy", folder, classical=True)
    other = tmp_path / "other"  # another tile's labels given as the image
    other.mkdir()
    tifffile.imwrite(other / "a.tif", np.roll(labels, 7, axis=1) * 3)
    with pytest.raises(LivescopeError, match=r"a\.tif \(--images\): this is an instance label "
                       r"image, not a frame to segment \(2 objects"):  # fmt: skip
        evaluate_segmentation(None, other, folder, classical=True)


def test_dim_frames_with_flat_patches_are_not_taken_for_labels() -> None:
    from skimage.measure import label

    from livescope.inference import refuse_label_image

    # a dim 8-bit frame: few grey levels, most neighbours equal, but each level in many places
    yy, xx = np.mgrid[:128, :128]
    blobs = sum(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 60.0)
                for cy, cx in [(20, 20), (20, 90), (70, 50), (100, 100), (110, 20)])  # fmt: skip
    frame = np.round(12 * blobs).astype(np.uint8)
    refuse_label_image(frame, "dim")  # (no error)
    refuse_label_image(frame + np.uint8(2), "dim, no zeros")
    # noise-free frames on a background of exactly 0: each grey level one ring, nested
    one = np.round(12 * np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / 800.0)).astype(np.uint8)
    refuse_label_image(one, "one smooth nucleus")
    refuse_label_image(one.astype(np.uint16), "one smooth nucleus, 16-bit")
    two = np.round(
        12 * np.exp(-((yy - 40) ** 2 + (xx - 40) ** 2) / 300.0)
        + 4 * np.exp(-((yy - 90) ** 2 + (xx - 90) ** 2) / 300.0)
    ).astype(np.uint8)
    refuse_label_image(two, "two nuclei of different brightness")
    refuse_label_image(np.zeros((16, 16), np.uint16), "empty")
    refuse_label_image((frame > 3).astype(np.uint8), "a binary mask")  # one value: not told
    with pytest.raises(LivescopeError, match="labels: this is an instance label image"):
        refuse_label_image(label((frame > 3).astype(np.uint8)).astype(np.uint16), "labels")
    dense = np.kron(np.arange(1, 145).reshape(12, 12), np.ones((10, 10))).astype(np.uint16)
    dense[:2] = 0  # confluent cells: most labels touch only each other
    with pytest.raises(
        LivescopeError,
        match=r"dense: this is an instance label image, not a frame to segment \(144",
    ):
        refuse_label_image(dense, "dense")


@pytest.mark.parametrize("sub", ["nuclei-dsb2018"])
def test_eval_per_image(shared_data: Path, sub: str) -> None:
    folder = shared_data / sub
    res = run_cli("eval", "seg", "--engine", "nuclei-unet", "--images", str(folder / "images"),
                  "--labels", str(folder / "labels"), "--per-image", "--json")  # fmt: skip
    out = json.loads(res.stdout)
    assert [p["image"] for p in out["per_image"]] == ["dsb2018_256.tif", "dsb2018_512.tif"]
    # what went wrong, per image and in all: the unmatched objects, each counted once
    for r in (*out["per_image"], out):
        tp = round(r["recall"] * r["n_true"])
        wrong = r["errors"]
        assert set(wrong) == {"merged", "split", "missed", "misdrawn", "spurious", "fragment"}
        assert wrong["merged"] + wrong["split"] + wrong["missed"] + wrong["misdrawn"] == (
            r["n_true"] - tp
        )
        assert wrong["spurious"] + wrong["fragment"] <= r["n_pred"] - tp
    assert out["errors"] == {
        k: sum(p["errors"][k] for p in out["per_image"]) for k in out["errors"]
    }


def test_each_kind_of_segmentation_error_is_named() -> None:
    from livescope.inference import match_counts

    true = np.zeros((40, 80), np.uint16)
    pred = np.zeros_like(true)
    true[2:10, 2:10], pred[2:10, 2:10] = 1, 1  # found
    true[2:10, 12:18], true[2:10, 18:24] = 2, 3  # two touching nuclei ...
    pred[2:10, 11:25] = 2  # ... found as one
    true[12:24, 2:14] = 4  # one nucleus ...
    pred[12:24, 2:6], pred[12:24, 6:10], pred[12:24, 10:14] = 3, 4, 7  # ... cut in three
    true[12:20, 20:28] = 5  # not found
    true[28:32, 2:6] = 6  # a small nucleus ...
    pred[26:36, 0:10] = 5  # ... drawn far too large
    pred[30:38, 60:70] = 6  # found where there is none
    true[26:38, 40:52] = 7  # a nucleus found ...
    pred[26:38, 40:50], pred[26:38, 50:52] = 8, 9  # ... with a piece of it apart
    true[12:24, 60:72] = 8  # a nucleus ...
    pred[14:18, 62:66] = 10  # ... found as a small part of it
    c = match_counts(true, pred)
    assert (c.n_true, c.n_pred, c.tp[0.5]) == (8, 10, 2)
    assert c.errors == {
        "merged": 2, "split": 1, "missed": 1, "misdrawn": 2, "spurious": 1, "fragment": 1
    }  # fmt: skip
    # a nucleus cut in two halves: one is matched (IoU 0.5), the other is a fragment
    half = np.zeros((4, 8), np.uint16)
    half[:2, :4] = 1
    halves = np.zeros_like(half)
    halves[:2, :2], halves[:2, 2:4] = 1, 2
    c = match_counts(half, halves)
    assert (c.tp[0.5], c.errors["fragment"], sum(c.errors.values())) == (1, 1, 1)
    # nothing predicted: every nucleus missed; nothing true: every object spurious
    assert match_counts(true, np.zeros_like(true)).errors["missed"] == 8
    assert match_counts(np.zeros_like(true), pred).errors["spurious"] == 10


def test_an_empty_tile_with_empty_labels_is_scored(tmp_path: Path) -> None:
    from livescope.inference import evaluate_segmentation

    for d in ("images", "labels"):
        (tmp_path / d).mkdir()
        tifffile.imwrite(tmp_path / d / "a.tif", np.zeros((32, 32), np.uint16))
    r = evaluate_segmentation(None, tmp_path / "images", tmp_path / "labels", classical=True)
    assert r["n_true"] == 0
