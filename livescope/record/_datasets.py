"""Recorded datasets, read frame by frame for replay (issue 8; see docs/design/replay.md).

`open_dataset` detects the format and returns a `Dataset`: the list of its
frames (`RecordedFrame`: position, time index, channel, z, sample time, stage
position, pixel size) and `Dataset.read` for the pixels of one. Formats read so
far:

* ``livescope``: a livescope run folder (``frames.jsonl`` + ``data.ome.zarr``);
  a run killed mid-write replays up to its last logged frame;
* ``ctc``: a Cell Tracking Challenge image folder (``t000.tif``, ``t001.tif``, ...),
  one position and one channel, ``interval_s`` apart.

NDTiff, OME-TIFF and OME-Zarr are refused with a message saying so. Only
monochrome uint8 and uint16 frames are replayed; anything else is refused with the
file named. Problems that do not stop a replay (a gap in a CTC numbering, a frame
whose checksum differs from the log) are listed in `Dataset.warnings`.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import LivescopeError

from ._zarr import FRAMES_FILE, ZARR_NAME, RecordingReader, read_frames

__all__ = ["DATASET_DTYPES", "Dataset", "DatasetError", "FrameKey", "RecordedFrame", "open_dataset"]

DATASET_DTYPES = ("uint8", "uint16")
_CTC_NAME = re.compile(r"^t(\d+)\.tiff?$")


class DatasetError(LivescopeError):
    """A dataset cannot be replayed; the message names the file and the problem."""


@dataclass(frozen=True, order=True)
class FrameKey:
    """Which frame: the position, time index, channel and z index of an event."""

    position: str
    t: int
    channel: str
    z: int = 0


@dataclass(frozen=True)
class RecordedFrame:
    """One recorded frame and what is known about it."""

    key: FrameKey
    shape: tuple[int, int]
    dtype: str
    sample_time_s: float | None = None
    x_um: float | None = None
    y_um: float | None = None
    z_um: float | None = None
    exposure_ms: float | None = None
    pixel_size_um: float | None = None
    origin: str = ""
    """Where it comes from, for messages (e.g. ``seq 41`` or ``t017.tif``)."""


@dataclass
class Dataset:
    """A recorded dataset: its frames in acquisition order, and their pixels on demand."""

    path: Path
    format: str
    frames: list[RecordedFrame]
    warnings: list[str] = field(default_factory=list)
    _source: Any = None
    _index: dict[FrameKey, Any] = field(default_factory=dict)

    @property
    def positions(self) -> list[str]:
        """Position names, in order of first appearance."""
        return list(dict.fromkeys(f.key.position for f in self.frames))

    @property
    def channels(self) -> list[str]:
        """Channel names, in order of first appearance."""
        return list(dict.fromkeys(f.key.channel for f in self.frames))

    def read(self, key: FrameKey) -> NDArray[Any]:
        """Return the pixels of frame ``key``.

        Raises
        ------
        DatasetError
            if the dataset has no such frame, or it cannot be read.

        """
        if key not in self._index:
            raise DatasetError(f"{self.path}: no recorded frame for {key}")
        if self.format == "livescope":
            info = self._index[key]
            try:
                image: NDArray[Any] = self._source.read(info)
            except LivescopeError as exc:
                raise DatasetError(f"{self.path}: {exc}") from None
            want = int(info.get("adler32") or 0)
            data = np.ascontiguousarray(image).data.cast("B")
            if want and zlib.adler32(data) != want:
                msg = f"{self.path}: frame {info['seq']} ({key}) differs from its logged checksum"
                if msg not in self.warnings:
                    self.warnings.append(msg)
            return image
        return _read_tiff_2d(self._index[key])

    def close(self) -> None:
        """Release the dataset's files."""
        self._source = None

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_dataset(
    path: str | Path,
    *,
    channel: str = "Fluo",
    interval_s: float = 1.0,
    pixel_size_um: float | None = None,
) -> Dataset:
    """Open a recorded dataset for replay, detecting its format (see the module).

    ``channel``, ``interval_s`` and ``pixel_size_um`` describe formats that do not
    record them (CTC folders).

    Raises
    ------
    DatasetError
        naming the file and the problem (missing, unknown or unsupported format,
        unsupported pixel type, unreadable frames).

    """
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: no such file or folder")
    if p.is_dir() and (p / FRAMES_FILE).is_file() and (p / ZARR_NAME).is_dir():
        return _open_livescope(p)
    if p.is_dir() and (p / "NDTiff.index").is_file():
        raise DatasetError(f"{p}: NDTiff datasets cannot be replayed yet (issue 8)")
    if p.is_dir() and ((p / "zarr.json").is_file() or (p / ".zattrs").is_file()):
        raise DatasetError(f"{p}: OME-Zarr datasets cannot be replayed yet (issue 8)")
    if p.is_file() and p.name.lower().endswith((".ome.tif", ".ome.tiff")):
        raise DatasetError(f"{p}: OME-TIFF files cannot be replayed yet (issue 8)")
    if p.is_dir() and any(_CTC_NAME.match(f.name) for f in p.iterdir()):
        return _open_ctc(p, channel, interval_s, pixel_size_um)
    raise DatasetError(
        f"{p}: not a dataset livescope can replay (a livescope run folder with "
        f"{FRAMES_FILE} and {ZARR_NAME}, or a folder of tNNN.tif frames)"
    )


