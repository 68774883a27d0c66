"""The ``livescope`` entry (`_app`, `_common`): nonsense refused, messages printed as given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli


def _run_briefly(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m livescope ARGS``; a command still running after 60 s fails the test."""
    try:
        return run_cli(*args, cwd=cwd, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`livescope {' '.join(args)}` was still running after 60 s")


@pytest.mark.parametrize(
    "folder",
    [
        pytest.param("[/x]", id="closing-tag"),  # rich raised MarkupError: a traceback
        pytest.param("exp[bold]", id="style-tag"),  # rich ate "[bold]"
        pytest.param("data\\[ctrl]", id="windows-backslash"),  # rich ate the backslash
    ],
)
def test_an_error_naming_a_path_with_brackets_prints_the_path_as_given(
    tmp_path: Path, folder: str
) -> None:
    plan = tmp_path / folder / "plan.yaml"  # (not there: the plan is refused, naming it)
    res = run_cli("run", str(plan), "--json")
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 2, res.stderr
    assert str(plan) in json.loads(res.stdout)["error"]
    assert str(plan) in res.stderr.replace("\n", "")


def test_profile_check_prints_a_file_name_with_brackets_as_given(tmp_path: Path) -> None:
    profile = tmp_path / "[/x]" / "rig.yaml"
    profile.parent.mkdir(parents=True)
    profile.write_text("- not\n- a mapping\n", encoding="utf-8")
    res = run_cli("profile", "check", str(profile))
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 1, res.stderr
    assert str(profile) in res.stderr.replace("\n", "")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        pytest.param(
            ["demo", "--time-acceleration", "inf"], "--time-acceleration", id="demo-accel"
        ),
        pytest.param(["demo", "--interval-s", "inf"], "--interval-s", id="demo-interval"),
        pytest.param(
            ["run", "plan.yaml", "--time-acceleration", "inf"],
            "--time-acceleration",
            id="run-accel",
        ),
        pytest.param(["bench", "camera", "--seconds", "inf"], "--seconds", id="bench-camera"),
        pytest.param(["bench", "bus", "--paced-seconds", "inf"], "--paced-seconds", id="bench-bus"),
        pytest.param(["bench", "jitter", "--seconds", "inf"], "--seconds", id="bench-jitter"),
        pytest.param(
            ["bench", "pacing", "--interval-ms", "inf"], "--interval-ms", id="bench-pacing"
        ),
    ],
)
def test_an_infinite_float_option_is_refused_naming_the_option(
    tmp_path: Path, args: list[str], option: str
) -> None:
    res = _run_briefly(*args, "--json", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    reply = json.loads(res.stdout)
    assert reply["ok"] is False
    assert option in reply["error"]
    assert not any(tmp_path.iterdir())  # nothing acquired, recorded or benchmarked


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["demo", "--no-analysis", "--frames", "1", "--positions", "1"], id="demo"),
        pytest.param(["run", "plan.yaml"], id="run"),
        pytest.param(["agent", "--plan", "plan.yaml"], id="agent"),
        pytest.param(["replay", str(ROOT / "tests")], id="replay"),
        pytest.param(["track", str(ROOT / "tests")], id="track"),
    ],
)
def test_an_empty_out_is_refused_not_taken_for_the_current_folder(
    tmp_path: Path, args: list[str]
) -> None:
    res = _run_briefly(*args, "--out", "", "--json", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "--out" in json.loads(res.stdout)["error"]
    assert not any(tmp_path.iterdir())  # no run written into the current folder


def test_the_run_table_prints_a_run_folder_with_brackets_as_given(tmp_path: Path) -> None:
    out = tmp_path / "exp[bold]" / "run"
    res = subprocess.run(
        [sys.executable, "-m", "livescope", "demo", "--no-analysis", "--frames", "1",
         "--positions", "1", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "1000"},  # (a wide table: no path wrapped)
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert str(out / "data.ome.zarr") in res.stderr  # the table's recording row


@pytest.mark.parametrize(
    ("args", "option"),
    [
        pytest.param(["demo", "--profile", ""], "'--profile'", id="demo-profile"),
        pytest.param(["demo", "--plan", ""], "'--plan'", id="demo-plan"),
        pytest.param(["run", ""], "'plan'", id="run-plan"),
        pytest.param(["run", "plan.yaml", "--profile", ""], "'--profile'", id="run-profile"),
        pytest.param(["bench", "camera", "--profile", ""], "'--profile'", id="bench-profile"),
    ],
)
def test_an_empty_profile_or_plan_is_refused_naming_the_option(
    tmp_path: Path, args: list[str], option: str
) -> None:
    res = _run_briefly(*args, "--json", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    error = json.loads(res.stdout)["error"]
    assert option in error
    assert "empty" in error


def test_a_run_that_did_not_end_as_planned_exits_1_and_says_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `livescope run` and `demo` exited 0 on a summary with ok: false (frames not acquired,
    # the decision log not written), as `livescope agent` did: a script went on
    import typer

    from livescope.cli._app import _print_run

    summary = {"ok": False, "interrupted": False, "out": "runs/r",
               "error": "2 write(s) or sync(s) of the decision log failed"}  # fmt: skip
    with pytest.raises(typer.Exit) as ended:
        _print_run(summary, "livescope run", True)
    assert ended.value.exit_code == 1
    err = capsys.readouterr().err
    assert "the run did not end as planned: 2 write(s) or sync(s) of the decision log" in err
    _print_run({**summary, "ok": True, "error": None}, "livescope run", True)  # (no exit)
