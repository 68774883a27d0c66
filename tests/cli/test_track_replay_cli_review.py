"""``livescope track``, ``eval track`` and ``replay``: options and exit codes (review)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import typer

from tests.conftest import run_cli


def _frames(folder: Path, n: int = 3) -> Path:
    """A CTC-layout folder of ``n`` camera frames (t000.tif ...), not label images."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for t in range(n):
        tifffile.imwrite(folder / f"t{t:03d}.tif", rng.integers(100, 4000, (32, 32), np.uint16))
    return folder


def _refused(res_args: list[str], cwd: Path) -> str:
    res = run_cli(*res_args, "--json", cwd=cwd, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    return str(json.loads(res.stdout)["error"])


@pytest.mark.parametrize(
    ("args", "option"),
    [
        # a CTC folder's channel "" was replayed as DAPI, with a hint (--channel-map =NAME)
        # that --channel-map refuses
        pytest.param(["replay", "seq", "--channel", ""], "'--channel'", id="replay-channel"),
        pytest.param(["replay", "seq", "--profile", ""], "'--profile'", id="replay-profile"),
        pytest.param(["replay", "seq", "--plan", ""], "'--plan'", id="replay-plan"),
        pytest.param(["replay", "seq", "--cluster", ""], "'--cluster'", id="replay-cluster"),
        pytest.param(["replay", ""], "'datasets'", id="replay-dataset"),
        # the default engine ran in place of an unset variable's name
        pytest.param(["track", "seq", "--engine", ""], "'--engine'", id="track-engine"),
        pytest.param(["track", ""], "'images'", id="track-images"),
        pytest.param(["eval", "track", "--res", "", "--gt", "seq"], "'--res'", id="eval-res"),
    ],
)
def test_an_empty_text_option_is_refused_naming_it(
    tmp_path: Path, args: list[str], option: str
) -> None:
    # (an unset variable in a script: "" was taken for the folder "." or for a name)
    _frames(tmp_path / "seq")
    out = tmp_path / "out"
    extra = [] if args[0] == "eval" else ["--out", str(out)]
    error = _refused([*args, *extra], tmp_path)
    assert option in error
    assert "empty" in error
    assert not out.exists()


@pytest.mark.parametrize("option", ["--nucleus-diameter-um", "--interval-s", "--pixel-size"])
def test_an_infinite_replay_number_is_refused_naming_it_before_anything_is_written(
    tmp_path: Path, option: str
) -> None:
    # --nucleus-diameter-um inf started the worker, which refused it into --out (left
    # behind: the same command again was refused as "not empty"), naming no option
    _frames(tmp_path / "seq")
    out = tmp_path / "out"
    error = _refused(["replay", "seq", "--out", str(out), option, "inf"], tmp_path)
    assert f"'{option}'" in error
    assert "finite" in error
    assert not out.exists()


def _summary(**changes: object) -> dict[str, object]:
    summary: dict[str, object] = {
        "ok": True, "interrupted": False, "error": None, "out": "runs/r", "report": "r.html",
        "dataset": "/data/rec [1]", "format": "livescope", "frames_served": 4,
        "frames_analysed": 4, "decisions": {"what_if": 0}, "warnings": [],
    }  # fmt: skip
    return {**summary, **changes}


@pytest.mark.parametrize("json_out", [True, False], ids=["json", "text"])
def test_a_replay_that_did_not_end_as_planned_exits_1_and_says_why(
    capsys: pytest.CaptureFixture[str], json_out: bool
) -> None:
    # a replay whose summary said ok: false (the decision log not written) exited 0, where
    # `livescope run`, `demo` and `agent` exit 1: a script went on as if all were well
    from livescope.cli._replay import _print_replay

    error = "2 write(s) or sync(s) of the decision log failed"
    with pytest.raises(typer.Exit) as ended:
        _print_replay(_summary(ok=False, error=error), json_out)
    assert ended.value.exit_code == 1
    out, err = capsys.readouterr()
    assert f"the replay did not end as planned: {error}" in err
    if json_out:
        assert json.loads(out)["ok"] is False  # (one JSON object: nothing else on stdout)
    else:
        assert out == "runs/r\n"
    with pytest.raises(typer.Exit) as ended:  # a Ctrl+C: exit 2, as before
        _print_replay(_summary(ok=False, interrupted=True, error="interrupted"), json_out)
    assert ended.value.exit_code == 2
    capsys.readouterr()
    _print_replay(_summary(), json_out)  # (ended as planned: no exit)
    assert "did not end as planned" not in capsys.readouterr().err


def test_a_shipped_profile_stays_a_name_beside_a_folder_of_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `replay a b --profile replay` where an earlier `--out replay` left a folder: the
    # folder's absolute path went to every task, which failed on "a folder, not a YAML
    # file" (the check before had loaded the shipped profile)
    from livescope.cli._replay import _profile_for_workers
    from livescope.schema import builtin_profile_path, load_profile

    monkeypatch.chdir(tmp_path)
    (tmp_path / "replay").mkdir()
    given = _profile_for_workers("replay")
    assert given == "replay"
    assert load_profile(given).name == "replay"
    # a file is made absolute (the workers do not run in this folder)
    (tmp_path / "rig.yaml").write_text(builtin_profile_path("replay").read_text())
    assert _profile_for_workers("rig.yaml") == str(tmp_path / "rig.yaml")
    assert _profile_for_workers(None) is None


def test_track_refuses_an_out_it_cannot_make_before_the_engine_loads(tmp_path: Path) -> None:
    # an --out under a file was found only when the result was written, after every frame
    # had been segmented (minutes on a long sequence, for nothing)
    _frames(tmp_path / "seq")
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "res"
    error = _refused(["track", "seq", "--out", str(out), "--engine", "no-such-engine"], tmp_path)
    assert error == f"cannot create the output folder {out}: {tmp_path / 'a-file'} is a file, " + (
        "not a folder"
    )


@pytest.mark.parametrize("command", ["replay", "run"])
def test_more_engine_threads_than_cores_are_refused(tmp_path: Path, command: str) -> None:
    # --threads 100000 started a worker of some 32,000 threads: every later thread start
    # on the PC failed ("Resource temporarily unavailable"), and it ran on after the replay
    import os

    too_many = str((os.cpu_count() or 1) + 1)
    target = str(tmp_path / "in") if command == "replay" else str(tmp_path / "plan.yaml")
    res = run_cli(command, target, "--threads", too_many, "--out", str(tmp_path / "out"), "--json")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"more than this PC's {os.cpu_count() or 1} cores" in res.stdout + res.stderr
    assert not (tmp_path / "out").exists()
