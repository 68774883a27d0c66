"""Rules as the README documents them (its "Policies" section), written in YAML as a
microscopist would, run on synthetic fields; and the errors it says are refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import yaml

from livescope.policy import Observation, PolicyEngine, Verdict, rules_for_profile
from livescope.schema import (
    AddEvents,
    ChangeInterval,
    LivescopeError,
    Move,
    StopPosition,
    StopRun,
    load_profile,
)

from .test_policy import observation

PROFILE = load_profile("sim")  # channels Phase, DAPI
NAN = float("nan")

# the README's example, as printed there
README_EXAMPLE = """
channels: [{config: Phase, exposure: 20}, {config: DAPI, exposure: 50}]
time_plan: {interval: 120, loops: 30}
policies:
  - name: mitosis-closeup
    when: {mitosis: {p_min: 0.5, frames: 2}}   # P(mitosis) >= 0.5 two frames running
    do:
      acquire: {channels: [Phase, DAPI], loops: 4, interval_s: 30, centre: cell,
                share_field: true}   # a cell another close-up of the field images: none of its own
    cooldown_s: 1800          # not again within 30 min ...
    cooldown_radius_um: 20    # ... this close to where it fired
"""


def field(t: int, tracks: list[int], *, p: list[float] | None = None, **kw: Any) -> Observation:
    """One analysed field: 512 x 512 px at 0.65 µm/px, every 120 s unless ``when``.

    ``p``: the cells' P(mitosis); ``kw``: those of `observation` (``ys``, ``xs``,
    ``area``, ``intensity``, ``stain``, ``parents``, ``divisions``, ``lost``,
    ``position``, ``stage``, ``when``, ``segmented``). Cells 60 px apart, of no state.
    """
    return observation(t, tracks, p_mit=p, y_step=60.0, state="", **kw)


def load(text: str) -> PolicyEngine:
    """The engine of a plan's ``policies:`` (YAML), checked against the sim rig."""
    spec = yaml.safe_load(text)
    return PolicyEngine(rules_for_profile(spec.get("policies"), PROFILE), PROFILE)


def rule(when: str, do: str = "{record: {}}", extra: str = "") -> PolicyEngine:
    """One rule ``r`` in YAML flow style (as the README writes them)."""
    return load(f"policies:\n  - {{name: r, when: {when}, do: {do}{extra}}}\n")


def tracks_fired(eng: PolicyEngine, fields: list[Observation]) -> list[list[int | None]]:
    return [[v.firing.track for v in eng.evaluate(o)] for o in fields]


# ---------------------------------------------------------------- the README's example


def test_the_readmes_example_loads_and_fires_as_its_comments_say() -> None:
    eng = load(README_EXAMPLE)
    # one frame at P >= 0.5 is not enough; two running are
    assert eng.evaluate(field(0, [1], p=[0.9])) == []
    (v,) = eng.evaluate(field(1, [1], p=[0.5]))
    assert v.ok, v.reason
    d = v.firing.decision
    assert isinstance(d, AddEvents)
    # 4 loops x 30 s of Phase and DAPI, centred on the cell (row 100 of 512 at 0.65 µm/px)
    assert [e.channel.config for e in d.events] == ["Phase", "DAPI"] * 4
    assert [e.min_start_time for e in d.events[::2]] == [0, 30, 60, 90]
    assert d.events[0].y_pos == pytest.approx((100 - 255.5) * 0.65)
    assert {e.pos_name for e in d.events} == {"p0~mitosis-closeup-0"}
    # once per track: still in mitosis, it does not fire again
    assert eng.evaluate(field(2, [1], p=[0.9])) == []
    # another cell 13 µm away (20 px) is held back by the cooldown radius; one 39 µm away not
    near_far = field(3, [1, 2, 3], p=[0.9] * 3, ys=[100.0, 120.0, 160.0])
    assert eng.evaluate(near_far) == []
    fired = [v.firing.track for v in eng.evaluate(field(4, [1, 2, 3], p=[0.9] * 3,
                                                        ys=[100.0, 120.0, 160.0]))]  # fmt: skip
    assert fired == [3]
    # the held-back cell is not used up: still in mitosis, it fires once the 30 min are over
    # (3, 26 µm from it, holds it back no longer than 1 does)
    for t in range(5, 16):
        assert eng.evaluate(field(t, [1, 2, 3], p=[0.9] * 3, ys=[100.0, 120.0, 160.0])) == []
    v16 = eng.evaluate(field(16, [1, 2, 3], p=[0.9] * 3, ys=[100.0, 120.0, 160.0]))
    assert [v.firing.track for v in v16] == [2]  # (t=16: 1800 s after 1 fired at t=1)


