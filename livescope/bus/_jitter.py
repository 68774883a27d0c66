"""How long this machine keeps a ready thread from running (``livescope bench jitter``).

Every hand-off in a run (a frame to the bus, a field to the decision thread, a
decision to the agent) is a thread waking up, and it costs at least what the
operating system and, on a virtual machine, the hypervisor take to run it. No
change to livescope can take a run's latency below that floor, so the
benchmark measures it, on the machine the run will use: a probe process sleeps
``period_ms`` in a loop and records how late each wake-up is, side by side in
one run

- ``idle``: with nothing of ours running;
- ``bulk``: with one busy process per core at normal priority (CPU engines
  left at the operating system's defaults);
- ``bulk_nice``: the same processes niced by `WORKER_NICE`;
- ``bulk_idle_class``: niced and in Linux's ``SCHED_IDLE`` class, as the
  worker's engine threads are by default (`livescope.schema.lower_thread_priority`).

The busy processes run numpy on a 4 MiB array (memory traffic, like an
engine's) in a single thread. Priorities are lowered with the project's own
`lower_thread_priority`: on Windows both lowered rounds run at the lowest thread
priority (see `livescope.schema`'s threads); where it cannot (macOS), they say
``"lowered": false`` and measure normal priority.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from livescope.schema import WORKER_NICE, LivescopeError, bulk_priority, lower_thread_priority

from ._stalls import LATE_MS, machine_info

if TYPE_CHECKING:  # (a multiprocessing pipe's end: a PipeConnection on Windows)
    if sys.platform == "win32":
        from multiprocessing.connection import PipeConnection as Connection
    else:
        from multiprocessing.connection import Connection

__all__ = ["JITTER_ROUNDS", "bench_jitter"]

JITTER_ROUNDS: dict[str, str | None] = {
    "idle": None,
    "bulk": "normal",
    "bulk_nice": "nice",
    "bulk_idle_class": "idle",
}
"""Round name → priority of its busy processes (None: no busy processes)."""


def _busy(priority: str, conn: Connection) -> None:
    """Load process: keep one core busy until told to stop; report the passes made."""
    _ignore_ctrl_c()
    lowered = False
    if priority != "normal":
        lowered = lower_thread_priority(WORKER_NICE, idle=priority == "idle")
    a = np.ones(1 << 20, np.float32)
    passes = 0
    conn.send(lowered)
    t0 = time.perf_counter()
    while not conn.poll():
        np.multiply(a, 1.0000001, out=a)
        passes += 1
    conn.send(passes / (time.perf_counter() - t0))


def _ignore_ctrl_c() -> None:
    """Leave a terminal's Ctrl+C, which reaches the whole process group, to the benchmark.

    Its ``_slice`` stops the busy processes and the probe itself; interrupted, each
    printed a KeyboardInterrupt traceback of its own (one per core).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _probe(period_s: float, seconds: float, conn: Connection) -> None:
    """Probe process: sleep ``period_s`` again and again; send each wake-up's lateness (ns)."""
    _ignore_ctrl_c()
    conn.send("ready")
    late: list[int] = []
    want = int(period_s * 1e9)
    end = time.perf_counter_ns() + int(seconds * 1e9)
    while (t0 := time.perf_counter_ns()) < end:
        time.sleep(period_s)
        late.append(max(0, time.perf_counter_ns() - t0 - want))
    conn.send(late)


def _summary(late_ns: list[int], seconds: float) -> dict[str, Any]:
    ms = np.asarray(late_ns, np.float64) / 1e6
    if not len(ms):
        raise LivescopeError("the jitter probe recorded no wake-up (is the machine suspended?)")
    return {
        "wakeups": len(ms),
        "late_ms": {
            "p50": round(float(np.percentile(ms, 50)), 4),
            "p99": round(float(np.percentile(ms, 99)), 4),
            "p999": round(float(np.percentile(ms, 99.9)), 4),
            "max": round(float(ms.max()), 4),
        },
        # significant figures, not decimals: one stall in an hour's round is not 0.0 a second
        "stalls_per_s": {f"over_{t:g}ms": _sig(float((ms > t).sum()) / seconds) for t in LATE_MS},
    }


def _usable_cpus() -> int:
    """Return how many cores this process may run on (the default number of busy processes).

    Those of its CPU affinity where the platform has one (Linux): a container's or a
    batch job's share of a large machine, not the whole machine's count, which would
    crowd its few cores with a busy process for every core it cannot use.
    """
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def _child_answer(conn: Connection, timeout_s: float, what: str) -> Any:
    """Receive a child process's next message; a LivescopeError naming ``what`` if none comes."""
    try:
        if conn.poll(timeout_s):
            return conn.recv()
    except (EOFError, OSError):  # the child died (its end of the pipe closed)
        raise LivescopeError(f"{what} ended without answering (see its error above)") from None
    raise LivescopeError(f"{what} did not answer within {timeout_s:.0f} s")


