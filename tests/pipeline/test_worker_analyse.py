"""``livescope worker --analyse`` on a running agent: every field analysed in one pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.slow


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "livescope", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip


def test_worker_analyses_each_field_of_a_running_acquisition(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "stage_positions: [{x: 0, y: 0, z: 0, name: A}, {x: 300, y: 100, z: 0, name: B}]\n"
        "channels: [{config: Phase, exposure: 10}, {config: DAPI, exposure: 30}]\n"
        "time_plan: {interval: 600, loops: 6}\n"  # 1 s apart at the sim's 600x
    )
    run = tmp_path / "run"
    cells = tmp_path / "cells.jsonl"
    worker = _cli("worker", str(run), "--analyse", "--maxlen", "64", "--idle-s", "5",
                  "--backend", "onnxruntime", "--cells-out", str(cells), "--json")  # fmt: skip
    agent = _cli("agent", "--plan", str(plan), "--out", str(run), "--bus", "inline", "--json")
    out, err = agent.communicate(timeout=300)
    assert agent.returncode == 0, err
    wout, werr = worker.communicate(timeout=300)
    assert worker.returncode == 0, werr
    summary, result = json.loads(out), json.loads(wout)
    assert summary["frames_acquired"] == 24
    # a worker that attaches while the run starts may miss its first frames (not drops);
    # from then on nothing is lost, and every field is analysed once
    assert result["delivered"] >= 18, json.dumps(result)
    assert result["drops"] == 0
    a = result["analysis"]
    assert a["fields"] in (result["delivered"] // 2, result["delivered"] // 2 + 1)
    assert a["nuclear_source"] == {"fluorescence": a["fields"]}
    assert set(a["ms_p50"]) == {"stain", "segment", "track", "states"}
    rows = [json.loads(line) for line in cells.read_text().splitlines()]
    assert len(rows) == a["cells"] > 8
    assert {r["position"] for r in rows} == {"A", "B"}
    assert {3, 4, 5} <= {r["t"] for r in rows}
    assert all(r["track"] > 0 and r["state"] for r in rows)
