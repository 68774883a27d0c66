from __future__ import annotations

from pathlib import Path

import pytest
import useq

from livescope.schema import (
    HardwareProfile,
    PlanError,
    check_plan,
    load_plan,
    load_profile,
    plan_events,
    planned_light_s,
)
from livescope.schema._plan import MAX_PLAN_EVENTS, _event_count, folder_name_problem


def _plan(**kw: object) -> useq.MDASequence:
    base: dict = {
        "stage_positions": [{"x": 0, "y": 0, "z": 0}],
        "channels": [{"config": "DAPI", "exposure": 50}],
        "time_plan": {"interval": 1, "loops": 2},
    }
    base.update(kw)
    return useq.MDASequence.model_validate(base)


def test_good_plan_passes(sim_profile: HardwareProfile) -> None:
    check_plan(_plan(), sim_profile)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        pytest.param(
            {"channels": [{"config": "Cy5"}]},
            "unknown channel 'Cy5' in group 'Channel'; this profile has: Phase, DAPI",
            id="unknown-channel",
        ),
        pytest.param(
            {"channels": [{"config": "DAPI", "group": "Filters"}]},
            "config group 'Filters'",
            id="wrong-group",
        ),
        pytest.param(
            {"stage_positions": [{"x": 5000, "y": 0, "name": "far"}]},
            "x = 5000 µm is outside the stage travel [-1400, 1400] µm (stages.xy.x_range_um)",
            id="xy-outside",
        ),
        pytest.param(
            {"stage_positions": [{"x": 0, "y": 0, "z": 0}], "z_plan": {"range": 1000, "step": 100}},
            "stages.z.z_range_um",
            id="z-stack-outside",
        ),
        pytest.param(
            {"channels": [{"config": "Phase", "exposure": 900}]},
            "outside channel 'Phase' limits",
            id="exposure-limits",
        ),
        pytest.param(
            {"channels": [{"config": "DAPI", "exposure": 1500}]},
            "light_dose.max_exposure_ms_per_frame",
            id="light-dose",
        ),
        pytest.param(
            {
                "channels": [
                    {"config": "Phase", "exposure": 20},
                    {"config": "Phase", "exposure": 50},
                ]
            },
            "channels.1.config: channel 'Phase' is already channels.0",
            id="channel-twice",
        ),
        pytest.param(  # a position's own channels are checked as the plan's are
            {
                "stage_positions": [
                    {
                        "x": 0,
                        "y": 0,
                        "sequence": {"channels": [{"config": "DAPI", "exposure": 3000}]},
                    }
                ]
            },
            "stage_positions.0.sequence.channels.0.exposure: 3000.0 ms is outside channel "
            "'DAPI' limits",
            id="position-channel-exposure",
        ),
        pytest.param(
            {"stage_positions": [{"x": 0, "y": 0, "sequence": {"channels": [{"config": "GFP"}]}}]},
            "stage_positions.0.sequence.channels.0.config: unknown channel 'GFP'",
            id="position-channel-unknown",
        ),
        pytest.param(
            {"stage_positions": [{"x": 0, "y": 0, "name": "A"}, {"x": 400, "y": 0, "name": "A"}]},
            "stage_positions.1: position name 'A' is also stage_positions.0's",
            id="position-name-twice",
        ),
        pytest.param(  # the second, unnamed, is called p1 too
            {"stage_positions": [{"x": 0, "y": 0, "name": "p1"}, {"x": 400, "y": 0}]},
            "stage_positions.1: position name 'p1' is also stage_positions.0's",
            id="position-named-as-another-unnamed",
        ),
        pytest.param(
            {"channels": []},
            "channels: the plan has no channels; give at least one of: Phase, DAPI",
            id="no-channels",
        ),
        pytest.param(
            {"time_plan": {"interval": -60, "loops": 2}},
            "time_plan.interval: -60 s; time only runs forward",
            id="negative-interval",
        ),
        pytest.param(
            {"time_plan": {"phases": [{"interval": 1, "loops": 2}, {"duration": -5, "loops": 2}]}},
            "time_plan.phases.1.duration: -5 s",
            id="negative-phase",
        ),
        pytest.param(
            {"grid_plan": {"rows": 2, "columns": 2}},
            "grid_plan: give fov_width and fov_height (µm): without them useq places the tiles "
            "1 µm apart; this profile's field of view is 332.8 x 332.8 µm",
            id="grid-without-fov",
        ),
        pytest.param(
            {
                "stage_positions": [
                    {"x": 0, "y": 0, "sequence": {"grid_plan": {"rows": 1, "columns": 2}}}
                ]
            },
            "stage_positions.0.sequence.grid_plan: give fov_width and fov_height",
            id="position-grid-without-fov",
        ),
        pytest.param(  # (its frames overwrote each other in the recording)
            {
                "time_plan": {"interval": 600, "loops": 2},
                "stage_positions": [
                    {
                        "x": 0,
                        "y": 0,
                        "name": "A",
                        "sequence": {"time_plan": {"interval": 1, "loops": 3}},
                    }
                ],
            },
            "stage_positions.0 (A): t=0, channel 'DAPI', z=0 is planned twice",
            id="position-time-plan-inside-the-plans",
        ),
    ],
)
def test_bad_plan_names_problem(sim_profile: HardwareProfile, kw: dict, expected: str) -> None:
    with pytest.raises(PlanError) as info:
        check_plan(_plan(**kw), sim_profile)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_load_plan_reports_field(tmp_path: Path) -> None:
    f = tmp_path / "plan.yaml"
    f.write_text("channels:\n  - {config: DAPI, exposure: -3}\nbogus: 1\n")
    with pytest.raises(PlanError) as info:
        load_plan(f)
    text = "\n".join(info.value.problems)
    assert "bogus: unknown field" in text
    f.write_text("channels:\n  - {config: Phase, exposure: 5}\n  - {config: DAPI, exposure: -3}\n")
    with pytest.raises(PlanError) as info:
        load_plan(f)
    # (useq's validator leaves the index out of the path: put back from the file)
    assert info.value.problems == ["channels.1.exposure: Input should be greater than 0 (got -3)"]


