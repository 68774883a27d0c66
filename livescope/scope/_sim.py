"""The simulated microscope: a pymmcore-plus ``UniMMCore`` with Python devices.

It behaves like a Micro-Manager rig (config groups, pixel-size configs, shutter,
stages, sequence acquisition) and knows the truth about what it shows: for every
frame, the instance masks and ids of the nuclei in view, and the lineage of every
cell, in Cell Tracking Challenge terms.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pymmcore
from numpy.typing import NDArray
from pymmcore_plus.experimental.unicore import UniMMCore

from livescope.schema import HardwareProfile, LivescopeError, Objective, load_profile

from ._devices import (
    CtrlCSafe,
    SimCamera,
    SimShutter,
    SimStateDevice,
    SimXYStage,
    SimZStage,
)
from ._render import (
    FieldOfView,
    Optics,
    render_fluorescence,
    render_labels,
    render_phase,
)
from ._sample import CellRecord, SampleState, SimulatedSample

__all__ = [
    "FrameTruth",
    "SimulatedMicroscope",
    "expose",
    "load_devices",
    "release_core",
    "standard_normal",
]

LIGHT_PATH = "LightPath"
OBJECTIVE = "Objective"
SHUTTER = "Shutter"

META_SAMPLE_TIME = "livescope.sample_time_s"
META_FRAME = "livescope.sim_frame"

DEVICE_LOCK_WAIT_S = 5.0
"""How long `SimulatedMicroscope.close` waits for a device in use before it gives up, s."""

logger = logging.getLogger("livescope")


def load_devices(core: UniMMCore, devices: dict[str, Any], profile: HardwareProfile) -> None:
    """Load and initialise Python devices; define the profile's channel group.

    Channel presets switch the ``LightPath`` state device (one of ``devices``).
    """
    for label, dev in devices.items():
        core.loadPyDevice(label, dev)
    core.initializeAllDevices()
    group = profile.channels.config_group
    core.defineConfigGroup(group)
    for ch in profile.channels.presets:
        core.defineConfig(group, ch.name, LIGHT_PATH, "Label", ch.name)
    core.setChannelGroup(group)


def release_core(core: UniMMCore) -> None:
    """Unload a core's devices and detach its callbacks from Python.

    Detaching means no callback from the core's own threads can reach Python
    while the interpreter shuts down (which aborts the process).
    """
    core.unloadAllDevices()
    _detach(core)


def _detach(core: UniMMCore) -> None:
    with contextlib.suppress(Exception):
        pymmcore.CMMCore.registerCallback(core, None)


class _SimCore(UniMMCore):
    """``UniMMCore`` whose pixel-size config follows the Python objective turret.

    The C++ core cannot read Python devices' properties, so it never finds the
    current pixel-size config; the presets here are named after the objectives.
    It also reports the simulated camera's ADC bit depth (``UniMMCore`` reports
    the bits of the frame's dtype: 16 for a 12-bit camera), as a real camera's
    adapter does.
    """

    def __init__(self, objective: SimStateDevice, camera: SimCamera, bit_depth: int) -> None:
        # An explicit (adapter-free) search path: no Micro-Manager installation is
        # looked for, since every device here is a Python device.
        super().__init__(mm_path=str(Path(__file__).parent))
        self._objective_device = objective
        self._sim_camera = camera
        self._sim_bit_depth = bit_depth

    def getImageBitDepth(self) -> int:
        """ADC bits of the current camera (the profile's ``camera.bit_depth`` for the sim's)."""
        if self._py_camera() is self._sim_camera:
            return self._sim_bit_depth
        return int(super().getImageBitDepth())

    def getCurrentPixelSizeConfig(self, *args: Any, **kwargs: Any) -> str:  # type: ignore[override]
        """Return the pixel-size preset of the current objective."""
        label = self._objective_device.current_label
        return label if label in self.getAvailablePixelSizeConfigs() else ""

    def getPixelSizeUm(self, cached: bool = False) -> float:
        """Pixel size of the current objective, µm."""
        res = self.getCurrentPixelSizeConfig()
        return float(self.getPixelSizeUmByID(res)) if res else 0.0

    def getPixelSizeAffine(self, cached: bool = False) -> Any:
        """Pixel-size affine of the current objective."""
        res = self.getCurrentPixelSizeConfig()
        return tuple(self.getPixelSizeAffineByID(res)) if res else (0.0,) * 6


@dataclass(frozen=True)
class FrameTruth:
    """Ground truth of one field of view at one sample time.

    ``labels`` holds cell ids (0 = background); ``cell_ids`` lists the ids present.
    """

    time_s: float
    x_um: float
    y_um: float
    pixel_um: float
    labels: NDArray[np.uint32]
    cell_ids: tuple[int, ...]


def standard_normal(rng: np.random.Generator, out: NDArray[np.float32]) -> None:
    """Fill ``out`` with standard normal float32 samples (Box-Muller, exact in law).

    About twice as fast as ``Generator.standard_normal`` for float32 images; the
    24-bit uniforms bound the tails at 5.8 sigma.
    """
    flat = out.reshape(-1)
    n = flat.size
    h = (n + 1) // 2
    u = rng.random(2 * h, dtype=np.float32)
    radius = u[:h]
    np.subtract(np.float32(1.0), radius, out=radius)  # (0, 1]: log is finite
    np.log(radius, out=radius)
    radius *= np.float32(-2.0)
    np.sqrt(radius, out=radius)
    angle = u[h:]
    angle *= np.float32(2 * np.pi)
    flat[:h] = np.cos(angle)
    flat[:h] *= radius
    np.sin(angle[: n - h], out=angle[: n - h])
    angle[: n - h] *= radius[: n - h]
    flat[h:] = angle[: n - h]


_POISSON_CHUNK = 4096
"""Pixels per call of numpy's Poisson sampler, which holds the GIL throughout: ~0.3 ms
here, where a whole dark 512² frame held it for up to 3.6 ms and the agent's other
threads (its decisions) waited that long."""


def _poisson(rng: np.random.Generator, lam: NDArray[np.float32]) -> NDArray[np.float32]:
    """Poisson samples of ``lam`` (1-D) as float32, drawn in chunks (the same draws)."""
    out = np.empty(lam.shape, np.float32)
    for i in range(0, lam.size, _POISSON_CHUNK):
        out[i : i + _POISSON_CHUNK] = rng.poisson(lam[i : i + _POISSON_CHUNK])
    return out


def expose(
    rate_e_per_ms: NDArray[np.float32],
    exposure_ms: float,
    rng: np.random.Generator,
    *,
    read_noise_e: float,
    gain_adu_per_e: float,
    offset_adu: int,
    full_well_e: float,
    bit_depth: int,
    out: NDArray[np.integer[Any]],
    scratch: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None,
) -> None:
    """Turn a photon-rate image into camera counts, written into ``out``.

    Shot noise is Poisson where the expected count is below 10 electrons and its
    normal approximation above (variance equal to the mean); read noise is
    Gaussian; electrons clip at 0 and at the full well, counts at ``2**bit_depth - 1``.
    ``rate_e_per_ms`` is overwritten; ``scratch`` (two float32 arrays of the same
    shape) saves allocations per frame.
    """
    e = rate_e_per_ms
    e *= np.float32(exposure_ms)
    z = np.empty_like(e) if scratch is None else scratch[0]
    standard_normal(rng, z)
    low = e < 10.0
    low_values = None
    if low.any():
        low_values = _poisson(rng, e[low]) + z[low] * np.float32(read_noise_e)
    # z <- e + sqrt(e + read_noise^2) * z, then e holds the result (no temporaries)
    sigma = np.empty_like(e) if scratch is None else scratch[1]
    np.add(e, np.float32(read_noise_e**2), out=sigma)
    np.sqrt(sigma, out=sigma)
    z *= sigma
    e += z
    if low_values is not None:
        e[low] = low_values
    # (clipped at 0 electrons, a dark frame's mean sits ~0.3 counts above offset_adu and
    # its noise is one-sided, unlike a real camera's; kept: every simulated frame the
    # shipped engines were trained on was made so, and their training must reproduce them)
    np.clip(e, 0.0, full_well_e, out=e)
    e *= np.float32(gain_adu_per_e)
    e += np.float32(offset_adu)
    np.clip(e, 0.0, float(2**bit_depth - 1), out=e)
    np.rint(e, out=e)
    out[...] = e


class SimulatedMicroscope:
    """A simulated rig built from a ``kind: simulated`` hardware profile.

    Parameters
    ----------
    profile
        A hardware profile (or a path / shipped name); default: the shipped ``sim``.
    seed
        Overrides the profile's ``simulation.seed``. Same seed, same acquisition
        calls: bit-identical frames.

    Attributes
    ----------
    core
        The ``UniMMCore`` (use it like any pymmcore-plus core).
    sample
        The simulated cell population.

    Notes
    -----
    Sample time (`time_s`) does not follow the wall clock: the acquisition engine
    sets it from each event's schedule (see `LivescopeEngine`). Frame k of a
    sequence acquisition shows the sample k frame periods after `time_s`, which the
    sequence leaves as it was.

    """

    def __init__(
        self, profile: HardwareProfile | str | None = None, *, seed: int | None = None
    ) -> None:
        if not isinstance(profile, HardwareProfile):
            profile = load_profile(profile)
        if profile.simulation is None:
            raise LivescopeError(
                f"profile {profile.name!r} is kind {profile.kind!r}; the simulated microscope "
                "needs a profile with kind: simulated and a simulation section"
            )
        self.profile = profile
        self.params = profile.simulation
        self.seed = self.params.seed if seed is None else int(seed)
        if self.seed < 0:  # (numpy's generators said only "expected non-negative integer")
            raise LivescopeError(f"simulation seed must be a whole number >= 0, got {seed}")
        self.sample = SimulatedSample(self.params, seed=self.seed)
        self.time_acceleration = self.params.time_acceleration
        self._lock = threading.RLock()
        self._time_s = 0.0
        self._frames_rendered = 0
        self._bleach: dict[int, float] = {}
        self._scratch: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
        self.core = self._build_core()

    # ----------------------------------------------------------- the core

    def _build_core(self) -> UniMMCore:
        p = self.profile
        self._camera = SimCamera(self)
        self._xy = SimXYStage(p.stages.xy.x_range_um, p.stages.xy.y_range_um)
        self._z = SimZStage(p.stages.z.z_range_um)
        self._light_path = SimStateDevice([c.name for c in p.channels.presets])
        self._objective = SimStateDevice([o.name for o in p.objectives])
        core = _SimCore(self._objective, self._camera, p.camera.bit_depth)
        self._shutter = SimShutter()
        devices: dict[str, CtrlCSafe] = {
            p.camera.name: self._camera,
            p.stages.xy.name: self._xy,
            p.stages.z.name: self._z,
            LIGHT_PATH: self._light_path,
            OBJECTIVE: self._objective,
            SHUTTER: self._shutter,
        }
        self._devices = devices
        load_devices(core, devices, p)
        core.defineConfigGroup(OBJECTIVE)
        for obj in p.objectives:
            core.defineConfig(OBJECTIVE, obj.name, OBJECTIVE, "Label", obj.name)
            core.definePixelSizeConfig(obj.name, OBJECTIVE, "Label", obj.name)
            core.setPixelSizeUm(obj.name, obj.pixel_size_um)

        core.setCameraDevice(p.camera.name)
        core.setXYStageDevice(p.stages.xy.name)
        core.setFocusDevice(p.stages.z.name)
        core.setShutterDevice(SHUTTER)
        core.setAutoShutter(True)
        core.setConfig(OBJECTIVE, p.default_objective)
        first = p.channels.presets[0]
        core.setConfig(p.channels.config_group, first.name)
        core.setExposure(first.default_exposure_ms)
        return core

    def close(self) -> None:
        """Unload the devices and detach the core's callbacks from Python.

        Detaching first means no callback from the core's own threads can reach
        Python while the interpreter shuts down (which aborts the process). A
        device that another thread still holds after `DEVICE_LOCK_WAIT_S` is
        named in a warning and the devices are left loaded (unloading would wait
        for it for ever); the callbacks are detached all the same.
        """
        busy = [label for label, dev in self._devices.items()
                if not dev.free_within(DEVICE_LOCK_WAIT_S)]  # fmt: skip
        if not busy:
            release_core(self.core)
            return
        logger.warning(
            "simulated microscope: device(s) %s still in use by another thread after %g s; "
            "closing without unloading the devices",
            ", ".join(busy),
            DEVICE_LOCK_WAIT_S,
        )
        _detach(self.core)

    def __enter__(self) -> SimulatedMicroscope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------- sample time

    @property
    def time_s(self) -> float:
        """Current sample time, seconds."""
        return self._time_s

    def set_time(self, time_s: float) -> None:
        """Set the sample time (seconds, finite, >= 0) that the next frame shows."""
        if not (time_s >= 0 and math.isfinite(time_s)):
            raise ValueError(f"sample time must be a finite number of s >= 0, got {time_s}")
        self._time_s = float(time_s)

    # ----------------------------------------------------------- rendering

    def _field(self, time_s: float) -> tuple[FieldOfView, Optics]:
        """Return the whole sensor's field (a camera ROI is a crop of it) and the optics."""
        x, y = self._xy.get_position_um()
        obj = next(o for o in self.profile.objectives if o.name == self._objective.current_label)
        shape = self._camera.sensor_shape()
        fov = FieldOfView(
            center_y_um=y,
            center_x_um=x,
            pixel_um=obj.pixel_size_um,
            shape=(int(shape[0]), int(shape[1])),
            z_um=self._z.get_position_um(),
            wrap_um=self.params.sample_size_um,
        )
        optics = Optics(na=obj.na, tilt_um_per_mm=self.params.focus_tilt_um_per_mm)
        return fov, optics

    def _autoshutter(self) -> bool:
        """Return True if the core's autoshutter drives the sim's shutter.

        Micro-Manager's autoshutter opens the shutter for each snap and for a whole
        sequence acquisition; ``UniMMCore``'s does not drive Python shutters (plain
        snaps, MDA runs and sequences came out dark), so the shutter counts as open
        while the camera exposes. (The livescope engine and the pycromanager path
        open it themselves: their frames are the same.)
        """
        core = self.core
        return bool(core.getAutoShutter()) and core.getShutterDevice() == SHUTTER

    def _bleach_of(self, cell_id: int) -> float:
        if cell_id in self._bleach:
            return self._bleach[cell_id]
        parent = self.sample.lineage[cell_id].parent_id
        value = self._bleach_of(parent) if parent else 1.0
        self._bleach[cell_id] = value
        return value

    def render_into(
        self, buffer: NDArray[Any], exposure_ms: float, frame_in_sequence: int = 0
    ) -> dict[str, str]:
        """Render the current view into ``buffer`` (called by the camera).

        Frame ``frame_in_sequence`` of a sequence shows the sample that many frame
        periods after `time_s`. Fluorescence exposures bleach the cells in view.

        Returns
        -------
        dict
            metadata: sample time (s) and the render counter of this frame.

        """
        lit = self._autoshutter()
        with self._lock:
            cam = self.profile.camera
            period_s = max(exposure_ms / 1000.0, 1.0 / cam.max_fps)
            t = self._time_s + frame_in_sequence * period_s
            state = self.sample.state_at(t)
            fov, optics = self._field(t)
            channel = self.profile.channels.get(self._light_path.current_label)
            if not (lit or self._shutter.get_open()):
                rate = np.zeros(fov.shape, np.float32)
            elif channel.kind == "fluorescence":
                rate = render_fluorescence(state, fov, optics, self._bleach_of)
                self._apply_bleaching(state, fov, exposure_ms)
            else:
                rate = render_phase(state, fov, optics)
            frame = self._frames_rendered
            self._frames_rendered += 1
            rng = np.random.default_rng([self.seed, 0xCA3E7A, frame])
            if self._scratch is None or self._scratch[0].shape != rate.shape:
                self._scratch = (np.empty_like(rate), np.empty_like(rate))
            expose(
                rate,
                exposure_ms,
                rng,
                read_noise_e=cam.read_noise_e,
                gain_adu_per_e=cam.gain_adu_per_e,
                offset_adu=cam.offset_adu,
                full_well_e=cam.full_well_e,
                bit_depth=cam.bit_depth,
                out=buffer,
                scratch=self._scratch,
            )
            return {META_SAMPLE_TIME: f"{t:.6f}", META_FRAME: str(frame)}

    def _apply_bleaching(self, state: SampleState, fov: FieldOfView, exposure_ms: float) -> None:
        factor = math.exp(-self.params.bleach_per_exposure_s * exposure_ms / 1000.0)
        if factor == 1.0:
            return
        h, w = fov.wrap_um
        ry = (state.y_um - fov.center_y_um + h / 2) % h - h / 2
        rx = (state.x_um - fov.center_x_um + w / 2) % w - w / 2
        in_view = (np.abs(ry) <= fov.shape[0] * fov.pixel_um / 2) & (
            np.abs(rx) <= fov.shape[1] * fov.pixel_um / 2
        )
        for cid in state.ids[in_view].tolist():
            self._bleach[cid] = self._bleach_of(cid) * factor

    # ----------------------------------------------------------- ground truth

    def ground_truth(
        self,
        time_s: float | None = None,
        x_um: float | None = None,
        y_um: float | None = None,
        *,
        pixel_size_um: float | None = None,
        shape: Sequence[int] | None = None,
        roi: tuple[int, int, int, int] | None = None,
    ) -> FrameTruth:
        """Ground truth of a field: by default the current one (time, stage, objective, ROI).

        Pass the sample time, stage position, pixel size and shape a frame was
        taken with (its `FrameInfo` holds them) to get that frame's truth, whatever
        the objective and camera ROI are now: ``pixel_size_um`` (µm) picks the
        objective that gives it; ``shape`` (the frame's rows, cols) is the whole
        sensor's or a ROI's; ``roi`` (x, y, width, height in sensor pixels) places
        a ROI on the sensor (a frame's `FrameInfo` gives where: its ``roi_offset_px``,
        which the truth writer turns back into ``roi``): without ``roi``, a frame
        smaller than the sensor is taken to be the camera's current ROI, which
        must have its shape. ``x_um``, ``y_um`` stay the stage
        position (the centre of the whole sensor). Any thread.

        Raises
        ------
        LivescopeError
            if no objective gives ``pixel_size_um``, or the frame's place on the
            sensor cannot be known (a ``shape`` that is neither the sensor's nor
            the current ROI's, a ``roi`` off the sensor or of another shape).

        """
        with self._lock:
            t = self._time_s if time_s is None else float(time_s)
            fov, optics = self._field(t)
            if pixel_size_um is not None:
                obj = self._objective_giving(pixel_size_um)
                fov = replace(fov, pixel_um=obj.pixel_size_um)
                optics = replace(optics, na=obj.na)
            fov = replace(
                fov,
                center_y_um=fov.center_y_um if y_um is None else float(y_um),
                center_x_um=fov.center_x_um if x_um is None else float(x_um),
            )
            x0, y0, w, h = self._crop_of(shape, roi)
            state = self.sample.state_at(t)
            labels = render_labels(state, fov, optics)
            if (h, w) != labels.shape:
                labels = np.ascontiguousarray(labels[y0 : y0 + h, x0 : x0 + w])
        ids = tuple(int(i) for i in np.unique(labels) if i)
        return FrameTruth(t, fov.center_x_um, fov.center_y_um, fov.pixel_um, labels, ids)

    def _objective_giving(self, pixel_size_um: float) -> Objective:
        """Return the profile's objective whose pixel size (within 3 %) a frame has."""
        found = [o for o in self.profile.objectives if o.gives(pixel_size_um)]
        if not found:
            have = ", ".join(f"{o.name} {o.pixel_size_um:g} µm" for o in self.profile.objectives)
            raise LivescopeError(
                f"a frame with pixel size {pixel_size_um} µm: no objective of profile "
                f"{self.profile.name!r} gives it ({have}); its ground truth cannot be drawn "
                "(was the frame taken on this simulated microscope?)"
            )
        return min(found, key=lambda o: abs(o.pixel_size_um - pixel_size_um))

    def _crop_of(
        self, shape: Sequence[int] | None, roi: tuple[int, int, int, int] | None
    ) -> tuple[int, int, int, int]:
        """Return the (x, y, width, height) on the sensor of a frame of ``shape`` / ``roi``."""
        rows, cols = self._camera.sensor_shape()
        frame = None if shape is None else tuple(int(s) for s in shape)[-2:]
        if frame is not None and len(frame) != 2:
            raise LivescopeError(f"a frame's shape has rows and columns, got {tuple(shape or ())}")
        if roi is None:
            if frame is None:
                return self._camera.get_roi()
            if frame == (rows, cols):
                return (0, 0, cols, rows)
            now = self._camera.get_roi()
            if frame == (now[3], now[2]):
                return now
            raise LivescopeError(
                f"a frame of shape {frame} is neither the whole sensor's ({rows}, {cols}) nor "
                f"the camera ROI's now {now} (x, y, width, height); where its ROI sat on the "
                "sensor is not recorded: pass the frame's roi for its ground truth"
            )
        x0, y0, w, h = (int(v) for v in roi)
        if x0 < 0 or y0 < 0 or w <= 0 or h <= 0 or x0 + w > cols or y0 + h > rows:
            raise LivescopeError(
                f"ROI {tuple(roi)} (x, y, width, height) is not on the {cols} x {rows} sensor"
            )
        if frame is not None and frame != (h, w):
            raise LivescopeError(f"a frame of shape {frame} cannot come from ROI {tuple(roi)}")
        return (x0, y0, w, h)

    def truth_for(
        self,
        metadata: Mapping[str, Any],
        *,
        pixel_size_um: float | None = None,
        shape: Sequence[int] | None = None,
        roi: tuple[int, int, int, int] | None = None,
    ) -> FrameTruth:
        """Ground truth of a recorded frame, from its livescope frame metadata.

        ``metadata`` is a frame's metadata from `LivescopeEngine` (its
        ``livescope.sample_time_s``, ``position`` and ``pixel_size_um``) or a
        recorded frame's `FrameInfo` (``sample_time_s``, ``x_um``, ``y_um``,
        ``pixel_size_um``, ``shape``). The keywords, as for `ground_truth`, say
        what the metadata does not (or override it); what neither says is taken
        from the microscope as it is now.

        Raises
        ------
        LivescopeError
            if the metadata lacks the sample time or stage position, or the
            frame's geometry cannot be reproduced (see `ground_truth`).

        """
        try:
            if "x_um" in metadata:
                x, y = float(metadata["x_um"]), float(metadata["y_um"])
            else:
                x, y = float(metadata["position"]["x"]), float(metadata["position"]["y"])
            time_key = META_SAMPLE_TIME if META_SAMPLE_TIME in metadata else "sample_time_s"
            t = float(metadata[time_key])
        except (KeyError, TypeError, ValueError) as exc:
            raise LivescopeError(
                f"frame metadata lacks the sample time or stage position needed for ground "
                f"truth ({exc!r}); record with the livescope engine"
            ) from exc
        if pixel_size_um is None and metadata.get("pixel_size_um") is not None:
            pixel_size_um = float(metadata["pixel_size_um"])
        if shape is None and metadata.get("shape") is not None:
            shape = metadata["shape"]
        return self.ground_truth(t, x, y, pixel_size_um=pixel_size_um, shape=shape, roi=roi)

    def lineage(self) -> list[CellRecord]:
        """Every cell simulated so far (ids, parents, birth/end times, fate, mitosis onset)."""
        with self._lock:
            return self.sample.records()
