"""Policies, after the session-62 review: a Python policy's decisions carry its rule and
the engines' sha256, ``enter_region`` on a position's first field, and what a plan is
told of a rule with two triggers or actions and of a ``python:`` with no factory."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from livescope.policy import Firing, Observation, PolicyEngine, Rule, rules_for_profile
from livescope.schema import Decision, LivescopeError, StopPosition, load_profile

from .test_policy import observation

PROFILE = load_profile("sim")
ENGINES = {"nuclei-unet": "ab" * 32}


def field(t: int, tracks: list[int], ys: list[float], *, position: str = "p0") -> Observation:
    return observation(t, tracks, ys=ys, position=position, engines=dict(ENGINES))


# ---------------------------------------------------------------- a Python policy's decisions


class _Stops:
    """Stops the position of every field, its decision made as ``rule`` and ``engines`` say."""

    def __init__(
        self, name: str, *, rule: str | None = None, engines: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.rule = name if rule is None else rule
        self.engines = engines or {}
        self.made: list[Decision] = []

    def decide(self, o: Observation) -> Iterator[Firing]:
        d = StopPosition(
            run_id=o.run_id, seq=o.seq, rule=self.rule, position=o.position, engines=self.engines
        )
        self.made.append(d)
        yield Firing(self.name, "custom", o.position, d, inputs={"cells": len(o.cells)})


def test_a_python_policy_s_decision_carries_the_field_s_engines() -> None:
    # before: sent and logged with `engines: {}`, though every decision is to carry them
    policy = _Stops("mine")
    handed_on: list[Decision] = []
    (v,) = PolicyEngine([policy], PROFILE).evaluate(field(0, [1], [100]), handed_on.append)
    assert v.ok
    assert v.firing.decision is not None
    assert v.firing.decision.engines == ENGINES
    assert handed_on == [v.firing.decision]  # (the decision handed on is the one logged)
    # the policy's own id is kept (`give_back` finds it by it), and all else it said
    made = policy.made[0]
    assert v.firing.decision.decision_id == made.decision_id
    assert v.firing.decision.model_dump(exclude={"engines"}) == made.model_dump(exclude={"engines"})


def test_a_python_policy_s_decision_keeps_engines_and_gets_its_rule_where_it_gave_none() -> None:
    own = {"mine-model": "cd" * 32}
    eng = PolicyEngine([_Stops("given", engines=own), _Stops("unnamed", rule="")], PROFILE)
    given, unnamed = (v.firing.decision for v in eng.evaluate(field(0, [1], [100])))
    assert given is not None
    assert unnamed is not None
    assert (given.rule, given.engines) == ("given", own)
    assert (unnamed.rule, unnamed.engines) == ("unnamed", ENGINES)
    assert eng.disabled == {}


def test_a_python_policy_whose_decision_names_another_rule_is_disabled() -> None:
    # before: sent, and logged under the other rule ("mitosis-closeup")
    handed_on: list[Decision] = []
    rule = Rule("closeup", {"cell_count": {"above": 0}}, {"stop_position": {}})
    liar = _Stops("mine", rule="mitosis-closeup")
    eng = PolicyEngine([liar, rule], PROFILE)
    verdicts = eng.evaluate(field(0, [1], [100]), handed_on.append)
    assert [(v.firing.rule, v.ok) for v in verdicts] == [("closeup", True)]  # the others go on
    assert handed_on == [verdicts[0].firing.decision]
    assert eng.disabled["mine"] == (
        "TypeError: decide() returned a decision of rule 'mitosis-closeup', not of this "
        "policy ('mine'): give it rule='mine'"
    )
    eng.evaluate(field(1, [1], [100]))
    assert len(liar.made) == 1  # disabled: not asked again


def test_a_declared_rule_s_decisions_are_as_the_rule_makes_them() -> None:
    spec = {"name": "r", "when": {"cell_count": {"above": 0}}, "do": {"stop_position": {}}}
    (rule,) = rules_for_profile([spec], PROFILE)
    (twin,) = rules_for_profile([spec], PROFILE)
    o = field(0, [1], [100])
    (v,) = PolicyEngine([rule], PROFILE).evaluate(o)
    (f,) = list(twin.decide(o))
    assert v.firing == f
    assert v.firing.decision is not None
    assert v.firing.decision.engines == ENGINES


# ---------------------------------------------------------------- enter_region's first field

REGION = {"enter_region": {"region": [0, 0, 200, 512]}}


def _tracks(rule: Rule, o: Observation) -> list[int | None]:
    return [f.track for f in rule.decide(o)]


def test_enter_region_does_not_fire_on_the_cells_inside_on_a_position_s_first_field() -> None:
    # before: the 3 cells sitting inside on the run's first field all "entered" it
    rule = Rule("roi", REGION, {"record": {}})
    assert _tracks(rule, field(0, [1, 2, 3, 4], [50, 100, 150, 400])) == []
    assert _tracks(rule, field(1, [1, 2, 3, 4], [50, 100, 150, 190])) == [4]  # 4 enters
    # another position's first field, later in the run: as the first
    assert _tracks(rule, field(1, [1, 2], [50, 400], position="p1")) == []
    # from then on as before: a new track appearing inside enters; one leaving and
    # coming back enters again
    assert _tracks(rule, field(2, [1, 2, 3, 4, 5], [50, 300, 150, 190, 20])) == [5]
    assert _tracks(rule, field(3, [1, 2, 3, 4, 5], [50, 100, 150, 190, 20])) == [2]
    assert _tracks(rule, field(2, [1, 2, 3], [50, 100, 10], position="p1")) == [2, 3]


def test_enter_region_s_first_field_is_the_first_it_sees_with_cells_segmented() -> None:
    rule = Rule("roi", REGION, {"record": {}})
    assert _tracks(rule, field(0, [], [])) == []  # (no cell: still its first field)
    assert _tracks(rule, field(1, [1], [50])) == [1]  # a cell appears inside: it entered
    again = Rule("roi", REGION, {"record": {}})
    unsegmented = observation(0, [], position="p0", segmented=False)
    assert _tracks(again, unsegmented) == []  # (passed over: not seen)
    assert _tracks(again, field(1, [1], [50])) == []


def test_enter_region_resumed_from_its_state_goes_on_as_it_was() -> None:
    rule = Rule("roi", REGION, {"record": {}})
    assert _tracks(rule, field(0, [1, 2], [50, 400])) == []
    again = Rule("roi", REGION, {"record": {}})
    again.restore(json.loads(json.dumps(rule.state())))
    assert _tracks(again, field(1, [1, 2], [50, 150])) == [2]  # (1 noted inside: not again)


def test_enter_region_restores_a_state_saved_before_its_positions() -> None:
    # (saved before session 62: the cells inside only; the run had begun at every position,
    # one whose cells were all outside too: a cell entering there on the next field fires)
    rule = Rule("roi", REGION, {"record": {}})
    rule.restore({"fires": 1, "trigger": {"inside": ["p0/1"]}})
    assert _tracks(rule, field(5, [1, 2], [50, 150])) == [2]
    assert _tracks(rule, field(5, [1, 2], [50, 150], position="p1")) == [1, 2]
    state = rule.state()["trigger"]
    assert state == {"inside": ["p0/1", "p0/2", "p1/1", "p1/2"], "positions": ["p0", "p1"],
                     "every_seen": True}  # fmt: skip
    # ... and so again once restored from the state it saves now
    again = Rule("roi", REGION, {"record": {}})
    again.restore({"fires": 1, "trigger": state})
    assert _tracks(again, field(6, [7], [50], position="p2")) == [7]
    # a state saved with its positions keeps the first-field rule for the others
    fresh = Rule("roi", REGION, {"record": {}})
    fresh.restore({"fires": 0, "trigger": {"inside": [], "positions": ["p0"]}})
    assert _tracks(fresh, field(6, [7], [50], position="p2")) == []  # p2's first


# ---------------------------------------------------------------- what a plan is told


@pytest.mark.parametrize(
    ("item", "message"),
    [
        pytest.param(
            {"name": "a", "when": {"division": None}, "do": {"record": None, "stop_run": None}},
            "rule 'a': a rule takes exactly one action in 'do' (got 2: record, stop_run); "
            "declare a rule for each",
            id="two-actions",
        ),
        pytest.param(
            {"name": "a", "when": {"division": None, "track_lost": None}, "do": {"record": None}},
            "rule 'a': a rule takes exactly one trigger in 'when' (got 2: division, "
            "track_lost); declare a rule for each",
            id="two-triggers",
        ),
        pytest.param(
            {"name": "a", "python": "os"},
            "python must be 'package.module:factory' (got 'os')",
            id="python-no-factory",
        ),
        pytest.param(
            {"name": "a", "python": ":EmptyField"},
            "python must be 'package.module:factory' (got ':EmptyField')",
            id="python-no-module",
        ),
    ],
)
def test_a_plan_is_told_what_is_wrong_with_its_rule(item: dict[str, Any], message: str) -> None:
    with pytest.raises(LivescopeError) as err:
        rules_for_profile([item], PROFILE)
    assert str(err.value) == f"plan: policies.0 (a): {message}", str(err.value)
    assert re.search(r"must be one of|cannot import", str(err.value)) is None
