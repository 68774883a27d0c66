"""Review of ``replay_many`` / ``livescope replay`` on a cluster: addresses, names, keys."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from livescope.pipeline import replay_many
from livescope.schema import LivescopeError, load_profile
from livescope.scope import demo_sequence, run_simulated

from ..conftest import run_cli

pytestmark = pytest.mark.slow

HTTP_ON_A_FREE_PORT = {"dashboard_address": "127.0.0.1:0"}
"""(A scheduler serves HTTP, on 8787 by default, even without its dashboard.)"""


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A running Dask scheduler with one in-process worker (a shared cluster's address)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        dashboard_address=None,
        scheduler_kwargs=HTTP_ON_A_FREE_PORT,
    ) as cluster:
        yield cluster.scheduler_address


@pytest.mark.parametrize(
    ("address", "why"),
    [
        pytest.param("http://127.0.0.1:8787", "unknown address scheme 'http'", id="dashboard-url"),
        pytest.param("tcp://127.0.0.1", "missing port number", id="no-port"),
        pytest.param("127.0.0.1:port", "invalid literal", id="bad-port"),
    ],
)
def test_a_malformed_scheduler_address_is_a_clear_error(
    tmp_path: Path, address: str, why: str
) -> None:
    # (Dask refuses them with a ValueError, which the command printed as a traceback)
    (tmp_path / "any").mkdir()  # (a dataset path that exists: missing ones are refused first)
    with pytest.raises(LivescopeError, match=f"cannot reach the Dask scheduler at {address}: "):
        replay_many([tmp_path / "any"], tmp_path / "out", cluster=address)
    res = run_cli("replay", str(tmp_path / "any"), "--cluster", address, "--out",
                  str(tmp_path / "o"), "--json")  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    assert why in json.loads(res.stdout)["error"]
    assert "Traceback" not in res.stderr


def test_a_server_that_is_no_scheduler_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a port that accepts connections but never speaks Dask (e.g. the dashboard's, 8787):
    # the client waited for the scheduler's handshake forever, whatever its connect timeout
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "1s")
    (tmp_path / "any").mkdir()  # (a dataset path that exists: missing ones are refused first)
    try:
        res = run_cli("replay", str(tmp_path / "any"), "--cluster", address, "--out",
                      str(tmp_path / "o"), "--json", timeout=120)  # fmt: skip
    finally:
        server.close()
    assert res.returncode == 2, res.stderr[-2000:]
    assert json.loads(res.stdout)["error"].startswith(
        f"cannot reach the Dask scheduler at {address}: "
    )


def test_a_replay_never_takes_another_clients_result(scheduler: str, tmp_path: Path) -> None:
    # someone else on the shared scheduler holds a task whose key a replay of a dataset of
    # the same name would take (e.g. both replay the same CTC sequence with other plans)
    from distributed import Client

    theirs = {"dataset": "their dataset", "out": "their folder"}
    with Client(scheduler) as other:
        held = other.submit(dict, theirs, key="replay-0-a", pure=False)
        assert held.result() == theirs
        summary = replay_many([tmp_path / "a"], tmp_path / "out", cluster=scheduler)
    assert summary["done"] == []
    (failed,) = summary["failed"]
    assert failed["error"] == f"DatasetError: {tmp_path / 'a'}: no such file or folder"


def test_datasets_whose_names_differ_only_by_case_get_folders_of_their_own(
    scheduler: str, tmp_path: Path
) -> None:
    # on Windows and macOS "Rec" and "rec" are one folder: two replays would write into it
    datasets = [tmp_path / "A" / "Rec", tmp_path / "B" / "rec"]
    summary = replay_many(datasets, tmp_path / "out", cluster=scheduler)
    outs = [Path(f["out"]).name for f in summary["failed"]]
    assert len(outs) == 2
    assert len({o.casefold() for o in outs}) == 2, outs


def test_a_ctc_sequence_given_relative_is_named_after_its_dataset(
    scheduler: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `livescope replay 01 02` inside a CTC dataset's folder: not "-01", "-02"
    for seq in ("01", "02"):
        (tmp_path / "Fluo-N2DH-GOWT1" / seq).mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "Fluo-N2DH-GOWT1")
    summary = replay_many(["01", "02"], tmp_path / "out", cluster=scheduler)
    assert sorted(Path(f["out"]).name for f in summary["failed"]) == [
        "Fluo-N2DH-GOWT1-01",
        "Fluo-N2DH-GOWT1-02",
    ]


def test_a_cancelled_replay_is_reported_failed_not_raised(scheduler: str, tmp_path: Path) -> None:
    # a task cancelled on the scheduler (the connection to it lost, or cancelled from the
    # dashboard): the other datasets' results were lost with a CancelledError traceback
    from livescope.pipeline import ReplaySpec

    def cancelled(spec: ReplaySpec) -> dict:
        from distributed import Future, get_client, get_worker

        from livescope.pipeline import run_replay_task

        if spec.dataset.endswith("b"):
            client = get_client()
            client.cancel([Future(get_worker().get_current_task(), client)], force=True)
            return {"dataset": spec.dataset}
        return run_replay_task(spec)

    a, b = tmp_path / "a", tmp_path / "b"
    summary = replay_many([a, b], tmp_path / "out", cluster=scheduler, task=cancelled)
    assert summary["ok"] is False
    assert summary["done"] == []
    errors = {f["dataset"]: f["error"] for f in summary["failed"]}
    assert errors[str(a)] == f"DatasetError: {a}: no such file or folder"
    assert errors[str(b)].startswith("cancelled")


def test_a_relative_plan_and_profile_are_found_by_the_clusters_workers(tmp_path: Path) -> None:
    # the workers of a cluster run in folders of their own (here: this process's), not in
    # the folder the command was given in: --plan and --profile as written were not there
    from distributed import LocalCluster

    prof = load_profile("sim")
    prof = prof.replace(camera=prof.camera.replace(sensor_shape_px=(128, 128)).model_dump())
    rec = tmp_path / "rec"
    run_simulated(prof, demo_sequence(prof, timepoints=2, positions=1), rec, seed=1)
    here = tmp_path / "here"
    here.mkdir()
    (here / "plan.yaml").write_text((rec / "plan.yaml").read_text() + "policies: []\n")
    (here / "rig.yaml").write_text((rec / "profile.yaml").read_text())
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        scheduler_kwargs=HTTP_ON_A_FREE_PORT,
    ) as cluster:
        res = run_cli("replay", str(rec), "--cluster", cluster.scheduler_address,
                      "--plan", "plan.yaml", "--profile", "rig.yaml",
                      "--out", str(tmp_path / "o"), "--json", cwd=here)  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (done,) = json.loads(res.stdout)["done"]
    source = json.loads((Path(done["out"]) / "source.json").read_text())
    assert source["plan"] == str(here / "plan.yaml")


def test_workers_with_a_scheduler_address_is_refused_not_ignored(
    scheduler: str, tmp_path: Path
) -> None:
    res = run_cli("replay", str(tmp_path / "a"), "--cluster", scheduler, "--workers", "4",
                  "--out", str(tmp_path / "o"), "--json")  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    assert "--workers" in json.loads(res.stdout)["error"]
    assert not (tmp_path / "o").exists()


def test_each_replays_warnings_are_reported(tmp_path: Path) -> None:
    # a one-dataset replay prints its warnings (here: a nucleus diameter it cannot use);
    # replays on a cluster dropped them, so the option was silently ignored
    import numpy as np
    import tifffile

    datasets = []
    for parent in ("A", "B"):  # (two CTC sequences both named 01)
        seq = tmp_path / parent / "01"
        seq.mkdir(parents=True)
        for t in range(2):
            tifffile.imwrite(seq / f"t{t:03d}.tif", np.full((64, 64), 100 + t, np.uint16))
        datasets.append(seq)
    summary = replay_many(datasets, tmp_path / "out", workers=1,
                          options={"nucleus_diameter_um": 10.0})  # fmt: skip
    assert summary["ok"] is True, summary["failed"]
    assert sorted(Path(d["out"]).name for d in summary["done"]) == ["A-01", "B-01"]
    for d in summary["done"]:
        assert any("states no pixel size" in w for w in d["warnings"]), d


def test_the_local_cluster_keeps_off_another_clusters_dashboard_port(tmp_path: Path) -> None:
    # 8787 is the port of any Dask dashboard already open (a notebook's cluster): the local
    # cluster's scheduler served HTTP there, or warned ("Port 8787 is already in use")
    import warnings

    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 8787))
        taken.listen()
    except OSError:  # (taken already)
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            summary = replay_many([tmp_path / "a"], tmp_path / "out", workers=1)
    finally:
        taken.close()
    (failed,) = summary["failed"]
    assert failed["error"] == f"DatasetError: {tmp_path / 'a'}: no such file or folder"


def test_a_replay_not_as_planned_is_failed_with_its_error(scheduler: str, tmp_path: Path) -> None:
    # a replay that ran to its end with frames not served or decisions not logged (its
    # summary's ok false) was listed done, and `livescope replay --cluster` exited 0
    from livescope.pipeline import ReplaySpec

    def not_as_planned(spec: ReplaySpec) -> dict:
        Path(spec.out).mkdir(parents=True)
        report = Path(spec.out) / "report.html"
        report.write_text("<html></html>")
        return {"dataset": spec.dataset, "out": spec.out, "ok": False,
                "error": "2 frame(s) could not be acquired", "report": str(report)}  # fmt: skip

    summary = replay_many([tmp_path / "a"], tmp_path / "out", cluster=scheduler,
                          task=not_as_planned)  # fmt: skip
    assert summary["ok"] is False
    assert summary["done"] == []
    (failed,) = summary["failed"]
    assert failed["error"] == "the replay did not end as planned: 2 frame(s) could not be acquired"
    assert failed["attempts"] == 1  # (not retried: it ran to its end)
    assert failed["report"] == str(tmp_path / "out" / "a" / "report.html")
    assert (tmp_path / "out" / "a" / "report.html").is_file()  # its folder is kept
