"""CTC masks checked against their track file; CTC files written whole; dtype refusal named."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import tifffile

from livescope.record import CtcTrack, OmeZarrWriter, read_ctc, relabel_for_ctc, write_ctc
from livescope.schema import LivescopeError

from ..conftest import shared_subfolder
from .test_zarr import _info


def _sequence(labels_per_frame: list[list[int]]) -> list[np.ndarray]:
    """One 6x6 uint16 frame per entry; label ``k`` of a frame fills row ``k``."""
    frames = []
    for labels in labels_per_frame:
        frame = np.zeros((6, 6), np.uint16)
        for k in labels:
            frame[k, :] = k
        frames.append(frame)
    return frames


def _track_dir(kind: Literal["gt", "res"], folder: Path) -> Path:
    return folder / "TRA" if kind == "gt" else folder


def _stem(kind: Literal["gt", "res"]) -> str:
    return "man_track" if kind == "gt" else "mask"


KINDS = [pytest.param("gt", id="gt"), pytest.param("res", id="res")]


@pytest.mark.parametrize("kind", KINDS)
def test_a_label_in_a_frame_outside_its_track_is_refused(
    tmp_path: Path, kind: Literal["gt", "res"]
) -> None:
    """Label 1 in frames 0..2, its track listed as 0..1: frame 2 would be scored wrongly."""
    write_ctc(tmp_path, _sequence([[1], [1], [1]]), [CtcTrack(1, 0, 1, 0)], kind=kind)
    name = rf"{_stem(kind)}002\.tif"
    with pytest.raises(LivescopeError, match=rf"{name}: label 1 is in frame 2, .* 0\.\.1 only"):
        read_ctc(tmp_path, kind=kind)


def test_a_result_track_missing_from_frames_of_its_span_is_refused(tmp_path: Path) -> None:
    write_ctc(tmp_path, _sequence([[1], [], [1]]), [CtcTrack(1, 0, 2, 0)], kind="res")
    with pytest.raises(LivescopeError, match=r"track 1 is in frames 0\.\.2, .*mask001\.tif first"):
        read_ctc(tmp_path, kind="res")


def test_a_ground_truth_track_missing_from_frames_of_its_span_is_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """py-ctcmetrics does not check a ground truth's markers: read, but said."""
    frames = _sequence([[1], [], [1]])
    write_ctc(tmp_path, frames, [CtcTrack(1, 0, 2, 0)], kind="gt")
    with caplog.at_level(logging.WARNING, logger="livescope"):
        got, tracks = read_ctc(tmp_path, kind="gt")
    assert tracks == [CtcTrack(1, 0, 2, 0)]
    assert all(np.array_equal(a, b) for a, b in zip(got, frames, strict=True))
    assert "track 1 is in frames 0..2" in caplog.text
    assert "man_track001.tif first" in caplog.text


@pytest.mark.parametrize("kind", KINDS)
def test_a_track_ending_after_the_last_frame_is_warned_of(
    tmp_path: Path, kind: Literal["gt", "res"], caplog: pytest.LogCaptureFixture
) -> None:
    """py-ctcmetrics leaves the frames past the last out; read_ctc says so, naming the track."""
    tracks = [CtcTrack(1, 0, 2, 0), CtcTrack(2, 1, 7, 0)]
    write_ctc(tmp_path, _sequence([[1], [1, 2], [1, 2]]), tracks, kind=kind)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        _, got = read_ctc(tmp_path, kind=kind)
    assert got == tracks
    track_file = _track_dir(kind, tmp_path) / f"{'man_track' if kind == 'gt' else 'res_track'}.txt"
    assert str(track_file) in caplog.text
    assert "2 (to frame 7)" in caplog.text
    assert f"the last frame, 2 ({_stem(kind)}002.tif)" in caplog.text
    assert "1 (to frame" not in caplog.text  # (track 1 ends in the sequence)


@pytest.mark.parametrize("kind", KINDS)
def test_a_label_no_track_lists_is_warned_of(
    tmp_path: Path, kind: Literal["gt", "res"], caplog: pytest.LogCaptureFixture
) -> None:
    write_ctc(tmp_path, _sequence([[1], [1, 3], [1, 3]]), [CtcTrack(1, 0, 2, 0)], kind=kind)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        read_ctc(tmp_path, kind=kind)
    stem = _stem(kind)
    assert f"no track for label 3 in {stem}001.tif..{stem}002.tif" in caplog.text


