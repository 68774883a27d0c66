"""Recorded datasets, read frame by frame for replay (issue 8; see docs/design/replay.md).

`open_dataset` detects the format and returns a `Dataset`: the list of its
frames (`RecordedFrame`: position, time index, channel, z, sample time, stage
position, pixel size) and `Dataset.read` for the pixels of one. Formats read so
far:

* ``livescope``: a livescope run folder (``frames.jsonl`` + ``data.ome.zarr``);
  a run killed mid-write replays up to its last logged frame;
* ``ctc``: a Cell Tracking Challenge image folder (``t000.tif``, ``t001.tif``, ...),
  one position and one channel, ``interval_s`` apart.

* ``ndtiff``: an NDTiff dataset (pycromanager / Micro-Manager, ndstorage); frames
  after one cut short by a crash are left out, with a warning;
* ``ome-tiff``: an OME-TIFF file, one series per position, T/C/Z planes of YX
  (a file cut short, without its OME metadata, is refused);
* ``ome-zarr``: an OME-Zarr image (NGFF 0.4 on Zarr v2, 0.5 on Zarr v3), or a
  ``bioformats2raw.layout`` folder of them, one per position; level 0 only. Planes
  whose chunks were never written (a crash mid-write) are left out, with a warning,
  and the replay ends at the last time point written in full (HCS plates are refused).

Only monochrome uint8 and uint16 frames are replayed; anything else is refused with the
file named. Problems that do not stop a replay (a gap in a CTC numbering, a frame
whose checksum differs from the log) are listed in `Dataset.warnings`.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import struct
import threading
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
        if self.format == "ndtiff":
            try:
                image = np.asarray(self._source.read_image(**self._index[key]))
            except Exception as exc:  # noqa: BLE001 (ndstorage raises many kinds on a bad file)
                raise DatasetError(f"{self.path}: {key} cannot be read ({exc!r})") from None
            _check_dtype(str(self.path), image.dtype, image.shape)
            return image
        if self.format == "ome-tiff":
            series, plane = self._index[key]
            try:
                image = np.asarray(self._source.series[series].pages[plane].asarray())
            except (OSError, ValueError, IndexError) as exc:
                raise DatasetError(f"{self.path}: {key} cannot be read ({exc!r})") from None
            return image.reshape(image.shape[-2:]) if image.ndim == 3 else image
        if self.format == "ome-zarr":
            array_path, idx = self._index[key]
            if self._source is None:
                raise DatasetError(f"{self.path}: the dataset is closed")
            plane = (*idx, slice(None), slice(None))
            try:
                image = np.asarray(self._source[array_path][plane])
            except Exception as exc:  # noqa: BLE001 (zarr's stores and codecs raise many kinds)
                raise DatasetError(f"{self.path}: {key} cannot be read ({exc!r})") from None
            _check_dtype(str(self.path / array_path), image.dtype, image.shape)
            return image
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
    if p.is_dir() and not (p / "NDTiff.index").is_file():
        inner = [d for d in p.iterdir() if (d / "NDTiff.index").is_file()]
        if len(inner) == 1:  # the acquisition's folder (acq_1/) inside the one given
            p = inner[0]
    if p.is_dir() and (p / "NDTiff.index").is_file():
        return _open_ndtiff(p, interval_s, pixel_size_um)
    if p.is_dir() and any((p / n).is_file() for n in ("zarr.json", ".zattrs", ".zgroup")):
        return _open_ome_zarr(p, interval_s, pixel_size_um)
    if p.is_file() and p.suffix.lower() in (".tif", ".tiff"):
        return _open_ome_tiff(p, interval_s, pixel_size_um)
    if p.is_dir() and any(_CTC_NAME.match(f.name) for f in p.iterdir()):
        return _open_ctc(p, channel, interval_s, pixel_size_um)
    raise DatasetError(
        f"{p}: not a dataset livescope can replay (a livescope run folder with "
        f"{FRAMES_FILE} and {ZARR_NAME}, an OME-Zarr image or bioformats2raw folder, an "
        "NDTiff dataset, an OME-TIFF file, or a folder of tNNN.tif frames)"
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


_NDTIFF_LOCK = threading.Lock()


def _open_ndtiff(p: Path, interval_s: float, pixel_size_um: float | None) -> Dataset:
    """Open an NDTiff dataset (pycromanager / Micro-Manager, written with ndstorage)."""
    from ndstorage import Dataset as NDDataset

    # ndstorage prints its progress to stdout (which holds a command's JSON): hide it
    with _NDTIFF_LOCK, contextlib.redirect_stdout(io.StringIO()):
        try:
            nd = NDDataset(str(p))
        except Exception as exc:  # noqa: BLE001 (ndstorage raises many kinds on a bad index)
            raise DatasetError(
                f"{p}: the NDTiff index cannot be read ({exc!r}); was the acquisition cut "
                "short while writing it?"
            ) from None
    try:
        shape = (int(nd.image_height), int(nd.image_width))
        _check_dtype(str(p), nd.dtype, shape)
        summary = getattr(nd, "summary_metadata", None) or {}
        names = list(summary.get("ChNames") or [])
        frames: list[RecordedFrame] = []
        index: dict[FrameKey, Any] = {}
        warnings: list[str] = []
        coords_list = list(nd.get_image_coordinates_list())
        for n, coords in enumerate(coords_list):
            try:
                meta = nd.read_metadata(**coords)
            except Exception as exc:  # noqa: BLE001 (a frame cut short: stop before it)
                warnings.append(
                    f"{p}: acquisition ended mid-write; replaying the first {n} of "
                    f"{len(coords_list)} indexed frames ({coords}: {exc!r})"
                )
                break
            pos = coords.get("position", 0)
            ch = coords.get("channel", 0)
            if isinstance(ch, int) and ch < len(names):
                ch = names[ch]
            t = int(coords.get("time", 0))
            key = FrameKey(pos if isinstance(pos, str) else f"p{pos}", t, str(ch),
                           int(coords.get("z", 0)))  # fmt: skip
            elapsed = meta.get("ElapsedTime-ms")
            um = pixel_size_um or meta.get("PixelSizeUm") or meta.get("PixelSize_um") or (
                summary.get("PixelSize_um"))  # fmt: skip
            frames.append(
                RecordedFrame(
                    key, shape, str(np.dtype(nd.dtype)),
                    sample_time_s=elapsed / 1000.0 if elapsed is not None else t * interval_s,
                    x_um=meta.get("XPositionUm", meta.get("XPosition_um_Intended")),
                    y_um=meta.get("YPositionUm", meta.get("YPosition_um_Intended")),
                    z_um=meta.get("ZPositionUm"), exposure_ms=meta.get("Exposure"),
                    pixel_size_um=float(um) if um else None, origin=f"NDTiff {coords}",
                )
            )  # fmt: skip
            index[key] = dict(coords)
    except BaseException:
        nd.close()
        raise
    if not frames:
        nd.close()
        raise DatasetError(f"{p}: the NDTiff dataset holds no complete frame")
    return Dataset(p, "ndtiff", frames, warnings=warnings, _source=nd, _index=index)


_UNIT_UM = {None: 1.0, "µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}


def _open_ome_tiff(p: Path, interval_s: float, pixel_size_um: float | None) -> Dataset:
    """One series per position; planes in the order of the series' leading axes (T, C, Z)."""
    import logging

    import tifffile

    logged: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    log = logging.getLogger("tifffile")
    log.addHandler(handler)
    try:
        tf = tifffile.TiffFile(p)
    except (OSError, ValueError, struct.error, tifffile.TiffFileError) as exc:
        raise DatasetError(f"{p}: not a readable TIFF ({exc!r})") from None
    finally:
        log.removeHandler(handler)
    try:
        if logged:
            raise DatasetError(f"{p}: truncated or damaged TIFF ({logged[0]})")
        if not tf.is_ome:
            raise DatasetError(f"{p}: no OME metadata; cannot tell time, channel and z apart")
        images = tifffile.xml2dict(tf.ome_metadata or "")["OME"]["Image"]
        images = images if isinstance(images, list) else [images]
        frames: list[RecordedFrame] = []
        index: dict[FrameKey, Any] = {}
        for i, series in enumerate(tf.series):
            axes, shape = series.get_axes(False), series.get_shape(False)
            lead = axes[: axes.index("Y")] if "Y" in axes else axes
            if axes[len(lead) :] not in ("YX", "YXS") or set(lead) - set("TCZ"):
                raise DatasetError(
                    f"{p}: series {i} has axes {axes}; livescope replays T, C, Z planes of YX"
                )
            if axes.endswith("S") and shape[-1] != 1:
                raise DatasetError(f"{p}: series {i} is RGB; livescope replays monochrome frames")
            _check_dtype(f"{p} (series {i})", series.dtype, tuple(shape[len(lead) : len(lead) + 2]))
            px = images[i].get("Pixels", {}) if i < len(images) else {}
            chans = px.get("Channel", [])
            chans = chans if isinstance(chans, list) else [chans]
            names = [c.get("Name") or f"c{k}" for k, c in enumerate(chans)]
            size = px.get("PhysicalSizeX")
            um = pixel_size_um
            if um is None and size is not None:
                um = float(size) * _UNIT_UM.get(px.get("PhysicalSizeXUnit"), 1.0)
            step = float(px.get("TimeIncrement") or interval_s)
            position = str(series.name or f"p{i}")
            lead_shape = tuple(int(n) for n in shape[: len(lead)])
            for plane, idx in enumerate(np.ndindex(*lead_shape)):
                at = dict(zip(lead, idx, strict=True))
                c = at.get("C", 0)
                key = FrameKey(position, at.get("T", 0), names[c] if c < len(names) else f"c{c}",
                               at.get("Z", 0))  # fmt: skip
                frames.append(
                    RecordedFrame(
                        key, (int(shape[len(lead)]), int(shape[len(lead) + 1])),
                        str(np.dtype(series.dtype)), sample_time_s=key.t * step,
                        pixel_size_um=um, origin=f"series {i} plane {plane}",
                    )
                )  # fmt: skip
                index[key] = (i, plane)
    except BaseException:
        tf.close()
        raise
    frames.sort(key=lambda f: (f.key.t, *index[f.key]))  # time point, then series and plane
    return Dataset(p, "ome-tiff", frames, _source=tf, _index=index)