def test_share_field_images_a_cell_in_another_close_ups_field_with_none_of_its_own() -> None:
    eng = load(README_EXAMPLE.replace("cooldown_radius_um: 20", "cooldown_radius_um: 5"))
    ys = [200.0, 240.0, 500.0]  # 2 lies well inside 1's close-up; 3 near its edge (256 px off)
    eng.evaluate(field(0, [1, 2, 3], p=[0.9] * 3, ys=ys))
    v = eng.evaluate(field(1, [1, 2, 3], p=[0.9] * 3, ys=ys))
    assert [(x.firing.track, x.stage) for x in v] == [(1, ""), (2, "shared"), (3, "")]
    assert "p0~mitosis-closeup-0" in v[1].reason


# ---------------------------------------------------------------- triggers


def test_mitosis_counts_frames_running_and_a_field_not_scored_neither_adds_nor_ends() -> None:
    eng = rule("{mitosis: {p_min: 0.5, frames: 2}}")
    ps = [0.9, NAN, 0.4, 0.9, NAN, 0.9, 0.9]
    assert tracks_fired(eng, [field(t, [1], p=[p]) for t, p in enumerate(ps)]) == [
        [], [], [], [], [], [1], [],
    ]  # fmt: skip


def test_a_nan_feature_never_fires_and_an_unscored_mitosis_never_does() -> None:
    feats = ("intensity", "stain", "area", "p_mitosis")
    for feat in feats:
        eng = rule(f"{{feature: {{feature: {feat}, above: 0}}}}")
        nan = [NAN]
        o = field(0, [1], p=nan, area=nan, intensity=nan, stain=nan)
        assert eng.evaluate(o) == [], feat
    eng = rule("{mitosis: {p_min: 0.01, frames: 1}}")
    assert tracks_fired(eng, [field(t, [1], p=[NAN]) for t in range(3)]) == [[], [], []]


def test_feature_area_is_in_pixels_and_rearms_below_rearm_below() -> None:
    # a nucleus of 113 µm² is ~270 px at 0.65 µm/px: `above: 250` is px², not µm²
    eng = rule("{feature: {feature: area, above: 250, rearm_below: 150}}")
    areas = [200, 270, 240, 300, 149, 260, NAN, 120, NAN, 255]
    got = tracks_fired(eng, [field(t, [1], area=[a]) for t, a in enumerate(areas)])
    assert got == [[], [1], [], [], [], [1], [], [], [], [1]]


def test_feature_without_rearm_below_rearms_below_above() -> None:
    eng = rule("{feature: {feature: stain, above: 0.5}}")
    got = tracks_fired(eng, [field(t, [1], stain=[s]) for t, s in enumerate([0.6, 0.5, 0.49, 0.5])])
    assert got == [[1], [], [], [1]]


def test_cell_count_rearms_past_the_threshold_by_its_hysteresis_per_position() -> None:
    # `below: 1` fires on a field of no cells and re-arms at 2 (README)
    eng = rule("{cell_count: {below: 1}}")
    counts = [0, 0, 1, 0, 2, 0]
    got = [len(eng.evaluate(field(t, list(range(1, n + 1))))) for t, n in enumerate(counts)]
    assert got == [1, 0, 0, 0, 0, 1]
    # `above: 10`: re-armed at 9 (10 % below); each position on its own
    eng = rule("{cell_count: {above: 10}}")
    got = []
    for t, n in enumerate([11, 12, 10, 11, 9, 11]):
        for pos in ("p0", "p1"):
            if pos == "p1" and t < 3:
                continue  # p1 starts later: its first field over 10 still fires
            got.append((pos, len(eng.evaluate(field(t, list(range(1, n + 1)), position=pos)))))
    assert [g for g in got if g[1]] == [("p0", 1), ("p1", 1), ("p0", 1), ("p1", 1)]