@pytest.mark.parametrize("kind", KINDS)
def test_a_sequence_that_matches_its_track_file_reads_without_warnings(
    tmp_path: Path, kind: Literal["gt", "res"], caplog: pytest.LogCaptureFixture
) -> None:
    """Relabelled objects with a gap and a division: no false alarm."""
    ids = _sequence([[1], [1], [], [1], [2, 3], [2, 3]])
    frames, tracks, _ = relabel_for_ctc(ids, {2: 1, 3: 1})
    write_ctc(tmp_path, frames, tracks, kind=kind)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        _, got = read_ctc(tmp_path, kind=kind)
    assert got == tracks
    assert not caplog.records


def test_the_shipped_gowt1_ground_truth_reads_without_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gt = shared_subfolder("ctc-Fluo-N2DH-GOWT1/01_GT")
    with caplog.at_level(logging.WARNING, logger="livescope"):
        frames, tracks = read_ctc(gt, kind="gt")
    assert len(frames) == 1 + max(t.end for t in tracks)
    assert not caplog.records


def _cut_short(real: Any) -> Any:
    """A `tifffile.imwrite` that writes the first half of its file, then fails (a full disk)."""

    def imwrite(file: Any, data: Any, **kwargs: Any) -> None:
        buf = io.BytesIO()
        real(buf, data, **kwargs)
        part = buf.getvalue()[: len(buf.getvalue()) // 2]
        if isinstance(file, str | os.PathLike):
            Path(file).write_bytes(part)
        else:
            file.write(part)
        raise OSError(28, "No space left on device")

    return imwrite


@pytest.mark.parametrize("kind", KINDS)
def test_a_write_cut_short_leaves_the_old_files_readable(
    tmp_path: Path, kind: Literal["gt", "res"], monkeypatch: pytest.MonkeyPatch
) -> None:
    old_frames, old_tracks, _ = relabel_for_ctc(_sequence([[1], [1, 2]]), {})
    base = write_ctc(tmp_path, old_frames, old_tracks, kind=kind)
    before = {p.name: p.read_bytes() for p in base.iterdir()}
    new_frames, new_tracks, _ = relabel_for_ctc(_sequence([[3], [4]]), {})
    monkeypatch.setattr(tifffile, "imwrite", _cut_short(tifffile.imwrite))
    with pytest.raises(OSError, match="No space left"):
        write_ctc(tmp_path, new_frames, new_tracks, kind=kind)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in base.iterdir()} == before  # (no temporary file)
    frames, tracks = read_ctc(tmp_path, kind=kind)
    assert tracks == old_tracks
    assert all(np.array_equal(a, b) for a, b in zip(frames, old_frames, strict=True))


@pytest.mark.parametrize("kind", KINDS)
def test_written_files_are_complete_and_no_temporary_file_is_left(
    tmp_path: Path, kind: Literal["gt", "res"]
) -> None:
    frames, tracks, _ = relabel_for_ctc(_sequence([[1], [1, 2], [2]]), {})
    write_ctc(tmp_path, _sequence([[5], [5], [5]]), [CtcTrack(5, 0, 2, 0)], kind=kind)
    base = write_ctc(tmp_path, frames, tracks, kind=kind)  # over the first
    stem, track_file = ("man_track", "man_track.txt") if kind == "gt" else ("mask", "res_track.txt")
    names = sorted(p.name for p in base.iterdir())
    assert names == sorted([*(f"{stem}{t:03d}.tif" for t in range(3)), track_file])
    assert (base / track_file).read_text(encoding="utf-8") == "".join(
        f"{t.label} {t.begin} {t.end} {t.parent}\n" for t in tracks
    )
    for t, frame in enumerate(frames):
        assert np.array_equal(tifffile.imread(base / f"{stem}{t:03d}.tif"), frame)


def test_a_frame_of_another_pixel_type_is_refused_naming_its_channel_and_what_to_do(
    tmp_path: Path,
) -> None:
    with OmeZarrWriter(tmp_path, channels=["BF", "GFP"], pixel_size_um=0.65) as w:
        w.write(np.zeros((8, 8), np.uint16), _info(0, 0, "BF"))
        with pytest.raises(LivescopeError) as err:
            w.write(np.zeros((8, 8), np.uint8), _info(1, 1, "GFP"))
        assert w.frames_written == 1
    msg = str(err.value)
    assert "frame 1 of position 'p0', channel 'GFP' is uint8, earlier frames are uint16" in msg
    assert "not written: start a new acquisition (a new output folder)" in msg
