"""Machine stalls during a run: how often the PC kept a ready thread from running.

A run's latency can go no lower than the wake-ups of its threads, and a PC
(above all a virtual machine, or a Windows PC with a misbehaving driver) now and
then keeps a ready thread waiting for milliseconds. `StallMonitor` watches for
that while a run goes on, from a small process of its own (so it never waits for
livescope's own locks): it sleeps ``period_ms`` again and again and keeps each
wake-up more than 2 ms late, stamped on the clock the frames are stamped with
(`livescope.schema.clock_ns`), so that a slow field can be told apart from a stalled
machine. `livescope bench jitter` measures the same floor with nothing else
running. `machine_info` names the PC's CPU and times a fixed piece of Python
work on it, so that figures from two PCs can be compared.

The probe's sleep must itself wake on time: on Windows, Python (3.11 on) sleeps
on a high-resolution timer from Windows 10 version 1803 on; on an older Windows
a sleep ends on the system's timer tick (~15.6 ms unless a program has asked
for less), and nearly every wake-up then reads as a stall.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Any

from livescope.schema import LivescopeError

__all__ = ["LATE_MS", "STALL_MS", "StallMonitor", "machine_info", "peak_memory_mb"]

STALL_MS = 2.0
"""A wake-up later than this is a stall (kept with its time)."""
MAX_KEPT = 20_000
"""Stalls kept with their times (a week of one every 30 s); later ones are only counted."""
LATE_MS = (1.0, 2.0, 5.0)
"""Thresholds (ms) of late wake-ups counted per second (here and in `livescope bench jitter`)."""
_WHO = "the stall monitor's probe process"


_PROBE = """
import json, signal, sys, threading, time

signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl+C: the run stops it (stdin)

period_s, over_ns = float(sys.argv[1]), json.loads(sys.argv[2])
stall_ns, max_kept = int(sys.argv[3]), int(sys.argv[4])
stop = threading.Event()

def wait_for_stop():
    sys.stdin.readline()  # "stop", or EOF when the parent is gone
    stop.set()

threading.Thread(target=wait_for_stop, daemon=True).start()
want = int(period_s * 1e9)
counts = [0] * len(over_ns)
kept = []
wakeups = worst = 0
t_begin = time.perf_counter_ns()
print(json.dumps({"t_begin_ns": t_begin}), flush=True)
while not stop.is_set():
    t0 = time.perf_counter_ns()
    time.sleep(period_s)
    t1 = time.perf_counter_ns()
    late = t1 - t0 - want
    wakeups += 1
    if late > over_ns[0]:
        worst = max(worst, late)
        for i, o in enumerate(over_ns):
            if late > o:
                counts[i] += 1
        if late > stall_ns and len(kept) < max_kept:
            kept.append((t1, late))  # when it woke (a later reading may be stalled again)
out = {"t_begin_ns": t_begin, "t_end_ns": time.perf_counter_ns(), "wakeups": wakeups,
       "counts": counts, "worst_ns": worst, "stalls": kept}
try:
    print(json.dumps(out), flush=True)
except OSError:
    pass  # the parent is gone
