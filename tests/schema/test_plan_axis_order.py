"""Axis orders the worker cannot analyse field by field are refused, naming the order."""

from __future__ import annotations

import pytest
import useq

from livescope.schema import PlanError, check_plan, load_profile

PROFILE = load_profile("sim")


def _plan(order: str, *, positions: int = 2, z: bool = True) -> useq.MDASequence:
    return useq.MDASequence(
        channels=["Phase", "DAPI"],
        stage_positions=[
            useq.Position(x=100.0 * i, y=0, z=0, name=f"p{i}") for i in range(positions)
        ],
        time_plan={"interval": 60, "loops": 2},
        z_plan={"range": 2, "step": 1} if z else None,
        axis_order=order,
    )


@pytest.mark.parametrize(
    ("order", "what"),
    [("tcpz", "each channel across the positions"), ("tzpc", "each z plane across the positions"),
     ("tcp", "each channel across the positions")],
)  # fmt: skip
def test_channels_or_planes_across_positions_are_refused(order: str, what: str) -> None:
    # (accepted: the frames came A/Phase, B/Phase, A/DAPI, B/DAPI and the worker analysed
    # each field with its first channel only, dropping the others as already analysed)
    with pytest.raises(PlanError, match=rf"axis_order: '{order}' images {what}"):
        check_plan(_plan(order, z=order != "tcp"), PROFILE)


@pytest.mark.parametrize("order", ["tpcz", "tpzc", "tpgcz"])
def test_positions_outside_channels_and_planes_pass(order: str) -> None:
    check_plan(_plan(order), PROFILE)


def test_one_position_may_take_its_channels_in_any_order() -> None:
    check_plan(_plan("tczp", positions=1), PROFILE)
