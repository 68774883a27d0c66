"""The recorder's frame log without NaN, write errors naming their file, float windows, colours."""

from __future__ import annotations

import errno
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

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
from livescope.schema import FrameInfo


def _info(seq: int, t: int, c: str = "BF", pos: str = "p0", **kw: Any) -> FrameInfo:
    info = FrameInfo(
        seq=seq,
        index={"t": t, "z": 0},
        position=pos,
        channel=c,
        x_um=0.0,
        y_um=0.0,
        z_um=0.0,
        exposure_ms=10.0,
        pixel_size_um=0.65,
        sample_time_s=float(t),
        runner_time_ms=0.0,
        t_camera_ns=0,
        hardware_triggered=False,
        added_by=None,
        adler32=0,
        shape=(8, 8),
        dtype="uint16",
        event={},
    )
    info.update(kw)  # type: ignore[typeddict-item]
    return info


def _omero(run: Path, key: str = "0") -> dict[str, Any]:
    return dict(zarr.open_group(run / ZARR_NAME, mode="r")[key].attrs["ome"]["omero"])


def _valid(run: Path) -> None:
    yaozarrs = pytest.importorskip("yaozarrs")
    yaozarrs.validate_zarr_store(run / ZARR_NAME)


# ---------------------------------------------------------------- NaN in the frame log


def _strict(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def test_a_number_that_is_no_number_is_logged_as_null(tmp_path: Path) -> None:
    """A bare NaN or Infinity token is no JSON: the log was unreadable outside Python."""
    info = _info(
        0, 0, x_um=math.inf, y_um=np.float32("nan"), z_um=np.float64("nan"),
        exposure_ms=np.float32("-inf"), event={"z": math.nan, "zs": np.array([1.0, np.nan])},
    )  # fmt: skip
    with OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=0.65) as w:
        w.write(np.ones((8, 8), np.uint16), info)
        w.write(np.full((8, 8), 2, np.uint16), _info(1, 1))
    lines = (tmp_path / FRAMES_FILE).read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0], parse_constant=_strict)  # (Node's JSON.parse is as strict)
    assert [first[k] for k in ("x_um", "y_um", "z_um", "exposure_ms")] == [None] * 4
    assert first["event"] == {"z": None, "zs": [1.0, None]}
    assert json.loads(lines[1], parse_constant=_strict)["z_um"] == 0.0  # (finite: as before)
    # livescope's readers take null as not logged (a NaN stopped a replay of the run)
    frames = read_frames(tmp_path)
    assert frames[0]["z_um"] is None
    assert int(RecordingReader(tmp_path).read(frames[0])[0, 0]) == 1
    ds = open_dataset(tmp_path)
    try:
        assert (ds.frames[0].x_um, ds.frames[0].z_um, ds.frames[0].exposure_ms) == (None,) * 3
        assert ds.frames[1].z_um == 0.0
    finally:
        ds.close()


# ---------------------------------------------------------------- write errors name the file


class _FullLog:
    """The frame log on a disk that is full: every write refused, as the OS refuses it."""

    def __init__(self, log: Any) -> None:
        self._log = log

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


def _chunk(run: Path, t: int) -> Path:
    return run / ZARR_NAME / "0" / "0" / "c" / str(t) / "0" / "0" / "0" / "0"


@pytest.mark.parametrize(
    ("refused", "named"),
    [
        pytest.param("chunk", lambda run: _chunk(run, 1), id="a-chunk"),
        pytest.param("metadata", lambda run: run / ZARR_NAME / "0" / "0" / "zarr.json",
                     id="the-array-metadata"),
        pytest.param("log", lambda run: run / FRAMES_FILE, id="the-frame-log"),
    ],
)  # fmt: skip
def test_a_write_the_disk_refuses_raises_the_os_error_naming_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: str, named: Any
) -> None:
    """``[Errno 28] No space left on device`` named neither the file nor the recording."""

    def full(self: Path, data: Any, *args: Any, **kwargs: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # (as a write to an open file)

    with OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0) as w:
        w.write(np.ones((8, 8), np.uint16), _info(0, 0))
        if refused == "chunk":
            monkeypatch.setattr(Path, "write_bytes", full)
        elif refused == "metadata":
            monkeypatch.setattr(Path, "write_text", full)
        else:
            monkeypatch.setattr(w, "_log", _FullLog(w._log))
        with pytest.raises(OSError, match="No space left on device") as caught:
            w.write(np.full((8, 8), 2, np.uint16), _info(1, 1))
        monkeypatch.undo()
        assert caught.value.errno == errno.ENOSPC
        assert caught.value.filename == str(named(tmp_path))
        assert str(named(tmp_path)) in str(caught.value)  # (what `FrameFanout`'s error says)
        # nothing half-written: the frame is neither logged nor in the data; it may come again
        assert w.frames_written == 1
        assert not _chunk(tmp_path, 1).exists()
        assert not list((tmp_path / ZARR_NAME).rglob(".*.tmp"))
        w.write(np.full((8, 8), 3, np.uint16), _info(1, 1))
    frames = read_frames(tmp_path)
    assert [f["seq"] for f in frames] == [0, 1]
    assert [int(RecordingReader(tmp_path).read(f)[0, 0]) for f in frames] == [1, 3]


def test_a_sync_of_the_frame_log_refused_at_close_names_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    w = OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0)
    w.write(np.ones((8, 8), np.uint16), _info(0, 0))
    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(OSError, match=os.strerror(errno.EIO)) as caught:
        w.close()
    monkeypatch.undo()
    assert (caught.value.errno, caught.value.filename) == (errno.EIO, str(tmp_path / FRAMES_FILE))


