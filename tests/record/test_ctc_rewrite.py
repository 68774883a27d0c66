"""CTC sequences written over older ones: the older frames that are not the new one's go."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import tifffile

from livescope.record import read_ctc, relabel_for_ctc, rewrite_ctc_result, write_ctc
from livescope.schema import LivescopeError

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


def _older_result(out: Path, digits: int) -> None:
    """A result of 20 frames in ``out``, numbered with ``digits`` digits."""
    out.mkdir()
    old, old_tracks, _ = relabel_for_ctc(_moving_cell(20), {})
    for t, frame in enumerate(old):
        tifffile.imwrite(out / f"mask{t:0{digits}d}.tif", frame)
    (out / "res_track.txt").write_text("".join(f"{k.label} {k.begin} {k.end} {k.parent}\n"
                                               for k in old_tracks))  # fmt: skip


def _live_masks(folder: Path, n_frames: int) -> list[np.ndarray]:
    folder.mkdir()
    live = _moving_cell(n_frames, first_id=50)
    for t, frame in enumerate(live):
        tifffile.imwrite(folder / f"mask{t:03d}.tif", frame.astype(np.uint16))
    return live


@pytest.mark.parametrize("digits", [pytest.param(3, id="longer"), pytest.param(4, id="4-digit")])
def test_rewrite_into_a_folder_holding_an_older_result_removes_its_frames(
    tmp_path: Path, digits: int
) -> None:
    """rewrite_ctc_result(out=...) over 20 older frames: those past the new 10, or under
    other digits, were read as frames of the new result (read_ctc refused it)."""
    out = tmp_path / "out"
    _older_result(out, digits)
    kept = ["mask_notes.tif", "mask010.tiff", "masks.tif", "mask010.tif.bak", "man_track005.tif"]
    for name in kept:
        (out / name).write_bytes(b"not a frame of this result")
    live = _live_masks(tmp_path / "live", 10)
    tracks = rewrite_ctc_result(tmp_path / "live", {}, out=out)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([*(f"mask{t:03d}.tif" for t in range(10)), "res_track.txt", *kept])
    expected, expected_tracks, _ = relabel_for_ctc(live, {})
    assert tracks == expected_tracks
    frames, read_tracks = read_ctc(out)
    assert read_tracks == expected_tracks
    assert all(np.array_equal(a, b) for a, b in zip(frames, expected, strict=True))


def test_rewrite_of_no_masks_into_a_folder_holding_an_older_result_removes_its_frames(
    tmp_path: Path,
) -> None:
    """No live mask: the result is no frame and no track, not the older result's frames."""
    out = tmp_path / "out"
    _older_result(out, 3)
    (tmp_path / "live").mkdir()
    assert rewrite_ctc_result(tmp_path / "live", {}, out=out) == []
    assert sorted(p.name for p in out.iterdir()) == ["res_track.txt"]
    assert (out / "res_track.txt").read_text() == ""


def test_rewrite_names_an_older_frame_it_cannot_remove(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame of the older result held open (a viewer on Windows): a LivescopeError naming it,
    as write_ctc raises, not a result that silently reads it as its own."""
    out = tmp_path / "out"
    _older_result(out, 3)
    _live_masks(tmp_path / "live", 10)
    unlink = Path.unlink

    def held_open(self: Path, missing_ok: bool = False) -> None:
        if self.name == "mask015.tif":
            raise PermissionError(13, "held open by another program", str(self))
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", held_open)
    with pytest.raises(LivescopeError, match=r"mask015\.tif: a frame of the sequence .* could "
                       r"not be removed .*held open"):  # fmt: skip
        rewrite_ctc_result(tmp_path / "live", {}, out=out)
    monkeypatch.undo()
    assert not (out / "mask010.tif").exists()  # (frames before it are removed)
    assert (out / "mask015.tif").exists()
    assert (out / "res_track.txt").read_text().startswith("1 0 3 0\n")  # the new result
