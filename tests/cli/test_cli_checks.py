"""Mistakes on the command line are refused before anything is acquired or waited for."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

_PLAN = """\
channels: [{config: Phase, exposure: 20}]
time_plan: {interval: 1, loops: 2}
policies:
  - name: closeup
    when: {mitosis: {p_min: 0.5}}
    do: {acquire: {channels: [GFP], loops: 2, interval_s: 30}}
"""


def test_the_agent_refuses_a_plan_whose_policy_the_rig_refuses(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(_PLAN, encoding="utf-8")  # GFP: not a channel of the 'sim' rig
    out = tmp_path / "run"
    res = run_cli("agent", "--plan", str(plan), "--out", str(out), "--json")
    assert res.returncode == 2, res.stderr
    reply = json.loads(res.stdout)
    assert "policies.0 (closeup)" in reply["error"]
    assert "GFP" in reply["error"]
    assert not (out / "data.ome.zarr").exists()  # nothing acquired


@pytest.mark.parametrize(
    ("options", "says"),
    [
        pytest.param(["--seg", "nuclei-unett"], "no engine 'nuclei-unett'", id="engine"),
        pytest.param(["--backend", "cuda-magic"], "unknown backend 'cuda-magic'", id="backend"),
        pytest.param(["--backend", ""], "an empty backend name", id="empty-backend"),
        pytest.param(["--profile", "simm"], "simm", id="profile"),
        pytest.param(["--policy", "latest"], "--policy is for counting frames", id="policy"),
    ],
)
def test_an_analysis_workers_bad_option_is_refused_before_it_waits_for_an_agent(
    tmp_path: Path, options: list[str], says: str
) -> None:
    t0 = time.monotonic()
    res = run_cli("worker", str(tmp_path / "no-agent-yet"), "--analyse", *options, "--json")
    took = time.monotonic() - t0
    assert res.returncode == 2, res.stderr
    assert says in json.loads(res.stdout)["error"]
    assert took < 25, f"refused only after waiting {took:.0f} s for an agent"  # (waits 30 s)


def test_a_benchmark_usage_error_prints_json_without_the_flag() -> None:
    res = run_cli("bench", "camera", "--seconds", "abc")
    assert res.returncode == 2
    reply = json.loads(res.stdout)
    assert reply["ok"] is False
    assert "--seconds" in reply["error"]


def test_several_replays_with_a_bad_profile_are_refused_once_before_any_runs(
    tmp_path: Path,
) -> None:
    data = [tmp_path / "a", tmp_path / "b"]  # (never opened: refused before)
    for d in data:
        d.mkdir()
    res = run_cli("replay", *map(str, data), "--profile", "simm", "--out",
                  str(tmp_path / "out"), "--json")  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "simm" in json.loads(res.stdout)["error"]
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()
