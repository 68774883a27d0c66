"""The acquisition engine: pymmcore-plus's ``MDAEngine`` with livescope's fixes.

* Stage moves outside the hardware profile's travel raise `StageLimitError`
  before anything moves (the stock engine logs a warning and images the wrong
  place).
* A Python shutter is opened around exposures when autoshutter is on
  (``UniMMCore``'s autoshutter does not drive Python shutters: frames come out dark).
  An event whose preset leaves the core without a shutter (an LED rig) is imaged
  without one (the stock engine closed "no device" after each snap, and failed).
* On the simulated microscope, the engine sets sample time from each event's
  schedule and divides the waits of the plan by the simulation's
  ``time_acceleration``, so a two-hour time-lapse plays in seconds.
* Each frame's metadata carries the sample time and the stage position under
  livescope keys, for ground truth and later analysis.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymmcore_plus.mda import MDAEngine, SkipEvent
from pymmcore_plus.metadata import FrameMetaV1, Position
from pymmcore_plus.metadata import functions as metadata_functions
from useq import AcquireImage, HardwareAutofocus, MDAEvent

from livescope.schema import HardwareProfile

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus
    from pymmcore_plus.mda._protocol import PImagePayload

    from ._sim import SimulatedMicroscope

__all__ = ["SAMPLE_TIME_KEY", "LivescopeEngine", "index_text"]

logger = logging.getLogger("livescope")

SAMPLE_TIME_KEY = "sample_time_s"
"""Key in ``MDAEvent.metadata``: the sample time (s) an event was planned for."""
META_SAMPLE_TIME = "livescope.sample_time_s"
"""Key in frame (and simulated camera) metadata: the sample time (s) the frame shows."""
META_ROI_OFFSET = "livescope.roi_offset_px"
"""Key in frame metadata: where the frame's centre is from the sensor's (`roi_offset_px`)."""


class LivescopeEngine(MDAEngine):
    """MDA engine for livescope runs.

    Parameters
    ----------
    core
        The pymmcore-plus core (``CMMCorePlus`` or ``UniMMCore``).
    profile
        The rig's hardware profile (stage travel is checked against it).
    sim
        The simulated microscope driving ``core``, if any.

    Attributes
    ----------
    failed_events
        Events that should have produced an image and did not (the stock engine
        logs and skips a failed snap; livescope counts and reports them).
    autofocus_failed
        Autofocus events whose autofocus failed (the stock engine logs a warning and
        images at the focus it had; livescope counts and reports them).

    """

    def __init__(
        self,
        core: CMMCorePlus,
        profile: HardwareProfile,
        sim: SimulatedMicroscope | None = None,
    ) -> None:
        super().__init__(core)
        self.profile = profile
        self.sim = sim
        self._default_exposure = {c.name: c.default_exposure_ms for c in profile.channels.presets}
        self.failed_events: list[MDAEvent] = []
        self.first_failure: str | None = None
        """Why the first failed event failed (None: none failed, or the reason is unknown)."""
        self.autofocus_failed: list[MDAEvent] = []
        self.first_autofocus_failure: str | None = None
        """Where and why the first autofocus failed (None: none failed)."""
        self._af_error: str | None = None
        """Why the running autofocus event's autofocus failed (None: it did not fail)."""
        self._burst_position: Position | None = None
        """Where the stage was when a hardware-timed burst without x, y or z of its own began."""
        self._xy_without_stage: tuple[float | None, float | None] | None = None
        """On a core without an XY stage: the one x/y events may ask for (the first)."""
        self._burst_lock = threading.Lock()  # (the runner's thread and the decisions')
        self._burst: _Burst | None = None
        """The hardware-timed burst handed to the runner (`burst_handed`), until it has run."""
        self._cut_off: list[MDAEvent] = []
        """Events of bursts a cancel cut off, or the run ended before they began."""
        self._shutter_skipped = False
        """The running event's preset left the core without a shutter: the stock engine's
        autoshutter open and close are skipped for it (`_skip_missing_shutter`)."""
        self._warned_no_shutter = False

    # ------------------------------------------------------------ schedule

    def event_iterator(self, events: Iterable[MDAEvent]) -> Iterator[MDAEvent]:
        """Scale waits on the simulated microscope (called on the runner thread)."""
        if self.sim is None:
            yield from super().event_iterator(self._stamp(events))
            return
        accel = self.sim.time_acceleration
        for event in super().event_iterator(self._stamp(events)):
            if event.min_start_time:
                event = event.model_copy(update={"min_start_time": event.min_start_time / accel})
            yield event

    def _stamp(self, events: Iterable[MDAEvent]) -> Iterator[MDAEvent]:
        """Stamp each event's planned sample time; give one without an exposure its default.

        The sample time is recorded before waits are scaled. (Without an
        exposure the camera kept whatever exposure it had, e.g. the previous
        channel's, while the light-dose budget and the guardrails booked the
        default.)
        """
        for event in events:
            update: dict[str, Any] = {}
            if SAMPLE_TIME_KEY not in event.metadata:
                update["metadata"] = {
                    **event.metadata,
                    SAMPLE_TIME_KEY: float(event.min_start_time or 0.0),
                }
            if event.exposure is None and event.channel is not None:
                default = self._default_exposure.get(event.channel.config)
                if default is not None:
                    update["exposure"] = default
            yield event.model_copy(update=update) if update else event

    # ------------------------------------------------------------ hardware

    def _check_limits(self, event: MDAEvent) -> None:
        what = f"event {dict(event.index)}"
        self.profile.check_stage_travel(event.x_pos, event.y_pos, event.z_pos, what)

    def setup_event(self, event: MDAEvent) -> None:
        """Move hardware for ``event`` (runner thread); raises `StageLimitError`.

        A stage or focus move, channel or exposure the hardware refuses, or a
        device still busy at the core's timeout (``getTimeoutMs``), fails the
        event: its frames are not taken (the stock engine logs a warning and
        images wherever the stage is, in whatever channel; its timeout ended the
        run), and are counted in `failed_events` (the run goes on; its summary
        says it failed).
        """
        self._check_limits(event)
        for sub in getattr(event, "events", ()):
            self._check_limits(sub)
        if self.sim is not None:
            self.sim.set_time(sample_time_s(event))
        core = self.mmcore
        try:
            super().setup_event(event)
            # (a burst with an exposure sequence sets it by hardware, not here; a camera
            # may round an exposure a little: what it cannot reach is refused)
            if (
                event.exposure is not None
                and not getattr(event, "exposure_sequence", ())
                and (why := exposure_not_reached(core.getExposure(), event.exposure))
            ):
                raise _Refused(why)
        except Exception as exc:  # (a refusal, or whatever the core raises: the stock
            # engine waits for every device at the end, and a stage still moving or stalled
            # at the core's timeout raised TimeoutError or RuntimeError, which ended the run)
            why = str(exc) if isinstance(exc, _Refused) else f"the hardware set-up failed: {exc}"
            subs = tuple(getattr(event, "events", ()) or (event,))
            # (a burst's events a stop of their position dropped were counted stopped)
            subs = subs[: self._burst_done(event, len(subs))]
            if not subs:
                raise SkipEvent(num_frames=0, reason="a stop of its position ended it") from exc
            where = index_text(subs[0].index)  # (a burst's own index is empty)
            first = not self.failed_events
            if first:
                self.first_failure = f"event {where}: {why}"
            self.failed_events.extend(subs)
            # (the first one not a refusal with its traceback: a device's error, or a fault
            # in code of ours or a subclass's, which would fail every event the same way)
            logger.error(
                "%d frame(s) of event %s not acquired: %s", len(subs), where, why,
                exc_info=first and not isinstance(exc, _Refused),
            )  # fmt: skip
            raise SkipEvent(num_frames=len(subs), reason=why) from exc
        # pymmcore-plus reads no stage position for a hardware-timed burst's frames (a
        # stage query per frame would slow real hardware); a burst that gives no x, y or
        # z of its own is stamped with the position read once here, so that every frame
        # says where it was taken (its ground truth, a replay's place; a burst at a
        # position without a z was recorded without one, a snap there with the focus)
        self._burst_position = None
        if getattr(event, "events", None) and None in (event.x_pos, event.y_pos, event.z_pos):
            self._burst_position = metadata_functions.position(core)
        shutter = core.getShutterDevice()
        is_py = getattr(core, "isPyDevice", None)
        if shutter and core.getAutoShutter() and is_py is not None and is_py(shutter):
            core.setShutterOpen(True)

    def _set_event_xy_position(self, event: MDAEvent) -> None:
        """Move the XY stage for ``event``; raise `_Refused` if it refuses."""
        x, y = event.x_pos, event.y_pos
        core = self.mmcore
        if x is None and y is None:
            return  # nothing to move
        if not core.getXYStageDevice():
            # no stage: the sample sits at the first x/y asked for (a plan that images one
            # place, `ScopeAgent` checks); another would be recorded where it never was
            if self._xy_without_stage is None:
                self._xy_without_stage = (x, y)
            if (x, y) != self._xy_without_stage:
                raise _Refused(
                    f"the core has no XY stage to move to ({x}, {y}) µm; set Core-XYStage "
                    "in the cfg"
                )
            return
        if x is None or y is None:
            here = core.getXYPosition()
            x, y = (here[0] if x is None else x), (here[1] if y is None else y)
        try:
            core.setXYPosition(x, y)
        except Exception as exc:  # (whatever the device adapter raises)
            raise _Refused(f"the XY stage did not move to ({x:g}, {y:g}) µm: {exc}") from exc

    def _set_event_z(self, event: MDAEvent) -> None:
        """Move the focus drive for ``event``; raise `_Refused` if it refuses or there is none."""
        if not self.mmcore.getFocusDevice():
            raise _Refused(
                f"the core has no focus drive to move to {event.z_pos:g} µm; set Core-Focus "
                "in the cfg"
            )
        try:
            super()._set_event_z(event)
        except Exception as exc:  # (whatever the device adapter raises)
            raise _Refused(f"the focus drive did not move to {event.z_pos:g} µm: {exc}") from exc

    def _set_event_channel(self, event: MDAEvent) -> None:
        """Set ``event``'s channel preset; raise `_Refused` if it cannot be set."""
        ch = event.channel
        if ch is not None and (ch.group, ch.config) != getattr(self.mmcore, "_last_config", None):
            try:
                self.mmcore.setConfig(ch.group, ch.config)
            except Exception as exc:  # (a preset missing from the config, a device error)
                why = f"channel {ch.config!r} (group {ch.group!r}) was not set: {exc}"
                raise _Refused(why) from exc
        self._skip_missing_shutter(event)

    def _skip_missing_shutter(self, event: MDAEvent) -> None:
        """Skip the stock engine's shutter open and close for ``event`` where there is none.

        Called (runner thread) once ``event``'s preset is applied, which may set
        Core-Shutter or clear it, and before the stock set-up opens the shutter
        for `keep_shutter_open`. With autoshutter on, the stock engine closes the
        core's shutter after each snap: on a rig without one (an LED or
        brightfield rig) ``setShutterOpen`` raised "No device with label" and the
        run died at its first frame. `teardown_event` restores it.
        """
        core = self.mmcore
        if not self._autoshutter_was_set or core.getShutterDevice():
            return
        self._autoshutter_was_set, self._shutter_skipped = False, True
        if not self._warned_no_shutter:
            self._warned_no_shutter = True
            ch = event.channel
            logger.warning(
                "the core has no shutter (Core-Shutter is empty%s): the light is not blanked "
                "between frames, and the light-dose budget counts exposures only; set "
                "Core-Shutter in the cfg or the channel presets to blank it",
                f" for channel {ch.config!r}" if ch is not None else "",
            )  # fmt: skip

    def teardown_event(self, event: MDAEvent) -> None:
        """Close a Python shutter opened by `setup_event`, then the stock teardown.

        The stock shutter handling skipped for an event without a shutter
        (`_skip_missing_shutter`) is restored for the next.
        """
        core = self.mmcore
        shutter = core.getShutterDevice()
        is_py = getattr(core, "isPyDevice", None)
        if (
            shutter
            and not event.keep_shutter_open
            and core.getAutoShutter()
            and is_py is not None
            and is_py(shutter)
        ):
            core.setShutterOpen(False)
        super().teardown_event(event)
        if self._shutter_skipped:  # (for the next event's preset to decide again)
            self._autoshutter_was_set, self._shutter_skipped = True, False

    # ------------------------------------------------------------ bursts

    def burst_handed(self, event: MDAEvent) -> None:
        """Note a hardware-timed burst handed to the runner, for `end_burst`.

        Called by the event feed (runner thread) as it hands the burst over: a
        stop may come while the runner waits for its time or sets up the
        hardware. A copy of it (another ``reset_event_timer``) is the same burst.
        """
        subs = tuple(getattr(event, "events", ()))
        with self._burst_lock:
            self._burst = _Burst(subs, len(subs))

    def end_burst(self, stops: Callable[[MDAEvent], bool]) -> list[MDAEvent]:
        """End the handed burst early where a stop drops its events; return those cut off.

        Called on the decision-server thread. The burst ends before its first
        event of those on to its end that ``stops`` all drops, but never before
        the frame in hand (a burst not yet begun is not begun at all): one that
        interleaves a stopped position with others images the stopped one's
        frames until the others' last. Returns the events it will not acquire,
        in order (none: no burst is running, or its last event is not dropped).
        """
        with self._burst_lock:
            burst = self._burst
            if burst is None:
                return []
            subs = burst.events
            end = burst.end
            while end > burst.given and stops(subs[end - 1]):
                end -= 1
            cut_off, burst.end = list(subs[end : burst.end]), end
            return cut_off

    def cut_off_events(self) -> list[MDAEvent]:
        """Return, and forget, the events of bursts the run ended before they were acquired.

        Those a cancel (a stop of the run) or an error (Ctrl+C) in the engine
        cut off, and those of a burst handed over that the run ended before it
        began, or in it, the runner leaving it unfinished (Ctrl+C in a frame's
        signal): its frames not yet given to the runner. Called once the run
        has ended (any thread); the feed counts them as never taken (``left``).
        """
        with self._burst_lock:
            out, self._cut_off = self._cut_off, []
            if self._burst is not None:  # (the runner stopped before it ran it, or in it)
                out += self._burst.events[self._burst.given : self._burst.end]
                self._burst = None
            return out

    def _burst_of(self, event: MDAEvent) -> _Burst | None:
        """Return the handed burst if ``event`` is it (None: another event). Lock held."""
        burst = self._burst
        if burst is None or getattr(event, "events", None) is not burst.events:
            return None
        return burst

    def _give(self, event: MDAEvent, k: int) -> bool:
        """Whether frame ``k`` of ``event`` is given to the runner: False once a stop ended it."""
        with self._burst_lock:
            if (burst := self._burst_of(event)) is None:
                return True
            if k >= burst.end:
                return False
            burst.given = k + 1  # (what `end_burst` keeps)
            return True

    def _handed(self, event: MDAEvent) -> _Burst | None:
        """Return the handed burst if ``event`` is it (None: another event). Runner thread."""
        with self._burst_lock:
            return self._burst_of(event)

    def _broken_off(self, subs: tuple[MDAEvent, ...], given: int, burst: _Burst | None) -> None:
        """Keep for `cut_off_events` the events an error ended before their frames came.

        ``subs`` are the event's (a burst's events), ``given`` how many frames
        it gave the runner, ``burst`` the handed burst it is (None: not one):
        its events on to where a stop ended it, unless `cut_off_events` took
        them already (the run ended while the runner was in it). Runner thread.
        """
        with self._burst_lock:
            if burst is None:
                self._cut_off.extend(subs[given:])
            elif self._burst is burst:
                self._cut_off.extend(burst.events[given : burst.end])
                self._burst = None

    def _burst_done(self, event: MDAEvent, n: int) -> int:
        """Forget the handed burst once it has run or failed; return how many events it kept.

        Those before a stop of their position ended it; ``n`` (its events) if
        ``event`` is not the handed burst. Runner thread.
        """
        with self._burst_lock:
            if (burst := self._burst_of(event)) is None:
                return n
            self._burst = None
            return burst.end

    # ------------------------------------------------------------ frames

    def exec_event(self, event: MDAEvent) -> Iterable[PImagePayload | None]:
        """Acquire ``event``; images it should have given and did not are counted as failed.

        The runner's signals (a stop or cancel) are passed on to the stock
        engine, which ends a hardware-timed burst on them (it went on to its
        last frame); frames a stop cuts off are not counted as failed, but kept
        for `cut_off_events`. A stop of a burst's position (`end_burst`) ends it
        the same way, after the frame in hand. A burst whose camera stalls
        (pymmcore-plus raises `TimeoutError` at its deadline, which ended the
        run) is stopped, and its missing frames counted, as one that ends early.
        A failed autofocus is counted in `autofocus_failed`. One an error ends
        (Ctrl+C while it waits for the camera, or the runner closing it) keeps
        the events of the frames it had not given for `cut_off_events`, then
        re-raises.
        """
        burst = self._handed(event)
        inner = iter(super().exec_event(event))
        n = given = 0  # (images; images and the stock engine's None for each missing)
        subs = tuple(getattr(event, "events", ()) or (event,))
        kept = len(subs)  # (those after, a stop of their position dropped, and counted)
        cancelled = False
        stalled: TimeoutError | None = None
        if isinstance(inner, types.GeneratorType):
            try:
                if not self._give(event, 0):  # (a stop ended the burst before it began)
                    inner.close()
                    return
                payload = next(inner)
                while self._give(event, given):
                    n += payload is not None
                    given += 1
                    self._stamp_frame_time(payload)
                    signal = yield payload
                    cancelled = cancelled or signal == "cancel"
                    payload = inner.send(signal)
                # a stop ended the burst: the frame in hand is dropped, the camera stopped
                # as on a cancel (the stock engine stops the sequence and returns)
                try:
                    inner.send("cancel")
                except StopIteration:
                    pass
                else:  # (past its camera loop, giving None for missing frames)
                    inner.close()
            except StopIteration:
                pass
            except TimeoutError as exc:
                stalled = exc
                core = self.mmcore
                if core.isSequenceRunning():
                    core.stopSequenceAcquisition()
            except BaseException:  # (Ctrl+C, GeneratorExit: those frames never came)
                self._broken_off(subs, given, burst)
                raise
            finally:
                kept = self._burst_done(event, kept)
        else:  # pragma: no cover (the stock engine's is a generator)
            for payload in inner:
                n += payload is not None
                given += 1
                self._stamp_frame_time(payload)
                yield payload
        af_error, self._af_error = self._af_error, None
        if af_error is not None:
            self._autofocus_failed(event, af_error)
        if cancelled:  # (the burst's events the cancel cut off were never acquired)
            self._cut_off.extend(subs[given:kept])
            return
        wants_image = isinstance(event.action, AcquireImage)
        subs = subs[:kept]
        if wants_image and n < len(subs):
            why = "no image came" if stalled is None else f"no image came in time: {stalled}"
            where = index_text(subs[n].index)  # (a burst's own index is empty)
            if not self.failed_events:
                self.first_failure = f"event {where}: {why}"
            logger.error(
                "%d of %d images missing, the first for event %s: %s", len(subs) - n,
                len(subs), where, why,
            )  # fmt: skip
            self.failed_events.extend(subs[n:])
            for _ in range(len(subs) - given):  # (as the stock engine tells the runner's sinks)
                yield None
        elif stalled is not None:  # (not an image event's: nothing is missing, it is no stall)
            raise stalled

    def _execute_autofocus(self, action: HardwareAutofocus) -> float:
        """Run the stock autofocus (runner thread); keep why it failed for `exec_event`.

        Raises `RuntimeError` if it failed: the stock engine catches that, logs a
        warning and goes on. A device still busy at the core's timeout fails it
        too (`UniMMCore` raises `TimeoutError` there, which ended the run).
        """
        try:
            return super()._execute_autofocus(action)
        except RuntimeError as exc:
            self._af_error = str(exc)
            raise
        except TimeoutError as exc:
            self._af_error = str(exc)
            raise RuntimeError(str(exc)) from exc

    def _autofocus_failed(self, event: MDAEvent, why: str) -> None:
        """Count a failed autofocus; its frames are taken at the focus the rig had."""
        where = f"position {event.pos_name or event.index.get('p', 0)}"
        if "t" in event.index:
            where += f", time index {event.index['t']}"
        if not self.autofocus_failed:
            self.first_autofocus_failure = f"{where} (event {index_text(event.index)}): {why}"
        self.autofocus_failed.append(event)
        logger.warning(
            "autofocus failed at %s (event %s): %s; imaged at the focus the rig had",
            where, index_text(event.index), why,
        )  # fmt: skip

    def _stamp_frame_time(self, payload: PImagePayload | None) -> None:
        """Give a burst frame's metadata the sample time its camera stamped (simulated scope).

        Frame k of a hardware-timed burst shows the sample k frame periods after
        the burst began; `get_frame_metadata` only knows the sub-event's planned time.
        """
        if payload is None or self.sim is None:
            return
        meta: Any = payload[2]
        cam_meta = meta.get("camera_metadata") or {}
        if (stamped := cam_meta.get(META_SAMPLE_TIME)) is not None:
            meta[META_SAMPLE_TIME] = float(stamped)

    def get_frame_metadata(
        self,
        event: MDAEvent,
        prop_values: Any = None,
        runner_time_ms: float = 0.0,
        include_position: bool = True,
        camera_device: str | None = None,
    ) -> FrameMetaV1:
        """Stock frame metadata plus livescope's sample time (simulated microscope)."""
        meta = super().get_frame_metadata(
            event, prop_values, runner_time_ms, include_position, camera_device
        )
        if "position" not in meta and self._burst_position is not None:
            # what the frame's own event sets is its own (a stage sequence moves per frame)
            position: Position = {**self._burst_position}
            if event.x_pos is not None:
                position["x"] = event.x_pos
            if event.y_pos is not None:
                position["y"] = event.y_pos
            if event.z_pos is not None:
                position["z"] = event.z_pos
            meta["position"] = position
        if self.sim is not None:
            planned = float(event.metadata.get(SAMPLE_TIME_KEY, self.sim.time_s))
            meta[META_SAMPLE_TIME] = planned  # type: ignore[literal-required]
        # (where the frame sits on the sensor: the stage position is the sensor's centre, a
        # frame of a ROI off it is not centred there, and close-ups aimed by it missed)
        meta[META_ROI_OFFSET] = self._roi_offset_px()  # type: ignore[literal-required]
        if not meta.get("pixel_size_um"):  # no calibration in Micro-Manager: the profile's,
            # at binning 1 (a binned frame's pixel spans that many of the sensor's)
            meta["pixel_size_um"] = self.profile.objective.pixel_size_um * self._roi_binning
        return meta

    _roi_read: tuple[Any, ...] | None = None
    """The camera, ROI and binning `_roi_offset_px` read last (then set on the instance)."""
    _roi_offset: tuple[float, float] | None = None
    """The `roi_offset_px` they give."""
    _roi_binning: int = 1
    """The camera's binning they give."""

    def _roi_offset_px(self) -> tuple[float, float] | None:
        """Return the camera's `roi_offset_px` now (runner thread, every frame), None: unknown.

        The ROI and binning are read for every frame (about 2 µs on the simulated
        microscope: a ROI can change between any two events, and Micro-Manager
        says so on no signal); the offset (and `_roi_binning`) is worked out, and a
        ROI off the sensor's centre logged, only when they changed.
        """
        core = self.mmcore
        try:
            cam = core.getCameraDevice()
            roi = tuple(int(v) for v in core.getROI())
        except RuntimeError:  # (no camera)
            return None
        try:
            binning_text = str(core.getPropertyFromCache(cam, "Binning"))
        except (RuntimeError, KeyError):  # (not cached until read on UniMMCore: KeyError)
            has = bool(cam) and core.hasProperty(cam, "Binning")
            binning_text = str(core.getProperty(cam, "Binning")) if has else "1"
        read = (cam, roi, binning_text)
        if read == self._roi_read:
            return self._roi_offset
        binning = binning_of(binning_text)
        sensor = self.profile.camera.sensor_shape_px
        offset = roi_offset_px(roi, binning, sensor)
        if offset is None:
            logger.warning(
                "camera ROI %s (x, y, width, height; binning %d) does not fit the profile's "
                "%dx%d px sensor: frames are taken as centred on the stage position; set "
                "camera.sensor_shape_px to this camera's for close-ups aimed in a ROI",
                roi, binning, sensor[0], sensor[1],
            )  # fmt: skip
        elif offset != (0.0, 0.0):
            logger.info(
                "camera ROI %s (x, y, width, height; binning %d) of the profile's %dx%d px "
                "sensor: its frames are centred %+g columns, %+g rows from the stage position",
                roi, binning, sensor[0], sensor[1], offset[0], offset[1],
            )  # fmt: skip
        self._roi_read, self._roi_offset, self._roi_binning = read, offset, binning
        return offset


