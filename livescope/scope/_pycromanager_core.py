"""What pycromanager needs from a core, and the events and frames exchanged with it.

Workarounds for pycromanager 1.0.2 and ndstorage 0.1.18 live here (each is
described where it is applied); `PycromanagerAgent` (``_pycromanager.py``) uses
them. pycromanager is imported inside functions only.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import inspect
import re
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import useq
from numpy.typing import NDArray
from pymmcore_plus import CMMCorePlus

from livescope.schema import LivescopeError, pip_install_command, start_daemon

from ._fanout import position_name

__all__ = [
    "PYCROMANAGER_REQUIREMENT",
    "AxesKey",
    "Hook",
    "RemoteCore",
    "TaggedImage",
    "adapt_core",
    "axes_key",
    "check_hook",
    "close_writer_readers",
    "read_saved_frame",
    "require_pycromanager",
    "to_pycromanager_event",
]

Hook = Callable[[dict[str, Any]], Any]
"""A pycromanager hook: called with the event (a dict) on pycromanager's engine thread."""
AxesKey = tuple[tuple[str, int | str], ...]

_REGISTERED: list[Any] = []  # cores this module put into mmpycorex's core list
_ATEXIT_SET = False

PYCROMANAGER_REQUIREMENT = "pycromanager>=1.0.2,<1.1"
"""The pycromanager livescope works with (as ``pyproject.toml`` pins it): the
workarounds here are for 1.0.x's internals."""

# what each backend imports during a run (pycromanager brings mmpycorex and ndstorage)
_NEEDED = {
    "java": ("pycromanager",),
    "python": (
        "pycromanager",
        "pycromanager.acquisition.python_backend_acquisitions",
        "pycromanager.acquisition.acq_eng_py.internal.engine",
        "mmpycorex.launcher",
        "ndstorage",
    ),
}


def require_pycromanager(backend: str) -> None:
    """Import what pycromanager's ``backend`` (``"python"`` or ``"java"``) needs for a run.

    Called before a run folder is made: a missing package is one message
    naming it and what to install, not a ``ModuleNotFoundError`` from within
    the run. Raises `LivescopeError` if a module cannot be imported.
    """
    for name in _NEEDED[backend]:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing = (exc.name or name).split(".")[0]
            raise LivescopeError(
                f"the pycromanager backend ({backend}) needs {missing!r}, which cannot be "
                f"imported ({exc}); install pycromanager and its dependencies (mmpycorex, "
                f"ndstorage): {pip_install_command(PYCROMANAGER_REQUIREMENT)}"
            ) from exc


# ----------------------------------------------------------------- the core


class TaggedImage:
    """An image and its tags, as pycromanager's engine expects from the core."""

    __slots__ = ("pix", "tags")

    def __init__(self, tags: dict[str, Any] | None, pix: Any) -> None:
        self.tags = tags
        self.pix = pix


def _camel_to_snake(name: str) -> str:
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def _snake_aliases(core: Any) -> dict[str, str]:
    """Snake-case name → camelCase method of the core's class, for names not taken."""
    cls = type(core)
    taken = set(dir(cls)) | set(vars(core))
    out: dict[str, str] = {}
    for name in dir(cls):
        if name.startswith("_") or name.islower():
            continue
        snake = _camel_to_snake(name)
        if snake in taken or snake in out or not callable(getattr(cls, name, None)):
            continue
        out[snake] = name
    return out


def _mm_pixel_type(bytes_per_pixel: int, components: int) -> str:
    """Micro-Manager's name of a pixel type ("GRAY16"), as MMCoreJ tags images with it."""
    if components > 1:
        return {4: "RGB32", 8: "RGB64"}.get(bytes_per_pixel, "")
    return {1: "GRAY8", 2: "GRAY16", 4: "GRAY32"}.get(bytes_per_pixel, "")


