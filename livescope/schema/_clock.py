"""The clock of every timestamp a run compares across threads and processes.

Frames, decisions, analysis and stalls are stamped with `clock_ns`, so that their
differences are latencies even when the stamps come from different processes.
It is ``time.perf_counter_ns``: system-wide on Linux (``CLOCK_MONOTONIC``, the same
values as ``time.monotonic_ns``), on macOS, and on Windows since Python 3.10
(``QueryPerformanceCounter``, better than 1 µs). ``time.monotonic_ns`` would be
the same clock everywhere but on Windows before Python 3.13, where it counts in
steps of 15.6 ms (``GetTickCount64``): too coarse for a latency of a few ms.
"""

from __future__ import annotations

import time

__all__ = ["clock_ns"]

clock_ns = time.perf_counter_ns
"""Now, in ns (monotonic; only differences mean anything)."""
