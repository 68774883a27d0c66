"""Thread priorities: bulk work (engines, recording) yields the CPU to the hand-offs."""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref

__all__ = ["lower_thread_priority"]

logger = logging.getLogger("livescope")

_BASE: weakref.WeakKeyDictionary[threading.Thread, int] = weakref.WeakKeyDictionary()
"""Each lowered thread's niceness before livescope first lowered it."""


def lower_thread_priority(nice: int, thread: threading.Thread | None = None) -> bool:
    """Run a thread (default: the calling one) ``nice`` steps below its own priority.

    Linux gives each thread its own niceness, and a thread starts with its
    creator's. Idempotent: the step counts from the thread's niceness before
    livescope first lowered it (threads shared between runs, like zarr's, are
    not lowered again and again). Elsewhere, or with ``nice <= 0``, nothing
    changes. Niceness cannot be raised back without privileges: call it only
    for threads that do bulk work for the rest of their life.

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
        target = min(19, _BASE.setdefault(t, now) + nice)
        if now < target:
            os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError as exc:
        logger.warning("could not lower the priority of thread %s (%s)", t.name, exc)
        return False
    return True
