"""OME-Zarr (NGFF 0.5, Zarr v3) recording that keeps every frame's event index.

Layout of a run folder::

    data.ome.zarr/            root group, ``bioformats2raw.layout`` (one series per position)
        0/                    position 0: an NGFF image (multiscales, one level)
            0/                array (t, c, z, y, x), one chunk per frame
        1/ ...
    frames.jsonl              one `FrameInfo` per frame, appended as it is written

Arrays grow as events arrive, so runs whose events are added while they go on
keep their true (t, c, z) axes instead of being flattened. A frame is on disk
(chunk written, line appended and flushed) before `OmeZarrWriter.write` returns.
zarr creates the groups and arrays; the writer encodes each frame's chunk with
the array's own codecs and writes the chunk file, the array's metadata when an
axis grows and the groups' attributes when they change, itself (each file
written whole with `livescope.schema.write_atomic`: a reader sees it before or
after, never in part; on Windows a file a reader holds open is retried), at
half the CPU time of zarr's own write path.

Every position's c axis holds every channel of the run, in the order of the
omero channel list (a channel that appears mid-run is added to all of them). A
plane never acquired (a channel imaged only at some time points, a position
added mid-run) has no chunk and reads back as 0 (the fill value); the frame log
says which frames were taken. Each position's t scale is the mean spacing of
its time points' logged sample times (a close-up's own), and its z scale and
z origin those of its z planes' logged stage z (negative for a stack taken from
the top down), written at `OmeZarrWriter.close`.

Display hints (omero): a channel's colour is its dye's or filter's where a word
of its name (case aside; two words joined count too: ``Far Red``, ``Alexa
488``) is one of these, else the next colour of white, blue, green, red,
magenta, cyan, yellow by its place in the channel list:

    ===============================================  =============
    name word                                        colour
    ===============================================  =============
    dapi, hoechst, 405                               blue
    gfp, egfp, fitc, 488, alexa488                   green
    yfp                                              yellow
    mcherry, rfp, tritc, cy3, 561, tdtomato          red
    cy5, 640, 647, farred                            magenta
    bf, brightfield, phase, phc, dic, trans          white
    ===============================================  =============

Its display window is its pixel type's range (up to the camera's largest count
where its bit depth is given); for floating-point pixels, whose range says
nothing of the data, the least and greatest finite value of the channel's
frames at that position (`OmeZarrWriter.close`; 0 to 1 where it has none).

A file that cannot be written (a full disk) raises an OSError of the file
system's errno that names the file: a chunk, a ``zarr.json`` or the frame log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from livescope.schema import (
    FrameInfo,
    LivescopeError,
    json_safe,
    read_jsonl,
    while_locked,
    write_atomic,
)

__all__ = [
    "CODECS",
    "FRAMES_FILE",
    "ZARR_NAME",
    "OmeZarrWriter",
    "RecordingReader",
    "earlier_recording",
    "read_frames",
    "zarr_threads",
]

logger = logging.getLogger("livescope")
_T = TypeVar("_T")


def zarr_threads() -> list[threading.Thread]:
    """Return zarr's own threads started so far: its I/O thread (event loop) and its pool.

    The codec threads zarr starts through asyncio's default executor carry
    asyncio's generic names; the caller tells them apart (`FrameFanout` takes the
    threads that appear while a sink writes).
    """
    try:
        from zarr.core import sync
    except ImportError:  # pragma: no cover (zarr is a core dependency)
        return []
    io = sync.iothread[0]
    return [t for t in threading.enumerate() if t is io or t.name.startswith("zarr_pool")]


ZARR_NAME = "data.ome.zarr"
FRAMES_FILE = "frames.jsonl"
CODECS = ("blosc-zstd", "zstd", "none")
"""How frame chunks are compressed (`OmeZarrWriter`'s ``codec``).

``blosc-zstd`` (the default): Blosc with byte shuffle and zstd at level 1. On
simulated 512² and 2048² camera frames it takes 37-46 % of the CPU time per
frame of ``zstd`` (zarr's own default: zstd at its default level, no shuffle) and
compresses them more (2.70x against 2.27x at 512²); on real 1024² confocal
frames (tiled to 2048²) the two were even
(``livescope bench record`` measures them side by side). The recorder shares the
acquisition's cores, so its CPU time per frame is what matters. Every zarr v3
reader (zarr-python, tensorstore, napari-ome-zarr) decodes Blosc.
"""
_AXES = ("t", "c", "z", "y", "x")
_COLORS = ("FFFFFF", "0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF", "FFFF00")
_DYE_COLORS = {
    **dict.fromkeys(("dapi", "hoechst", "405"), "0000FF"),
    **dict.fromkeys(("gfp", "egfp", "fitc", "488", "alexa488"), "00FF00"),
    "yfp": "FFFF00",
    **dict.fromkeys(("mcherry", "rfp", "tritc", "cy3", "561", "tdtomato"), "FF0000"),
    **dict.fromkeys(("cy5", "640", "647", "farred"), "FF00FF"),
    **dict.fromkeys(("bf", "brightfield", "phase", "phc", "dic", "trans"), "FFFFFF"),
}
"""The colour of a channel whose name has one of these words (the module's table)."""
_WORD = re.compile(r"[a-z]+[0-9]*|[0-9]+")  # (``488nm``: 488; ``Cy5``, ``Alexa488``: whole)


def _channel_color(name: str, place: int) -> str:
    """Return the omero colour of channel ``name``, at ``place`` in the channel list.

    Its dye's or filter's (`_DYE_COLORS`) where a word of its name, or two
    neighbouring words joined, is a known one (the first such word counts), else
    the colour of its place (`_COLORS`).
    """
    words = _WORD.findall(name.lower())
    for word, after in zip(words, [*words[1:], ""], strict=True):
        for key in (word, word + after):
            if (color := _DYE_COLORS.get(key)) is not None:
                return color
    return _COLORS[place % len(_COLORS)]


_RANGE_SAMPLE_PX = 1 << 18
"""Pixels of a floating-point frame its value range is taken from (`_value_range`).

A 2048² float32 frame's NaN-ignoring minimum and maximum took 1.3-3.7 ms, those
of every 16th row (256 Ki pixels) 0.08-0.1 ms (a busy 2-core PC): the range sets a
display window only.
"""


def _value_range(image: NDArray[Any], shape_yx: tuple[int, int]) -> tuple[float, float] | None:
    """Return the least and greatest finite value of a floating-point frame (None: it has none).

    Taken from whole rows spread over the frame, `_RANGE_SAMPLE_PX` pixels or
    so, where it has more: a display window, not a measurement.
    """
    rows = np.reshape(image, shape_yx)[:: max(1, image.size // _RANGE_SAMPLE_PX)]
    lo, hi = float(np.fmin.reduce(rows, axis=None)), float(np.fmax.reduce(rows, axis=None))
    if not (math.isfinite(lo) and math.isfinite(hi)):  # (all NaN, or an infinite pixel)
        finite = rows[np.isfinite(rows)]
        if not finite.size:
            return None
        lo, hi = float(finite.min()), float(finite.max())
    return lo, hi


def _window(
    dtype: np.dtype[Any],
    bit_depth: int | None = None,
    value_range: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Return the omero display window of a channel of a pixel type: its full range.

    Shown up to the camera's counts (``2**bit_depth - 1``) where its bit depth is
    given and smaller than the pixel type's (a 12-bit camera in uint16). Of
    floating-point pixels, the channel's ``value_range`` (its least and greatest
    value; 0 to 1 where None): 0 to 1 for every such channel showed data of
    values 3 to 200 white (saturated) in napari-ome-zarr.
    """
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        end = int(info.max)
        if bit_depth is not None and 0 < 2**bit_depth - 1 < end:
            end = 2**bit_depth - 1
        return {"start": int(info.min), "end": end,
                "min": int(info.min), "max": int(info.max)}  # fmt: skip
    if value_range is None:
        return {"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0}
    lo, hi = value_range
    if hi <= lo:  # (frames of one value: a window of none draws nothing)
        hi = lo + max(1.0, abs(lo))
    return {"start": lo, "end": hi, "min": lo, "max": hi}


def _naming(exc: OSError, path: Path) -> OSError:
    """Return ``exc`` as an OSError of its kind and errno that names ``path``.

    A write that fails on a file already open (a full disk) names no file: a
    recording that failed said only ``[Errno 28] No space left on device``.
    """
    if exc.errno is None:
        return type(exc)(f"{path}: {exc}")
    try:
        return type(exc)(exc.errno, exc.strerror or str(exc), str(path))
    except TypeError:  # pragma: no cover (an OSError subclass of other arguments)
        return OSError(exc.errno, exc.strerror or str(exc), str(path))


def _write_file(path: Path, data: str | bytes | memoryview) -> None:
    """Write ``path`` whole (`write_atomic`), or raise its OSError naming it (`_naming`)."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise _naming(exc, path) from exc


def _metadata_file(node: Any) -> Path:
    """Return the ``zarr.json`` of a group or array in a local store."""
    return Path(str(node.store_path.store.root), node.path, "zarr.json")


def _read_metadata(file: Path, read: Callable[[], _T]) -> _T:
    """Return ``read()``, which reads the recording's metadata file ``file``.

    Raises
    ------
    LivescopeError
        naming ``file`` where it is missing or cannot be read (damaged, or not
        what livescope's recorder writes).
    OSError
        of a file that cannot be opened, as it is (a PermissionError while the
        recorder replaces it, on Windows: tried again by the caller).

    """
    try:
        return read()
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 (zarr raises many kinds on damaged metadata)
        why = f"cannot be read ({exc!r})" if file.is_file() else "is missing"
        raise LivescopeError(f"{file}: the recording's metadata {why}") from None


def _compressors(codec: str) -> Any:
    from zarr.codecs import BloscCodec, ZstdCodec

    if codec == "blosc-zstd":
        return [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")]
    if codec == "zstd":
        return [ZstdCodec(level=0)]
    return None


class _ChunkEncoder:
    """Encode a frame into one chunk's bytes exactly as the array's own codecs would.

    zarr-python's write path (its event loop, codec threads and buffer copies)
    costs 2-3x the CPU of the compression itself on camera frames (512²: 2.2
    against 0.7 ms; 2048²: 23 against 10 ms): the recorder shares the
    acquisition's cores, so it encodes and writes chunks itself. Only the
    pipelines `OmeZarrWriter` creates are known here (``bytes``, then
    ``blosc``, ``zstd`` or nothing); the codecs' settings are read from the
    array's metadata, so what is written is what zarr would write (tested
    byte for byte).
    """

    def __init__(self, array: Any) -> None:
        import numcodecs

        specs = [c.to_dict() for c in array.metadata.codecs]
        names = [str(c["name"]) for c in specs]
        if not names or names[0] != "bytes" or len(names) > 2:
            raise LivescopeError(f"the recorder cannot write chunks with codecs {names}")
        endian = specs[0].get("configuration", {}).get("endian", "little")
        self.dtype = np.dtype(array.dtype).newbyteorder("<" if endian == "little" else ">")
        self._compress: Any = None
        if len(specs) == 2:
            cfg = dict(specs[1].get("configuration", {}))
            if names[1] == "blosc":
                shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[cfg["shuffle"]]
                self._compress = numcodecs.Blosc(
                    cname=cfg["cname"], clevel=cfg["clevel"], shuffle=shuffle,
                    blocksize=cfg.get("blocksize", 0), typesize=cfg["typesize"],
                )  # fmt: skip
            elif names[1] == "zstd":
                self._compress = numcodecs.Zstd(
                    level=cfg.get("level", 0), checksum=cfg.get("checksum", False)
                )
            else:
                raise LivescopeError(f"the recorder cannot write chunks with codecs {names}")

    def encode(self, image: NDArray[Any]) -> bytes | memoryview:
        raw = np.ascontiguousarray(image, dtype=self.dtype).reshape(-1).view(np.uint8)
        return raw.data if self._compress is None else bytes(self._compress.encode(raw))


def _json_value(value: Any) -> Any:
    """Return what the frame log writes for a value `json` cannot: numpy's as numbers.

    A numpy integer in an event index (``t=np.int64(3)``) or metadata was written
    as the text ``"3"``: a reader of the log got a string where a number was.
    A NaN or infinity is null (JSON has none). Anything else (a path, a date) is
    written as its text, as before.
    """
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return json_safe(float(value))  # (NaN: null, as every float of the line)
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    return str(value)


_DIRS_KEPT = 1024
"""Chunk folders a series remembers having made (see `_Series.write`)."""


class _Series:
    """One position's image group and its (t, c, z, y, x) array, written without zarr's I/O."""

    def __init__(
        self,
        group: Any,
        name: str,
        shape_yx: tuple[int, int],
        dtype: np.dtype[Any],
        codec: str,
        n_channels: int,
    ) -> None:
        self.group = group
        self.name = name
        self._group_file = _metadata_file(group)
        self._group_doc: dict[str, Any] = json.loads(self._group_file.read_text(encoding="utf-8"))
        shape = (1, max(1, n_channels), 1)
        array = group.create_array(
            "0",
            shape=(*shape, *shape_yx),
            chunks=(1, 1, 1, *shape_yx),
            dtype=dtype,
            fill_value=0,
            compressors=_compressors(codec),
            dimension_names=_AXES,
        )
        self.dtype = np.dtype(dtype)
        self.shape_yx = shape_yx
        self.shape = shape
        self.dir = Path(str(array.store_path.store.root), array.path)
        self._metadata = json.loads((self.dir / "zarr.json").read_text(encoding="utf-8"))
        if self._metadata.get("shape") != [*shape, *shape_yx]:  # pragma: no cover (zarr changed)
            raise LivescopeError(f"unexpected array metadata in {self.dir}")
        self._chunk_key = array.metadata.encode_chunk_key
        self._encoder = _ChunkEncoder(array)
        self._dirs: set[Path] = set()
        """Chunk folders made (each frame has its own: kept, one Path of ~400 bytes per frame
        of the run, ~1 MB a position of a 72-hour time-lapse; so forgotten now and then)."""

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        """Replace the group's attributes (its metadata document, replaced whole).

        Raises the OSError of the write, naming the file (a PermissionError once
        the file stayed locked for a second); the attributes are then as before.
        """
        if attributes == self._group_doc.get("attributes"):
            return
        doc = {**self._group_doc, "attributes": attributes}
        _write_file(self._group_file, json.dumps(doc, indent=2))
        self._group_doc = doc

    def grow(self, tcz: tuple[int, int, int]) -> None:
        """Set the array's (t, c, z) extent (its metadata document, replaced whole).

        Raises the OSError of the write, naming the file; the extent is then as before.
        """
        if tcz == self.shape:
            return
        metadata = {**self._metadata, "shape": [*tcz, *self.shape_yx]}
        _write_file(self.dir / "zarr.json", json.dumps(metadata, indent=2))
        self._metadata = metadata
        self.shape = tcz

    def chunk_path(self, tcz: tuple[int, int, int]) -> Path:
        """Return the chunk file of the frame at (t, c, z)."""
        return self.dir / str(self._chunk_key((*tcz, 0, 0)))

    def write(self, tcz: tuple[int, int, int], image: NDArray[Any]) -> None:
        """Write the frame at (t, c, z) as its chunk file (or raise the OSError naming it)."""
        path = self.chunk_path(tcz)
        if path.parent not in self._dirs:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _naming(exc, path) from exc
            if len(self._dirs) >= _DIRS_KEPT:
                self._dirs.clear()  # (making one again is one call that finds it there)
            self._dirs.add(path.parent)
        _write_file(path, self._encoder.encode(image))


def _remove_settled(folder: Path) -> None:
    """Remove ``folder``, again while zarr's writes still in flight make it anew.

    zarr writes a group's or array's metadata files concurrently: one refused (a
    full disk) raises while another may still be on its way, and that one's
    write made the folder again after it was removed (1 run in 7 of a test).
    """
    for _ in range(50):  # (at most ~0.5 s: a write in flight ends in milliseconds)
        shutil.rmtree(folder, ignore_errors=True)
        time.sleep(0.01)
        if not folder.exists():
            return


class OmeZarrWriter:
    """Write frames of one run into an OME-Zarr store plus a JSON-lines frame log.

    Parameters
    ----------
    run_dir
        Folder of the run (created; must not already hold a recording).
    channels
        Channel names known at the start (more may appear; the c axis grows).
    pixel_size_um, z_step_um
        Physical scales written into the NGFF coordinate transformations (µm).
        ``z_step_um`` is the z scale as planned (negative where z index 0 is the
        top plane) until `close`, which writes instead each position's mean
        signed step between the logged z (``z_um``) of its first and last z
        planes, and the first plane's z as a translation, where two or more of
        its planes have a logged z and they differ.
    interval_s
        Seconds between time points as planned: the t scale until `close`, which
        writes the mean spacing of the logged sample times of the time points
        (each time point's earliest frame; its ``runner_time_ms`` where it has no
        sample time) instead, where two or more time points have times that
        differ. 0 (as fast as possible, unknown) is written as 1.0 until then,
        and stays 1.0 where the times are not known.
    attrs
        Extra run attributes stored under ``livescope`` in the root group.
    bit_depth
        The camera's bits per pixel, if known: the channels' display window
        (omero) ends at its largest count instead of the pixel type's.
    codec
        How frame chunks are compressed: one of `CODECS` (default ``blosc-zstd``).

    Notes
    -----
    Not thread-safe: call `write` from one thread (livescope's writer thread).
    Used as a context manager it is closed on leaving; where the body raised, an
    error of `close` is logged (and noted on the body's error), not raised in its place.

    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        channels: list[str],
        pixel_size_um: float,
        z_step_um: float = 1.0,
        interval_s: float = 1.0,
        attrs: dict[str, Any] | None = None,
        codec: str = "blosc-zstd",
        bit_depth: int | None = None,
    ) -> None:
        import zarr

        if codec not in CODECS:
            raise LivescopeError(
                f"unknown recording codec {codec!r}; use one of {', '.join(CODECS)}"
            )
        self.codec = codec
        self.bit_depth = bit_depth
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ZARR_NAME
        log = self._log_path = self.run_dir / FRAMES_FILE
        if (found := earlier_recording(self.run_dir)) is not None:
            raise LivescopeError(f"{found} already exists; choose a new output folder")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.channels = list(channels)
        """The c axis of every position, in order (channels are added as they appear)."""
        self._scale = [interval_s or 1.0, 1.0, z_step_um or 1.0, pixel_size_um, pixel_size_um]
        self._attrs = dict(attrs or {})
        self._root = zarr.open_group(
            self.path, mode="w", zarr_format=3,
            attributes={"ome": {"version": "0.5", "bioformats2raw.layout": 3},
                        "livescope": self._attrs},
        )  # fmt: skip
        self._root_file = _metadata_file(self._root)
        self._series: dict[str, _Series] = {}
        # each position's time points' earliest logged times (a close-up's sub-sequence
        # counts its time points from 0 too, minutes after the plan's of the same index)
        self._t_began: dict[str, dict[int, float]] = {}
        self._t_scale: dict[str, float] = {}  # each position's t scale, set at close
        # each position's z planes' first logged z (a close-up's or a position's own
        # sub-sequence has its own step), and the (scale, origin) set from them at close
        self._z_at: dict[str, dict[int, float]] = {}
        self._z_geometry: dict[str, tuple[float, float]] = {}
        self._imaged: dict[str, set[str]] = {}  # each position's channels with a frame
        # each (position, channel)'s least and greatest value of floating-point pixels
        self._ranges: dict[tuple[str, str], tuple[float, float]] = {}
        # unbuffered: a line is written whole or taken back (`_append_line`), never left
        # in a buffer to reach the log later, after its frame was reported not written
        self._log = log.open("ab", buffering=0)
        self._log_bytes = os.fstat(self._log.fileno()).st_size
        self.frames_written = 0
        self.closed = False

    def __enter__(self) -> OmeZarrWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception as close_exc:  # noqa: BLE001 (the body's error is the one raised)
            # the run failed: a close that fails too (the disk that filled up) must not
            # replace why it failed; the close's error is logged and noted on it instead
            logger.error("the recording %s could not be closed: %s", self.path, close_exc)
            exc.add_note(f"the recording {self.path} could not be closed either: {close_exc!r}")

    def _new_series(self, name: str, shape_yx: tuple[int, int], dtype: np.dtype[Any]) -> _Series:
        # the group is written with its attributes (one metadata write, not three:
        # close-ups add a series each while the camera runs), the array with every channel
        key = str(len(self._series))
        try:
            group = self._root.create_group(
                key, attributes=self._image_attrs(name, dtype, self.channels)
            )
            series = _Series(group, name, shape_yx, dtype, self.codec, len(self.channels))
        except BaseException as exc:
            # (a full disk): an image group without its array makes the whole store
            # unreadable as NGFF, and its name would refuse the next position's group;
            # a group whose metadata was refused leaves its folder (zarr warns of it
            # each time the store is listed)
            _remove_settled(self.path / key)
            if isinstance(exc, OSError):
                raise _naming(exc, self.path / key) from exc
            raise
        self._series[name] = series
        return series

    def _add_channel(self, channel: str) -> None:
        """Put ``channel`` on every position's c axis and in its omero channel list.

        Only once every position's metadata is written is the channel taken in:
        a write that fails (raising its OSError) leaves it out, and the next frame
        of that channel tries again.
        """
        channels = [*self.channels, channel]
        for s in self._series.values():
            # the array first: a channel listed is always on the c axis
            s.grow((s.shape[0], max(s.shape[1], len(channels)), s.shape[2]))
            s.set_attributes(self._image_attrs(s.name, s.dtype, channels))
        self.channels = channels

    def _image_attrs(self, name: str, dtype: np.dtype[Any], channels: list[str]) -> dict[str, Any]:
        """Return a series' NGFF attributes (multiscales, omero channels)."""
        imaged = self._imaged.get(name, set())  # (none yet: all active, until closed)
        _, _, z_s, px_y, px_x = self._scale
        t_s = self._t_scale.get(name, self._scale[0])
        z_0: float | None = None
        if name in self._z_geometry:
            z_s, z_0 = self._z_geometry[name]
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [t_s, 1.0, z_s, px_y, px_x]}]
        if z_0 is not None:  # (NGFF: a translation follows the scale, in the same units)
            transforms.append({"type": "translation", "translation": [0.0, 0.0, z_0, 0.0, 0.0]})
        return {
            "ome": {
                "version": "0.5",
                "multiscales": [
                    {
                        "name": name,
                        "axes": [
                            {"name": "t", "type": "time", "unit": "second"},
                            {"name": "c", "type": "channel"},
                            {"name": "z", "type": "space", "unit": "micrometer"},
                            {"name": "y", "type": "space", "unit": "micrometer"},
                            {"name": "x", "type": "space", "unit": "micrometer"},
                        ],
                        "datasets": [{"path": "0", "coordinateTransformations": transforms}],
                    }
                ],
                "omero": {
                    "channels": [
                        {
                            "label": c,
                            "color": _channel_color(c, i),
                            # (every preset of the rig has its place on the c axis:
                            # the channels never imaged opened blank in napari)
                            "active": not imaged or c in imaged,
                            "window": _window(dtype, self.bit_depth, self._ranges.get((name, c))),
                        }
                        for i, c in enumerate(channels)
                    ],
                    # (greyscale draws every channel grey in napari-ome-zarr, their colours
                    # ignored: it is meant for an image of one channel)
                    "rdefs": {"model": "color" if len(channels) > 1 else "greyscale"},
                },
            },
            "livescope": {"position": name},
        }

    def write(self, image: NDArray[Any], info: FrameInfo) -> None:
        """Write one frame and its metadata line (writer thread; blocks until on disk).

        Raises
        ------
        LivescopeError
            if the frame's shape or pixel type does not match earlier frames of
            its position, its t or z index is negative or not a whole number, or
            an earlier frame was recorded at its position, t, channel and z (it
            would replace that one).
        OSError
            if a file cannot be written (a full disk; a PermissionError: one
            another program held open for a second), of the file system's errno,
            naming the file (a chunk, a ``zarr.json``, the frame log or a new
            position's folder); the frame is neither logged nor left in the
            data (it may be written again), and a channel it was the first of is
            not taken in (its next frame tries again).

        """
        if self.closed:
            raise LivescopeError("recording is closed; no more frames can be written")
        if image.ndim < 2 or image.size != image.shape[-2] * image.shape[-1]:
            raise LivescopeError(
                f"frame {info['seq']} of position {info['position']!r} has shape "
                f"{tuple(image.shape)}; one 2-D image per frame is written"
            )
        shape_yx = (int(image.shape[-2]), int(image.shape[-1]))
        s = self._series.get(info["position"])
        if s is not None and s.dtype != image.dtype:
            # (a position's array has one pixel type for all its frames and channels)
            raise LivescopeError(
                f"frame {info['seq']} of position {info['position']!r}, channel "
                f"{info['channel']!r} is {image.dtype}, earlier frames are {s.dtype} (the "
                "camera's pixel type changed mid-run?); a position's frames are all "
                "recorded as one pixel type, so it is not written: start a new acquisition (a "
                "new output folder) for the new pixel type"
            )
        if s is not None and s.shape_yx != shape_yx:
            # (a position's array has one y/x size for all its frames and channels)
            raise LivescopeError(
                f"frame {info['seq']} of position {info['position']!r}, channel "
                f"{info['channel']!r} is {shape_yx[0]}×{shape_yx[1]} px, earlier frames are "
                f"{s.shape_yx[0]}×{s.shape_yx[1]} px (the camera's ROI or binning changed "
                "mid-run?); a position's frames are all recorded at one size, so it is not "
                "written: start a new acquisition (a new output folder) for the new size"
            )
        idx = info["index"]
        t, z = idx.get("t", 0), idx.get("z", 0)
        if not all(isinstance(i, int | np.integer) and i >= 0 for i in (t, z)):
            # (a negative index names a chunk no reader finds: t=-1 was logged, read back
            # as the last time point's frame, and its own pixels lost)
            raise LivescopeError(
                f"frame {info['seq']} of position {info['position']!r} has index t={t!r}, "
                f"z={z!r}; t and z are whole numbers from 0: it is not written"
            )
        t, z = int(t), int(z)
        if s is not None and info["channel"] in self.channels:
            at = (t, self.channels.index(info["channel"]), z)
            if at[0] < s.shape[0] and at[2] < s.shape[2] and s.chunk_path(at).exists():
                # (its pixels would replace the earlier frame's: that one would be lost)
                raise LivescopeError(
                    f"frame {info['seq']} of position {info['position']!r} is at t={at[0]}, "
                    f"channel {info['channel']!r}, z={at[2]}, where an earlier frame is "
                    "recorded already; it is not written over it"
                )
        if info["channel"] not in self.channels:
            self._add_channel(info["channel"])
        if s is None:
            s = self._new_series(info["position"], shape_yx, image.dtype)
        c = self.channels.index(info["channel"])
        need = (max(s.shape[0], t + 1), max(s.shape[1], len(self.channels)), max(s.shape[2], z + 1))
        s.grow(need)
        s.write((t, c, z), image)
        try:
            # (JSON has no NaN: a bare NaN token, e.g. of a stage that gave no z, made
            # the log unreadable outside Python)
            self._append_line(json.dumps(json_safe(info), default=_json_value) + "\n")
        except OSError:
            # a frame the log does not hold is not recorded: its chunk goes too, so that
            # the data holds the logged frames only and the frame can be written again
            # (a chunk left behind refuses it as recorded already)
            with contextlib.suppress(OSError):  # (the log's error is the one raised)
                s.chunk_path((t, c, z)).unlink(missing_ok=True)
            raise
        self.frames_written += 1
        self._imaged.setdefault(info["position"], set()).add(info["channel"])
        if image.dtype.kind == "f" and (found := _value_range(image, shape_yx)) is not None:
            key = (info["position"], info["channel"])
            lo, hi = self._ranges.get(key, found)
            self._ranges[key] = (min(lo, found[0]), max(hi, found[1]))
        began = info.get("sample_time_s")
        if began is None and info.get("runner_time_ms") is not None:
            began = float(info["runner_time_ms"]) / 1000.0
        if began is not None and math.isfinite(began):
            times = self._t_began.setdefault(info["position"], {})
            times[t] = min(times.get(t, began), began)
        z_um = info.get("z_um")
        if z_um is not None and math.isfinite(z_um):
            self._z_at.setdefault(info["position"], {}).setdefault(z, float(z_um))

    def _append_line(self, line: str) -> None:
        """Append ``line`` to the frame log whole, or raise its OSError leaving the log as it was.

        A disk filling up takes part of a write: that part is cut off again, so
        that no half line stays at the end of the log for the next line to follow.
        The OSError names the log (`_naming`).
        """
        data = memoryview(line.encode("utf-8"))
        start = self._log_bytes
        try:
            done = 0
            while done < len(data):
                done += self._log.write(data[done:])
        except OSError as exc:
            # (the write's error is the one raised; a reader skips a half line)
            with contextlib.suppress(OSError):
                os.ftruncate(self._log.fileno(), start)
            raise _naming(exc, self._log_path) from exc
        self._log_bytes = start + len(data)

    def _time_scale_s(self, position: str) -> float:
        """Seconds per time point of ``position``: the mean spacing of its logged times.

        The interval given where fewer than two of its time points have times, or
        they do not differ (a simulated plan run as fast as possible stamps every
        time point 0 s).
        """
        times = self._t_began.get(position, {})
        if len(times) >= 2:
            first, last = min(times), max(times)
            spacing = (times[last] - times[first]) / (last - first)
            if spacing > 0:
                return float(f"{spacing:.9g}")  # (not 0.30000000000000004)
        return self._scale[0]

    def _z_scale_um(self, position: str) -> tuple[float, float] | None:
        """µm per z plane of ``position`` and the z of its plane 0: those of its logged z.

        The step is signed (negative where plane 0 is the top one: a reader shows
        the stack the right way up): the mean step between its first and last
        planes with a logged z (of planes unevenly spaced, their mean spacing, as
        the scale of a plan of such planes is). Each plane's z is its first frame's.
        None where fewer than two of its planes have a logged z, or they do not
        differ (no z stage): the planned scale stands, without an origin.
        """
        at = self._z_at.get(position, {})
        if len(at) < 2:
            return None
        first, last = min(at), max(at)
        step = (at[last] - at[first]) / (last - first)
        if step == 0 or not math.isfinite(step):
            return None
        origin = at[first] - first * step
        return float(f"{step:.9g}"), float(f"{origin:.9g}")  # (not 0.30000000000000004)

    def close(self) -> None:
        """Sync and close the frame log; write the final metadata (once the last `write` returned).

        Every position's c axis and channel list are made whole, its t scale set
        from the logged times (`_time_scale_s`), its z scale and origin from the
        logged z (`_z_scale_um`), the display window of its floating-point
        channels from their frames' values (`_window`), and the root's attributes
        completed (frames, positions, channels). Every write is tried; the first
        OSError is raised after the others, naming its file.
        """
        if self.closed:
            return
        self.closed = True
        error: OSError | None = None
        try:  # (a sync refused by a network share: the metadata below is written all the same)
            self._log.flush()
            os.fsync(self._log.fileno())
        except OSError as exc:
            error = _naming(exc, self._log_path)
        try:
            self._log.close()
        except OSError as exc:  # (closed all the same)
            error = error or _naming(exc, self._log_path)
        for s in self._series.values():
            self._t_scale[s.name] = self._time_scale_s(s.name)
            if (geometry := self._z_scale_um(s.name)) is not None:
                self._z_geometry[s.name] = geometry
            try:
                s.grow((s.shape[0], len(self.channels), s.shape[2]))
                s.set_attributes(self._image_attrs(s.name, s.dtype, self.channels))
            except OSError as exc:  # (a full disk, a file locked for a second)
                error = error or exc
        try:
            self._write_root_attributes()
        except OSError as exc:
            error = error or exc
        if error is not None:
            raise error

    def _write_root_attributes(self) -> None:
        """Complete the root group's attributes (raises the OSError naming its file)."""
        try:
            doc = json.loads(self._root_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise _naming(exc, self._root_file) from exc
        doc["attributes"] = {
            **doc.get("attributes", {}),
            "livescope": {
                **self._attrs,
                "frames": self.frames_written,
                "positions": list(self._series),
                "channels": self.channels,
            },
        }
        _write_file(self._root_file, json.dumps(doc, indent=2))


def earlier_recording(run_dir: str | Path) -> Path | None:
    """Return the recording (``data.ome.zarr``) or frame log a run left in ``run_dir``, or None.

    A new run is not recorded into either: a frame log appended to (its run's
    store removed to run again there) would read that run's lines as this
    run's frames, and this run's pixels for them.
    """
    for name in (ZARR_NAME, FRAMES_FILE):
        if (found := Path(run_dir) / name).exists():
            return found
    return None


def read_frames(run_dir: str | Path) -> list[FrameInfo]:
    """Read the frame log of a recorded run, in acquisition order.

    A run killed mid-write may end with a truncated line: it is skipped (its
    frame is not counted as recorded).

    Raises
    ------
    LivescopeError
        if a complete line is not a JSON object (the log was damaged or edited),
        naming the line.
    FileNotFoundError
        if the folder holds no frame log.

    """
    # (while a run goes on, its last line may be being written: left out without a word)
    records = read_jsonl(Path(run_dir) / FRAMES_FILE, what="frame record", live=True,
                         missing_ok=False)  # fmt: skip
    return cast(list[FrameInfo], records)


class RecordingReader:
    """Read frames back from a run's OME-Zarr recording, also while it is being written.

    Frames are addressed by their `FrameInfo` (from the frame log): position,
    channel and (t, z) index.
    """

    def __init__(self, run_dir: str | Path) -> None:
        import zarr

        self.path = Path(run_dir) / ZARR_NAME
        if not self.path.is_dir():
            raise LivescopeError(f"no recording at {self.path}")
        self._zarr = zarr
        self._groups: dict[str, str] = {}

    def _group_key(self, position: str) -> str:
        """Return the folder of ``position``'s image group (``0``, ``1``, ...) in the store.

        Each group not yet known is opened from its own folder, reading its own
        ``zarr.json`` only (zarr's list of the root's groups reads every one's: one
        damaged made every position unreadable, with an error naming no file).

        Raises
        ------
        LivescopeError
            if no readable group is the position's, naming the groups whose
            metadata cannot be read (damaged) where there are any.
        OSError
            of a folder or file that cannot be opened (a PermissionError while the
            recorder replaces it, on Windows).

        """
        if position in self._groups:
            return self._groups[position]
        known = set(self._groups.values())
        folders = [d.name for d in self.path.iterdir() if d.is_dir() and d.name not in known]
        damaged: list[str] = []
        for key in sorted(folders, key=lambda k: int(k) if k.isdigit() else 0):
            try:
                meta: Any = self._zarr.open_group(self.path / key, mode="r").attrs.get("livescope")
            except PermissionError:
                raise  # (being replaced: tried again by the caller)
            except FileNotFoundError:
                continue  # (no group: a folder the recorder is making, or one left behind)
            except Exception as exc:  # noqa: BLE001 (zarr raises many kinds on damaged metadata)
                damaged.append(f"{self.path / key / 'zarr.json'} ({exc!r})")
                continue
            name = meta.get("position") if isinstance(meta, dict) else None
            if isinstance(name, str):
                self._groups[name] = key
        if position not in self._groups and damaged:
            raise LivescopeError(
                f"position {position!r} is not among the readable groups of the recording "
                f"{self.path}: the metadata of {', '.join(damaged)} cannot be read (damaged; "
                "the position's may be among them)"
            )
        if position not in self._groups:
            raise LivescopeError(f"position {position!r} is not in the recording {self.path}")
        return self._groups[position]

    def _group(self, position: str) -> Any:
        """Return ``position``'s image group, opened from its own folder.

        Opened again at each call: the recorder rewrites its metadata as the run
        goes on (a channel added). Raises LivescopeError naming the metadata file
        where it cannot be read (damaged), OSError where it cannot be opened.
        """
        folder = self.path / self._group_key(position)
        return _read_metadata(folder / "zarr.json", lambda: self._zarr.open_group(folder, mode="r"))

    def read(self, info: FrameInfo) -> NDArray[Any]:
        """Return the pixels of the frame ``info`` describes.

        Raises
        ------
        LivescopeError
            if the recording does not hold that frame (its chunk file is
            missing), or its chunk or its position's metadata cannot be read (a
            damaged file, named; other positions are read all the same).

        """

        def metadata() -> tuple[list[str], Any]:
            group = self._group(info["position"])
            file = _metadata_file(group)
            labels = _read_metadata(
                file, lambda: [c["label"] for c in group.attrs["ome"]["omero"]["channels"]]
            )
            return labels, _read_metadata(file.parent / "0" / "zarr.json", lambda: group["0"])

        try:
            # the metadata (zarr.json) the recorder replaces as the run grows: on Windows
            # a file being replaced cannot be opened for a moment (PermissionError)
            labels, arr = while_locked(metadata)
        except PermissionError as exc:
            raise LivescopeError(
                f"{self.path}: the recording's metadata cannot be opened: {exc}"
            ) from None
        except OSError as exc:
            raise LivescopeError(
                f"{self.path}: the recording's metadata cannot be read: {exc}"
            ) from None
        if info["channel"] not in labels:
            raise LivescopeError(f"channel {info['channel']!r} is not in {self.path}")
        idx = info["index"]
        t, c, z = int(idx.get("t", 0)), labels.index(info["channel"]), int(idx.get("z", 0))
        if t >= arr.shape[0] or c >= arr.shape[1] or z >= arr.shape[2]:
            raise LivescopeError(f"frame {info['seq']} (t={t}, c={c}, z={z}) is not in {self.path}")
        frame = f"frame {info['seq']} ({info['position']} t={t} c={info['channel']} z={z})"
        # (zarr reads a chunk that is not there as the fill value: a run copied in part
        # would replay black frames without a word)
        grid = arr.shards or arr.chunks
        at = (t, c, z, *[0] * (len(grid) - 3))
        key = arr.metadata.encode_chunk_key(tuple(i // n for i, n in zip(at, grid, strict=True)))
        if not Path(str(arr.store_path.store.root), arr.path, key).is_file():
            raise LivescopeError(
                f"{frame} is logged but not in {self.path}: its chunk file {key} is missing "
                "(a copy of the run folder that did not finish?)"
            )
        try:
            return np.asarray(arr[t, c, z])
        except OSError as exc:  # (the file system's: a lock, a permission, a lost drive)
            raise LivescopeError(f"{frame} cannot be read from {self.path}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 (zarr's codecs raise many kinds)
            raise LivescopeError(
                f"{frame} cannot be read from {self.path}: its chunk is damaged ({exc})"
            ) from None
