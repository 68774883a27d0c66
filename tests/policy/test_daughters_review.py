"""Daughters of a dividing cell, after a review: what ``enter_region`` and ``feature``
hold of a mother carries on into her daughters, so a division is no crossing."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from livescope.policy import Observation, PolicyEngine

from .test_triggers_review import engine, field

REGION = {"name": "in", "when": {"enter_region": {"region": [0, 0, 200, 512]}},
          "do": {"record": {}}}  # fmt: skip
# (the helper's ``p_mit`` is the feature here: above 0.8, re-armed below 0.5)
HIGH = {"name": "high",
        "when": {"feature": {"feature": "p_mitosis", "above": 0.8, "rearm_below": 0.5}},
        "do": {"record": {}}}  # fmt: skip


def _fired(eng: PolicyEngine, fields: list[Observation]) -> list[tuple[int, int | None]]:
    """(t, track) of each firing, field by field."""
    return [(o.t, v.firing.track) for o in fields for v in eng.evaluate(o)]


def _restarted(eng: PolicyEngine, rules: tuple[dict[str, Any], ...]) -> PolicyEngine:
    """A new engine with ``eng``'s state, through JSON (as a restarted worker gets it)."""
    again = engine(*rules)
    again.restore(json.loads(json.dumps(eng.state())))
    return again


@pytest.mark.parametrize("restart", [False, True], ids=["as-run", "restarted-at-division"])
def test_daughters_born_inside_the_region_fire_only_on_entering_it_themselves(
    restart: bool,
) -> None:
    # before: mother 1, inside and fired on, divided inside; her daughters 2 and 3 had
    # no memory and "entered" on their first field: two more close-ups of the same cell
    eng = engine(REGION)
    before = [field(0, [1], [0.1], [0], ys=[300]), field(1, [1], [0.1], [0], ys=[110])]
    assert _fired(eng, before) == [(1, 1)]
    if restart:
        eng = _restarted(eng, (REGION,))
    after = [
        field(2, [2, 3], [0.1, 0.1], [1, 1], ys=[90, 130], divisions=((1, (2, 3)),)),
        field(3, [2, 3], [0.1, 0.1], [1, 1], ys=[90, 130]),
        field(4, [2, 3], [0.1, 0.1], [1, 1], ys=[300, 130]),  # 2 leaves ...
        field(5, [2, 3], [0.1, 0.1], [1, 1], ys=[150, 130]),  # ... and enters: its own
    ]
    assert _fired(eng, after) == [(5, 2)]


def test_a_daughter_born_outside_the_region_of_a_mother_inside_fires_on_entering() -> None:
    eng = engine(REGION)
    fields = [
        field(0, [1], [0.1], [0], ys=[190]),
        field(1, [2, 3], [0.1, 0.1], [1, 1], ys=[180, 240], divisions=((1, (2, 3)),)),
        field(2, [2, 3], [0.1, 0.1], [1, 1], ys=[180, 190]),  # 3 comes in
    ]
    # (1, inside on the position's first field, entered nothing: no firing; its state
    # is still the daughters' to carry)
    assert _fired(eng, fields) == [(2, 3)]


@pytest.mark.parametrize(
    ("mother", "fired"),
    [
        pytest.param([field(0, [], [], [])], [(1, 2), (1, 3)], id="mother-never-seen"),
        pytest.param([field(0, [1], [0.1], [0], ys=[300])], [(1, 2), (1, 3)],
                     id="mother-seen-outside"),
    ],
)  # fmt: skip
def test_daughters_of_a_mother_not_inside_fire_when_born_inside_as_before(
    mother: list[Observation], fired: list[tuple[int, int]]
) -> None:
    eng = engine(REGION)
    born = field(1, [2, 3], [0.1, 0.1], [1, 1], ys=[90, 130], divisions=((1, (2, 3)),))
    assert _fired(eng, [*mother, born]) == fired


def test_daughters_of_a_cell_above_the_threshold_fire_only_once_they_crossed_it() -> None:
    # before: daughters 2 and 3 of mother 1 (fired on, still high) fired as they were born
    eng = engine(HIGH)
    fields = [
        field(0, [1], [0.9], [0]),
        field(1, [2, 3], [0.9, 0.85], [1, 1], divisions=((1, (2, 3)),)),
        field(2, [2, 3], [0.6, 0.3], [1, 1]),  # 2 within the hysteresis, 3 below it
        field(3, [2, 3], [0.9, 0.9], [1, 1]),  # only 3 crossed
    ]
    assert _fired(eng, fields) == [(0, 1), (3, 3)]


def test_daughters_not_scored_at_their_birth_still_carry_their_mother_s_state() -> None:
    # a virtual stain made every few time points, or a field not scored: the daughters
    # are first measured a field after their birth, and their mother is forgotten by then
    eng = engine(HIGH, REGION)
    fields = [
        field(0, [1], [0.9], [0], ys=[100]),
        field(1, [2, 3], [np.nan, np.nan], [1, 1], ys=[np.nan, np.nan],
              divisions=((1, (2, 3)),)),
        field(2, [2, 3], [0.9, 0.9], [1, 1], ys=[90, 130]),
    ]  # fmt: skip
    # (the region's first field: 1 was inside already, it entered nothing)
    assert _fired(eng, fields) == [(0, 1)]


def test_daughters_of_a_mother_held_back_by_the_cooldown_fire_once_it_is_over() -> None:
    # (as before: the mother's hit held back is not used up, and her daughters carry it on)
    rule = {**REGION, "cooldown_s": 600}
    eng = engine(rule)
    fields = [
        field(0, [], [], []),  # (the position's first field: no one entered on it)
        field(1, [9], [0.1], [0], ys=[100]),  # cell 9 fires: the cooldown starts
        field(2, [9, 1], [0.1, 0.1], [0, 0], ys=[100, 150]),  # 1 enters, held back
        field(3, [9, 2, 3], [0.1] * 3, [0, 1, 1], ys=[100, 140, 160],
              divisions=((1, (2, 3)),)),
        field(7, [9, 2, 3], [0.1] * 3, [0, 1, 1], ys=[100, 140, 160]),  # cooldown over
    ]  # fmt: skip
    assert _fired(eng, fields) == [(1, 9), (7, 2)]
