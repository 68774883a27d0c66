"""A Ctrl+C as the recording closes stops `livescope run` and `livescope demo` with exit 2.

It came once acquisition had ended, every frame recorded (the summary's
``interrupted_while_closing``, its ``interrupted`` false): the commands printed the
summary, wrote the report and exited 0, as if no Ctrl+C had come.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PLAN = """\
stage_positions: [{x: 0, y: 0, z: 0, name: field}]
channels: [{config: Phase, exposure: 20}, {config: DAPI, exposure: 50}]
time_plan: {interval: 60, loops: 2}
"""

CTRL_C_AT_CLOSE = """\
import os, signal
from livescope.record import OmeZarrWriter
from livescope.cli import main
close = OmeZarrWriter.close
sent = []
def ctrl_c_then_close(self):
    if not sent:  # (the acquisition's recording, once: not a later reader's)
        sent.append(True)
        os.kill(os.getpid(), signal.SIGINT)
    close(self)
OmeZarrWriter.close = ctrl_c_then_close
main()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to itself: POSIX")
@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["demo", "--no-analysis", "--frames", "2", "--positions", "1"], id="demo"),
        pytest.param(["run", "plan.yaml", "--threads", "1"], id="run-with-the-worker"),
    ],
)
def test_a_ctrl_c_as_the_recording_closes_exits_2(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "ctrl_c_at_close.py").write_text(CTRL_C_AT_CLOSE, encoding="utf-8")
    (tmp_path / "plan.yaml").write_text(PLAN, encoding="utf-8")
    command = [str(tmp_path / a) if a == "plan.yaml" else a for a in command]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    run = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "ctrl_c_at_close", *command, "--json", "--out", str(run)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=180, check=False,
        # (a test run in the background of a shell ignores SIGINT, and so would the command)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert "Traceback" not in res.stderr, res.stderr
    summary = json.loads(res.stdout.splitlines()[-1])
    # (the Ctrl+C came where the test meant it to: every frame acquired was recorded)
    assert summary.get("interrupted_while_closing") is True, summary
    assert summary["frames_written"] == summary["frames_acquired"] == 4, summary
    assert Path(summary["report"]).is_file()  # what was recorded is still reported
    assert json.loads((run / "summary.json").read_text())["interrupted_while_closing"] is True
    assert res.returncode == 2, (
        f"`livescope {command[0]}` exited {res.returncode} after a Ctrl+C as its recording "
        f"closed (summary interrupted={summary.get('interrupted')}); stderr: {res.stderr}"
    )
    said = "interrupted: the Ctrl+C came as the run ended (every frame was recorded)"
    assert said in res.stderr, res.stderr