def test_a_time_plan_error_names_the_kind_of_plan_written(
    tmp_path: Path, sim_profile: HardwareProfile
) -> None:
    """pydantic reports every kind of time plan useq knows; the one meant is the one whose
    fields were written (a list of five problems, four about fields never written, was)."""
    f = tmp_path / "plan.yaml"
    f.write_text("channels: [{config: DAPI}]\ntime_plan: {interval: 2, loops: three}\n")
    with pytest.raises(PlanError) as info:
        load_plan(f)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("time_plan.loops: Input should be a valid integer")
    # the same inside a multi-phase plan (the phases' own kinds settled first)
    f.write_text(
        "channels: [{config: DAPI}]\n"
        "time_plan: {phases: [{interval: 2, loops: three}, {interval: 5, loops: 4}]}\n"
    )
    with pytest.raises(PlanError) as info:
        load_plan(f)
    assert [p.split(":")[0] for p in info.value.problems] == ["time_plan.phases.0.loops"]
    # a negative interval: not also a negative duration the user never wrote
    with pytest.raises(PlanError) as info:
        check_plan(_plan(time_plan={"interval": -5, "loops": 3}), sim_profile)
    assert [p for p in info.value.problems if p.startswith("time_plan")] == [
        "time_plan.interval: -5 s; time only runs forward (give a value >= 0)"
    ]


def test_misspelt_channel_field(tmp_path: Path) -> None:
    f = tmp_path / "plan.yaml"
    f.write_text("channels:\n  - {config: DAPI, exposur: 30}\n")
    with pytest.raises(PlanError, match=r"channels\.0\.exposur: unknown field"):
        load_plan(f)


def test_misspelt_time_plan_field_is_named_alone(tmp_path: Path) -> None:
    f = tmp_path / "plan.yaml"
    f.write_text("channels: [{config: DAPI}]\ntime_plan: {interval: 60, lops: 2}\n")
    with pytest.raises(PlanError) as info:
        load_plan(f)
    assert info.value.problems == [
        "time_plan.lops: unknown field (takes duration, interval, loops, phases, "
        "prioritize_duration)"
    ]  # not one error per kind of time plan useq would try


def test_policies_are_the_only_section_besides_the_sequence(tmp_path: Path) -> None:
    f = tmp_path / "plan.yaml"
    f.write_text("time_plan: {interval: 60, loops: 2}\npolicies: []\n")
    assert load_plan(f).time_plan is not None
    f.write_text("time_plan: {interval: 60, loops: 2}\nanalysis: {segmenter: other}\n")
    with pytest.raises(PlanError, match="analysis: unknown field"):  # not silently ignored
        load_plan(f)


def test_load_plan_roundtrip(tmp_path: Path, sim_profile: HardwareProfile) -> None:
    f = tmp_path / "plan.yaml"
    f.write_text(
        "stage_positions: [{x: 10, y: 20, z: 0}]\n"
        "channels: [{config: Phase, exposure: 10}]\n"
        "time_plan: {interval: 60, loops: 3}\n"
    )
    seq = load_plan(f)
    assert seq.sizes["t"] == 3
    check_plan(seq, sim_profile)