_SPACE_UM: dict[str | None, float] = {
    None: 1.0, "micrometer": 1.0, "nanometer": 1e-3, "angstrom": 1e-4, "millimeter": 1e3,
    "centimeter": 1e4, "meter": 1e6,
}  # fmt: skip
_TIME_S: dict[str | None, float] = {
    None: 1.0, "second": 1.0, "millisecond": 1e-3, "microsecond": 1e-6, "minute": 60.0,
    "hour": 3600.0,
}  # fmt: skip
_LISTED_PLANES = 3  # missing planes named in the warning


@dataclass
class _ZarrImage:
    """Level 0 of one NGFF image (one position) and which of its planes are on disk."""

    position: str
    array_path: str  # from the dataset folder, "/"-separated
    array: Any
    lead: list[str]  # the t/c/z axes of the array, in its order (y, x follow)
    channels: list[str]
    step_s: float
    pixel_size_um: float | None
    missing: set[tuple[int, ...]]  # planes (indices along ``lead``) never written


def _open_ome_zarr(p: Path, interval_s: float, pixel_size_um: float | None) -> Dataset:
    """Open an OME-Zarr image, or a ``bioformats2raw.layout`` folder of images (positions)."""
    import zarr

    try:
        root = zarr.open_group(p, mode="r")
    except Exception as exc:  # noqa: BLE001 (zarr raises many kinds on a bad store)
        raise DatasetError(f"{p}: not a readable Zarr group ({exc!r})") from None
    attrs = _ome_attrs(root)
    if "plate" in attrs or "well" in attrs:
        raise DatasetError(f"{p}: OME-Zarr plates are not supported yet")
    if "bioformats2raw.layout" in attrs and "multiscales" not in attrs:
        keys = sorted((k for k in root.group_keys() if k.isdigit()), key=int)
        if not keys:
            raise DatasetError(f"{p}: bioformats2raw layout without an image group (0/, 1/, ...)")
        images = [_zarr_image(p, root[k], k, f"p{k}", interval_s, pixel_size_um) for k in keys]
    else:
        images = [_zarr_image(p, root, "", "p0", interval_s, pixel_size_um)]

    # every plane: t, position (index in images), c, z, its indices in the array, on disk
    planes: list[tuple[int, int, int, int, tuple[int, ...], bool]] = []
    for i, image in enumerate(images):
        for idx in np.ndindex(*image.array.shape[:-2]):
            at = dict(zip(image.lead, idx, strict=True))
            plane = (at.get("t", 0), i, at.get("c", 0), at.get("z", 0), idx)
            planes.append((*plane, idx not in image.missing))
    planes.sort(key=lambda plane: plane[:4])
    if not planes:
        raise DatasetError(f"{p}: the OME-Zarr image holds no plane")
    missing = [plane for plane in planes if not plane[5]]
    incomplete = {plane[0] for plane in missing}
    complete = [t for t in dict.fromkeys(plane[0] for plane in planes) if t not in incomplete]
    warnings: list[str] = []
    if missing:
        several = len(images) > 1
        named = ", ".join(
            f"{images[i].position + ' ' if several else ''}t={t} c={c} z={z}"
            for t, i, c, z, _, _ in missing[:_LISTED_PLANES]
        )
        more = ", ..." if len(missing) > _LISTED_PLANES else ""
        if not complete:
            raise DatasetError(
                f"{p}: no time point was written in full ({len(missing)} of {len(planes)} "
                f"planes never written: {named}{more})"
            )
        warnings.append(
            f"{p}: {len(missing)} of {len(planes)} planes never written ({named}{more}); "
            f"replaying t={planes[0][0]}..{complete[-1]}"
        )
    last = complete[-1]
    frames: list[RecordedFrame] = []
    index: dict[FrameKey, Any] = {}
    for t, i, c, z, idx, on_disk in planes:
        if not on_disk or t > last:
            continue
        image = images[i]
        key = FrameKey(image.position, t, image.channels[c], z)
        frames.append(
            RecordedFrame(
                key, (int(image.array.shape[-2]), int(image.array.shape[-1])),
                str(np.dtype(image.array.dtype)), sample_time_s=t * image.step_s,
                pixel_size_um=image.pixel_size_um, origin=f"{image.array_path} t={t} c={c} z={z}",
            )
        )  # fmt: skip
        index[key] = (image.array_path, idx)
    source = {image.array_path: image.array for image in images}
    return Dataset(p, "ome-zarr", frames, warnings=warnings, _source=source, _index=index)


