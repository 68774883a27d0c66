"""``livescope plan check`` review: time points as the agent's queue runs them (`plan_figures`)."""

from __future__ import annotations

import itertools

import pytest
import useq

from livescope.schema import HardwareProfile, check_plan, load_profile, plan_figures


def _frame_s(prof: HardwareProfile, exposure_ms: float) -> float:
    return exposure_ms / 1000 + 1 / prof.camera.max_fps


def test_positions_with_time_plans_of_their_own_run_side_by_side_as_the_queue_runs_them() -> None:
    # useq gives A's whole time-lapse, then B's with its event timer reset; the agent's queue
    # hands events over by when they are due from the run's start (`EventFeed`): A t0, B t0,
    # A t1, B t1, ... (not one position after the other, twice as long)
    prof = load_profile("sim")
    own = {"time_plan": {"interval": 60, "loops": 3}}
    seq = useq.MDASequence(
        channels=[{"config": "Phase", "exposure": 50}],
        stage_positions=[
            {"x": 0, "y": 0, "name": "A", "sequence": own},
            {"x": 1000, "y": 0, "name": "B", "sequence": own},
        ],
    )
    check_plan(seq, prof)
    f = plan_figures(seq, prof)
    move = 1000 / prof.stages.xy.max_speed_um_s
    later = 2 * _frame_s(prof, 50) + 2 * move  # back to A, A's frame, over to B, B's frame
    assert (f["frames"], f["time_points"]) == (6, 3)
    assert f["planned_duration_s"] == 120
    assert f["shortest_interval_s"] == 60
    assert f["time_point_s"] == pytest.approx(later, abs=1e-3)
    assert f["estimated_duration_s"] == pytest.approx(120 + later, abs=1e-3)
    assert f["late_s"] == 0


def test_a_position_without_a_time_plan_is_imaged_with_the_first_time_point() -> None:
    prof = load_profile("sim")
    own = {"time_plan": {"interval": 10, "loops": 3}}
    seq = useq.MDASequence(
        channels=[{"config": "Phase", "exposure": 50}],
        stage_positions=[
            {"x": 0, "y": 0, "name": "A"},
            {"x": 1000, "y": 0, "name": "B", "sequence": own},
        ],
    )
    check_plan(seq, prof)
    f = plan_figures(seq, prof)
    move = 1000 / prof.stages.xy.max_speed_um_s
    first = 2 * _frame_s(prof, 50) + move
    # B's later time points are due 10 and 20 s after the run's start, not after A's frame
    assert f["planned_duration_s"] == 20
    assert f["time_point_s"] == pytest.approx(first, abs=1e-3)
    assert f["time_point"] == 0
    assert f["estimated_duration_s"] == pytest.approx(20 + _frame_s(prof, 50), abs=1e-3)


@pytest.mark.parametrize("loops", [3, 5])
def test_interval_0_time_points_are_time_points_of_their_own(loops: int) -> None:
    # (as fast as it can: each takes its frames and moves; none is late, the plan asks for no
    # wait)
    prof = load_profile("sim")
    seq = useq.MDASequence(
        time_plan={"interval": 0, "loops": loops},
        channels=[{"config": "Phase", "exposure": 50}, {"config": "DAPI", "exposure": 100}],
        stage_positions=[{"x": 0, "y": 0, "name": "A"}, {"x": 1000, "y": 0, "name": "B"}],
    )
    check_plan(seq, prof)
    f = plan_figures(seq, prof)
    move = 1000 / prof.stages.xy.max_speed_um_s
    frames = 2 * (_frame_s(prof, 50) + _frame_s(prof, 100))
    assert f["time_points"] == loops
    assert f["time_point_s"] == pytest.approx(frames + 2 * move, abs=1e-3)
    assert f["time_point"] >= 1
    assert f["shortest_interval_s"] == 0
    assert f["planned_duration_s"] == 0
    assert f["estimated_duration_s"] == pytest.approx(loops * (frames + 2 * move) - move, abs=1e-3)
    assert f["late_s"] == 0
    assert f["warnings"] == []


def test_a_burst_phase_then_a_slow_phase_is_late_after_the_burst() -> None:
    # phases: 4 time points as fast as they can, then every 0.1 s: the first of the second
    # phase is due at useq's time for it, once the burst has run
    prof = load_profile("sim")
    seq = useq.MDASequence(
        time_plan={"phases": [{"interval": 0, "loops": 4}, {"interval": 0.1, "loops": 2}]},
        channels=[{"config": "DAPI", "exposure": 1000}],
    )
    check_plan(seq, prof)
    f = plan_figures(seq, prof)
    dues = [float(e.min_start_time or 0) for e in seq]
    span = _frame_s(prof, 1000)
    assert f["time_point_s"] == pytest.approx(span, abs=1e-3)
    assert f["shortest_interval_s"] == 0
    # time point k starts when the k before it are done, or when due if that is later
    start = 0.0
    late = 0.0
    for k, due in enumerate(dues):
        if k and due > dues[k - 1]:
            late = max(late, start - due)
        start = max(start, due) + span
    assert f["late_s"] == pytest.approx(late, abs=1e-3)
    assert late > 1
    assert f["estimated_duration_s"] == pytest.approx(start, abs=1e-3)


def test_no_focus_move_is_counted_between_a_position_with_z_and_one_at_the_focus() -> None:
    # B has no z and the z plan is relative: the agent centres its stack on where the focus
    # drive is when the run starts, unknown here; a lower bound counts no move to or from it
    # (its planes' z, -2..2 µm, are not where it is imaged), only the steps within each stack
    prof = load_profile("sim")
    seq = useq.MDASequence(
        time_plan={"interval": 60, "loops": 2},
        channels=[{"config": "Phase", "exposure": 50}],
        z_plan={"range": 4, "step": 2},
        stage_positions=[{"x": 0, "y": 0, "z": 150, "name": "A"}, {"x": 10, "y": 0, "name": "B"}],
    )
    check_plan(seq, prof)
    f = plan_figures(seq, prof)
    xy_s = 10 / prof.stages.xy.max_speed_um_s
    step_s = 2 / prof.stages.z.max_speed_um_s
    later = 6 * _frame_s(prof, 50) + 2 * xy_s + 4 * step_s  # back to A, 3 planes, to B, 3 planes
    assert f["time_point_s"] == pytest.approx(later, abs=1e-3)


def test_the_late_warning_names_the_interval_the_plan_waits_for_not_a_bursts_0() -> None:
    prof = load_profile("sim")
    seq = useq.MDASequence(
        time_plan={"phases": [{"interval": 0, "loops": 4}, {"interval": 0.1, "loops": 2}]},
        channels=[{"config": "DAPI", "exposure": 1000}],
    )
    f = plan_figures(seq, prof)
    dues = sorted({float(e.min_start_time or 0) for e in seq})
    waited = min(b - a for a, b in itertools.pairwise(dues) if b > a)
    (warning,) = f["warnings"]
    assert f"the shortest interval is {waited:g} s" in warning
