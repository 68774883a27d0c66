"""Cases found by the plan review (s60): each failed before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import useq

from livescope.schema import HardwareProfile, PlanError, check_plan, load_plan, load_profile
from livescope.schema import _plan_warnings as plan_module

ROOT = Path(__file__).resolve().parents[2]
_GRID = "{rows: 3, columns: 3, fov_width: 300, fov_height: 300"


def _load(tmp_path: Path, text: str) -> useq.MDASequence:
    f = tmp_path / "plan.yaml"
    f.write_text("channels: [Phase]\n" + text)
    return load_plan(f)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            f"grid_plan: {_GRID}, mode: snake}}\n",
            "grid_plan.mode: Input should be 'row_wise', 'column_wise', 'row_wise_snake'",
            id="grid-mode",
        ),
        pytest.param(
            f"grid_plan: {_GRID}, relative_to: centre}}\n",
            "grid_plan.relative_to: Input should be 'center' or 'top_left' (got 'centre'); "
            "as written, useq would read grid_plan as a RelativePosition (one field, no grid",
            id="grid-relative-to",
        ),
        pytest.param(
            "grid_plan: {rows: 0, columns: 3, fov_width: 300, fov_height: 300}\n",
            "grid_plan.rows: Input should be greater than or equal to 1 (got 0)",
            id="grid-no-rows",
        ),
        pytest.param(
            "grid_plan: {rows: 2.5, columns: 3, fov_width: 300, fov_height: 300}\n",
            "grid_plan.rows: Input should be a valid integer",
            id="grid-fractional-rows",
        ),
        pytest.param(
            f"stage_positions: [{{x: 0, y: 0, z: 0, sequence: {{grid_plan: {_GRID}, "
            "mode: snake}}}]\n",
            "stage_positions.0.sequence.grid_plan.mode: Input should be",
            id="position-grid",
        ),
        pytest.param(
            "stage_positions: {plate: 96-well, a1_center_xy: [0, 0], selected_wells: [[0], [0]], "
            f"well_points_plan: {_GRID}, mode: snake}}}}\n",
            "stage_positions.well_points_plan.mode: Input should be",
            id="well-points",
        ),
        pytest.param(
            "time_plan: {interval: 10, loops: 3, duration: 100}\n",
            "time_plan.loops: interval, loops, duration do not go together: useq would read "
            "time_plan as a TIntervalDuration (it takes interval, duration) and drop loops",
            id="time-three-keys",
        ),
        pytest.param(
            "z_plan: {range: 4, step: 1, top: 10, bottom: 0}\n",
            "z_plan.range: range, step, top, bottom do not go together: useq would read z_plan "
            "as a ZTopBottom",
            id="z-two-kinds",
        ),
        pytest.param(
            "time_plan: {phases: [{interval: 10, duration: 60, prioritise_duration: true}, "
            "{interval: 60, loops: 5}]}\n",
            "time_plan.phases.0.prioritise_duration: unknown field",
            id="phase-misspelt",
        ),
        pytest.param(
            "time_plan: [{interval: 1, loops: 2, duration: 3}]\n",
            "time_plan.phases.0.loops: interval, loops, duration do not go together",
            id="phase-list",
        ),
        pytest.param(
            "stage_positions: {plate: 96-well, a1_center_xy: [0, 0], selected_wells: [[0], [0]], "
            "rotaton: 5, well_points_plan: {fov_width: 300, fov_height: 300}}\n",
            "stage_positions.rotaton: unknown field (takes a1_center_xy, plate, rotation,",
            id="plate-misspelt",
        ),
    ],
)
def test_a_key_useq_would_drop_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    # useq's plans are unions: with one bad value a grid validated as a single field
    # (RelativePosition needs only fov_width and fov_height), three time keys as two
    with pytest.raises(PlanError) as info:
        _load(tmp_path, text)
    assert any(expected in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("[405, Brightfield]", "channels.0: 405 is read as a number", id="short"),
        pytest.param("[{config: 561, exposure: 100}]", "channels.0.config: 561", id="config"),
    ],
)
def test_a_channel_named_by_a_number_is_told_to_quote_it(
    tmp_path: Path, text: str, expected: str
) -> None:
    (f := tmp_path / "plan.yaml").write_text(f"channels: {text}\n")
    with pytest.raises(PlanError) as info:
        load_plan(f)
    (problem,) = info.value.problems
    assert expected in problem
    assert "write it in quotes: '" in problem


_DAPI_UP = {"config": "DAPI", "exposure": 20, "z_offset": 20}


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        pytest.param(
            {"channels": ["Phase", _DAPI_UP]},
            "channels.1.z_offset: 20 µm, but useq shifts a channel by its z_offset only within "
            "a z-stack",
            id="no-z-plan",
        ),
        pytest.param(
            {
                "channels": ["Phase"],
                "z_plan": {"range": 2, "step": 1},
                "stage_positions": [{"x": 0, "y": 0, "z": 0, "sequence": {"channels": [_DAPI_UP]}}],
            },
            "stage_positions.0.sequence.channels.0.z_offset: 20 µm",
            id="position-channels-plan-z",
        ),
        pytest.param(
            {
                "channels": ["Phase", _DAPI_UP],
                "stage_positions": [
                    {"x": 0, "y": 0, "z": 0, "sequence": {"z_plan": {"range": 2, "step": 1}}}
                ],
            },
            "channels.1.z_offset",
            id="position-z-plan-only",
        ),
        pytest.param(
            {
                "channels": ["Phase", _DAPI_UP],
                "z_plan": {"range": 2, "step": 1},
                "stage_positions": [
                    {"x": 0, "y": 0, "z": 0, "sequence": {"z_plan": {"range": 4, "step": 2}}}
                ],
            },
            "stage_positions.0.sequence.z_plan: the plan's channels' z_offset is not applied",
            id="position-z-plan-replaces",
        ),
    ],
)
def test_a_z_offset_useq_does_not_apply_is_refused(
    sim_profile: HardwareProfile, plan: dict[str, object], expected: str
) -> None:
    sequence = useq.MDASequence.model_validate(
        {"stage_positions": [{"x": 0, "y": 0, "z": 0}]} | plan
    )
    dapi = [e.z_pos for e in sequence if e.channel is not None and e.channel.config == "DAPI"]
    assert dapi
    assert all(z is not None and abs(z) <= 2 for z in dapi)  # (useq: not shifted by 20)
    with pytest.raises(PlanError) as info:
        check_plan(sequence, sim_profile)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_a_z_offset_within_a_z_stack_still_passes(sim_profile: HardwareProfile) -> None:
    plan = useq.MDASequence.model_validate(
        {
            "stage_positions": [{"x": 0, "y": 0, "z": 0}],
            "channels": ["Phase", _DAPI_UP],
            "z_plan": {"relative": [0]},
        }
    )
    assert [e.z_pos for e in plan] == [0.0, 20.0]
    check_plan(plan, sim_profile)


def _af_plan() -> useq.MDASequence:
    return useq.MDASequence.model_validate(
        {
            "stage_positions": [{"x": 0, "y": 0, "z": 0, "name": "p0"}],
            "channels": [{"config": "Phase", "exposure": 20}],
            "autofocus_plan": {"autofocus_device_name": "Z", "axes": ["p"]},
        }
    )


def test_autofocus_on_the_simulated_microscope_is_refused_by_the_check(
    sim_profile: HardwareProfile,
) -> None:
    # the simulated core has no autofocus device: the run's start refused the plan the
    # check passed
    with pytest.raises(PlanError, match="no autofocus device; give the plan no autofocus_plan"):
        check_plan(_af_plan(), sim_profile)
    check_plan(_af_plan(), sim_profile, autofocus_device=True)  # (a core said it has one)
    check_plan(_af_plan(), load_profile("widefield-2048-scmos"))  # (its core is asked at start)


def test_a_relative_stack_wider_than_the_z_travel_is_refused_by_the_check(
    sim_profile: HardwareProfile,
) -> None:
    # centred on the focus when the run starts, some planes are outside [-200, 200] µm
    # wherever it is: the start refused what the check passed
    wide = useq.MDASequence.model_validate(
        {"channels": ["Phase"], "z_plan": {"range": 500, "step": 50}}
    )
    with pytest.raises(PlanError, match=r"z_plan: its planes span 500 µm, more than the whole"):
        check_plan(wide, sim_profile)
    fits = useq.MDASequence.model_validate(
        {"channels": ["Phase"], "z_plan": {"range": 400, "step": 50}}
    )
    check_plan(fits, sim_profile)


def test_a_plan_not_read_from_a_file_is_named_once(sim_profile: HardwareProfile) -> None:
    # ("acquisition plan plan is invalid")
    plan = useq.MDASequence.model_validate({"channels": ["Cy5"]})
    with pytest.raises(PlanError, match=r"^acquisition plan in use is invalid \(1 problem\)"):
        check_plan(plan, sim_profile)


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        pytest.param(
            {"grid_plan": {"rows": 2, "columns": 2, "fov_width": 512, "fov_height": 512}},
            "grid_plan: fov 512 x 512 µm, but this profile's field of view is 332.8 x 332.8 µm "
            "(its camera's size in px): the tiles would leave gaps between them (µm, not px?)",
            id="fov-px",
        ),
        pytest.param(
            {"grid_plan": {"rows": 2, "columns": 2, "fov_width": 100, "fov_height": 100}},
            "(2x apart or more): the tiles would overlap mostly",
            id="fov-small",
        ),
        pytest.param(
            {
                "stage_positions": [
                    {
                        "x": 0,
                        "y": 0,
                        "sequence": {
                            "grid_plan": {
                                "rows": 2,
                                "columns": 2,
                                "fov_width": 700,
                                "fov_height": 300,
                            }
                        },
                    }
                ]
            },
            "stage_positions.0.sequence.grid_plan: fov 700 x 300 µm",
            id="fov-position-wide",
        ),
        pytest.param(
            {"time_plan": {"interval": 120000, "loops": 3}},
            "time_plan.interval: 120000 s is more than a day (1.4 days between time points): "
            "intervals are seconds (ms meant?)",
            id="interval-ms",
        ),
        pytest.param(
            {"time_plan": [{"interval": 1, "loops": 2}, {"interval": 90000, "loops": 2}]},
            "time_plan.phases.1.interval: 90000 s",
            id="phase-interval-ms",
        ),
        pytest.param(
            {"z_plan": {"range": 0.01, "step": 0.0005}},
            "z_plan.step: 0.0005 µm is less than 0.01 µm: z_plan numbers are µm (mm meant?)",
            id="z-step-mm",
        ),
    ],
)
def test_a_likely_unit_slip_is_warned_of(
    sim_profile: HardwareProfile, plan: dict[str, object], expected: str
) -> None:
    sequence = useq.MDASequence.model_validate({"channels": ["Phase"]} | plan)
    check_plan(sequence, sim_profile)  # (a warning, not a refusal)
    warnings = plan_module.plan_warnings(sequence, sim_profile)
    assert len(warnings) == 1, warnings
    assert expected in warnings[0]


def test_the_shipped_plans_give_no_problem_or_warning(sim_profile: HardwareProfile) -> None:
    from livescope.scope import demo_sequence

    plans = [load_plan(f) for f in sorted((ROOT / "examples").glob("*.yaml"))]
    for plan in [*plans, demo_sequence(sim_profile)]:
        check_plan(plan, sim_profile)
        assert plan_module.plan_warnings(plan, sim_profile) == []
    fits = useq.MDASequence.model_validate(
        {
            "channels": ["Phase"],
            "z_plan": {"range": 2, "step": 0.1},
            "time_plan": {"interval": 86400, "loops": 2},
            "grid_plan": {"rows": 2, "columns": 2, "fov_width": 332.8, "fov_height": 332.8},
        }
    )
    assert plan_module.plan_warnings(fits, sim_profile) == []
