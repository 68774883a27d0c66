"""Shorter GIL switch interval while a latency-sensitive process runs.

CPython hands the GIL between busy threads every ``sys.getswitchinterval()``
seconds (5 ms by default), so a frame waiting in one thread while another thread
compresses a chunk or decodes a message can wait that long just to run. The
agent and the pipeline worker run with a 0.5 ms interval: throughput is the
same for our threads (they spend their time in numpy, zlib and ONNX Runtime,
which release the GIL) and the hand-over latency drops tenfold.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

__all__ = ["SWITCH_INTERVAL_S", "fast_thread_switching"]

SWITCH_INTERVAL_S = 0.0005


@contextlib.contextmanager
def fast_thread_switching(interval_s: float = SWITCH_INTERVAL_S) -> Iterator[None]:
    """Run the block with a shorter GIL switch interval; restore the old one after."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(min(old, interval_s))
    try:
        yield
    finally:
        sys.setswitchinterval(old)