def _get_tagged_image(
    core: Any,
    cam_index: int,
    camera: str,
    height: int,
    width: int,
    binning: Any = None,
    pixel_type: Any = None,
    roi_x_start: Any = None,
    roi_y_start: Any = None,
) -> TaggedImage:
    """Return the last snapped image with the tags pycromanager's engine reads (engine thread)."""
    pix = core.getImage()
    if pixel_type is None:
        # (pycromanager 1.0.2's engine passes none: every frame's NDTiff metadata said
        # "PixelType": null, where Micro-Manager's say GRAY8, GRAY16, ...)
        pixel_type = _mm_pixel_type(core.getBytesPerPixel(), core.getNumberOfComponents())
    tags: dict[str, Any] = {
        "Camera": camera,
        "Height": height,
        "Width": width,
        "PixelType": pixel_type,
        "CameraChannelIndex": cam_index,
    }
    for key, value in (("Binning", binning), ("ROI-X-start", roi_x_start),
                       ("ROI-Y-start", roi_y_start)):  # fmt: skip
        if value is not None:
            tags[key] = value
    return TaggedImage(tags, pix)


def _pop_next_tagged_image(core: Any) -> TaggedImage:
    """Return the next image of a running sequence and its metadata (engine thread)."""
    pix, md = core.popNextImageAndMD()
    tags = dict(md)
    tags.setdefault("Camera", core.getCameraDevice())
    return TaggedImage(tags, pix)


_UNADAPTING: list[threading.Event] = []  # (cores left to pycromanager until it ends)


def _forget_cores() -> None:
    """At exit: take cores a run left behind out of mmpycorex's list (it would unload them)."""
    with contextlib.suppress(ImportError, ValueError):
        from mmpycorex import launcher

        for core in list(_REGISTERED):
            if core in launcher._PYMMCORES:  # noqa: SLF001 (pycromanager's own registry)
                launcher._PYMMCORES.remove(core)  # noqa: SLF001
        _REGISTERED.clear()


@contextlib.contextmanager
def adapt_core(
    core: CMMCorePlus,
    in_use: Callable[[], bool] | None = None,
    on_error: Callable[[str, BaseException], None] | None = None,
) -> Iterator[CMMCorePlus]:
    """Let pycromanager's Python backend run on a pymmcore-plus core, for a ``with`` block.

    Binds on the instance: snake_case aliases of the core's camelCase methods
    (resolved on the instance, so ``UniMMCore``'s Python-device overrides are
    used), ``get_tagged_image``, ``pop_next_tagged_image`` and ``TaggedImage``;
    registers the core in ``mmpycorex``'s core list (so ``pycromanager.Acquisition``
    picks the Python backend) and points pycromanager's engine singleton at it
    (the engine keeps the first core it saw otherwise). Everything is undone on
    exit, also after errors; where ``in_use()`` says an acquisition on it has
    not ended (e.g. left to end in the background after a Ctrl+C), only once it
    has: taking the core from under pycromanager's engine would leave its
    threads waiting for ever.

    ``on_error(name, exc)`` is called (on the calling thread, pycromanager's
    engine) when a snake_case alias or ``get_tagged_image`` raises, before the
    error is raised on: pycromanager 1.0.2 puts a failed stage move, channel or
    snap only on stderr and into its core log, and raises errors that do not
    carry it; a ``get_tagged_image`` that raises (the camera gave no image, or
    not yet) it calls again at once, for ever: ``on_error`` must end that (abort
    the acquisition) once the camera is taken for gone, and each failed call
    waits `IMAGE_RETRY_PAUSE_S` before it raises, so that the loop does not
    spin (only pycromanager's engine calls it: the pause is its thread's).

    Not thread-safe: one adapted core at a time per process (`PycromanagerAgent`
    holds a module lock around it).
    """
    global _ATEXIT_SET
    from mmpycorex import launcher
    from pycromanager.acquisition.acq_eng_py.internal.engine import Engine

    _UNADAPTING[:] = [done for done in _UNADAPTING if not done.is_set()]
    if _UNADAPTING:
        raise LivescopeError(
            "an earlier pycromanager acquisition in this process is still ending (it was "
            "left to end after a Ctrl+C); try again once it has"
        )
    if not _ATEXIT_SET:
        atexit.register(_forget_cores)  # runs before mmpycorex's own atexit (LIFO)
        _ATEXIT_SET = True
    aliases = _snake_aliases(core)
    # (pycromanager 1.0.2 retries a failing getImage in a busy loop, and drops its error)
    get_tagged_image = _paced(types.MethodType(_get_tagged_image, core), on_error)
    extras = {
        "get_tagged_image": get_tagged_image,
        "pop_next_tagged_image": types.MethodType(_pop_next_tagged_image, core),
        "TaggedImage": TaggedImage,
    }
    added: list[str] = []
    registered = False
    engine = Engine.get_instance()
    previous = None if engine is None else engine.core
    try:
        for snake, camel in aliases.items():
            if snake not in extras:  # pymmcore-plus's getTaggedImage has another signature
                method = getattr(core, camel)
                if on_error is not None:
                    method = _reporting(snake, method, on_error)
                setattr(core, snake, method)
                added.append(snake)
        for name, value in extras.items():
            setattr(core, name, value)
            added.append(name)
        if core not in launcher._PYMMCORES:  # noqa: SLF001 (how pycromanager finds the core)
            launcher._PYMMCORES.append(core)  # noqa: SLF001
            _REGISTERED.append(core)
            registered = True
        if engine is None:
            engine = Engine(core)
        engine.core = core
        engine.last_event = None  # the previous run's last event is another core's
        yield core
    finally:
        if in_use is None or not in_use():
            _unadapt(core, engine, previous, registered, added)
        else:  # undone once the acquisition has ended

            def unadapt_later(still: Callable[[], bool]) -> None:
                while still():
                    time.sleep(0.1)
                _unadapt(core, engine, previous, registered, added)

            _UNADAPTING.append(
                start_daemon(lambda: unadapt_later(in_use), "livescope-pycromanager-unadapt")
            )


