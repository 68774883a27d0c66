"""A feature rule's decision records the value it saw to 6 significant digits.

Rounded to 4 decimals, a virtual stain or intensity on a scale below 1e-4 was logged as
0.0 beside the threshold it passed.
"""

from __future__ import annotations

import pytest

from livescope.policy import Rule

from .test_policy import observation


@pytest.mark.parametrize(
    ("value", "above", "logged"),
    [
        pytest.param(3.2e-5, 1e-5, 3.2e-5, id="small-scale"),
        pytest.param(1234.56789, 1000.0, 1234.57, id="counts"),
        pytest.param(0.912345678, 0.9, 0.912346, id="unit-scale"),
    ],
)
def test_the_value_a_feature_rule_saw_is_logged_as_seen(
    value: float, above: float, logged: float
) -> None:
    rule = Rule("f", {"feature": {"feature": "stain", "above": above}}, {"record": {}})
    (fired,) = rule.decide(observation(0, [1], stain=[value]))
    assert fired.inputs == {"stain": logged}
    assert fired.inputs["stain"] >= above
