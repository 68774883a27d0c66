"""Hand every acquired frame to the recorder and the bus without holding up acquisition.

pymmcore-plus emits ``frameReady`` on the acquisition thread, and a slow handler
slows the whole run. `FrameFanout.on_frame` only builds the frame's `FrameInfo`,
copies the pixels (one copy, shared read-only by all consumers), queues the copy
for recording and publishes it:

* every frame queued is written, none is dropped; if a sink fails the run is
  cancelled and the error raised. The queue holds at most ``max_held_bytes`` of
  pixels (`recording_memory_default`: a share of the PC's memory): a recording
  that falls that far behind (a disk slower than the camera) cancels the run,
  rather than the system ending the process for its memory and every frame
  queued with it; the frames queued are still written. The writer thread (and
  zarr's threads, which create the arrays) are bulk threads on Linux, as the
  worker's engines (niced and, unless ``LIVESCOPE_BULK_PRIORITY=nice``, in the
  ``SCHED_IDLE`` class: see `livescope.schema.lower_thread_priority`):
  recording may lag a burst, the hand-off to analysis may not. While frames
  go to analysis the writer starts no frame until `RECORDING_HOLD_S` after it
  was handed to the bus, so that the field it completes reaches the engines
  first. A recording that falls `RECORDING_LAG_WARN` frames behind the camera
  is logged (again at each doubling), naming the memory held;
* publishing is itself the hand-off: it writes the pixels into a shared-memory
  slot (or queues them on the socket) and never waits for a subscriber. A frame
  with no free slot is dropped for analysis only (and counted). Publishing here,
  not on a thread of its own, saves a thread hop (and its wake-up, up to
  several ms on two busy cores) on every frame's way to the worker.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import useq
from numpy.typing import NDArray

from livescope.bus import FramePublisher, collection_deferred
from livescope.record import PSink, zarr_threads
from livescope.schema import (
    BULK_PRIORITY_ENV,
    FrameInfo,
    LivescopeError,
    bulk_priority,
    clock_ns,
    lower_thread_priority,
    position_name,
    start_daemon,
)

__all__ = [
    "RECORDING_HOLD_S",
    "RECORDING_LAG_WARN",
    "RECORDING_MEMORY_FALLBACK_BYTES",
    "RECORDING_MEMORY_SHARE",
    "RECORDING_NICE",
    "FrameFanout",
    "position_name",
    "recording_memory_default",
]

RECORDING_NICE = 5
"""Niceness added to the recording threads (Linux): as much as the worker's engines."""
RECORDING_LAG_WARN = 64
"""Frames waiting to be recorded at which a warning is logged (then at 128, 256, ...)."""
RECORDING_MEMORY_SHARE = 0.25
"""Share of the PC's physical memory the frames waiting to be recorded may hold (default)."""
RECORDING_MEMORY_FALLBACK_BYTES = 4 * 2**30
"""What they may hold where the PC's memory cannot be read, bytes."""

RECORDING_HOLD_S = 0.003
"""How long after a frame is handed to the bus the writer starts on it, s (Linux, idle class).

Both the writer and the worker's engines are bulk threads (idle class on
Linux), and a waking idle-class thread never takes a core from another: the
kernel counts a core running only idle-class threads as free and may put the
worker's thread there. In a traced demo (2 cores), the worker's engine thread,
woken for a time point's first field, waited 2.4 ms behind the writer
compressing that field's frames while the other core sat idle, until the
scheduler's tick. Held for 3 ms after the frame is on the bus (from there the
worker has it in ~0.3 ms and its engine thread running ~0.4 ms later, 512²
frames), the writer starts after the engines have, and shares their core or
takes the other. The writer sleeps only while its oldest frame is that fresh:
throughput is the same, and at most ~3 ms of frames more are held.
Alternating demos, seven each: the longest wait of a time point's first field
for the engines' thread 1.04-1.75 ms against 0.92-3.42 without the hold (2 of
those 7 and 7 of 13 demos without it that day had one of 2-4.4 ms); the
overhead p99 did not move beyond the demos' spread (4.19-6.84 against
4.01-7.51 ms, means 5.28 and 5.39). Recording lags by those 3 ms (none is lost:
`finish` drains).
"""

logger = logging.getLogger("livescope")

_STOP = object()
_LOGGED_PUBLISH_FAILURES = 3
"""Frames whose publishing failed that are logged with their traceback; the rest are counted."""


