"""What the scope agent reads from the core, and checks against it, before a run.

Each is called once, while the agent is made (`ScopeAgent`): the plan and the
profile are checked against the devices Micro-Manager's configuration has (a
camera, a focus drive, an XY stage, the channel presets), and the profile takes
the objective and camera orientation Micro-Manager says are in use.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import useq
from pymmcore_plus import DeviceType

from livescope.schema import (
    UNTURNED,
    HardwareProfile,
    LivescopeError,
    focus_centred_positions,
)

from ._engine import binning_of, index_text

logger = logging.getLogger("livescope")


def _check_camera(core: Any) -> None:
    """Refuse a core without a camera, a colour camera and a multi-camera.

    Raises
    ------
    LivescopeError
        if the core has no camera (Core-Camera is empty: every event failed, its
        exposure 0 ms); if its camera gives more than one component per pixel
        (a colour camera: livescope records one 2-D image per frame, and the
        run failed at its first frame); or if it is a multi-camera (two or more
        camera channels): their frames share one channel and index, so one
        would be recorded over the other.

    """
    camera = core.getCameraDevice()
    if not camera:
        raise LivescopeError(
            "the core has no camera (Core-Camera is empty); set Core-Camera in the config "
            "(Micro-Manager's Hardware Configuration Wizard, or Property,Core,Camera,<label>)"
        )
    if (components := _count_or_1(core.getNumberOfComponents)) > 1:
        raise LivescopeError(
            f"the camera {camera!r} gives {components} components per pixel (colour): "
            "livescope records and analyses one 2-D grey image per frame; set the camera "
            "to a monochrome pixel type, or choose a monochrome camera as the core's camera"
        )
    if (cams := _count_or_1(core.getNumberOfCameraChannels)) > 1:
        raise LivescopeError(
            f"the camera {core.getCameraDevice()!r} has {cams} camera channels (a "
            "multi-camera): livescope records and analyses one camera's frames; choose one "
            "of its physical cameras as the core's camera"
        )


def _count_or_1(call: Any) -> int:
    """Return the count the core's ``call`` gives; 1 where it cannot say (an older core)."""
    try:
        return int(call())
    except Exception:  # noqa: BLE001 (one component, one camera)
        return 1


def _warn_other_labels(core: Any, profile: HardwareProfile) -> None:
    """Warn once where the core's camera, XY stage or focus drive is not the profile's.

    Called once, as a live agent starts. The profile names them (``camera.name``,
    ``stages.xy.name``, ``stages.z.name``) by their Micro-Manager device labels:
    another label says its limits (travel, sensor) may describe another device.
    A device the core has none of is left to the checks that need it.
    """
    try:
        pairs = [
            ("camera.name", profile.camera.name, core.getCameraDevice()),
            ("stages.xy.name", profile.stages.xy.name, core.getXYStageDevice()),
            ("stages.z.name", profile.stages.z.name, core.getFocusDevice()),
        ]
    except Exception:  # noqa: BLE001 (a core that cannot say: nothing to compare)
        return
    other = [(key, name, str(label)) for key, name, label in pairs if label and label != name]
    if not other:
        return
    cfg = profile.micromanager_config or "Micro-Manager's configuration"
    logger.warning(
        "the device labels of %s are not the profile's: %s; the profile's limits may "
        "describe other devices: check them, and set those names to the cfg's labels",
        cfg, ", ".join(f"{key} {name!r}, the core's {label!r}" for key, name, label in other),
    )  # fmt: skip


class _RigReach:
    """Where a rig without a focus drive or XY stage can image: what decisions may ask."""

    def __init__(self, focus: bool, xy: bool, place: tuple[float | None, float | None]):
        self.focus, self.xy, self.place = focus, xy, place

    def check(self, x: float | None, y: float | None, z: float | None, what: str) -> None:
        """Raise LivescopeError naming ``what`` if the rig has no device to get there."""
        if not self.xy and (x is not None or y is not None) and (x, y) != self.place:
            where = "sets no x/y" if self.place == (None, None) else f"images {self.place} µm"
            raise LivescopeError(
                f"{what}: ({x}, {y}) µm, but the core has no XY stage (Core-XYStage) and the "
                f"plan {where}; the sample stays where it is"
            )
        if not self.focus and z is not None:
            raise LivescopeError(
                f"{what}: z = {z:g} µm, but the core has no focus drive (Core-Focus)"
            )


