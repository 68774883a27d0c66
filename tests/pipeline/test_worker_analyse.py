"""``livescope worker --analyse`` on a running agent: every field analysed in one pass."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
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
        "time_plan: {interval: 600, loops: 6}\n"  # 5 s apart at 120x: a 25 s acquisition
        "policies: [{name: seen, when: {cell_count: {above: 0}}, do: {record: {}}}]\n"
    )
    run = tmp_path / "run"
    # started first: the run's plan (its policies) and profile are not there yet
    worker = _cli("worker", str(run), "--analyse", "--backend", "onnxruntime", "--json")
    assert worker.stderr is not None
    said = ""
    while "waiting" not in said and (line := worker.stderr.readline()):
        said += line
    assert "waiting up to 30 s for an agent" in said
    time.sleep(5)  # (time enough to have made itself without a plan, as it did before)
    # the worker loads and warms up its engines once the agent has started (5 s on a host of
    # Python reference ~65 ms) and only then attaches: at the sim's 600x the 6 s acquisition
    # had ended by then and no field was analysed live (session 43's CI)
    agent = _cli(
        "agent", "--plan", str(plan), "--out", str(run), "--bus", "inline",
        "--time-acceleration", "120", "--json",
    )  # fmt: skip
    out, err = agent.communicate(timeout=300)
    assert agent.returncode == 0, err
    wout, werr = worker.communicate(timeout=300)
    werr = said + werr
    assert worker.returncode == 0, werr
    summary, result = json.loads(out), json.loads(wout)
    assert summary["frames_acquired"] == 24
    # every field is analysed once: live, or read back from the recording when the
    # worker attached after its frames were sent
    assert result["fields_analysed"] == 12
    assert result["frames_analysed"] == 24
    from_recording = result.get("frames_dropped_live", 0) + result.get(
        "frames_completed_from_recording", 0
    )
    assert result["frames_received"] + from_recording >= 24
    # the later fields live: the worker attached while the agent acquired
    assert result["frames_received"] > 0, f"none live (warm-up {result['warm_up_s']} s)"
    assert {"stain", "segment", "track", "states", "end_to_end", "overhead"} <= set(
        result["latency_ms"]
    )
    with (run / "results" / "cells.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == result["cells"] > 8
    assert {r["position"] for r in rows} == {"A", "B"}
    assert {int(r["t"]) for r in rows} == set(range(6))
    assert all(int(r["track"]) > 0 and r["state"] for r in rows)
    assert sorted((run / "results" / "ctc" / "A").glob("mask*.tif"))[-1].name == "mask005.tif"
    assert (run / "results" / "ctc" / "A" / "res_track.txt").read_text().strip()
    # the plan's policy ran (a worker made before its agent had started ran none)
    fired = [json.loads(x) for x in (run / "results" / "policy.jsonl").read_text().splitlines()]
    assert sorted(f["position"] for f in fired if f["rule"] == "seen") == ["A", "B"]
    assert "no profile.yaml" not in werr  # the run's own profile, not the shipped sim
    # the result was swapped in and the live masks it was made from removed
    assert sorted(p.name for p in (run / "results" / "ctc").iterdir()) == ["A", "B"]


def _behind_run(
    tmp_path: Path, policies: list[dict] | None
) -> tuple[dict, dict, list[int], list[dict]]:
    """A run whose time points come faster than the engines; its summaries, stained t, latency."""
    from livescope.pipeline import WorkerConfig, run_adaptive
    from livescope.schema import load_profile
    from livescope.scope import demo_sequence

    prof = load_profile("sim")
    # time points 1 sample second apart (~2 ms at the sim's 600x): faster than any engine
    seq = demo_sequence(prof, timepoints=5, positions=1, interval_s=1.0)
    out = tmp_path / "run"
    cfg = WorkerConfig(stain_every=1, backend="onnxruntime")
    summary = run_adaptive(prof, seq, out, policies=policies, worker=cfg, watch_stalls=False)
    work = json.loads((out / "results" / "worker.json").read_text())
    rows = [json.loads(x) for x in (out / "results" / "latency.jsonl").read_text().splitlines()]
    assert sorted(r["t"] for r in rows) == [0, 1, 2, 3, 4]  # every field analysed
    stained = sorted(r["t"] for r in rows if "stain" in r["ms"])
    with (out / "results" / "cells.csv").open() as f:  # every time point has its cells
        cells = list(csv.DictReader(f))
    assert {int(r["t"]) for r in cells} == set(range(5))
    # each cell's mean virtual stain, in the fields that were stained only
    for r in cells:
        if int(r["t"]) in stained:
            assert 0.0 <= float(r["stain"]) <= 1.5, r
        else:
            assert r["stain"] == "", r
    return summary, work, stained, rows


def test_a_worker_a_time_point_behind_skips_the_overlays_stain(tmp_path: Path) -> None:
    from livescope.pipeline._demo import analysis_pace
    from livescope.schema import load_profile

    summary, work, stained, _ = _behind_run(tmp_path, None)
    # each field either has its stain or was counted: none lost without a word
    assert work["stains_skipped_behind"] + len(stained) == 5
    assert work["stains_skipped_behind"] >= 1
    assert 4 in stained  # the last time point: nothing later waits behind it
    assert summary["stains_skipped_behind"] == work["stains_skipped_behind"]
    assert summary["analysis_behind_s"] == work["behind_s"]  # one figure, from the log
    # the pace the run went at, and the slower one its analysis kept
    assert summary["time_acceleration"] == load_profile("sim").simulation.time_acceleration
    assert summary["analysis_pace"] == analysis_pace(
        summary["time_acceleration"], summary["duration_s"], summary["analysis_behind_s"]
    )


def test_the_analysis_pace_follows_how_far_behind_a_run_ended() -> None:
    from livescope.pipeline._demo import analysis_pace

    # 100 s acquired at 40x, analysed by 25 s after: the engines kept 0.8 of that pace
    assert analysis_pace(40.0, 100.0, {"max": 30.0, "last": 25.0}) == 32.0
    assert analysis_pace(40.0, 100.0, {"max": 30.0, "last": 0.6}) is None  # it kept up
    assert analysis_pace(None, 100.0, {"max": 30.0, "last": 25.0}) is None  # a rig
    assert analysis_pace(40.0, 0.0, {"max": 0.0, "last": 0.0}) is None
    assert analysis_pace(1.0, 1.0, {"max": 900.0, "last": 900.0}) == 0.1  # its floor


def test_a_worker_whose_policies_read_the_stain_never_skips_it(tmp_path: Path) -> None:
    rule = {"name": "stained", "when": {"feature": {"feature": "stain", "above": 0.5}},
            "do": {"record": {}}}  # fmt: skip
    summary, work, stained, rows = _behind_run(tmp_path, [rule])
    assert stained == [0, 1, 2, 3, 4]
    assert work["stains_skipped_behind"] == 0
    # it was behind: its time points, taken ms apart, waited for the fields' engines (the
    # latest-waiting field at least as long as a field's stain takes, whatever the
    # machine's speed; a few ms of transport if it had kept up)
    stain_ms = sorted(r["ms"]["stain"] for r in rows)
    assert summary["analysis_behind_s"]["max"] * 1000 >= stain_ms[len(stain_ms) // 2]