def _ome_attrs(group: Any) -> dict[str, Any]:
    """NGFF attributes: under ``ome`` (0.5, Zarr v3) or at the top (0.4, Zarr v2)."""
    attrs: dict[str, Any] = dict(group.attrs)
    ome = attrs.get("ome")
    return {**attrs, **ome} if isinstance(ome, dict) else attrs


def _zarr_image(
    p: Path,
    group: Any,
    group_path: str,
    position: str,
    interval_s: float,
    pixel_size_um: float | None,
) -> _ZarrImage:
    """Read the NGFF metadata of one image group and list the chunks of its level 0."""
    import zarr

    where = p / group_path if group_path else p
    if not isinstance(group, zarr.Group):
        raise DatasetError(f"{where}: not a Zarr group (an OME-Zarr image is one)")
    attrs = _ome_attrs(group)
    if "plate" in attrs or "well" in attrs:
        raise DatasetError(f"{where}: OME-Zarr plates are not supported yet")
    multiscales = attrs.get("multiscales")
    ms = multiscales[0] if isinstance(multiscales, list) and multiscales else None
    if not isinstance(ms, dict):
        raise DatasetError(f"{where}: no OME-Zarr multiscales metadata (not an NGFF image)")
    datasets = ms.get("datasets")
    level = datasets[0] if isinstance(datasets, list) and datasets else None
    if not isinstance(level, dict) or not isinstance(level.get("path"), str):
        raise DatasetError(f"{where}: the multiscales list no dataset path")
    array_path = f"{group_path}/{level['path']}" if group_path else level["path"]
    try:
        array = group[level["path"]]
    except KeyError:
        raise DatasetError(f"{p / array_path}: level 0 of the multiscales is missing") from None
    if not isinstance(array, zarr.Array):
        raise DatasetError(f"{p / array_path}: level 0 of the multiscales is not an array")

    axes = ms.get("axes")
    if axes is None and array.ndim == 5:
        axes = ["t", "c", "z", "y", "x"]  # NGFF 0.1 and 0.2: always 5-D, no axes listed
    axes = axes if isinstance(axes, list) else []
    names = [a.get("name") if isinstance(a, dict) else a for a in axes]
    names = [n if isinstance(n, str) and n else None for n in names]
    units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
    if "y" not in names or "x" not in names or None in names:
        raise DatasetError(f"{where}: multiscales axes {names} lack y/x")
    lead = [str(n) for n in names[:-2]]
    if names[-2:] != ["y", "x"] or set(lead) - {"t", "c", "z"} or len(set(lead)) < len(lead):
        raise DatasetError(
            f"{where}: multiscales axes {names} are not supported (livescope replays t, c, z "
            "planes of y/x)"
        )
    if len(names) != array.ndim:
        raise DatasetError(
            f"{where}: multiscales axes {names} do not match {array_path} of shape {array.shape}"
        )
    _check_dtype(str(p / array_path), array.dtype, tuple(array.shape[-2:]))

    scale = _zarr_scale(level.get("coordinateTransformations"), array.ndim)
    outer = _zarr_scale(ms.get("coordinateTransformations"), array.ndim)
    if scale is not None and outer is not None:
        scale = [a * b for a, b in zip(scale, outer, strict=True)]
    scale = scale or outer
    um = pixel_size_um
    x_factor = _SPACE_UM.get(units[-1])
    if um is None and scale is not None and x_factor is not None and scale[-1] > 0:
        um = scale[-1] * x_factor
    step = interval_s
    if "t" in names and scale is not None:
        t_factor = _TIME_S.get(units[names.index("t")])
        if t_factor is not None and scale[names.index("t")] > 0:
            step = scale[names.index("t")] * t_factor

    n_channels = int(array.shape[names.index("c")]) if "c" in names else 1
    omero = attrs.get("omero")
    listed = omero.get("channels") if isinstance(omero, dict) else None
    listed = listed if isinstance(listed, list) else []
    channels: list[str] = []
    for k in range(n_channels):
        label = listed[k].get("label") if k < len(listed) and isinstance(listed[k], dict) else None
        channels.append(label if isinstance(label, str) and label and label not in channels
                        else f"c{k}")  # fmt: skip
    missing = _missing_planes(array, p / array_path)
    return _ZarrImage(position, array_path, array, lead, channels, step, um, missing)


