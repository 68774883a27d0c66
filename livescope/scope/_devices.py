"""Pure-Python Micro-Manager devices of the simulated microscope.

They are loaded into a pymmcore-plus ``UniMMCore`` by `SimulatedMicroscope`; the
core calls them on its own threads (the camera on the acquisition thread during
sequences). Stages refuse moves outside the profile's travel, as a real
controller does.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike
from pymmcore_plus.experimental.unicore import (
    Device,
    ShutterDevice,
    SimpleCameraDevice,
    StageDevice,
    StateDevice,
    XYStageDevice,
)

from livescope.schema import StageLimitError

if TYPE_CHECKING:
    from ._sim import SimulatedMicroscope

__all__ = ["CtrlCSafe", "SimCamera", "SimShutter", "SimStateDevice", "SimXYStage", "SimZStage"]


def _check(axis: str, value: float, lo_hi: tuple[float, float], field: str) -> None:
    lo, hi = lo_hi
    if not lo <= value <= hi:
        raise StageLimitError(
            f"{axis} = {value:g} µm is outside the stage travel [{lo:g}, {hi:g}] µm "
            f"(hardware profile: {field})"
        )


class CtrlCSafe(Device):
    """A Python device whose lock a Ctrl+C cannot leave held.

    pymmcore-plus's ``Device.__enter__`` acquires a plain lock and returns: a
    SIGINT that arrives meanwhile is raised (KeyboardInterrupt) right after the
    acquire, inside ``__enter__``, so the ``with`` never runs ``__exit__`` and
    the lock stays held for ever (the agent, Ctrl+C'd as the simulator started,
    hung in `SimulatedMicroscope.close` unloading the device). Here the lock is reentrant, and an
    interrupted ``__enter__`` lets go of what it took (a reentrant lock knows
    whether this thread holds it; a plain one does not).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._safe_lock = threading.RLock()

    def __enter__(self) -> Any:
        lock = self._safe_lock
        try:
            lock.acquire()
        except BaseException:  # (KeyboardInterrupt, raised before or after the acquire)
            if lock._is_owned():  # type: ignore[attr-defined]  # noqa: SLF001 (no public way)
                lock.release()
            raise
        return self

    def __exit__(self, *args: Any) -> None:
        self._safe_lock.release()

    def lock(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._safe_lock.acquire(blocking, timeout)

    def unlock(self) -> None:
        self._safe_lock.release()

    def free_within(self, timeout_s: float) -> bool:
        """Return True if no other thread holds the device within ``timeout_s`` s."""
        if not self._safe_lock.acquire(timeout=timeout_s):
            return False
        self._safe_lock.release()
        return True


class SimXYStage(CtrlCSafe, XYStageDevice):
    """XY stage with travel limits, in µm."""

    def __init__(self, x_range_um: tuple[float, float], y_range_um: tuple[float, float]) -> None:
        super().__init__()
        self._x_range, self._y_range = x_range_um, y_range_um
        self._x = self._y = 0.0

    def set_position_um(self, x: float, y: float) -> None:
        """Move to (x, y); raises `StageLimitError` outside the travel."""
        _check("XY stage x", x, self._x_range, "stages.xy.x_range_um")
        _check("XY stage y", y, self._y_range, "stages.xy.y_range_um")
        self._x, self._y = float(x), float(y)

    def get_position_um(self) -> tuple[float, float]:
        """Return (x, y) in µm."""
        return self._x, self._y

    def set_origin_x(self) -> None:
        """Not supported: the simulated stage keeps sample coordinates."""
        raise NotImplementedError("the simulated XY stage keeps absolute sample coordinates")

    def set_origin_y(self) -> None:
        """Not supported: the simulated stage keeps sample coordinates."""
        raise NotImplementedError("the simulated XY stage keeps absolute sample coordinates")

    def set_adapter_origin_um(self, x: float, y: float) -> None:
        """Not supported: the simulated stage keeps sample coordinates.

        (The base class did nothing: ``setAdapterOriginXY`` returned as if the
        current position were now (x, y), and the stage went on reporting the old one.)
        """
        raise NotImplementedError("the simulated XY stage keeps absolute sample coordinates")

    def home(self) -> None:
        """Move to (0, 0)."""
        self.set_position_um(0.0, 0.0)

    def stop(self) -> None:
        """Do nothing: moves are instantaneous."""


class SimZStage(CtrlCSafe, StageDevice):
    """Focus drive with travel limits, in µm (0 is the dish's focal plane at the origin)."""

    def __init__(self, z_range_um: tuple[float, float]) -> None:
        super().__init__()
        self._range = z_range_um
        self._z = 0.0

    def set_position_um(self, val: float) -> None:
        """Move to ``val``; raises `StageLimitError` outside the travel."""
        _check("Z stage z", val, self._range, "stages.z.z_range_um")
        self._z = float(val)

    def get_position_um(self) -> float:
        """Return z in µm."""
        return self._z

    def home(self) -> None:
        """Move to 0."""
        self.set_position_um(0.0)

    def stop(self) -> None:
        """Do nothing: moves are instantaneous."""

    def set_origin(self) -> None:
        """Not supported: the simulated focus keeps sample coordinates."""
        raise NotImplementedError("the simulated Z stage keeps absolute sample coordinates")

    def set_adapter_origin_um(self, newZUm: float) -> None:
        """Not supported: the simulated focus keeps sample coordinates (see `set_origin`)."""
        raise NotImplementedError("the simulated Z stage keeps absolute sample coordinates")


class SimStateDevice(CtrlCSafe, StateDevice):
    """A labelled state device (light path / filter set, objective turret)."""

    def __init__(self, labels: Sequence[str]) -> None:
        super().__init__(dict(enumerate(labels)))
        self._state = 0

    def get_state(self) -> int:
        """Return the current position index."""
        return self._state

    def set_state(self, position: int) -> None:
        """Move to position ``position``."""
        self._state = int(position)

    @property
    def current_label(self) -> str:
        """Label of the current position."""
        return str(self._state_to_label[self._state])


class SimShutter(CtrlCSafe, ShutterDevice):
    """The illumination shutter: frames taken while it is closed are dark.

    Unless the core's autoshutter drives it: then it counts as open while the camera
    exposes (`SimulatedMicroscope` renders so), as Micro-Manager opens it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._open = False

    def get_open(self) -> bool:
        """Return True when open."""
        return self._open

    def set_open(self, open: bool) -> None:
        """Open or close."""
        self._open = bool(open)


class SimCamera(CtrlCSafe, SimpleCameraDevice):
    """Camera that renders the simulated sample under the current hardware state.

    Sequence acquisitions advance sample time by one frame period per frame
    (hardware-timed bursts), and are paced in wall-clock time by the simulation's
    ``time_acceleration``.
    """

    def __init__(self, scope: SimulatedMicroscope) -> None:
        super().__init__()
        self._scope = scope
        cam = scope.profile.camera
        self._shape = (int(cam.sensor_shape_px[0]), int(cam.sensor_shape_px[1]))
        self._dtype = np.dtype(np.uint8 if cam.bit_depth <= 8 else np.uint16)
        self._exposure_ms = 10.0

    def get_exposure(self) -> float:
        """Exposure in ms."""
        return self._exposure_ms

    def set_exposure(self, exposure: float | str) -> None:
        """Set the exposure in ms (finite, > 0); raises `ValueError` otherwise.

        Text is read as a number: Micro-Manager's presets and .cfg files hold the
        ``Exposure`` property as text (``setProperty(cam, "Exposure", "30")``).
        """
        try:
            value = float(exposure)
        except (TypeError, ValueError):
            value = math.nan
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"exposure must be a finite number of ms > 0, got {exposure!r}")
        self._exposure_ms = value

    def sensor_shape(self) -> tuple[int, int]:
        """(rows, cols) of the sensor."""
        return self._shape

    def dtype(self) -> DTypeLike:
        """uint16 (uint8 for 8-bit cameras)."""
        return self._dtype

    def set_roi(self, x: int, y: int, width: int, height: int) -> None:
        """Set the ROI in whole sensor pixels (as Micro-Manager's core takes it).

        Raises `ValueError` for a fraction of a pixel (the base class kept it, and
        every later snap failed slicing the frame) or a ROI outside the sensor.
        """
        roi = (x, y, width, height)
        if not all(
            isinstance(v, int | float | np.integer | np.floating) and float(v).is_integer()
            for v in roi
        ):
            raise ValueError(f"camera ROI {roi} must be whole pixels (x, y, width, height)")
        super().set_roi(*(int(v) for v in roi))

    def snap(self, buffer: np.ndarray) -> Mapping[str, Any]:
        """Render one frame into ``buffer`` and return its livescope metadata."""
        return self._scope.render_into(buffer, self._exposure_ms, 0)

    def start_sequence(
        self,
        n: int | None,
        get_buffer: Callable[[Sequence[int], DTypeLike], np.ndarray],
    ) -> Iterator[Mapping[str, Any]]:
        """Yield frames; frame k is due at k frame periods (scaled) after the first.

        Runs on the core's acquisition thread (and, for one frame, in ``snapImage``).
        Frame k shows the sample k frame periods after the sample time; k is this
        sequence's own: a snap taken while it runs (which comes here too) once reset
        a count the two shared, and the sequence's next frames repeated sample times.
        """
        period_s = max(self._exposure_ms / 1000.0, 1.0 / self._scope.profile.camera.max_fps)
        wall_period = period_s / self._scope.time_acceleration
        roi, shape, dtype = self._roi, self.shape(), self.dtype()
        # (with a ROI the whole sensor is rendered, then cropped, as the base class does)
        full = None if roi is None else np.empty(self.sensor_shape(), dtype)
        t0 = time.perf_counter()
        k = 0
        while n is None or k < n:
            out = get_buffer(shape, dtype)
            if full is None or roi is None:
                meta = self._scope.render_into(out, self._exposure_ms, k)
            else:
                x, y, w, h = roi
                meta = self._scope.render_into(full, self._exposure_ms, k)
                out[:] = full[y : y + h, x : x + w]
            yield meta
            k += 1
            due = t0 + k * wall_period
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
