"""Guardrails at their edges: z travel, a clock that steps back, a refusal answered twice."""

from __future__ import annotations

from typing import Any

import pytest
import useq

from livescope.policy import Guardrails
from livescope.schema import AddEvents, ChangeInterval, HardwareProfile, Move, load_profile

PROFILE = load_profile("sim")
PLAN = useq.MDASequence(
    stage_positions=[(0, 0, 0)], channels=["DAPI"], time_plan={"interval": 60, "loops": 2}
)


def _rig(light_dose: dict[str, Any] | None = None, **guardrails: Any) -> HardwareProfile:
    return PROFILE.replace(
        guardrails={**PROFILE.guardrails.model_dump(), **guardrails},
        light_dose={**PROFILE.light_dose.model_dump(), **(light_dose or {})},
    )


def _closeup(frames: int, z_um: float = 0.0) -> AddEvents:
    ev = useq.MDAEvent(channel={"config": "BF"}, x_pos=0.0, y_pos=0.0, z_pos=z_um,
                       pos_name="p0~r-0")  # fmt: skip
    events = tuple(ev.model_copy(update={"min_start_time": float(k)}) for k in range(frames))
    return AddEvents(run_id="r1", events=events)


_Z_LO, _Z_HI = PROFILE.stages.z.z_range_um


@pytest.mark.parametrize(
    "decision",
    [
        pytest.param(Move(run_id="r1", position="p0", x_um=0, y_um=0, z_um=_Z_HI + 1), id="move"),
        pytest.param(
            Move(run_id="r1", position="p0", x_um=0, y_um=0, z_um=_Z_LO - 1), id="move-below"
        ),
        pytest.param(_closeup(1, z_um=_Z_HI + 1), id="close-up"),
    ],
)
def test_a_z_outside_the_focus_travel_is_refused_naming_the_axis_and_limit(
    decision: Move | AddEvents,
) -> None:
    # (not a bug found: `HardwareProfile.check_stage_travel` checks z where x/y are; kept
    # so that a z check dropped from either path is caught)
    why = str(Guardrails(PROFILE, PLAN).check(decision, 0.0))
    assert why.startswith("stage: ")
    assert " z = " in why
    assert f"[{_Z_LO:g}, {_Z_HI:g}] µm (hardware profile: stages.z.z_range_um)" in why
    # at the limit, it passes
    at = (
        decision.model_copy(update={"z_um": _Z_HI})
        if isinstance(decision, Move)
        else _closeup(1, _Z_HI)
    )
    assert Guardrails(PROFILE, PLAN).check(at, 0.0) is None


def test_a_clock_stepping_back_counts_what_was_sent_as_just_sent_not_for_ever() -> None:
    # a replay restarted (or a worker restarted reading older fields) goes from sample
    # time 1000 s back to 0 s: the decisions stamped 1000 s were counted as in the last
    # minute until the clock reached 1060 s again, refusing every decision for 1000 s
    g = Guardrails(_rig(max_decisions_per_min=2), PLAN)
    change = ChangeInterval(run_id="r1", interval_s=60)
    for t in (1000.0, 1001.0):
        assert g.check(change, t) is None
        g.commit(change, t)
    # just after the step back they still count (never a budget turned off) ...
    assert "rate: 2 decisions in the last minute" in str(g.check(change, 0.0))
    assert "rate: 2 decisions" in str(g.check(change, 30.0))
    # ... for a minute of the clock as it now runs, and no longer
    assert g.check(change, 60.0) is None
    g.commit(change, 60.0)
    # and the window counts on from there as before
    g.commit(change, 61.0)
    assert "rate: 2 decisions" in str(g.check(change, 62.0))
    assert g.check(change, 121.0) is None


def test_a_clock_stepping_back_at_commit_does_not_keep_later_stamps() -> None:
    # the step back seen first by `commit` (the agent commits at its own clock)
    g = Guardrails(_rig(max_decisions_per_min=2), PLAN)
    change = ChangeInterval(run_id="r1", interval_s=60)
    g.commit(change, 5000.0)
    g.commit(change, 10.0)
    assert "rate: 2 decisions" in str(g.check(change, 11.0))
    assert g.check(change, 71.0) is None
    g.commit(change, 71.0)
    # only the one at 71 s is in the last minute: the one stamped 5000 s was sent at 10 s
    assert g.check(change, 72.0) is None


def test_a_refusal_given_back_twice_gives_back_its_frames_and_rate_once() -> None:
    g = Guardrails(_rig({"max_extra_frames_per_run": 3}, max_decisions_per_min=2), PLAN)
    a, b = _closeup(2), _closeup(1)
    for d in (a, b):
        assert g.check(d, 5.0) is None
        g.commit(d, 5.0)
    g.release(a, 5.0)
    g.release(a, 5.0)  # (its answer seen twice: late, and on the worker's restart)
    assert g.extra_frames == 1  # b's
    assert g.sent_at == [5.0]  # b's place in the rate
    assert "frame budget: 3 more frames would make 4" in str(g.check(_closeup(3), 5.0))
    c = _closeup(1)
    g.commit(c, 5.0)
    assert "rate: 2 decisions" in str(g.check(_closeup(1), 6.0))
    # a decision committed again after it was given back is given back again
    g.commit(a, 6.0)
    g.release(a, 6.0)
    assert g.extra_frames == 2
    assert g.usage()["extra_frames"] == 2


def test_a_refused_move_given_back_twice_leaves_the_moves_booked_after_it() -> None:
    g = Guardrails(PROFILE, PLAN)
    first = Move(run_id="r1", position="p0", x_um=10, y_um=0)
    second = Move(run_id="r1", position="p0", x_um=20, y_um=0)
    for d in (first, second):
        assert g.check(d, 1.0) is None
        g.commit(d, 1.0)
    g.release(first, 1.0)
    g.release(first, 1.0)
    assert g.sent_at == [1.0]
    assert g.state()["moves"] == {"p0": [[second.decision_id, 20.0, 0.0]]}
