"""The append-only decision log of a run (``decisions.jsonl``).

Every decision the agent receives and the acknowledgement it sent are appended
as JSON lines and flushed at once (a crash of the agent loses none), then synced
to disk by a thread of the log's own a moment later (so that the agent's answer
to a decision never waits for the disk).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from livescope.schema import json_safe, read_jsonl

__all__ = ["DECISIONS_FILE", "DecisionLog", "read_decisions"]

DECISIONS_FILE = "decisions.jsonl"

logger = logging.getLogger("livescope")


class DecisionLog:
    """Appends records to ``run_dir/decisions.jsonl`` (thread-safe)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / DECISIONS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # unbuffered: a line is written whole by `append` or, when the disk fills
        # mid-line, cut back off (a buffered file would write the line's start, lose
        # the rest, and glue the next line to it: a log `read_decisions` refuses)
        self._f = self.path.open("ab", buffering=0)
        # synced through a descriptor of its own: on Windows a sync holds the
        # descriptor's lock, which the next answer's write would wait for
        self._sync_fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._lock = threading.Lock()  # writes
        self._sync_lock = threading.Lock()  # fsync and close
        self._dirty = threading.Event()
        self._closing = False
        self.sync_errors = 0
        """Syncs to disk that failed (the log goes on; the run summary counts them)."""
        self._syncer = threading.Thread(
            target=self._sync_loop, name="livescope-decision-log-sync", daemon=True
        )
        self._syncer.start()

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line (synced to disk by the log's thread).

        A float that is no number (NaN, infinity) is written as null.

        Raises
        ------
        OSError
            if the line cannot be written (e.g. the disk is full): what was
            written of it is cut off again, so that the log holds whole lines.

        """
        # (JSON has no NaN: a bare NaN token made the log unreadable outside Python)
        line = json.dumps(json_safe(record), default=str, separators=(",", ":")) + "\n"
        data = memoryview(line.encode("utf-8"))
        with self._lock:
            fd = self._f.fileno()
            start = os.fstat(fd).st_size  # (the log's only writer: the end of its last line)
            try:
                while data:
                    data = data[self._f.write(data) :]
            except OSError:
                try:
                    os.ftruncate(fd, start)
                except OSError as exc:
                    logger.warning("cutting a half-written line off %s: %s", self.path, exc)
                raise
        self._dirty.set()

    def _sync_loop(self) -> None:
        while True:
            self._dirty.wait()
            self._dirty.clear()
            with self._sync_lock:
                if self._f.closed:
                    return
                self._sync(flush=False)
            if self._closing:
                return

    def _sync(self, *, flush: bool) -> None:
        """Sync the file to disk (flushing it first): a failure is counted and logged."""
        try:
            if flush:
                self._f.flush()
            os.fsync(self._sync_fd)
        except OSError:  # (the lines are written; they may not be on disk yet)
            self.sync_errors += 1
            logger.exception("syncing the decision log %s failed", self.path)

    def close(self) -> None:
        """Sync and close the file."""
        self._closing = True
        self._dirty.set()
        with self._sync_lock, self._lock:
            if not self._f.closed:
                self._sync(flush=True)
                try:
                    self._f.close()  # (flushes again what a failed flush left: fails alike)
                except OSError as exc:
                    logger.warning("closing the decision log %s: %s", self.path, exc)
                with contextlib.suppress(OSError):
                    os.close(self._sync_fd)
        self._syncer.join(timeout=5)


def read_decisions(run_dir: str | Path, *, live: bool = False) -> list[dict[str, Any]]:
    """Read a run's decision log (`livescope.schema.read_jsonl`).

    A last line cut short (a crash mid-write; with ``live``, the one being
    written now) is left out; a damaged complete line raises `LivescopeError`
    naming it (until session 32 every unreadable line was skipped without a
    word). A run without a log reads as no decisions.
    """
    return read_jsonl(Path(run_dir) / DECISIONS_FILE, what="decision record", live=live)