def test_a_plan_whose_own_light_passes_a_positions_budget_is_refused(
    sim_profile: HardwareProfile,
) -> None:
    # sim: 120 s of fluorescence per position; 1 s of DAPI at 121 time points is 121 s
    plan = _plan(
        stage_positions=[{"x": 0, "y": 0, "z": 0, "name": "A"}, {"x": 500, "y": 0, "z": 0}],
        channels=[{"config": "DAPI", "exposure": 1000}, {"config": "Phase", "exposure": 100}],
        time_plan={"interval": 1, "loops": 121},
    )
    with pytest.raises(PlanError) as err:
        check_plan(plan, sim_profile)
    limit = "light_dose.max_fluorescence_s_per_position = 120 s"
    assert err.value.problems == [
        f"light dose: position A gets 121.0 s of fluorescence from the plan alone; {limit} "
        "(shorter exposures, fluorescence at fewer time points, or a larger budget in the "
        "profile)",
        f"light dose: position p1 gets 121.0 s of fluorescence from the plan alone; {limit} "
        "(shorter exposures, fluorescence at fewer time points, or a larger budget in the "
        "profile)",
    ]
    # a replay's plan asks for light given long ago: not its budget's business
    check_plan(plan, sim_profile, light_budget=False)
    # the phase frames' light is no fluorescence; the budget itself is allowed
    check_plan(_plan(channels=[{"config": "DAPI", "exposure": 1000}],
                     time_plan={"interval": 1, "loops": 120}), sim_profile)  # fmt: skip
    # an exposure the plan leaves out counts at the channel's default
    default_ms = sim_profile.channels.get("DAPI").default_exposure_ms
    loops = int(120_000 / default_ms) + 1
    with pytest.raises(PlanError, match="light dose: position p0 gets"):
        check_plan(_plan(channels=[{"config": "DAPI"}],
                         time_plan={"interval": 1, "loops": loops}), sim_profile)  # fmt: skip


def test_a_per_channel_light_budget_is_checked_too(sim_profile: HardwareProfile) -> None:
    dose = sim_profile.light_dose.model_copy(update={"max_fluorescence_s_per_channel": 10.0})
    prof = sim_profile.model_copy(update={"light_dose": dose})
    plan = _plan(channels=[{"config": "DAPI", "exposure": 500}],
                 time_plan={"interval": 1, "loops": 21})  # fmt: skip
    with pytest.raises(PlanError, match=r"position p0, channel DAPI gets 10\.5 s of fluorescence"):
        check_plan(plan, prof)


def test_only_union_members_are_taken_out_of_an_error_path() -> None:
    """A mapping's keys (a channel's name) are the user's: kept, and every key's error too."""
    from pydantic import BaseModel, PositiveFloat, ValidationError

    from livescope.schema._base import format_validation_error

    class Budgets(BaseModel):
        seconds: dict[str, PositiveFloat]

    with pytest.raises(ValidationError) as info:
        Budgets.model_validate({"seconds": {"DAPI": -1, "Phase": "x", "GFP": 2}})
    problems = format_validation_error(info.value)
    assert [p.split(":")[0] for p in problems] == ["seconds.DAPI", "seconds.Phase"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("..", "position name '..' is not a folder name"),
        ("well/A1", "position name 'well/A1' contains '/'"),
        (".B.live", "starts with a dot"),  # the worker's staging folders are named so
        ("A1\n", "contains '\\n'"),
        # '~' names a position's close-ups (p0~rule-3): 'well~A1' was taken for a
        # close-up of 'well', booking its light there and stopped with it
        ("well~A1", "contains '~', which names the places decisions add"),
    ],
)
def test_a_position_name_that_cannot_name_its_results_folder_is_refused(
    sim_profile: HardwareProfile, name: str, expected: str
) -> None:
    # its results go to results/ctc/<name>: '..' wrote them into results/ itself,
    # 'well/A1' into a folder inside another, '.B.live' over B's on a resume
    positions = [{"x": 0, "y": 0, "name": "ok"}, {"x": 10, "y": 0, "name": name}]
    with pytest.raises(PlanError) as info:
        check_plan(_plan(stage_positions=positions), sim_profile)
    assert len(info.value.problems) == 1, info.value.problems
    assert info.value.problems[0].startswith("stage_positions.1: ")
    assert expected in info.value.problems[0]
    assert "rename the position" in info.value.problems[0]


@pytest.mark.parametrize("case_blind", [False, True])
def test_two_position_names_of_one_folder_are_refused_where_case_is_ignored(
    sim_profile: HardwareProfile, monkeypatch: pytest.MonkeyPatch, case_blind: bool
) -> None:
    import livescope.schema._plan as plan

    monkeypatch.setattr(plan, "CASE_BLIND", case_blind)  # Windows, macOS: A1 is a1
    positions = [{"x": 0, "y": 0, "name": "A1"}, {"x": 10, "y": 0, "name": "a1"}]
    if not case_blind:
        check_plan(_plan(stage_positions=positions), sim_profile)
        return
    with pytest.raises(PlanError) as info:
        check_plan(_plan(stage_positions=positions), sim_profile)
    assert info.value.problems == [
        "stage_positions.1: position names 'A1' and 'a1' name one folder here (this "
        "system's file names ignore case): rename one of them"
    ]


