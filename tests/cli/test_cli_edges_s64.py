"""The entry's edges: a Ctrl+C as a command starts, a counting worker's analysis options,
an empty plan or profile path, ``bench jitter --busy`` beyond the cores."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

PLAN = ROOT / "examples" / "mitosis-closeups.yaml"

needs_proc = pytest.mark.skipif(
    sys.platform == "win32" or not Path("/proc/self/status").exists(),
    reason="sends SIGINT and reads /proc/PID/status (when Python catches SIGINT)",
)


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "livescope", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        # (a test run started in the background of a shell ignores SIGINT, and so would
        # the command, which Python then never catches: as a terminal's Ctrl+C finds it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_until_python_catches_sigint(proc: subprocess.Popen[str]) -> None:
    """Wait until ``proc``'s interpreter has its SIGINT handler (before it, SIGINT kills it).

    The delays of the tests count from there, not from the start of a process
    that a loaded machine may take long to start.
    """
    status = Path(f"/proc/{proc.pid}/status")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        if int(fields["SigCgt"].strip(), 16) & (1 << (signal.SIGINT - 1)):
            return
        time.sleep(0.002)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"the command never caught SIGINT (status {proc.returncode}): {out} {err}")


LOST_IN_A_FINALIZER = re.compile(
    r"Exception ignored in: [^\n]*\nTraceback \(most recent call last\):\n"
    r"(?:  [^\n]*\n)*KeyboardInterrupt: ?\n"
)
"""What CPython prints of a KeyboardInterrupt raised in a finalizer or weakref callback
(an import's module-lock callback, say): it says so and carries on, the Ctrl+C lost."""


def _interrupt(proc: subprocess.Popen[str], after_s: float) -> tuple[int, str, str]:
    """Send SIGINT ``after_s`` s after ``proc`` catches it; its status, stdout and stderr.

    A Ctrl+C that CPython handled inside a finalizer is lost there, whatever the
    program does (``LOST_IN_A_FINALIZER``, left out of the stderr returned): then,
    as a user would, a second one is sent; a first one lost for any other reason
    fails the test.
    """
    _wait_until_python_catches_sigint(proc)
    time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    again = False
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        again = True
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"still running 120 s after two Ctrl+C: {out} {err}")
    if again:
        assert LOST_IN_A_FINALIZER.search(err), f"the first Ctrl+C was lost: {out} {err}"
    return proc.returncode, out, LOST_IN_A_FINALIZER.sub("", err)


# the worker imports for about a second, then waits 30 s for an agent that never starts
DELAYS_S = [0.2, 0.5, 1.0, 2.0]


@needs_proc
@pytest.mark.parametrize("after_s", DELAYS_S)
def test_a_ctrl_c_as_a_worker_starts_prints_the_interrupted_json_and_exits_2(
    tmp_path: Path, after_s: float
) -> None:
    # (a Ctrl+C in its imports or typer's parsing ended it with 130 and nothing
    # printed, a KeyboardInterrupt traceback, or the JSON and death by SIGINT: -2)
    proc = _start("worker", str(tmp_path / "run"), "--json")
    code, out, err = _interrupt(proc, after_s)
    assert "Traceback" not in err, err
    assert code == 2, (code, out, err)
    assert [json.loads(line) for line in out.splitlines()] == [
        {"ok": False, "error": "interrupted", "problems": []}
    ], err


@needs_proc
@pytest.mark.parametrize("after_s", [0.2, 0.6])
def test_a_ctrl_c_as_the_agent_starts_prints_json_and_exits_2(
    tmp_path: Path, after_s: float
) -> None:
    out_dir = tmp_path / "run"
    proc = _start("agent", "--json", "--bus", "off", "--plan", str(PLAN), "--out", str(out_dir))
    code, out, err = _interrupt(proc, after_s)
    assert "Traceback" not in err, err
    assert code == 2, (code, out, err)
    lines = out.splitlines()
    assert len(lines) == 1, out
    result = json.loads(lines[0])
    assert result["ok"] is False
    # before it acquires: "interrupted"; once it does (a fast machine): the run's summary
    assert result["error"] == "interrupted" or result["interrupted"] is True, result


