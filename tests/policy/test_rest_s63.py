"""Session 63: close-up names a position's name leaves no room for, refused before the run;
the report's imaged mitoses; the plan's light-dose messages; the README's load refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from livescope.policy import rules_for_profile
from livescope.schema import LivescopeError, load_profile

from ..conftest import ROOT, run_cli

PROFILE = load_profile("sim")

CLOSEUP = {
    "name": "mitosis-closeup",
    "when": {"mitosis": {"p_min": 0.5, "frames": 2}},
    "do": {"acquire": {"channels": ["Phase", "DAPI"], "loops": 4, "interval_s": 30,
                       "centre": "cell", "share_field": True}},
}  # fmt: skip

PLAN = """\
time_plan: {{interval: 120, loops: 3}}
stage_positions:
  - {{x: 0, y: 0, z: 0, name: {name}}}
channels:
  - {{config: Phase, exposure: 20}}
  - {{config: DAPI, exposure: 50}}
policies:
  - {rule}
"""


def _plan(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.format(name=name, rule=json.dumps(CLOSEUP)), encoding="utf-8")
    return path


# 240 bytes: a position's name may be up to 249, its close-ups' (+ "~mitosis-closeup-<n>") not
LONG = "P" * 240


def test_a_position_too_long_for_its_close_ups_names_is_refused_naming_both() -> None:
    with pytest.raises(LivescopeError) as err:
        rules_for_profile([CLOSEUP], PROFILE, source="plan.yaml", positions=["A1", LONG])
    msg = str(err.value)
    assert "plan.yaml: policies.0 (mitosis-closeup)" in msg, msg
    assert repr(LONG) in msg, msg
    assert f"{LONG}~mitosis-closeup-<n>" in msg, msg
    assert "bytes long" in msg, msg
    assert "shorten the position's name or the rule's" in msg, msg
    # a short one is fine; so is a long one for a rule that adds no close-ups
    assert rules_for_profile([CLOSEUP], PROFILE, positions=["A1", "P" * 200])
    record = {"name": "note", "when": CLOSEUP["when"], "do": {"record": {}}}
    assert rules_for_profile([record], PROFILE, positions=[LONG])


def test_plan_check_refuses_a_position_whose_close_ups_cannot_be_named(tmp_path: Path) -> None:
    res = run_cli("plan", "check", str(_plan(tmp_path, LONG)), "--json")
    assert res.returncode == 1, res.stderr[-2000:]
    (result,) = json.loads(res.stdout)["results"]
    assert result["valid"] is False
    (problem,) = result["problems"]
    assert "policies.0 (mitosis-closeup)" in problem, problem
    assert repr(LONG) in problem, problem
    ok = run_cli("plan", "check", str(_plan(tmp_path, "A1")), "--json")
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]


def test_the_agent_and_worker_checks_refuse_it_too(tmp_path: Path) -> None:
    from livescope.cli._agent import _check_policies
    from livescope.pipeline import PipelineWorker, WorkerConfig

    plan = _plan(tmp_path, LONG)
    with pytest.raises(LivescopeError, match="mitosis-closeup"):
        _check_policies(plan, PROFILE)
    with pytest.raises(LivescopeError, match="mitosis-closeup"):
        PipelineWorker(tmp_path / "run", WorkerConfig(plan=str(plan)))
    _check_policies(_plan(tmp_path, "A1"), PROFILE)


def _truth_html(mitoses: list[dict[str, object]]) -> str:
    from livescope.view._report_decisions import truth_section

    imaged = sum(bool(m["imaged"]) for m in mitoses)
    late = sum(bool(m["closeup_after_mitosis"]) for m in mitoses)
    ev = {"triggers": [], "mitoses": mitoses, "trigger_recall_imaged": imaged / len(mitoses),
          "mitosis_to_closeup_s": 40.0, "closeups_after_mitosis": late}  # fmt: skip
    summary = {"evaluation": ev, "trigger_precision": 1.0, "trigger_recall": 1.0}
    page = SimpleNamespace(run=SimpleNamespace(summary=summary, run_dir=Path("run")))
    return truth_section(page)  # type: ignore[arg-type]


def test_the_report_says_close_ups_count_during_the_mitosis_and_those_after_it() -> None:
    mitoses = [
        {"triggered": True, "imaged": True, "closeup_after_mitosis": False},
        {"triggered": True, "imaged": False, "closeup_after_mitosis": True},
        {"triggered": True, "imaged": False, "closeup_after_mitosis": True},
        {"triggered": False, "imaged": False, "closeup_after_mitosis": False},
    ]
    html = _truth_html(mitoses)
    assert "1 of 4 mitoses in view got a close-up during the mitosis" in html, html
    assert "trigger; 2 more got one only after the mitosis (recall imaged 0.25)" in html, html
    none_after = _truth_html(mitoses[:1] + mitoses[3:])
    assert "1 of 2 mitoses in view got a close-up during the mitosis" in none_after, none_after
    assert "only after" not in none_after, none_after


@pytest.mark.parametrize(("limit", "shown"), [(1.0, "1.04"), (1.035, "1.04"), (1.0, "1.004")])
def test_the_plans_light_dose_messages_show_the_excess(limit: float, shown: str) -> None:
    from livescope.schema._plan import _dose_problems

    s = float(shown)
    dose = PROFILE.light_dose.model_copy(
        update={"max_fluorescence_s_per_position": limit, "max_fluorescence_s_per_channel": limit}
    )
    prof = PROFILE.model_copy(update={"light_dose": dose})
    per_position, per_channel = _dose_problems({("p0", "DAPI"): s}, prof)
    assert f"position p0 gets {shown} s of fluorescence" in per_position, per_position
    assert f"channel DAPI gets {shown} s of fluorescence" in per_channel, per_channel
    # each figure read as the message prints it is over the limit
    for msg in (per_position, per_channel):
        got = re.search(r"gets ([\d.]+) s", msg)
        assert got is not None, msg
        assert float(got.group(1)) > limit, msg


def test_the_readme_lists_a_channel_listed_twice_among_the_acquire_settings_refused() -> None:
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    start = text.index("Declared rules are checked before anything moves")
    said = text[start : text.index("A policy that raises is disabled", start)]
    assert "a channel listed twice in `acquire.channels`" in said, said
    assert "`<position>~<rule>-<n>`" in said, said
