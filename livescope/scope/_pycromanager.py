"""pycromanager backend: the agent drives a pycromanager ``Acquisition``.

Two ways to reach a microscope, one class (`PycromanagerAgent`):

* ``backend="java"``: a running Micro-Manager application, over pycromanager's
  ZMQ bridge. In Micro-Manager, enable Tools → Options → "Run server on port
  4827" (`PycromanagerAgent`'s ``port``); Java's acquisition engine then writes
  an NDTiff dataset into the run folder on this PC, and livescope reads each
  frame from it; Micro-Manager opens no viewer window for it (closing one ended
  the run: `livescope view` shows the frames). Not tested against a real
  Micro-Manager (none on the test machines): the tests stand pycromanager's
  Python engine in for Java's.
* ``backend="python"``: pycromanager's Python acquisition engine on a
  pymmcore-plus core in this process (the simulated microscope in the tests);
  `adapt_core` makes the core look like the one pycromanager expects, for the
  length of the run.

How a run goes (`PycromanagerAgent.run`, on the caller's thread):

* a feeder thread takes the plan's events from the agent's `EventFeed` *just in
  time* (``lead_s`` before each is due; when due until the first image, which
  starts pycromanager's clock), converts each (`to_pycromanager_event`)
  and hands it to ``acq.acquire``: events added by decisions join the same feed,
  so they reach the acquisition's event queue in time order. At most
  ``queue_ahead`` events wait in pycromanager's queue (events all due at once,
  an interval-0 plan, would all be queued at the start, and a close-up asked
  for during the run would wait for the end of the plan). Each event is
  handed over on its own, so pycromanager never merges events into hardware
  sequences (bursts run as separate snaps). A `StopRun` decision stops the
  feeder, and the events already handed over but not begun are skipped at their
  pre-hardware hook (the event in progress is finished);
* frames come from pycromanager's fast path, ``image_saved_fn(axes, dataset)``:
  pixels and metadata are read from the NDTiff file on disk (never over the
  bridge, never through ``image_process_fn``), joined with a side table
  axes → useq event (which holds ``added_by`` and the sample time) and handed to
  `FrameFanout`, stamped at its post-camera hook (after the snap on the Python
  backend; once the camera was triggered, on the Java one), not when it was
  saved: its latency (``t_camera_ns``) and age start at the camera;
* **where frames are recorded**: as in every livescope run, in the run folder's
  ``data.ome.zarr`` and ``frames.jsonl`` (the agent's recorder, fed by
  `FrameFanout`), so workers, replay and the report read a pycromanager run like
  any other. pycromanager's own NDTiff dataset (``<run>/pycromanager_1/``) stays
  beside it, named in the summary (``ndtiff``): every frame is on disk twice;
* the caller waits with a watchdog: if no image arrives for ``watchdog_s`` while
  events are outstanding, the acquisition is aborted and `LivescopeError` raised.
  Afterwards, images saved are counted against events submitted: a shortfall
  raises `LivescopeError` (pycromanager reports some failures only on stderr).

Defects of pycromanager 1.0.2 and ndstorage 0.1.18 met here, and what is done
about each (docs/design/replay.md, section 3; tests/scope/test_pycromanager.py):

* an event carrying ``tags`` kills the Python backend's submit thread and the
  acquisition hangs: converted events never carry ``tags`` (livescope's data
  stays in the side table), ``tags`` returned by a user hook are dropped, and
  the watchdog ends any other hang;
* a hook taking ``(event, event_queue)`` ends the acquisition with 0 images and
  no exception: hooks must take one argument (checked before anything moves);
* a hook returning ``None`` cancels its event (an event-generation hook, the
  rest of the batch): livescope's hook wrappers return an event but for one
  they skip on purpose (withdrawn by a stop, or refused below), and no
  event-generation hook is used;
* a core that refuses an event's stage move, channel or snap: the Python engine
  prints the traceback and goes on without the event (the core's error only in
  its log): an event not at the camera when a later one begins is counted failed
  at once, with the error the core raised (`adapt_core`'s ``on_error``);
* an aborted acquisition (a hook raised) ends only once its event queue has:
  the feeder stops at pycromanager's "events finished" notification, and an end
  not asked for fails the run;
* an event giving x or y alone is not moved at all: the other axis is filled in
  from the stage just before the move;
* the engine is a process-wide singleton bound to the first core it saw: one
  pycromanager acquisition per process at a time (a module lock), and the
  engine is pointed at the run's core before it starts;
* a core left in ``mmpycorex``'s core list can abort interpreter exit: the
  registration is undone when the run ends (and at exit, should a run not end);
* ``UniMMCore``'s autoshutter does not open a Python shutter: it is opened after
  the hardware is set and closed after the snap;
* a channel preset holding the camera's exposure overrides the event's (the
  exposure is set before the preset, and after it only when it differs from the
  previous event's): on the Python backend it is set again once the hardware is;
* a frame is tagged with the exposure asked for, whatever the camera set: on
  the Python backend the exposure is read back and stamped, and one the camera
  does not reach fails the event's frame (the mda backend's rule); no ROI is
  tagged: the Python backend reads the camera's ROI as the mda backend does
  (``roi_offset_px``), the Java one takes it from Micro-Manager's ROI tags;
* a camera that gives no image is asked again at once, for ever (its error
  dropped): each failed read waits 1 ms before it is asked again, and once its
  reads have failed for 1 s or twice the exposure, whichever is longer, the
  acquisition is aborted with the camera's error (an image a few ms late is
  taken);
* an event giving x/y on a core without an XY stage is refused (a bare
  ``Exception``, as pycromanager's other errors, which are named in a
  `LivescopeError`): a plan imaging one place there is sent without x/y;
* ndstorage's readers are buffered, so a frame read in ``image_saved_fn`` can
  come back as the zeros of an earlier read-ahead: `read_saved_frame` reads it
  unbuffered; ndstorage's file writer leaves a reader of its file open: it is
  closed when the writer is done (`close_writer_readers`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import useq
from useq import AcquireImage

from livescope.schema import (
    Decision,
    HardwareProfile,
    LivescopeError,
    StopRun,
    clock_ns,
    plan_events,
    start_daemon,
)

from ._agent import ScopeAgent
from ._engine import (
    META_ROI_OFFSET,
    SAMPLE_TIME_KEY,
    binning_of,
    exposure_not_reached,
    index_text,
    roi_offset_px,
    sample_time_s,
)
from ._fanout import FrameFanout, Taken, _CtrlCHeld
from ._pycromanager_core import (
    AxesKey,
    Hook,
    RemoteCore,
    adapt_core,
    axes_key,
    check_hook,
    close_writer_readers,
    read_saved_frame,
    require_pycromanager,
    to_pycromanager_event,
)

__all__ = ["DEFAULT_PORT", "NDTIFF_NAME", "PycromanagerAgent"]

logger = logging.getLogger("livescope")


def _quiet_bridge_threads(port: int) -> Callable[[], None]:
    """Log, not print, what the socket threads of pycromanager's bridge on ``port`` raise.

    A bridge that finds no Micro-Manager ends its socket thread with tracebacks
    of its own (a timeout, then its own failing clean-up) after `Core` (or the
    acquisition) has already raised; livescope's message says what is wrong.
    Other threads' exceptions go to the hook that was there. Returns a function
    that puts that hook back (called once the bridge is up; after a failure the
    filter stays, for the dying thread).
    """
    before = threading.excepthook
    prefix = f"BridgeSocketThread_port{port}"

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.thread is not None and args.thread.name.startswith(prefix):
            logger.debug("pycromanager bridge thread %s: %r", args.thread.name, args.exc_value)
            return
        before(args)

    threading.excepthook = hook

    def restore() -> None:
        if threading.excepthook is hook:
            threading.excepthook = before

    return restore


NDTIFF_NAME = "pycromanager"
"""Name of pycromanager's NDTiff dataset in the run folder (``pycromanager_1/``)."""