def _check_stage_devices(core: Any, events: Sequence[useq.MDAEvent]) -> _RigReach:
    """Refuse a plan that moves a focus drive or XY stage the core has none of.

    Called before anything moves. Without a focus drive every plane would be
    the same image, recorded at its planned z; without an XY stage every
    position would be one place, recorded at its planned x/y (a plan that
    images a single x/y is accepted: the sample sits there). Returns what
    decisions may ask of the rig later (`_RigReach`).

    Raises
    ------
    LivescopeError
        naming the missing device: if an event sets z and ``core.getFocusDevice()``
        is empty, or events set x/y at more than one place and
        ``core.getXYStageDevice()`` is empty.

    """
    subs = [s for e in events for s in (getattr(e, "events", None) or (e,))]
    has_focus = bool(core.getFocusDevice())
    if not has_focus:
        zs = [s for s in subs if s.z_pos is not None]
        if zs:
            raise LivescopeError(
                f"the plan sets z (e.g. {zs[0].z_pos:g} µm, event {index_text(zs[0].index)}) "
                "but the core has no focus drive; set Core-Focus in the cfg (or give the "
                "plan no z)"
            )
    place: tuple[float | None, float | None] = (None, None)
    has_xy = bool(core.getXYStageDevice())
    if not has_xy:
        places = {(s.x_pos, s.y_pos) for s in subs if s.x_pos is not None or s.y_pos is not None}
        if len(places) > 1:
            shown = ", ".join(f"({x}, {y})" for x, y in sorted(places, key=str)[:3])
            raise LivescopeError(
                f"the plan sets x/y at {len(places)} places (e.g. {shown} µm) but the core "
                "has no XY stage; set Core-XYStage in the cfg (or image one place)"
            )
        place = next(iter(places), place)
    return _RigReach(has_focus, has_xy, place)


def _check_autofocus(core: Any, events: Sequence[useq.MDAEvent]) -> None:
    """Refuse a plan with autofocus events on a core without an autofocus device.

    Called before anything moves. pymmcore-plus's engine logs a warning for
    each such event and images at whatever focus the rig has: the run said ok.

    Raises
    ------
    LivescopeError
        naming the first autofocus event, if ``core.getAutoFocusDevice()`` is empty;
        naming the device and the loaded ones that could be meant, if an event's
        ``autofocus_device_name`` is not loaded (each of its autofocus failed).

    """
    af = next((e for e in events if isinstance(e.action, useq.HardwareAutofocus)), None)
    if af is None:
        return
    if not core.getAutoFocusDevice():
        raise LivescopeError(
            f"the plan has autofocus events (e.g. event {index_text(af.index)}, from an "
            "autofocus_plan) but the core has no autofocus device; set Core-AutoFocus in "
            "the cfg (or give the plan no autofocus_plan)"
        )
    loaded = [d for d in core.getLoadedDevices() if d != "Core"]
    for e in events:
        name = getattr(e.action, "autofocus_device_name", None)
        if name and name not in loaded:
            raise LivescopeError(
                f"the plan's autofocus device {name!r} (autofocus_device_name, event "
                f"{index_text(e.index)}) is not loaded in Micro-Manager; name its offset "
                f"drive, one of the loaded {_devices_meant(core, loaded)}"
            )


def _devices_meant(core: Any, loaded: list[str]) -> str:
    """Name the loaded focus stages (an autofocus offset drive is one), else every device."""
    try:
        stages = [str(d) for d in core.getLoadedDevicesOfType(DeviceType.Stage)]
    except Exception:  # noqa: BLE001 (a core that cannot say: all of them)
        stages = []
    kind, names = ("focus stages", stages) if stages else ("devices", loaded)
    return f"{kind}: {', '.join(map(repr, names)) or 'none'}"


