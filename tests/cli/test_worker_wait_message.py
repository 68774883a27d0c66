"""``livescope worker`` says it waits for an agent only once it really waits for one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli


@pytest.mark.parametrize(
    ("options", "says"),
    [
        pytest.param(["--seg", "bogus"], "no engine 'bogus'", id="engine"),
        pytest.param(["--policy", "latest"], "--policy is for counting frames", id="policy"),
    ],
)
def test_a_worker_refused_before_it_waits_does_not_say_it_waits(
    tmp_path: Path, options: list[str], says: str
) -> None:
    # (it said it waited up to 30 s, then gave the refusal a second later)
    res = run_cli("worker", str(tmp_path / "no-agent-yet"), "--analyse", *options, "--json")
    assert res.returncode == 2, res.stderr
    assert says in json.loads(res.stdout)["error"]
    assert "waiting" not in res.stderr


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(["--analyse"], id="analyse"),
        pytest.param([], id="count"),
    ],
)
def test_a_worker_started_before_its_agent_says_it_waits(
    tmp_path: Path, options: list[str]
) -> None:
    run = tmp_path / "no-agent-yet"
    proc = subprocess.Popen(
        [sys.executable, "-m", "livescope", "worker", str(run), *options, "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        # (the first line it says; it would end on its own only after 30 s without an agent)
        said = proc.stderr.readline()
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert said.strip() == f"waiting up to 30 s for an agent to start in {run} (its bus.json)"