DEFAULT_PORT = 4827
"""Micro-Manager's ZMQ server port (Tools → Options → "Run server on port 4827")."""

_RUN_LOCK = threading.Lock()  # one pycromanager acquisition per process (engine singleton)

_IMAGE_PATIENCE_S = 1.0
"""How long getImage's failures in a row may go on before the camera is taken for gone.

At least: twice the exposure where longer (`_image_patience_s`). pycromanager's
Python backend reads the image once ``snapImage`` has returned (the exposure
over): an image late by its read-out and transfer (ms) must be taken, one not
there after a second is not coming; a camera that returns from ``snapImage``
before its exposure ends gets as long again. Far below the watchdog (30 s by
default), which would report a stall and lose the camera's error.
"""


def _image_patience_s(exposure_ms: float | None) -> float:
    """Return how long (s) a camera's image may fail to come before the run is aborted."""
    if exposure_ms is None or not math.isfinite(exposure_ms):
        return _IMAGE_PATIENCE_S
    return max(_IMAGE_PATIENCE_S, 2.0 * exposure_ms / 1000.0)


# ----------------------------------------------------------------- the agent


class PycromanagerAgent(ScopeAgent):
    """A `ScopeAgent` whose events are acquired by a pycromanager ``Acquisition``.

    Parameters
    ----------
    core
        ``backend="python"``: the pymmcore-plus core to acquire with (e.g. the
        simulated microscope's). ``backend="java"``: the bridge's core
        (``pycromanager.Core(port=...)``), or None to connect on ``port``.
    profile, sequence, run_dir
        As for `ScopeAgent`.
    backend
        ``"python"`` (pycromanager's Python engine on ``core``) or ``"java"`` (a
        running Micro-Manager application).
    port
        Micro-Manager's ZMQ server port (Java backend).
    lead_s
        How long (wall-clock seconds) before it is due each event is handed to
        pycromanager, which waits out the rest. Until the first image (when
        pycromanager's clock starts) events are handed over when due, not
        before: pycromanager would acquire them on arrival, early.
    watchdog_s
        Abort the acquisition when no image has arrived for this long (wall-clock
        seconds) while events are outstanding.
    queue_ahead
        How many events handed to pycromanager may wait for their frame before
        the feeder takes the next from the queue (>= 1).
    pre_hardware_hook_fn, post_hardware_hook_fn, post_camera_hook_fn
        Optional pycromanager hooks taking one argument, the event (a dict); they
        run on pycromanager's engine thread. A returned dict replaces the event
        (without ``tags``); anything else keeps it.
    **kwargs
        Passed to `ScopeAgent` (``sim``, ``run_id``, ``bus``, ``endpoints``, ...).

    Raises
    ------
    LivescopeError
        (before anything moves or is written) if a hook cannot be called with one
        argument, ``backend``, ``watchdog_s`` or ``queue_ahead`` is out of range,
        the plan asks for an action other than an image, the Python backend has no
        core, pycromanager (or its mmpycorex or ndstorage) cannot be imported, or
        (Java backend) no Micro-Manager answers on ``port``; or if the plan does
        not fit the profile.

    """

    def __init__(
        self,
        core: Any,
        profile: HardwareProfile,
        sequence: useq.MDASequence,
        run_dir: str | Path,
        *,
        backend: Literal["python", "java"] = "python",
        port: int = DEFAULT_PORT,
        lead_s: float = 0.05,
        watchdog_s: float = 30.0,
        queue_ahead: int = 4,
        pre_hardware_hook_fn: Hook | None = None,
        post_hardware_hook_fn: Hook | None = None,
        post_camera_hook_fn: Hook | None = None,
        **kwargs: Any,
    ) -> None:
        if backend not in ("python", "java"):
            raise LivescopeError(f"unknown pycromanager backend {backend!r}; use python or java")
        for event in plan_events(sequence):  # (expanded once: the agent's check reuses them)
            if not isinstance(event.action, AcquireImage):
                # (it became a snap in the event's channel, and the image event after it
                # was refused as a duplicate of its axes: the run failed)
                raise LivescopeError(
                    f"event {index_text(event.index)} asks for {event.action.type!r}: the "
                    "pycromanager backend acquires images only; run autofocus with "
                    "--backend mda, or in a pycromanager hook"
                )
        hooks = {
            "pre_hardware_hook_fn": pre_hardware_hook_fn,
            "post_hardware_hook_fn": post_hardware_hook_fn,
            "post_camera_hook_fn": post_camera_hook_fn,
        }
        for name, fn in hooks.items():
            check_hook(name, fn)
        if not watchdog_s > 0:
            raise LivescopeError(f"watchdog_s must be > 0 s, got {watchdog_s}")
        if not 0 <= lead_s < math.inf:  # (NaN: the feeder waited for ever, no event out)
            raise LivescopeError(f"lead_s must be a finite number >= 0 s, got {lead_s}")
        if queue_ahead < 1:  # (before the bus and the run folder are opened)
            raise LivescopeError(f"queue_ahead must be >= 1, got {queue_ahead}")
        require_pycromanager(backend)  # (a missing package named before the run folder is made)
        if backend == "java":
            if core is None:
                from pycromanager import Core

                restore = _quiet_bridge_threads(port)
                try:
                    core = Core(port=port)
                except Exception as exc:  # (its bridge raises a bare Exception)
                    # (the failed bridge's socket thread dies with a traceback of its own
                    # after this: logged, not printed, so that this message stands alone)
                    raise LivescopeError(
                        f"no Micro-Manager answered on port {port} ({exc}); start "
                        "Micro-Manager, turn its server on (Tools > Options > Run server on "
                        "port) and give that port with --port"
                    ) from exc
                restore()
            core = RemoteCore(core)
        elif core is None:
            raise LivescopeError("the Python backend needs a pymmcore-plus core")
        super().__init__(core, profile, sequence, run_dir, **kwargs)
        self.backend = backend
        self.port = port
        self.lead_s = float(lead_s)
        self.feed.lead_s = max(self.feed.lead_s, self.lead_s)  # the feeder's lead is its own
        self.watchdog_s = float(watchdog_s)
        self.queue_ahead = int(queue_ahead)
        self._taken = threading.Event()  # a frame came: a place in pycromanager's queue is free
        # held by the feeder while it hands events over, and to stop it before an abort: no
        # event is handed over after the abort (pycromanager would acquire it)
        self._feeding = threading.Lock()
        self._hooks = hooks
        # one pycromanager event per useq event: pycromanager must not merge them
        self.engine.use_hardware_sequencing = False
        self._lock = threading.Lock()
        self._pending: dict[AxesKey, useq.MDAEvent] = {}
        self._by_axes: dict[AxesKey, useq.MDAEvent] = {}
        self.events_submitted = 0
        self.images_saved = 0
        self._last_progress = time.perf_counter()
        self._errors: list[BaseException] = []
        self._halt = threading.Event()
        # a decision stopped the run: events handed over but not begun are withdrawn
        self._stop_asked = threading.Event()
        self._fed_all = False  # the feeder has handed over every event (none is left)
        self._sink_failed = False
        self._acq: Any = None
        self._pm_ended: threading.Event | None = None  # (set by _await when pycromanager ends)
        self._open_shutter = False
        # events handed over whose camera has not run yet, in the order pycromanager runs
        # them; one still here when a later one begins has failed (its error went nowhere)
        self._unsnapped: dict[AxesKey, useq.MDAEvent] = {}
        self._not_acquired: list[useq.MDAEvent] = []
        self._core_error: BaseException | None = None  # the last a core call raised
        self._stage_at: dict[AxesKey, dict[str, float]] = {}
        """Where the stage stood for events that name no position (pycromanager tags none)."""
        self._read_at: dict[AxesKey, dict[str, Any]] = {}
        """Frame metadata read once each event's hardware was set (Python backend): the
        exposure the camera has (pycromanager tags the one asked for), the ROI's offset."""
        self._image_failures = 0  # getImage's failures in a row (pycromanager retries for ever)
        self._image_failing_since: float | None = None  # (`time.monotonic` of the first)
        self._image_exposure_ms: float | None = None  # (the exposure of the image read)
        self._image_gave_up = False  # (the camera taken for gone: the acquisition aborted)
        self._roi_warned = False  # (Java backend: an off-centre ROI it cannot stamp, said once)
        self._first_image_wall: float | None = None
        """When the first snap ended (`time.time`): pycromanager's clock for ``min_start_time``."""
        self._snapped: dict[AxesKey, Taken] = {}
        """When each pending event's snap was taken (``clock_ns()``, the sample's clock): its frame
        reaches livescope only after pycromanager has saved it and it is read back."""
        self.ndtiff_path: Path | None = None

    # ------------------------------------------------------------ pycromanager side

    def _open_acquisition(self) -> Any:
        """Create the pycromanager acquisition (caller's thread); it starts at once."""
        kwargs: dict[str, Any] = {
            "directory": str(self.run_dir),
            "name": NDTIFF_NAME,
            "image_saved_fn": self._on_image_saved,
            "pre_hardware_hook_fn": self._pre_hardware,
            "post_hardware_hook_fn": self._post_hardware,
            "post_camera_hook_fn": self._post_camera,
            "notification_callback_fn": self._on_notification,
        }
        if self.backend == "java":
            import pycromanager

            restore = _quiet_bridge_threads(self.port)
            try:
                # (no Micro-Manager viewer window: closing it, as one closes a window
                # in the way, ended the run; `livescope view` shows the frames)
                acq = pycromanager.JavaBackendAcquisition(
                    port=self.port, show_display=False, **kwargs
                )
            except Exception as exc:  # (its bridge raises a bare Exception)
                # (e.g. Micro-Manager was closed after the agent connected to it)
                raise LivescopeError(
                    f"pycromanager could not open its acquisition in Micro-Manager on port "
                    f"{self.port} ({exc}); check that Micro-Manager is still running with its "
                    "server on (Tools > Options > Run server on port)"
                ) from exc
            restore()
        else:
            from pycromanager.acquisition.python_backend_acquisitions import (
                PythonBackendAcquisition,
            )

            acq = PythonBackendAcquisition(**kwargs)
        dataset = acq.get_dataset()
        if dataset is not None and hasattr(dataset, "put_image"):  # written in this process
            close_writer_readers(dataset)
        return acq

    def _event_of(self, pm_event: dict[str, Any]) -> useq.MDAEvent | None:
        with self._lock:
            return self._by_axes.get(axes_key(pm_event.get("axes") or {}))

    def _call_user(self, name: str, pm_event: dict[str, Any]) -> dict[str, Any]:
        fn = self._hooks[name]
        if fn is None:
            return pm_event
        try:
            out = fn(pm_event)
        except BaseException as exc:
            # pycromanager aborts on a raising hook and only prints the traceback
            self._errors.append(exc)
            raise
        if not isinstance(out, dict):
            return pm_event  # None would cancel the event (a missing frame)
        if "tags" in out:
            logger.warning("%s returned an event with tags; dropped (pycromanager hangs)", name)
            out = {k: v for k, v in out.items() if k != "tags"}
        return out

    def _pre_hardware(self, pm_event: dict[str, Any]) -> dict[str, Any] | None:
        """Before the hardware moves (engine thread): the sample time, then the user's hook.

        Returns None (pycromanager then skips the event, moving nothing) for an
        event a `StopRun` withdrew.
        """
        key = axes_key(pm_event.get("axes") or {})
        self._fail_skipped(key)
        if self._stop_asked.is_set() and self._withdraw(key):
            return None
        event = self._event_of(pm_event)
        if self.sim is not None and event is not None:
            self.sim.set_time(sample_time_s(event))
        if event is not None and (event.x_pos is None) != (event.y_pos is None):
            # pycromanager moves the XY stage only for an event giving both: one giving
            # x or y alone moves that axis, the other stays (as pymmcore-plus's engine does)
            here = self._stage_position()
            if "x" in here:
                x = here["x"] if event.x_pos is None else float(event.x_pos)
                y = here["y"] if event.y_pos is None else float(event.y_pos)
                pm_event = {**pm_event, "x": x, "y": y}
        return self._call_user("pre_hardware_hook_fn", pm_event)

    def _withdraw(self, key: AxesKey) -> bool:
        """Take back an event handed over but not begun when a decision stopped the run.

        The feeder stops at a `StopRun`, but up to ``queue_ahead`` events are
        already in pycromanager's queue, and it has no way to take one back
        short of an abort (which also loses the frame in progress): each is
        skipped at its pre-hardware hook instead, and no longer counts as
        submitted, nor as taken from the feed (as an event the feed never
        handed out: the summary's ``events`` count it as ``left``). Returns
        whether ``key`` was such an event.
        """
        with self._lock:
            event = self._pending.pop(key, None)
            if event is None:
                return False
            self._unsnapped.pop(key, None)
            self._stage_at.pop(key, None)
            self._read_at.pop(key, None)
            self.events_submitted -= 1
        self.feed.untake(event)
        self._taken.set()
        logger.info("event %s withdrawn: the run was stopped", index_text(event.index))
        return True

    def _fail_skipped(self, key: AxesKey | None) -> None:
        """Count the events handed over before ``key`` whose camera never ran as failed.

        ``key`` None: every such event (the acquisition has ended, and no later
        event will begin to reveal the last ones' failure).

        pycromanager 1.0.2's Python engine raises a failure to set an event's
        hardware or take its image (the core refused a stage move, a channel, the
        snap) into a future nobody reads: the traceback goes to stderr, the event
        is dropped and the acquisition goes on. Events run in the order they were
        handed over, so one that has not reached the camera when a later one
        begins has failed: it stops taking a place in the queue (the feeder would
        wait for its frame until the watchdog reported a stall) and is reported
        with the core's error.
        """
        with self._lock:
            if key is not None and key not in self._unsnapped:
                return
            failed: list[useq.MDAEvent] = []
            for k in list(self._unsnapped):
                if k == key:
                    break
                event = self._unsnapped.pop(k)
                if self._pending.pop(k, None) is not None:
                    self._stage_at.pop(k, None)
                    self._read_at.pop(k, None)
                    failed.append(event)
            cause, self._core_error = self._core_error, None
        if not failed:
            return
        why = "see stderr and the core log" if cause is None else f"{type(cause).__name__}: {cause}"
        self._count_failed(
            failed, f"pycromanager could not set its hardware or take its image ({why})", cause
        )

    def _refuse(self, key: AxesKey, why: str) -> None:
        """Count the event at ``key`` failed now (engine thread): its hardware is not as asked.

        It is cancelled at its post-hardware hook, before its snap: pycromanager
        goes on with the next event.
        """
        with self._lock:
            event = self._pending.pop(key, None)
            self._unsnapped.pop(key, None)
            self._stage_at.pop(key, None)
            self._read_at.pop(key, None)
        if event is not None:
            self._count_failed([event], why, None)

    def _count_failed(
        self, failed: list[useq.MDAEvent], why: str, cause: BaseException | None
    ) -> None:
        """Record ``failed`` as not acquired, each with an error saying ``why``."""
        self._taken.set()  # (their places in pycromanager's queue are free)
        for event in failed:
            logger.error("pycromanager did not acquire event %s: %s", index_text(event.index), why)
            err = LivescopeError(f"event {index_text(event.index)} was not acquired: {why}")
            err.__cause__ = cause
            self._errors.append(err)
        self._not_acquired.extend(failed)

    def _apply(self, d: Decision) -> tuple[int, str]:
        """Apply an accepted decision (decision server's thread); see `ScopeAgent`."""
        if isinstance(d, StopRun):  # (before the feed stops: the feeder's end is asked for)
            self._stop_asked.set()
        return super()._apply(d)

    def _on_core_error(self, name: str, exc: BaseException) -> None:
        """Keep what a core call of pycromanager's raised as the likely cause (engine thread).

        pycromanager 1.0.2 calls a failing ``get_tagged_image`` (the camera gave no
        image, or not yet) again at once, for ever, and drops its error (`adapt_core`
        pauses 1 ms after each failure): once its failures in a row have gone on for
        `_image_patience_s` the camera is taken for gone and the acquisition aborted
        with its error, not left to the watchdog's stall. A count of failures would
        not do: a camera whose image is 2 ms late failed 3 times in 14 µs.
        """
        self._core_error = exc
        if name != "get_tagged_image":
            return
        now = time.monotonic()
        self._image_failures += 1
        if self._image_failing_since is None:
            self._image_failing_since = now
        failing_s = now - self._image_failing_since
        exposure = self._image_exposure_ms
        if exposure is None:  # (an event that gives none: the camera's own)
            with contextlib.suppress(Exception):
                exposure = self._image_exposure_ms = float(self.core.getExposure())
        acq = self._acq
        if self._image_gave_up or acq is None or failing_s < _image_patience_s(exposure):
            return
        self._image_gave_up = True
        err = LivescopeError(
            f"the camera gave no image: reading it raised {type(exc).__name__}: {exc} "
            f"({self._image_failures} times in a row over {failing_s:.1f} s, exposure "
            f"{'unknown' if exposure is None else f'{exposure:g} ms'}); acquisition "
            "aborted: check the camera's connection (cable, power) and the core log"
        )
        err.__cause__ = exc
        logger.error("%s", err)
        self._errors.insert(0, err)
        self.feed.stop()
        self._stop_feeding()
        self._abort(acq, err)

    def _python_shutter(self) -> bool:
        """Return True if the core's shutter is a Python device under autoshutter.

        ``UniMMCore``'s autoshutter does not open a Python shutter (frames come
        out dark): livescope opens it around each snap.
        """
        if self.backend != "python":
            return False
        core = self.core
        shutter = core.getShutterDevice()
        is_py = getattr(core, "isPyDevice", None)
        return bool(shutter and core.getAutoShutter() and is_py is not None and is_py(shutter))

    def _post_hardware(self, pm_event: dict[str, Any]) -> dict[str, Any] | None:
        """Hardware set (engine thread): note the stage, set the exposure, open a Python shutter.

        Then the user's hook. Returns None (pycromanager then skips the event, its
        snap included) for an event whose exposure the camera does not reach.

        pycromanager tags a frame with the stage position its event asked for
        only; for an event that leaves an axis out (no position, or one giving
        x and y but no z) the frame gets where the stage stands now (as
        pymmcore-plus's engine does), which the results, the policies' close-ups
        and the simulator's ground truth need. On the Python backend the
        exposure the camera has and where its ROI sits on the sensor are read
        too (pycromanager tags the exposure asked for, and no ROI).
        """
        key = axes_key(pm_event.get("axes") or {})
        event = self._event_of(pm_event)
        if event is not None and None in (event.x_pos, event.y_pos, event.z_pos):
            # (only the axes it leaves out: each read is a call over the Java bridge)
            here = self._stage_position(xy=None in (event.x_pos, event.y_pos),
                                        z=event.z_pos is None)  # fmt: skip
            if here:
                with self._lock:
                    self._stage_at[key] = here
        if self.backend == "python" and event is not None:
            read = self._read_camera(pm_event.get("exposure"))
            if isinstance(read, str):
                self._refuse(key, read)
                return None
            with self._lock:
                self._read_at[key] = read
        if self._open_shutter:
            self.core.setShutterOpen(True)
        return self._call_user("post_hardware_hook_fn", pm_event)

    def _read_camera(self, exposure: float | None) -> dict[str, Any] | str:
        """Set the exposure asked for and read the camera back (Python backend, engine thread).

        Returns the frame's metadata read (its ``exposure_ms``, the ROI's offset),
        or why the event must fail: an exposure the camera does not reach (as on
        the mda backend; its frame was recorded as the exposure asked for).
        """
        core = self.core
        # pycromanager 1.0.2 sets the exposure before the channel preset, and after it only
        # if it differs from the previous event's: a preset holding the camera's exposure
        # overrode the event's (and the frame was tagged with the event's)
        if exposure is not None and core.getExposure() != float(exposure):
            core.setExposure(float(exposure))
        actual = float(core.getExposure())
        if exposure is not None and (why := exposure_not_reached(actual, float(exposure))):
            return why
        # (the mda backend's reading: the camera's ROI and binning, a ROI off the sensor's
        # centre logged when it changes)
        offset = self.engine._roi_offset_px()  # noqa: SLF001 (this agent's own engine)
        return {"exposure_ms": actual, META_ROI_OFFSET: offset}

    def _roi_from_tags(
        self, md: dict[str, Any], shape: tuple[int, ...]
    ) -> tuple[float, float] | None:
        """Return a Java backend frame's `roi_offset_px`, from its tags; None: unknown.

        MMCoreJ tags every image it gives with the camera's ROI, ``"ROI": "x-y-w-h"``
        (``getROI``, at the binning, tagged ``"Binning"``): AcqEngJ's snaps carry
        only that; images of a sequence acquisition also ``ROI-X-start`` and
        ``ROI-Y-start`` (read where ``"ROI"`` cannot be, with the frame's size). A
        frame with neither is taken as centred, and where its size is not the
        sensor's a warning says so, once; so is one whose ROI is off the sensor.
        """
        sensor = self.profile.camera.sensor_shape_px
        binning = binning_of(md.get("Binning", 1))
        h, w = (int(v) for v in shape[-2:])
        tag = re.fullmatch(r"\s*(\d+)-(\d+)-(\d+)-(\d+)\s*", str(md.get("ROI", "")))
        try:
            if tag is not None:
                x, y, w, h = (int(v) for v in tag.groups())
            else:
                x, y = int(md["ROI-X-start"]), int(md["ROI-Y-start"])
        except (KeyError, TypeError, ValueError):
            if (h, w) == (sensor[0] // binning, sensor[1] // binning):
                return (0.0, 0.0)  # (the whole sensor)
            if not self._roi_warned:
                self._roi_warned = True
                logger.warning(
                    "pycromanager's frames (%dx%d px) are not the profile's %dx%d px sensor "
                    "and carry no ROI position: they are taken as centred on the stage "
                    "position (close-ups aimed in a ROI off the sensor's centre miss)",
                    w, h, sensor[1], sensor[0],
                )  # fmt: skip
            return None
        offset = roi_offset_px((x, y, w, h), binning, sensor)
        if offset is None and not self._roi_warned:
            self._roi_warned = True
            logger.warning(
                "pycromanager's frames' camera ROI (%d, %d, %d, %d) (x, y, width, height; "
                "binning %d) does not fit the profile's %dx%d px sensor: they are taken as "
                "centred on the stage position; set camera.sensor_shape_px to this camera's "
                "for close-ups aimed in a ROI",
                x, y, w, h, binning, sensor[1], sensor[0],
            )  # fmt: skip
        return offset

    def _stage_position(self, *, xy: bool = True, z: bool = True) -> dict[str, float]:
        """Return the XY stage's and focus drive's positions now (those asked for; µm)."""
        core = self.core
        here: dict[str, float] = {}
        try:
            if xy and core.getXYStageDevice():
                # (two calls, not getXYPosition: through Micro-Manager's Java bridge that
                # gives a Point2D, not a pair; only events that leave an axis out pay)
                here = {"x": float(core.getXPosition()), "y": float(core.getYPosition())}
            if z and core.getFocusDevice():
                here["z"] = float(core.getPosition())
        except Exception:  # (a device that fails to answer: the frame goes untagged)
            logger.warning("could not read the stage position", exc_info=True)
            return {}
        return here

    def _post_camera(self, pm_event: dict[str, Any]) -> dict[str, Any]:
        """After the snap (engine thread): note when, close a Python shutter, the user's hook.

        The frame is taken now (on the Python backend the snap has ended; on
        the Java one the camera has been triggered): its ``t_camera_ns`` and
        the time the agent ages decisions answering it from
        (``guardrails.max_decision_age_s``) are these, not when pycromanager
        has saved it.
        """
        t_camera = clock_ns()
        key = axes_key(pm_event.get("axes") or {})
        # (its image is read next)
        self._image_failures, self._image_failing_since = 0, None
        exposure = pm_event.get("exposure")
        self._image_exposure_ms = None if exposure is None else float(exposure)
        with self._lock:
            self._unsnapped.pop(key, None)
            if key in self._pending:  # (not the finishing event, which has no frame)
                clock = self._sample_clock
                self._snapped[key] = Taken(t_camera, None if clock is None else clock())
        if self._first_image_wall is None:  # (pycromanager's clock starts right after)
            self._first_image_wall = time.time()
        if self._open_shutter:
            self.core.setShutterOpen(False)
        return self._call_user("post_camera_hook_fn", pm_event)

    def _on_notification(self, notification: Any) -> None:
        """``notification_callback_fn`` (pycromanager's dispatcher thread): stop feeding at its end.

        pycromanager ends its events by itself when it aborts (a hook or its saving
        raised), but its ``await_completion`` returns only once the event queue has
        ended (``mark_finished``): the feeder, waiting for room in the queue or for
        its next event, must stop now, or the run hangs until the watchdog fires
        and reports a stall in place of the failure. Never raises.
        """
        try:
            if notification.is_acquisition_finished_notification():
                if not (self._fed_all or self._halt.is_set() or self._stop_asked.is_set()):
                    # (not asked for: a hook or its saving failed, or on the Java backend
                    # the acquisition was ended in Micro-Manager; the events not handed
                    # over are not acquired)
                    self._errors.append(
                        LivescopeError(
                            "pycromanager ended the acquisition before the plan was done "
                            "(see stderr)"
                        )
                    )
                self._halt.set()
                self.feed.stop()
        except Exception:
            logger.exception("pycromanager notification %r", notification)

    def _on_image_saved(self, axes: dict[str, Any], dataset: Any) -> None:
        """``image_saved_fn`` (pycromanager's storage thread): read the frame, fan it out.

        Never raises: an exception would end pycromanager's storage thread, and
        with it the delivery of every later frame.
        """
        try:
            key = axes_key(axes)
            with self._lock:
                event = self._pending.pop(key, None)
                taken = self._snapped.pop(key, None)
            self._taken.set()
            if event is None:
                raise LivescopeError(f"pycromanager saved an image no event asked for: {axes}")
            if self.ndtiff_path is None:
                self.ndtiff_path = Path(str(dataset.path))
            pixels, md = read_saved_frame(dataset, axes)
            fanout = self._fanout
            if fanout is None:  # pragma: no cover (set before the acquisition starts)
                raise LivescopeError("image saved before the run started")
            meta = self._frame_meta(md, event, key, pixels.shape)
            fanout.on_frame(pixels, event, meta, taken=taken)
            with self._lock:
                self.images_saved += 1
                self._last_progress = time.perf_counter()
        except Exception as exc:  # counted, and raised by run()
            logger.exception("pycromanager image %s could not be recorded", axes)
            self._errors.append(exc)

    def _frame_meta(
        self, md: dict[str, Any], event: useq.MDAEvent, key: AxesKey, shape: tuple[int, ...]
    ) -> dict[str, Any]:
        """Translate pycromanager's image tags to the metadata `FrameFanout` reads."""
        meta: dict[str, Any] = {}
        pos = {}
        for axis, tag in (("x", "XPosition_um_Intended"), ("y", "YPosition_um_Intended"),
                          ("z", "ZPosition_um_Intended")):  # fmt: skip
            if md.get(tag) is not None:
                pos[axis] = float(md[tag])
        with self._lock:
            here = self._stage_at.pop(key, None)
            read = self._read_at.pop(key, None)
        for axis, value in (here or {}).items():
            pos.setdefault(axis, value)
        # (no XY stage: not sent to pycromanager, the sample sits at the plan's one x/y)
        for axis, planned in (("x", event.x_pos), ("y", event.y_pos)):
            if planned is not None:
                pos.setdefault(axis, float(planned))
        if pos:
            meta["position"] = pos
        if md.get("Exposure") is not None:
            meta["exposure_ms"] = float(md["Exposure"])
        if read is not None:  # (Python backend: the exposure the camera had, its ROI)
            meta.update(read)
        elif self.backend == "java":
            meta[META_ROI_OFFSET] = self._roi_from_tags(md, shape)
        # no calibration in Micro-Manager (0 or absent): the profile's
        px = md.get("PixelSize_um") or self.profile.objective.pixel_size_um
        meta["pixel_size_um"] = float(px)
        if md.get("ElapsedTime-ms") is not None:
            meta["runner_time_ms"] = float(md["ElapsedTime-ms"])
        if self.sim is not None:
            meta["livescope.sample_time_s"] = float(event.metadata.get(SAMPLE_TIME_KEY, 0.0))
        return meta

    # ------------------------------------------------------------ feeding

    def _submit(self, acq: Any, event: useq.MDAEvent, t0_wall: float) -> None:
        pm = to_pycromanager_event(
            event,
            min_start_time_s=self._acquisition_time(event, t0_wall),
            # (no XY stage: the plan images one place, where the sample sits; pycromanager
            # refuses every event giving x or y then)
            xy_stage=self._rig_reach.xy,
        )
        key = axes_key(pm["axes"])
        with self._lock:
            if key in self._by_axes:
                raise LivescopeError(
                    f"event {dict(event.index)}: pycromanager axes {pm['axes']} are already used"
                )
            self._by_axes[key] = event
            self._pending[key] = event
            self._unsnapped[key] = event
            self.events_submitted += 1
            self._last_progress = time.perf_counter()
        acq.acquire(pm)

    def _acquisition_time(self, event: useq.MDAEvent, t0_wall: float) -> float:
        """Return when the event is due on pycromanager's clock (s; 0: at once).

        The plan's times count from the feed's start (``t0_wall``, `time.time`),
        as pymmcore-plus's do; pycromanager counts ``min_start_time`` from its
        first image, which a slow first set-up (a long stage move) delays: every
        later event would be that much late. Before the first image its clock
        has not started, and an event runs when it is handed over: the feeder
        hands it over only once it is due (`_feed_loop`).
        """
        start = self._first_image_wall
        if start is None or not event.min_start_time:
            return 0.0
        return max(0.0, t0_wall + float(event.min_start_time) - start)

    def _feed_loop(self, acq: Any) -> None:
        """Feeder thread: hand each event to pycromanager ``lead_s`` before it is due."""
        try:
            t0, t0_wall = time.perf_counter(), time.time()
            events = iter(self.feed)
            while True:
                self._wait_for_room()  # (before the next is taken: a decision's events go first)
                event = next(events, None)
                if event is None:
                    self._fed_all = True
                    break
                if event.reset_event_timer:
                    t0, t0_wall = time.perf_counter(), time.time()
                due = t0 + float(event.min_start_time or 0.0)
                while not (self._halt.is_set() or self.feed.stopped):
                    # (until the first image pycromanager's clock has not started, and it
                    # would acquire an event handed over early at once: no lead before it)
                    lead = 0.0 if self._first_image_wall is None else self.lead_s
                    wait = due - lead - time.perf_counter()
                    if wait <= 0:
                        break
                    self._halt.wait(min(wait, 0.05))
                subs = getattr(event, "events", None) or (event,)
                with self._feeding:
                    if self._halt.is_set() or self.feed.stopped:
                        for sub in subs:  # (taken from the feed, never handed over)
                            self.feed.untake(sub)
                        break
                    for sub in subs:
                        self._submit(acq, sub, t0_wall)
        except Exception as exc:  # raised by run() after teardown
            logger.exception("feeding pycromanager failed")
            self._errors.append(exc)
            self._abort(acq, exc)
        finally:
            with contextlib.suppress(Exception):
                acq.mark_finished()

    def _stop_feeding(self) -> None:
        """Stop the feeder; once this returns, no event is handed to pycromanager."""
        with self._feeding:
            self._halt.set()

    def _wait_for_room(self) -> None:
        """Wait while ``queue_ahead`` events handed to pycromanager wait for their frames."""
        while len(self._pending) >= self.queue_ahead and not (
            self._halt.is_set() or self.feed.stopped
        ):
            self._taken.clear()
            if len(self._pending) < self.queue_ahead:
                break
            self._taken.wait(0.05)

    @staticmethod
    def _abort(acq: Any, exc: BaseException) -> None:
        try:
            acq.abort(exc)
        except Exception as abort_exc:  # (e.g. one that has just ended by itself)
            # one line: the run's error (``exc``) is what the user must read
            logger.warning("aborting the pycromanager acquisition failed (%r)", abort_exc)
            logger.debug("abort failure", exc_info=True)

    def _await(self, acq: Any, feeder: threading.Thread) -> None:
        """Wait for the acquisition to end, aborting it when it stalls (caller's thread).

        The end is an event (`start_daemon`), not ``Thread.join``: a Ctrl+C can make
        a join take the waiting thread for ended while pycromanager still runs.
        """
        done: list[BaseException | None] = []

        def wait() -> None:
            try:
                acq.await_completion()
                done.append(None)
            except BaseException as exc:  # noqa: BLE001 (handed to the caller's thread)
                done.append(exc)

        ended = self._pm_ended = start_daemon(wait, "livescope-pycromanager-await")
        try:
            stalled = self._watch(acq, ended)
        except KeyboardInterrupt:  # the events pycromanager already holds must not go on
            self.feed.stop()
            self._stop_feeding()
            self._abort(acq, LivescopeError("interrupted (Ctrl-C)"))
            # pycromanager must finish its abort before the core is taken from its
            # engine (adapt_core's exit): an event in flight would then fail, the end
            # of the acquisition never reach its saving thread, and its threads (not
            # daemons) keep the process from exiting
            limit = max(10.0, self.watchdog_s)
            logger.warning(
                "Ctrl+C: pycromanager's acquisition is stopping (the event in progress "
                "ends first; waiting up to %.0f s, Ctrl+C again stops waiting)",
                limit,
            )
            try:
                with _CtrlCHeld(give_up_after=1):
                    deadline = time.monotonic() + limit
                    while not ended.wait(0.1) and time.monotonic() < deadline:
                        pass
            except KeyboardInterrupt:
                pass  # (asked again: stop waiting)
            if not ended.is_set():
                logger.warning(
                    "pycromanager has not ended its acquisition: it ends in the background, "
                    "and the core stays adapted for its engine until then"
                )
            feeder.join(limit)
            raise
        self._halt.set()  # ended (or aborted): nothing more is fed
        feeder.join(max(10.0, self.watchdog_s))
        if done and done[0] is not None and not stalled:
            exc = done[0]
            if isinstance(exc, Exception) and not isinstance(exc, LivescopeError):
                # (pycromanager raises bare Exceptions, e.g. for an event its core cannot
                # do: named as its own, counted with the events it did not acquire; first,
                # as the cause: the feeder's next submit may have failed after it, "this
                # acquisition is already finished", and the run said only that)
                err = LivescopeError(f"pycromanager raised {type(exc).__name__}: {exc}")
                err.__cause__ = exc
                self._errors.insert(0, err)
                return
            raise exc

    def _watch(self, acq: Any, ended: threading.Event) -> bool:
        """Wait for pycromanager's end (``ended``); abort the acquisition if it stalls.

        Returns whether it stalled (the error is the first of ``_errors``).
        """
        stalled = False
        while not ended.wait(0.05):
            with self._lock:
                outstanding = len(self._pending)
                idle = time.perf_counter() - self._last_progress
            if not stalled and outstanding and idle > self.watchdog_s:
                stalled = True
                cause = self._core_error  # (the last event's failure, if nothing came after)
                why = "" if cause is None else f" (the core raised {type(cause).__name__}: {cause})"
                err = LivescopeError(
                    f"pycromanager stalled: no image for {idle:.1f} s with {outstanding} "
                    f"event(s) outstanding (watchdog {self.watchdog_s:g} s); acquisition "
                    f"aborted{why}; check the camera's connection and the core log"
                )
                err.__cause__ = cause
                self._errors.insert(0, err)
                self.feed.stop()
                self._stop_feeding()
                self._abort(acq, err)
                if not ended.wait(max(10.0, self.watchdog_s)):
                    raise err
        return stalled

    # ------------------------------------------------------------ running

    def _run(self, progress: Any) -> dict[str, Any]:
        if not _RUN_LOCK.acquire(blocking=False):
            for sink in self.sinks:
                sink.close()
            self._close()
            raise LivescopeError(
                "another pycromanager acquisition is running in this process (its engine "
                "is a process-wide singleton); run one at a time (this agent is closed)"
            )
        try:
            return self._run_locked(progress)
        finally:
            _RUN_LOCK.release()

    def _run_locked(self, progress: Any) -> dict[str, Any]:
        fanout = FrameFanout(
            self.sinks, publisher=self.publisher, on_cancel=self._cancel, progress=progress,
            clock=self._sample_clock, max_held_bytes=self.recording_memory_bytes,
        )  # fmt: skip
        self._fanout = fanout
        t0 = time.perf_counter()
        error: BaseException | None = None
        try:
            with contextlib.ExitStack() as stack:
                if self.backend == "python":
                    stack.enter_context(
                        adapt_core(self.core, in_use=self._pm_running, on_error=self._on_core_error)
                    )
                self._open_shutter = self._python_shutter()
                if self._open_shutter:  # also after an abort between open and close
                    stack.callback(self.core.setShutterOpen, False)
                acq = self._acq = self._open_acquisition()
                feeder = threading.Thread(
                    target=self._feed_loop, args=(acq,), name="livescope-pycromanager-feeder",
                    daemon=True,
                )  # fmt: skip
                feeder.start()
                try:
                    self._await(acq, feeder)
                finally:
                    self._halt.set()
                    self.feed.stop()
                    self._close_dataset(acq)
        except BaseException as exc:  # noqa: BLE001 (re-raised after teardown)
            error = exc
        finally:
            duration = time.perf_counter() - t0
            self.feed.stop()
            try:
                fanout.finish()
            except KeyboardInterrupt as exc:  # (Ctrl+C while the recording closed)
                error = error or exc
            except LivescopeError as exc:
                error = exc if self._sink_failed else (error or exc)
            finally:
                if error is None and self._core_error is not None:
                    self._fail_skipped(None)  # (the last events failed: named with the error)
                with self._lock:
                    missing = self._not_acquired + list(self._pending.values())
                    self._stage_at.clear()  # (positions of frames that never came)
                    self._read_at.clear()
                    self._snapped.clear()  # (and their snaps' times)
                    self._unsnapped.clear()
                self.engine.failed_events.extend(missing)
                if error is None and (missing or self._errors):  # (in the summary too)
                    first = f": {self._errors[0]}" if self._errors else " (see stderr)"
                    error = LivescopeError(
                        f"pycromanager acquired {self.images_saved} of {self.events_submitted} "
                        f"events{first}"
                    )
                    error.__cause__ = self._errors[0] if self._errors else None
                summary, error = self._end(fanout, duration, error)
        if error is not None:
            raise error
        return summary

    def _pm_running(self) -> bool:
        """Whether pycromanager's acquisition (once started) has not ended yet."""
        return self._pm_ended is not None and not self._pm_ended.is_set()

    @staticmethod
    def _close_dataset(acq: Any) -> None:
        try:
            acq.get_dataset().close()
        except Exception:
            logger.exception("closing pycromanager's NDTiff dataset failed")

    def _cancel(self) -> None:
        """Stop feeding and abort the acquisition: a sink failed (writer thread)."""
        self._sink_failed = True
        self.feed.stop()
        self._stop_feeding()
        if self._acq is not None:
            self._abort(self._acq, LivescopeError("recording failed; acquisition aborted"))

    def _summary_extra(self) -> dict[str, Any]:
        return {
            "backend": f"pycromanager-{self.backend}",
            "events_submitted": self.events_submitted,
            "images_saved": self.images_saved,
            "ndtiff": None if self.ndtiff_path is None else str(self.ndtiff_path.resolve()),
        }
