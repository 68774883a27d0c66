"""A whole-number setting written as a float (YAML's ``loops: 4.0``) is used as the int it
is; a rule's name that is not text is refused at load, naming the rule and the value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from livescope.policy import (
    Cells,
    Observation,
    PolicyEngine,
    Rule,
    load_policies,
    rules_for_profile,
    rules_from_spec,
)
from livescope.schema import LivescopeError, load_profile

PROFILE = load_profile("sim")

# (YAML reads 4.0 and 3.0 as floats: they passed the whole-number check and were kept
# as floats, and the first firing's range(4.0) raised: the rule was disabled for the run)
RULES = """\
- name: closeup
  when: {mitosis: {p_min: 0.5, frames: 1.0}}
  do:
    acquire: {channels: [Phase, DAPI], loops: 4.0, z_planes: 3.0, interval_s: 30}
  max_fires: 2.0
"""

PLAN = f"""\
channels: [{{config: Phase, exposure: 20}}, {{config: DAPI, exposure: 50}}]
time_plan: {{interval: 120, loops: 3}}
stage_positions: [{{x: 0, y: 0, z: 0, name: A}}]
policies:
{"".join("  " + line + chr(10) for line in RULES.splitlines())}"""


def _field(t: int) -> Observation:
    """One field of one cell in mitosis, at the centre of a 512² frame."""
    return Observation(
        run_id="r1", seq=t, position="A", t=t, sample_time_s=120.0 * t, pixel_size_um=0.65,
        shape=(512, 512), stage_um=(0.0, 0.0, 0.0),
        cells=Cells(labels=np.array([1]), tracks=np.array([1], np.int64),
                    parents=np.array([0], np.int64), age=np.zeros(1, np.int64),
                    y=np.array([256.0]), x=np.array([256.0]), area=np.array([200.0]),
                    intensity=np.array([100.0]), stain=np.array([np.nan]),
                    p_mitosis=np.array([0.9])),
        engines={"nuclei-unet": "ab" * 32},
    )  # fmt: skip


def _assert_whole_settings_are_ints(rule: object) -> None:
    assert isinstance(rule, Rule)
    acq = rule.acquire
    assert acq is not None
    for field, value in (("loops", acq.loops), ("z_planes", acq.z_planes),
                         ("frames", rule.trigger.frames), ("max_fires", rule.max_fires)):  # type: ignore[attr-defined]  # fmt: skip
        assert type(value) is int, f"{field} = {value!r} is a {type(value).__name__}"
    assert (acq.loops, acq.z_planes, rule.max_fires) == (4, 3, 2)


def test_a_close_up_of_whole_number_floats_builds_its_events() -> None:
    (rule,) = rules_for_profile(yaml.safe_load(RULES), PROFILE)
    _assert_whole_settings_are_ints(rule)
    engine = PolicyEngine([rule], PROFILE)
    verdicts = engine.evaluate(_field(0))
    assert engine.disabled == {}
    assert [(v.ok, v.stage, v.reason) for v in verdicts] == [(True, "", "")]
    events = verdicts[0].firing.decision.events  # type: ignore[union-attr]
    assert len(events) == 4 * 3 * 2  # loops x z_planes x channels
    assert sorted({(e.index["t"], e.index["z"]) for e in events}) == [
        (t, z) for t in range(4) for z in range(3)
    ]
    assert all(type(e.index["t"]) is int and type(e.index["z"]) is int for e in events)
    # (z planes centred on the field's z, 1 µm apart; time points 30 s apart)
    assert {e.z_pos for e in events} == {-1.0, 0.0, 1.0}
    assert {e.min_start_time for e in events} == {0.0, 30.0, 60.0, 90.0}


def test_the_worker_s_rehearsal_of_whole_number_floats_disables_nothing() -> None:
    engine = PolicyEngine(rules_for_profile(yaml.safe_load(RULES), PROFILE), PROFILE)
    assert engine.rehearse(_field(0)) == 1
    assert engine.disabled == {}


def test_a_plan_s_whole_number_floats_load_as_ints(tmp_path: Path) -> None:
    # (as `livescope plan check` and the worker read the plan)
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN, encoding="utf-8")
    (rule,) = load_policies(path, PROFILE, positions=["A"])
    _assert_whole_settings_are_ints(rule)


def test_a_fractional_loops_is_still_refused() -> None:
    spec = yaml.safe_load(RULES.replace("loops: 4.0", "loops: 4.5"))
    with pytest.raises(LivescopeError, match=r"acquire.loops must be a whole number, got 4.5"):
        rules_for_profile(spec, PROFILE)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        pytest.param("[a]", r"\['a'\]", id="list"),
        pytest.param("{a: 1}", r"\{'a': 1\}", id="mapping"),
        pytest.param("true", "True", id="bool"),
        pytest.param("1.5", "1.5", id="float"),
    ],
)
@pytest.mark.parametrize("kind", ["rule", "python"])
def test_a_name_that_is_not_text_is_refused_naming_the_rule(
    name: str, shown: str, kind: str
) -> None:
    rule = (
        "{name: NAME, when: {division: }, do: {record: }}"
        if kind == "rule"
        else "{name: NAME, python: 'tests.policy.example_policy:EmptyField'}"
    )
    spec = yaml.safe_load(f"- {{name: ok, when: {{division: }}, do: {{record: }}}}\n"
                          f"- {rule.replace('NAME', name)}")  # fmt: skip
    with pytest.raises(LivescopeError, match=(
        rf"^plan.yaml: policies.1: name must be text, got {shown} \(a "
        r"[a-z]+\); write it in quotes"
    )):  # fmt: skip
        rules_from_spec(spec, source="plan.yaml", channels=["Phase", "DAPI"])


def test_a_name_written_as_a_whole_number_is_its_digits() -> None:
    # (`name: 7` is YAML's int 7: the rule is named "7", as the run logs it)
    spec = yaml.safe_load("- {name: 7, when: {division: }, do: {record: }}")
    (rule,) = rules_from_spec(spec)
    assert rule.name == "7"


def test_a_rule_built_with_a_name_that_is_not_text_is_refused() -> None:
    with pytest.raises(ValueError, match=r"rule name must be .*text.*, got \['a'\]"):
        Rule(["a"], {"division": {}}, {"record": {}})  # type: ignore[arg-type]
