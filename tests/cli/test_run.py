"""``livescope run PLAN``: a user's plan with its own policies, the worker in the loop."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

PLAN = """\
stage_positions: [{x: 0, y: 0, z: 0, name: field}]
channels: [{config: Phase, exposure: 20}, {config: DAPI, exposure: 50}]
time_plan: {interval: 60, loops: 8}
policies:
  - name: crowded
    when: {cell_count: {above: 5}}
    do: {change_interval: {interval_s: 90}}
  - name: dividing
    when: {division: {}}
    do: {record: {}}
"""


@pytest.mark.slow
def test_run_applies_the_plans_policies(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    out = tmp_path / "run"
    res = run_cli("run", str(plan), "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    # a simulated rig runs at 40x, as the demo (not the profile's 600x, which outruns the
    # CPU engines: most decisions would come after the run had ended)
    assert "time_acceleration: 40.0" in (out / "profile.yaml").read_text()
    assert summary["frames_planned_recorded"] == 16
    assert summary["frames_analysed"] == 16
    assert summary["decisions"]["accepted"] == 1  # the field is crowded once (hysteresis)
    fired = [json.loads(x) for x in (out / "results/policy.jsonl").read_text().splitlines()]
    crowded = [f for f in fired if f["rule"] == "crowded"]
    assert len(crowded) == 1
    assert crowded[0]["decision"]["type"] == "change_interval"
    acks = [json.loads(x) for x in (out / "decisions.jsonl").read_text().splitlines()]
    assert [a["ack"]["accepted"] for a in acks] == [True]
    assert (out / "plan.yaml").read_text() == PLAN  # the plan as given, policies and all
    assert Path(summary["report"]).is_file()
    Path(summary["report"]).unlink()
    again = run_cli("report", str(out), "--json")  # written again from the run folder
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["report"] == summary["report"]
    assert "crowded" in Path(summary["report"]).read_text(encoding="utf-8")  # its firing


def test_report_of_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path: Path) -> None:
    res = run_cli("report", str(tmp_path), "--json")
    assert res.returncode == 2
    assert "holds no frames.jsonl" in json.loads(res.stdout)["error"]


def test_a_bad_rule_is_a_clear_error_before_anything_moves(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.replace("cell_count: {above: 5}", "cell_count: {abvoe: 5}"))
    res = run_cli("run", str(plan), "--out", str(tmp_path / "run"), "--json")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    reply = json.loads(res.stdout)
    assert "policies.0 (crowded)" in reply["error"]
    assert "abvoe" in reply["error"]
    assert not (tmp_path / "run" / "data.ome.zarr").exists()


PYCRO_PLAN = """\
stage_positions: [{x: 0, y: 0, z: 0, name: field}]
channels: [{config: Phase, exposure: 20}, {config: DAPI, exposure: 50}]
time_plan: {interval: 60, loops: 4}
policies:
  - name: closeup
    when: {cell_count: {above: 5}}
    do: {acquire: {channels: [DAPI], loops: 2, interval_s: 20}}
