"""Recorded datasets, read frame by frame for replay (issue 8; see docs/design/replay.md).

`open_dataset` detects the format and returns a `Dataset`: the list of its
frames (`RecordedFrame`: position, time index, channel, z, sample time, stage
position, pixel size) and `Dataset.read` for the pixels of one. Formats read so
far:

* ``livescope``: a livescope run folder (``frames.jsonl`` + ``data.ome.zarr``);
  a run killed mid-write replays up to its last logged frame; a run's
  ``data.ome.zarr`` given on its own opens as its run folder;
* ``ctc``: a Cell Tracking Challenge image folder (``t000.tif``, ``t001.tif``, ...),
  one position and one channel, ``interval_s`` apart; the pixel size its TIFF tags
  state (a resolution per cm, mm or µm, or ImageJ's in nm, microns, mm, cm or m; in
  another unit: none, with a warning), if any. A file of several planes (a z-stack) is
  refused.

* ``ndtiff``: an NDTiff dataset (pycromanager / Micro-Manager, ndstorage); frames
  after one cut short by a crash are left out, with a warning; each frame's
  ``PixelSizeAffine`` (how the camera was turned against the stage) is read;
* ``ome-tiff``: an OME-TIFF file (``.tif``, ``.tiff``; a BigTIFF one also ``.btf``,
  ``.tf2``, ``.tf8``), one series per position (its OME ``Image`` found by
  name), T/C/Z planes of YX (a file cut short, without its OME metadata, is refused;
  planes its OME-XML lists but the file lacks are left out, with a warning; a file
  of a multi-file OME-TIFF whose metadata is in another is refused, naming that one);
* ``ome-zarr``: an OME-Zarr image (NGFF 0.4 on Zarr v2, 0.5 on Zarr v3), or a
  ``bioformats2raw.layout`` folder of them, one per position; level 0 only. Planes
  never written (not acquired, as a channel imaged at some time points only) are left
  out, with a warning; blank planes and tiles (no chunk: only the fill value) are
  replayed as such; a run cut short ends at its last time point written (see
  `livescope.record._ngff`; HCS plates are refused).

Only monochrome uint8 and uint16 frames are replayed; anything else is refused with the
file named. Problems that do not stop a replay (a gap in a CTC numbering, a frame
whose checksum differs from the log) are listed in `Dataset.warnings`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import re
import struct
import threading
import unicodedata
from pathlib import Path
from typing import Any

from livescope.schema import (
    LivescopeError,
    folder_key,
    folder_name_problem,
    roi_offset_pair,
    safe_folder_name,
)

from ._dataset import (
    Dataset,
    DatasetError,
    FrameKey,
    RecordedFrame,
    check_dtype,
    dtype_name,
    refuse_repeated_keys,
)
from ._ngff import open_ome_zarr
from ._ometiff import _UM_PER, open_ome_tiff
from ._zarr import FRAMES_FILE, ZARR_NAME, RecordingReader, read_frames

__all__ = ["OME_TIFF_SUFFIXES", "open_dataset"]

logger = logging.getLogger("livescope")

_CTC_NAME = re.compile(r"^t(\d+)\.tiff?$")
OME_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf2", ".tf8")
"""How an OME-TIFF file is named; a BigTIFF one also as Bio-Formats names it (``.ome.btf``, ...)."""


def open_dataset(
    path: str | Path,
    *,
    channel: str = "Fluo",
    interval_s: float = 1.0,
    pixel_size_um: float | None = None,
) -> Dataset:
    """Open a recorded dataset for replay, detecting its format (see the module).

    ``channel``, ``interval_s`` (seconds between time points) and ``pixel_size_um``
    describe formats that do not record them (CTC folders; times, where a format
    records none); ``pixel_size_um`` (µm per pixel), if given, also replaces a
    recorded one, in every format.

    Raises
    ------
    DatasetError
        naming the file and the problem (missing, unknown or unsupported format,
        unsupported pixel type, unreadable frames).

    """
    if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise DatasetError(f"{path}: pixel size {pixel_size_um} µm given; it must be above 0")
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise DatasetError(f"{path}: interval {interval_s} s given; it must be above 0")
    ds = _open(Path(path), channel, interval_s, pixel_size_um)
    return _with_folder_names(_checked_pixel_sizes(ds))


def _checked_pixel_sizes(ds: Dataset) -> Dataset:
    """Refuse a recorded pixel size below 0 or not finite; read one of 0 as not recorded.

    Micro-Manager records 0 for a pixel size that was never calibrated; NDTiff
    and livescope's own frame log already read it as none. Raises DatasetError
    naming the dataset and the first frame concerned.
    """
    for k, f in enumerate(ds.frames):
        um = f.pixel_size_um
        if um is None or (math.isfinite(um) and um > 0):
            continue
        if um != 0:
            ds.close()
            raise DatasetError(
                f"{ds.path}: {f.origin} records a pixel size of {um} µm; it must be above 0 "
                "(--pixel-size gives the right one)"
            )
        ds.frames[k] = dataclasses.replace(f, pixel_size_um=None)
    return ds


def _with_folder_names(ds: Dataset) -> Dataset:
    """Rename positions whose names cannot name a results folder here; say so in a warning.

    A replay keeps each position's results in a folder of its name, and a plan
    whose names cannot be folders is refused (`livescope.schema.check_plan`);
    a recording's names are not the user's to change, so they are replaced
    (`livescope.schema.safe_folder_name`); where that is still no folder name,
    or names a folder another position has (`livescope.schema.folder_key`:
    file names that ignore case count as one), by ``p<k>``.
    """
    taken: set[str] = set()
    renamed: dict[str, str] = {}
    for k, name in enumerate(ds.positions):
        new, j = safe_folder_name(name), k
        while folder_name_problem(new) is not None or folder_key(new) in taken:
            new, j = f"p{j}", j + 1
        taken.add(folder_key(new))
        if new != name:
            renamed[name] = new
    if not renamed:
        return ds
    for old, new in renamed.items():
        ds.warnings.append(
            f"position {old!r} is replayed as {new!r}: its name cannot name its results folder"
        )

    def key(k: FrameKey) -> FrameKey:
        return dataclasses.replace(k, position=renamed.get(k.position, k.position))

    ds.frames = [dataclasses.replace(f, key=key(f.key)) for f in ds.frames]
    ds._index = {key(k): v for k, v in ds._index.items()}  # noqa: SLF001
    return ds


def _open(p: Path, channel: str, interval_s: float, pixel_size_um: float | None) -> Dataset:
    if not p.exists():
        raise DatasetError(f"{p}: no such file or folder")
    if p.name == ZARR_NAME and p.is_dir() and (p.parent / FRAMES_FILE).is_file():
        # a run's own store: its frame log holds what the store cannot (sample times,
        # position names, which channels each time point took)
        logger.info("%s is a livescope run's recording: opening its run folder %s", p, p.parent)
        p = p.parent
    if p.is_dir() and (p / FRAMES_FILE).is_file() and (p / ZARR_NAME).is_dir():
        return _open_livescope(p, pixel_size_um)
    if p.is_dir() and not (p / "NDTiff.index").is_file():
        inner = [d for d in p.iterdir() if (d / "NDTiff.index").is_file()]
        if len(inner) == 1:  # the acquisition's folder (acq_1/) inside the one given
            p = inner[0]
    if p.is_dir() and (p / "NDTiff.index").is_file():
        return _open_ndtiff(p, interval_s, pixel_size_um)
    if p.is_dir() and any((p / n).is_file() for n in ("zarr.json", ".zattrs", ".zgroup")):
        return open_ome_zarr(p, interval_s, pixel_size_um)
    if p.is_file() and p.suffix.lower() in OME_TIFF_SUFFIXES:
        return open_ome_tiff(p, interval_s, pixel_size_um)
    if p.is_dir() and any(_CTC_NAME.match(f.name) for f in p.iterdir()):
        return _open_ctc(p, channel, interval_s, pixel_size_um)
    raise DatasetError(
        f"{p}: not a dataset livescope can replay (a livescope run folder with "
        f"{FRAMES_FILE} and {ZARR_NAME}, an OME-Zarr image or bioformats2raw folder, an "
        f"NDTiff dataset, an OME-TIFF file ({', '.join(OME_TIFF_SUFFIXES)}), or a folder of "
        "tNNN.tif frames)"
    )


def _open_livescope(p: Path, pixel_size_um: float | None) -> Dataset:
    """Open a livescope run folder; ``pixel_size_um`` (if given) replaces the logged one.

    Raises DatasetError naming the frame log and its line where a line is not a
    frame record (damaged, edited, another program's: a record lacking a field,
    an index, stage position, exposure, time or pixel size that is no number), or
    two lines are one frame.
    """
    log = p / FRAMES_FILE
    try:
        infos = read_frames(p)  # a line cut short by a crash is skipped
    except (LivescopeError, OSError) as exc:  # (the error names the file and the line)
        raise DatasetError(
            str(exc) if isinstance(exc, LivescopeError) else f"{log}: {exc}"
        ) from None
    if not infos:
        raise DatasetError(f"{p}: the recording holds no frame ({FRAMES_FILE} is empty)")
    frames: list[RecordedFrame] = []
    index: dict[FrameKey, Any] = {}
    for k, info in enumerate(infos):
        try:
            frame = _logged_frame(p, info, pixel_size_um)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(
                f"{log}, {_record_places(log, k + 1)[k]}: not a frame record livescope wrote "
                f"({type(exc).__name__}: {exc}); the log was edited, or is another program's"
            ) from None
        frames.append(frame)
        index[frame.key] = info
    if len(index) < len(frames):  # (two lines are one frame: said with their lines)
        places = _record_places(log, len(frames))
        lined = [
            dataclasses.replace(f, origin=f"{at} ({f.origin})")
            for f, at in zip(frames, places, strict=True)
        ]
        refuse_repeated_keys(log, lined, "position, time index, channel and z")
    ds = Dataset(p, "livescope", frames, _source=RecordingReader(p), _index=index)
    if not (p / "summary.json").is_file():
        ds.warnings.append(
            f"{p}: the run did not finish (no summary.json); replaying its {len(frames)} "
            "logged frames"
        )
    return ds


def _logged_frame(p: Path, info: Any, pixel_size_um: float | None) -> RecordedFrame:
    """Return the `RecordedFrame` of one frame log record (KeyError, TypeError, ...: not one)."""
    shape = tuple(int(s) for s in info["shape"])
    if len(shape) > 2 and all(n == 1 for n in shape[:-2]):
        shape = shape[-2:]  # (a camera's (1, h, w) frame: the recorder wrote it as (h, w))
    check_dtype(f"{p} (frame {info['seq']})", info["dtype"], shape)
    idx = info["index"]
    key = FrameKey(str(info["position"]), int(idx.get("t", 0)), str(info["channel"]),
                   int(idx.get("z", 0)))  # fmt: skip
    sample_t = _logged_number(info, "sample_time_s")
    if sample_t is None and (runner_ms := _logged_number(info, "runner_time_ms")) is not None:
        # a real rig's recording from before session 35 stamped no sample time: the
        # acquisition's own clock, as such frames carry now
        sample_t = runner_ms / 1000.0
    return RecordedFrame(
        key, (shape[0], shape[1]), str(info["dtype"]),
        sample_time_s=sample_t, x_um=_logged_number(info, "x_um"),
        y_um=_logged_number(info, "y_um"), z_um=_logged_number(info, "z_um"),
        exposure_ms=_logged_number(info, "exposure_ms"),
        pixel_size_um=pixel_size_um or _logged_number(info, "pixel_size_um") or None,
        origin=f"seq {info['seq']}", roi_offset_px=roi_offset_pair(info.get("roi_offset_px")),
    )  # fmt: skip


def _logged_number(info: Any, field: str) -> float | None:
    """Return a frame record's ``field`` as a finite number (None: null or not logged).

    Earlier livescope versions logged numpy's numbers (a stage's ``np.float32``)
    as their text, ``"0.65"``: text that is a number is read as that number, so
    that their runs replay. Raises ValueError naming the field where it is
    anything else (a word, a list, true, NaN), which failed far downstream in a
    replay, or as a bare TypeError (a pixel size).
    """
    value = info.get(field)
    if value is None:
        return None
    number = math.nan
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        # (an integer too large for a float stays NaN: JSON allows any number of digits)
        with contextlib.suppress(OverflowError):
            number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{field} is {value!r:.80}; it must be a finite number or null")
    return number


def _record_places(log: Path, n: int) -> list[str]:
    """Return where each of the first ``n`` records of the frame log is: ``line 7``, ...

    Lines are counted as `read_frames` reads them (blank lines hold no record).
    Called only to name a record that is refused.
    """
    try:
        text = log.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # (read a moment ago: gone or changed since)
        text = ""
    lines = [f"line {i}" for i, line in enumerate(text.split("\n")[:-1], start=1) if line.strip()]
    return lines[:n] + [f"record {k + 1}" for k in range(len(lines), n)]


def _open_ctc(p: Path, channel: str, interval_s: float, pixel_size_um: float | None) -> Dataset:
    import tifffile

    files = sorted(
        ((int(m.group(1)), f) for f in p.iterdir() if (m := _CTC_NAME.match(f.name))),
        key=lambda tf: tf[0],
    )
    frames: list[RecordedFrame] = []
    index: dict[FrameKey, Any] = {}
    warnings: list[str] = []
    units_warned: set[str] = set()
    expected = files[0][0]
    for t, f in files:
        if t != expected:
            warnings.append(f"{p}: frames {expected}..{t - 1} are missing ({f.name} follows)")
        expected = t + 1
        try:
            with tifffile.TiffFile(f) as tf:
                series = tf.series[0]
                shape, dtype = tuple(int(s) for s in series.shape), series.dtype
                # planes written one by one (imwrite(..., append=True)): a series each
                planes = sum(math.prod(s.shape[:-2]) for s in tf.series
                             if s.shape[-2:] == series.shape[-2:] and s.dtype == dtype)  # fmt: skip
                um, unknown = _tiff_pixel_size(tf)
        except (
            OSError,
            ValueError,
            IndexError,
            TypeError,
            ZeroDivisionError,
            struct.error,
            tifffile.TiffFileError,
        ) as exc:
            # left out like a missing frame: the frames after it are still replayed (struct.error:
            # a file shorter than its header, as one still being copied is; TypeError and
            # ZeroDivisionError: tifffile on a page whose tags are damaged)
            cut = isinstance(exc, IndexError | struct.error)
            why = "truncated or damaged TIFF" if cut else repr(exc)
            warnings.append(f"{f}: cannot be read ({why}); replayed without it")
            continue
        if len(shape) > 2 and all(n == 1 for n in shape[:-2]):
            shape = shape[-2:]  # (one plane, saved as (1, h, w))
        if planes > 1 and len(shape) == 2:
            raise DatasetError(
                f"{f}: holds {planes} planes of {shape[0]} × {shape[1]} (a z-stack?); "
                "livescope replays one 2-D frame per tNNN.tif"
            )
        check_dtype(str(f), dtype, shape)
        if unknown is not None and pixel_size_um is None and unknown not in units_warned:
            units_warned.add(unknown)  # (once: a folder's frames are all saved alike)
            warnings.append(
                f"{f}: its ImageJ pixel size is in {unknown!r}, a unit livescope does not know "
                f"(it reads micron, {', '.join(_UM_PER)}); replayed without a pixel size: give it "
                "with --pixel-size"
            )
        key = FrameKey("p0", t, channel, 0)
        frames.append(
            RecordedFrame(
                key,
                (shape[0], shape[1]),
                dtype_name(dtype),
                sample_time_s=t * interval_s,
                pixel_size_um=pixel_size_um or um,
                origin=f.name,
            )
        )
        index[key] = f
    if not frames:
        raise DatasetError(f"{p}: no readable tNNN.tif frame")
    refuse_repeated_keys(p, frames, "the number in the file name (tNNN.tif)")
    return Dataset(p, "ctc", frames, warnings=warnings, _index=index)


_UM_PER_UNIT = {3: 1e4, 4: 1e3, 5: 1.0}  # TIFF ResolutionUnit: CENTIMETER, MILLIMETER, µm
# ImageJ's own spellings of µm (its description is ASCII: µ escaped), besides OME's units
_IMAGEJ_MICRONS = ("micron", "microns", "\\u00B5m", "\\u00b5m")
_IMAGEJ_NO_UNIT = ("", "pixel", "pixels")  # (uncalibrated: no size stated, nothing to warn of)


def _tiff_pixel_size(tf: Any) -> tuple[float | None, str | None]:
    """Return the pixel size (µm) a TIFF's first page states, or None, and an unknown unit.

    TIFF states pixels per ResolutionUnit: per cm (the Cell Tracking Challenge's
    files), mm or µm are read; per inch (a screen's 72 dpi, as many writers put)
    and none are not, but for ImageJ's, whose unit (``unit=micron``, ``nm``, ``mm``)
    is in its description and read by OME's table of units of length. Pixels that
    are not square: None. The unit, where ImageJ's is one that is not in the table
    (the caller warns: the size is lost), else None.
    """
    page = tf.pages[0]
    try:
        x, y = (float(v) for v in page.resolution)
        unit = int(page.resolutionunit)
    except (AttributeError, TypeError, ValueError):
        return None, None
    per_unit = _UM_PER_UNIT.get(unit)
    if per_unit is None and unit == 1 and tf.is_imagej:
        name = str((tf.imagej_metadata or {}).get("unit", "")).strip()
        per_unit = (
            1.0 if name in _IMAGEJ_MICRONS else _UM_PER.get(unicodedata.normalize("NFKC", name))
        )
        if per_unit is None and name.lower() not in _IMAGEJ_NO_UNIT:
            return None, name
    if per_unit is None or not (math.isfinite(x) and x > 0 and math.isfinite(y) and y > 0):
        return None, None
    if not math.isclose(x, y, rel_tol=1e-3):
        return None, None
    return per_unit / x, None


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
        check_dtype(str(p), nd.dtype, shape)
        summary = getattr(nd, "summary_metadata", None) or {}
        names = list(summary.get("ChNames") or [])
        frames: list[RecordedFrame] = []
        index: dict[FrameKey, Any] = {}
        warnings: list[str] = []
        unread_um: list[str] = []  # frames whose pixel size tag is no number
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
            elapsed = _tag_num(meta, "ElapsedTime-ms")
            um = pixel_size_um or meta.get("PixelSizeUm") or meta.get("PixelSize_um") or (
                summary.get("PixelSize_um"))  # fmt: skip
            try:  # (Micro-Manager writes some tags as text: "0.65" is read)
                um = float(um) if um else None
            except (TypeError, ValueError):  # (a word, a list: another program's, or edited)
                unread_um.append(f"{coords}: {um!r:.80}")
                um = None
            affine = _mm_affine(meta.get("PixelSizeAffine", summary.get("PixelSizeAffine")))
            frames.append(
                RecordedFrame(
                    key, shape, dtype_name(nd.dtype),
                    sample_time_s=elapsed / 1000.0 if elapsed is not None else t * interval_s,
                    x_um=_tag_num(meta, "XPositionUm", "XPosition_um_Intended"),
                    y_um=_tag_num(meta, "YPositionUm", "YPosition_um_Intended"),
                    z_um=_tag_num(meta, "ZPositionUm", "ZPosition_um_Intended"),
                    exposure_ms=_tag_num(meta, "Exposure"),
                    pixel_size_um=um, origin=f"NDTiff {coords}",
                    affine=affine,
                )
            )  # fmt: skip
            index[key] = dict(coords)
        if unread_um:  # (it raised a bare ValueError, naming neither the dataset nor the tag)
            warnings.append(
                f"{p}: the pixel size (PixelSizeUm / PixelSize_um) of {len(unread_um)} "
                f"frame(s) is not a number (the first, {unread_um[0]}); they are replayed "
                "without a pixel size (--pixel-size gives one)"
            )
        refuse_repeated_keys(p, frames, "position, time, channel and z")
    except BaseException:
        nd.close()
        raise
    if not frames:
        nd.close()
        raise DatasetError(f"{p}: the NDTiff dataset holds no complete frame")
    return Dataset(p, "ndtiff", frames, warnings=warnings, _source=nd, _index=index)


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _mm_affine(value: Any) -> tuple[float, float, float, float, float, float] | None:
    """Return Micro-Manager's pixel size affine tag as six numbers (None: none stated).

    Micro-Manager writes it as text, ``"a;b;c;d;e;f"`` (or, through its Java
    metadata, ``"AffineTransform[[a, b, c], [d, e, f]]"``); pymmcore-plus as a
    list. All zeros (no calibration), another form, anything but six finite
    numbers: None.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("AffineTransform[["):
            parts: list[Any] = _NUMBER.findall(text)
        elif ";" in text:
            parts = text.split(";")
        else:  # (no form Micro-Manager writes)
            return None
    else:
        try:
            parts = list(value)
        except TypeError:
            return None
    if len(parts) != 6:
        return None
    try:
        a, b, c, d, e, f = (float(x) for x in parts)
    except (TypeError, ValueError):
        return None
    numbers = (a, b, c, d, e, f)
    if not all(math.isfinite(x) for x in numbers) or not any(numbers):
        return None
    return numbers


def _tag_num(meta: dict[str, Any], *tags: str) -> float | None:
    """Return the first of ``tags`` Micro-Manager wrote, as a number (its tags may be text)."""
    for tag in tags:
        value = meta.get(tag)
        if value is None or value == "":
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            return number
    return None
