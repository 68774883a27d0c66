"""`livescope worker` (counting frames) stops when the run ends, the frames after its last known.

It stopped only after ``--idle-s`` without frames, and a worker that gave up before the
agent closed its bus could not tell the frames lost after the last it received (the
run's end message, `livescope.bus._publisher.end_message`, says where the run ended).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

_PLAN = """stage_positions:
  - {x: 0, y: 0, z: 0, name: p0}
channels:
  - {config: DAPI, exposure: 10}
time_plan: {interval: 1, loops: 6}
"""

_IDLE_S = 300
"""The worker's idle wait: far longer than the test takes, so that only the run's end stops it."""


def test_a_counting_worker_stops_at_the_runs_end_and_knows_its_tail(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(_PLAN, encoding="utf-8")
    run = tmp_path / "run"
    agent = subprocess.Popen(
        [sys.executable, "-m", "livescope", "agent", "--plan", str(plan), "--out", str(run),
         "--time-acceleration", "5", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        try:
            worker = subprocess.run(
                [sys.executable, "-m", "livescope", "worker", str(run), "--idle-s", str(_IDLE_S),
                 "--json"],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.fail(f"the counting worker did not stop when the run ended ({_IDLE_S} s idle)")
        waited = time.monotonic() - t0
        out, err = agent.communicate(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, err
    assert worker.returncode == 0, worker.stderr
    stats = json.loads(worker.stdout)
    summary = json.loads(out.splitlines()[-1])
    assert stats["run_id"] == summary["run_id"]
    # the run's end came: the frames after the last received are known (0 here), not None
    assert stats["dropped_at_end"] == 0, stats
    assert stats["received"] + stats["missed_at_start"] + stats["drops"] == 6, stats
    assert waited < _IDLE_S / 2, waited
