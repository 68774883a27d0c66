"""A channel's acquire_every and do_stack at a position with a sequence of its own (review s64).

Each refusal failed before its fix: useq skips a channel's time points
(``acquire_every``) and planes (``do_stack: false``) against the time and z
plans of the sequence holding the channel only, so a plan that halved the
fluorescence light at a position with its own time plan gave it at every time
point, and `load_plan` (and ``livescope plan check``) said nothing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import useq
import yaml

from livescope.schema import HardwareProfile, PlanError, check_plan, load_plan

_PHASE = {"config": "Phase", "exposure": 10}
_DAPI = {"config": "DAPI", "exposure": 10}
_EVERY_2 = {**_DAPI, "acquire_every": 2}
_FLAT = {**_DAPI, "do_stack": False}
_T10 = {"interval": 1, "loops": 10}
_Z5 = {"range": 4, "step": 1}


def _plan(channels: list[dict[str, object]], sub: dict[str, object], **top: object) -> dict:
    return {
        "channels": channels,
        "stage_positions": [
            {"name": "fast", "x": 0, "y": 0, "z": 0, "sequence": sub},
            {"name": "slow", "x": 10, "y": 0, "z": 0},
        ],
        "axis_order": "tpcz",
        **top,
    }


def _frames(plan: dict) -> Counter[str]:
    """Count useq's own frames of channel DAPI at position ``fast``."""
    seq = useq.MDASequence.model_validate(plan)
    return Counter(e.channel.config for e in seq if e.pos_name == "fast" and e.channel)


def _problems(tmp_path: Path, plan: dict) -> list[str]:
    (f := tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    with pytest.raises(PlanError) as info:
        load_plan(f)
    return info.value.problems


# (plan, DAPI frames useq gives at `fast`, DAPI frames written, what the refusal says)
_DROPPED = {
    "plan's channel, position's own time plan": (
        _plan([_PHASE, _EVERY_2], {"time_plan": _T10}, time_plan={"interval": 1, "loops": 1}),
        10, 5,
        ["channels.1.acquire_every: 2 (channel 'DAPI')", "stage_positions.0 (fast)",
         "give stage_positions.0.sequence its own channels, with acquire_every there",
         "leave out the position's own time_plan"],
    ),
    "position's own channel, the plan's time plan": (
        _plan([_PHASE], {"z_plan": {"range": 0, "step": 1}, "channels": [_PHASE, _EVERY_2]},
              time_plan=_T10),
        10, 5,
        ["stage_positions.0.sequence.channels.1.acquire_every: 2 (channel 'DAPI')",
         "at every time point", "move the time plan into stage_positions.0.sequence"],
    ),
    "plan's channel, position's own z plan": (
        _plan([_PHASE, _FLAT], {"z_plan": _Z5}),
        5, 1,
        ["channels.1.do_stack: false (channel 'DAPI')", "stage_positions.0 (fast)",
         "give stage_positions.0.sequence its own channels, with do_stack: false there"],
    ),
    "plan's channel, both z plans": (
        _plan([_PHASE, _FLAT], {"z_plan": _Z5}, z_plan=_Z5),
        0, 1,
        ["channels.1.do_stack: false (channel 'DAPI')", "or at none"],
    ),
    "position's own channel, the plan's z plan": (
        _plan([_PHASE], {"channels": [_PHASE, _FLAT], "grid_plan": {"rows": 1, "columns": 1}},
              z_plan=_Z5, axis_order="tpgcz"),
        5, 1,
        ["stage_positions.0.sequence.channels.1.do_stack: false (channel 'DAPI')",
         "give stage_positions.0.sequence its own z_plan"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(_DROPPED))
def test_a_channel_s_skips_that_useq_drops_at_a_position_are_refused(
    tmp_path: Path, case: str
) -> None:
    plan, given, written, said = _DROPPED[case]
    # (the premise: useq gives other frames than written; should it honour them one day,
    # this fails and the refusal can go)
    assert _frames(plan)["DAPI"] == given != written
    problems = _problems(tmp_path, plan)
    assert len(problems) == 1, problems
    for words in said:
        assert words in problems[0]


def test_the_plan_s_first_channel_s_acquire_every_at_a_position_with_its_own_is_refused(
    tmp_path: Path,
) -> None:
    # (useq takes the plan's first channel as the gate of a position with channels of its
    # own: the whole position imaged at every other time point)
    plan = _plan([_EVERY_2, _PHASE], {"z_plan": {"range": 0, "step": 1}, "channels": [_PHASE]},
                 time_plan=_T10)  # fmt: skip
    assert _frames(plan)["Phase"] == 5
    problems = _problems(tmp_path, plan)
    assert len(problems) == 1, problems
    assert "channels.0.acquire_every: 2 (channel 'DAPI')" in problems[0]
    assert "stage_positions.0 (fast)" in problems[0]
    assert "list a channel without acquire_every first" in problems[0]


_HONOURED = {
    "position's own channels, its own time plan": (
        _plan([_PHASE], {"time_plan": _T10, "channels": [_PHASE, _EVERY_2]}), 5,
    ),
    "plan's channel, plan's time plan, position's own z plan": (
        _plan([_PHASE, _EVERY_2], {"z_plan": {"range": 0, "step": 1}}, time_plan=_T10), 5,
    ),
    "position's own channels, its own z plan": (
        _plan([_PHASE], {"z_plan": _Z5, "channels": [_PHASE, _FLAT]}), 1,
    ),
    "plan's channel, plan's z plan, position's own time plan": (
        _plan([_PHASE, _FLAT], {"time_plan": {"interval": 1, "loops": 1}}, z_plan=_Z5), 1,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(_HONOURED))
def test_a_channel_s_skips_that_useq_honours_at_a_position_are_taken(
    tmp_path: Path, sim_profile: HardwareProfile, case: str
) -> None:
    plan, written = _HONOURED[case]
    assert _frames(plan)["DAPI"] == written
    (f := tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    check_plan(load_plan(f), sim_profile)


def test_a_recorded_plan_is_taken_as_useq_read_it(tmp_path: Path) -> None:
    # (it ran so: its frames are those useq gave, not refused on replay)
    plan = _DROPPED["plan's channel, position's own time plan"][0]
    (f := tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    load_plan(f, recorded=True)