def test_a_field_nothing_was_segmented_in_is_passed_over() -> None:
    eng = rule("{cell_count: {below: 1}}")
    assert eng.evaluate(field(0, [], segmented=False)) == []
    eng = rule("{mitosis: {frames: 2}}")
    # nor does it end a run of mitosis fields
    fields = [field(0, [1], p=[0.9]), field(1, [], segmented=False), field(2, [1], p=[0.9])]
    assert tracks_fired(eng, fields) == [[], [], [1]]


def test_enter_region_fires_on_entering_and_not_when_a_field_misses_the_cell() -> None:
    eng = rule("{enter_region: {region: [0, 0, 200, 512]}}")  # [y0, x0, y1, x1] px
    fields = [
        field(0, [1], ys=[300.0]),  # outside
        field(1, [1], ys=[150.0]),  # enters
        field(2, [], ys=[]),  # missed by the field
        field(3, [1], ys=[NAN]),  # centroid no number: seen nowhere
        field(4, [1], ys=[150.0]),  # still inside: not again
        field(5, [1], ys=[250.0]),  # seen outside: left
        field(6, [1], ys=[100.0]),  # enters again
    ]
    assert tracks_fired(eng, fields) == [[], [1], [], [], [], [], [1]]


def test_track_lost_and_division_fire_once_and_a_divided_track_is_not_lost() -> None:
    eng = load(
        "policies:\n"
        "  - {name: lost, when: {track_lost: {}}, do: {record: {}}}\n"
        "  - {name: div, when: {division: {}}, do: {record: {}}}\n"
    )
    o = field(3, [4, 5], parents=[1, 1], divisions=((1, (4, 5)),), lost=(1, 2))
    got = sorted((v.firing.rule, v.firing.track) for v in eng.evaluate(o))
    assert got == [("div", 1), ("lost", 2)]
    assert eng.evaluate(field(4, [4, 5], parents=[1, 1])) == []


def test_a_division_or_lost_track_held_back_by_the_cooldown_is_dropped() -> None:
    eng = rule("{track_lost: {}}", extra=", cooldown_s: 200")
    got = tracks_fired(eng, [field(t, [9], lost=(t + 1,)) for t in range(4)])
    # 120 s after a firing it is held back, and dropped (never fires later)
    assert got == [[1], [], [3], []]


# ---------------------------------------------------------------- actions


def _one(eng: PolicyEngine, o: Observation) -> Verdict:
    (v,) = eng.evaluate(o)
    return v


def test_each_action_makes_the_decision_the_readme_names() -> None:
    hit = field(0, [1], p=[0.9], stage=(1000.0, 2000.0, 50.0))
    when = "{mitosis: {frames: 1}}"
    d = _one(rule(when, "{recentre: {}}"), hit).firing.decision
    # x/y only, onto the cell
    assert isinstance(d, Move)
    assert d.position == "p0"
    assert d.z_um is None
    assert d.y_um == pytest.approx(2000.0 + (100 - 255.5) * 0.65)
    d = _one(rule(when, "{change_interval: {interval_s: 60}}"), hit).firing.decision
    assert isinstance(d, ChangeInterval)
    assert d.interval_s == 60.0
    d = _one(rule(when, "{stop_position: {}}"), hit).firing.decision
    assert isinstance(d, StopPosition)
    assert d.position == "p0"
    assert isinstance(_one(rule(when, "{stop_run: {}}"), hit).firing.decision, StopRun)
    v = _one(rule(when, "{record: {}}"), hit)
    assert (v.firing.decision, v.stage) == (None, "record")


def test_acquire_a_z_stack_of_one_channel_named_alone_centred_on_the_fields_z() -> None:
    do = "{acquire: {channels: DAPI, z_planes: 3, z_step_um: 2, exposure_ms: {DAPI: 80}, centre: position}}"  # noqa: E501
    v = _one(rule("{mitosis: {frames: 1}}", do), field(0, [1], p=[0.9], stage=(5.0, 6.0, 50.0)))
    d = v.firing.decision
    assert isinstance(d, AddEvents)
    assert [(e.channel.config, e.exposure, e.z_pos) for e in d.events] == [
        ("DAPI", 80.0, 48.0), ("DAPI", 80.0, 50.0), ("DAPI", 80.0, 52.0),
    ]  # fmt: skip
    assert {(e.x_pos, e.y_pos) for e in d.events} == {(5.0, 6.0)}  # at the position