"""
"""The probe process's program: self-contained (no livescope import, so it starts
fast and runs whatever the parent's import path). It times and stamps on
``time.perf_counter_ns``, the frames' clock (`livescope.schema.clock_ns`). One
JSON line when it watches, one when stdin says stop (or closes).
"""


def machine_info(rounds: int = 5) -> dict[str, Any]:
    """Name the PC's CPU and time a fixed piece of Python work on it (the calling thread).

    A run's pipeline overhead is Python work on a few threads, so it grows on a
    slower CPU: ``cpu_reference_ms`` (the median of ``rounds`` runs of the same
    150,000-step loop, ~10-40 ms each) lets figures from two PCs be compared.
    Call it before or after a run, not during one (other busy programs on the
    PC, other runs included, slow it too). Returns ``cpu`` (the model name, or
    what the platform reports), ``logical_cpus``, ``cpu_reference_ms``,
    ``python`` (its version) and ``platform``.
    """
    if rounds < 1:
        raise LivescopeError(f"rounds must be at least 1, got {rounds}")
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        _reference_work()
        times.append(1000 * (time.perf_counter() - t0))
    return {
        "cpu": _cpu_name(),
        "logical_cpus": os.cpu_count(),
        "cpu_reference_ms": round(statistics.median(times), 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def peak_memory_mb() -> float | None:
    """Return the most memory this process has held resident so far, in MB of 2**20 bytes.

    The operating system's own figure (Linux ``VmHWM`` of ``/proc/self/status``,
    macOS ``ru_maxrss``, Windows the peak working set): what the process needed
    at its busiest, e.g. to size the PC for a run. Sampling cannot miss a peak
    this way. None where it cannot be read.

    (Not ``ru_maxrss`` on Linux: it is kept across exec, so a worker started by
    a process that had held 600 MB read at least 600 MB, whatever it held itself.)
    """
    if sys.platform == "win32":
        peak_mb = _windows_peak_working_set_mb()
    elif (hwm_kib := _linux_high_water_kib()) is not None:
        peak_mb = round(hwm_kib / (1 << 10), 1)
    else:
        import resource

        peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        peak_mb = round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)  # B / KiB
    return peak_mb


def _linux_high_water_kib() -> int | None:
    """Return this process's resident high-water mark in KiB (Linux); None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])  # ("VmHWM:    56636 kB")
    except (OSError, ValueError, IndexError):
        pass
    return None


def _windows_peak_working_set_mb() -> float | None:
    """Return the peak working set (``GetProcessMemoryInfo``); None where it cannot be read."""
    if sys.platform == "win32":
        import ctypes
        from ctypes import wintypes

        class Counters(ctypes.Structure):
            _fields_ = [
                ("cb", wintypes.DWORD),
                ("PageFaultCount", wintypes.DWORD),
                ("PeakWorkingSetSize", ctypes.c_size_t),
                ("WorkingSetSize", ctypes.c_size_t),
                ("QuotaPeakPagedPoolUsage", ctypes.c_size_t),
                ("QuotaPagedPoolUsage", ctypes.c_size_t),
                ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t),
                ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
                ("PagefileUsage", ctypes.c_size_t),
                ("PeakPagefileUsage", ctypes.c_size_t),
            ]

        counters = Counters()
        counters.cb = ctypes.sizeof(Counters)
        try:
            process = ctypes.windll.kernel32.GetCurrentProcess()
            if ctypes.windll.psapi.GetProcessMemoryInfo(
                process, ctypes.byref(counters), counters.cb
            ):
                return round(float(counters.PeakWorkingSetSize) / (1 << 20), 1)
        except (OSError, AttributeError):
            pass
    return None


def _reference_work() -> int:
    """Do the fixed work `machine_info` times: dict look-ups, arithmetic and branches."""
    counts: dict[int, int] = {}
    acc = 0
    for i in range(150_000):
        k = i & 255
        counts[k] = counts.get(k, 0) + 1
        acc += i if i & 1 else -i
    return acc + len(counts)


def _cpu_name() -> str:
    if sys.platform.startswith("linux"):
        with (
            contextlib.suppress(OSError),
            open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f,
        ):
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "unknown"


