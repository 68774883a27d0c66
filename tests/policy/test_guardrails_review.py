"""Guardrails: limits that rounding, NaN or a slow rate limit let a decision slip past or jam."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
import useq

from livescope.policy import Guardrails
from livescope.schema import AddEvents, ChangeInterval, Decision, HardwareProfile, load_profile

PROFILE = load_profile("sim")
PLAN = useq.MDASequence(
    stage_positions=[(0, 0, 0)], channels=["DAPI"], time_plan={"interval": 60, "loops": 2}
)


def _rig(**guardrails: Any) -> HardwareProfile:
    return PROFILE.replace(guardrails={**PROFILE.guardrails.model_dump(), **guardrails})


def _ev(t: float, exp: float | None = None, ch: str = "DAPI") -> useq.MDAEvent:
    return useq.MDAEvent(channel={"config": ch}, x_pos=0.0, y_pos=0.0, z_pos=0.0, exposure=exp,
                         pos_name="p0~r-0", min_start_time=t)  # fmt: skip


def _closeup(loops: int, interval_s: float) -> AddEvents:
    # the time points as `Acquire.events` spaces them: the k-th at k x interval_s
    return AddEvents(run_id="r1", events=tuple(_ev(k * float(interval_s)) for k in range(loops)))


def test_a_close_up_at_the_shortest_interval_the_rig_allows_passes() -> None:
    # 3 x 0.3 - 2 x 0.3 is 0.29999999999999993: a close-up whose rule passed at load
    # (interval_s = min_interval_s) was refused at run time, "0.3 s apart; ... = 0.3 s"
    g = Guardrails(_rig(min_interval_s=0.3), PLAN)
    assert g.check(_closeup(5, 0.3), 0.0) is None
    assert g.check(_closeup(5, 0.7), 0.0) is None
    assert g.check(_closeup(8, 1.1), 0.0) is None
    # what is shorter still is refused
    assert "interval: added time points 0.299 s apart" in str(g.check(_closeup(3, 0.299), 0.0))


def test_a_rate_limit_under_one_a_minute_lets_one_decision_through_per_its_period() -> None:
    # 0.5 a minute is one every two minutes; over a sliding minute not even one passed
    g = Guardrails(_rig(max_decisions_per_min=0.5), PLAN)
    change = ChangeInterval(run_id="r1", interval_s=60)
    assert g.check(change, 0.0) is None
    g.commit(change, 0.0)
    assert g.check(change, 90.0) == (
        "rate: 1 decisions in the last 120 s of run time; guardrails.max_decisions_per_min = 0.5"
    )
    assert g.check(change, 120.0) is None
    # the agent's check allows twice as many
    assert g.check(change, 90.0, rate=2) is None
    # restarted, the same
    again = Guardrails(_rig(max_decisions_per_min=0.5), PLAN)
    again.restore(json.loads(json.dumps(g.state())))
    assert "rate" in str(again.check(change, 90.0))
    # a limit of one a minute or more is counted over a minute, as before
    g = Guardrails(_rig(max_decisions_per_min=1), PLAN)
    g.commit(change, 0.0)
    assert "in the last minute of run time" in str(g.check(change, 59.0))
    assert g.check(change, 60.0) is None


def _nan_exposure() -> AddEvents:
    d = AddEvents(run_id="r1", events=(_ev(0.0),))
    return d.model_copy(update={"events": (_ev(0.0).model_copy(update={"exposure": math.nan}),)})


_NOT_FINITE: list[Any] = [
    pytest.param(_nan_exposure, "exposure nan ms is not a number", id="nan-exposure"),
    pytest.param(
        lambda: AddEvents(run_id="r1", events=(_ev(0.0),)).model_copy(update={"delay_s": math.nan}),
        "must be finite",
        id="nan-delay",
    ),
    pytest.param(
        lambda: AddEvents(run_id="r1", events=(_ev(0.0), _ev(5.0))).model_copy(
            update={"events": (_ev(0.0), _ev(5.0).model_copy(update={"min_start_time": math.nan}))}
        ),
        "must be finite",
        id="nan-start-time",
    ),
    pytest.param(
        lambda: ChangeInterval(run_id="r1", interval_s=60).model_copy(
            update={"interval_s": math.nan}
        ),
        "not a finite number",
        id="nan-interval",
    ),
    pytest.param(
        lambda: ChangeInterval(run_id="r1", interval_s=60).model_copy(
            update={"interval_s": math.inf}
        ),
        "not a finite number",
        id="inf-interval",
    ),
]


@pytest.mark.parametrize(("make", "reason"), _NOT_FINITE)
def test_a_decision_with_a_number_not_finite_is_refused(
    make: Callable[[], Decision], reason: str
) -> None:
    # pydantic refuses NaN and infinity when a decision is made, but a copy made with
    # model_copy(update=...) is not validated again (livescope's own rules copy events
    # so): NaN passes every `>` check, and NaN booked turned a budget off for good
    g = Guardrails(_rig(max_added_span_s=None), PLAN)
    assert reason in str(g.check(make(), 0.0))


def test_light_booked_as_nan_refuses_more_light_instead_of_turning_the_budget_off() -> None:
    # (a NaN booked survives a restart: the state is JSON, which writes NaN)
    g = Guardrails(PROFILE, PLAN)
    state = json.loads(json.dumps(g.state()))
    state["dose_s"]["p0"] = math.nan
    g.restore(state)
    big = AddEvents(run_id="r1", events=tuple(_ev(2.0 * i, exp=900) for i in range(200)))
    assert "light dose: position p0 would get nan s" in str(g.check(big, 0.0))