def exposure_not_reached(actual_ms: float, asked_ms: float) -> str:
    """Say why the camera's exposure is not the one asked for; "" where it is.

    A camera may round an exposure a little (within 10 % or 0.5 ms); one it
    cannot reach fails the event's frames, on every backend.
    """
    if math.isclose(actual_ms, asked_ms, rel_tol=0.1, abs_tol=0.5):
        return ""
    return f"the camera's exposure is {actual_ms:g} ms, not the {asked_ms:g} ms asked for"


def binning_of(text: object) -> int:
    """Return a camera's binning from Micro-Manager's ``Binning`` text ("2" or "2x2"); 1: none."""
    digits = re.match(r"\s*(\d+)", str(text))
    return max(1, int(digits.group(1))) if digits else 1


def roi_offset_px(
    roi: Sequence[int], binning: int, sensor_shape_px: tuple[int, int]
) -> tuple[float, float] | None:
    """Return where a camera ROI's centre is from the sensor's: (columns, rows), frame pixels.

    ``roi`` is Micro-Manager's ``getROI()``: (x, y, width, height) in the
    camera's pixels at its ``binning`` (its frames'); ``sensor_shape_px`` the
    profile's sensor, (height, width) at binning 1. The stage position is the
    sensor's centre: a frame's pixel at row ``r``, column ``c`` is ``c - (width
    - 1) / 2`` plus the first, ``r - (height - 1) / 2`` plus the second, pixels
    from it. (0, 0) for the whole sensor; None for a ROI that does not fit on
    it (the profile describes another camera).
    """
    x, y, w, h = (int(v) for v in roi)
    rows, cols = sensor_shape_px[0] // binning, sensor_shape_px[1] // binning
    if x < 0 or y < 0 or w < 1 or h < 1 or x + w > cols or y + h > rows:
        return None
    return (x + w / 2 - cols / 2, y + h / 2 - rows / 2)