def _zarr_scale(transforms: Any, ndim: int) -> list[float] | None:
    """Return the ``scale`` of a list of NGFF coordinate transformations, if it has one."""
    for tr in transforms if isinstance(transforms, list) else []:
        scale = tr.get("scale") if isinstance(tr, dict) and tr.get("type") == "scale" else None
        if isinstance(scale, list) and len(scale) == ndim:
            try:
                return [float(v) for v in scale]
            except (TypeError, ValueError):
                return None
    return None


def _missing_planes(array: Any, folder: Path) -> set[tuple[int, ...]]:
    """Planes (indices along the leading axes) with a chunk never written.

    A missing chunk reads back as the fill value, silently: a run killed mid-write
    leaves some. The chunk files of the (local) array are listed once; a plane is
    on disk when every chunk covering its y/x extent is (a chunk spanning several
    planes counts for each of them). Sharded arrays are checked shard by shard.
    """
    keys: set[str] = set()
    for dirpath, _, files in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        keys.update((rel / f).as_posix() for f in files)
    shape = tuple(int(n) for n in array.shape)
    grid = tuple(int(n) for n in (array.shards or array.chunks))
    counts = [-(-n // g) for n, g in zip(shape, grid, strict=True)]
    yx = [(yi, xi) for yi in range(counts[-2]) for xi in range(counts[-1])]
    missing: set[tuple[int, ...]] = set()
    for lead in np.ndindex(*counts[:-2]):
        if all(array.metadata.encode_chunk_key((*lead, *c)) in keys for c in yx):
            continue
        spans = [
            range(i * g, min((i + 1) * g, n))
            for i, g, n in zip(lead, grid[:-2], shape[:-2], strict=True)
        ]
        missing.update(itertools.product(*spans))
    return missing


def _read_tiff_2d(path: Path) -> NDArray[Any]:
    import tifffile

    try:
        image = np.asarray(tifffile.imread(path))
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc})") from None
    _check_dtype(str(path), image.dtype, image.shape)
    return image
