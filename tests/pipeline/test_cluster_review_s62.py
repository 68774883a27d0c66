"""Review of ``replay_many``: output folder names, workers without livescope, a second Ctrl+C."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from livescope.pipeline import ReplaySpec, replay_many
from livescope.pipeline._cluster import _out_names
from livescope.schema import LivescopeError

HTTP_ON_A_FREE_PORT = {"dashboard_address": "127.0.0.1:0"}
"""(A scheduler serves HTTP, on 8787 by default, even without its dashboard.)"""


def quick(spec: ReplaySpec) -> dict:
    """A task that replays nothing: what `replay_many` does around tasks is under test."""
    return {"dataset": spec.dataset, "pid": os.getpid()}


@pytest.mark.parametrize(
    ("datasets", "names"),
    [
        pytest.param(
            [
                "exp/2024.01.05 HeLa",
                "exp/2024.01.06 HeLa",
                "exp/HeLa_siRNA.v2",
                "exp/HeLa_siRNA.v3",
            ],
            ["2024.01.05 HeLa", "2024.01.06 HeLa", "HeLa_siRNA.v2", "HeLa_siRNA.v3"],
            id="dots-inside-names",  # (were exp-2024, exp-2024-2, HeLa_siRNA, HeLa_siRNA-2)
        ),
        pytest.param(
            [
                "a/s1.ome.tif",
                "a/s2.OME.TIFF",
                "a/s3.ome.btf",
                "a/s4.tf8",
                "a/s5.tif",
                "a/s6.ome.zarr",
                "a/s7.zarr",
            ],
            ["s1", "s2", "s3", "s4", "s5", "s6", "s7"],
            id="dataset-suffixes",
        ),
        pytest.param(["a/rec.v2.ome.tif", "b/rec.v2"], ["rec.v2", "rec.v2-2"], id="suffix-only"),
        pytest.param(["d/GOWT1/01", "d/GOWT1/02"], ["GOWT1-01", "GOWT1-02"], id="ctc-sequences"),
        pytest.param(["d/GOWT1/01.v2", "d/2024.01"], ["01.v2", "2024.01"], id="not-all-digits"),
    ],
)
def test_output_folders_keep_the_dataset_names_dots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, datasets: list[str], names: list[str]
) -> None:
    # every name was cut at its first dot: dated folders of one experiment became one name
    monkeypatch.chdir(tmp_path)
    for d in datasets:
        if d.startswith("d/"):  # (folders: a CTC sequence is one)
            (tmp_path / d).mkdir(parents=True)
    assert _out_names(datasets) == names


class _Client:
    """A stand-in `distributed.Client` of a cluster whose workers lack livescope."""

    def __init__(self, address: Any) -> None:
        self.address = address

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def wait_for_workers(self, n: int, timeout: float | None = None) -> None:
        pass

    def run(self, function: Any, *args: Any, on_error: str = "raise", **kwargs: Any) -> Any:
        # (as Dask reports a function its worker cannot unpickle: a bare Exception)
        exc = Exception(
            "ModuleNotFoundError(\"No module named 'livescope.pipeline'; 'livescope' is not a "
            'package")'
        )
        if on_error == "raise":
            raise exc
        return {"tcp://10.0.0.7:40001": exc}

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no task may be sent to workers that cannot run it")


def test_workers_without_livescope_are_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the command ended in a 64-line traceback of Dask's, "Exception: ModuleNotFoundError(...)"
    import distributed

    import livescope.pipeline._cluster as cluster_module

    monkeypatch.setattr(distributed, "Client", _Client)
    monkeypatch.setattr(cluster_module, "_reach_scheduler", lambda address: None)
    with pytest.raises(LivescopeError) as err:
        replay_many([tmp_path / "a"], tmp_path / "out", cluster="tcp://10.0.0.7:8786")
    message = str(err.value)
    assert message.startswith("the cluster's workers cannot import livescope"), message
    assert "tcp://10.0.0.7:40001: ModuleNotFoundError(\"No module named 'livescope." in message
    assert message.endswith("(with its cluster extra) in their environment"), message


@pytest.mark.slow
def test_a_real_worker_without_livescope_is_a_clear_error(tmp_path: Path) -> None:
    from distributed import LocalCluster

    preload = tmp_path / "nolivescope.py"  # (a worker whose environment lacks livescope)
    preload.write_text("import sys\n\nsys.modules['livescope'] = None\n")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, protocol="tcp",
                      dashboard_address=None, scheduler_kwargs=HTTP_ON_A_FREE_PORT,
                      preload=[str(preload)]) as cluster:  # fmt: skip
        address = cluster.scheduler_address
        with pytest.raises(LivescopeError, match="the cluster's workers cannot import livescope"):
            replay_many([tmp_path / "a"], tmp_path / "out", cluster=address)


@pytest.mark.slow
def test_a_ctrl_c_while_the_local_cluster_closes_keeps_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a second Ctrl+C while the local cluster shut down (seconds) raised out of its close():
    # the replays had finished, and the summary was lost
    import distributed

    clusters: list[Any] = []

    class Interrupted(distributed.LocalCluster):  # type: ignore[misc]
        """A local cluster whose first close() is interrupted by a Ctrl+C."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            clusters.append(self)

        def close(self, timeout: float | None = None) -> Any:
            if len(clusters) == 1:
                clusters.append("interrupted")
                raise KeyboardInterrupt
            return super().close(timeout)

    monkeypatch.setattr(distributed, "LocalCluster", Interrupted)
    try:
        try:
            summary = replay_many([tmp_path / "a"], tmp_path / "out", workers=1, task=quick)
        except KeyboardInterrupt:  # (raised, it would end this test run)
            pytest.fail("the Ctrl+C while the local cluster closed was raised")
        assert summary["ok"] is True, summary
        assert summary["interrupted"] is False
        assert [d["dataset"] for d in summary["done"]] == [str(tmp_path / "a")]
        # its worker process was killed, not waited for
        (pid,) = {d["pid"] for d in summary["done"]}
        deadline = time.monotonic() + 10
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(pid)
    finally:
        if clusters:
            clusters[0].close()


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, not yet waited for, does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