def _reporting(
    name: str, method: Callable[..., Any], on_error: Callable[[str, BaseException], None]
) -> Callable[..., Any]:
    """Return ``method`` calling ``on_error(name, exc)`` with what it raises, then raising it."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            on_error(name, exc)
            raise

    return call


IMAGE_RETRY_PAUSE_S = 0.001
"""How long a failed ``get_tagged_image`` waits before it raises (pycromanager asks again then).

A camera whose image is late (read out a few ms after the snap) is asked at most
a thousand times a second, not some 300000 (a whole core's time, and its log's).
"""


def _paced(
    method: Callable[..., Any], on_error: Callable[[str, BaseException], None] | None
) -> Callable[..., Any]:
    """Return ``get_tagged_image`` reporting what it raises, then pausing before raising it."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            if on_error is not None:
                on_error("get_tagged_image", exc)  # (first: it may abort the acquisition)
            time.sleep(IMAGE_RETRY_PAUSE_S)
            raise

    return call


def _unadapt(
    core: CMMCorePlus, engine: Any, previous: Any, registered: bool, added: list[str]
) -> None:
    from mmpycorex import launcher

    if engine is not None:
        engine.core = previous  # None, unless an outer adapt_core (or pycromanager) set it
        engine.last_event = None
    if registered:
        with contextlib.suppress(ValueError):
            launcher._PYMMCORES.remove(core)  # noqa: SLF001
        _REGISTERED.remove(core)
    for name in added:
        vars(core).pop(name, None)


class RemoteCore:
    """A Java core (pycromanager's ZMQ bridge) under pymmcore-plus's camelCase names.

    The agent asks its core for little (pixel size, autoshutter); Micro-Manager's
    Java engine does the acquiring.
    """

    class _NoRunner:
        def cancel(self) -> None:
            """Nothing to cancel: the acquisition is stopped through pycromanager."""

    def __init__(self, remote: Any) -> None:
        self._remote = remote
        self.mda = self._NoRunner()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._remote, _camel_to_snake(name))


# ----------------------------------------------------------------- events


