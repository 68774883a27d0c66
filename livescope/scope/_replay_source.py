"""The replay microscope: a recorded dataset served as a Micro-Manager camera.

`ReplaySource` reads the dataset's frames in the order the events ask for them,
`ReplayCamera` serves them, and `ReplayMicroscope` holds that camera with the
profile's stages and channels in a ``UniMMCore``. The engine, gate and agent
that drive it are in `livescope.scope._replay`.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import useq
from numpy.typing import DTypeLike, NDArray
from pymmcore_plus.experimental.unicore import SimpleCameraDevice, UniMMCore

from livescope.record import Dataset, DatasetError, FrameKey, RecordedFrame
from livescope.schema import HardwareProfile, LivescopeError

from ._devices import CtrlCSafe, SimShutter, SimStateDevice, SimXYStage, SimZStage
from ._feed import event_key
from ._sim import LIGHT_PATH, SHUTTER, load_devices, release_core

__all__ = ["ReplayCamera", "ReplayMicroscope", "ReplaySource"]

UNREADABLE_SAID = 10
"""How many unreadable frames a replay warns of one by one (all are in its summary)."""

logger = logging.getLogger("livescope")


class _ReplayCore(UniMMCore):
    """``UniMMCore`` reporting the dataset's pixel size (0: unknown) and affine.

    The C++ core cannot read Python devices' properties, so a pixel-size config
    keyed on them is never found (as for the simulated microscope's turret).
    """

    def __init__(
        self, pixel_size_um: float | None, affine: tuple[float, ...] | None = None
    ) -> None:
        # an explicit (adapter-free) search path: every device here is a Python device
        super().__init__(mm_path=str(Path(__file__).parent))
        self._pixel_size_um = float(pixel_size_um or 0.0)
        self._affine = tuple(affine) if affine is not None else (0.0,) * 6

    def getPixelSizeUm(self, cached: bool = False) -> float:
        """Return the recorded pixel size, µm (0 when the dataset does not state it)."""
        return self._pixel_size_um

    def getPixelSizeAffine(self, cached: bool = False) -> Any:
        """Return the recorded pixel size affine (zeros: not recorded; the profile's turn holds).

        Read at the replay's start as a live run reads the rig's: a turn or
        mirror in it becomes the run's camera orientation.
        """
        return self._affine


def _recorded_affine(frames: Sequence[RecordedFrame]) -> tuple[float, ...] | None:
    """Return the pixel size affine the dataset's frames were recorded with (None: none).

    The first frame's that states one (a zero 2x2 part states none). Frames recorded
    with another turn or mirror (a camera turned mid-acquisition) get a warning: the
    replay follows the first. Another objective's scale, or a calibration a few
    degrees off, is the same turn.
    """
    stated = [(f, a, u) for f in frames if (a := f.affine) and (u := _unit(a)) is not None]
    if not stated:
        return None
    first, affine, unit = stated[0]

    def turned(u: tuple[float, ...]) -> bool:  # (a few degrees apart: the same turn)
        return max(abs(x - y) for x, y in zip(u, unit, strict=True)) > 0.2

    if other := next((s for s in stated if turned(s[2])), None):
        logger.warning(
            "the dataset's frames were recorded with more than one camera turn: %s has pixel "
            "size affine %s, %s has %s; the replay maps cells to the stage by the first",
            first.origin or first.key, affine, other[0].origin or other[0].key, other[1],
        )  # fmt: skip
    return affine


def _unit(affine: tuple[float, ...]) -> tuple[float, float, float, float] | None:
    """Return an affine's (a, b; c, d) scaled to unit size: its turn or mirror (None: zero)."""
    a, b, _, c, d, _ = affine
    scale = math.sqrt(abs(a * d - b * c))
    return None if scale == 0 else (a / scale, b / scale, c / scale, d / scale)


class ReplaySource:
    """Serves a dataset's frames in the order the events ask for them.

    ``channels`` maps dataset channel names to the plan's (`map_channels`).
    Frames the dataset lacks are listed in ``not_recorded``; frames it holds but
    cannot read (a damaged file or plane) in ``unreadable``, with the reader's
    error: the replay skips both and goes on.
    """

    def __init__(self, dataset: Dataset, channels: Mapping[str, str]) -> None:
        self.dataset = dataset
        self._plan_to_ds = {v: k for k, v in channels.items()}
        self._frames = {f.key: f for f in dataset.frames}
        self.current: RecordedFrame | None = None
        self._pixels: NDArray[Any] | None = None
        self.served = 0
        self.served_fields: collections.Counter[tuple[str, int]] = collections.Counter()
        self.not_recorded: list[str] = []
        self.unreadable: list[dict[str, str]] = []
        """``{"frame": key, "error": why}`` of each frame `read_ahead` could not read."""
        self._ahead: tuple[FrameKey, NDArray[Any]] | None = None
        self.check_frames(dataset)
        first = dataset.frames[0]
        self.shape = first.shape
        self.dtype = np.dtype(first.dtype)
        known = [f.sample_time_s for f in dataset.frames if f.sample_time_s is not None]
        self.t0_s = min(known) if known else 0.0

    @staticmethod
    def check_frames(dataset: Dataset) -> None:
        """Refuse a dataset whose frames differ in size or pixel type (one camera serves them).

        Raises
        ------
        DatasetError
            naming the first frame that differs from the first one.

        """
        if not dataset.frames:
            return
        first = dataset.frames[0]
        for f in dataset.frames:
            if f.shape != first.shape or f.dtype != first.dtype:
                raise DatasetError(
                    f"{dataset.path}: frame {f.origin} is {f.shape[0]}x{f.shape[1]} px "
                    f"{f.dtype}, the first ({first.origin}) {first.shape[0]}x{first.shape[1]} "
                    f"px {first.dtype}; a replay serves frames of one size and type"
                )

    def key_of(self, event: useq.MDAEvent) -> FrameKey:
        """Return the recorded frame an event asks for (plan channel → dataset channel)."""
        pos, t, ch, z = event_key(event)
        return FrameKey(pos, int(t), self._plan_to_ds.get(ch, ch), int(z))

    def recorded(self, event: useq.MDAEvent) -> RecordedFrame | None:
        """Return the recorded frame for ``event``, or None if the dataset lacks it."""
        return self._frames.get(self.key_of(event))

    def read_ahead(self, event: useq.MDAEvent) -> bool:
        """Read ``event``'s recorded frame before it is handed out (runner thread).

        Returns False where the dataset holds the frame but cannot read it (a
        damaged file or plane, a file cut short since the dataset was opened): it
        is listed in `unreadable` with the reader's error and warned, for the
        replay to skip it as a frame the recording lacks (an error in the snap
        ended the whole replay). The pixels read wait for `select`.
        """
        key = self.key_of(event)
        try:
            self._ahead = (key, self.dataset.read(key))
        except DatasetError as exc:  # (the readers' errors name the file and the problem)
            self._ahead = None
            self.unreadable.append({"frame": str(key), "error": str(exc)})
            if len(self.unreadable) <= UNREADABLE_SAID:
                logger.warning("replay: %s; the frame is skipped, the replay goes on", exc)
            if len(self.unreadable) == UNREADABLE_SAID:
                logger.warning(
                    "replay: %d recorded frames cannot be read; more are not said one by one "
                    "(every one is listed in the summary's frames_unreadable)",
                    UNREADABLE_SAID,
                )
            return False
        return True

    def select(self, event: useq.MDAEvent) -> None:
        """Make ``event``'s frame the next one the camera serves (runner thread).

        Raises
        ------
        LivescopeError
            if the dataset lacks the frame, or (`DatasetError`) cannot read it
            where `read_ahead` did not read it already.

        """
        key = self.key_of(event)
        frame = self._frames.get(key)
        if frame is None:
            raise LivescopeError(f"{self.dataset.path}: no recorded frame for {key}")
        ahead, self._ahead = self._ahead, None
        self._pixels = ahead[1] if ahead is not None and ahead[0] == key else self.dataset.read(key)
        self.current = frame

    def serve_into(self, buffer: NDArray[Any]) -> None:
        """Copy the selected frame into the camera's buffer."""
        if self._pixels is None or self.current is None:
            raise LivescopeError("replay camera: no frame selected for this snap")
        if self._pixels.shape != buffer.shape:
            raise LivescopeError(
                f"{self.dataset.path}: frame {self.current.origin} has shape "
                f"{self._pixels.shape}; the replay camera serves {buffer.shape}"
            )
        buffer[...] = self._pixels
        self._pixels = None
        self.served += 1


class ReplayCamera(CtrlCSafe, SimpleCameraDevice):
    """A Micro-Manager camera (Python device) whose frames come from a `ReplaySource`."""

    def __init__(self, source: ReplaySource) -> None:
        super().__init__()
        self._source = source
        self._exposure_ms = 1.0

    def get_exposure(self) -> float:
        """Exposure in ms (as set; the recorded frame is served whatever it is)."""
        return self._exposure_ms

    def set_exposure(self, exposure: float) -> None:
        """Set the exposure in ms."""
        self._exposure_ms = float(exposure)

    def sensor_shape(self) -> tuple[int, int]:
        """(rows, cols) of the recorded frames."""
        return self._source.shape

    def dtype(self) -> DTypeLike:
        """Return the recorded pixel type."""
        return self._source.dtype

    def snap(self, buffer: np.ndarray) -> Mapping[str, Any]:
        """Copy the frame the engine selected into ``buffer``."""
        self._source.serve_into(buffer)
        return {}


class ReplayMicroscope:
    """A ``UniMMCore`` with a `ReplayCamera` and the profile's stages and channels.

    Stages keep the profile's travel (so a replayed decision is checked as the
    live rig would check it); the pixel size is the dataset's where it states one.
    """

    def __init__(self, profile: HardwareProfile, source: ReplaySource) -> None:
        self.profile = profile
        self.source = source
        p = profile
        pixel = next((f.pixel_size_um for f in source.dataset.frames if f.pixel_size_um), None)
        self.pixel_size_um = pixel
        core = _ReplayCore(pixel, _recorded_affine(source.dataset.frames))
        self.camera = ReplayCamera(source)
        devices = {
            "ReplayCamera": self.camera,
            p.stages.xy.name: SimXYStage(p.stages.xy.x_range_um, p.stages.xy.y_range_um),
            p.stages.z.name: SimZStage(p.stages.z.z_range_um),
            LIGHT_PATH: SimStateDevice([c.name for c in p.channels.presets]),
            SHUTTER: SimShutter(),
        }
        load_devices(core, devices, p)
        group = p.channels.config_group
        core.setCameraDevice("ReplayCamera")
        core.setXYStageDevice(p.stages.xy.name)
        core.setFocusDevice(p.stages.z.name)
        core.setShutterDevice(SHUTTER)
        core.setAutoShutter(True)
        core.setConfig(group, p.channels.presets[0].name)
        self.core = core

    def close(self) -> None:
        """Unload the devices and detach the core's callbacks (as the simulated microscope)."""
        release_core(self.core)

    def __enter__(self) -> ReplayMicroscope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
