from __future__ import annotations

import json

import pytest

from livescope.schema import load_profile
from livescope.scope import CAMERA_TARGETS_FPS, bench_camera
from tests.conftest import run_cli


def test_bench_reports_each_size_and_channel_with_ratio() -> None:
    result = bench_camera(load_profile("sim"), sizes=(512,), seconds=0.2)
    assert [r["channel"] for r in result["results"]] == ["Phase", "DAPI"]
    for r in result["results"]:
        assert r["frames"] >= 3
        assert r["ratio_to_target"] == pytest.approx(r["fps"] / CAMERA_TARGETS_FPS[512], abs=2e-3)
        assert r["meets_target"] == (r["fps"] >= CAMERA_TARGETS_FPS[512])


def test_bench_cli_prints_one_json_object() -> None:
    res = run_cli("bench", "camera", "--seconds", "0.2")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert {tuple(r["shape"]) for r in out["results"]} == {(512, 512), (2048, 2048)}


def test_bench_bus_runs_side_by_side() -> None:
    from livescope.bus import bench_bus

    out = bench_bus(sizes=(512,), paced_seconds=0.5, repeats=1)
    modes = {r["mode"] for r in out["results"]}
    assert modes == {"raw", "inline", "shm", "memcpy"}
    assert {"inline_vs_raw", "shm_vs_memcpy", "drops"} <= set(out)
    assert {p["mode"] for p in out["paced"]} == {"inline", "shm"}
    for r in out["results"]:
        if r["mode"] != "memcpy":
            assert r["received"] == r["frames"], r  # flat-out runs lose nothing


def test_bench_pacing_runs_the_agent_with_and_without_a_slow_worker() -> None:
    res = run_cli(
        "bench", "pacing", "--frames", "20", "--interval-ms", "50", "--worker-sleep-ms", "200"
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    free, slow = out["cases"]
    assert (free["case"], slow["case"]) == ("no-worker", "slow-worker")
    for case in (free, slow):
        assert case["frames_recorded"] == case["frames_acquired"] == 20
        assert case["dropped_recorded_frames"] == 0
        assert case["meets_target"] == (case["interval_dev_p95_ms"] <= 5.0)
    assert free["analysis_drops"] is None
    assert slow["analysis_drops"] > 0  # the worker cannot keep up: drops, on its path only
    assert slow["analysis_delivered"] + slow["analysis_drops"] == 20
    assert out["all_targets_met"] == (free["meets_target"] and slow["meets_target"])


def test_bench_pacing_refuses_a_worker_that_keeps_up() -> None:
    res = run_cli("bench", "pacing", "--interval-ms", "100", "--worker-sleep-ms", "50")
    assert res.returncode != 0
    assert "must exceed the interval" in res.stdout + res.stderr