def to_pycromanager_event(
    event: useq.MDAEvent, *, min_start_time_s: float | None = None, xy_stage: bool = True
) -> dict[str, Any]:
    """Convert a useq event to a pycromanager acquisition event (a dict).

    Axes are ``time``, ``position`` (the position's name, `position_name`),
    ``channel`` (the preset's name) and ``z`` (when the event has a z index);
    ``config_group``, ``exposure`` (ms), ``x``/``y``/``z`` (µm) and
    ``min_start_time`` (s; ``min_start_time_s`` if given, else the event's) follow
    the event, ``x`` and ``y`` only together (pycromanager moves the XY stage for
    an event giving both only; `PycromanagerAgent` fills in the other axis of an
    event giving one), and not at all where ``xy_stage`` is False (a core with
    no XY stage: pycromanager refuses an event giving x, and the agent accepts
    such a plan only where it images one place, where the sample sits). Never
    ``tags`` (pycromanager 1.0.2's Python backend hangs on them): livescope
    keeps its per-event data keyed by the axes.
    """
    axes: dict[str, int | str] = {
        "time": int(event.index.get("t", 0)),
        "position": position_name(event),
    }
    if event.channel is not None:
        axes["channel"] = event.channel.config
    if "z" in event.index:
        axes["z"] = int(event.index["z"])
    out: dict[str, Any] = {"axes": axes}
    if event.channel is not None:
        out["config_group"] = [event.channel.group, event.channel.config]
    if event.exposure is not None:
        out["exposure"] = float(event.exposure)
    if xy_stage and event.x_pos is not None and event.y_pos is not None:
        out["x"], out["y"] = float(event.x_pos), float(event.y_pos)
    if event.z_pos is not None:
        out["z"] = float(event.z_pos)
    start = event.min_start_time if min_start_time_s is None else min_start_time_s
    if start:
        out["min_start_time"] = float(start)
    return out


def axes_key(axes: dict[str, Any]) -> AxesKey:
    """Key of a pycromanager event's (or image's) axes: sorted items, numbers as ints."""
    return tuple(sorted((str(k), v if isinstance(v, str) else int(v)) for k, v in axes.items()))


# NDTiff pixel type (ndstorage's ``NDTiffIndexEntry``) -> how its pixels are stored, its bits
_NDTIFF_TYPES: dict[int, tuple[type[np.unsignedinteger[Any]], int]] = {
    0: (np.uint8, 8), 1: (np.uint16, 16), 3: (np.uint16, 10), 4: (np.uint16, 12),
    5: (np.uint16, 14), 6: (np.uint16, 11),
}  # fmt: skip
_NDTIFF_RGB = 2


def read_saved_frame(dataset: Any, axes: dict[str, Any]) -> tuple[NDArray[Any], dict[str, Any]]:
    """Read a frame pycromanager has just saved: its pixels and metadata, from disk.

    ``dataset`` is the NDTiff dataset handed to ``image_saved_fn``. The frame is
    read through a new unbuffered file handle: the dataset's own readers buffer
    the file, and a buffer filled before the frame was written returns its old
    bytes (zeros) in place of the pixels (ndstorage 0.1.18).

    NDTiff has no pixel type for 32-bit frames: a frame whose pixels take (at
    least) twice the room on disk its pixel type gives them is refused, not
    read as the first half of its bytes.

    Raises
    ------
    LivescopeError
        if the dataset has no such frame; the frame is RGB, of a pixel type
        NDTiff does not define, or of wider pixels than its type says (a 32-bit
        camera); or the file holds less than it says.

    """
    import json

    entry = dataset.index.get(frozenset(axes.items()))
    if entry is None:
        raise LivescopeError(f"{dataset.path}: no frame {axes} in the NDTiff index")
    code = entry.pixel_type
    if code == _NDTIFF_RGB:
        raise LivescopeError(f"{dataset.path}: frame {axes} is RGB; livescope records monochrome")
    if code not in _NDTIFF_TYPES:  # (ndstorage indexes a frame it cannot type as None)
        raise LivescopeError(
            f"{dataset.path}: frame {axes} has NDTiff pixel type {code!r}, which is none "
            "NDTiff defines (0: 8-bit, 1: 16-bit, 3 to 6: 10- to 14-bit); livescope records "
            "8- to 16-bit monochrome frames"
        )
    dtype, bits = _NDTIFF_TYPES[code]
    h, w = int(entry.image_height), int(entry.image_width)
    nbytes = h * w * np.dtype(dtype).itemsize
    pix_offset, md_offset = int(entry.pix_offset), int(entry.metadata_offset)
    md_length = int(entry.metadata_length)
    path = Path(str(dataset.path)) / str(entry.filename)
    with path.open("rb", buffering=0) as f:
        f.seek(pix_offset)
        data = f.read(nbytes)
        f.seek(md_offset)
        md_bytes = f.read(md_length)
    if len(data) != nbytes or len(md_bytes) != md_length:
        raise LivescopeError(f"{path}: frame {axes} is cut short on disk")
    md = json.loads(md_bytes)
    stored = md_offset - pix_offset
    if stored >= 2 * nbytes:
        # NDTiff writers put a frame's metadata right after its pixels (ndstorage's with
        # no gap; twice the room leaves any writer's padding be): this is a frame of
        # 32-bit pixels labelled 16-bit (NDTiff has no 32-bit type), and the first half
        # of its bytes read as 16-bit pixels is garbage of the right shape
        raise LivescopeError(
            f"{path}: frame {axes} takes {stored // (h * w)} bytes a pixel on disk, but its "
            f"NDTiff pixel type says {bits}-bit (the camera's pixel type: "
            f"{md.get('PixelType')!r}); NDTiff has no 32-bit pixel type: set the camera to 8 "
            "or 16 bits (its PixelType or BitDepth property) and run again"
        )
    return np.frombuffer(data, dtype=dtype).reshape(h, w), md


