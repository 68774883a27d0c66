"""Frames off the bus, put together into fields on a thread of the worker's own.

The worker's main thread runs the engines; frames keep arriving meanwhile.
`FieldAssembler` takes them off the bus as they come, also while the engines
run, and queues each field (the frames of one position at one time point) the
moment its last frame is in: a field is ready as soon as the one before it is
analysed, and its decisions wait for no copying. Frames come field by field: a
field short of frames (some lost on the way, read back from the recording by the
worker) is queued when a frame of another field comes.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from livescope.bus import BUS_FILE, BusInfo
from livescope.schema import LivescopeError

from ._config import WorkerConfig
from ._jobs import Field
from ._recorded import RecordedFields

__all__ = ["FieldAssembler", "watch_stdin"]  # the worker's own, not re-exported

logger = logging.getLogger("livescope")

MAX_QUEUED_BYTES = 1 << 30
"""Most bytes of frames queued for the engines (1 GiB): a field completed beyond it is
not queued but left to the recording, which the worker reads it back from before the
position's next field (a worker far behind on large frames filled memory until it died)."""

AGENT_CHECK_S = 1.0
"""How often a worker waiting for frames looks whether the agent's process still runs (s)."""


class FieldAssembler:
    """Queue a live run's fields for the worker's main thread, from a thread of its own.

    Parameters
    ----------
    link
        The worker's attachment to the agent (`livescope.bus.attach`); frames are
        taken from ``link.frames``.
    run_dir
        The run folder: the agent has finished when its ``bus.json`` is gone.
    config
        ``idle_s`` (give up after so long without a frame) and ``analyse_added``.
    recorded
        How many frames each field of the plan has.
    done
        Position → last analysed time point (the main thread's, read here): frames
        of fields already analysed (from the recording) are counted and dropped.
    counts, count_lock
        The worker's counts; ``count_lock`` is held to count
        ``frames_already_analysed``, which the main thread also adds to.
    orphaned
        Set when the supervising process is gone (`watch_stdin`): the thread stops
        with an error once no frame comes (the agent ran in that process).
    agent
        The agent's ``bus.json`` as attached to: while no frame comes, its process
        is looked at every `AGENT_CHECK_S` (`BusInfo.agent_gone`); None: never.

    The queue (`fields`) ends with None when the agent has finished (its
    ``bus.json`` gone), its process is gone without ending the run (killed,
    crashed: `agent_gone` is set, and ``bus.json`` is left over) or no frame
    came for ``idle_s``, or with the exception that stopped the thread.

    """

    def __init__(
        self,
        link: Any,
        run_dir: Path,
        config: WorkerConfig,
        recorded: RecordedFields,
        done: dict[str, int],
        counts: collections.Counter[str],
        count_lock: threading.Lock,
        orphaned: threading.Event,
        agent: BusInfo | None = None,
    ) -> None:
        self.fields: queue.Queue[Field | Exception | None] = queue.Queue()
        self._link, self._bus = link, run_dir / BUS_FILE
        self._config, self._recorded, self._done = config, recorded, done
        self._counts, self._count_lock, self._orphaned = counts, count_lock, orphaned
        self._agent = agent
        self.agent_gone = threading.Event()
        """Set (by the thread) when the agent's process was found gone, its run not ended."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="livescope-fields", daemon=True)

    def start(self) -> None:
        """Start taking frames off the bus."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (at most 5 s); fields it queues after are not read."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        fields, counts = self.fields, self._counts
        pending: Field | None = None
        last_frame = last_check = time.monotonic()
        try:
            while not self._stop.is_set():
                frame = self._link.frames.get(timeout=0.1)
                if frame is None:
                    if not self._bus.exists():
                        break  # the agent has finished; the queue is drained
                    # a killed agent leaves its bus.json: without this the worker waited forever
                    agent, now = self._agent, time.monotonic()
                    if agent is not None and now - last_check >= AGENT_CHECK_S:
                        last_check = now
                        if agent.agent_gone():
                            self.agent_gone.set()
                            logger.warning(
                                "the agent of run %s (process %d) is gone without ending its "
                                "run (killed or crashed; its %s is left over): the worker stops "
                                "taking frames and analyses what was recorded",
                                agent.run_id, agent.pid, self._bus,
                            )  # fmt: skip
                            break
                    idle = self._config.idle_s
                    if idle is not None and time.monotonic() - last_frame > idle:
                        logger.warning("no frame for %g s (idle_s): the worker stops taking "
                                       "frames and analyses what was recorded", idle)  # fmt: skip
                        break
                    if self._orphaned.is_set():
                        raise LivescopeError("the supervising process is gone; the worker stops")
                    continue
                last_frame = time.monotonic()
                try:
                    h = frame.header
                    counts["frames_received"] += 1
                    key = (str(h["position"]), int(h["index"].get("t", 0)))
                    if pending is not None and (pending.position, pending.t) != key:
                        # frames come field by field: a frame of another field, also one
                        # left out below (added, already analysed, overwritten), was taken
                        # after every frame of this one (else a field whose last frame was
                        # lost waited for the next time point: a whole interval)
                        pending.next_seq = int(h["seq"])  # (its lost frames came before)
                        self._queue(pending)  # incomplete: its other frames never came
                        pending = None
                    if h.get("added_by") and not self._config.analyse_added:
                        counts["added_frames_received"] += 1
                        continue
                    if key[0] in self._done and key[1] <= self._done[key[0]]:
                        with self._count_lock:
                            counts["frames_already_analysed"] += 1
                        continue
                    pixels = np.array(frame.array, copy=True)
                    if not frame.valid():  # its shared-memory slot was reused while it waited
                        with self._count_lock:  # (its field is completed from the recording)
                            counts["frames_overwritten"] += 1
                        logger.warning(
                            "frame %s was overwritten in shared memory before it was read; "
                            "it is read from the recording", h["seq"],
                        )  # fmt: skip
                        continue
                    if pending is None:
                        pending = Field(key[0], key[1], {}, dict(h), frame.t_received_ns)
                    z = int(h["index"].get("z", 0))
                    pending.frames[(str(h["channel"]), z)] = pixels
                    pending.note(h)
                    pending.header, pending.t_received_ns = dict(h), frame.t_received_ns
                finally:
                    frame.release()
                if len(pending.frames) >= self._recorded.count((pending.position, pending.t)):
                    self._queue(pending)
                    pending = None
            if pending is not None:
                self._queue(pending)
            fields.put(None)
        except Exception as exc:  # noqa: BLE001 (handed to the main thread, which raises it)
            fields.put(exc)

    def _queue(self, fld: Field) -> None:
        """Queue ``fld`` for the engines, or leave it to the recording past `MAX_QUEUED_BYTES`."""
        size = sum(a.nbytes for a in fld.frames.values())
        with self.fields.mutex:  # (a look at the queue: the main thread takes from it meanwhile)
            queued = sum(
                a.nbytes for f in self.fields.queue if isinstance(f, Field)
                for a in f.frames.values()
            )  # fmt: skip
        if queued and queued + size > MAX_QUEUED_BYTES:
            with self._count_lock:
                self._counts["fields_left_to_recording"] += 1
            if self._counts["fields_left_to_recording"] == 1:
                logger.warning(
                    "the engines are %.0f MB of frames behind: fields are read back from the "
                    "recording until they catch up (field %s t=%d the first)",
                    queued / 1e6, fld.position, fld.t,
                )  # fmt: skip
            return
        self.fields.put(fld)


def watch_stdin(gone: threading.Event) -> None:
    """Set ``gone`` once stdin closes (the supervisor holds a pipe to it); blocks until then."""
    try:  # the raw descriptor: a buffered read would block interpreter shutdown
        fd = sys.stdin.fileno()
        while os.read(fd, 1024):
            pass
    except (OSError, ValueError):
        pass
    gone.set()
