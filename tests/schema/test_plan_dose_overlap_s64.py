"""The plan's light-dose budget counts what the sample under each field gets (session 64).

A field's (position's, grid tile's) light is what the hottest point of its field
of view gets: its own frames' and those of every plan frame whose field of view
covers that point. A 3x3 grid at 90 % overlap images one patch nine times, two
positions at one x/y light one spot twice; at 10 % overlap no point is imaged
more than four times (where four tiles' corners meet). Fields that only share an
edge (a grid at 0 % overlap) do not overlap.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import useq

from livescope.schema import (
    HardwareProfile,
    PlanError,
    check_plan,
    load_plan,
    plan_events,
    plan_figures,
    planned_light_s,
)

ROOT = Path(__file__).resolve().parents[2]
LIMIT = "light_dose.max_fluorescence_s_per_position = 120 s"


def _plan(**kw: object) -> useq.MDASequence:
    # sim: 120 s of fluorescence per position; 1 s of DAPI at 100 time points is 100 s
    base: dict[str, object] = {
        "channels": [{"config": "DAPI", "exposure": 1000}],
        "time_plan": {"interval": 60, "loops": 100},
        "stage_positions": [{"x": 0, "y": 0, "z": 0, "name": "A"}],
    }
    base.update(kw)
    return useq.MDASequence.model_validate(base)


def _grid(
    sim_profile: HardwareProfile, overlap: float, at: tuple[float, float] = (0, 0)
) -> dict[str, object]:
    h, w = sim_profile.field_of_view_um
    return {
        "stage_positions": [{"x": at[0], "y": at[1], "z": 0, "name": "A"}],
        "grid_plan": {"rows": 3, "columns": 3, "overlap": overlap, "fov_width": w,
                      "fov_height": h},
    }  # fmt: skip


def _problems(plan: useq.MDASequence, profile: HardwareProfile) -> list[str]:
    with pytest.raises(PlanError) as err:
        check_plan(plan, profile)
    return err.value.problems


def test_a_grid_at_90_percent_overlap_is_held_to_what_its_centre_gets(
    sim_profile: HardwareProfile,
) -> None:
    # each tile 100 s (under 120), but every tile's field overlaps all 8 others: 900 s
    problems = _problems(_plan(**_grid(sim_profile, 90)), sim_profile)
    assert len(problems) == 9, problems
    centre = next(p for p in problems if "position A_g4 " in p)
    assert centre.startswith(
        "light dose: position A_g4 gets 900.0 s of fluorescence (DAPI) from the plan alone at "
        "the hottest point of its field of view (100.0 s from its own frames, 800.0 s from "
        "those of the plan fields whose field of view overlaps it there: "
    ), centre
    for k in (0, 1, 2, 3, 5, 6, 7, 8):
        assert f"A_g{k} 100.0 s" in centre, centre
    assert LIMIT in centre, centre
    assert "less overlap between these fields" in centre, centre


def test_two_positions_at_one_spot_share_its_budget(sim_profile: HardwareProfile) -> None:
    plan = _plan(
        stage_positions=[
            {"x": 0, "y": 0, "z": 0, "name": "A"},
            {"x": 0, "y": 0, "z": 5, "name": "B"},
        ]
    )
    problems = _problems(plan, sim_profile)
    assert [p.split(" (")[0] for p in problems] == [
        "light dose: position A gets 200.0 s of fluorescence",
        "light dose: position B gets 200.0 s of fluorescence",
    ], problems
    assert "overlaps it there: B 100.0 s)" in problems[0], problems
    assert "overlaps it there: A 100.0 s)" in problems[1], problems


@pytest.mark.parametrize(
    ("dx", "dy", "overlap"),
    [
        pytest.param(332.8, 0.0, False, id="edge-to-edge"),
        pytest.param(300.0, 332.8, False, id="edge-in-y-only"),
        pytest.param(332.8, 332.8, False, id="corner"),
        pytest.param(332.7, 0.0, True, id="0.1um-overlap"),
        pytest.param(-300.0, 300.0, True, id="corners-overlap"),
    ],
)
def test_fields_sharing_only_an_edge_do_not_overlap(
    sim_profile: HardwareProfile, dx: float, dy: float, overlap: bool
) -> None:
    assert sim_profile.field_of_view_um == (332.8, 332.8)
    plan = _plan(
        stage_positions=[
            {"x": 0, "y": 0, "z": 0, "name": "A"},
            {"x": dx, "y": dy, "z": 0, "name": "B"},
        ]
    )
    if overlap:
        assert len(_problems(plan, sim_profile)) == 2
    else:
        check_plan(plan, sim_profile)


@pytest.mark.parametrize("at", [(0.0, 0.0), (1000.1, 3.3)])
def test_a_grid_at_0_percent_overlap_passes_as_before(
    sim_profile: HardwareProfile, at: tuple[float, float]
) -> None:
    # tiles just touching (their places a float's rounding off one field apart): each
    # gets its own 100 s, as before
    plan = _plan(**_grid(sim_profile, 0, at))
    check_plan(plan, sim_profile)
    events = plan_events(plan)
    own = planned_light_s(events, sim_profile)
    assert own == {(f"A_g{k}", "DAPI"): pytest.approx(100.0) for k in range(9)}
    assert planned_light_s(events, sim_profile, received=True) == own


def test_the_channel_budget_names_the_channel_and_the_fields(
    sim_profile: HardwareProfile,
) -> None:
    dose = sim_profile.light_dose.model_copy(
        update={"max_fluorescence_s_per_position": 1000.0, "max_fluorescence_s_per_channel": 150.0}
    )
    prof = sim_profile.model_copy(update={"light_dose": dose})
    plan = _plan(
        stage_positions=[
            {"x": 0, "y": 0, "z": 0, "name": "A"},
            {"x": 100, "y": 0, "z": 0, "name": "B"},
        ]
    )
    assert _problems(plan, prof) == [
        f"light dose: position {a}, channel DAPI gets 200.0 s of fluorescence from the plan "
        f"alone at the hottest point of its field of view (100.0 s from its own frames, 100.0 s "
        f"from those of the plan fields whose field of view overlaps it there: {b} 100.0 s); "
        "light_dose.max_fluorescence_s_per_channel = "
        "150 s (shorter exposures, fluorescence at fewer time points, less overlap between "
        "these fields, or a larger budget in the profile)"
        for a, b in (("A", "B"), ("B", "A"))
    ]


def test_plans_without_overlap_book_the_same_light(sim_profile: HardwareProfile) -> None:
    from livescope.scope import demo_sequence

    for plan in (
        load_plan(ROOT / "examples" / "mitosis-closeups.yaml"),
        demo_sequence(sim_profile),
    ):
        check_plan(plan, sim_profile)
        events = plan_events(plan)
        own = planned_light_s(events, sim_profile)
        assert own, plan
        assert planned_light_s(events, sim_profile, received=True) == own


def _budget(profile: HardwareProfile, per_position: float) -> HardwareProfile:
    dose = profile.light_dose.model_copy(update={"max_fluorescence_s_per_position": per_position})
    return profile.model_copy(update={"light_dose": dose})


def test_a_grid_at_10_percent_overlap_is_held_to_what_four_corners_give(
    sim_profile: HardwareProfile,
) -> None:
    # each tile 100 s; at 10 % overlap no point lies under more than 4 tiles (where four
    # corners meet): 400 s at the hottest, not the 900 s of a tile and its 8 neighbours
    plan = _plan(**_grid(sim_profile, 10))
    check_plan(plan, _budget(sim_profile, 400.5))
    events = plan_events(plan)
    assert planned_light_s(events, sim_profile, received=True) == {
        (f"A_g{k}", "DAPI"): pytest.approx(400.0) for k in range(9)
    }
    problems = _problems(plan, _budget(sim_profile, 399.0))
    assert len(problems) == 9, problems
    centre = next(p for p in problems if "position A_g4 " in p)
    assert centre.startswith(
        "light dose: position A_g4 gets 400.0 s of fluorescence (DAPI) from the plan alone at "
        "the hottest point of its field of view (100.0 s from its own frames, 300.0 s from "
        "those of the plan fields whose field of view overlaps it there: "
    ), centre
    # the three tiles whose corners meet its own at one of its corners, each whole
    named = centre.split("overlaps it there: ")[1].split(")")[0].split(", ")
    assert len(named) == 3, centre
    assert all(n.endswith(" 100.0 s") for n in named), centre
    assert {n.split()[0] for n in named} < {f"A_g{k}" for k in (0, 1, 2, 3, 5, 6, 7, 8)}
    assert "max_fluorescence_s_per_position = 399 s" in centre, centre


def test_a_field_lit_apart_in_two_channels_is_held_to_its_hottest_point(
    sim_profile: HardwareProfile,
) -> None:
    # A (DAPI and GFP) is overlapped on its left by B (DAPI only) and on its right by C
    # (GFP only): no point of A gets both B's and C's light, so A's hottest point gets
    # 200 + 100 s, not 200 + 100 + 100 s; per channel, 200 s each (a 350 s budget passes)
    gfp = next(c for c in sim_profile.channels.presets if c.name == "DAPI").model_copy(
        update={"name": "GFP"}
    )
    presets = (*sim_profile.channels.presets, gfp)
    prof = _budget(sim_profile, 350.0).model_copy(
        update={"channels": sim_profile.channels.model_copy(update={"presets": presets})}
    )
    w = sim_profile.field_of_view_um[1]

    def sub(*channels: str) -> dict[str, object]:
        return {"channels": [{"config": c, "exposure": 1000} for c in channels]}

    plan = _plan(
        stage_positions=[
            {"x": 0, "y": 0, "z": 0, "name": "A", "sequence": sub("DAPI", "GFP")},
            {"x": -0.6 * w, "y": 0, "z": 0, "name": "B", "sequence": sub("DAPI")},
            {"x": 0.6 * w, "y": 0, "z": 0, "name": "C", "sequence": sub("GFP")},
        ]
    )
    check_plan(plan, prof)
    received = planned_light_s(plan_events(plan), prof, received=True)
    assert received[("A", "DAPI")] == pytest.approx(200.0), received
    assert received[("A", "GFP")] == pytest.approx(200.0), received
    problems = _problems(plan, _budget(prof, 299.0))
    # (B and C: their own 100 s and A's 200 s, both its channels lighting them)
    assert [p.split(" of fluorescence")[0] for p in problems] == [
        f"light dose: position {k} gets 300.0 s" for k in "ABC"
    ], problems


def test_plan_figures_show_the_light_each_field_receives(sim_profile: HardwareProfile) -> None:
    # a tile's own frames give it 100 s; its hottest point gets 400 s, 89 % of a 450 s budget
    prof = _budget(sim_profile, 450.0)
    figures = plan_figures(_plan(**_grid(sim_profile, 10)), prof)
    assert figures["fluorescence_s"] == {f"A_g{k}": 100.0 for k in range(9)}
    assert figures["received_fluorescence_s"] == {f"A_g{k}": 400.0 for k in range(9)}
    warned = [w for w in figures["warnings"] if "of fluorescence" in w]
    assert len(warned) == 9, figures["warnings"]
    assert warned[4].startswith(
        "position A_g4 gets 400.0 s of fluorescence from the plan alone where it gets most "
        "(100.0 s from its own frames), 89% of light_dose.max_fluorescence_s_per_position "
        "(450 s): decisions may add at most 50.0 s there"
    ), warned


def test_plan_figures_without_overlap_receive_their_own_light(
    sim_profile: HardwareProfile,
) -> None:
    closeups = load_plan(ROOT / "examples" / "mitosis-closeups.yaml")
    for plan in (_plan(**_grid(sim_profile, 0)), closeups):
        figures = plan_figures(plan, sim_profile)
        assert figures["fluorescence_s"], figures
        assert figures["received_fluorescence_s"] == figures["fluorescence_s"]