def _slice(
    priority: str | None, seconds: float, period_s: float, n_busy: int
) -> tuple[list[int], bool, float]:
    """Run one turn of a round.

    Returns the probe's lateness per wake-up (ns), whether the load was
    lowered, and its passes per second.
    """
    ctx = mp.get_context("spawn")
    busy: list[tuple[Any, Connection]] = []
    probe_parent, probe_child = ctx.Pipe()
    probe = ctx.Process(target=_probe, args=(period_s, seconds, probe_child), daemon=True)
    # (by the round's name: the priority "idle" is not the round called idle)
    name = next(n for n, p in JITTER_ROUNDS.items() if p == priority)
    what = f"a busy process of round {name!r}"
    try:
        lowered: list[bool] = []
        if priority is not None:
            for _ in range(n_busy):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_busy, args=(priority, child), daemon=True)
                proc.start()
                child.close()  # the child's end lives in the child: EOF here if it dies
                busy.append((proc, parent))
            lowered = [bool(_child_answer(parent, 60, what)) for _, parent in busy]
        probe.start()
        probe_child.close()
        _child_answer(probe_parent, 60, "the jitter probe")
        late: list[int] = _child_answer(probe_parent, seconds + 60, "the jitter probe")
        passes = 0.0
        for _, parent in busy:
            parent.send("stop")
        for _, parent in busy:
            passes += float(_child_answer(parent, 30, what))
        return late, bool(lowered) and all(lowered), passes
    finally:
        for _, parent in busy:  # stop them all first (a no-op for those already stopped)
            with contextlib.suppress(OSError):
                parent.send("stop")
        for proc, parent in busy:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            parent.close()
        if probe.is_alive():
            probe.kill()
        if probe.pid is not None:
            probe.join()
        probe_parent.close()


def bench_jitter(
    *, seconds: float = 10.0, period_ms: float = 1.0, busy: int | None = None, turns: int = 4
) -> dict[str, Any]:
    """Measure wake-up lateness with nothing running and beside busy processes.

    Parameters
    ----------
    seconds
        Length of each round. The rounds take turns, ``turns`` times each for
        ``seconds / turns``, so that a slow spell of the machine (its host's
        other guests, on a virtual machine) falls on every round alike.
    period_ms
        How long the probe sleeps each time.
    busy
        Busy processes in the loaded rounds (default: one per core this process
        may run on, its CPU affinity where the platform has one).
    turns
        How many times each round runs.

    Returns
    -------
    dict
        ``rounds`` (name → wake-ups, lateness percentiles in ms, stalls per
        second over 1, 2 and 5 ms), and ``ratios``: each loaded round's p99.9
        and stalls over 2 ms per second against ``idle``'s, and
        ``bulk_idle_class``'s against ``bulk``'s (how much of the load's cost
        the idle class takes away); None where the base is 0 (no stall over
        2 ms in the idle round is common). The p99.9, not the p99: a stall of
        a few ms is rarer than 1 wake-up in 100, so a p99 does not see it.
        A loaded round's ``busy_passes_per_s`` counts the busy processes'
        work from their start to the probe's end (the probe's start included).

    Raises
    ------
    LivescopeError
        if an argument or ``LIVESCOPE_BULK_PRIORITY`` is wrong, or a process
        does not start or finish.

    """
    # (inf: an OverflowError from multiprocessing's wait, after a probe had started)
    if not 0 < seconds < math.inf:
        raise LivescopeError(f"seconds must be a finite number > 0, got {seconds}")
    if not 0.05 <= period_ms <= 100:
        raise LivescopeError(f"period_ms must be between 0.05 and 100, got {period_ms}")
    n_busy = busy if busy is not None else _usable_cpus()
    if n_busy < 1:
        raise LivescopeError(f"busy must be >= 1, got {n_busy}")
    if turns < 1:
        raise LivescopeError(f"turns must be >= 1, got {turns}")
    bulk_priority()  # a wrong LIVESCOPE_BULK_PRIORITY is refused here, not in the busy processes
    late: dict[str, list[int]] = {name: [] for name in JITTER_ROUNDS}
    lowered: dict[str, list[bool]] = {name: [] for name in JITTER_ROUNDS}
    passes: dict[str, list[float]] = {name: [] for name in JITTER_ROUNDS}
    for _ in range(turns):
        for name, priority in JITTER_ROUNDS.items():
            ns, low, per_s = _slice(priority, seconds / turns, period_ms / 1000, n_busy)
            late[name] += ns
            lowered[name].append(low)
            passes[name].append(per_s)
    rounds: dict[str, dict[str, Any]] = {}
    for name, priority in JITTER_ROUNDS.items():
        rounds[name] = _summary(late[name], seconds)
        if priority is not None:
            rounds[name]["busy_processes"] = n_busy
            # all busy processes together, the mean over turns
            rounds[name]["busy_passes_per_s"] = round(float(np.mean(passes[name])), 1)
            if priority != "normal":
                rounds[name]["lowered"] = all(lowered[name])

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 3) if b > 0 else None

    # from the lateness itself, not the rounded summaries: a rare stall's rate rounds to
    # nothing, and the ratio of two rounded figures is off by their rounding
    p999 = {name: float(np.percentile(ns, 99.9)) for name, ns in late.items()}
    over_2ms = {name: sum(1 for x in ns if x > 2_000_000) for name, ns in late.items()}
    ratios: dict[str, float | None] = {}
    pairs = [(name, "idle") for name in list(JITTER_ROUNDS)[1:]] + [("bulk_idle_class", "bulk")]
    for name, base in pairs:
        ratios[f"{name}_vs_{base}_p999"] = ratio(p999[name], p999[base])
        ratios[f"{name}_vs_{base}_stalls_over_2ms"] = ratio(over_2ms[name], over_2ms[base])
    return {
        "bench": "jitter",  # (as every benchmark's JSON names itself)
        "benchmark": "jitter",  # (its name here until session 58, kept for scripts reading it)
        "machine": machine_info(),
        "seconds": seconds,
        "turns": turns,
        "period_ms": period_ms,
        "rounds": rounds,
        "ratios": ratios,
    }
