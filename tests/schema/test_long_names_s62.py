"""A position whose name no folder (and no frame header) can hold is refused by the plan check.

A 300-character position name passed `check_plan`; its results folder could not be made,
and every frame of it was refused on the bus.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import useq

from livescope.schema import HardwareProfile, PlanError, check_plan, load_plan
from livescope.schema._plan import folder_name_problem, safe_folder_name


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        # (255 bytes less the 6 the worker's staging folders add: .<name>.live)
        pytest.param("p" * 249, False, id="249-ascii"),
        pytest.param("p" * 250, True, id="250-ascii"),
        pytest.param("µ" * 124, False, id="248-bytes"),
        pytest.param("µ" * 125, True, id="250-bytes"),
    ],
)
def test_a_name_longer_than_a_folder_name_may_be_is_refused(name: str, bad: bool) -> None:
    for windows in (False, True):
        said = folder_name_problem(name, windows=windows)
        assert (said is not None) == bad
        if bad:
            assert said == (
                f"is {len(name.encode())} bytes long, more than a position's folder name may "
                "be (249: the worker stages its results in folders of the name and 6 bytes "
                "more, .<name>.live)"
            )


@pytest.mark.parametrize("name", ["q" * 300, "µ" * 200, "a:" * 140, "." + "b" * 260])
def test_a_name_made_a_folder_name_is_cut_to_the_longest_one_allowed(name: str) -> None:
    # (a dataset's long name, made a folder of a cluster replay: it went past 255 bytes)
    new = safe_folder_name(name)
    assert folder_name_problem(new) is None
    assert 240 <= len(new.encode()) <= 249


def test_the_plan_check_refuses_a_position_of_such_a_name(sim_profile: HardwareProfile) -> None:
    seq = useq.MDASequence(channels=["DAPI"], stage_positions=[{"x": 0, "y": 0, "name": "a" * 300}])
    with pytest.raises(PlanError) as info:
        check_plan(seq, sim_profile)
    assert any("is 300 bytes long" in p for p in info.value.problems)


def test_a_name_of_escaped_half_characters_is_named_not_a_traceback(
    tmp_path: Path, sim_profile: HardwareProfile
) -> None:
    # YAML's "\ud83d\ude00" (and JSON's, as Python's json.dumps writes an emoji) loaded as
    # two half characters: encoding the name for its length raised UnicodeEncodeError.
    # A pair is one character (joined as the file is read); a lone half is named
    f = tmp_path / "plan.yaml"
    f.write_text(
        'channels: [DAPI]\nstage_positions: [{x: 0, y: 0, name: "well-\\ud83d\\ude00"}, '
        '{x: 10, y: 0, name: "half-\\ud83d"}]\n'
    )
    sequence = load_plan(f)
    assert [p.name for p in sequence.stage_positions] == ["well-\U0001f600", "half-\ud83d"]
    with pytest.raises(PlanError) as info:
        check_plan(sequence, sim_profile, str(f))
    assert info.value.problems == [
        "stage_positions.1: position name 'half-\\ud83d' holds escaped half characters "
        "('\\ud83d'); write the character itself; a position's results are kept in a folder "
        "of its name (results/ctc/<name>): rename the position"
    ]


def test_pairs_are_joined_beside_a_lone_half(tmp_path: Path) -> None:
    # (one lone half in a string kept every pair in it split)
    f = tmp_path / "plan.yaml"
    f.write_text(
        'channels: [DAPI]\nstage_positions: [{x: 0, y: 0, name: "a\\ud83d\\ude00b\\ud83d"}]\n'
    )
    (position,) = load_plan(f).stage_positions
    assert position.name == "a\U0001f600b\ud83d"
