"""guardrails.max_decisions_per_min that is not a whole number: its rate, not its floor."""

from __future__ import annotations

import pytest
import useq

from livescope.policy import Guardrails
from livescope.schema import ChangeInterval, load_profile

PLAN = useq.MDASequence(stage_positions=[(0.0, 0.0, 0.0)], time_plan={"interval": 1, "loops": 2})


def _passed(limit: float, every_s: float, for_s: float) -> list[float]:
    """Run times at which a decision asked for every ``every_s`` s passed."""
    rig = load_profile("sim")
    rig = rig.replace(guardrails={**rig.guardrails.model_dump(), "max_decisions_per_min": limit})
    g, passed = Guardrails(rig, PLAN), []
    t = 0.0
    while t < for_s:
        d = ChangeInterval(run_id="r", interval_s=30)
        if g.check(d, t) is None:
            g.commit(d, t)
            passed.append(t)
        t += every_s
    return passed


@pytest.mark.parametrize(("limit", "minutes", "expected"), [(1.5, 4, 6), (2.5, 6, 15)])
def test_a_fractional_limit_over_one_lets_its_rate_through(
    limit: float, minutes: int, expected: int
) -> None:
    # 1.5 a minute let one decision a minute through (the limit's floor): 4 in 4 minutes
    passed = _passed(limit, 1.0, 60.0 * minutes)
    assert len(passed) == expected
    # and never more than the limit in any stretch as long as its window
    window = 60.0 * -(-limit // 1) / limit
    for t in passed:
        assert sum(t <= u < t + window for u in passed) <= -(-limit // 1)


@pytest.mark.parametrize(("limit", "expected"), [(0.5, 3), (1.0, 6), (2.0, 12)])
def test_whole_limits_and_limits_under_one_are_as_before(limit: float, expected: int) -> None:
    assert len(_passed(limit, 1.0, 360.0)) == expected


def test_the_refusal_names_the_window() -> None:
    rig = load_profile("sim")
    rig = rig.replace(guardrails={**rig.guardrails.model_dump(), "max_decisions_per_min": 1.5})
    g = Guardrails(rig, PLAN)
    for t in (0.0, 1.0):
        d = ChangeInterval(run_id="r", interval_s=30)
        assert g.check(d, t) is None
        g.commit(d, t)
    why = g.check(ChangeInterval(run_id="r", interval_s=30), 2.0)
    assert why is not None
    assert "rate: 2 decisions in the last 80 s" in why
