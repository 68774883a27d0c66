"""A grid without its field of view is refused before the plan is expanded.

At useq's 1 µm tiles a 300 µm square ``GridFromEdges`` is 90,000 events: `check_plan`
expanded them (41 s here) before it said the field of view was missing.
"""

from __future__ import annotations

import threading

import pytest
import useq

from livescope.schema import HardwareProfile, PlanError, check_plan
from livescope.schema import _plan as plan_module


def test_a_grid_without_fov_is_refused_without_expanding_the_plan(
    sim_profile: HardwareProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    expanded = threading.Event()
    real = plan_module.plan_events

    def plan_events(seq: useq.MDASequence) -> tuple[useq.MDAEvent, ...]:
        expanded.set()
        return real(seq)

    monkeypatch.setattr(plan_module, "plan_events", plan_events)
    seq = useq.MDASequence(
        channels=["DAPI"],
        grid_plan={"top": 150, "bottom": -150, "left": -150, "right": 150},
    )
    with pytest.raises(PlanError) as info:
        check_plan(seq, sim_profile)
    assert not expanded.is_set()
    assert any("give fov_width and fov_height" in p for p in info.value.problems)


def test_a_grid_with_its_fov_is_still_expanded_and_checked(sim_profile: HardwareProfile) -> None:
    seq = useq.MDASequence(
        channels=["DAPI"],
        grid_plan={"top": 150, "bottom": -150, "left": -150, "right": 150,
                   "fov_width": 300, "fov_height": 300},
    )  # fmt: skip
    check_plan(seq, sim_profile)  # (inside the stage travel: no problem)
