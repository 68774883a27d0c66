from __future__ import annotations

import json

import pytest

from livescope.schema import load_profile
from livescope.scope import CAMERA_TARGETS_FPS, bench_camera, bench_record
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


@pytest.mark.parametrize("bench", ["camera", "record"])
def test_bench_on_a_profile_that_is_not_simulated_is_a_clear_error(bench: str) -> None:
    res = run_cli("bench", bench, "--profile", "replay", "--json")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    error = json.loads(res.stdout)["error"]
    assert "profile 'replay' is not a simulated profile" in error


def test_bench_record_writes_every_codec_side_by_side() -> None:
    out = bench_record(load_profile("sim"), sizes=(64,), frames=2, repeats=2)
    rows = {r["codec"]: r for r in out["results"] if r["path"] == "livescope"}
    assert set(rows) == {"blosc-zstd", "zstd", "none"}
    (via_zarr,) = [r for r in out["results"] if r["path"] == "zarr"]
    assert via_zarr["codec"] == "blosc-zstd"
    # the same frames, the same codec: zarr stores the same bytes
    assert via_zarr["compression"] == rows["blosc-zstd"]["compression"]
    if via_zarr["cpu_ms_per_frame"]:
        assert rows["blosc-zstd"]["cpu_vs_zarr_path"] == pytest.approx(
            rows["blosc-zstd"]["cpu_ms_per_frame"] / via_zarr["cpu_ms_per_frame"], abs=2e-3
        )
    assert out["default_codec"] == "blosc-zstd"
    base = rows["zstd"]["cpu_ms_per_frame"]
    for r in rows.values():
        assert (r["frames"], r["rounds"]) == (4, 2)  # 2 per channel
        if base:  # a coarse CPU clock (Windows) can read 0 for such small frames
            assert r["cpu_vs_zstd"] == pytest.approx(r["cpu_ms_per_frame"] / base, abs=2e-3)
    # every chunk is counted, and nothing but chunks
    assert rows["none"]["compression"] == pytest.approx(1.0, abs=0.01)


def test_bench_bus_runs_side_by_side() -> None:
    from livescope.bus import bench_bus

    out = bench_bus(sizes=(512,), paced_seconds=0.5, repeats=1)
    modes = {r["mode"] for r in out["results"]}
    assert modes == {"raw", "inline", "shm", "memcpy"}
    assert {"inline_vs_raw", "shm_vs_memcpy", "drops"} <= set(out)
    assert out["machine"]["cpu_reference_ms"] > 0  # comparable with other PCs' figures
    assert {p["mode"] for p in out["paced"]} == {"inline", "shm"}
    for p in out["paced"]:  # (n frames sent no sooner than due take n periods: never above
        assert p["fps"] <= p["target_fps"], p  # target; counted over n - 1 they read 1-2 % above)
        assert p["gb_per_s"] <= p["target_gb_per_s"], p
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


def test_link_scores_count_a_swap_and_a_gap() -> None:
    from livescope.cli._track_bench import _links

    # label -> true cell per frame; cell 20 is missed in frame 1 (its link spans the gap)
    truth = [{1: 10, 2: 20}, {1: 10}, {1: 10, 2: 20}, {1: 10, 2: 20}]
    true = _links(truth, truth)
    assert ((0, 20), (2, 20)) in true
    assert len(true) == 5
    # the tracker swaps the two cells from frame 3 on: two of its five links are wrong
    tracked = [{1: 1, 2: 2}, {1: 1}, {1: 1, 2: 2}, {1: 2, 2: 1}]
    found = _links(tracked, truth)
    assert len(found) == 5
    assert len(found & true) == 3


def test_bench_track_compares_peers_on_simulated_cells() -> None:
    res = run_cli("bench", "track", "--cells", "50", "--cells", "200", "--frames", "4",
                  "--sim-cells", "300", "--sim-frames", "6", "--no-gowt1")  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["bench"] == "track"  # (as every benchmark names itself)
    assert [r["cells"] for r in out["scaling"]["rows"]] == [50, 200]
    sim = out["peers_simulated"]
    assert "peers_gowt1_markers" not in out
    assert out["machine"]["cpu_reference_ms"] > 0
    assert sim["frames"] == 6
    assert 280 <= sim["objects_per_frame"] <= 300
    ours = sim["livescope"]
    assert ours["link_precision"] >= 0.95
    assert ours["link_recall"] >= 0.95
    per_s = 1000 * sim["objects_per_frame"] / ours["ms_per_frame"]
    assert ours["objects_per_s"] == pytest.approx(per_s, rel=0.02)
    peers = [p for p in ("laptrack", "trackpy") if "link_recall" in sim.get(p, {})]
    assert peers == ["laptrack", "trackpy"], sim  # both are dev dependencies: both must run
    for p in peers:
        assert sim[p]["link_recall"] >= 0.9, p
    fastest = max(sim[p]["objects_per_s"] for p in peers)
    assert sim["objects_per_s_vs_faster_peer"] == pytest.approx(
        ours["objects_per_s"] / fastest, abs=0.01
    )


@pytest.mark.parametrize(
    "bench", ["bus", "engines", "camera", "record", "jitter", "pacing", "replay-cluster", "track"]
)
def test_bench_help_says_the_output_is_json_either_way(bench: str) -> None:
    res = run_cli("bench", bench, "--help")
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.replace("│", " ").split())  # the help's wrapped table, unwrapped
    assert "Benchmarks always print one JSON object" in text
    assert "default: True" not in text  # a flag that cannot be turned off


def test_bench_engines_checks_every_engine_name_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    import livescope.scope
    from livescope.cli._engines import bench_engines

    def too_early(*args: object, **kwargs: object) -> None:
        pytest.fail("the benchmark began before every engine name was checked")

    monkeypatch.setattr(livescope.scope, "simulated_frames", too_early)
    with pytest.raises(typer.Exit) as info:
        bench_engines(json_out=True, stain="foo")
    assert info.value.exit_code == 2
    assert "no engine 'foo'" in json.loads(capsys.readouterr().out)["error"]


def test_bench_engines_passes_over_a_backend_whose_library_fails_to_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from livescope.cli._engines import _bench_states
    from livescope.inference import BACKENDS

    def broken() -> tuple[bool, str]:
        raise ImportError("libcudart.so.12: cannot open shared object file")

    for b in BACKENDS:
        if b.name != "onnxruntime":  # torch, TensorRT: installed, a CUDA library missing
            monkeypatch.setattr(b, "available", broken)
    rows = _bench_states("cell-state", 1)
    assert {r["backend"] for r in rows if r.get("available", True)} == {"onnxruntime"}
    for r in rows:  # (the others: a row each saying why they cannot run)
        if r["backend"] != "onnxruntime":
            assert r["available"] is False, r
            assert "libcudart" in r["detail"], r
