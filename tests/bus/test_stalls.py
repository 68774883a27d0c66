"""`StallMonitor`: machine stalls watched from a process of its own while a run goes on."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection

import pytest

from livescope.bus import STALL_MS, StallMonitor
from livescope.schema import LivescopeError, clock_ns


@pytest.mark.skipif(sys.platform == "win32", reason="stops the probe with SIGSTOP")
def test_a_probe_kept_from_running_is_a_stall_with_its_time() -> None:
    mon = StallMonitor(period_ms=1.0).start()
    time.sleep(0.2)
    proc = mon._proc  # the test stops the probe itself, as a stalled machine would
    assert proc is not None
    t0 = clock_ns()
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGCONT)
    t1 = clock_ns()
    time.sleep(0.2)
    out = mon.stop()
    assert out["stalls"] >= 1, out
    assert out["max_ms"] >= 40, out
    assert out["over_5ms_per_s"] > 0
    assert out["wakeups"] > 100  # it kept watching before and after
    assert 0.4 <= out["seconds"] <= 5
    # the stall's time is on the frames' clock: the stop's, not a time before it
    assert mon.during(t0, t1)
    long = [(t, late) for t, late in mon.stalls if late >= 40_000_000]
    assert long, mon.stalls
    assert all(t0 <= t <= t1 + 50_000_000 for t, _ in long), (t0, t1, long)


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
    assert set(mon.result) >= {"wakeups", "stalls", "max_ms"}  # (stopped at once: few wakeups)


def test_a_probe_that_died_is_a_clear_error_on_stop() -> None:
    mon = StallMonitor().start()
    proc = mon._proc
    assert proc is not None
    proc.kill()  # as the OS might kill it
    proc.wait()
    with pytest.raises(LivescopeError, match=r"probe process (has died|ended without answering)"):
        mon.stop()
    with pytest.raises(LivescopeError, match="not started"):
        mon.stop()  # the monitor is stopped either way


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_a_terminal_ctrl_c_does_not_stop_the_probe() -> None:
    """A terminal's Ctrl+C reaches the whole process group: the run stops its probe itself
    (it printed a KeyboardInterrupt traceback and the run lost its stall figures)."""
    mon = StallMonitor().start()
    proc = mon._proc
    assert proc is not None
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert proc.poll() is None
    assert mon.stop()["wakeups"] > 0


def _monitor_in_child(conn: Connection) -> None:
    try:
        with StallMonitor() as mon:
            time.sleep(0.1)
        conn.send(mon.result)
    except BaseException as exc:  # noqa: BLE001 (sent to the test, which fails with it)
        conn.send(repr(exc))


def test_the_monitor_runs_in_a_daemonic_process() -> None:
    """A replay on a Dask worker (a daemonic process, which may have no children) watches too."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_monitor_in_child, args=(child,), daemon=True)
    proc.start()
    assert parent.poll(60)
    out = parent.recv()
    proc.join()
    assert isinstance(out, dict), out
    assert out["wakeups"] > 10


@pytest.mark.skipif(sys.platform == "win32", reason="stops the probe with SIGSTOP")
def test_a_hung_probe_is_killed_and_named_not_waited_for() -> None:
    mon = StallMonitor().start()
    proc = mon._proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)  # it can no longer answer
    t0 = time.monotonic()
    with pytest.raises(LivescopeError, match="did not answer within"):
        mon.stop(timeout_s=0.5)
    assert time.monotonic() - t0 < 15  # 0.5 s for the answer, 5 s to exit, then killed
    assert proc.poll() is not None


def test_machine_info_names_the_cpu_and_times_the_reference_work() -> None:
    from livescope.bus import machine_info

    info = machine_info(rounds=3)
    assert set(info) == {"cpu", "logical_cpus", "cpu_reference_ms", "python", "platform"}
    assert isinstance(info["cpu"], str)
    assert info["cpu"]
    assert info["logical_cpus"] == os.cpu_count()
    assert 0 < info["cpu_reference_ms"] < 10_000
    with pytest.raises(LivescopeError, match="rounds must be at least 1"):
        machine_info(rounds=0)


def test_the_peak_memory_counts_what_the_process_held_at_its_busiest() -> None:
    # a fresh process touches 300 MB and lets it go: its peak says so afterwards
    # (a wrong unit, KiB taken for bytes or the reverse, is off a thousandfold)
    code = (
        "import numpy as np\n"
        "from livescope.bus import peak_memory_mb\n"
        "before = peak_memory_mb()\n"
        "a = np.ones(300 * 2**20, np.uint8); del a\n"
        "print(before, peak_memory_mb())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = (float(x) for x in out.stdout.split())
    assert 10 < before < 1000  # (MB of 2**20 bytes) the interpreter, numpy, livescope
    assert 300 <= after <= before + 300 + 50


def test_the_peak_memory_is_the_process_own_not_that_of_the_process_that_started_it() -> None:
    # a worker is started by the demo's process: Linux keeps ru_maxrss across exec, so
    # a child of a process holding 600 MB read 625 MB while it had held 55 MB itself
    code = "from livescope.bus import peak_memory_mb; print(peak_memory_mb())"
    parent = (
        "import subprocess, sys\n"
        "import numpy as np\n"
        "held = np.ones(600 * 2**20, np.uint8)\n"
        "sys.stdout.write(subprocess.run(sys.argv[1:], capture_output=True, text=True).stdout)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", parent, sys.executable, "-c", code],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert 10 < float(out.stdout) < 400  # (MB of 2**20 bytes) the interpreter, numpy, livescope