def roi_at_offset(
    offset: Sequence[float], shape: Sequence[int], sensor_shape_px: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """Return the ROI (x, y, width, height) whose `roi_offset_px` is ``offset``: its inverse.

    ``shape`` is the frame's (..., height, width), ``sensor_shape_px`` the
    sensor's (height, width), at binning 1. None where the offset puts the ROI
    between the sensor's pixels (the frame was not taken on this sensor).
    """
    h, w = (int(s) for s in shape[-2:])
    rows, cols = sensor_shape_px
    x, y = float(offset[0]) + (cols - w) / 2, float(offset[1]) + (rows - h) / 2
    if abs(x - round(x)) > 1e-6 or abs(y - round(y)) > 1e-6:
        return None
    return (round(x), round(y), w, h)


def sample_time_s(event: MDAEvent, default: float = 0.0) -> float:
    """Return an event's planned sample time, seconds (`SAMPLE_TIME_KEY`), or ``default``.

    A hardware-timed burst (pymmcore-plus's ``SequencedEvent``) has empty
    metadata of its own: its first sub-event's time is the burst's.
    """
    subs = getattr(event, "events", None) or (event,)
    return float(subs[0].metadata.get(SAMPLE_TIME_KEY, default))


@dataclass(slots=True)
class _Burst:
    """A hardware-timed burst handed to the runner, and how far it goes (`end_burst`)."""

    events: tuple[MDAEvent, ...]
    """Its sub-events (a copy of the burst holds the same tuple)."""
    end: int
    """How many of its events it acquires: all, or those before a stop ended it."""
    given: int = 0
    """How many frames it gave the runner, the one in hand included."""


class _Refused(Exception):
    """The hardware refused what an event asked of it (the event is skipped, counted failed)."""


def index_text(index: Mapping[Any, int]) -> str:
    """Return an event's index as users write it: ``t=1, p=0, c=1`` (not useq's Axis reprs)."""
    return ", ".join(f"{getattr(k, 'value', k)}={v}" for k, v in index.items())
