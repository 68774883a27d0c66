"""`livescope worker --analyse` and `livescope agent` on a run folder another already used.

A second analysis of a run appended its results to the first's (cells.csv rows
twice, policy.jsonl and latency.jsonl doubled), as did two analysis workers at
once and an agent given a folder holding an earlier run's results; a resumed
worker started before its agent ran without the run's plan and profile; a
worker given the run's bus.json could not analyse; one beside an agent without
a bus analysed part of the recording and said it was done.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from livescope.cli import _agent
from livescope.cli._app import app

_PLAN = """stage_positions:
  - {x: 0, y: 0, z: 0, name: p0}
channels:
  - {config: Phase, exposure: 20}
  - {config: DAPI, exposure: 50}
time_plan: {interval: 60, loops: 3}
axis_order: tpgcz
policies:
  - name: mitosis-closeup
    when: {mitosis: {p_min: 0.5, frames: 2}}
    do:
      acquire: {channels: [Phase, DAPI], loops: 2, interval_s: 30, centre: cell}
    cooldown_s: 1800
"""

_NO_ENGINES = ("--seg", "", "--stain", "", "--states", "")

_WAIT_S = 60.0
"""The longest a worker here may run (a fresh interpreter, three fields, no engines)."""


def _invoke(*args: str) -> tuple[int, str, str]:
    """Run ``livescope ARGS`` in-process: (exit, stdout, stderr)."""
    res = CliRunner().invoke(app, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


def _worker(run: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``livescope worker RUN --analyse`` (no engines) in a fresh interpreter."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "livescope", "worker", str(run), "--analyse", *_NO_ENGINES,
             "--json", *args],
            capture_output=True, text=True, cwd=cwd, timeout=_WAIT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the worker on {run} still ran after {_WAIT_S:g} s: {exc.stderr!r}")


@pytest.fixture(scope="module")
def ended(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run that ended (3 fields of one position), recorded without a bus, not analysed."""
    base = tmp_path_factory.mktemp("ended")
    plan = base / "plan.yaml"
    plan.write_text(_PLAN, encoding="utf-8")
    code, _, err = _invoke("agent", "--plan", str(plan), "--out", str(base / "run"),
                           "--bus", "off", "--time-acceleration", "3000", "--json")  # fmt: skip
    assert code == 0, err
    return base / "run"


def _copy(ended: Path, where: Path) -> Path:
    shutil.copytree(ended, where)
    return where


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_a_second_analysis_without_resume_is_refused_and_leaves_the_first(
    ended: Path, tmp_path: Path
) -> None:
    run = _copy(ended, tmp_path / "run")
    first = _worker(run, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    results = run / "results"
    before = {n: (results / n).read_bytes() for n in ("latency.jsonl", "policy.jsonl")}
    assert _lines(results / "latency.jsonl") == 3
    again = _worker(run, cwd=tmp_path)
    assert again.returncode == 2, again.stderr
    error = json.loads(again.stdout)["error"]
    assert str(results) in error
    assert "--resume" in error
    assert {n: (results / n).read_bytes() for n in before} == before
    assert not (results / "worker.lock").exists()


def test_a_worker_is_refused_while_another_holds_the_results(ended: Path, tmp_path: Path) -> None:
    from livescope.bus import this_host

    run = _copy(ended, tmp_path / "run")
    (run / "results").mkdir()
    lock = run / "results" / "worker.lock"
    # (this test's process: a worker that runs)
    lock.write_text(json.dumps({"pid": os.getpid(), "host": this_host()}), encoding="utf-8")
    res = _worker(run, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    error = json.loads(res.stdout)["error"]
    assert str(lock) in error
    assert f"process {os.getpid()}" in error
    assert not (run / "results" / "latency.jsonl").exists()
    assert lock.exists()  # (still the other worker's)


def test_a_lock_whose_worker_is_gone_is_taken_over(ended: Path, tmp_path: Path) -> None:
    from livescope.bus import this_host

    run = _copy(ended, tmp_path / "run")
    (run / "results").mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    lock = run / "results" / "worker.lock"
    lock.write_text(json.dumps({"pid": int(gone.stdout), "host": this_host()}), encoding="utf-8")
    res = _worker(run, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert _lines(run / "results" / "latency.jsonl") == 3
    assert not lock.exists()  # (given back as the worker ended)


@pytest.mark.parametrize("earlier", ["results", "summary.json", "decisions.jsonl"])
def test_an_agent_refuses_a_folder_holding_an_earlier_runs_results(
    ended: Path, tmp_path: Path, earlier: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    if earlier == "results":
        (out / "results").mkdir()
        (out / "results" / "latency.jsonl").write_text('{"position": "p0", "t": 0}\n')
    else:
        shutil.copy(ended / earlier, out / earlier)
        if earlier == "decisions.jsonl":  # (an earlier run's log holds its decisions)
            with (out / earlier).open("a", encoding="utf-8") as f:
                f.write('{"run_id": "run-earlier", "id": "d0"}\n')
    code, stdout, _ = _invoke("agent", "--plan", str(ended / "plan.yaml"), "--out", str(out),
                              "--bus", "off", "--json")  # fmt: skip
    assert code == 2
    error = json.loads(stdout)["error"]
    assert str(out / earlier) in error
    assert "--out" in error
    assert not (out / "frames.jsonl").exists()


def test_an_agent_may_start_in_a_folder_a_waiting_worker_made(ended: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)  # (a worker's, waiting for the run: no results yet)
    (out / "results" / "worker.log").write_text("")
    code, _, err = _invoke("agent", "--plan", str(ended / "plan.yaml"), "--out", str(out),
                           "--bus", "off", "--time-acceleration", "3000", "--json")  # fmt: skip
    assert code == 0, err


def test_a_resumed_worker_started_before_its_agent_waits_for_the_run(
    ended: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "livescope", "worker", str(run), "--analyse", "--resume",
         *_NO_ENGINES, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        # the run appears once the worker waits for it (as an agent's would: whole)
        assert proc.stderr is not None
        said = proc.stderr.readline()
        assert said.startswith("waiting up to"), said
        shutil.copytree(ended, tmp_path / "staged")
        (tmp_path / "staged").rename(run)
        out, err = proc.communicate(timeout=_WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "shipped 'sim' profile" not in err
    summary = json.loads(out)
    assert summary["fields_analysed"] == 3
    # the run's plan was read: its policy is there (with the shipped 'sim' profile and no
    # plan the worker ran without any)
    assert summary["guardrails"], summary


def test_a_worker_given_the_runs_bus_json_analyses_the_run(ended: Path, tmp_path: Path) -> None:
    run = _copy(ended, tmp_path / "run")
    res = _worker(run / "bus.json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert _lines(run / "results" / "latency.jsonl") == 3


def test_a_worker_beside_an_agent_without_a_bus_says_so(
    ended: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _copy(ended, tmp_path / "run")
    (run / "summary.json").unlink()  # (the agent still records, with --bus off)
    monkeypatch.setattr(_agent, "ATTACH_WAIT_S", 0.5)
    code, stdout, _ = _invoke("worker", str(run), "--analyse", *_NO_ENGINES, "--json")
    assert code == 2
    error = json.loads(stdout)["error"]
    assert "--bus off" in error
    assert "after it ends" in error
    assert not (run / "results" / "latency.jsonl").exists()