def test_a_file_that_stays_locked_is_still_a_permission_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callers that wait out a file locked on Windows tell it by its kind: kept."""

    def refuse(src: str, dst: str) -> None:
        raise PermissionError(errno.EACCES, "the file is in use by another process")

    with OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0) as w:
        w.write(np.zeros((8, 8), np.uint16), _info(0, 1))
        monkeypatch.setattr(os, "replace", refuse)
        with pytest.raises(PermissionError, match="in use") as caught:
            w.write(np.zeros((8, 8), np.uint16), _info(1, 0))
        monkeypatch.undo()
    assert caught.value.filename == str(_chunk(tmp_path, 0))


@pytest.mark.skipif(sys.platform == "win32", reason="file size limits are POSIX")
def test_a_chunk_past_the_file_size_limit_names_its_file(tmp_path: Path) -> None:
    """The kernel's own refusal (EFBIG, as ENOSPC of a full disk) names no file."""
    import resource
    import signal

    w = OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0, codec="none")
    image = np.random.default_rng(0).integers(0, 4000, (256, 256), dtype=np.uint16)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (its default ends the process)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))  # (a chunk is 131,072 bytes)
    try:
        with pytest.raises(OSError, match="File too large") as caught:
            w.write(image, _info(0, 0))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    w.close()
    assert caught.value.errno == errno.EFBIG
    assert caught.value.filename == str(_chunk(tmp_path, 0))
    assert read_frames(tmp_path) == []


# ---------------------------------------------------------------- float display window


def test_the_display_window_of_float_pixels_spans_their_values(tmp_path: Path) -> None:
    """0 to 1 for every float channel: data of values 3 to 200 was shown white (saturated)."""
    low = np.linspace(3.0, 100.0, 64, dtype=np.float32).reshape(8, 8)
    high = np.linspace(50.0, 200.0, 64, dtype=np.float32).reshape(8, 8)
    high[0, :2] = (np.nan, np.inf)  # (no number, and no finite one: not a window's end)
    with OmeZarrWriter(tmp_path, channels=["GFP", "BF"], pixel_size_um=1.0) as w:
        w.write(low, _info(0, 0, "GFP", dtype="float32"))
        w.write(high, _info(1, 1, "GFP", dtype="float32"))
        w.write(np.full((8, 8), -5.0, np.float32), _info(2, 0, "GFP", "B", dtype="float32"))
    windows = [c["window"] for c in _omero(tmp_path)["channels"]]
    assert windows[0] == {"start": 3.0, "end": pytest.approx(200.0), "min": 3.0,
                          "max": pytest.approx(200.0)}  # fmt: skip
    assert windows[1] == {"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0}  # (never imaged)
    b = _omero(tmp_path, "1")["channels"][0]["window"]  # (each position its own)
    assert b["start"] == b["min"] == -5.0
    assert b["end"] == b["max"] > -5.0  # (one value: a window that shows it)
    _valid(tmp_path)


def test_the_float_window_of_a_large_frame_comes_from_rows_across_it(tmp_path: Path) -> None:
    """A 2048² frame's values are sampled (every 16th row): its window misses the last rows."""
    image = np.tile(np.linspace(10.0, 1000.0, 2048, dtype=np.float32)[:, None], (1, 2048))
    with OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0) as w:
        w.write(image, _info(0, 0, dtype="float32", shape=(2048, 2048)))
    window = _omero(tmp_path)["channels"][0]["window"]
    assert window["start"] == 10.0
    assert 990.0 < window["end"] <= 1000.0
    _valid(tmp_path)


# ---------------------------------------------------------------- channel colours


@pytest.mark.parametrize(
    ("channels", "colors"),
    [
        pytest.param(["BF", "GFP", "mCherry"], ["FFFFFF", "00FF00", "FF0000"], id="bf-gfp-mcherry"),
        pytest.param(["mCherry", "GFP", "BF"], ["FF0000", "00FF00", "FFFFFF"], id="any-order"),
        pytest.param(["DAPI", "Cy5", "YFP", "TRITC"], ["0000FF", "FF00FF", "FFFF00", "FF0000"],
                     id="dyes"),
        pytest.param(["Hoechst 33342", "Alexa Fluor 488", "Far-Red", "561nm"],
                     ["0000FF", "00FF00", "FF00FF", "FF0000"], id="words-of-a-name"),
        pytest.param(["Bright Field", "egfp_488", "tdTomato", "Alexa488", "640"],
                     ["FFFFFF", "00FF00", "FF0000", "00FF00", "FF00FF"], id="case-and-joins"),
        pytest.param(["Phase", "DIC", "PhC", "Trans", "FITC", "405"],
                     ["FFFFFF", "FFFFFF", "FFFFFF", "FFFFFF", "00FF00", "0000FF"],
                     id="transmitted-light"),
        pytest.param(["ch0", "ch1", "ch2"], ["FFFFFF", "0000FF", "00FF00"], id="unknown-by-place"),
        pytest.param(["GFP", "custom", "Cy3"], ["00FF00", "0000FF", "FF0000"], id="mixed"),
    ],
)  # fmt: skip
def test_a_channel_is_shown_in_its_dyes_colour(
    tmp_path: Path, channels: list[str], colors: list[str]
) -> None:
    """Colours followed the list's order: BF, GFP, mCherry were white, blue, green."""
    with OmeZarrWriter(tmp_path, channels=channels, pixel_size_um=1.0) as w:
        w.write(np.ones((8, 8), np.uint16), _info(0, 0, channels[0]))
    omero = _omero(tmp_path)
    assert [c["label"] for c in omero["channels"]] == channels
    assert [c["color"] for c in omero["channels"]] == colors