def _around_focus(sequence: useq.MDASequence, core: Any) -> useq.MDASequence:
    """Return the plan with the focus drive's z for positions a relative z plan needs it for.

    useq counts a relative z plan from each position's z; a position without
    one (or a plan without positions) got planes around z = 0 µm, far from the
    sample on most focus drives (`livescope.schema.focus_centred_positions`).
    As in Micro-Manager, the stack is centred on the focus where it is when
    the run starts.

    Raises
    ------
    LivescopeError
        if such a plan meets a rig whose focus drive cannot be read.

    """
    needs = focus_centred_positions(sequence)
    if not needs:
        return sequence
    positions = list(sequence.stage_positions)
    try:
        if not core.getFocusDevice():
            raise LivescopeError("the rig has no focus drive")
        z = float(core.getPosition())
    except Exception as exc:
        raise LivescopeError(
            f"the plan's z plan is relative (counted from each position's z) and "
            f"{'the plan has no positions' if not positions else 'a position has no z'}, "
            f"but the focus drive's position could not be read ({exc}); give the "
            "positions' z, or an absolute z plan (ZTopBottom, ZAbsolutePositions)"
        ) from exc
    logger.info("relative z plan: centred on the focus drive's z = %g µm for %s", z,
                "the plan" if not positions else f"{len(needs)} position(s) without z")  # fmt: skip
    data = sequence.model_dump(exclude_unset=True)
    data["stage_positions"] = [
        p.model_dump(exclude_unset=True) | ({"z": z} if i in needs else {})
        for i, p in enumerate(positions)
    ] or [{"z": z}]
    return useq.MDASequence.model_validate(data)


def _undefined_presets(
    core: Any, profile: HardwareProfile, planned: Iterable[useq.MDAEvent]
) -> frozenset[str]:
    """Return the profile's channel presets that Micro-Manager's configuration lacks.

    Raises
    ------
    LivescopeError
        if the plan uses one (pymmcore-plus would fail the run when it reached
        its first frame): before anything moves.

    """
    group = profile.channels.config_group
    try:
        missing = frozenset(
            c.name for c in profile.channels.presets if not core.isConfigDefined(group, c.name)
        )
    except Exception:  # (a core that cannot say: nothing refused here)
        logger.warning("could not check the channel presets against Micro-Manager", exc_info=True)
        return frozenset()
    used = sorted(missing & {e.channel.config for e in planned if e.channel is not None})
    if used:
        raise LivescopeError(
            f"the plan's channel(s) {', '.join(map(repr, used))} are not presets of group "
            f"{group!r} in Micro-Manager's configuration; define them there (or fix the "
            "names in the profile and the plan)"
        )
    if missing:
        logger.warning(
            "the profile's channel(s) %s are not presets of group %r in Micro-Manager's "
            "configuration: decisions that add them are refused",
            ", ".join(map(repr, sorted(missing))), group,
        )  # fmt: skip
    return missing


def _objective_in_use(core: Any, profile: HardwareProfile) -> HardwareProfile:
    """Return the profile with the objective Micro-Manager's pixel size says is in use.

    The guardrails' field of view (light booked to the positions a close-up
    overlaps, places around a stopped position) and the plan check are the
    default objective's; a run on another objective (one with half the
    magnification sees a field twice as wide) booked too little overlap. The
    profile's objective whose pixel size, times the camera's binning, is
    within 3 % of Micro-Manager's becomes the run's default (written to the
    run's profile.yaml); none: a warning, and the profile's default stays.
    """
    try:
        px = float(core.getPixelSizeUm() or 0.0)
        binning = _binning(core)
    except Exception:  # noqa: BLE001 (a core that cannot say: the profile's)
        return profile
    if px <= 0:  # (no calibration: the profile's, with a warning where frames are stamped)
        return profile
    if profile.objective.gives(px, binning):
        return profile
    found = [o for o in profile.objectives if o.gives(px, binning)]
    if len(found) != 1:
        logger.warning(
            "Micro-Manager's pixel size %g µm (binning %d) is none of the profile's "
            "objectives': the guardrails take the field of view of its default, %s (%g µm)",
            px, binning, profile.objective.name, profile.objective.pixel_size_um,
        )  # fmt: skip
        return profile
    logger.info(
        "objective in use: %s (Micro-Manager's pixel size %g µm, binning %d; the profile's "
        "default is %s)", found[0].name, px, binning, profile.default_objective,
    )  # fmt: skip
    return profile.replace(default_objective=found[0].name)


