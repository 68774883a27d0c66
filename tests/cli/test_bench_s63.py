"""Session 63: the benchmarks' kept recordings, temp folders, bounds and counters."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livescope.schema import LivescopeError
from tests.conftest import run_cli


def _rec_run_ids(keep: Path) -> list[str]:
    return [
        json.loads((keep / f"rec-{i}" / "summary.json").read_text())["run_id"] for i in range(2)
    ]


def test_replay_cluster_keep_records_again_what_was_recorded_with_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from livescope.pipeline import _cluster, bench_replay_cluster
    from livescope.record import read_frames

    def replay_many(recs: list[Path], out: Path, **kwargs: Any) -> dict[str, Any]:
        """A field per phase frame of each recording (the cluster is tested elsewhere)."""
        done = [
            {"dataset": rec.name, "task_s": 0.1, "replay_overhead": None,
             "fields_analysed": sum(f["channel"] == "Phase" for f in read_frames(rec))}
            for rec in recs
        ]  # fmt: skip
        return {"ok": True, "done": done, "failed": [], "wall_s": 1.0}

    monkeypatch.setattr(_cluster, "replay_many", replay_many)
    keep = tmp_path / "keep"
    args: dict[str, Any] = {"datasets": 2, "workers": (1,), "keep": keep}
    first = bench_replay_cluster(timepoints=2, size=64, **args)
    assert (first["frame"], first["1_workers"]["fields"]) == ([64, 64], 2 * 2)
    ids = _rec_run_ids(keep)
    # the same settings: the kept recordings are replayed again, not recorded again
    again = bench_replay_cluster(timepoints=2, size=64, **args)
    assert _rec_run_ids(keep) == ids
    # other settings: what is replayed (and reported) is what was asked
    other = bench_replay_cluster(timepoints=3, size=96, **args)
    assert other["1_workers"]["fields"] == 2 * 3
    assert (other["frame"], other["timepoints"]) == ([96, 96], 3)
    assert {tuple(f["shape"]) for f in read_frames(keep / "rec-1")} == {(96, 96)}
    rec = json.loads((keep / "rec-0" / "summary.json").read_text())
    assert (rec["timepoints"], rec["seed"]) == (3, 100)
    assert (again["recordings_reused"], other["recordings_reused"]) == (2, 0)


@pytest.mark.parametrize("error", [RuntimeError("camera gone"), KeyboardInterrupt()])
def test_replay_cluster_removes_its_temp_folder_when_recording_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    import livescope.scope
    from livescope.pipeline import bench_replay_cluster

    def fail(*args: Any, **kwargs: Any) -> None:
        Path(args[2]).mkdir(parents=True)  # (a recording begun, then cut short)
        (Path(args[2]) / "frames.jsonl").write_text("{}\n")
        raise error

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(livescope.scope, "run_simulated", fail)
    with pytest.raises(type(error)):
        bench_replay_cluster(datasets=2, timepoints=2, size=64, workers=(1,))
    assert list(tmp_path.iterdir()) == []


def test_replay_cluster_refuses_a_size_beyond_its_bound_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from livescope.pipeline import bench_replay_cluster

    res = run_cli("bench", "replay-cluster", "--size", "100000", "--json")
    assert res.returncode == 2, res.stderr[-2000:]
    error = json.loads(res.stdout)["error"]
    assert "--size" in error, error
    assert "less than or equal to 4096" in error, error
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(LivescopeError, match=r"frame size must be 64 to 4096 pixels, got 100000"):
        bench_replay_cluster(datasets=2, timepoints=2, size=100000, workers=(1,))
    assert list(tmp_path.iterdir()) == []


def test_bench_bus_counts_only_failed_publishes_retried_against_its_drops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from livescope.bus import _bench
    from livescope.bus._publisher import FramePublisher

    class Stalling(FramePublisher):
        """A ring read full at every other look, and a publish that fails every other time."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            assert self.ring is not None
            real, full = self.ring.v.held, itertools.cycle([True, False])
            self.ring.v.held = lambda: np.ones_like(real()) if next(full) else real()  # type: ignore[method-assign]
            self._fail = itertools.cycle([True, False])

        def publish(self, *args: Any, **kwargs: Any) -> bool:
            if next(self._fail):  # (as a ring with no free slot: counted, not sent)
                self.dropped_no_slot += 1
                return False
            return super().publish(*args, **kwargs)

    monkeypatch.setattr(_bench, "FramePublisher", Stalling)
    frames = np.zeros((2, 64, 64), np.uint16)
    r = _bench._run_mode("shm", frames, 6)
    assert (r["sent"], r["received"]) == (6, 6), r
    assert r["dropped_no_slot"] == 0, r  # every failed publish was retried and sent
    assert r["waits_for_slot"] >= 6 + 6, r  # a wait for free slots and a retry per frame


def test_bench_bus_refuses_a_paced_run_too_long_for_the_bus(tmp_path: Path) -> None:
    from livescope.bus import bench_bus

    res = run_cli("bench", "bus", "--paced-seconds", "1e8", "--json")
    assert res.returncode == 2, res.stderr[-2000:]
    error = json.loads(res.stdout)["error"]
    assert "--paced-seconds" in error, error
    assert "less than or equal to 3600" in error, error
    with pytest.raises(LivescopeError, match="the paced run must be at most 3600 s, got 1e"):
        bench_bus(sizes=(64,), paced_seconds=1e8, repeats=1)


def test_bench_pacing_names_an_agent_that_did_not_finish_and_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from livescope.cli import _pacing_bench

    started: list[subprocess.Popen[str]] = []
    real_popen = subprocess.Popen

    def hung_agent(cmd: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        started.append(real_popen([sys.executable, "-c", "import time; time.sleep(60)"], **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", hung_agent)
    monkeypatch.setattr(_pacing_bench, "AGENT_GRACE_S", 0.5)
    plan = tmp_path / "plan.yaml"
    with pytest.raises(LivescopeError, match=r"the agent did not finish within [\d.]+ s"):
        _pacing_bench._case(tmp_path, plan, 2, 20.0, None)
    (agent,) = started
    assert agent.poll() is not None  # stopped, not left running
