"""Benchmark of acquisition pacing: a worker slower than the camera must not disturb it.

The agent runs as its own process (`livescope agent`, real time, shared-memory
bus) on a time-lapse plan, once with no worker attached and once with a worker
that sleeps longer than the plan's interval after every frame. Each case
reports the recorded frames' intervals (camera timestamps) against the plan:
median, 95th percentile and maximum of |interval − plan|, and how late each
frame was against its place in the schedule. Issue 3's target: intervals within
10 % of the plan (95th percentile), and a slow worker costs drops on the analysis
path only, never a recorded frame.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from livescope.bus import machine_info
from livescope.schema import LivescopeError

__all__ = ["bench_pacing"]

PACING_TARGET = 0.10  # p95 |interval - plan| as a share of the plan (issue 3)
AGENT_GRACE_S = 60.0  # the agent's start and stop, beyond 3 x its plan's length
AGENT_STOP_S = 10.0  # for the agent to close its bus and recording once stopped, before a kill
EXPOSURE_MS = 20  # the plan's one channel
MIN_INTERVAL_EXPOSURES = 2  # (a shorter interval measures the camera, not the pacing)


def _slow_worker(run: Path, sleep_ms: float, stats: dict[str, Any]) -> None:
    """Attach to the run's bus and take a frame every ``sleep_ms`` (a worker that falls behind)."""
    from livescope.bus import BUS_FILE, attach

    deadline = time.monotonic() + 60
    while not (run / BUS_FILE).exists():
        if time.monotonic() > deadline:
            stats["error"] = f"the agent wrote no {BUS_FILE} within 60 s"
            return
        time.sleep(0.02)
    try:
        with attach(run, maxlen=4, decisions=False) as link:
            while (frame := link.frames.get(timeout=3.0)) is not None:
                frame.release()
                time.sleep(sleep_ms / 1000)
            stats.update(link.frames.stats())
    except LivescopeError as exc:  # surfaced by the caller, after the agent has finished
        stats["error"] = f"the slow worker could not attach: {exc}"
    except Exception as exc:  # noqa: BLE001 (raised by the caller: this case had no worker)
        stats["error"] = f"the slow worker failed: {type(exc).__name__}: {exc}"


def _case(
    folder: Path, plan: Path, frames: int, interval_ms: float, worker_sleep_ms: float | None
) -> dict[str, Any]:
    from livescope.record import read_frames

    run = folder / ("slow-worker" if worker_sleep_ms else "no-worker")
    cmd = [sys.executable, "-m", "livescope", "agent", "--plan", str(plan), "--out", str(run),
           "--time-acceleration", "1", "--json"]  # fmt: skip
    worker: dict[str, Any] = {}
    thread = None
    agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if worker_sleep_ms:
            thread = threading.Thread(
                target=_slow_worker, args=(run, worker_sleep_ms, worker),
                name="bench-slow-worker", daemon=True,
            )  # fmt: skip
            thread.start()
        timeout = AGENT_GRACE_S + 3 * frames * interval_ms / 1000
        try:
            out, err = agent.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LivescopeError(
                f"the agent did not finish within {timeout:.1f} s (case {run.name}, "
                f"{frames} frames every {interval_ms:g} ms): stopped; is the machine overloaded?"
            ) from None
    finally:  # (the agent stopped, whatever ended the case: a timeout, Ctrl+C)
        if agent.poll() is None:
            # (a Ctrl+C lets it release its shared memory and bus files, a kill does not; on
            # Windows it shares the console, whose Ctrl+C reached it already)
            if sys.platform != "win32":
                agent.send_signal(signal.SIGINT)
            try:
                agent.communicate(timeout=AGENT_STOP_S)
            except subprocess.TimeoutExpired:
                pass  # (killed below)
            finally:  # (a second Ctrl+C while it stops, too)
                if agent.poll() is None:
                    agent.kill()
                    agent.communicate()  # (waits, and closes its pipes)
    if agent.returncode != 0:
        raise LivescopeError(f"the agent failed (exit {agent.returncode}): {err.strip()[-2000:]}")
    if thread is not None:
        thread.join(30)
        if "error" in worker:
            raise LivescopeError(worker["error"])
        if thread.is_alive() or "delivered" not in worker:
            # (the case would report a run that no slow worker read as one with a slow worker)
            raise LivescopeError("the slow worker did not finish within 30 s of the agent")
    summary = json.loads(out)
    logged = read_frames(run)
    t_ns = np.array([f["t_camera_ns"] for f in logged], dtype=np.int64)
    gaps = np.diff(t_ns) / 1e6
    dev = np.abs(gaps - interval_ms)
    late = (t_ns - t_ns[0]) / 1e6 - interval_ms * np.arange(t_ns.size)
    late -= np.median(late)  # lateness against the schedule, its typical offset removed
    p95 = float(np.percentile(dev, 95))
    return {
        "case": run.name,
        "worker_sleep_ms": worker_sleep_ms,
        "frames_acquired": summary.get("frames_acquired"),
        "frames_recorded": len(logged),
        "dropped_recorded_frames": frames - len(logged),
        "analysis_delivered": worker.get("delivered") if worker_sleep_ms else None,
        "analysis_drops": worker.get("drops") if worker_sleep_ms else None,
        "interval_median_ms": round(float(np.median(gaps)), 2),
        "interval_dev_p50_ms": round(float(np.median(dev)), 2),
        "interval_dev_p95_ms": round(p95, 2),
        "interval_dev_max_ms": round(float(dev.max()), 2),
        "schedule_late_p95_ms": round(float(np.percentile(np.abs(late), 95)), 2),
        "meets_target": bool(p95 <= PACING_TARGET * interval_ms and len(logged) == frames),
    }


