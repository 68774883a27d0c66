"""Plan and profile mistakes the checks took in silence (review s62): each failed before its fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import useq

from livescope.schema import (
    HardwareProfile,
    PlanError,
    builtin_profiles,
    check_plan,
    load_plan,
    load_profile,
)

_FOV = {"fov_width": 332.8, "fov_height": 332.8}


def _plan(**fields: Any) -> useq.MDASequence:
    return useq.MDASequence(channels=["DAPI"], stage_positions=[(0, 0, 50)], **fields)


def _problems(seq: useq.MDASequence, profile: HardwareProfile) -> list[str]:
    with pytest.raises(PlanError) as info:
        check_plan(seq, profile)
    return info.value.problems


@pytest.mark.parametrize(
    ("z_plan", "expected"),
    [
        pytest.param(
            {"above": 5, "below": 5, "step": 0},
            "z_plan.step: 0 µm over a 10 µm range gives one plane, 5 µm below the position's "
            "z, not a stack; give a step > 0 (one plane: range 0)",
            id="above-below-step-0",
        ),
        pytest.param(
            {"range": 4, "step": 0},
            "z_plan.step: 0 µm over a 4 µm range gives one plane, 2 µm below the position's z, "
            "not a stack; give a step > 0 (one plane: range 0)",
            id="range-step-0",
        ),
        pytest.param(
            {"top": 10, "bottom": 0, "step": 0},
            "z_plan.step: 0 µm over a 10 µm range gives one plane, at its bottom (z = 0 µm), "
            "not a stack; give a step > 0 (one plane: range 0)",
            id="top-bottom-step-0",
        ),
        pytest.param(
            {"range": -4, "step": 1},
            "z_plan.range: -4 µm gives no planes; give a range >= 0 µm (go_up: false images "
            "the stack from the top down)",
            id="negative-range",
        ),
        pytest.param(
            {"above": 5, "below": -3, "step": 1},
            "z_plan.below: -3 µm is taken as 3 µm below the position's z; give a distance "
            ">= 0 µm (go_up: false images the stack from the top down)",
            id="negative-below",
        ),
        pytest.param(
            {"above": -2, "below": 0, "step": 1},
            "z_plan.above: -2 µm is taken as 2 µm above the position's z; give a distance "
            ">= 0 µm (go_up: false images the stack from the top down)",
            id="negative-above",
        ),
        pytest.param(
            {"top": 0, "bottom": 10, "step": 1},
            "z_plan: top 0 µm is below bottom 10 µm, which gives no planes; swap them "
            "(go_up: false images the stack from the top down)",
            id="top-below-bottom",
        ),
    ],
)
def test_a_z_plan_giving_no_stack_or_another_is_refused(
    sim_profile: HardwareProfile, z_plan: dict[str, float], expected: str
) -> None:
    # (useq gave one plane 5 µm off the position's z for a step of 0, none for a negative
    # range: the plan check passed both)
    assert _problems(_plan(z_plan=z_plan), sim_profile) == [expected]


def test_a_position_s_own_z_plan_is_checked_too(sim_profile: HardwareProfile) -> None:
    sub = useq.MDASequence(z_plan={"range": 4, "step": 0})
    seq = useq.MDASequence(channels=["DAPI"], stage_positions=[useq.Position(sequence=sub)])
    (problem,) = _problems(seq, sim_profile)
    assert problem.startswith("stage_positions.0.sequence.z_plan.step: 0 µm over a 4 µm range")


@pytest.mark.parametrize(
    "z_plan",
    [
        pytest.param({"range": 0, "step": 0}, id="range-0"),
        pytest.param({"top": 5, "bottom": 5, "step": 0}, id="top-is-bottom"),
        pytest.param({"above": 0, "below": 0, "step": 0}, id="above-below-0"),
        pytest.param({"range": 4, "step": 1, "go_up": False}, id="top-down"),
    ],
)
def test_one_plane_asked_for_and_a_stack_pass(
    sim_profile: HardwareProfile, z_plan: dict[str, Any]
) -> None:
    check_plan(_plan(z_plan=z_plan), sim_profile)


@pytest.mark.parametrize(
    ("grid_plan", "expected"),
    [
        pytest.param(
            {"rows": 2, "columns": 2, "fov_width": 0, "fov_height": 332.8},
            ["grid_plan.fov_width: 0 µm; give the field of view (µm, > 0): useq places the "
             "tiles 1 µm apart at 0, and mirrors the grid below it"],
            id="fov-0",
        ),
        pytest.param(
            {"rows": 2, "columns": 2, "fov_width": 332.8, "fov_height": -332.8},
            ["grid_plan.fov_height: -332.8 µm; give the field of view (µm, > 0): useq places "
             "the tiles 1 µm apart at 0, and mirrors the grid below it"],
            id="fov-negative",
        ),
        pytest.param(
            {"rows": 2, "columns": 2, "overlap": 100, **_FOV},
            ["grid_plan.overlap: 100 x 100 % leaves no step between tiles (every tile on one "
             "spot); give an overlap < 100 (percent of the field of view)"],
            id="overlap-100",
        ),
        pytest.param(
            # (useq divided by the step: a ZeroDivisionError traceback, not a refusal)
            {"top": 0, "left": 0, "bottom": 1000, "right": 1000, "overlap": (10, 100), **_FOV},
            ["grid_plan.overlap: 10 x 100 % leaves no step between tiles (every tile on one "
             "spot); give an overlap < 100 (percent of the field of view)"],
            id="overlap-100-from-edges",
        ),
    ],
)  # fmt: skip
def test_a_grid_whose_tiles_are_not_a_field_apart_is_refused(
    sim_profile: HardwareProfile, grid_plan: dict[str, Any], expected: list[str]
) -> None:
    seq = useq.MDASequence(channels=["DAPI"], grid_plan=grid_plan)
    assert _problems(seq, sim_profile) == expected


def test_a_grid_of_mostly_overlapping_tiles_passes(sim_profile: HardwareProfile) -> None:
    check_plan(_plan(grid_plan={"rows": 2, "columns": 2, "overlap": 99, **_FOV}), sim_profile)


@pytest.mark.parametrize(
    "time_plan",
    [pytest.param("{phases: []}", id="no-phases"), pytest.param("[]", id="empty-list")],
)
def test_a_time_plan_of_no_phases_is_refused(tmp_path: Path, time_plan: str) -> None:
    # (useq made it one time point, and the plan check said so as if it was meant)
    f = tmp_path / "plan.yaml"
    f.write_text(f"channels: [DAPI]\ntime_plan: {time_plan}\n")
    with pytest.raises(PlanError) as info:
        load_plan(f)
    assert info.value.problems == [
        "time_plan: no phases (an empty list) gives one time point; give its phases (each an "
        "interval with loops or a duration, in seconds), or leave time_plan out for one time "
        "point"
    ]


def test_a_duration_that_is_not_seconds_says_they_are(tmp_path: Path) -> None:
    # (pydantic alone said "invalid character in hour")
    f = tmp_path / "plan.yaml"
    f.write_text("channels: [DAPI]\ntime_plan: {interval: 2 min, loops: 3}\n")
    with pytest.raises(PlanError) as info:
        load_plan(f)
    assert info.value.problems == [
        "time_plan.interval: Input should be a valid timedelta, invalid character in hour "
        "(got '2 min'); durations are seconds (e.g. 120 for 2 min)"
    ]


@pytest.mark.parametrize("name", sorted(builtin_profiles()))
def test_every_shipped_profile_still_loads(name: str) -> None:
    assert load_profile(name).name
