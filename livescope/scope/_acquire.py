"""Run an acquisition and hand every frame to the sinks, off the acquisition thread.

pymmcore-plus emits ``frameReady`` on the acquisition thread, and a slow handler
slows the whole run. The handler here only builds the frame's `FrameInfo`, copies
the pixels and puts both on an unbounded queue; a writer thread feeds the sinks.
No frame is dropped: if a sink fails, the run is cancelled and the error raised.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import useq
from numpy.typing import NDArray
from pymmcore_plus import CMMCorePlus

from livescope.record import PSink
from livescope.schema import FrameInfo, LivescopeError

from ._engine import LivescopeEngine

__all__ = ["AcquisitionReport", "position_name", "run_acquisition"]

logger = logging.getLogger("livescope")

_STOP = object()


@dataclass
class AcquisitionReport:
    """What a run did, for the run summary. Times in seconds."""

    frames_acquired: int = 0
    frames_written: int = 0
    frames_failed: int = 0
    max_queue_depth: int = 0
    duration_s: float = 0.0
    positions: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    timepoints: int = 0

    @property
    def fps(self) -> float:
        """Frames acquired per wall-clock second."""
        return self.frames_acquired / self.duration_s if self.duration_s > 0 else 0.0


def position_name(event: useq.MDAEvent) -> str:
    """Name of the position an event images (``pos_name``, else ``p<index>``, plus grid tile)."""
    name = event.pos_name or f"p{event.index.get('p', 0)}"
    if "g" in event.index:
        name = f"{name}_g{event.index['g']}"
    return name


def _frame_info(seq: int, image: NDArray[Any], event: useq.MDAEvent, meta: Any) -> FrameInfo:
    pos = meta.get("position") or {}
    # hardware-timed bursts: the camera stamps each frame's own sample time
    cam_meta = meta.get("camera_metadata") or {}
    sample_time = cam_meta.get("livescope.sample_time_s", meta.get("livescope.sample_time_s"))
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
        hardware_triggered=bool(meta.get("hardware_triggered", False)),
        shape=tuple(int(s) for s in image.shape),
        dtype=str(image.dtype),
        event=event.model_dump(mode="json", exclude_unset=True, exclude={"sequence"}),
    )


def run_acquisition(
    core: CMMCorePlus,
    sequence: useq.MDASequence,
    engine: LivescopeEngine,
    sinks: Sequence[PSink],
    progress: Callable[[int, int], None] | None = None,
) -> AcquisitionReport:
    """Run ``sequence`` on ``core`` (blocking the calling thread) and feed ``sinks``.

    ``progress(frames_written, frames_planned)`` is called on the writer thread
    after each frame is written.

    Every sink is closed at the end, also after an error; the first error (from
    the acquisition or a sink) is raised after teardown.

    Raises
    ------
    LivescopeError
        if a sink fails (the run is cancelled) or a frame could not be acquired.
    StageLimitError
        if an event asks for a position outside the stage travel.

    """
    for s in sinks:
        if not isinstance(s, PSink):
            raise TypeError(f"{s!r} is not a sink (needs write(image, info) and close())")
    report = AcquisitionReport()
    planned = len(list(sequence)) if progress is not None else 0
    frames: queue.Queue[Any] = queue.Queue()
    sink_error: list[BaseException] = []
    seq_counter = [0]

    def on_frame(image: NDArray[Any], event: useq.MDAEvent, meta: Any) -> None:
        # acquisition thread: build the record, copy pixels, enqueue, return
        info = _frame_info(seq_counter[0], image, event, meta)
        seq_counter[0] += 1
        frames.put((np.array(image, copy=True), info))
        report.max_queue_depth = max(report.max_queue_depth, frames.qsize())

    def writer() -> None:
        while True:
            item = frames.get()
            if item is _STOP:
                return
            if sink_error:
                continue  # the run is being cancelled; the error is raised below
            image, info = item
            try:
                for s in sinks:
                    s.write(image, info)
                report.frames_written += 1
                if progress is not None:
                    progress(report.frames_written, planned)
            except Exception as exc:
                logger.exception("writing frame %s failed; cancelling the run", info["seq"])
                sink_error.append(exc)
                core.mda.cancel()

    thread = threading.Thread(target=writer, name="livescope-writer", daemon=True)
    thread.start()
    core.mda.set_engine(engine)
    core.mda.events.frameReady.connect(on_frame)
    t0 = time.perf_counter()
    error: BaseException | None = None
    try:
        core.mda.run(sequence)
    except BaseException as exc:  # noqa: BLE001 (re-raised after teardown)
        error = exc
    finally:
        report.duration_s = time.perf_counter() - t0
        core.mda.events.frameReady.disconnect(on_frame)
        frames.put(_STOP)
        thread.join()
        report.frames_acquired = seq_counter[0]
        report.frames_failed = len(engine.failed_events)
        for s in sinks:
            try:
                s.close()
            except Exception as exc:
                logger.exception("closing sink %r failed", s)
                sink_error.append(exc)
    if error is not None:
        raise error
    if sink_error:
        raise LivescopeError(f"recording failed: {sink_error[0]}") from sink_error[0]
    if report.frames_failed:
        raise LivescopeError(
            f"{report.frames_failed} frame(s) could not be acquired; first at event "
            f"{dict(engine.failed_events[0].index)} (see the log)"
        )
    report.positions = list(dict.fromkeys(position_name(e) for e in sequence))
    report.channels = [c.config for c in sequence.channels]
    report.timepoints = sequence.sizes.get("t", 1) or 1
    return report