# ---------------------------------------------------------------- cooldowns and limits


def test_max_fires_counts_refused_firings_and_holds_back_the_rest_unused() -> None:
    do = "{acquire: {channels: [DAPI]}}"
    eng = rule("{mitosis: {frames: 1}}", do, ", max_fires: 2")
    # a field without a stage position: its close-up is refused, and counts as a firing
    (v,) = eng.evaluate(field(0, [1], p=[0.9], stage=None))
    assert (v.ok, v.stage) == (False, "guardrail")
    assert [x.firing.track for x in eng.evaluate(field(1, [1, 2, 3], p=[0.9] * 3))] == [2]
    for t in range(2, 5):  # at the limit: none more, for the rest of the run
        assert eng.evaluate(field(t, [1, 2, 3, 4], p=[0.9] * 4)) == []


def test_a_cooldown_without_a_radius_holds_back_its_position_only() -> None:
    eng = rule("{mitosis: {frames: 1}}", extra=", cooldown_s: 600")
    got = []
    for t in range(7):
        for pos in ("p0", "p1"):
            # the same tracks at both positions, entering mitosis one by one
            o = field(t, list(range(1, t + 2)), p=[0.9] * (t + 1), position=pos,
                      ys=[20.0 + 60 * i for i in range(t + 1)])  # fmt: skip
            got += [(pos, t, v.firing.track) for v in eng.evaluate(o)]
    # every 600 s (5 fields) at each position, whichever cell; the held-back ones fire later
    assert got == [("p0", 0, 1), ("p1", 0, 1), ("p0", 5, 2), ("p1", 5, 2)]


def test_a_cooldown_radius_holds_back_the_same_cell_where_two_positions_overlap() -> None:
    eng = rule("{mitosis: {frames: 1}}", extra=", cooldown_s: 600, cooldown_radius_um: 20")
    o0 = field(0, [1], p=[0.9], position="p0", stage=(0.0, 0.0, 0.0))
    # the same cell in an overlapping tile (its stage place 10 µm off), and one 500 µm off
    o1 = field(0, [7], p=[0.9], position="p1", stage=(0.0, 10.0, 0.0), when=5.0)
    o2 = field(0, [8], p=[0.9], position="p2", stage=(500.0, 0.0, 0.0), when=10.0)
    assert [len(eng.evaluate(o)) for o in (o0, o1, o2)] == [1, 0, 1]


def test_the_cooldown_radius_is_in_um_in_the_frame_where_there_is_no_stage_position() -> None:
    eng = rule("{mitosis: {frames: 1}}", extra=", cooldown_s: 600, cooldown_radius_um: 20")
    assert tracks_fired(eng, [field(0, [1], p=[0.9], ys=[100.0], stage=None)]) == [[1]]
    # 25 px = 16 µm: held back; 40 px = 26 µm: fires
    o = field(1, [1, 2, 3], p=[0.9] * 3, ys=[100.0, 125.0, 140.0], stage=None)
    assert tracks_fired(eng, [o]) == [[3]]


def test_a_cell_at_no_place_is_held_back_by_a_cooldown_in_its_position() -> None:
    # before: its distance was NaN, never within the radius: a cell whose centroid was
    # NaN fired (here: stopped the position again) 2 min after a firing in its place
    eng = rule(
        "{feature: {feature: intensity, above: 500}}", "{stop_position: {}}",
        ", cooldown_s: 1800, cooldown_radius_um: 20",
    )  # fmt: skip
    assert tracks_fired(eng, [field(0, [1], intensity=[900.0])]) == [[1]]
    o = field(1, [1, 2], intensity=[900.0, 900.0], ys=[100.0, NAN])
    assert tracks_fired(eng, [o]) == [[]]
    # not used up: once the cooldown is over it fires
    o = field(16, [1, 2], intensity=[900.0, 900.0], ys=[100.0, NAN])
    assert tracks_fired(eng, [o]) == [[2]]
    # its own firing, at no known place, holds back no other cell (a close-up on it would
    # be refused: the others would lose theirs), and its place is not kept as NaN
    o = field(17, [1, 2, 3], intensity=[900.0] * 3, ys=[100.0, NAN, 400.0])
    assert tracks_fired(eng, [o]) == [[3]]
    kept = [r[2] for r in eng.state()["policies"]["r"]["recent"]]
    assert len(kept) == 1
    assert all(np.isfinite(kept))


