"""Position names Windows keeps for devices: refused by the plan check, not at the results."""

from __future__ import annotations

import sys

import pytest
import useq

from livescope.schema import HardwareProfile, PlanError, check_plan
from livescope.schema._plan import folder_name_problem

# Microsoft's "Naming Files, Paths, and Namespaces" lists these beside CON, NUL, COM1-9 ...
DEVICE_NAMES = [
    pytest.param("COM0", id="com0"),
    pytest.param("lpt0.txt", id="lpt0-with-extension"),
    pytest.param("COM¹", id="com-superscript-1"),
    pytest.param("com²", id="com-superscript-2-lower-case"),
    pytest.param("COM³.tif", id="com-superscript-3-with-extension"),
    pytest.param("LPT¹", id="lpt-superscript-1"),
    pytest.param("Lpt².log", id="lpt-superscript-2-with-extension"),
    pytest.param("LPT³", id="lpt-superscript-3"),
    pytest.param("CONIN$", id="conin"),
    pytest.param("conout$", id="conout-lower-case"),
    pytest.param("CONOUT$.txt", id="conout-with-extension"),
]


@pytest.mark.parametrize("name", DEVICE_NAMES)
def test_a_windows_device_name_is_refused_on_windows_only(name: str) -> None:
    assert folder_name_problem(name, windows=False) is None  # (a folder name on Linux, macOS)
    assert folder_name_problem(name, windows=True) == (
        "is a device name on Windows, not a folder name"
    )


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("COM⁴", id="com-superscript-4"),  # (only ¹ ² ³ are kept)
        pytest.param("LPT10", id="lpt10"),
        pytest.param("CONIN", id="conin-without-dollar"),
        pytest.param("CONOUT$2", id="conout-with-a-digit"),
        pytest.param("COM¹A", id="com-superscript-1-and-more"),
    ],
)
def test_names_near_a_device_name_are_folder_names_on_windows(name: str) -> None:
    assert folder_name_problem(name, windows=True) is None


@pytest.mark.parametrize("name", DEVICE_NAMES)
def test_a_plan_position_named_as_a_windows_device_is_refused_there(
    sim_profile: HardwareProfile, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # passed the plan check, then results/ctc/<name> could not be made on Windows
    plan = useq.MDASequence(
        stage_positions=[{"x": 0, "y": 0, "z": 0, "name": name}],
        channels=[{"config": "DAPI", "exposure": 50}],
    )
    monkeypatch.setattr(sys, "platform", "win32")  # (folder_name_problem's own branch)
    with pytest.raises(PlanError) as info:
        check_plan(plan, sim_profile)
    monkeypatch.undo()
    assert info.value.problems == [
        f"stage_positions.0: position name {name!r} is a device name on Windows, not a folder "
        "name; a position's results are kept in a folder of its name (results/ctc/<name>): "
        "rename the position"
    ]
