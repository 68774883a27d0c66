"""A position whose name no folder (and no frame header) can hold is refused by the plan check.

A 300-character position name passed `check_plan`; its results folder could not be made,
and every frame of it was refused on the bus.
"""

from __future__ import annotations

import pytest
import useq

from livescope.schema import HardwareProfile, PlanError, check_plan
from livescope.schema._plan import folder_name_problem


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        pytest.param("p" * 255, False, id="255-ascii"),
        pytest.param("p" * 256, True, id="256-ascii"),
        pytest.param("µ" * 127, False, id="254-bytes"),
        pytest.param("µ" * 128, True, id="256-bytes"),
    ],
)
def test_a_name_longer_than_a_folder_name_may_be_is_refused(name: str, bad: bool) -> None:
    for windows in (False, True):
        said = folder_name_problem(name, windows=windows)
        assert (said is not None) == bad
        if bad:
            assert said == (
                f"is {len(name.encode())} bytes long, more than a folder name may be (255)"
            )


def test_the_plan_check_refuses_a_position_of_such_a_name(sim_profile: HardwareProfile) -> None:
    seq = useq.MDASequence(channels=["DAPI"], stage_positions=[{"x": 0, "y": 0, "name": "a" * 300}])
    with pytest.raises(PlanError) as info:
        check_plan(seq, sim_profile)
    assert any("is 300 bytes long" in p for p in info.value.problems)