def _check_dtype(where: str, dtype: Any, shape: tuple[int, ...]) -> None:
    if len(shape) != 2:
        raise DatasetError(
            f"{where}: frames of shape {shape} are not supported (livescope replays "
            "2-D monochrome frames)"
        )
    if str(np.dtype(dtype)) not in DATASET_DTYPES:
        raise DatasetError(
            f"{where}: pixel type {np.dtype(dtype)} is not supported (livescope replays "
            "uint8/uint16 monochrome frames)"
        )


def _open_livescope(p: Path) -> Dataset:
    infos = read_frames(p)  # a line cut short by a crash is skipped
    if not infos:
        raise DatasetError(f"{p}: the recording holds no frame ({FRAMES_FILE} is empty)")
    frames: list[RecordedFrame] = []
    index: dict[FrameKey, Any] = {}
    for info in infos:
        shape = tuple(int(s) for s in info["shape"])
        _check_dtype(f"{p} (frame {info['seq']})", info["dtype"], shape)
        idx = info["index"]
        key = FrameKey(str(info["position"]), int(idx.get("t", 0)), str(info["channel"]),
                       int(idx.get("z", 0)))  # fmt: skip
        frames.append(
            RecordedFrame(
                key, (shape[0], shape[1]), str(info["dtype"]),
                sample_time_s=info.get("sample_time_s"), x_um=info.get("x_um"),
                y_um=info.get("y_um"), z_um=info.get("z_um"),
                exposure_ms=info.get("exposure_ms"),
                pixel_size_um=info.get("pixel_size_um") or None, origin=f"seq {info['seq']}",
            )
        )  # fmt: skip
        index[key] = info
    ds = Dataset(p, "livescope", frames, _source=RecordingReader(p), _index=index)
    if not (p / "summary.json").is_file():
        ds.warnings.append(
            f"{p}: the run did not finish (no summary.json); replaying its {len(frames)} "
            "logged frames"
        )
    return ds


def _open_ctc(p: Path, channel: str, interval_s: float, pixel_size_um: float | None) -> Dataset:
    import tifffile

    files = sorted(
        ((int(m.group(1)), f) for f in p.iterdir() if (m := _CTC_NAME.match(f.name))),
        key=lambda tf: tf[0],
    )
    frames: list[RecordedFrame] = []
    index: dict[FrameKey, Any] = {}
    warnings: list[str] = []
    expected = files[0][0]
    for t, f in files:
        if t != expected:
            warnings.append(f"{p}: frames {expected}..{t - 1} are missing ({f.name} follows)")
        expected = t + 1
        try:
            with tifffile.TiffFile(f) as tf:
                series = tf.series[0]
                shape, dtype = tuple(int(s) for s in series.shape), series.dtype
        except (OSError, ValueError, IndexError, tifffile.TiffFileError) as exc:
            warnings.append(f"{f}: cannot be read ({exc!r}); the replay ends before it")
            break
        _check_dtype(str(f), dtype, shape)
        key = FrameKey("p0", t, channel, 0)
        frames.append(
            RecordedFrame(
                key,
                (shape[0], shape[1]),
                str(np.dtype(dtype)),
                sample_time_s=t * interval_s,
                pixel_size_um=pixel_size_um,
                origin=f.name,
            )
        )
        index[key] = f
    if not frames:
        raise DatasetError(f"{p}: no readable tNNN.tif frame")
    return Dataset(p, "ctc", frames, warnings=warnings, _index=index)


def _read_tiff_2d(path: Path) -> NDArray[Any]:
    import tifffile

    try:
        image = np.asarray(tifffile.imread(path))
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc})") from None
    _check_dtype(str(path), image.dtype, image.shape)
    return image
