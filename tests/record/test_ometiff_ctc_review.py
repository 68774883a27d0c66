"""OME-TIFF planes cut short or in no image; CTC masks that cannot be decoded, bad lineages."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.record import CtcTrack, DatasetError, FrameKey, open_dataset, read_ctc, write_ctc
from livescope.schema import LivescopeError

_NS = 'xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"'


def _ome(size_t: int, tiff_data: str = "<TiffData/>") -> str:
    """OME-XML of one image "P": ``size_t`` time points of one 64x64 uint16 channel "BF"."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><OME {_NS} UUID="urn:uuid:1">'
        '<Image ID="Image:0" Name="P"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" '
        f'Type="uint16" SizeX="64" SizeY="64" SizeC="1" SizeZ="1" SizeT="{size_t}">'
        f'<Channel ID="Channel:0:0" Name="BF" SamplesPerPixel="1"/>{tiff_data}</Pixels></Image>'
        "</OME>"
    )


def _write(path: Path, xml: str, values: list[int], *, reduced: tuple[int, ...] = ()) -> Path:
    """One 64x64 page per value (the first described by ``xml``); ``reduced``: 32x32 levels."""
    with tifffile.TiffWriter(path) as tw:
        for k, value in enumerate(values):
            small = k in reduced
            tw.write(
                np.full((32, 32) if small else (64, 64), value, np.uint16),
                description=xml.encode() if k == 0 else None,
                subfiletype=1 if small else 0,
                metadata=None,
            )
    return path


def test_a_plane_the_file_ends_inside_is_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a recording that stopped while writing t=3: its pixels run past the end of the file;
    # served, it failed the replay at t=3 (hours in), not when the file was opened
    whole = _write(tmp_path / "whole.ome.tif", _ome(6), [0, 1, 2, 3, 4, 5])
    with tifffile.TiffFile(whole) as tf:
        end = tf.pages[3].dataoffsets[0] + tf.pages[3].databytecounts[0] // 2
    path = tmp_path / "cut.ome.tif"
    path.write_bytes(whole.read_bytes()[:end])
    with caplog.at_level(logging.CRITICAL, "tifffile"), open_dataset(path) as ds:
        assert [f.key.t for f in ds.frames] == [0, 1, 2]
        assert [int(ds.read(f.key)[0, 0]) for f in ds.frames] == [0, 1, 2]
        assert f"{path}: 1 of 6 planes are cut short: the file ends inside them (t=3 c=0 z=0; " in (
            "\n".join(ds.warnings)
        )
        with pytest.raises(DatasetError, match=r"cut\.ome\.tif: no recorded frame"):
            ds.read(FrameKey("P", 3, "BF"))


def test_pages_in_no_plane_of_the_ome_metadata_are_said_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # SizeT written as 2 before the run went on to 4: tifffile reads 2 and drops the rest;
    # a reduced-resolution page (a thumbnail) is no frame and is not counted
    path = _write(tmp_path / "long.ome.tif", _ome(2), [0, 1, 9, 2, 3], reduced=(2,))
    with caplog.at_level(logging.CRITICAL, "tifffile"), open_dataset(path) as ds:
        assert [int(ds.read(f.key)[0, 0]) for f in ds.frames] == [0, 1]
        assert ds.warnings == [
            f"{path}: 2 of the file's 5 pages are in no plane its OME metadata lists (page 3, 4; "
            "its SizeT, SizeC or SizeZ smaller than what was written?); replaying without them"
        ]


def test_a_file_whose_pages_are_all_planes_has_no_warning(tmp_path: Path) -> None:
    tiff_data = '<TiffData IFD="0" PlaneCount="1"/><TiffData IFD="2" FirstT="1" PlaneCount="1"/>'
    path = _write(tmp_path / "thumb.ome.tif", _ome(2, tiff_data), [0, 9, 1], reduced=(1,))
    with open_dataset(path) as ds:
        assert [int(ds.read(f.key)[0, 0]) for f in ds.frames] == [0, 1]
        assert ds.warnings == []


