"""Reading images and datasets: planes saved as series of their own, ImageJ units, channel names."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.inference import evaluate_segmentation, read_image
from livescope.record import open_dataset
from livescope.schema import LivescopeError


@pytest.fixture(autouse=True)
def _tifffile_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Let tifffile log its warnings, as it does by default (livescope reads them)."""
    caplog.set_level(logging.WARNING, "tifffile")


def _planes(n: int, shape: tuple[int, int] = (16, 16)) -> list[np.ndarray]:
    return [np.full(shape, 10 * (k + 1), np.uint16) for k in range(n)]


# --- read_image: every series of one plane shape, not series 0 alone ----------------------------


def test_read_image_plane_by_plane_stack_is_every_plane(tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    for plane in _planes(3):  # a z-stack saved plane by plane: a series each
        tifffile.imwrite(path, plane, append=True)
    image = read_image(path)
    assert image.shape == (3, 16, 16)
    assert [int(image[k, 0, 0]) for k in range(3)] == [10, 20, 30]


def test_read_image_multi_position_ome_tiff_is_every_position(tmp_path: Path) -> None:
    path = tmp_path / "two_positions.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        for plane in _planes(2):
            tw.write(plane)
    assert read_image(path).shape == (2, 16, 16)


def test_read_image_pyramid_levels_and_other_sizes_are_not_planes(tmp_path: Path) -> None:
    pyramid = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(pyramid, ome=True) as tw:
        tw.write(np.full((64, 64), 7, np.uint16), subifds=1)
        tw.write(np.full((32, 32), 7, np.uint16), subfiletype=1)  # its half-resolution level
    assert read_image(pyramid).shape == (64, 64)
    thumbnail = tmp_path / "thumb.tif"  # a plane and a preview of another size
    tifffile.imwrite(thumbnail, np.full((64, 64), 3, np.uint16))
    tifffile.imwrite(thumbnail, np.full((8, 8), 3, np.uint8), append=True)
    assert read_image(thumbnail).shape == (64, 64)


def test_read_image_single_page_and_one_write_stack_unchanged(tmp_path: Path) -> None:
    single = tmp_path / "one.tif"
    tifffile.imwrite(single, np.full((1, 16, 16), 5, np.uint16))
    assert read_image(single).shape == (16, 16)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.stack(_planes(3)), photometric="minisblack")
    assert read_image(stack).shape == (3, 16, 16)


def test_eval_seg_refuses_plane_by_plane_stack_naming_file_and_planes(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    image = tmp_path / "images" / "field1.tif"
    for plane in _planes(3, (64, 64)):
        tifffile.imwrite(image, plane, append=True)
    labels = np.zeros((64, 64), np.uint16)
    labels[20:40, 20:40] = 1
    tifffile.imwrite(tmp_path / "labels" / "field1.tif", labels)
    with pytest.raises(LivescopeError) as err:
        evaluate_segmentation(None, tmp_path / "images", tmp_path / "labels", classical=True)
    assert str(image) in str(err.value)
    assert "(3, 64, 64)" in str(err.value)  # the 3 planes, not plane 0 scored


# --- ImageJ TIFFs: the pixel size in any unit of length -----------------------------------------


@pytest.mark.parametrize(
    ("unit", "per_um"),
    [("micron", 1.0), ("um", 1.0), ("nm", 1e-3), ("mm", 1e3), ("cm", 1e4), ("m", 1e6)],
)
def test_ctc_imagej_pixel_size_in_any_unit_of_length(
    tmp_path: Path, unit: str, per_um: float
) -> None:
    for t in range(2):
        tifffile.imwrite(
            tmp_path / f"t{t:03d}.tif", np.zeros((16, 16), np.uint16), imagej=True,
            resolution=(per_um / 0.65, per_um / 0.65), metadata={"unit": unit},
        )  # fmt: skip
    ds = open_dataset(tmp_path)
    try:
        assert ds.frames[0].pixel_size_um == pytest.approx(0.65)
        assert ds.warnings == []
    finally:
        ds.close()


def test_ctc_imagej_unknown_unit_warns_once_pointing_to_pixel_size(tmp_path: Path) -> None:
    for t in range(3):
        tifffile.imwrite(
            tmp_path / f"t{t:03d}.tif", np.zeros((16, 16), np.uint16), imagej=True,
            resolution=(2.0, 2.0), metadata={"unit": "furlong"},
        )  # fmt: skip
    ds = open_dataset(tmp_path)
    try:
        assert ds.frames[0].pixel_size_um is None
        assert len(ds.warnings) == 1, ds.warnings
        assert "'furlong'" in ds.warnings[0]
        assert "--pixel-size" in ds.warnings[0]
        assert "t000.tif" in ds.warnings[0]
    finally:
        ds.close()
    given = open_dataset(tmp_path, pixel_size_um=0.3)  # given: nothing to warn of
    try:
        assert given.frames[0].pixel_size_um == 0.3
        assert given.warnings == []
    finally:
        given.close()


# --- replay --pixel-size: its help says it replaces the dataset's own ---------------------------


def test_replay_pixel_size_help_says_it_replaces() -> None:
    import typer.main

    from livescope.cli._app import app

    command = typer.main.get_command(app).commands["replay"]  # type: ignore[attr-defined]
    text = next(p.help for p in command.params if p.name == "pixel_size")
    assert "does not state" not in text  # (it replaces a recorded one too)
    assert "replaces the dataset's own" in text


# --- OME-TIFF: two channels of one name ---------------------------------------------------------


def test_ome_tiff_duplicate_channel_names_renamed_with_warning(tmp_path: Path) -> None:
    path = tmp_path / "dup.ome.tif"
    tifffile.imwrite(
        path, np.stack(_planes(2)),
        metadata={"axes": "CYX", "Channel": {"Name": ["GFP", "GFP"]}},
    )  # fmt: skip
    ds = open_dataset(path)
    try:
        assert ds.channels == ["GFP", "c1"]
        assert [int(ds.read(f.key)[0, 0]) for f in ds.frames] == [10, 20]
        notes = [w for w in ds.warnings if "GFP" in w]
        assert len(notes) == 1, ds.warnings
        assert str(path) in notes[0]
        assert "'c1'" in notes[0]
    finally:
        ds.close()


def test_ome_tiff_unnamed_channel_does_not_take_another_channels_name(tmp_path: Path) -> None:
    path = tmp_path / "names.ome.tif"
    tifffile.imwrite(
        path, np.stack(_planes(3)),
        metadata={"axes": "CYX", "Channel": {"Name": ["c1", "DAPI", "DAPI"]}},
    )  # fmt: skip
    ds = open_dataset(path)
    try:
        assert len(set(ds.channels)) == 3
        assert ds.channels[:2] == ["c1", "DAPI"]
    finally:
        ds.close()
