"""A recording's own plan is replayed as it ran, not refused for what useq read otherwise.

The plan checks added in session 62 (a z step of 0 over a range, a negative ``below``,
top below bottom, a grid's field of view of 0, a time plan of no phases) refused
recordings that had run with such plans: `livescope replay` stopped on them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import useq

from livescope.schema import HardwareProfile, PlanError, check_plan, load_plan

_AS_USEQ_READ = [
    pytest.param("z_plan: {above: 2, below: -2, step: 1}", id="negative-below"),
    pytest.param("z_plan: {range: 4, step: 0}", id="step-0"),
    pytest.param("time_plan: {phases: []}", id="no-phases"),
    pytest.param("grid_plan: {rows: 2, columns: 2, fov_width: 0, fov_height: 0}", id="fov-0"),
]


@pytest.mark.parametrize("section", _AS_USEQ_READ)
def test_a_recorded_plan_loads_and_checks_as_it_ran(
    tmp_path: Path, sim_profile: HardwareProfile, section: str
) -> None:
    f = tmp_path / "plan.yaml"
    f.write_text(f"channels: [DAPI]\nstage_positions: [{{x: 0, y: 0, z: 50}}]\n{section}\n")
    with pytest.raises(PlanError):  # (a plan about to be run: refused, as written)
        load_plan(f)
    sequence = load_plan(f, recorded=True)
    check_plan(sequence, sim_profile, str(f), light_budget=False, recorded=True)
    with pytest.raises(PlanError):
        check_plan(sequence, sim_profile, str(f), light_budget=False)


def test_a_recorded_plan_that_cannot_be_expanded_is_still_refused(tmp_path: Path) -> None:
    f = tmp_path / "plan.yaml"
    f.write_text("channels: [DAPI]\nz_plan: {range: 4, step: -1}\n")
    with pytest.raises(PlanError, match="gives no planes"):
        load_plan(f, recorded=True)


def test_top_below_bottom_is_refused_only_where_useq_gives_no_planes(
    sim_profile: HardwareProfile,
) -> None:
    def problems(top: float, bottom: float) -> list[str]:
        seq = useq.MDASequence(channels=["DAPI"], z_plan={"top": top, "bottom": bottom, "step": 1})
        try:
            check_plan(seq, sim_profile)
        except PlanError as exc:
            return exc.problems
        return []

    assert problems(5.0, 5.000000001) == []  # (one plane: meant as top = bottom)
    assert problems(10, 10.3) == []  # (one plane, at 10.3)
    assert problems(4.6, 5) == []  # (one plane, at 5)
    # (useq counts one plane here and gives none: the frame at the position's own z)
    assert len(problems(4.2, 5)) == 1
    (said,) = problems(0, 5)
    assert said == (
        "z_plan: top 0 µm is below bottom 5 µm, which gives no planes; swap them "
        "(go_up: false images the stack from the top down)"
    )


def test_a_well_plate_s_grid_without_fov_and_random_points(sim_profile: HardwareProfile) -> None:
    def plate(points: object) -> useq.MDASequence:
        return useq.MDASequence(channels=["DAPI"], stage_positions=useq.WellPlatePlan(
            plate="96-well", a1_center_xy=(0, 0), selected_wells=([0], [0]),
            well_points_plan=points))  # fmt: skip

    with pytest.raises(PlanError) as info:
        check_plan(plate(useq.GridRowsColumns(rows=2, columns=2)), sim_profile)
    assert any(
        p.startswith("stage_positions.well_points_plan: give fov_width and fov_height")
        for p in info.value.problems
    )
    # (random points need no field of view)
    check_plan(plate(useq.RandomPoints(num_points=2, max_width=100, max_height=100)), sim_profile)
