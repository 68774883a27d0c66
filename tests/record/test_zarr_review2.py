"""The recorder on a reused run folder, a log that fills the disk, a position that cannot start."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import zarr

from livescope.record import (
    FRAMES_FILE,
    ZARR_NAME,
    OmeZarrWriter,
    RecordingReader,
    open_dataset,
    read_frames,
)
from livescope.schema import FrameInfo, LivescopeError
from tests.record.test_zarr import _info as zarr_info


def _info(seq: int, t: int, c: str = "BF", pos: str = "p0") -> FrameInfo:
    return zarr_info(seq, t, c, pos)


def _frame(value: int) -> np.ndarray:
    return np.full((8, 8), value, np.uint16)


def test_a_folder_whose_store_was_removed_does_not_mix_its_old_frame_log_in(
    tmp_path: Path,
) -> None:
    """The store removed to run again in a folder: the old log's frames read the new pixels."""
    with OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0) as w:
        for t in range(3):
            w.write(_frame(t + 1), _info(t, t))
    shutil.rmtree(tmp_path / ZARR_NAME)
    old_log = (tmp_path / FRAMES_FILE).read_bytes()
    with pytest.raises(LivescopeError, match=r"frames\.jsonl already exists.*new output folder"):
        OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0)
    assert (tmp_path / FRAMES_FILE).read_bytes() == old_log  # not appended to
    assert not (tmp_path / ZARR_NAME).exists()  # nothing half made


@contextmanager
def _files_limited_to(size: int) -> Iterator[None]:
    """Let no file of this process grow past ``size`` bytes: a write beyond fails (EFBIG).

    The kernel refuses it as it refuses a write to a full disk: part of a write
    that crosses the limit is taken, the rest raises.
    """
    import resource
    import signal

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (its default ends the process)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@pytest.mark.skipif(sys.platform == "win32", reason="file size limits are POSIX")
def test_a_frame_whose_log_line_cannot_be_written_leaves_no_trace_and_can_be_written_again(
    tmp_path: Path,
) -> None:
    """Its chunk went to disk, its line did not (part of it did): log and data still agree."""
    with OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0, codec="none") as w:
        w.write(_frame(1), _info(0, 1))  # the array: t = 0, 1 (no metadata to write below)
        log = tmp_path / FRAMES_FILE
        logged = log.read_bytes()
        # the chunk (128 bytes) fits, the frame's line (about 300) does not
        with _files_limited_to(len(logged) + 40), pytest.raises(OSError, match="too large"):
            w.write(_frame(2), _info(1, 0))
        assert log.read_bytes() == logged  # no part of a line
        assert w.frames_written == 1
        chunk = tmp_path / ZARR_NAME / "0" / "0" / "c" / "0" / "0" / "0" / "0" / "0"
        assert not chunk.exists()  # the frame's pixels are not left behind either
        w.write(_frame(3), _info(1, 0))  # written again, not refused as recorded already
    frames = read_frames(tmp_path)
    assert [f["seq"] for f in frames] == [0, 1]
    reader = RecordingReader(tmp_path)
    assert [int(reader.read(f)[0, 0]) for f in frames] == [1, 3]
    assert zarr.open_group(tmp_path / ZARR_NAME, mode="r").attrs["livescope"]["frames"] == 2


def test_a_position_whose_array_cannot_be_made_leaves_the_store_readable(tmp_path: Path) -> None:
    """Its image group without an array made the store unreadable and refused later positions."""
    store = tmp_path / ZARR_NAME
    w = OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0)
    w.write(_frame(1), _info(0, 0))
    (store / "1").mkdir()
    (store / "1" / "0").write_text("not a folder")  # where the array's metadata goes: refused
    with pytest.raises(FileExistsError):
        w.write(_frame(2), _info(1, 0, pos="B"))
    assert not (store / "1").exists()  # no image group without its array
    w.write(_frame(3), _info(2, 0, pos="C"))  # the next position's group takes its place
    w.write(_frame(4), _info(3, 0, pos="B"))  # and the position itself starts now
    w.close()
    root = zarr.open_group(store, mode="r")
    assert sorted(root.group_keys()) == ["0", "1", "2"]
    for key in root.group_keys():  # every image group holds its array
        path = root[key].attrs["ome"]["multiscales"][0]["datasets"][0]["path"]
        assert root[f"{key}/{path}"].shape[-2:] == (8, 8)
    dataset = open_dataset(tmp_path)
    assert [int(dataset.read(f.key)[0, 0]) for f in dataset.frames] == [1, 3, 4]


def test_a_logged_frame_whose_chunk_is_missing_is_an_error_not_a_black_frame(
    tmp_path: Path,
) -> None:
    """A run folder copied in part: its frames read back as the fill value without a word."""
    with OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0) as w:
        w.write(_frame(1), _info(0, 0))
        w.write(_frame(2), _info(1, 1))
    (tmp_path / ZARR_NAME / "0" / "0" / "c" / "1" / "0" / "0" / "0" / "0").unlink()
    reader = RecordingReader(tmp_path)
    first, second = read_frames(tmp_path)
    assert int(reader.read(first)[0, 0]) == 1
    with pytest.raises(LivescopeError, match=r"frame 1 \(p0 t=1 c=BF z=0\).*chunk.*missing"):
        reader.read(second)
