"""The plans in examples/ fit the simulated rig, as their comments and the README say."""

from __future__ import annotations

import json

from tests.conftest import ROOT, run_cli

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_every_example_plan_fits_the_simulated_rig() -> None:
    assert EXAMPLES  # (the README points users to them)
    res = run_cli("plan", "check", *map(str, EXAMPLES), "--json")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert [r["valid"] for r in out["results"]] == [True] * len(EXAMPLES)
    assert all(r["frames"] > 0 for r in out["results"])
