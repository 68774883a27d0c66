"""Plans useq expands otherwise than written, taken in silence (review s64).

Each test failed before its fix.

An ``axis_order`` without a plan part's letter drops that part; a position's own
time plan ran backwards or gave no frames; random points without a seed moved
at each load; an absolute grid (``GridFromEdges``) drew every position's tiles
on one spot.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import useq

from livescope.schema import HardwareProfile, PlanError, check_plan, load_plan

_FOV = "fov_width: 332.8, fov_height: 332.8"
_PLAN = f"""\
channels:
  - {{config: Phase, exposure: 20}}
  - {{config: DAPI, exposure: 50}}
time_plan: {{interval: 60, loops: 3}}
stage_positions: [{{x: 0, y: 0, z: 0, name: A}}, {{x: 500, y: 0, z: 0, name: B}}]
z_plan: {{range: 4, step: 2}}
grid_plan: {{rows: 1, columns: 2, {_FOV}}}
"""


def _problems(tmp_path: Path, text: str, *, useq_warns: bool = False) -> list[str]:
    (f := tmp_path / "plan.yaml").write_text(text)
    with warnings.catch_warnings():
        if useq_warns:  # (its own word, beside livescope's refusal: not an error here)
            warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(PlanError) as info:
            load_plan(f)
    assert str(f) in str(info.value)  # (the file is named)
    return info.value.problems


def _checked(seq: useq.MDASequence, profile: HardwareProfile) -> list[str]:
    with pytest.raises(PlanError) as info:
        check_plan(seq, profile)
    return info.value.problems


@pytest.mark.parametrize(
    ("order", "part", "letter"),
    [("tpcz", "grid_plan", "g"), ("pgcz", "time_plan", "t"), ("tpgc", "z_plan", "z"),
     ("tgcz", "stage_positions", "p"), ("tpgz", "channels", "c")],
)  # fmt: skip
def test_an_axis_order_without_a_plan_part_s_letter_is_refused(
    tmp_path: Path, order: str, part: str, letter: str
) -> None:
    # (accepted: useq expands only the axes axis_order names, so `tpcz` gave no tiles and
    # `tc` imaged wherever the stage was, its positions never checked against the travel)
    problems = _problems(tmp_path, _PLAN + f"axis_order: {order}\n")
    assert problems == [
        f"axis_order: {order!r} leaves out {letter!r}, so useq would drop the plan's {part} "
        f"(it expands only the axes axis_order names); add {letter!r} to axis_order "
        "(e.g. 'tpgcz')"
    ]


def test_an_axis_order_with_every_letter_passes(
    tmp_path: Path, sim_profile: HardwareProfile
) -> None:
    (f := tmp_path / "plan.yaml").write_text(_PLAN + "axis_order: tpgcz\n")
    check_plan(load_plan(f), sim_profile)
    # (a letter without a plan part is no problem: nothing to drop)
    (f := tmp_path / "lean.yaml").write_text(
        "channels: [DAPI]\nstage_positions: [{x: 0, y: 0, z: 0}]\naxis_order: tpc\n"
    )
    check_plan(load_plan(f), sim_profile)


def test_a_position_s_own_axis_order_is_checked_on_its_own(tmp_path: Path) -> None:
    # (a sub-sequence iterates its own plans in its own axis_order, tpgcz unless given: the
    # plan's order does not reach it, and with `tp` its channels and z-stack gave no events)
    text = (
        "channels: [DAPI]\naxis_order: tpc\nstage_positions:\n"
        "  - {x: 0, y: 0, z: 0, name: A, sequence: "
        "{axis_order: tp, channels: [Phase], z_plan: {range: 4, step: 2}}}\n"
    )
    assert _problems(tmp_path, text) == [
        f"stage_positions.0.sequence.axis_order: 'tp' leaves out {letter!r}, so useq would "
        f"drop the position's {part} (it expands only the axes axis_order names); add "
        f"{letter!r} to stage_positions.0.sequence.axis_order (e.g. 'tpgcz')"
        for part, letter in (("channels", "c"), ("z_plan", "z"))
    ]
    # (its z plan under the plan's `tpc`: its own default order takes z)
    (f := tmp_path / "ok.yaml").write_text(
        "channels: [DAPI]\naxis_order: tpc\nstage_positions:\n"
        "  - {x: 0, y: 0, z: 0, name: A, sequence: {z_plan: {range: 4, step: 2}}}\n"
    )
    load_plan(f)


@pytest.mark.parametrize(
    ("time_plan", "expected"),
    [
        ("{interval: -10, loops: 3}",
         "stage_positions.0.sequence.time_plan.interval: -10 s; time only runs forward "
         "(give a value >= 0)"),
        ("{interval: 10, duration: -30}",
         "stage_positions.0.sequence.time_plan.duration: -30 s; time only runs forward "
         "(give a value >= 0)"),
        ("{phases: [{interval: 10, loops: 3}, {interval: -5, loops: 3}]}",
         "stage_positions.0.sequence.time_plan.phases.1.interval: -5 s; time only runs "
         "forward (give a value >= 0)"),
    ],
)  # fmt: skip
def test_a_negative_time_step_in_a_position_s_own_time_plan_is_refused(
    tmp_path: Path, sim_profile: HardwareProfile, time_plan: str, expected: str
) -> None:
    # (accepted: events came due at 0, -10, -20 s and ran in reverse; a duration of -30 gave
    # no events at all and a "valid" plan of 0 frames)
    (f := tmp_path / "plan.yaml").write_text(
        "channels: [DAPI]\nstage_positions:\n"
        f"  - {{x: 0, y: 0, z: 0, name: A, sequence: {{time_plan: {time_plan}}}}}\n"
    )
    assert expected in _checked(load_plan(f), sim_profile)


def test_a_plan_of_no_frames_is_refused(sim_profile: HardwareProfile) -> None:
    # (a position's own time plan of no time points: the plan passed, "valid", with 0 frames)
    seq = useq.MDASequence(
        channels=["DAPI"],
        stage_positions=[
            useq.Position(x=0, y=0, z=0, name="A",
                          sequence=useq.MDASequence(time_plan={"interval": 10, "duration": -30}))
        ],
    )  # fmt: skip
    problems = _checked(seq, sim_profile)
    assert (
        "the plan gives no frames: stage_positions.0.sequence.time_plan gives no time points"
        in problems
    ), problems


_RANDOM = "{num_points: 2, max_width: 800, max_height: 800, " + _FOV


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("grid_plan",
         f"stage_positions: [{{x: 0, y: 0, z: 0}}]\ngrid_plan: {_RANDOM}}}\n"),
        ("stage_positions.0.sequence.grid_plan",
         f"stage_positions:\n  - {{x: 0, y: 0, z: 0, sequence: {{grid_plan: {_RANDOM}}}}}}}\n"),
        ("stage_positions.well_points_plan",
         "stage_positions: {plate: 96-well, a1_center_xy: [0, 0], selected_wells: [[0], [0]], "
         f"well_points_plan: {_RANDOM}}}}}\n"),
    ],
)  # fmt: skip
def test_random_points_without_a_seed_are_refused(tmp_path: Path, where: str, text: str) -> None:
    # (accepted: useq drew other points at each load, so `plan check` passed or failed at
    # random, and the run imaged other points than were checked)
    assert _problems(tmp_path, "channels: [DAPI]\n" + text) == [
        f"{where}: random points without random_seed are drawn anew each time the plan is "
        "read, so the run (and its copy of the plan) would image other points than were "
        "checked; add `random_seed: <n>` (any whole number) to it"
    ]
    seeded = text.replace("num_points: 2", "num_points: 2, random_seed: 7")
    (f := tmp_path / "seeded.yaml").write_text("channels: [DAPI]\n" + seeded)
    first, again = (
        [(e.x_pos, e.y_pos) for e in load_plan(f)] for _ in range(2)
    )  # (the same points at each load)
    assert first == again


def test_an_absolute_grid_with_positions_at_x_y_is_refused(tmp_path: Path) -> None:
    # (accepted: useq ignores the positions' x/y under a GridFromEdges, so both wells imaged
    # the same tiles, and each copy's light was booked)
    text = (
        "channels: [DAPI]\nstage_positions:\n"
        "  - {x: -800, y: 0, z: 0, name: wellA}\n  - {x: 800, y: 0, z: 0, name: wellB}\n"
        f"grid_plan: {{top: 300, bottom: -300, left: -300, right: 300, {_FOV}}}\n"
    )
    assert _problems(tmp_path, text, useq_warns=True) == [
        "stage_positions.0 (wellA), stage_positions.1 (wellB): x/y are ignored under "
        "grid_plan, a GridFromEdges (top, left, bottom and right are stage coordinates), so "
        "every position would image the same tiles; give one position without x/y, or a "
        "relative grid (rows and columns, or width and height) around each position"
    ]
    # one position with x/y: its x/y are ignored as silently
    one = text.replace("  - {x: 800, y: 0, z: 0, name: wellB}\n", "")
    assert _problems(tmp_path, one, useq_warns=True)[0].startswith(
        "stage_positions.0 (wellA): x/y are ignored under grid_plan"
    )
    # a position's own absolute grid: its x/y go unused as well
    own = (
        "channels: [DAPI]\nstage_positions:\n  - {x: 800, y: 0, z: 0, name: wellB, sequence: "
        f"{{grid_plan: {{top: 300, bottom: -300, left: -300, right: 300, {_FOV}}}}}}}\n"
    )
    assert _problems(tmp_path, own, useq_warns=True) == [
        "stage_positions.0 (wellB): x/y are ignored under its sequence.grid_plan, a "
        "GridFromEdges (top, left, bottom and right are stage coordinates), which images its "
        "own tiles, not around the position; leave out the position's x/y, or give a relative "
        "grid (rows and columns, or width and height) around it"
    ]


def test_an_absolute_grid_with_several_positions_is_refused(
    tmp_path: Path, sim_profile: HardwareProfile
) -> None:
    grid = useq.GridFromEdges(top=300, bottom=-300, left=-300, right=300,
                              fov_width=332.8, fov_height=332.8)  # fmt: skip
    with pytest.warns(UserWarning, match="Global grid plan will override"):  # (useq's own)
        seq = useq.MDASequence(
            channels=["DAPI"], grid_plan=grid,
            stage_positions=[useq.Position(z=0, name="A"), useq.Position(z=10, name="B")],
        )  # fmt: skip
    assert _checked(seq, sim_profile)[0] == (
        "grid_plan: a GridFromEdges (top, left, bottom and right are stage coordinates) gives "
        "every position the same tiles, and the plan has 2 (stage_positions.0 (A), "
        "stage_positions.1 (B)); give one position without x/y, or a relative grid (rows and "
        "columns, or width and height) around each position"
    )
    # one position without x/y, or none: the grid's own tiles
    for positions in ((useq.Position(z=0, name="A"),), ()):
        check_plan(seq.model_copy(update={"stage_positions": positions}), sim_profile)
    (f := tmp_path / "plan.yaml").write_text(
        f"channels: [DAPI]\nstage_positions: [{{z: 0}}]\ngrid_plan: {{top: 300, bottom: -300, "
        f"left: -300, right: 300, {_FOV}}}\n"
    )
    check_plan(load_plan(f), sim_profile)
