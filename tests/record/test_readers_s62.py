"""Readers and damaged files: BigTIFF names, CTC frames and masks, track files, tifffile's log."""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.record import (
    CtcTrack,
    DatasetError,
    open_dataset,
    read_ctc,
    rewrite_ctc_result,
    write_ctc,
)
from livescope.schema import LivescopeError


@pytest.fixture(autouse=True)
def _tifffile_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Let tifffile log its warnings, as it does by default (livescope reads them)."""
    caplog.set_level(logging.WARNING, "tifffile")


def _ome(path: Path, **kwargs: object) -> Path:
    """Write an OME-TIFF of two 16x16 uint16 time points (1 and 2)."""
    planes = np.stack([np.full((16, 16), v, np.uint16) for v in (1, 2)])
    tifffile.imwrite(path, planes, ome=True, metadata={"axes": "TYX"}, **kwargs)  # type: ignore[arg-type]
    return path


def _patch_tag(
    path: Path,
    page: int,
    code: int,
    *,
    dtype: int | None = None,
    count: int | None = None,
    value: int | None = None,
) -> None:
    """Overwrite the data type, count or (4-byte) value of tag ``code`` of a classic TIFF's page."""
    with tifffile.TiffFile(path) as tf:
        at = tf.pages[page].tags[code].offset  # type: ignore[union-attr]
    data = bytearray(path.read_bytes())
    for field, start, fmt in ((dtype, 2, "<H"), (count, 4, "<I"), (value, 8, "<I")):
        if field is not None:
            struct.pack_into(fmt, data, at + start, field)
    path.write_bytes(bytes(data))


def _tags_past_the_end(path: Path, page: int) -> None:
    """Make a page's count of tags run past the end of the file."""
    with tifffile.TiffFile(path) as tf:
        at = tf.pages[page].offset
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, at, (len(data) - at) // 12 + 2)
    path.write_bytes(bytes(data))


# --- BigTIFF OME-TIFFs as Bio-Formats names them ------------------------------------------


@pytest.mark.parametrize("suffix", [".btf", ".tf2", ".tf8", ".BTF"])
def test_a_bigtiff_ome_tiff_named_as_bio_formats_names_it_opens(
    tmp_path: Path, suffix: str
) -> None:
    from livescope.cli._replay import _dataset_problems

    path = _ome(tmp_path / f"a.ome{suffix}", bigtiff=True)
    with open_dataset(path) as ds:
        assert [f.key.t for f in ds.frames] == [0, 1]
        assert [int(ds.read(f.key)[0, 0]) for f in ds.frames] == [1, 2]
    assert _dataset_problems([path]) == []


def test_a_file_of_another_kind_is_refused_naming_the_names_read(tmp_path: Path) -> None:
    from livescope.cli._replay import _dataset_problems

    path = tmp_path / "a.ome.tif.part"
    path.write_bytes(b"")
    with pytest.raises(
        DatasetError, match=r"an OME-TIFF file \(\.tif, \.tiff, \.btf, \.tf2, \.tf8\)"
    ):
        open_dataset(path)
    assert _dataset_problems([path]) == [
        f"{path}: a file, and the only dataset livescope replays that is one file is an "
        "OME-TIFF (.tif, .tiff, .btf, .tf2, .tf8)"
    ]


# --- a CTC folder with a frame tifffile cannot read ------------------------------------------


def _cut_to_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:6])  # a copy still in progress


_BAD_FRAMES: list[object] = [
    pytest.param(_cut_to_header, "truncated or damaged TIFF", id="cut-inside-header"),
    pytest.param(lambda p: _patch_tag(p, 0, 256, value=0), "ZeroDivisionError", id="width-0"),
    pytest.param(
        lambda p: _patch_tag(p, 0, 257, count=2, value=8), "TypeError", id="length-two-values"
    ),
]


@pytest.mark.parametrize(("damage", "why"), _BAD_FRAMES)
def test_a_ctc_frame_tifffile_cannot_read_is_left_out_with_a_warning(
    tmp_path: Path, damage: Callable[[Path], None], why: str
) -> None:
    frame = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    for t in range(3):
        tifffile.imwrite(tmp_path / f"t{t:03d}.tif", frame)
    damage(tmp_path / "t001.tif")
    with open_dataset(tmp_path) as ds:
        assert [f.key.t for f in ds.frames] == [0, 2]
        assert len(ds.warnings) == 1
        assert ds.warnings[0].startswith(f"{tmp_path / 't001.tif'}: cannot be read (")
        assert why in ds.warnings[0]
        assert ds.warnings[0].endswith("; replayed without it")


# --- OME-TIFF pages tifffile cannot lay out ----------------------------------------------------


def _incompatible_keyframe(path: Path) -> None:
    """Two planes of one series written with different strips (another tool's assembly)."""
    with tifffile.TiffFile(_ome(path.with_name("model.ome.tif"))) as tf:
        description = tf.pages[0].description  # type: ignore[union-attr]
    plane = np.ones((16, 16), np.uint16)
    with tifffile.TiffWriter(path) as tw:
        tw.write(plane, description=description, rowsperstrip=8, metadata=None)
        tw.write(plane, rowsperstrip=16, metadata=None, compression="zlib")