# ---------------------------------------------------------------- the errors it refuses


@pytest.mark.parametrize(
    ("yaml_rule", "message"),
    [
        pytest.param("{name: r, when: {mitosis: {p_min: '0.5'}}, do: {record: {}}}",
                     r"\(r\).*mitosis\.p_min must be a number, got '0\.5'", id="string-number"),
        pytest.param("{name: r, when: {mitosis: {p_min: 1.5}}, do: {record: {}}}",
                     r"\(r\).*mitosis\.p_min must be in \(0, 1\]", id="p_min-out-of-range"),
        pytest.param("{name: r, when: {mitosis: {frames: 1.5}}, do: {record: {}}}",
                     r"\(r\).*mitosis\.frames must be a whole number", id="frames-whole"),
        pytest.param("{name: r, when: {mitosis: {pmin: 0.5}}, do: {record: {}}}",
                     r"\(r\).*unknown setting\(s\) \['pmin'\]; it takes \['p_min'",
                     id="misspelt-trigger-setting"),
        pytest.param("{name: r, when: {mitosys: {}}, do: {record: {}}}",
                     r"\(r\).*'when' must be one of mitosis", id="misspelt-trigger"),
        pytest.param("{name: r, when: {division: {}}, do: {aquire: {}}}",
                     r"\(r\).*'do' must be one of acquire", id="misspelt-action"),
        pytest.param("{name: r, when: {division: {}}, do: {acquire: {channels: [GFP]}}}",
                     r"\(r\).*acquire\.channels \['GFP'\] are not channels of the rig",
                     id="unknown-channel"),
        pytest.param("{name: r, when: {division: {}}, do: {acquire: {channels: {DAPI: 50}}}}",
                     r"\(r\).*acquire\.channels lists channel names.*acquire\.exposure_ms",
                     id="channels-as-mapping"),
        pytest.param("{name: r, when: {division: {}}, do: {acquire: {channels: [DAPI], "
                     "exposure: 50}}}", r"\(r\).*unknown setting\(s\) \['exposure'\]",
                     id="misspelt-acquire-setting"),
        pytest.param("{name: r, when: {division: {}}, do: {acquire: {channels: [DAPI], "
                     "exposure_ms: {DAPI: 0.05}}}}",
                     r"\(r\).*acquire\.exposure_ms DAPI: 0\.05 ms is outside channel 'DAPI'",
                     id="exposure-in-seconds"),
        pytest.param("{name: r, when: {division: {}}, do: {acquire: {channels: [DAPI], "
                     "loops: 3, interval_s: 30000}}}",
                     r"\(r\).*guardrails\.max_added_span_s.*seconds, not ms", id="interval-in-ms"),
        pytest.param("{name: r, when: {division: {}}, do: {acquire: {channels: [DAPI], "
                     "loops: 3, interval_s: 0.5}}}",
                     r"\(r\).*acquire\.interval_s = 0\.5 s is shorter than guardrails\.min_inter",
                     id="interval-under-min"),
        pytest.param("{name: r, when: {division: {}}, do: {change_interval: {interval_ms: 6}}}",
                     r"\(r\).*change_interval takes \['interval_s'\], not \['interval_ms'\]",
                     id="change-interval-in-ms"),
        pytest.param("{name: r, when: {division: {}}, do: {stop_position: {position: p1}}}",
                     r"\(r\).*stop_position takes nothing, not \['position'\]",
                     id="stop-position-elsewhere"),
        pytest.param("{name: r, when: {cell_count: {below: 1}}, do: {recentre: {}}}",
                     r"\(r\).*recentre needs a trigger that fires on a cell in view",
                     id="recentre-on-a-count"),
        pytest.param("{name: r, when: {enter_region: {region: [0, 0, 100]}}, do: {record: {}}}",
                     r"\(r\).*enter_region\.region must be \[y0, x0, y1, x1\]", id="region-3"),
        pytest.param("{name: r, when: {feature: {feature: size, above: 3}}, do: {record: {}}}",
                     r"\(r\).*feature\.feature must be one of intensity", id="unknown-feature"),
        pytest.param("{name: r, when: {division: {}}, do: {record: {}}, cooldown: 60}",
                     r"policies\.0: unknown field\(s\) \['cooldown'\]", id="misspelt-cooldown"),
        pytest.param("{name: r, when: {division: {}}, do: {record: {}}, cooldown_s: 30 min}",
                     r"\(r\).*cooldown_s must be a number, got '30 min'", id="cooldown-unit"),
        pytest.param("{when: {division: {}}, do: {record: {}}}",
                     r"policies\.0: name is required", id="no-name"),
    ],
)  # fmt: skip
def test_a_documented_error_is_refused_naming_the_rule_and_key(
    yaml_rule: str, message: str
) -> None:
    with pytest.raises(LivescopeError, match=message):
        load(f"policies:\n  - {yaml_rule}\n")


