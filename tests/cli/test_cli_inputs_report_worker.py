"""What `report`, `worker`, `profile check`, `demo` and `bench engines` say of a wrong input.

Each is refused at once, saying what is wrong with it: not after a wait, a
benchmark's other engines, or with a message about something else.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from livescope.cli._app import app

_QUICK_S = 20.0
"""How long a refusal may take in a fresh interpreter (the old code waited 30 s for an
agent, or ran a whole benchmark, before it)."""


def _invoke(*args: str) -> tuple[int, str, str]:
    """Run ``livescope ARGS`` in-process: (exit, stdout, stderr)."""
    res = CliRunner().invoke(app, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m livescope ARGS`` in ``cwd``; fail the test if it is not done in time."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "livescope", *args],
            capture_output=True, text=True, cwd=cwd, timeout=_QUICK_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"livescope {' '.join(args)} still ran after {_QUICK_S:g} s: {exc.stderr!r}")


@pytest.mark.parametrize(
    ("config", "says"),
    [
        pytest.param({"segmenter": "nosuch"}, "segmenter: no engine 'nosuch'", id="unknown"),
        pytest.param(
            {"stain": "nuclei-unet"},
            "stain nuclei-unet: it is a segmentation engine, not a virtual_stain engine",
            id="wrong-task",
        ),
        pytest.param({"maxlen": 0}, "maxlen must be >= 1", id="maxlen"),
        pytest.param({"tail_frames": -1}, "tail_frames must be >= 0", id="tail-frames"),
        pytest.param({"idle_s": -3}, "idle_s must be >= 0", id="idle"),
    ],
)
def test_a_bad_worker_config_is_refused_naming_it_before_the_worker_waits(
    tmp_path: Path, config: dict[str, object], says: str
) -> None:
    # (it said it waited up to 30 s for an agent first; a maxlen of 0 was refused only
    # once an agent was there, a tail_frames of -1 once cells were stored)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(config), encoding="utf-8")
    res = _run("worker", str(tmp_path / "no-agent-yet"), "--config", str(cfg), "--json",
               cwd=tmp_path)  # fmt: skip
    assert res.returncode == 2, res.stderr
    error = json.loads(res.stdout)["error"]
    assert error.startswith(f"worker config {cfg}"), error
    assert says in error
    assert "waiting" not in res.stderr


def test_a_worker_given_an_engine_of_another_task_is_refused_before_it_waits(
    tmp_path: Path,
) -> None:
    res = _run("worker", str(tmp_path / "no-agent-yet"), "--analyse", "--stain", "nuclei-unet",
               "--json", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert json.loads(res.stdout)["error"] == (
        "--stain nuclei-unet: it is a segmentation engine, not a virtual_stain engine "
        "(e.g. nuclei-stain)"
    )
    assert "waiting" not in res.stderr


@pytest.mark.parametrize(
    ("options", "says"),
    [
        pytest.param(
            ["--stain", "nuclei-unet"],
            "--stain nuclei-unet: it is a segmentation engine, not a virtual_stain engine",
            id="stain",
        ),
        pytest.param(
            ["--states", "nuclei-stain"],
            "--states nuclei-stain: it is a virtual_stain engine, not a classification engine",
            id="states",
        ),
    ],
)
def test_bench_engines_refuses_an_engine_of_another_task_before_it_runs(
    tmp_path: Path, options: list[str], says: str
) -> None:
    # (it ran the whole segmentation benchmark, some 2 minutes, then failed)
    res = _run("bench", "engines", "--repeats", "1", *options, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert says in json.loads(res.stdout)["error"]


def test_a_worker_given_a_json_file_without_run_id_names_what_it_lacks(tmp_path: Path) -> None:
    bus = tmp_path / "bus.json"
    bus.write_text(json.dumps({"frames": "ipc://x"}), encoding="utf-8")
    code, stdout, _ = _invoke("worker", str(bus), "--json")
    assert code == 2
    assert json.loads(stdout)["error"] == (
        f"{bus} is not a livescope bus file: it has no run_id, control, decisions, mode "
        "(give an agent's bus.json, in its run folder)"
    )


@pytest.mark.parametrize("command", ["report", "worker"])
def test_an_empty_run_path_is_refused(tmp_path: Path, command: str) -> None:
    # ("" was the current folder: `worker ""` waited 30 s for an agent there)
    res = _run(command, "", cwd=tmp_path)
    assert res.returncode == 2
    assert "Invalid value for 'RUN': is empty" in res.stderr


@pytest.mark.parametrize(
    ("make", "says"),
    [
        pytest.param(None, "{run} does not exist: give a run folder", id="missing"),
        pytest.param("file", "{run} is a file, not a run folder", id="file"),
        pytest.param(
            "folder", "{run} is not a run folder: it holds no frames.jsonl", id="empty-folder"
        ),
    ],
)
def test_report_says_what_is_wrong_with_a_path_that_is_no_run_folder(
    tmp_path: Path, make: str | None, says: str
) -> None:
    # (each said "summary.json is missing", which a run may well lack)
    run = tmp_path / "run"
    if make == "file":
        run.write_text("x", encoding="utf-8")
    elif make == "folder":
        run.mkdir()
    code, stdout, _ = _invoke("report", str(run), "--json")
    assert code == 2
    assert json.loads(stdout)["error"].startswith(says.format(run=run))


def test_report_of_a_file_in_a_run_folder_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "frames.jsonl").touch()
    (tmp_path / "summary.json").write_text("{}", encoding="utf-8")
    code, stdout, _ = _invoke("report", str(tmp_path / "summary.json"), "--json")
    assert code == 2
    assert json.loads(stdout)["error"] == (
        f"{tmp_path / 'summary.json'} is a file, not a run folder (give the run folder it "
        f"is in, {tmp_path})"
    )


@pytest.mark.parametrize(
    ("summary", "warns"),
    [
        pytest.param("garbage{", "is not valid JSON", id="garbage"),
        pytest.param("[1]", "does not hold a JSON object", id="not-object"),
        pytest.param(None, None, id="missing"),  # (a run killed before its summary)
        pytest.param("{}", None, id="fine"),
    ],
)
def test_report_warns_when_the_run_summary_is_unreadable(
    tmp_path: Path, summary: str | None, warns: str | None
) -> None:
    # (it exited 0 with nothing said: only report.html told the summary was left out)
    (tmp_path / "frames.jsonl").touch()
    if summary is not None:
        (tmp_path / "summary.json").write_text(summary, encoding="utf-8")
    code, stdout, stderr = _invoke("report", str(tmp_path), "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["ok"] is True
    if warns is None:
        assert "warning" not in stderr
    else:
        assert f"warning: {tmp_path / 'summary.json'} {warns}" in stderr


def test_profile_check_of_a_folder_given_as_a_path_says_it_is_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (./rigs became "rigs", looked up as a shipped profile: "no shipped profile called 'rigs'")
    (tmp_path / "rigs").mkdir()
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = _invoke("profile", "check", "./rigs", "--json")
    assert code == 1
    assert json.loads(stdout)["results"][0]["problems"] == ["is a folder, not a YAML file"]


def test_profile_check_of_a_shipped_name_still_finds_it_beside_a_folder_of_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sim").mkdir()  # (e.g. an output folder)
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = _invoke("profile", "check", "sim", "--json")
    assert code == 0, stdout
    assert json.loads(stdout)["results"][0]["name"] == "sim"


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_demo_interval_must_be_a_finite_number_at_least_0(value: str) -> None:
    # (nan was "greater than or equal to 0" wanted, as if it were negative)
    code, _, stderr = _invoke("demo", "--interval-s", value)
    assert code == 2
    assert "must be a finite number >= 0" in stderr