def _physical_memory() -> int:
    """Return the PC's physical memory in bytes (0 where it cannot be read)."""
    if sys.platform == "win32":
        import ctypes

        class _MemoryStatus(ctypes.Structure):  # (MEMORYSTATUSEX)
            _fields_ = [
                ("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
            ]  # fmt: skip

        status = _MemoryStatus()
        status.dwLength = ctypes.sizeof(_MemoryStatus)
        try:
            ok = ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status))
        except (AttributeError, OSError):
            return 0
        return int(status.ullTotalPhys) if ok else 0
    else:  # (each platform its branch: mypy checks the one of the platform it checks)
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # (a name this system does not know)
            return 0


def recording_memory_default() -> int:
    """Return how many bytes of frames may wait to be recorded, by default.

    `RECORDING_MEMORY_SHARE` of the physical memory (``GlobalMemoryStatusEx`` on
    Windows, ``os.sysconf`` elsewhere), or `RECORDING_MEMORY_FALLBACK_BYTES`
    where it cannot be read. The rest is left to the worker's engines and the
    system.
    """
    if (total := _physical_memory()) > 0:
        return int(total * RECORDING_MEMORY_SHARE)
    return RECORDING_MEMORY_FALLBACK_BYTES


def _log_failure(exc: Exception, what: str, then: str = "") -> None:
    """Log a sink's failure: an OSError (a full disk, a lost share) by its message alone."""
    if isinstance(exc, OSError):
        logger.error("%s (%s)%s", what, exc, then)
    else:
        logger.exception("%s%s", what, then)


class Taken(NamedTuple):
    """When a frame was taken, where that was before it reached `FrameFanout.on_frame`.

    pycromanager's frames come after being saved and read back: they are
    stamped at its post-camera hook. ``t_camera_ns``: `clock_ns`; ``clock_s``:
    the fan-out's ``clock`` (the time decisions answering the frame are aged
    from), or None without one.
    """

    t_camera_ns: int
    clock_s: float | None


def frame_info(
    seq: int, image: NDArray[Any], event: useq.MDAEvent, meta: Any, t_camera_ns: int | None = None
) -> FrameInfo:
    """Build the `FrameInfo` of a frame from pymmcore-plus's event and metadata.

    ``t_camera_ns``: when the frame was taken (`clock_ns`); None: now.
    """
    t_camera = clock_ns() if t_camera_ns is None else int(t_camera_ns)
    pos = meta.get("position") or {}
    # hardware-timed bursts: the camera stamps each frame's own sample time
    cam_meta = meta.get("camera_metadata") or {}
    sample_time = cam_meta.get("livescope.sample_time_s", meta.get("livescope.sample_time_s"))
    if sample_time is None and meta.get("runner_time_ms") is not None:
        # a real rig (no simulated clock): the frame's time since the acquisition began,
        # as pymmcore-plus stamps it (each frame of a hardware-timed burst its own), or
        # Micro-Manager's ElapsedTime-ms through pycromanager
        sample_time = float(meta["runner_time_ms"]) / 1000.0
    added_by = event.metadata.get("added_by")
    info = FrameInfo(
        seq=seq,
        index={k: int(v) for k, v in event.index.items()},
        position=position_name(event),
        channel=event.channel.config if event.channel else "",
        x_um=pos.get("x", event.x_pos),
        y_um=pos.get("y", event.y_pos),
        z_um=pos.get("z", event.z_pos),
        exposure_ms=float(meta.get("exposure_ms", event.exposure or 0.0)),
        pixel_size_um=float(meta.get("pixel_size_um", 0.0)),
        sample_time_s=None if sample_time is None else float(sample_time),
        runner_time_ms=float(meta.get("runner_time_ms", 0.0)),
        t_camera_ns=t_camera,
        hardware_triggered=bool(meta.get("hardware_triggered", False)),
        added_by=None if added_by is None else str(added_by),
        adler32=0,
        shape=tuple(int(s) for s in image.shape),
        dtype=str(image.dtype),
        event=event.model_dump(mode="json", exclude_unset=True, exclude={"sequence"}),
    )
    if (offset := meta.get("livescope.roi_offset_px")) is not None:
        info["roi_offset_px"] = (float(offset[0]), float(offset[1]))
    return info


