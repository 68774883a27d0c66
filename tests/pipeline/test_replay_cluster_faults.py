"""Replays on a cluster that cannot run them, and replays that end badly: said, never lost."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from livescope.pipeline import ReplaySpec, replay_many
from livescope.schema import LivescopeError

pytestmark = pytest.mark.slow

HTTP_ON_A_FREE_PORT = {"dashboard_address": "127.0.0.1:0"}
"""(A scheduler serves HTTP, on 8787 by default, even without its dashboard.)"""


def quick(spec: ReplaySpec) -> dict:
    """A task that replays nothing: what `replay_many` does around tasks is under test."""
    return {"dataset": spec.dataset}


def test_a_scheduler_without_workers_is_a_clear_error(tmp_path: Path) -> None:
    # its tasks were sent and waited for a worker for ever
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=None,
                      scheduler_kwargs=HTTP_ON_A_FREE_PORT) as cluster:  # fmt: skip
        address = cluster.scheduler_address
        with pytest.raises(LivescopeError, match=f"the Dask scheduler at {address} has no worker"):
            replay_many([tmp_path / "a"], tmp_path / "out", cluster=address, task=quick,
                        worker_timeout_s=1)  # fmt: skip


def test_a_local_cluster_of_no_workers_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LivescopeError, match="at least 1 worker process, not 0"):
        replay_many([tmp_path / "a"], tmp_path / "out", workers=0, task=quick)


def test_a_local_cluster_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    # (a RuntimeError's traceback before)
    import dask

    with (
        dask.config.set({"distributed.worker.preload": ["livescope_no_such_module"]}),
        pytest.raises(LivescopeError, match="cannot start a local Dask cluster: "),
    ):
        replay_many([tmp_path / "a"], tmp_path / "out", workers=1, task=quick)


def test_a_plan_that_does_not_fit_is_not_retried(tmp_path: Path) -> None:
    # a ConfigError (plan, profile, card) fails every attempt the same way: it was tried 3 times
    calls = tmp_path / "calls"
    calls.mkdir()

    def misfit(spec: ReplaySpec) -> dict:
        from livescope.schema import PlanError

        (calls / f"{time.monotonic_ns()}").write_text(spec.dataset)
        raise PlanError("plan.yaml", ["channels: 'GFP' is not among the dataset's channels"])

    summary = replay_many([tmp_path / "a"], tmp_path / "out", workers=1, task=misfit)
    (f,) = summary["failed"]
    assert f["attempts"] == 1
    assert f["error"].startswith("PlanError: acquisition plan plan.yaml is invalid")
    assert len(list(calls.iterdir())) == 1


def test_the_folders_of_failed_attempts_are_named(tmp_path: Path) -> None:
    # a retried task's partial folder was moved aside without a word in the summary
    def twice(spec: ReplaySpec) -> dict:
        out = Path(spec.out)
        tries = len(list(out.parent.glob(f"{out.name}.failed-*")))
        if spec.dataset.endswith("b") or tries < 2:
            out.mkdir(parents=True, exist_ok=True)
            (out / "partial").write_text("half written")
            raise RuntimeError("lost mid-task")
        return {"dataset": spec.dataset}

    out = tmp_path / "out"
    summary = replay_many([tmp_path / "a", tmp_path / "b"], out, workers=1, task=twice)
    (d,) = summary["done"]
    assert d["earlier_attempts"] == [str(out / "a.failed-1"), str(out / "a.failed-2")]
    (f,) = summary["failed"]
    assert f["attempts"] == 3
    # (the last attempt's folder is its own "out"; the two before it were moved aside)
    assert f["earlier_attempts"] == [str(out / "b.failed-1"), str(out / "b.failed-2")]
    assert (out / "b" / "partial").is_file()


def test_a_task_that_kills_its_worker_counts_its_attempts(tmp_path: Path) -> None:
    # Dask ends it after its allowed-failures worker deaths, whatever `retries`: the summary
    # said retries + 1 attempts
    import dask

    def crash(spec: ReplaySpec) -> dict:
        import os

        os._exit(1)

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        summary = replay_many([tmp_path / "a"], tmp_path / "out", workers=1, retries=0,
                              task=crash)  # fmt: skip
    (f,) = summary["failed"]
    assert f["attempts"] == 2
    assert f["error"].startswith("KilledWorker: the worker process replaying it died, 2 times")


def test_ctrl_c_keeps_the_finished_replays_and_names_the_others(tmp_path: Path) -> None:
    # a KeyboardInterrupt while waiting lost every result with a traceback
    def slow_b(spec: ReplaySpec) -> dict:
        if spec.dataset.endswith("b"):
            time.sleep(120)
        return {"dataset": spec.dataset}

    def ctrl_c(n: int, total: int) -> None:  # (called in the waiting thread, as a Ctrl+C)
        raise KeyboardInterrupt

    summary = replay_many([tmp_path / "a", tmp_path / "b"], tmp_path / "out", workers=2,
                          task=slow_b, progress=ctrl_c)  # fmt: skip
    assert summary["interrupted"] is True
    assert summary["ok"] is False
    assert [d["dataset"] for d in summary["done"]] == [str(tmp_path / "a")]
    (f,) = summary["failed"]
    assert f["dataset"] == str(tmp_path / "b")
    assert f["error"] == "interrupted (Ctrl+C) before it finished"