def _binning(core: Any) -> int:
    """Return the camera's binning (1 where it has none): Micro-Manager's ``Binning`` property."""
    cam = core.getCameraDevice()
    if not cam or not core.hasProperty(cam, "Binning"):
        return 1
    return binning_of(core.getProperty(cam, "Binning"))


def _affine(core: Any) -> tuple[float, ...] | None:
    """Micro-Manager's pixel size affine, six numbers (None: the core could not say)."""
    try:
        v = core.getPixelSizeAffine()
        try:
            values = tuple(float(x) for x in v)
        except TypeError:  # a Java DoubleVector through Micro-Manager's bridge
            values = tuple(float(v.get(i)) for i in range(int(v.size())))
    except Exception:  # (a core that cannot say: the profile's)
        logger.warning("could not read Micro-Manager's pixel size affine", exc_info=True)
        return None
    return values if len(values) == 6 else None


def _oriented(core: Any, profile: HardwareProfile, *, recorded: bool = False) -> HardwareProfile:
    """Return the profile with its camera's orientation from Micro-Manager's pixel size affine.

    The affine's (a, b; c, d) map a frame's columns and rows to stage x and y;
    scaled to unit length, they are the profile's ``camera.orientation``, which
    cell-centred actions use (a camera turned or mirrored against the stage
    would otherwise send a close-up or a recentring off the cell). An affine
    that is a plain scale (Micro-Manager's default, set with the pixel size)
    or none (all zeros: no pixel size configuration) leaves the profile's;
    one that is not a turn or mirror (e.g. sheared) is refused. ``recorded``: the
    affine a replayed dataset was recorded with (a sheared one gets a warning and
    leaves the profile's).

    Raises
    ------
    LivescopeError
        if the affine is set but is not a turn or mirror of the frame (a recorded
        one: a warning, and the profile's orientation), or turns or mirrors the
        camera of a simulated profile (live or replayed).

    """
    values = _affine(core)
    if values is None:
        return profile
    a, b, _, c, d, _ = values
    if not all(math.isfinite(v) for v in (a, b, c, d)):
        return profile
    if b == 0.0 and c == 0.0 and a > 0 and a == d:  # a plain scale: no turn stated
        return profile
    if (a, b, c, d) == (0.0,) * 4:
        return profile
    scale = math.sqrt(abs(a * d - b * c))
    turned = tuple(round(v / scale, 6) for v in (a, b, c, d)) if scale > 0 else (a, b, c, d)
    if turned == profile.camera.orientation:
        return profile
    source = "the dataset's recorded" if recorded else "Micro-Manager's"
    what = f"{source} pixel size affine ({a:g}, {b:g}; {c:g}, {d:g})"
    try:
        camera = profile.camera.replace(orientation=turned)
    except ValueError as exc:
        if recorded:  # (nothing to calibrate: the profile's orientation, with a warning)
            logger.warning(
                "%s is not a turn or mirror of the camera against the stage: the profile's "
                "camera orientation %s is used", what, profile.camera.orientation,
            )  # fmt: skip
            return profile
        raise LivescopeError(
            f"{what} is not a turn or mirror of the camera against the stage; calibrate it "
            "again (Devices > Pixel Size Calibration) or set it to the plain pixel size"
        ) from exc
    if profile.kind == "simulated":
        if recorded:
            raise LivescopeError(
                f"{what} turns or mirrors the camera against the stage, which the simulated "
                "microscope's profile cannot state: replay it with the rig's profile or "
                "--profile replay"
            )
        raise LivescopeError(
            f"{what} turns or mirrors the simulated microscope's camera, whose frames are "
            "never turned against its stage; set it to the plain pixel size"
        )
    out = profile.replace(camera=camera.model_dump())
    if profile.camera.orientation != UNTURNED:
        logger.warning(
            "the camera's orientation %s from %s pixel size affine replaces the profile's %s",
            turned, source, profile.camera.orientation,
        )  # fmt: skip
    else:
        logger.info("camera orientation %s from %s pixel size affine", turned, source)
    return out