class _CtrlCHeld:
    """Hold Ctrl-C back while the ``with`` block runs; `replay` raises it afterwards.

    Outside the main thread (which alone receives KeyboardInterrupt) it does
    nothing. While held, SIGINT only marks itself (logging ``notice`` the first
    time, if given); `replay` then calls the previous handler once. With
    ``give_up_after``, that many-th Ctrl-C held is not held: the previous
    handler is put back, ``gave_up`` set, ``give_up()`` called (if given) and
    KeyboardInterrupt raised at once, so that a block that hangs (a sink that
    never closes) cannot hold the user for ever.
    """

    def __init__(
        self,
        notice: Callable[[], str] | None = None,
        give_up: Callable[[], None] | None = None,
        give_up_after: int | None = None,
    ) -> None:
        self.held = 0
        self.gave_up = False
        self._notice = notice
        self._give_up = give_up
        self._give_up_after = give_up_after
        self._old: Any = None
        self._active = False

    def _hold(self, _signum: int, _frame: Any) -> None:
        if self.held == 0 and self._notice is not None:
            logger.warning(self._notice())
        self.held += 1
        if self._give_up_after is not None and self.held >= self._give_up_after:
            self._restore()  # (a Ctrl+C from now on goes where it went before)
            self.held = 0  # (raised now, not replayed)
            self.gave_up = True
            if self._give_up is not None:
                self._give_up()
            raise KeyboardInterrupt

    def _restore(self) -> None:
        if self._active:
            self._active = False
            signal.signal(signal.SIGINT, self._old)

    def __enter__(self) -> _CtrlCHeld:
        self._active = threading.current_thread() is threading.main_thread()
        if self._active:
            self._old = signal.signal(signal.SIGINT, self._hold)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._restore()

    def replay(self) -> None:
        """Pass a Ctrl-C held back on to the handler it was held from (usually: raise it)."""
        if not self.held:
            return
        self.held = 0
        if callable(self._old):
            self._old(signal.SIGINT, None)
        elif self._old != signal.SIG_IGN:
            signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def _no_ctrl_c() -> Iterator[None]:
    """Hold Ctrl-C back until the block is done, then raise it.

    The acquisition thread is usually the main thread, where Python raises
    KeyboardInterrupt: arriving mid-publish it would leave a multipart message
    half sent or a shared-memory slot half written. Other threads never
    receive KeyboardInterrupt, so they run the block as it is.
    """
    held = _CtrlCHeld()
    try:
        with held:
            yield
    finally:
        held.replay()