@pytest.mark.parametrize(
    ("yaml_rule", "key"),
    [
        pytest.param("{name: r, when: {division: {}}, do: {change_interval: {interval_s: }}}",
                     "change_interval.interval_s", id="change-interval"),
        pytest.param("{name: r, when: {division: {}}, do: {acquire: {channels: [DAPI], "
                     "loops: }}}", "acquire.loops", id="acquire-loops"),
        pytest.param("{name: r, when: {division: {}}, do: {acquire: {channels: [DAPI], "
                     "exposure_ms: {DAPI: }}}}", "acquire.exposure_ms.DAPI", id="exposure"),
        pytest.param("{name: r, when: {mitosis: {p_min: }}, do: {record: {}}}",
                     "mitosis.p_min", id="p_min"),
        pytest.param("{name: r, when: {feature: {feature: area, above: }}, do: {record: {}}}",
                     "feature.above", id="feature-above"),
        pytest.param("{name: r, when: {division: {}}, do: {record: {}}, max_fires: }",
                     "max_fires", id="max-fires"),
    ],
)  # fmt: skip
def test_an_empty_setting_is_refused_naming_its_key(yaml_rule: str, key: str) -> None:
    # before: `'<' not supported between instances of 'NoneType' and 'int'`, naming no key;
    # and an empty `max_fires:` was taken as no limit
    with pytest.raises(LivescopeError, match=rf"\(r\).*{key} must be a number, got nothing"):
        load(f"policies:\n  - {yaml_rule}\n")


def test_a_misspelt_trigger_setting_is_named_misspelt_not_no_number() -> None:
    # before: "rule 'r': feature.feture must be a number, got 'area'"
    with pytest.raises(LivescopeError, match=r"unknown setting\(s\) \['feture'\]; it takes"):
        rule("{feature: {feture: area, above: 3}}")


@pytest.mark.parametrize(
    ("action", "says"),
    [
        pytest.param("change_interval: {interval_s: 60, position: p1}", "at every position",
                     id="change_interval"),
        pytest.param("stop_run: {position: p1}", "it ends the run", id="stop_run"),
        pytest.param("stop_position: {position: p1}", "the position whose field fired",
                     id="stop_position"),
    ],
)  # fmt: skip
def test_an_actions_refused_setting_says_what_the_action_acts_on(action: str, says: str) -> None:
    # before: every action "acts on the position whose field fired"; a change_interval
    # re-times every position's time points still to come, and a stop_run ends the run
    with pytest.raises(LivescopeError) as err:
        rule("{division: {}}", f"{{{action}}}")
    assert says in str(err.value)


def test_an_acquire_in_another_channel_group_is_refused_when_the_plan_is_read() -> None:
    # (an undocumented `group:` sent close-ups in a group the rig does not have: the agent
    # refused every one of them, the run long)
    from livescope.policy import rules_from_spec
    from livescope.schema import LivescopeError

    spec = [{"name": "closeup", "when": {"mitosis": {}},
             "do": {"acquire": {"channels": ["DAPI"], "group": "Filters"}}}]  # fmt: skip
    with pytest.raises(LivescopeError, match=r"acquire\.group 'Filters' is not the rig's"):
        rules_from_spec(spec, channel_group="Channel", channels=["DAPI"])
    spec[0]["do"]["acquire"]["group"] = "Channel"  # (the rig's own: as without it)
    assert rules_from_spec(spec, channel_group="Channel", channels=["DAPI"])
