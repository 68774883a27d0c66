"""CTC sequences written over older ones: the older frames that are not the new one's go."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import tifffile

from livescope.record import read_ctc, relabel_for_ctc, write_ctc

KINDS = [pytest.param("gt", id="gt"), pytest.param("res", id="res")]


def _moving_cell(n_frames: int, first_id: int = 1) -> list[np.ndarray]:
    """One cell per frame in an 8x8 field, its id changing every 4 frames (new tracks)."""
    frames = []
    for t in range(n_frames):
        frame = np.zeros((8, 8), np.int32)
        frame[t % 8, :] = first_id + t // 4
        frames.append(frame)
    return frames


def _layout(kind: Literal["gt", "res"]) -> tuple[str, str]:
    return ("man_track", "man_track.txt") if kind == "gt" else ("mask", "res_track.txt")


@pytest.mark.parametrize("kind", KINDS)
def test_frames_of_a_longer_sequence_written_before_are_removed(
    tmp_path: Path, kind: Literal["gt", "res"]
) -> None:
    """20 frames, then 10 over them: frames 10..19 were read as part of the 10."""
    old, old_tracks, _ = relabel_for_ctc(_moving_cell(20), {})
    base = write_ctc(tmp_path, old, old_tracks, kind=kind)
    stem, track_file = _layout(kind)
    # files that only look like frames, and the other kind's frames: never CTC frames of this kind
    other = "mask005.tif" if kind == "gt" else "man_track005.tif"
    kept = [f"{stem}_notes.tif", f"{stem}010.tiff", f"{stem}s.tif", f"{stem}010.tif.bak", other]
    for name in kept:
        (base / name).write_bytes(b"not a frame of this sequence")
    new, new_tracks, _ = relabel_for_ctc(_moving_cell(10, first_id=50), {})
    assert write_ctc(tmp_path, new, new_tracks, kind=kind) == base
    names = sorted(p.name for p in base.iterdir())
    assert names == sorted([*(f"{stem}{t:03d}.tif" for t in range(10)), track_file, *kept])
    frames, tracks = read_ctc(tmp_path, kind=kind)
    assert tracks == new_tracks
    assert len(frames) == len(new)
    assert all(np.array_equal(a, b) for a, b in zip(frames, new, strict=True))


@pytest.mark.parametrize("kind", KINDS)
def test_frames_numbered_with_other_digits_are_removed(
    tmp_path: Path, kind: Literal["gt", "res"]
) -> None:
    """A sequence of 4-digit frames (as a longer one has): mask0000.tif and mask000.tif
    were both frame 0, which read_ctc refused."""
    stem, track_file = _layout(kind)
    base = tmp_path / "TRA" if kind == "gt" else tmp_path
    base.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(_moving_cell(6, first_id=30)):
        tifffile.imwrite(base / f"{stem}{t:04d}.tif", frame.astype(np.uint16))
    tifffile.imwrite(base / f"{stem}1000.tif", np.zeros((8, 8), np.uint16))
    new, new_tracks, _ = relabel_for_ctc(_moving_cell(3), {})
    write_ctc(tmp_path, new, new_tracks, kind=kind)
    names = sorted(p.name for p in base.iterdir())
    assert names == sorted([*(f"{stem}{t:03d}.tif" for t in range(3)), track_file])
    frames, tracks = read_ctc(tmp_path, kind=kind)
    assert tracks == new_tracks
    assert all(np.array_equal(a, b) for a, b in zip(frames, new, strict=True))