def _pixel_size_um(core: Any, profile: HardwareProfile, *, replay: bool = False) -> float:
    """Micro-Manager's pixel size, or where it has no calibration (0) the profile's, µm.

    The profile's objective's pixel size is at binning 1: times the camera's
    binning (a binned frame's pixel spans that many of the sensor's). ``replay``:
    the core serves a recorded dataset, which stated none (the replay says so in
    its warnings; Micro-Manager's calibration has nothing to do with it).
    """
    px = float(core.getPixelSizeUm() or 0.0)
    if px > 0:
        return px
    binning = _binning(core)
    px = profile.objective.pixel_size_um * binning
    if replay:
        logger.info("the dataset states no pixel size: frames are stamped with %g µm", px)
        return px
    logger.warning(
        "Micro-Manager has no pixel size calibration for the current configuration: frames "
        "are stamped with the profile's %g µm (objective %r) times the camera's binning %d: "
        "%g µm; calibrate the pixel size in Micro-Manager if the objective differs "
        "(close-ups and recentring move the stage by it)",
        profile.objective.pixel_size_um, profile.objective.name, binning, px,
    )  # fmt: skip
    return px


def _bus_frame_bytes(core: Any, profile_shape: tuple[int, int]) -> int:
    """Return the bytes of the largest frame the bus must carry (its slots' size).

    The profile's sensor at 16 bits, or the camera's frame as configured now
    where that is larger (a warning says so): a camera larger than its profile
    says would otherwise fill no shared-memory slot, and no frame would reach
    the worker.
    """
    profile_bytes = profile_shape[0] * profile_shape[1] * 2
    try:
        h, w = int(core.getImageHeight()), int(core.getImageWidth())
        nbytes = h * w * int(core.getBytesPerPixel())
    except Exception:  # noqa: BLE001 (no camera loaded: the profile's size stands)
        return profile_bytes
    if nbytes <= profile_bytes:  # (a smaller ROI is fine)
        return profile_bytes
    logger.warning(
        "the camera's frames are %dx%d px of %d byte(s), larger than the profile's "
        "sensor_shape_px %dx%d of 16 bits: the profile's camera section does not "
        "describe this camera (the bus is sized for the camera)",
        h, w, nbytes // max(1, h * w), profile_shape[0], profile_shape[1],
    )  # fmt: skip
    return nbytes


def _z_step_um(sequence: useq.MDASequence) -> float:
    """Return the plan's z spacing for the recording's scale (µm; 1 without a z-stack).

    A plan of z positions (``ZAbsolutePositions``, ``ZRelativePositions``) has no
    ``step``: its spacing is theirs (it was written as 1 µm whatever they were); of
    planes unevenly spaced, their mean spacing, said. Negative where z index 0 is
    the top plane (``go_up=False``, positions listed top to bottom): a positive
    scale showed such a stack upside down. The recorder replaces it at the end of
    the run with each position's own, from the z its frames were taken at.
    """
    z_plan = sequence.z_plan
    in_order = [float(z) for z in z_plan] if z_plan is not None else []
    sign = -1.0 if len(in_order) >= 2 and in_order[-1] < in_order[0] else 1.0
    if (step := getattr(z_plan, "step", None)) is not None:
        return sign * (float(step) or 1.0)
    planes = sorted(set(in_order))
    if len(planes) < 2:
        return 1.0
    gaps = [b - a for a, b in itertools.pairwise(planes)]
    mean = (planes[-1] - planes[0]) / (len(planes) - 1)
    if max(gaps) - min(gaps) > 1e-6 * max(1.0, mean):
        logger.warning(
            "the plan's z planes are not evenly spaced (%s µm apart): the recording's z "
            "scale is their mean spacing, %.4g µm (the frame log keeps each plane's z)",
            ", ".join(f"{g:g}" for g in gaps[:6]), mean,
        )  # fmt: skip
    return sign * mean


def _interval_s(sequence: useq.MDASequence) -> float:
    interval = getattr(sequence.time_plan, "interval", None)
    return interval.total_seconds() if interval else 1.0
