"""Latency-sensitive threads: a short GIL switch interval, no garbage collection mid-way.

CPython hands the GIL between busy threads every ``sys.getswitchinterval()``
seconds (5 ms by default), so a frame waiting in one thread while another thread
compresses a chunk or decodes a message can wait that long just to run. The
agent and the pipeline worker run with a 0.5 ms interval: throughput is the
same for our threads (they spend their time in numpy, zlib and ONNX Runtime,
which release the GIL) and the hand-over latency drops tenfold.

CPython's cyclic garbage collector runs in whichever thread allocates past its
threshold, holding the GIL: 0.1-2 ms for the younger generations in the agent
and the worker, and a burst of decisions allocates enough to start one
mid-burst (in the demo, reproducibly the same one). `collection_deferred` keeps
it from starting inside a block; what it would have collected waits for the
next allocation after.

On Windows a timed wait (an event's or a lock's timeout, a socket poll) ends
on the system timer's tick, ~15.6 ms unless a process asks for a finer one:
the agent's 5 ms lead before each event and the worker's 2 ms hand-off wait
would be late by up to a tick. `fast_thread_switching` also asks Windows for
a 1 ms timer (``timeBeginPeriod``; since Windows 10 2004 it applies to the
asking process only) and gives it back after. Not yet run on Windows.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
from collections.abc import Iterator

__all__ = [
    "SWITCH_INTERVAL_S",
    "collection_deferred",
    "fast_thread_switching",
    "fine_system_timer",
]

SWITCH_INTERVAL_S = 0.0005


_switch_lock = threading.Lock()
_switch_asked: list[float] = []  # the interval each block now running asked for
_switch_was = 0.0  # the interval before the first of them began


@contextlib.contextmanager
def fast_thread_switching(interval_s: float = SWITCH_INTERVAL_S) -> Iterator[None]:
    """Run the block with a shorter GIL switch interval (and, on Windows, a 1 ms timer).

    Both are restored after. Blocks on several threads, or nested, are
    counted (the agent's and the worker's may run in one process, and end in
    any order): the shortest interval asked for holds while any runs, and the
    interval from before the first one began is restored when the last ends.
    """
    global _switch_was
    with _switch_lock:
        if not _switch_asked:
            _switch_was = sys.getswitchinterval()
        sys.setswitchinterval(min([_switch_was, interval_s, *_switch_asked]))
        _switch_asked.append(interval_s)
    try:
        with fine_system_timer():
            yield
    finally:
        with _switch_lock:
            _switch_asked.remove(interval_s)
            sys.setswitchinterval(min([_switch_was, *_switch_asked]))


@contextlib.contextmanager
def fine_system_timer(ms: int = 1) -> Iterator[bool]:
    """Ask Windows for an ``ms`` timer resolution inside the block; yield whether it was given.

    Elsewhere (Linux, macOS: timed waits are not rounded to a tick) nothing
    changes and it yields False.
    """
    if sys.platform == "win32":
        import ctypes

        try:
            winmm = ctypes.WinDLL("winmm")
            given = winmm.timeBeginPeriod(ms) == 0  # TIMERR_NOERROR
        except (OSError, AttributeError):
            given = False
        try:
            yield given
        finally:
            if given:
                winmm.timeEndPeriod(ms)
    else:
        yield False


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = False


@contextlib.contextmanager
def collection_deferred() -> Iterator[None]:
    """Run the block with CPython's cyclic garbage collector paused (in every thread).

    For short, latency-sensitive blocks only (answering a message of decisions,
    a field's policies): reference counting still frees what is not in a
    cycle, and the collector runs again at the first allocation past its
    threshold after the block. Blocks on several threads, or nested, are
    counted: the collector resumes when the last one ends, and only if it
    was enabled when the first one began.
    """
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_was_enabled:
                gc.enable()