class FrameFanout:
    """Fans frames out to recording sinks (never dropping) and a publisher (best effort).

    Parameters
    ----------
    sinks
        Recording sinks, called in order on the writer thread. The first is the
        recording: ``frames_written`` counts the frames it wrote.
    publisher
        Optional bus publisher, called on the acquisition thread (it never blocks).
    on_cancel
        Called (writer thread) when a sink fails, to cancel the acquisition.
    progress
        ``progress(frames_written)`` after each written frame (writer thread).
    recording_nice
        Niceness added to the writer thread and zarr's threads (Linux; 0: none,
        and no ``SCHED_IDLE`` either). They also join ``SCHED_IDLE`` unless
        ``LIVESCOPE_BULK_PRIORITY=nice`` (see `livescope.schema.lower_thread_priority`;
        zarr's process-wide threads keep a class an earlier user gave them).
    hold_s
        How long after a frame was handed to the bus the writer starts on it, s
        (default: `RECORDING_HOLD_S` with a publisher and an idle-class writer,
        i.e. on Linux unless ``LIVESCOPE_BULK_PRIORITY=nice``; else 0).
    clock
        The sample's clock (s), read as each frame comes (or its time given to
        `on_frame` as ``taken``): ``frame_times`` (the agent's check of how old
        the frame a decision answers is).
    max_held_bytes
        How many bytes of pixels may wait to be recorded, more than 0 (None:
        `recording_memory_default`). A frame that would pass it is not queued
        and cancels the run (``overrun``); so is every frame after it.

    """

    def __init__(
        self,
        sinks: Sequence[PSink],
        *,
        publisher: FramePublisher | None = None,
        on_cancel: Callable[[], None] | None = None,
        progress: Callable[[int], None] | None = None,
        recording_nice: int = RECORDING_NICE,
        hold_s: float | None = None,
        clock: Callable[[], float] | None = None,
        max_held_bytes: int | None = None,
    ) -> None:
        for s in sinks:
            if not isinstance(s, PSink):
                raise TypeError(f"{s!r} is not a sink (needs write(image, info) and close())")
        self.sinks = list(sinks)
        self.publisher = publisher
        self._on_cancel = on_cancel
        self._progress = progress
        self._frames: queue.Queue[Any] = queue.Queue()
        self._nice = recording_nice
        # (a wrong LIVESCOPE_BULK_PRIORITY stops the run here)
        mode = bulk_priority() if recording_nice > 0 else None
        if hold_s is None:  # (the hold is for two idle-class threads: see RECORDING_HOLD_S)
            idle = sys.platform.startswith("linux") and mode == "idle"
            hold_s = RECORDING_HOLD_S if publisher is not None and idle else 0.0
        self._hold_ns = int(hold_s * 1e9)
        self._lowered: set[int] = set()
        self._publish_lock = threading.Lock()
        self._finished = False
        self.errors: list[BaseException] = []
        self.refused: list[BaseException] = []
        """Why frames from the camera could not be taken (each cancels the run)."""
        self.frames_acquired = 0
        """Frames the camera handed in (also those refused, or not queued)."""
        self.frames_written = 0
        """Frames the recording (the first sink) wrote."""
        self._failed_sink: PSink | None = None  # (the first that raised)
        if max_held_bytes is not None and max_held_bytes <= 0:
            raise ValueError(
                f"max_held_bytes (the agent's recording_memory_bytes) is {max_held_bytes}: "
                "the recording could not hold one frame waiting to be written; give a "
                "positive number of bytes, or None for a share of the PC's memory"
            )
        self.max_held_bytes = (
            recording_memory_default() if max_held_bytes is None else max_held_bytes
        )
        self._held_bytes = self._held_frames = 0  # (queued, or being written)
        self._held_lock = threading.Lock()
        self.overrun: str | None = None
        """How far behind the recording was when it passed ``max_held_bytes`` (None: never)."""
        self.closing_interrupt: KeyboardInterrupt | None = None
        """The Ctrl+C `finish` raised after a complete recording was closed (None: none)."""
        self.abandoned = False  # (a Ctrl+C while closing was pressed again: see finish())
        self.max_queue_depth = 0
        self._lag_warn_at = RECORDING_LAG_WARN
        self.bus_dropped = 0
        self.publish_failures = 0
        """Frames whose publishing raised (counted in ``bus_dropped`` too; the first few logged)."""
        self.bus_published = 0
        self._clock = clock
        self.frame_times = array.array("d")
        """Per frame (by ``seq``), the ``clock``'s time when it came (empty without one)."""
        self._writer_done = start_daemon(self._write_loop, "livescope-writer")

    def on_frame(
        self, image: NDArray[Any], event: useq.MDAEvent, meta: Any, *, taken: Taken | None = None
    ) -> None:
        """``frameReady`` handler (acquisition thread): copy, queue for recording, publish.

        ``taken``: when the frame was taken, where that was before it came
        here (pycromanager's); None: now.

        No garbage collection starts until the frame is on the bus (see
        `collection_deferred`). A frame it cannot take (e.g. metadata a device
        filled with text where a number belongs) cancels the run, as a
        recording that fails does: pymmcore-plus only logs what a ``frameReady``
        handler raises, so the frame would be lost without a word.
        """
        try:
            with collection_deferred():
                self._hand_off(image, event, meta, taken)
        except Exception as exc:  # noqa: BLE001 (logged, kept, raised by finish())
            index = dict(getattr(event, "index", {}) or {})
            _log_failure(exc, f"taking the camera's frame {index} failed", "; cancelling the run")
            self.refused.append(exc)  # (the frames before it are still written)
            if self._on_cancel is not None:
                self._on_cancel()

    def _hand_off(
        self, image: NDArray[Any], event: useq.MDAEvent, meta: Any, taken: Taken | None
    ) -> None:
        stamp = None if taken is None else taken.t_camera_ns
        # counted, its seq and time taken, before its metadata may refuse it: a frame
        # refused is acquired and not written, and the bus sees the gap in seq
        seq = self.frames_acquired
        self.frames_acquired += 1
        if self._clock is not None:
            then = None if taken is None else taken.clock_s
            self.frame_times.append(self._clock() if then is None else then)
        info = frame_info(seq, image, event, meta, stamp)
        if self.overrun is not None or self._held_bytes + image.nbytes > self.max_held_bytes:
            self._overrun(image.nbytes)
            return
        pixels = np.array(image, copy=True, order="C")  # (the writers checksum its bytes)
        pixels.flags.writeable = False
        with _no_ctrl_c(), self._publish_lock:  # one thread on the socket; none after finish()
            if self._finished:
                logger.error("frame %s came after the acquisition ended: not recorded", info["seq"])
                return
            # when the frame was handed to the bus (or queued, with none), for the writer's hold
            sent = [0 if self.publisher is not None else clock_ns()]
            with self._held_lock:
                self._held_bytes += pixels.nbytes
                self._held_frames += 1
            self._frames.put((pixels, info, sent))
            depth = self._frames.qsize()
            self.max_queue_depth = max(self.max_queue_depth, depth)
            if depth >= self._lag_warn_at:
                self._lag_warn_at *= 2
                logger.warning(
                    "recording is %d frames behind the camera (%.0f MB held in memory); if "
                    "other busy programs share this PC's cores, %s=nice lets it keep pace",
                    depth, depth * pixels.nbytes / 1e6, BULK_PRIORITY_ENV,
                )  # fmt: skip
            if self.publisher is None:
                return
            try:
                published = self.publisher.publish(pixels, info, info["t_camera_ns"])
            except Exception:
                # (the first few with their traceback: one bad name in a plan failed every
                # frame of its position, a traceback each, for the whole run)
                self.publish_failures += 1
                if self.publish_failures <= _LOGGED_PUBLISH_FAILURES:
                    logger.exception(
                        "publishing frame %s failed (recording goes on)%s", info["seq"],
                        "; further failures are counted (the summary's bus.publish_failures), "
                        "not logged"
                        if self.publish_failures == _LOGGED_PUBLISH_FAILURES else "",
                    )  # fmt: skip
                published = False
            sent[0] = clock_ns()
            if published:
                self.bus_published += 1
            else:
                self.bus_dropped += 1

    def _overrun(self, nbytes: int) -> None:
        """Refuse a frame the memory held would not take (acquisition thread); cancel the run.

        Not queued, not published: the camera is never held up, and the frames
        queued before it are still written.
        """
        if self.overrun is not None:
            return  # (a frame that came before the cancel took)
        if self._held_frames == 0:  # (nothing waits: the bound, not the disk)
            self.overrun = (
                f"a frame of {nbytes} bytes is larger than the {self.max_held_bytes} bytes "
                "that frames waiting to be written may hold in memory (max_held_bytes, the "
                "agent's recording_memory_bytes): the bound is smaller than one frame"
            )
        else:
            self.overrun = (
                f"the recording fell {self._held_frames} frame(s) "
                f"({self._held_bytes / 1e6:.0f} MB) behind the camera, and the next "
                f"({nbytes / 1e6:.1f} MB) would pass the "
                f"{self.max_held_bytes / 1e6:.0f} MB that frames waiting to be written may hold "
                "in memory: the disk is slower than the camera"
            )
        logger.error("%s; cancelling the run (the frames queued are still written)", self.overrun)
        if self._on_cancel is not None:
            self._on_cancel()

    def _lower(self, threads: list[threading.Thread]) -> None:
        for t in threads:
            if t.ident is not None and t.ident not in self._lowered:
                self._lowered.add(t.ident)
                lower_thread_priority(self._nice, t)

    def _write_loop(self) -> None:
        self._lower([threading.current_thread()])
        while (item := self._frames.get()) is not _STOP:
            try:
                self._write(*item)
            finally:
                with self._held_lock:
                    self._held_bytes -= item[0].nbytes
                    self._held_frames -= 1

    def _write(self, pixels: NDArray[Any], info: FrameInfo, sent: list[int]) -> None:
        """Write one frame to every sink (writer thread); a failure is kept and cancels the run."""
        if self.errors or self.abandoned:
            return  # the run is being cancelled; the error is raised by finish()
        if self._hold_ns:  # the field this frame completes goes to the engines first
            now = clock_ns()
            if (wait_ns := (sent[0] or now) + self._hold_ns - now) > 0:  # (0: being sent)
                time.sleep(wait_ns / 1e9)
        # zarr starts its threads on first use: the ones that appear during a write
        # with asyncio's executor names are its codec threads, bulk work like ours
        known = {t.ident for t in threading.enumerate()} if self._nice > 0 else set()
        try:
            info["adler32"] = zlib.adler32(pixels.data.cast("B"))
            for i, s in enumerate(self.sinks):
                try:
                    s.write(pixels, info)
                except Exception:
                    self._failed_sink = s
                    raise
                if i == 0:  # (what the summary promises: the frames in the recording)
                    self.frames_written += 1
        except Exception as exc:  # noqa: BLE001 (logged, kept, raised by finish())
            to = "" if self._failed_sink is None else f" to {type(self._failed_sink).__name__}"
            _log_failure(exc, f"writing frame {info['seq']}{to} failed", "; cancelling the run")
            self.errors.append(exc)
            if self._on_cancel is not None:
                self._on_cancel()
            return
        finally:
            if self._nice > 0:
                started = [t for t in threading.enumerate() if t.ident not in known
                           and t.name.startswith("asyncio_")]  # fmt: skip
                self._lower([*zarr_threads(), *started])
        if self._progress is not None:
            try:
                self._progress(self.frames_written)
            except Exception:
                logger.exception("progress callback failed (recording goes on)")

    @property
    def frames_unwritten(self) -> int:
        """Frames acquired but not (yet) written."""
        return self.frames_acquired - self.frames_written

    def _abandon(self) -> None:
        self.abandoned = True  # the writer writes no more

    def finish(self) -> None:
        """Drain the queues, close every sink (also after errors), raise the first error.

        Raises
        ------
        LivescopeError
            if a sink failed, or a frame from the camera could not be taken.
        KeyboardInterrupt
            if Ctrl+C was pressed while it ran: held back until the recording
            is closed, then raised (``closing_interrupt`` when every frame
            acquired was recorded); pressed again, at once, the recording
            abandoned (``abandoned``: the frames still queued are not written,
            the sinks not closed).

        """
        with self._publish_lock:
            self._finished = True
        # a Ctrl+C now (e.g. a second one) would leave the recording unclosed and the
        # frames still queued unwritten: it is held back until the sinks are closed
        held = _CtrlCHeld(
            lambda: (
                f"Ctrl+C: the recording is closed first ({self.frames_unwritten} frame(s) "
                "still to write; Ctrl+C again abandons them)"
            ),
            give_up=self._abandon,
            give_up_after=2,
        )
        try:
            with held:
                self._frames.put(_STOP)
                while not self._writer_done.wait(0.1):  # (a timeout: Ctrl+C on Windows)
                    pass
                for s in self.sinks:
                    try:
                        s.close()
                    except Exception as exc:  # noqa: BLE001 (logged, kept, raised by finish())
                        _log_failure(exc, f"closing {type(s).__name__} failed")
                        self.errors.append(exc)
                        if self._failed_sink is None:
                            self._failed_sink = s
        except KeyboardInterrupt:
            if held.gave_up:  # (the frame being written when it came is finished)
                self._writer_done.wait(1.0)
                left = self.frames_unwritten
                logger.error(
                    "Ctrl+C again: the recording is abandoned: %s, and its files not closed "
                    "(they may be incomplete)",
                    f"{left} frame(s) not written" if left else "every frame was written",
                )
            raise
        if self.errors:
            failed, done, of = self._failed_sink, self.frames_written, self.frames_acquired
            if failed is None or failed is self.sinks[0]:
                what = f"recording failed after {done} of {of} frame(s) were written"
            else:  # (the recording's own count: it may hold the frame the other failed on)
                what = (
                    f"{type(failed).__name__} failed (not the recording) after {done} of {of} "
                    "frame(s) were recorded"
                )
            raise LivescopeError(f"{what}: {self.errors[0]}") from self.errors[0]
        if self.overrun is not None:
            raise LivescopeError(
                f"{self.overrun}; the run was cancelled: {self.frames_written} of "
                f"{self.frames_acquired} frame(s) recorded, {self.frames_unwritten} not. Record "
                "to a faster disk, take fewer or smaller frames, or let more wait in memory "
                "(ScopeAgent's recording_memory_bytes)"
            )
        if self.refused:
            raise LivescopeError(
                f"{len(self.refused)} frame(s) from the camera could not be taken (not "
                f"recorded; the run was cancelled): {self.refused[0]!r}"
            ) from self.refused[0]
        if self.frames_written != self.frames_acquired:
            raise LivescopeError(
                f"recording incomplete: {self.frames_acquired} frames acquired, "
                f"{self.frames_written} written"
            )
        try:
            held.replay()  # (a recording that failed is the error that counts)
        except KeyboardInterrupt as exc:  # (the recording is complete: see ScopeAgent)
            self.closing_interrupt = exc
            raise