"""


@pytest.mark.slow
def test_run_through_pycromanager_with_the_worker_in_the_loop(tmp_path: Path) -> None:
    """The whole adaptive loop with pycromanager acquiring (its Python backend on the
    simulated microscope): the worker's decision is acquired, every frame recorded."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(PYCRO_PLAN)
    out = tmp_path / "run"
    # 6 s per time point: a slow PC's engines keep up (at 40x, 1.5 s, a host at a Python
    # reference of ~70 ms made the close-up decision after the 4.5 s run had ended)
    res = run_cli("run", str(plan), "--out", str(out), "--time-acceleration", "10",
                  "--backend", "pycromanager", "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert summary["analysis_pace"] is None, summary["analysis_behind_s"]  # it kept up
    assert summary["backend"] == "pycromanager-python"
    assert summary["frames_planned_recorded"] == 8
    assert summary["frames_analysed"] == 8
    assert summary["decisions"]["accepted"] == 1  # crowded once (hysteresis): one close-up
    assert summary["frames_added"] == 2
    assert summary["frames_acquired"] == summary["frames_written"] == 10
    assert summary["images_saved"] == summary["events_submitted"] == 10
    frames = [json.loads(x) for x in (out / "frames.jsonl").read_text().splitlines()]
    assert len([f for f in frames if f["added_by"]]) == 2
    assert Path(summary["ndtiff"]).is_dir()  # pycromanager's own dataset, beside the recording


def test_an_unknown_backend_is_a_clear_error(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PYCRO_PLAN)
    res = run_cli("run", str(plan), "--out", str(tmp_path / "r"), "--backend", "micromanager",
                  "--json")  # fmt: skip
    assert res.returncode == 2
    assert "unknown acquisition backend 'micromanager'" in json.loads(res.stdout)["error"]


def test_a_replay_profile_is_refused_by_run_and_agent(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PYCRO_PLAN)
    for cmd, args in (("run", (str(plan),)), ("agent", ("--plan", str(plan)))):
        res = run_cli(cmd, *args, "--profile", "replay", "--out", str(tmp_path / cmd), "--json")
        assert res.returncode == 2, res.stderr
        assert json.loads(res.stdout)["error"] == (
            "profile 'replay' is kind 'replay': it serves recorded data to `livescope replay`; "
            f"`livescope {cmd}` drives a simulated or micromanager rig (e.g. --profile sim)"
        )


@pytest.mark.slow
@pytest.mark.skipif(
    sys.platform == "win32",
    reason="Ctrl+C is a console event on Windows (CTRL_C_EVENT to a process group), not SIGINT",
)
def test_an_interrupted_run_says_so_in_its_summary(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.replace("loops: 8", "loops: 400").split("policies:")[0])
    out = tmp_path / "run"
    # a shell starting the tests in the background hands SIGINT down ignored: the run
    # gets it as a terminal gives it, with its default action (Python's KeyboardInterrupt)
    proc = subprocess.Popen(  # Ctrl-C as a terminal sends it: SIGINT to the process
        [sys.executable, "-m", "livescope", "run", str(plan), "--out", str(out),
         "--time-acceleration", "40", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        if sys.platform != "win32" else None,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    frames = out / "frames.jsonl"
    while not (frames.is_file() and frames.read_text().count("\n") >= 4):
        assert time.monotonic() < deadline, "the run did not start"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert "interrupted: the run stopped early" in stderr
    # the acquisition stopped; what it recorded was analysed and reported
    printed = json.loads(stdout)
    summary = json.loads((out / "summary.json").read_text())
    assert printed == summary
    assert summary["ok"] is False
    assert summary["interrupted"] is True
    assert summary["error"] == "interrupted (Ctrl-C)"
    assert 4 <= summary["frames_written"] == summary["frames_acquired"] < 800
    assert summary["frames_analysed"] == summary["frames_written"]  # none left out
    assert summary["dropped_recorded_frames"] == 0
    assert Path(summary["report"]).is_file()
    assert summary["truth"]["tracks"] > 0  # (the simulation's, as of the last frame)


def test_an_output_path_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    taken = tmp_path / "taken"
    taken.write_text("")
    for args in (("run", str(plan)), ("replay", str(tmp_path)), ("demo",), ("agent", "--plan",
                 str(plan))):  # fmt: skip
        res = run_cli(*args, "--out", str(taken), "--json")
        assert res.returncode == 2, res.stderr
        error = json.loads(res.stdout)["error"]
        assert error == f"{taken} is a file; the output must be a new folder"
    # a folder that cannot be made (under a file): named, with the reason, not a traceback
    under = taken / "run1"
    for args in (("demo", "--no-analysis", "--frames", "1"), ("agent", "--plan", str(plan))):
        res = run_cli(*args, "--out", str(under), "--json")
        assert res.returncode == 2, res.stderr
        assert "Traceback" not in res.stderr
        assert json.loads(res.stdout)["error"].startswith(
            f"cannot create the output folder {under}: "
        )


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_the_system_refuses_is_named_not_a_traceback(tmp_path: Path) -> None:
    # /proc looks writable to root (os.access), yet nothing can be made in it: the same as
    # a share that refuses writes whatever its permissions say
    out = Path("/proc") / f"livescope-{tmp_path.name}"
    res = run_cli("demo", "--no-analysis", "--frames", "1", "--out", str(out), "--json")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    error = json.loads(res.stdout)["error"]
    # (as root the system refuses the folder; otherwise the folder check already does)
    assert error.startswith((f"cannot use {out}: ", f"cannot create the output folder {out}: "))


def test_a_rig_whose_config_file_is_missing_leaves_no_run_folder(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("stage_positions: [{x: 0, y: 0, z: 0}]\nchannels: [{config: DAPI}]\n")
    for args in (("run", str(plan)), ("agent", "--plan", str(plan))):
        out = tmp_path / f"out-{args[0]}"
        res = run_cli(*args, "--profile", "widefield-2048-scmos", "--out", str(out), "--json")
        assert res.returncode == 2, res.stderr
        assert json.loads(res.stdout)["error"].endswith("(micromanager_config) not found")
        assert not out.exists()  # nothing half-made to clear away before the next try


def test_the_table_of_a_micromanager_run_has_no_simulation_rows() -> None:
    # a micromanager run's summary has no timepoints or ground truth: the table
    # after `livescope run` without --json raised a KeyError once the run was done
    from livescope.cli._app import _print_demo

    _print_demo({"frames_acquired": 12, "positions": ["A"], "channels": ["DAPI"],
                 "duration_s": 3.0, "fps": 4.0, "recording": "r/data.ome.zarr",
                 "report": "r/report.html", "out": "r"})  # fmt: skip


def test_a_bad_transport_is_refused_before_a_run_folder_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVESCOPE_TRANSPORT", "udp")  # (the CLI's processes inherit it)
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    seq = tmp_path / "01"
    seq.mkdir()
    import numpy as np
    import tifffile

    tifffile.imwrite(seq / "t000.tif", np.zeros((64, 64), np.uint16))
    for args in (("demo", "--frames", "2"), ("run", str(plan)), ("agent", "--plan", str(plan)),
                 ("replay", str(seq))):  # fmt: skip
        out = tmp_path / f"out-{args[0]}"
        res = run_cli(*args, "--out", str(out), "--json")
        assert res.returncode == 2, (args, res.stderr[-2000:])
        error = json.loads(res.stdout)["error"]
        assert (
            error == "transport 'udp' (from the LIVESCOPE_TRANSPORT environment variable): "
            "give tcp or ipc"
        ), args
        assert not out.exists(), args  # nothing half-made to clear away before the next try
    # an agent without a bus makes no endpoint: the transport is not its concern
    res = run_cli("agent", "--plan", str(plan), "--bus", "off", "--out", str(tmp_path / "quiet"),
                  "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["frames_written"] == 16
