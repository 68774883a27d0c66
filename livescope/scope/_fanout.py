"""Hand every acquired frame to the recorder and the bus, off the acquisition thread.

pymmcore-plus emits ``frameReady`` on the acquisition thread, and a slow handler
slows the whole run. `FrameFanout.on_frame` only builds the frame's `FrameInfo`,
copies the pixels (one copy, shared read-only by all consumers) and enqueues it:

* the recording queue is unbounded: every frame is written, none is dropped; if
  a sink fails the run is cancelled and the error raised;
* the bus queue is bounded: when the publisher falls behind, the oldest frames
  are dropped for analysis only (and counted).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import useq
from numpy.typing import NDArray

from livescope.bus import FramePublisher
from livescope.record import PSink
from livescope.schema import FrameInfo, LivescopeError

__all__ = ["FrameFanout", "position_name"]

logger = logging.getLogger("livescope")

_STOP = object()


def position_name(event: useq.MDAEvent) -> str:
    """Name of the position an event images (``pos_name``, else ``p<index>``, plus grid tile)."""
    name = event.pos_name or f"p{event.index.get('p', 0)}"
    if "g" in event.index:
        name = f"{name}_g{event.index['g']}"
    return name


def frame_info(seq: int, image: NDArray[Any], event: useq.MDAEvent, meta: Any) -> FrameInfo:
    """Build the `FrameInfo` of a frame from pymmcore-plus's event and metadata."""
    t_camera = time.monotonic_ns()
    pos = meta.get("position") or {}
    # hardware-timed bursts: the camera stamps each frame's own sample time
    cam_meta = meta.get("camera_metadata") or {}
    sample_time = cam_meta.get("livescope.sample_time_s", meta.get("livescope.sample_time_s"))
    added_by = event.metadata.get("added_by")
    return FrameInfo(
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


class FrameFanout:
    """Fans frames out to recording sinks (never dropping) and a publisher (best effort).

    Parameters
    ----------
    sinks
        Recording sinks, called in order on the writer thread.
    publisher
        Optional bus publisher, called on the publisher thread.
    on_cancel
        Called (writer thread) when a sink fails, to cancel the acquisition.
    progress
        ``progress(frames_written)`` after each written frame (writer thread).
    bus_queue
        Frames the publisher may fall behind by before the oldest are dropped.

    """

    def __init__(
        self,
        sinks: Sequence[PSink],
        *,
        publisher: FramePublisher | None = None,
        on_cancel: Callable[[], None] | None = None,
        progress: Callable[[int], None] | None = None,
        bus_queue: int = 64,
    ) -> None:
        for s in sinks:
            if not isinstance(s, PSink):
                raise TypeError(f"{s!r} is not a sink (needs write(image, info) and close())")
        self.sinks = list(sinks)
        self.publisher = publisher
        self._on_cancel = on_cancel
        self._progress = progress
        self._frames: queue.Queue[Any] = queue.Queue()
        self._bus: collections.deque[tuple[NDArray[Any], FrameInfo]] = collections.deque()
        self._bus_max = bus_queue
        self._bus_cond = threading.Condition()
        self._bus_done = False
        self.errors: list[BaseException] = []
        self.frames_acquired = 0
        self.frames_written = 0
        self.max_queue_depth = 0
        self.bus_dropped = 0
        self.bus_published = 0
        self._writer = threading.Thread(
            target=self._write_loop, name="livescope-writer", daemon=True
        )
        self._pub = threading.Thread(
            target=self._publish_loop, name="livescope-publisher", daemon=True
        )
        self._writer.start()
        if publisher is not None:
            self._pub.start()

    def on_frame(self, image: NDArray[Any], event: useq.MDAEvent, meta: Any) -> None:
        """``frameReady`` handler (acquisition thread): record, copy, enqueue, return."""
        info = frame_info(self.frames_acquired, image, event, meta)
        self.frames_acquired += 1
        pixels = np.array(image, copy=True)
        pixels.flags.writeable = False
        self._frames.put((pixels, info))
        self.max_queue_depth = max(self.max_queue_depth, self._frames.qsize())
        if self.publisher is not None:
            with self._bus_cond:
                self._bus.append((pixels, info))
                if len(self._bus) > self._bus_max:
                    self._bus.popleft()
                    self.bus_dropped += 1
                self._bus_cond.notify()

    def _write_loop(self) -> None:
        while (item := self._frames.get()) is not _STOP:
            if self.errors:
                continue  # the run is being cancelled; the error is raised by finish()
            pixels, info = item
            try:
                info["adler32"] = zlib.adler32(memoryview(pixels).cast("B"))
                for s in self.sinks:
                    s.write(pixels, info)
            except Exception as exc:
                logger.exception("writing frame %s failed; cancelling the run", info["seq"])
                self.errors.append(exc)
                if self._on_cancel is not None:
                    self._on_cancel()
                continue
            self.frames_written += 1
            if self._progress is not None:
                try:
                    self._progress(self.frames_written)
                except Exception:
                    logger.exception("progress callback failed (recording goes on)")

    def _publish_loop(self) -> None:
        if self.publisher is None:
            return
        while True:
            with self._bus_cond:
                while not self._bus and not self._bus_done:
                    self._bus_cond.wait()
                if not self._bus:
                    return
                pixels, info = self._bus.popleft()
            try:
                published = self.publisher.publish(pixels, info, info["t_camera_ns"])
            except Exception:
                logger.exception("publishing frame %s failed (recording goes on)", info["seq"])
                published = False
            with self._bus_cond:
                if published:
                    self.bus_published += 1
                else:
                    self.bus_dropped += 1

    def finish(self) -> None:
        """Drain the queues, close every sink (also after errors), raise the first error.

        Raises
        ------
        LivescopeError
            if a sink failed.

        """
        self._frames.put(_STOP)
        self._writer.join()
        if self.publisher is not None:
            with self._bus_cond:
                self._bus_done = True
                self._bus_cond.notify()
            self._pub.join()
        for s in self.sinks:
            try:
                s.close()
            except Exception as exc:
                logger.exception("closing sink %r failed", s)
                self.errors.append(exc)
        if self.errors:
            raise LivescopeError(f"recording failed: {self.errors[0]}") from self.errors[0]
        if self.frames_written != self.frames_acquired:
            raise LivescopeError(
                f"recording incomplete: {self.frames_acquired} frames acquired, "
                f"{self.frames_written} written"
            )