def check_hook(name: str, fn: Hook | None) -> None:
    """Refuse a hook that cannot be called with one argument, the event.

    pycromanager 1.0.2 calls a hook taking ``(event, event_queue)`` with one
    argument: the ``TypeError`` is printed, and the acquisition ends with 0
    images and no exception.

    Raises
    ------
    LivescopeError
        naming the hook and its parameters.

    """
    if fn is None:
        return
    if not callable(fn):
        raise LivescopeError(f"{name} is not callable")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: it is called with one argument
    try:
        sig.bind(None)
    except TypeError:
        raise LivescopeError(
            f"{name}{sig} must take one argument, the event: pycromanager 1.0.2 ends an "
            "acquisition with 0 images and no error for a hook taking (event, event_queue); "
            "add events through decisions instead"
        ) from None


def close_writer_readers(dataset: Any) -> None:
    """Close the reader each NDTiff file writer opens and ndstorage never closes.

    ndstorage 0.1.18's ``SingleNDTiffWriter`` opens a reader of its own file that
    nothing closes: a file handle leaks per NDTiff file, and a ResourceWarning is
    raised on pycromanager's saving thread when the writer is dropped (at the end
    of the acquisition, or when a full file is replaced). The dataset's
    ``put_image`` and ``finish`` (saving thread) are wrapped to close it then.

    ``put_image`` also refuses, with a `LivescopeError` naming the pixel type, a
    frame ndstorage cannot save (other than 8- or 16-bit monochrome): ndstorage
    0.1.18 raises only once it has opened a file for it, and that file's writer
    then fails ``finish`` too, so pycromanager's saving thread dies without
    ending the acquisition, which stalls.
    """
    put_image, finish = dataset.put_image, dataset.finish

    def close_reader(writer: Any) -> None:
        reader = getattr(writer, "reader", None)
        if reader is not None:
            with contextlib.suppress(OSError):
                reader.close()

    def put_and_close(coordinates: Any, image: Any, metadata: Any) -> Any:
        dtype, shape = getattr(image, "dtype", None), getattr(image, "shape", None)
        if dtype not in (np.uint8, np.uint16) or len(shape or ()) != 2:
            tags = metadata if isinstance(metadata, dict) else {}
            raise LivescopeError(
                f"frame {coordinates}: the camera gives {dtype} pixels (shape {shape}, "
                f"pixel type {tags.get('PixelType')!r}); pycromanager's NDTiff "
                "storage saves 8- and 16-bit monochrome frames only: set the camera to 8 or "
                "16 bits (its PixelType or BitDepth property) and run again"
            )
        before = getattr(dataset, "current_writer", None)
        out = put_image(coordinates, image, metadata)
        if before is not None and getattr(dataset, "current_writer", None) is not before:
            close_reader(before)
        return out

    def finish_and_close() -> Any:
        before = getattr(dataset, "current_writer", None)
        out = finish()
        if before is not None:
            close_reader(before)
        return out

    dataset.put_image, dataset.finish = put_and_close, finish_and_close
