"""Recorded datasets (independent review): CTC frames as their files hold them, bad arguments."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.record import DatasetError, FrameKey, open_dataset

from ..conftest import shared_subfolder


def _ctc(folder: Path, images: dict[int, np.ndarray], **kwargs: object) -> Path:
    folder.mkdir(parents=True)
    for t, image in images.items():
        tifffile.imwrite(folder / f"t{t:03d}.tif", image, **kwargs)  # type: ignore[arg-type]
    return folder


def test_a_ctc_frame_written_plane_by_plane_is_refused_not_read_as_its_first_plane(
    tmp_path: Path,
) -> None:
    # a z-stack written one plane at a time (imwrite(..., append=True)): tifffile sees
    # one series per plane, and the first of them is 2-D
    folder = tmp_path / "01"
    folder.mkdir()
    for z in range(3):
        tifffile.imwrite(folder / "t000.tif", np.full((8, 9), z, np.uint16), append=z > 0)
    with pytest.raises(DatasetError, match=r"t000\.tif: .*3 planes of 8 × 9"):
        open_dataset(folder)


def test_a_ctc_frame_with_a_thumbnail_is_still_one_frame(tmp_path: Path) -> None:
    folder = tmp_path / "01"
    folder.mkdir()
    image = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    tifffile.imwrite(folder / "t000.tif", image)
    tifffile.imwrite(folder / "t000.tif", image[::8, ::8], append=True)  # (a preview)
    with open_dataset(folder) as ds:
        assert np.array_equal(ds.read(FrameKey("p0", 0, "Fluo")), image)


def test_a_ctc_frame_of_shape_1_h_w_is_a_2d_frame(tmp_path: Path) -> None:
    image = np.arange(8 * 9, dtype=np.uint16).reshape(1, 8, 9)
    with open_dataset(_ctc(tmp_path / "01", {0: image, 1: image})) as ds:
        assert [f.shape for f in ds.frames] == [(8, 9), (8, 9)]
        assert np.array_equal(ds.read(FrameKey("p0", 1, "Fluo")), image[0])


def test_damaged_pixels_of_a_ctc_frame_are_a_dataset_error_naming_the_file(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 60000, (64, 64), dtype=np.uint16)
    folder = _ctc(tmp_path / "01", {0: image}, compression="zlib")
    data = bytearray((folder / "t000.tif").read_bytes())
    with tifffile.TiffFile(folder / "t000.tif") as tf:
        start = tf.pages[0].dataoffsets[0]
    data[start : start + 64] = b"\xff" * 64  # the header stays readable: it opens
    (folder / "t000.tif").write_bytes(bytes(data))
    with open_dataset(folder) as ds, pytest.raises(DatasetError, match=r"t000\.tif: cannot be"):
        ds.read(FrameKey("p0", 0, "Fluo"))


@pytest.mark.parametrize(
    ("kwargs", "um"),
    [
        ({"resolution": (1e4 / 0.25, 1e4 / 0.25), "resolutionunit": "CENTIMETER"}, 0.25),
        ({"resolution": (1e3 / 0.5, 1e3 / 0.5), "resolutionunit": "MILLIMETER"}, 0.5),
        ({"imagej": True, "resolution": (1 / 0.4, 1 / 0.4), "metadata": {"unit": "micron"}}, 0.4),
        ({"resolution": (72.0, 72.0), "resolutionunit": "INCH"}, None),  # (a screen's default)
        ({}, None),
    ],
    ids=["cm", "mm", "imagej-micron", "72-dpi", "none"],
)
def test_a_ctc_frame_s_pixel_size_is_read_from_its_tiff_tags(
    tmp_path: Path, kwargs: dict[str, object], um: float | None
) -> None:
    image = np.zeros((8, 9), np.uint16)
    with open_dataset(_ctc(tmp_path / "01", {0: image}, **kwargs)) as ds:
        got = ds.frames[0].pixel_size_um
        assert got == (pytest.approx(um, rel=1e-4) if um is not None else None)
    with open_dataset(tmp_path / "01", pixel_size_um=0.1) as ds:  # given: it wins
        assert ds.frames[0].pixel_size_um == 0.1


def test_the_gowt1_frames_state_their_pixel_size() -> None:
    folder = shared_subfolder("ctc-Fluo-N2DH-GOWT1") / "01"
    with open_dataset(folder) as ds:
        # (the Cell Tracking Challenge states 0.240 µm for Fluo-N2DH-GOWT1)
        assert ds.frames[0].pixel_size_um == pytest.approx(0.2405, abs=1e-3)


@pytest.mark.parametrize("interval_s", [0.0, -1.0, math.nan, math.inf])
def test_an_interval_that_is_no_time_is_refused(tmp_path: Path, interval_s: float) -> None:
    folder = _ctc(tmp_path / "01", {0: np.zeros((8, 9), np.uint8)})
    with pytest.raises(DatasetError, match=r"interval .* it must be above 0"):
        open_dataset(folder, interval_s=interval_s)