class StallMonitor:
    """Watch the machine for stalls while a run goes on (a context manager).

    Parameters
    ----------
    period_ms
        How long the probe sleeps each time (2 ms: ~480 wake-ups a second,
        about 1 % of one core on a 2-core virtual machine, where each wake-up
        costs the probe ~25 µs of CPU).

    Examples
    --------
    >>> with StallMonitor() as mon:  # doctest: +SKIP
    ...     run()
    >>> mon.result["over_2ms_per_s"]  # doctest: +SKIP

    """

    def __init__(self, period_ms: float = 2.0) -> None:
        if not 0.1 <= period_ms <= 100:
            raise LivescopeError(f"period_ms must be between 0.1 and 100, got {period_ms}")
        self.period_ms = period_ms
        self.result: dict[str, Any] | None = None
        """The summary, once stopped (see `stop`)."""
        self.stalls: list[tuple[int, int]] = []
        """(woke at, late by) in ns (`clock_ns`) of each stall over `STALL_MS`, once stopped."""
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 60.0) -> StallMonitor:
        """Start the probe process; return once it watches.

        Raises
        ------
        LivescopeError
            if the probe does not start within ``timeout_s``.
        OSError
            if the probe's process cannot be started (no interpreter at
            ``sys.executable``).

        """
        if self._proc is not None:
            raise LivescopeError("the stall monitor is already running")
        # a monitor started again answers for this watch only: an earlier one's figures,
        # kept should this one's stop fail, would pass for this run's
        self.result, self.stalls = None, []
        # a plain process, not multiprocessing: runs also where the caller is a daemonic
        # process (a Dask worker replaying a dataset), which may not have children
        args = [
            str(self.period_ms / 1000),
            json.dumps([int(t * 1e6) for t in LATE_MS]),
            str(int(STALL_MS * 1e6)),
            str(MAX_KEPT),
        ]
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _PROBE, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),  # no console (Windows)
        )
        try:
            self._line(timeout_s)
        except BaseException:  # a Ctrl+C too: the probe would run on until the program ends
            self._kill()
            raise
        return self

    def _line(self, timeout_s: float) -> dict[str, Any]:
        """Read the probe's next JSON line (a LivescopeError if none comes in time)."""
        proc = self._proc
        if proc is None or proc.stdout is None:  # pragma: no cover (started before)
            raise LivescopeError("the stall monitor was not started")
        stdout = proc.stdout
        got: list[str] = []
        # a thread, since a pipe cannot be waited on with a timeout on Windows
        reader = threading.Thread(target=lambda: got.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        if reader.is_alive():
            raise LivescopeError(f"{_WHO} did not answer within {timeout_s:.0f} s")
        if not got or not got[0].strip():
            raise LivescopeError(f"{_WHO} ended without answering (see its error above)")
        try:
            data: dict[str, Any] = json.loads(got[0])
        except ValueError:
            raise LivescopeError(f"{_WHO} answered {got[0][:80]!r}, not JSON") from None
        return data

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Stop the probe; return (and keep as `result`) what it saw.

        Keys: ``period_ms``, ``seconds`` watched, ``wakeups``,
        ``over_1ms_per_s`` / ``over_2ms_per_s`` / ``over_5ms_per_s`` (late
        wake-ups per second), ``max_ms`` (the latest one, 0 when none was over
        1 ms) and ``stalls`` (how many were over `STALL_MS`).

        Raises
        ------
        LivescopeError
            if the monitor was not started or its probe does not answer.

        """
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise LivescopeError("the stall monitor was not started")
        try:
            try:
                proc.stdin.write("stop\n")
                proc.stdin.flush()
            except OSError:
                raise LivescopeError(f"{_WHO} has died") from None
            raw = self._line(timeout_s)
        finally:
            self._kill()
        try:
            seconds = max(1e-9, (int(raw["t_end_ns"]) - int(raw["t_begin_ns"])) / 1e9)
            stalls = [(int(t), int(late)) for t, late in raw["stalls"]]
            counts = [int(c) for c in raw["counts"]]
            result = {
                "period_ms": self.period_ms,
                "seconds": round(seconds, 2),
                "wakeups": int(raw["wakeups"]),
                # significant figures, not decimals: a few stalls in a run of hours are not 0.0
                **{
                    f"over_{o:g}ms_per_s": float(f"{c / seconds:.4g}")
                    for o, c in zip(LATE_MS, counts, strict=True)
                },
                "max_ms": round(int(raw["worst_ns"]) / 1e6, 3),
                "stalls": counts[LATE_MS.index(STALL_MS)],
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise LivescopeError(f"{_WHO} answered an unexpected report ({exc!r})") from None
        self.stalls, self.result = stalls, result
        return result

    def during(self, start_ns: int, end_ns: int) -> bool:
        """Return whether a stall (over `STALL_MS`) overlapped ``[start_ns, end_ns]``.

        Times are `clock_ns` ns. A stall spans the time its thread was kept
        waiting: from ``late`` ns before it woke until it woke. Call after `stop`.
        """
        return any(t - late <= end_ns and t >= start_ns for t, late in self.stalls)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the probe stops by itself at EOF
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            # only now: a reader still blocked on it (an answer that timed out) holds its
            # lock until the probe has exited
            with contextlib.suppress(OSError):
                proc.stdout.close()

    def __enter__(self) -> StallMonitor:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            if exc_type is None:
                self.stop()
            else:  # the run failed: the monitor must not hide why
                with contextlib.suppress(LivescopeError):
                    self.stop()
