"""Triggers, after an independent review: what they remember of cells that divided, and
where a division with a daughter of no place fires."""

from __future__ import annotations

from typing import Any

import numpy as np

from livescope.policy import Observation, PolicyEngine, rules_for_profile
from livescope.schema import load_profile

from .test_policy import observation

PROFILE = load_profile("sim")


def field(
    t: int,
    tracks: list[int],
    p_mit: list[float],
    parents: list[int],
    *,
    ys: list[float] | None = None,
    divisions: tuple = (),
    lost: tuple = (),
    position: str = "p0",
) -> Observation:
    return observation(
        t,
        tracks,
        p_mit=p_mit,
        parents=parents,
        ys=ys,
        intensity=[900.0] * len(tracks),
        state="",
        divisions=divisions,
        lost=lost,
        position=position,
    )


def engine(*rules: dict[str, Any]) -> PolicyEngine:
    return PolicyEngine(rules_for_profile(list(rules), PROFILE), PROFILE)


def _cell_cycles(generations: int, *, unscored_division: bool = False) -> list[Observation]:
    """One lineage: each cell out of mitosis for 2 fields, in it for 2, then it divides.

    One daughter (in the mitosis on its first 2 fields) carries the lineage on; the
    other is lost on the next field. ``unscored_division``: the fields where cells
    divide were not scored (NaN).
    """
    out: list[Observation] = []
    t, cell, parent, new = 0, 1, 0, 2
    for _ in range(generations):
        for p in (0.1, 0.1, 0.9, 0.9):
            out.append(field(t, [cell], [p], [parent]))
            t += 1
        a, b = new, new + 1
        new += 2
        p = np.nan if unscored_division else 0.9
        out.append(field(t, [a, b], [p, p], [cell, cell], divisions=((cell, (a, b)),)))
        out.append(field(t + 1, [a], [0.9], [cell], lost=(b,)))
        t += 2
        cell, parent = a, cell
    return out


RULES = (
    {"name": "m", "when": {"mitosis": {"frames": 2}}, "do": {"record": {}}},
    {"name": "bright", "when": {"feature": {"feature": "intensity", "above": 500}},
     "do": {"record": {}}},
    {"name": "in", "when": {"enter_region": {"region": [0, 0, 512, 512]}}, "do": {"record": {}}},
)  # fmt: skip


def _remembered(eng: PolicyEngine) -> set[str]:
    """The cells (position/track) the rules' triggers hold in their state."""
    out: set[str] = set()
    for rule in eng.state()["policies"].values():
        for v in rule["trigger"].values():
            if isinstance(v, list | dict):
                out |= {k for k in v if "/" in k}
    return out


def test_the_triggers_forget_a_cell_once_it_divided() -> None:
    # before: every mother that fired (and every cell once bright or inside the region)
    # was kept for ever, though the tracker had ended its track: the state written
    # after each field grew with every cell cycle of the run
    eng = engine(*RULES)
    cycles = _cell_cycles(30)
    fired = [v.firing.rule for o in cycles for v in eng.evaluate(o)]
    mothers = {f"p0/{p}" for o in cycles for p, _ in o.divisions}
    lost = {f"p0/{t}" for o in cycles for t in o.lost}
    remembered = _remembered(eng)
    assert len(mothers) == 30
    assert remembered & mothers == set()
    assert remembered <= lost | {f"p0/{t}" for t in cycles[-1].cells.tracks.tolist()}
    # and each cell's own mitosis fires once, as before; only the first cell becomes bright
    # (inside the region on the position's first field, it entered nothing): every daughter
    # is born bright and inside, from a mother who was (until session 58 each of the 60
    # daughters fired both rules again at her birth)
    assert fired.count("m") == 30
    assert fired.count("bright") == 1
    assert fired.count("in") == 0


def test_a_mother_that_divided_on_a_field_not_scored_still_holds_her_daughters() -> None:
    # her memory is dropped only once her daughters have been checked
    eng = engine(RULES[0])
    cycles = _cell_cycles(3, unscored_division=True)
    fired = [[v.firing.track for v in eng.evaluate(o)] for o in cycles]
    # each cell's own mitosis fires (t=3, 9, 15); its daughter, still in it on the
    # field after the unscored one, is that mitosis: it does not fire
    assert [(t, f) for t, f in enumerate(fired) if f] == [(3, [1]), (9, [2]), (15, [4])]
    assert _remembered(eng) & {"p0/1", "p0/2"} == set()  # (the mothers, divided)


def test_a_division_with_one_daughter_of_no_place_fires_at_the_other() -> None:
    # before: the daughters' mean was NaN, and the close-up refused as aimed at no place
    closeup = {"acquire": {"channels": ["DAPI"], "centre": "cell"}}
    eng = engine({"name": "d", "when": {"division": {}}, "do": closeup})
    o = field(0, [7, 8], [0.1, 0.1], [5, 5], ys=[np.nan, 300.0], divisions=((5, (7, 8)),))
    (v,) = eng.evaluate(o)
    assert v.ok, v.reason
    assert (v.firing.track, v.firing.y, v.firing.x) == (5, 300.0, 256.0)
    # neither placed: still refused, saying so
    o = field(1, [9, 10], [0.1, 0.1], [6, 6], ys=[np.nan, np.nan], divisions=((6, (9, 10)),))
    (v,) = eng.evaluate(o)
    assert (v.ok, v.stage) == (False, "guardrail")
    assert "no finite stage place" in v.reason
