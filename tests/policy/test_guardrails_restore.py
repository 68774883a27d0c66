"""Guardrails across a worker restart: a clock that is no number, give-backs, the rehearsal."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import useq

from livescope.policy import (
    REHEARSAL,
    Guardrails,
    PolicyEngine,
    Rule,
    rehearsal_closeup,
    rehearsal_field,
)
from livescope.schema import (
    AddEvents,
    ChangeInterval,
    HardwareProfile,
    StopPosition,
    StopRun,
    load_profile,
)

PROFILE = load_profile("sim")
PLAN = [useq.MDAEvent(channel={"config": "DAPI"}, x_pos=0.0, y_pos=0.0, z_pos=0.0, pos_name="p0")]
CLOSEUP = {"acquire": {"channels": ["Phase", "DAPI"], "loops": 3, "interval_s": 30}}


def _rig(**guardrails: Any) -> HardwareProfile:
    return PROFILE.replace(guardrails={**PROFILE.guardrails.model_dump(), **guardrails})


def _closeup(frames: int) -> AddEvents:
    ev = useq.MDAEvent(channel={"config": "BF"}, x_pos=0.0, y_pos=0.0, z_pos=0.0,
                       pos_name="p0~r-0")  # fmt: skip
    events = tuple(ev.model_copy(update={"min_start_time": float(k)}) for k in range(frames))
    return AddEvents(run_id="r1", events=events)


def _restarted(g: Guardrails, state: dict[str, Any] | None = None) -> Guardrails:
    """A new worker's guardrails, resumed from ``g``'s state as written to disk."""
    again = Guardrails(g.profile, PLAN)
    again.restore(json.loads(json.dumps(g.state() if state is None else state)))
    return again


_NOT_A_TIME = [
    pytest.param(math.nan, id="nan"),
    pytest.param(math.inf, id="inf"),
    pytest.param(-math.inf, id="-inf"),
]


@pytest.mark.parametrize("now_s", _NOT_A_TIME)
def test_a_decision_checked_at_a_time_that_is_no_number_is_refused(now_s: float) -> None:
    # NaN passes no comparison: the rate check was off for the call (and a commit at that
    # time cleared the window)
    g = Guardrails(_rig(max_decisions_per_min=1), PLAN)
    change = ChangeInterval(run_id="r1", interval_s=60)
    g.commit(change, 10.0)
    books = g.state()
    why = g.check(change, now_s)
    assert why is not None
    assert why.startswith("time: ")
    assert f"run time {now_s:g} s" in why
    assert g.state() == books
    # a new decision is refused the same way, not only one over the rate
    assert str(Guardrails(PROFILE, PLAN).check(_closeup(1), now_s)).startswith("time: ")
    # a stop is not: it only saves light, and books nothing
    assert g.check(StopPosition(run_id="r1", position="p0"), now_s) is None
    assert g.check(StopRun(run_id="r1"), now_s) is None


@pytest.mark.parametrize("now_s", _NOT_A_TIME)
def test_booking_at_a_time_that_is_no_number_raises_and_leaves_the_books(now_s: float) -> None:
    g = Guardrails(_rig(max_decisions_per_min=2), PLAN)
    change, closeup = ChangeInterval(run_id="r1", interval_s=60), _closeup(2)
    for d in (change, closeup):
        g.commit(d, 10.0)
    books = g.state()
    for book in (g.commit, g.release):
        with pytest.raises(ValueError, match=r"now_s = (nan|inf|-inf) s is not a finite run time"):
            book(closeup, now_s)
        assert g.state() == books
    # the window still counts both decisions
    assert "rate: 2 decisions" in str(g.check(change, 11.0))
    # a stop books nothing at any time (its answer is never refused for the clock)
    stop = StopPosition(run_id="r1", position="p0")
    g.commit(stop, now_s)
    g.release(stop, now_s)
    assert {**g.state(), "released": []} == books  # (the stop noted as given back)


def test_a_give_back_repeated_after_a_restart_gives_back_once() -> None:
    g = Guardrails(_rig(max_decisions_per_min=2), PLAN)
    a, b = _closeup(2), _closeup(1)
    for d in (a, b):
        assert g.check(d, 5.0) is None
        g.commit(d, 5.0)
    g.release(a, 5.0)
    again = _restarted(g)
    again.release(a, 5.0)  # (its refusal read again by the restarted worker)
    assert again.extra_frames == 1  # b's
    assert again.sent_at == [5.0]  # b's place in the rate
    # a decision committed again after the restart is given back again
    again.commit(a, 6.0)
    again.release(a, 6.0)
    assert (again.extra_frames, again.sent_at) == (1, [5.0])


def test_a_clock_step_back_seen_before_a_restart_is_kept() -> None:
    g = Guardrails(_rig(max_decisions_per_min=2), PLAN)
    change = ChangeInterval(run_id="r1", interval_s=60)
    for t in (1000.0, 1001.0):
        g.commit(change, t)
    assert "rate: 2 decisions" in str(g.check(change, 0.0))  # the clock stepped back at 0 s
    again = _restarted(g)
    # the window from the step is over at 60 s, restarted or not
    for guards in (g, again):
        assert "rate: 2 decisions" in str(guards.check(change, 30.0))
        assert guards.check(change, 60.0) is None


def test_a_state_saved_before_give_backs_and_steps_were_kept_restores() -> None:
    g = Guardrails(_rig(max_decisions_per_min=2), PLAN)
    a = _closeup(2)
    g.commit(a, 5.0)
    g.release(a, 5.0)
    old = {k: v for k, v in g.state().items() if k not in ("released", "back_s")}
    again = _restarted(g, old)
    assert (again.extra_frames, again.sent_at) == (0, [])
    assert again.check(a, 5.0) is None


def test_rehearsing_after_a_restore_leaves_the_guardrails_as_they_were() -> None:
    # the worker restores the guardrails, then rehearses its rules at sample time 0: the
    # rehearsal's check took 0 s for a clock stepped back, so a restarted worker on fields
    # at 100 s counted the decision stamped 200 s as sent 100 s ago, and let more through
    rig = _rig(max_decisions_per_min=1)
    change = ChangeInterval(run_id="r1", interval_s=60)
    saved = PolicyEngine([Rule("closeup", {"mitosis": {"frames": 1}}, CLOSEUP)], rig, PLAN)
    saved.guardrails.commit(change, 200.0)
    engine = PolicyEngine([Rule("closeup", {"mitosis": {"frames": 1}}, CLOSEUP)], rig, PLAN)
    engine.restore(json.loads(json.dumps(saved.state())))
    books = engine.guardrails.state()
    field = rehearsal_field(PLAN[0], rig, REHEARSAL)
    assert engine.rehearse(field) == 1
    assert engine.guardrails.state() == books  # sent_at, back_s and every budget
    assert "rate: 1 decisions" in str(engine.guardrails.check(change, 100.0))
    # the agent's rehearsal (not rate-checked) neither
    g = _restarted(saved.guardrails)
    g.check(rehearsal_closeup(rehearsal_field(PLAN[0], rig, "r1"), rig), 0.0, rate=0)
    assert g.state() == books
    assert "rate: 1 decisions" in str(g.check(change, 100.0))


def test_a_saved_state_keeps_the_latest_decisions_given_back_only() -> None:
    """The ids given back are saved with the books every field: the latest few hundred
    (an answer comes again within seconds), not 4,096 (~150 kB of JSON a field)."""
    g = Guardrails(PROFILE, PLAN)
    g._released = dict.fromkeys(f"decision-{i:05d}" for i in range(4096))
    saved = g.state()["released"]
    assert 0 < len(saved) <= 256
    assert saved[-1] == "decision-04095"  # (the latest)
    again = Guardrails(PROFILE, PLAN)
    again.restore(json.loads(json.dumps(g.state())))
    assert list(again._released) == saved


def test_a_restored_run_time_that_is_no_number_is_left_out() -> None:
    """A state saved before NaN times were refused may hold one: left out on restoring (a
    NaN in the rate window compared as neither before nor after any time)."""
    g = Guardrails(PROFILE, PLAN)
    state = json.loads(json.dumps(g.state()))
    state["sent_at"] = [1.0, float("nan"), 2.0]
    again = Guardrails(PROFILE, PLAN)
    again.restore(state)
    assert again.sent_at == [1.0, 2.0]
