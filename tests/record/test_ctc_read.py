"""`read_ctc`: frame t is file t; gaps, stray and damaged files are named."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.record import CtcTrack, read_ctc
from livescope.schema import LivescopeError


def _masks(folder: Path, frames: list[int], tracks: str = "1 0 0 0\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t in frames:
        tifffile.imwrite(folder / f"mask{t:03d}.tif", np.full((4, 4), t + 1, np.uint16))
    (folder / "res_track.txt").write_text(tracks, encoding="utf-8")
    return folder


def test_frames_are_read_by_their_number_and_other_files_ignored(tmp_path: Path) -> None:
    folder = _masks(tmp_path / "res", [0, 1, 2, 10])
    for t in range(3, 10):  # (numbered without padding, as any CTC tool may)
        tifffile.imwrite(folder / f"mask{t}.tif", np.full((4, 4), t + 1, np.uint16))
    (folder / "mask001_old.tif").write_bytes((folder / "mask001.tif").read_bytes())
    (folder / "mask.tif").write_bytes((folder / "mask001.tif").read_bytes())
    frames, tracks = read_ctc(folder)
    assert [int(f[0, 0]) for f in frames] == list(range(1, 12))
    assert tracks == [CtcTrack(1, 0, 0, 0)]


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        pytest.param([0, 1, 3], r"maskTTT\.tif missing for 1 of frames 0\.\.3 \(2\)", id="inner"),
        pytest.param([1, 2], r"maskTTT\.tif missing for 1 of frames 0\.\.2 \(0\)", id="first"),
    ],
)
def test_a_frame_missing_from_the_sequence_is_refused_naming_it(
    tmp_path: Path, frames: list[int], message: str
) -> None:
    # frames by file order would shift every later frame against the track file
    folder = _masks(tmp_path / "res", frames)
    with pytest.raises(LivescopeError, match=re.escape(f"{folder}: ") + message):
        read_ctc(folder)


def test_a_frame_numbered_twice_is_refused_naming_both_files(tmp_path: Path) -> None:
    folder = _masks(tmp_path / "res", [0, 1])
    tifffile.imwrite(folder / "mask1.tif", np.ones((4, 4), np.uint16))
    with pytest.raises(LivescopeError, match=r"mask001\.tif and .*mask1\.tif are both frame 1"):
        read_ctc(folder)


def test_a_damaged_frame_or_track_file_is_named(tmp_path: Path) -> None:
    folder = _masks(tmp_path / "res", [0, 1])
    (folder / "mask001.tif").write_bytes(b"II*\x00")
    with pytest.raises(LivescopeError, match=r"mask001\.tif: cannot be read"):
        read_ctc(folder)
    folder = _masks(tmp_path / "bad-line", [0], tracks="1 0 x 0\n")
    with pytest.raises(LivescopeError, match=r"res_track\.txt:1: expected 'L B E P'"):
        read_ctc(folder)
    (folder / "res_track.txt").unlink()
    with pytest.raises(LivescopeError, match=r"res_track\.txt: cannot be read"):
        read_ctc(folder)
