"""Replays spread over a local Dask cluster: retried, reported, never lost (issue 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livescope.pipeline import ReplaySpec, replay_many
from livescope.schema import LivescopeError, load_profile
from livescope.scope import demo_sequence, run_simulated

from ..conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("recs")
    prof = load_profile("sim")
    prof = prof.replace(camera=prof.camera.replace(sensor_shape_px=(256, 256)).model_dump())
    out = []
    for i in range(2):
        rec = base / f"rec{i}"
        run_simulated(prof, demo_sequence(prof, timepoints=2, positions=1), rec, seed=i)
        out.append(rec)
    return out


def test_a_failed_task_is_retried_and_a_lost_one_reported(recordings, tmp_path: Path) -> None:
    marker = tmp_path / "failed-once"

    def flaky(spec: ReplaySpec) -> dict:  # pickled by value into the worker processes
        from livescope.pipeline import run_replay_task

        if spec.dataset.endswith("rec1") and not marker.exists():
            marker.write_text("")
            Path(spec.out).mkdir(parents=True)
            (Path(spec.out) / "partial").write_text("half written")
            raise RuntimeError("worker lost mid-task")
        return run_replay_task(spec)

    missing = tmp_path / "never-recorded"
    out = tmp_path / "out"
    summary = replay_many([*recordings, missing], out, workers=2, task=flaky)
    assert summary["ok"] is False
    assert summary["datasets"] == 3
    assert sorted(Path(d["dataset"]).name for d in summary["done"]) == ["rec0", "rec1"]
    for d in summary["done"]:
        assert d["frames_analysed"] == 4  # 2 time points × phase + DAPI
        assert (d["ok"], d["error"]) == (True, None)  # (the run's own, passed on)
        assert (Path(d["out"]) / "results" / "cells.csv").is_file()
    (lost,) = summary["failed"]
    assert lost["dataset"] == str(missing)
    assert lost["error"] == f"DatasetError: {missing}: no such file or folder"
    assert lost["attempts"] == 1  # bad input: never retried (it would fail the same way)
    assert marker.exists()  # rec1 failed once, then succeeded
    assert (out / "rec1.failed-1" / "partial").read_text() == "half written"
    assert not (out / "rec1" / "partial").exists()  # the retry wrote into a clean folder


def test_the_command_reports_failed_datasets_and_exits_1(tmp_path: Path) -> None:
    # (folders that are no dataset: paths that do not exist are refused before any replay)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    res = run_cli("replay", str(a), str(b), "--out", str(tmp_path / "o"), "--json")
    assert res.returncode == 1, res.stderr[-2000:]
    summary = json.loads(res.stdout)
    assert summary["ok"] is False
    assert summary["done"] == []
    errors = sorted(f["error"] for f in summary["failed"])
    assert [e.split(": not a dataset livescope can replay")[0] for e in errors] == [
        f"DatasetError: {a}",
        f"DatasetError: {b}",
    ]
    assert all(f["attempts"] == 1 for f in summary["failed"])  # bad input: never retried
    assert "Traceback" not in res.stderr  # (no Dask worker's "Compute Failed" traceback)


def test_a_scheduler_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    import dask
    import zmq

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REP)  # a port that is free now (nothing listens once closed)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sock.close(linger=0)
    address = f"tcp://127.0.0.1:{port}"
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(LivescopeError, match=f"cannot reach the Dask scheduler at {address}: "),
    ):
        replay_many([tmp_path / "any"], tmp_path / "out", cluster=address)


def test_the_benchmark_refuses_a_file_as_its_keep_folder(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    res = run_cli("bench", "replay-cluster", "--keep", str(tmp_path / "a.png"), "--json")
    assert res.returncode == 2, res.stderr[-2000:]
    assert json.loads(res.stdout)["error"] == (
        f"--keep {tmp_path / 'a.png'} is a file; give a folder (new, or of a run)"
    )
