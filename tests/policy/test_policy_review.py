"""Policies, after an independent review: what a bad cell place, a rule that never fires and a
Python policy's unwritable firing did."""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livescope.policy import Firing, Observation, PolicyEngine, rules_for_profile
from livescope.schema import LivescopeError, load_profile

from .test_policy import observation

PROFILE = load_profile("sim")
CLOSEUP = {"acquire": {"channels": ["Phase", "DAPI"], "loops": 3, "interval_s": 30}}


def field(
    t: int,
    tracks: list[int],
    p_mit: list[float] | None = None,
    *,
    ys: list[float] | None = None,
    xs: list[float] | None = None,
    divisions: tuple = (),
    stage: tuple[float, float, float | None] | None = (0.0, 0.0, 0.0),
) -> Observation:
    return observation(t, tracks, p_mit=p_mit, ys=ys, xs=xs, divisions=divisions, stage=stage)


def engine(*rules: dict[str, Any]) -> PolicyEngine:
    return PolicyEngine(rules_for_profile(list(rules), PROFILE), PROFILE)


# ---------------------------------------------------------------- a cell's place


@pytest.mark.parametrize(
    ("do", "cell", "stage", "says"),
    [
        pytest.param(CLOSEUP, (np.nan, 256.0), (0.0, 0.0, 0.0), "row nan", id="close-up-nan-y"),
        pytest.param(CLOSEUP, (100.0, np.inf), (0.0, 0.0, 0.0), "column inf", id="close-up-inf-x"),
        pytest.param(
            {"recentre": {}}, (np.nan, 256.0), (0.0, 0.0, 0.0), "row nan", id="recentre-nan-y"
        ),
        pytest.param(
            {"acquire": {"channels": ["DAPI"], "centre": "position"}},
            (100.0, 256.0),
            (np.nan, 0.0, 0.0),
            "field's centre",
            id="position-nan-stage",
        ),
        pytest.param(
            CLOSEUP, (100.0, 256.0), (0.0, 0.0, np.nan), "-101.075, nan µm", id="close-up-nan-z"
        ),
    ],
)
def test_a_firing_at_no_finite_place_is_refused_and_the_rule_goes_on(
    do: dict[str, Any], cell: tuple[float, float], stage: tuple[float, float, float], says: str
) -> None:
    # before: the decision's validation raised in the rule, which was disabled for the run
    eng = engine({"name": "m", "when": {"mitosis": {"frames": 1}}, "do": do})
    (v,) = eng.evaluate(field(0, [1], [0.9], ys=[cell[0]], xs=[cell[1]], stage=stage))
    assert (v.ok, v.stage, v.firing.decision) == (False, "guardrail", None)
    assert "no finite stage place" in v.reason
    assert says in v.reason
    assert "field p0 t=0" in v.reason
    assert eng.disabled == {}
    (v,) = eng.evaluate(field(1, [2], [0.9]))  # the next cell, at a place: it fires
    assert v.ok
    json.dumps(eng.state())  # (a restarted worker's state is still written)


def test_recentring_on_a_division_whose_daughters_are_not_in_the_field_is_refused() -> None:
    eng = engine({"name": "follow", "when": {"division": {}}, "do": {"recentre": {}}})
    (v,) = eng.evaluate(field(0, [1], divisions=((5, (7, 8)),)))
    assert (v.ok, v.stage) == (False, "guardrail")
    assert "recentre needs the cell's place; its division hit (track 5) has none" in v.reason
    assert eng.disabled == {}  # before: "ValueError: recentre needs a trigger that fires on a cell"
    (v,) = eng.evaluate(field(1, [7, 8], divisions=((5, (7, 8)),)))
    assert v.ok


def test_a_cell_whose_centroid_is_nan_on_one_field_is_not_taken_as_having_left_a_region() -> None:
    eng = engine(
        {"name": "r", "when": {"enter_region": {"region": [0, 0, 512, 512]}}, "do": {"record": {}}}
    )
    assert eng.evaluate(field(0, [1], ys=[600.0])) == []  # (outside on the first field)
    assert len(eng.evaluate(field(0, [1]))) == 1
    assert eng.evaluate(field(1, [1], ys=[np.nan])) == []
    assert eng.evaluate(field(2, [1])) == []  # still inside: no second firing
    assert eng.evaluate(field(3, [1], ys=[600.0])) == []  # seen outside: forgotten ...
    assert len(eng.evaluate(field(4, [1]))) == 1  # ... and it enters again


# ---------------------------------------------------------------- rules that could never fire


@pytest.mark.parametrize(
    ("acquire", "expected"),
    [
        pytest.param(
            {"channels": ["Phase", "DAPI"], "loops": 30, "interval_s": 10, "z_planes": 9},
            "one close-up is 540 frames",
            id="frames",
        ),
        pytest.param(
            {
                "channels": ["DAPI"],
                "loops": 100,
                "interval_s": 10,
                "z_planes": 2,
                "exposure_ms": {"DAPI": 1000},
            },
            "one close-up is 200 s of fluorescence",
            id="light",
        ),
    ],
)
def test_a_close_up_bigger_than_the_runs_whole_budget_is_refused_at_load(
    acquire: dict[str, Any], expected: str
) -> None:
    # before: loaded, then every firing refused by the guardrails at run time
    with pytest.raises(LivescopeError, match=rf"policies.0 \(big\): {expected}"):
        engine({"name": "big", "when": {"mitosis": {}}, "do": {"acquire": acquire}})