def test_a_damaged_compressed_mask_is_named(tmp_path: Path) -> None:
    # write_ctc compresses (zlib): damaged data raised the decoder's own error, naming no file
    data = np.random.default_rng(0).integers(0, 60000, (2, 64, 64), dtype=np.uint16)
    folder = write_ctc(tmp_path / "res", list(data), [CtcTrack(1, 0, 1, 0)])
    path = folder / "mask001.tif"
    with tifffile.TiffFile(path) as tf:
        offset, count = tf.pages[0].dataoffsets[0], tf.pages[0].databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[offset : offset + count] = bytes(count)
    path.write_bytes(bytes(raw))
    with pytest.raises(LivescopeError, match=re.escape(f"{path}: cannot be read")):
        read_ctc(folder)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        pytest.param("1 0 1 0\n2 2 3 7\n", r":2: the parent 7 of track 2 is not a track of this",
                     id="parent-missing"),
        pytest.param("1 3 1 0\n", r":1: track 1 begins \(frame 3\) after it ends \(1\)",
                     id="begins-after-end"),
        pytest.param("1 0 1 0\n2 -1 3 0\n", r":2: expected 'L B E P' \(four whole numbers >= 0\)",
                     id="negative"),
        pytest.param("0 0 1 0\n", r":1: label 0 is the background", id="label-0"),
        pytest.param("1 0 1 0\n1 2 3 0\n", r":2: track 1 is listed again \(line 1\)",
                     id="listed-twice"),
        pytest.param("1 0 1 1\n", r":1: track 1 is its own parent", id="own-parent"),
        pytest.param("1 0 2 0\n2 2 3 1\n", r":2: track 2 begins at frame 2, but its parent 1 "
                     r"ends at frame 2", id="daughter-before-parent-ends"),
    ],
)  # fmt: skip
def test_a_track_file_that_is_no_lineage_is_refused_naming_the_line(
    tmp_path: Path, lines: str, message: str
) -> None:
    # e.g. a parent not listed: flag_divisions_ctc failed on it with a bare KeyError
    folder = write_ctc(tmp_path / "gt", [np.zeros((4, 4), np.uint16)] * 4, [], kind="gt")
    (folder / "man_track.txt").write_text(lines, encoding="utf-8")
    with pytest.raises(LivescopeError, match=re.escape(str(folder / "man_track.txt")) + message):
        read_ctc(tmp_path / "gt", kind="gt")


def test_a_valid_lineage_is_read_as_written(tmp_path: Path) -> None:
    tracks = [CtcTrack(1, 0, 1, 0), CtcTrack(2, 2, 3, 1), CtcTrack(3, 2, 3, 1),
              CtcTrack(4, 3, 3, 0)]  # fmt: skip
    folder = write_ctc(tmp_path / "gt", [np.zeros((4, 4), np.uint16)] * 4, tracks, kind="gt")
    (folder / "man_track.txt").write_text(
        (folder / "man_track.txt").read_text(encoding="utf-8") + "\n", encoding="utf-8"
    )  # (a blank line at the end, as some tools write)
    assert read_ctc(tmp_path / "gt", kind="gt")[1] == tracks


def test_a_track_file_that_is_not_utf8_text_is_named(tmp_path: Path) -> None:
    # saved as UTF-16 by a Windows editor: a bare UnicodeDecodeError named no file
    folder = write_ctc(tmp_path / "gt", [np.zeros((4, 4), np.uint16)], [], kind="gt")
    (folder / "man_track.txt").write_text("1 0 0 0\n", encoding="utf-16")
    with pytest.raises(LivescopeError, match=r"man_track\.txt: cannot be read"):
        read_ctc(tmp_path / "gt", kind="gt")


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        pytest.param(
            np.zeros((3, 16, 16), np.uint16),
            r"of shape \(3, 16, 16\); livescope reads "
            "2-D CTC sequences",
            id="3-D",
        ),
        pytest.param(np.zeros((16, 16), np.float32), "a float32 frame", id="float"),
        pytest.param(np.zeros((16, 8), np.uint16), "16x8 px, frame 0 16x16", id="other-size"),
    ],
)
def test_a_ctc_frame_no_caller_can_take_is_refused_naming_it(
    tmp_path: Path, frame: np.ndarray, why: str
) -> None:
    # (a 3-D set such as Fluo-N3DH, or masks of mixed sizes, reached the 2-D callers unchecked)
    write_ctc(tmp_path, [np.zeros((16, 16), np.uint16)] * 2, [])
    tifffile.imwrite(tmp_path / "mask001.tif", frame, photometric="minisblack")
    with pytest.raises(LivescopeError, match=rf"mask001\.tif: .*{why}"):
        read_ctc(tmp_path)