def bench_pacing(
    frames: int = 50, interval_ms: float = 100.0, worker_sleep_ms: float = 300.0
) -> dict[str, Any]:
    """Run the two cases side by side (no worker, slow worker); one JSON-able dict.

    Raises
    ------
    LivescopeError
        for fewer than 2 frames (no interval to measure), an interval that is
        not a finite number > 0 or is under `MIN_INTERVAL_EXPOSURES` times the
        plan's exposure (`EXPOSURE_MS`), a worker sleep that is not finite or does not
        exceed the interval (checked before anything runs), or a case that
        failed.

    """
    if frames < 2:
        raise LivescopeError(f"the plan needs at least 2 frames (1 interval), got {frames}")
    if not (interval_ms > 0 and math.isfinite(interval_ms)):
        raise LivescopeError(f"interval must be a finite number of ms > 0, got {interval_ms}")
    if interval_ms < MIN_INTERVAL_EXPOSURES * EXPOSURE_MS:  # (nor the camera keep it)
        raise LivescopeError(
            f"interval {interval_ms:g} ms is too short for the plan's {EXPOSURE_MS} ms exposure "
            "(the camera could not keep it, with a worker or without): give at least "
            f"{MIN_INTERVAL_EXPOSURES * EXPOSURE_MS} ms"
        )
    if not math.isfinite(worker_sleep_ms):
        raise LivescopeError(f"worker sleep must be a finite number of ms, got {worker_sleep_ms}")
    if worker_sleep_ms <= interval_ms:
        raise LivescopeError(
            f"worker sleep {worker_sleep_ms:g} ms must exceed the interval {interval_ms:g} ms "
            "(the point is a worker that cannot keep up)"
        )
    with tempfile.TemporaryDirectory(prefix="livescope-pacing-") as tmp:
        folder = Path(tmp)
        plan = folder / "plan.yaml"
        plan.write_text(
            "stage_positions: [{x: 0, y: 0, z: 0}]\n"
            f"channels: [{{config: DAPI, exposure: {EXPOSURE_MS:g}}}]\n"
            f"time_plan: {{interval: {interval_ms / 1000:g}, loops: {frames}}}\n",
            encoding="utf-8",
        )
        cases = [_case(folder, plan, frames, interval_ms, s) for s in (None, worker_sleep_ms)]
    free, slow = cases
    return {
        "bench": "pacing",
        "plan": {"frames": frames, "interval_ms": interval_ms, "exposure_ms": EXPOSURE_MS},
        "target_interval_dev_p95_ms": PACING_TARGET * interval_ms,
        "cases": cases,
        "slow_vs_free_dev_p95": round(
            slow["interval_dev_p95_ms"] / max(free["interval_dev_p95_ms"], 1e-3), 2
        ),
        "all_targets_met": all(c["meets_target"] for c in cases),
        "machine": machine_info(),
    }
