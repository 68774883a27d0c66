"""Thread priorities: bulk work (engines, recording) yields the CPU to the hand-offs."""

from __future__ import annotations

import logging
import os
import sys
import threading

__all__ = ["lower_thread_priority"]

logger = logging.getLogger("livescope")

_base: list[int] = []
"""The process's own niceness: that of the first thread lowered, before it was."""
_base_lock = threading.Lock()


def lower_thread_priority(nice: int, thread: threading.Thread | None = None) -> bool:
    """Run a thread (default: the calling one) ``nice`` steps below the process's priority.

    Linux gives each thread its own niceness, and a thread starts with its
    creator's. The step counts from the process's niceness (that of the first
    thread lowered, taken before it was), not the thread's: lowering is
    idempotent, threads shared between runs (zarr's) are not lowered again and
    again, and a thread started by a lowered one is not lowered twice.
    Elsewhere, or with ``nice <= 0``, nothing changes. Niceness cannot be
    raised back without privileges: call it only for threads that do bulk
    work for the rest of their life.

    Returns
    -------
    bool
        True if the priority was lowered.

    """
    if nice <= 0 or not sys.platform.startswith("linux"):
        return False
    t = thread or threading.current_thread()
    tid = t.native_id
    if tid is None:  # not started
        return False
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        with _base_lock:
            if not _base:
                _base.append(now)
        target = min(19, _base[0] + nice)
        if now < target:
            os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError as exc:
        logger.warning("could not lower the priority of thread %s (%s)", t.name, exc)
        return False
    return True