def test_a_close_up_over_a_channels_whole_budget_is_refused_at_load() -> None:
    prof = PROFILE.replace(
        light_dose={**PROFILE.light_dose.model_dump(), "max_fluorescence_s_per_channel": 5.0}
    )
    acq = {"channels": ["DAPI"], "loops": 11, "interval_s": 10, "exposure_ms": {"DAPI": 500}}
    spec = [{"name": "big", "when": {"mitosis": {}}, "do": {"acquire": acq}}]
    with pytest.raises(LivescopeError, match=r"5.5 s of DAPI fluorescence.*per_channel = 5 s"):
        rules_for_profile(spec, prof)
    acq["loops"] = 10  # exactly the budget: it may fire
    assert rules_for_profile(spec, prof)


def test_a_close_up_within_the_budgets_still_loads_and_fires() -> None:
    acq = {"channels": ["Phase", "DAPI"], "loops": 25, "interval_s": 10, "z_planes": 10}
    eng = engine({"name": "ok", "when": {"mitosis": {"frames": 1}}, "do": {"acquire": acq}})
    (v,) = eng.evaluate(field(0, [1], [0.9]))  # 500 frames, 12.5 s of DAPI
    assert v.ok


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        pytest.param({"below": 0}, "cell_count.below must be > 0", id="below-0"),
        pytest.param({"below": -2}, "cell_count.below must be > 0", id="below-negative"),
        pytest.param({"above": -1}, "cell_count.above must be >= 0", id="above-negative"),
    ],
)
def test_a_cell_count_that_could_never_fire_is_refused_at_load(
    when: dict[str, float], expected: str
) -> None:
    with pytest.raises(LivescopeError, match=rf"policies.0 \(c\): {expected}"):
        engine({"name": "c", "when": {"cell_count": when}, "do": {"record": {}}})


def test_cell_count_below_one_fires_on_an_empty_field() -> None:
    eng = engine({"name": "c", "when": {"cell_count": {"below": 1}}, "do": {"record": {}}})
    assert [len(eng.evaluate(field(t, tr))) for t, tr in enumerate([[1], [], [1, 2], []])] == [
        0, 1, 0, 1,
    ]  # fmt: skip


# ---------------------------------------------------------------- a Python policy's firings


@dataclasses.dataclass
class _Fires:
    """A Python policy giving one firing per field, built by ``make``."""

    name: str
    make: Any
    given_back: list[str] = dataclasses.field(default_factory=list)

    def decide(self, o: Observation) -> list[Firing]:
        return [self.make(self.name, o)]

    def give_back(self, decision_id: str) -> bool:
        self.given_back.append(decision_id)
        return True


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(
            lambda n, o: Firing(n, "mine", o.position, None, inputs={("a", 1): 0.5}),
            "the run's log cannot write: keys must be str",
            id="tuple-key",
        ),
        pytest.param(
            lambda n, o: Firing(n, "mine", o.position, None, inputs=_loop()),
            "the run's log cannot write: Circular reference",
            id="self-holding",
        ),
        pytest.param(
            lambda n, o: Firing("closeup", "mine", o.position, None),
            "a Firing of rule 'closeup', not of this policy ('mine')",
            id="another-rule's-name",
        ),
    ],
)
def test_a_python_policys_firing_the_worker_cannot_log_disables_it_not_the_worker(
    make: Any, expected: str, tmp_path: Path
) -> None:
    from livescope.pipeline._jobs import Field
    from livescope.pipeline._results import ResultsStore

    rules = rules_for_profile(
        [{"name": "closeup", "when": {"mitosis": {"frames": 1}}, "do": CLOSEUP}], PROFILE
    )
    eng = PolicyEngine([_Fires("mine", make), *rules], PROFILE)
    o = field(0, [1], [0.9])
    verdicts = eng.evaluate(o)
    assert expected in eng.disabled["mine"]
    assert [v.firing.rule for v in verdicts] == ["closeup"]  # the others go on
    # what the worker's decision thread does next (before: it raised there, stopping it)
    store = ResultsStore(tmp_path, collections.Counter(), tail_frames=2)
    try:
        store.log_firings(Field("p0", 0, {}, {"seq": 0}, 0), o, verdicts, {})
    finally:
        store.close()
    assert len((tmp_path / "policy.jsonl").read_text().splitlines()) == 1


def _loop() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["self"] = d
    return d


def test_a_python_policys_own_firings_with_odd_values_are_still_taken() -> None:
    # (what JSON writes as a str, as the worker's log does, is no reason to disable it)
    def make(n: str, o: Observation) -> Firing:
        return Firing(n, "mine", o.position, None, np.int64(3), inputs={"p": np.float32(0.5)})  # type: ignore[arg-type]

    eng = PolicyEngine([_Fires("mine", make)], PROFILE)
    (v,) = eng.evaluate(field(0, [1]))
    assert v.stage == "record"
    assert eng.disabled == {}


# ---------------------------------------------------------------- a rule's name


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        pytest.param("mitosis/closeup", "'/'", id="slash"),
        pytest.param("closeup\tDAPI", r"'\\t'", id="tab"),
    ],
)
def test_a_close_up_rule_whose_name_cannot_name_its_close_ups_folders_is_refused(
    name: str, bad: str
) -> None:
    # before: loaded; its close-ups' positions (p0~mitosis/closeup-0) are no folder names,
    # which a plan's own positions may not be (results/ctc/<position>)
    spec = [{"name": name, "when": {"mitosis": {}}, "do": CLOSEUP}]
    with pytest.raises(LivescopeError, match=rf"rule name .* contains {bad}.*close-ups"):
        rules_for_profile(spec, PROFILE)
    # (a rule that adds no close-up names no position: its name is only a label)
    assert rules_for_profile([{**spec[0], "do": {"record": {}}}], PROFILE)
