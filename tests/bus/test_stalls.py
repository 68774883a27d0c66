"""`StallMonitor`: machine stalls watched from a process of its own while a run goes on."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from livescope.bus import STALL_MS, StallMonitor
from livescope.schema import LivescopeError


@pytest.mark.skipif(sys.platform == "win32", reason="stops the probe with SIGSTOP")
def test_a_probe_kept_from_running_is_a_stall_with_its_time() -> None:
    mon = StallMonitor(period_ms=1.0).start()
    time.sleep(0.2)
    proc = mon._proc  # the test stops the probe itself, as a stalled machine would
    t0 = time.monotonic_ns()
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGCONT)
    t1 = time.monotonic_ns()
    time.sleep(0.2)
    out = mon.stop()
    assert out["stalls"] >= 1, out
    assert out["max_ms"] >= 40, out
    assert out["over_5ms_per_s"] > 0
    assert out["wakeups"] > 100  # it kept watching before and after
    assert 0.4 <= out["seconds"] <= 5
    # the stall's time is on the frames' clock: it overlaps the stop, not a time before it
    assert mon.during(t0, t1)
    assert not mon.during(t0 - 10**9, t0 - 10**8)


def test_overlap_of_a_stall_with_a_span() -> None:
    mon = StallMonitor()
    late = int(3 * STALL_MS * 1e6)
    mon.stalls = [(10_000_000, late)]  # woke at 10 ms, kept waiting from 4 ms
    assert mon.during(0, 5_000_000)
    assert mon.during(9_000_000, 20_000_000)
    assert not mon.during(0, 3_000_000)  # before it began
    assert not mon.during(10_000_001, 20_000_000)  # after it ended


def test_monitor_misuse_is_refused() -> None:
    with pytest.raises(LivescopeError, match="period_ms"):
        StallMonitor(period_ms=0.0)
    with pytest.raises(LivescopeError, match="not started"):
        StallMonitor().stop()
    with StallMonitor() as mon, pytest.raises(LivescopeError, match="already running"):
        mon.start()
    assert mon.result is not None  # stopped on leaving the block
    assert mon.result["wakeups"] > 0


def test_a_probe_that_died_is_a_clear_error_on_stop() -> None:
    mon = StallMonitor().start()
    mon._proc.kill()  # as the OS might kill it
    mon._proc.join()
    with pytest.raises(LivescopeError, match=r"probe process (has died|ended without answering)"):
        mon.stop()
    with pytest.raises(LivescopeError, match="not started"):
        mon.stop()  # the monitor is stopped either way
