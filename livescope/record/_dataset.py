"""A recorded dataset: its frames and, on demand, their pixels (what every reader returns).

The readers themselves are in ``_datasets`` (run folders, CTC, NDTiff, OME-TIFF)
and ``_ngff`` (OME-Zarr); `open_dataset` picks one.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import LivescopeError

__all__ = [
    "DATASET_DTYPES", "Dataset", "DatasetError", "FrameKey", "RecordedFrame", "channel_names",
    "check_dtype", "dtype_name",
]  # fmt: skip

DATASET_DTYPES = ("uint8", "uint16")


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
    affine: tuple[float, float, float, float, float, float] | None = None
    """Micro-Manager's pixel size affine as recorded with the frame (None: not recorded,
    or all zeros: no calibration)."""
    roi_offset_px: tuple[float, float] | None = None
    """Where the frame's centre was from the camera sensor's, (columns, rows) px, as a
    livescope recording logs it (a camera ROI off the sensor's centre; None: not logged)."""


@dataclass
class Dataset:
    """A recorded dataset: its frames in acquisition order, and their pixels on demand."""

    path: Path
    format: str
    frames: list[RecordedFrame]
    warnings: list[str] = field(default_factory=list)
    _source: Any = None
    _index: dict[FrameKey, Any] = field(default_factory=dict)
    _declared: dict[FrameKey, RecordedFrame] = field(default_factory=dict, repr=False)
    _declared_from: list[RecordedFrame] | None = field(default=None, repr=False)

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
            if the dataset has no such frame, it cannot be read, or its pixels are
            not of the shape and pixel type its `RecordedFrame` declares.

        """
        image = self._read(key)
        frame = self._frame(key)
        if frame is not None and (
            image.shape != frame.shape or dtype_name(image.dtype) != dtype_name(frame.dtype)
        ):
            # (a replay camera serves every frame in the declared shape and type: a uint16
            # frame copied into a uint8 buffer wraps around without a word)
            where = self._index[key] if self.format == "ctc" else self.path
            got, opened = _size(image.shape, image.dtype), _size(frame.shape, frame.dtype)
            raise DatasetError(
                f"{where}: {frame.origin or key} is {got}, not {opened} as the dataset was "
                "opened (frames of other sizes or pixel types in one dataset, or a file changed "
                "since it was opened); livescope replays frames of one size and type"
            )
        return image

    def _frame(self, key: FrameKey) -> RecordedFrame | None:
        """Return the recorded frame of ``key`` (None: not among `frames`)."""
        if self._declared_from is not self.frames or key not in self._declared:
            # (built again where `frames` was replaced or grew: positions renamed, say)
            self._declared = {f.key: f for f in self.frames}
            self._declared_from = self.frames
        return self._declared.get(key)

    def _read(self, key: FrameKey) -> NDArray[Any]:
        if key not in self._index:
            raise DatasetError(f"{self.path}: no recorded frame for {key}")
        if self._source is None and self.format in ("livescope", "ndtiff", "ome-tiff", "ome-zarr"):
            # (`close` let go of the reader: a run folder's read crashed on None)
            raise DatasetError(f"{self.path}: the dataset is closed")
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
        if self.format == "ndtiff":
            try:
                image = np.asarray(self._source.read_image(**self._index[key]))
            except Exception as exc:  # noqa: BLE001 (ndstorage raises many kinds on a bad file)
                raise DatasetError(f"{self.path}: {key} cannot be read ({exc!r})") from None
            check_dtype(str(self.path), image.dtype, image.shape)
            return _native(image)
        if self.format == "ome-tiff":
            series, plane = self._index[key]
            try:
                page = self._source.series[series][plane]
                if page is not None:  # (None: left out when the dataset was opened)
                    image = np.asarray(page.asarray())
            except Exception as exc:  # noqa: BLE001 (tifffile's decoders raise many kinds)
                raise DatasetError(f"{self.path}: {key} cannot be read ({exc!r})") from None
            if page is None:
                raise DatasetError(f"{self.path}: {key} is in its OME metadata, not in the file")
            image = image.reshape(image.shape[-2:]) if image.ndim == 3 else image
            check_dtype(str(self.path), image.dtype, image.shape)
            return _native(image)
        if self.format == "ome-zarr":
            array_path, idx = self._index[key]
            plane = (*idx, slice(None), slice(None))
            try:
                image = np.asarray(self._source[array_path][plane])
            except Exception as exc:  # noqa: BLE001 (zarr's stores and codecs raise many kinds)
                raise DatasetError(f"{self.path}: {key} cannot be read ({exc!r})") from None
            check_dtype(str(self.path / array_path), image.dtype, image.shape)
            return _native(image)
        return _read_tiff_2d(self._index[key])

    def close(self) -> None:
        """Release the dataset's files."""
        if self.format in ("ome-tiff", "ndtiff") and self._source is not None:
            self._source.close()
        if self.format == "ome-zarr" and self._source is not None:
            self._source.clear()  # the opened arrays (a local store holds no open file)
        self._source = None

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dtype_name(dtype: Any) -> str:
    """Return a pixel type's name in this machine's byte order (``>u2``, big-endian: ``uint16``).

    Java writers (bioformats2raw) store big-endian Zarr arrays; their pixels are
    returned in this machine's byte order (`Dataset.read`).
    """
    return str(np.dtype(dtype).newbyteorder("="))


def _size(shape: tuple[int, ...], dtype: Any) -> str:
    return f"{' × '.join(str(n) for n in shape)} px {dtype_name(dtype)}"


def _native(image: NDArray[Any]) -> NDArray[Any]:
    """Return ``image`` in this machine's byte order (a copy only where it is not)."""
    return image if image.dtype.isnative else image.astype(image.dtype.newbyteorder("="))


def check_dtype(where: str, dtype: Any, shape: tuple[int, ...]) -> None:
    """Refuse frames that are not 2-D uint8/uint16 (either byte order), naming ``where``."""
    if len(shape) != 2:
        raise DatasetError(
            f"{where}: frames of shape {shape} are not supported (livescope replays "
            "2-D monochrome frames)"
        )
    if dtype_name(dtype) not in DATASET_DTYPES:
        raise DatasetError(
            f"{where}: pixel type {np.dtype(dtype)} is not supported (livescope replays "
            "uint8/uint16 monochrome frames)"
        )


def _read_tiff_2d(path: Path) -> NDArray[Any]:
    import tifffile

    try:
        image = np.asarray(tifffile.imread(path))
    except Exception as exc:  # noqa: BLE001 (tifffile's decoders raise many kinds)
        raise DatasetError(f"{path}: cannot be read ({exc})") from None
    if image.ndim > 2 and all(n == 1 for n in image.shape[:-2]):
        image = image.reshape(image.shape[-2:])  # (one plane, saved as (1, h, w))
    check_dtype(str(path), image.dtype, image.shape)
    return _native(image)


def refuse_repeated_keys(p: Path, frames: list[RecordedFrame], axes: str) -> None:
    """Refuse two frames with one key: a replay would serve one of them as both.

    Raises
    ------
    DatasetError
        naming both frames (e.g. two OME-TIFF series of one name, or NDTiff
        tiles told apart only by axes livescope does not replay).

    """
    first: dict[FrameKey, str] = {}
    for k, f in enumerate(frames):
        # (told apart by position in the list, not by origin: frames of one origin, or
        # of none given, were let through as one)
        here = f.origin or f"frame {k}"
        if f.key in first:
            raise DatasetError(
                f"{p}: {first[f.key]} and {here} are both {f.key}: livescope tells frames "
                f"apart by {axes} only, so a replay would serve one of them as both"
            )
        first[f.key] = here


def channel_names(where: str, names: list[str | None], warnings: list[str]) -> tuple[str, ...]:
    """Name each channel: its own name, or ``c<k>`` where it has none or an earlier one has it.

    The OME-TIFF and OME-Zarr readers' rule: ``c<k>`` is not taken where it is
    another channel's name (``c<k>_1`` then). Two channels of one name would be one
    to a replay (frames are told apart by channel name), so the later is renamed,
    with a warning in ``warnings`` naming ``where`` and the names.
    """
    given = [name or None for name in names]
    chosen: list[str] = []
    for k, name in enumerate(given):
        pick, j = name, 0
        while pick is None or pick in chosen or (pick != name and pick in given):
            pick, j = (f"c{k}" if j == 0 else f"c{k}_{j}"), j + 1
        chosen.append(pick)
    renamed = [f"channel {k} {name!r} as {pick!r}"
               for k, (name, pick) in enumerate(zip(given, chosen, strict=True))
               if name is not None and pick != name]  # fmt: skip
    if renamed:
        shared = [name for name in dict.fromkeys(given) if name and given.count(name) > 1]
        warnings.append(
            f"{where}: {' and '.join(f'{given.count(n)} channels are named {n!r}' for n in shared)}"
            f"; livescope tells channels apart by name, so it replays {', '.join(renamed)}"
        )
    return tuple(chosen)