@pytest.mark.parametrize(
    ("name", "on_windows"),
    [
        ("A1", None),
        ("well A1 (left)", None),
        ("Pos:1", "contains ':', which Windows does not allow"),
        ('a<b>"c"?*|\\', "contains '\"', '*', '<', '>', '?', '\\\\', '|', which Windows"),
        ("A1.", "ends in a space or a dot"),
        ("A1 ", "ends in a space or a dot"),
        ("nul", "is a device name on Windows"),
        ("COM3.tif", "is a device name on Windows"),
        ("COM10", None),
    ],
)
def test_windows_folder_names_are_checked_on_windows_only(
    name: str, on_windows: str | None
) -> None:
    assert folder_name_problem(name, windows=False) is None  # all fine on Linux and macOS
    why = folder_name_problem(name, windows=True)
    if on_windows is None:
        assert why is None
    else:
        assert why is not None
        assert on_windows in why


def test_an_autofocus_plan_is_not_a_frame_planned_twice_and_gives_no_light(
    sim_profile: HardwareProfile,
) -> None:
    # useq puts an autofocus event before each image event, at the same place in the plan
    af = _plan(autofocus_plan={"autofocus_device_name": "Z", "axes": ["t"]})
    assert sum(not isinstance(e.action, useq.AcquireImage) for e in af) == 2
    check_plan(af, sim_profile, autofocus_device=True)  # (a simulated core has none)
    assert planned_light_s(af, sim_profile) == planned_light_s(_plan(), sim_profile)


def test_a_relative_z_plan_without_a_position_z_is_not_checked_around_zero() -> None:
    # the agent centres it on the focus drive when the run starts (and checks it then);
    # from z = 0 its planes were below a rig's travel [0, 10000] µm
    rig = load_profile("widefield-2048-scmos")
    plan = _plan(channels=[{"config": "Phase", "exposure": 10}],
                 stage_positions=[{"x": 0, "y": 0}], z_plan={"range": 4, "step": 2})  # fmt: skip
    assert [e.z_pos for e in plan][:3] == [-2.0, 0.0, 2.0]
    check_plan(plan, rig)
    placed = _plan(
        channels=[{"config": "Phase", "exposure": 10}],
        stage_positions=[{"x": 0, "y": 0, "z": 1}],
        z_plan={"range": 4, "step": 2},
    )
    with pytest.raises(PlanError, match="z = -1 µm is outside the stage travel"):
        check_plan(placed, rig)


@pytest.mark.parametrize(
    "kw",
    [
        {"time_plan": {"interval": 1, "loops": 10**10}},  # (useq's own sizes never return)
        {"time_plan": {"interval": 0.001, "duration": 10**7}},  # (ms written for s)
        # a position's own sequence counts: t=700 x 40x40 tiles of its own = 1,120,000
        {"time_plan": {"interval": 1, "loops": 700},
         "stage_positions": [{"x": 0, "y": 0, "sequence": {"grid_plan": {
             "rows": 40, "columns": 40, "fov_width": 10, "fov_height": 10}}}]},
    ],
)  # fmt: skip
def test_a_plan_of_more_events_than_a_run_can_expand_is_refused_unexpanded(
    sim_profile: HardwareProfile, kw: dict
) -> None:
    seq = useq.MDASequence(channels=["DAPI"], **kw)
    with pytest.raises(PlanError, match=rf"at least [\d,]+ events .*{MAX_PLAN_EVENTS:,}"):
        check_plan(seq, sim_profile)
    with pytest.raises(PlanError, match="time_plan's loops"):  # (a library caller's agent)
        plan_events(seq)


def test_a_plan_just_under_the_event_limit_is_counted_not_refused() -> None:
    # 2 positions x 500 time points x 2 channels x 5 planes = 10,000: the count is a lower bound
    seq = useq.MDASequence(
        channels=["DAPI", "Phase"], time_plan={"interval": 1, "loops": 500},
        z_plan={"range": 4, "step": 1}, stage_positions=[(0, 0, 0), (10, 10, 0)],
    )  # fmt: skip
    assert _event_count(seq) == len(plan_events(seq)) == 10_000
    nested = useq.MDASequence(
        channels=["DAPI", "Phase"], time_plan={"interval": 1, "loops": 4},
        stage_positions=[{"x": 0, "y": 0, "sequence": {"time_plan": {"interval": 1, "loops": 7},
                                                       "channels": ["DAPI"]}}, (5, 5, 0)],
    )  # fmt: skip
    assert _event_count(nested) <= len(plan_events(nested))
