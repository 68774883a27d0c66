"""`clock_ns`: one clock for stamps compared across processes, fine enough for ms latencies."""

from __future__ import annotations

import subprocess
import sys
import time

from livescope.schema import clock_ns


def test_stamps_from_another_process_fall_between_ours() -> None:
    before = clock_ns()
    out = subprocess.run(
        [sys.executable, "-c", "from livescope.schema import clock_ns; print(clock_ns())"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    after = clock_ns()
    assert before <= int(out.stdout) <= after


def test_resolution_is_far_below_a_millisecond() -> None:
    steps = []
    last = clock_ns()
    while len(steps) < 20:
        now = clock_ns()
        if now != last:
            steps.append(now - last)
            last = now
    assert min(steps) < 100_000, steps  # 0.1 ms (monotonic_ns on Windows < 3.13: 15.6 ms)
    assert time.get_clock_info("perf_counter").monotonic