@needs_proc
@pytest.mark.parametrize("after_s", [0.2, 1.0])
def test_a_ctrl_c_as_a_command_starts_without_json_says_so_and_exits_2(
    tmp_path: Path, after_s: float
) -> None:
    proc = _start("worker", str(tmp_path / "run"))
    code, out, err = _interrupt(proc, after_s)
    assert "Traceback" not in err, err
    assert code == 2, (code, out, err)
    assert out == ""
    assert err.strip().splitlines()[-1] == "error: interrupted", err


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    """A run folder whose run has ended (a counting worker says so at once, exit 2)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text('{"ok": true}', encoding="utf-8")
    return run


@pytest.mark.skipif(sys.platform == "win32", reason="a process killed by a signal: POSIX")
def test_a_ctrl_c_caught_in_code_run_by_exec_leaves_the_exit_status_as_it_is(
    tmp_path: Path, finished_run: Path
) -> None:
    # CPython marks a KeyboardInterrupt leaving exec'd code (a dataclass's methods being
    # made as a module loads) as uncaught however it was caught, and `python -m` ended
    # by SIGINT after the interrupted JSON and status 2 (a parent saw -2: killed); here
    # one is caught after the command's last exec'd code (which would clear the mark)
    (tmp_path / "catch_late.py").write_text(
        "import livescope.cli._common as common\n"
        "from livescope.cli import main\n"
        "emit = common.emit\n"
        "def emit_then_catch(obj):\n"
        "    emit(obj)\n"
        "    try:\n"
        "        exec('raise KeyboardInterrupt')\n"
        "    except KeyboardInterrupt:\n"
        "        pass\n"
        "common.emit = emit_then_catch\n"
        "main()\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    res = subprocess.run(
        [sys.executable, "-m", "catch_late", "worker", str(finished_run), "--json"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "has finished" in json.loads(res.stdout)["error"]


@pytest.mark.parametrize(
    "option",
    [
        ["--seg", "no-such-engine"],
        ["--stain", "nuclei-stain"],
        ["--states", ""],
        ["--plan", "no-such-plan.yaml"],
        ["--profile", "no-such-profile"],
        ["--backend", "no-such-backend"],
        ["--nucleus-diameter-um", "5"],
    ],
    ids=lambda option: option[0],
)
def test_a_counting_worker_refuses_the_analysis_options(
    finished_run: Path, option: list[str]
) -> None:
    # (they were ignored, even invalid ones: a worker counted frames and exited 0)
    res = run_cli("worker", str(finished_run), "--json", *option, timeout=60)
    assert res.returncode == 2, res.stderr
    assert json.loads(res.stdout)["error"] == (
        f"{option[0]} is for the analysis worker: give --analyse too"
    )


def test_a_counting_worker_names_every_analysis_option_it_refuses(finished_run: Path) -> None:
    res = run_cli(
        "worker", str(finished_run), "--json", "--seg", "x", "--backend", "y", timeout=60
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert json.loads(res.stdout)["error"] == (
        "--seg, --backend are for the analysis worker: give --analyse too"
    )


@pytest.mark.parametrize("command", [["plan", "check"], ["profile", "check"]], ids=" ".join)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_an_empty_file_to_check_is_refused_not_taken_for_the_current_folder(
    command: list[str], as_json: bool
) -> None:
    # (it was checked as the folder ".": "✗ . is a folder", exit 1)
    res = run_cli(*command, *(["--json"] if as_json else []), "", timeout=60)
    assert res.returncode == 2, res.stderr
    assert "is empty" in res.stderr
    assert "is a folder" not in res.stderr + res.stdout
    if as_json:
        assert "is empty" in json.loads(res.stdout)["error"]


def test_bench_jitter_refuses_more_busy_processes_than_cores() -> None:
    # (--busy 100000 started as many: the load average passed 100)
    busy = (os.cpu_count() or 1) + 1
    res = run_cli(
        "bench", "jitter", "--busy", str(busy), "--seconds", "0.5", "--turns", "1", timeout=120
    )
    assert res.returncode == 2, res.stdout
    error = json.loads(res.stdout)["error"]
    assert "--busy" in error
    assert f"{busy} is more than this PC's {busy - 1} cores" in error
