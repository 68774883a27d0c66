"""Rules, after the session-60 review: a z-stack without a stage z, ``track_lost`` on a
tracker's gap, probability features' thresholds, a count given back twice, and a cooldown
between a field with a stage position and one without."""

from __future__ import annotations

import json
import re

import pytest

from livescope.policy import Observation, PolicyEngine, Rule, rules_for_profile
from livescope.schema import LivescopeError, load_profile

from .test_policy import observation

PROFILE = load_profile("sim")


def tracks_fired(eng: PolicyEngine, o: Observation) -> list[int | None]:
    return [v.firing.track for v in eng.evaluate(o)]


# ---------------------------------------------------------------- acquire: z-stack


def _division(stage: tuple[float, float, float | None]) -> Observation:
    return observation(3, [5, 6], parents=[4, 4], divisions=((4, (5, 6)),), stage=stage)


def test_a_z_stack_in_a_field_without_stage_z_is_refused_not_taken_at_one_focus() -> None:
    zs = Rule("zs", {"division": {}}, {"acquire": {"channels": ["DAPI"], "z_planes": 5}})
    eng = PolicyEngine([zs], PROFILE)
    (v,) = eng.evaluate(_division((100.0, 100.0, None)))
    # (it was made: 5 frames of one plane, each z_pos None, 5 x the light booked)
    assert not v.ok
    assert v.firing.decision is None
    assert "a z-stack (5 planes) needs the field's stage z; the frame has none" in v.reason
    assert eng.guardrails.usage()["extra_frames"] == 0
    # a field with its stage z: the planes about it; one plane needs no z (as before)
    (v,) = eng.evaluate(_division((100.0, 100.0, 10.0)))
    assert v.ok
    assert sorted({e.z_pos for e in v.firing.decision.events}) == [8.0, 9.0, 10.0, 11.0, 12.0]
    flat = Rule("flat", {"division": {}}, {"acquire": {"channels": ["DAPI"]}})
    (v,) = PolicyEngine([flat], PROFILE).evaluate(_division((100.0, 100.0, None)))
    assert v.ok
    assert [e.z_pos for e in v.firing.decision.events] == [None]


# ---------------------------------------------------------------- track_lost


def test_track_lost_fires_once_per_track_not_on_every_field_a_gap_closes() -> None:
    eng = PolicyEngine([Rule("lost", {"track_lost": {}}, {"record": {}})], PROFILE)
    # track 1 missed by the segmentation on fields 3 and 6, closed under its id after each
    seen = [[1, 2], [1, 2], [1, 2], [2], [1, 2], [1, 2], [2], [1, 2]]
    lost = [(), (), (), (1,), (), (), (1,), ()]
    got = [tracks_fired(eng, observation(t, s, lost=lo)) for t, (s, lo) in
           enumerate(zip(seen, lost, strict=True))]  # fmt: skip
    assert got == [[], [], [], [1], [], [], [], []]  # (was [1] on field 6 too)
    # another track still fires, and the one fired on is remembered across a restart
    again = PolicyEngine([Rule("lost", {"track_lost": {}}, {"record": {}})], PROFILE)
    again.restore(json.loads(json.dumps(eng.state())))
    assert tracks_fired(again, observation(8, [2], lost=(1,))) == []
    assert tracks_fired(again, observation(9, [], lost=(2,))) == [2]


def test_a_lost_track_held_back_by_the_cooldown_fires_on_its_next_loss() -> None:
    rule = Rule("lost", {"track_lost": {}}, {"record": {}}, cooldown_s=200)
    eng = PolicyEngine([rule], PROFILE)
    assert tracks_fired(eng, observation(1, [2], lost=(1,))) == [1]
    assert tracks_fired(eng, observation(2, [1], lost=(2,))) == []  # held back: dropped
    assert tracks_fired(eng, observation(3, [1, 2])) == []
    assert tracks_fired(eng, observation(4, [1], lost=(2,))) == [2]  # not fired on before
    assert tracks_fired(eng, observation(5, [1, 2])) == []
    assert tracks_fired(eng, observation(7, [2], lost=(1,))) == []


# ---------------------------------------------------------------- feature: probabilities


@pytest.mark.parametrize(
    ("when", "error"),
    [
        pytest.param({"feature": "p_mitosis", "above": 50},
                     "feature.above must be in [0, 1] for p_mitosis (a probability), got 50",
                     id="above-as-a-percent"),
        pytest.param({"feature": "p_mitosis", "above": 0.5, "rearm_below": -0.2},
                     "feature.rearm_below must be in [0, 1] for p_mitosis", id="rearm-below-0"),
        pytest.param({"feature": "p_mitosis", "above": 0.5}, None, id="a-probability"),
        pytest.param({"feature": "intensity", "above": 50}, None, id="not-a-probability"),
    ],
)  # fmt: skip
def test_a_probability_feature_s_thresholds_must_be_probabilities(
    when: dict[str, object], error: str | None
) -> None:
    spec = [{"name": "f", "when": {"feature": when}, "do": {"record": {}}}]
    if error is None:
        assert len(rules_for_profile(spec, PROFILE)) == 1
        return
    with pytest.raises(LivescopeError, match=re.escape(error)):
        rules_for_profile(spec, PROFILE)


# ---------------------------------------------------------------- cell_count: given back


def test_each_count_crossing_refused_as_stale_is_given_back_once() -> None:
    rule = Rule("crowd", {"cell_count": {"above": 3}},
                {"acquire": {"channels": ["DAPI"], "centre": "position"}})  # fmt: skip
    eng = PolicyEngine([rule], PROFILE)

    def stale(t: int, n: int) -> list[int]:
        vs = eng.evaluate(observation(t, list(range(100 * t + 1, 100 * t + 1 + n))))
        assert len(vs) == 1
        eng.refused(vs[0], 120.0 * t)
        return eng.give_back(vs, 0)

    assert stale(1, 5) == [0]
    assert stale(2, 5) == []  # the same crossing: once
    for t in range(3, 6):  # the count back below: re-armed
        assert eng.evaluate(observation(t, [100 * t])) == []
    # a later crossing is given back as the first was (it stayed disarmed for good)
    assert stale(6, 5) == [0]
    assert len(eng.evaluate(observation(7, list(range(701, 706))))) == 1


# ---------------------------------------------------------------- cooldown radius


def test_the_cooldown_radius_holds_a_cell_back_between_fields_with_and_without_stage() -> None:
    rule = Rule("hi", {"feature": {"feature": "intensity", "above": 50}}, {"stop_position": {}},
                cooldown_s=3600, cooldown_radius_um=20)  # fmt: skip
    eng = PolicyEngine([rule], PROFILE)
    on_stage = (5000.0, 5000.0, 0.0)
    assert tracks_fired(eng, observation(1, [1], intensity=[100], stage=on_stage)) == [1]
    assert tracks_fired(eng, observation(2, [1], intensity=[10], stage=None)) == []
    # the same cell at the same pixel: stage µm against frame µm is no distance
    assert tracks_fired(eng, observation(3, [1], intensity=[100], stage=None)) == []
    # fields alike still measure it: a cell far away in the frame fires
    rule.recent.clear()
    assert tracks_fired(eng, observation(4, [2], intensity=[100], stage=None)) == [2]
    far = observation(5, [3], intensity=[100], ys=[480.0], stage=None)
    assert tracks_fired(eng, far) == [3]