_DAMAGED_OME: list[object] = [
    pytest.param(_incompatible_keyframe, "does not fit its pages", id="incompatible-keyframe"),
    pytest.param(
        lambda p: _patch_tag(_ome(p), 0, 256, value=0), "does not fit its pages", id="width-0"
    ),
    pytest.param(
        lambda p: _patch_tag(_ome(p), 0, 256, count=2, value=8),
        "does not fit its pages",
        id="width-two-values",
    ),
    pytest.param(
        lambda p: _tags_past_the_end(_ome(p), 1), "does not fit its pages", id="tags-past-end"
    ),
    pytest.param(
        lambda p: _patch_tag(_ome(p), 0, 257, count=2, value=8),
        "not a readable TIFF",
        id="length-two-values",
    ),
]


@pytest.mark.parametrize(("damage", "said"), _DAMAGED_OME)
def test_ome_tiff_pages_tifffile_cannot_lay_out_are_refused_naming_the_file(
    tmp_path: Path, damage: Callable[[Path], None], said: str
) -> None:
    path = tmp_path / "a.ome.tif"
    damage(path)
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(path))}: .*{said}"):
        open_dataset(path)


# --- what tifffile logs on opening: damage, or a warning -------------------------------------


def _private_tag_of_unknown_type(path: Path) -> None:
    """A vendor's private tag of a data type TIFF 6 does not define; tifffile skips it."""
    _ome(path, extratags=[(65000, 3, 1, 7, True)])
    _patch_tag(path, 0, 65000, dtype=99)


def test_a_private_tag_tifffile_cannot_read_is_passed_on_as_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "a.ome.tif"
    _private_tag_of_unknown_type(path)
    with open_dataset(path) as ds:
        assert [int(ds.read(f.key)[0, 0]) for f in ds.frames] == [1, 2]
        assert len(ds.warnings) == 1
        assert ds.warnings[0].startswith(f"{path}: tifffile warned on opening it, and read on (")
        assert "TiffTag 65000" in ds.warnings[0]


def _cut_inside_first_page_values(path: Path) -> None:
    """Cut the file inside the values of its first page's tags (its OME-XML)."""
    _ome(path)
    with tifffile.TiffFile(path) as tf:
        xml = tf.pages[0].tags[270]  # type: ignore[union-attr]
        end = xml.valueoffset + xml.count // 2
    path.write_bytes(path.read_bytes()[:end])


_STILL_DAMAGED: list[object] = [
    pytest.param(_cut_inside_first_page_values, id="cut-inside-ome-xml"),
    pytest.param(
        lambda p: _patch_tag(_ome(p, compression="zlib"), 0, 259, dtype=99),
        id="compression-of-unknown-type",
    ),
]


@pytest.mark.parametrize("damage", _STILL_DAMAGED)
def test_a_file_tifffile_finds_damaged_on_opening_is_still_refused(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    path = tmp_path / "a.ome.tif"
    damage(path)
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(path))}: truncated or damaged TIFF"):
        open_dataset(path)


# --- CTC results and track files -------------------------------------------------------------


def _live_masks(folder: Path) -> None:
    folder.mkdir()
    mask = np.zeros((16, 16), np.uint16)
    mask[2:5, 2:5] = 7
    for t in range(3):
        tifffile.imwrite(folder / f"mask{t:03d}.tif", mask, compression="zlib")


@pytest.mark.parametrize(
    ("which", "keep"),
    [
        pytest.param("mask001.tif", -20, id="middle-cut-short"),
        pytest.param("mask000.tif", 6, id="first-cut-inside-header"),
    ],
)
def test_rewrite_ctc_result_names_a_mask_it_cannot_read(
    tmp_path: Path, which: str, keep: int
) -> None:
    live = tmp_path / "live"
    _live_masks(live)
    (live / which).write_bytes((live / which).read_bytes()[:keep])
    with pytest.raises(LivescopeError, match=rf"^{re.escape(str(live / which))}: cannot be read"):
        rewrite_ctc_result(live, {}, out=tmp_path / "out")


@pytest.mark.parametrize("kind", ["res", "gt"])
def test_a_track_file_saved_as_utf8_with_a_bom_is_read(tmp_path: Path, kind: str) -> None:
    frame = np.zeros((8, 8), np.uint16)
    frame[1:3, 1:3] = 5
    tracks = [CtcTrack(5, 0, 1, 0)]
    track_dir = write_ctc(tmp_path, [frame, frame], tracks, kind)  # type: ignore[arg-type]
    track_file = next(track_dir.glob("*_track.txt"))
    text = track_file.read_text(encoding="utf-8")
    track_file.write_text(text, encoding="utf-8-sig", newline="\r\n")  # as Windows Notepad saves
    _frames, read = read_ctc(tmp_path, kind)  # type: ignore[arg-type]
    assert read == tracks
