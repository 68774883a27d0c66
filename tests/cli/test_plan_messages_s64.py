"""``plan check``'s words (review s64): a seconds value YAML read as text, and a summary line
whose factors did not multiply to the frames. Each failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livescope.schema import PlanError, load_plan

from ..conftest import run_cli

_CHANNELS = "channels:\n  - {config: Phase, exposure: 20}\n  - {config: DAPI, exposure: 50}\n"


@pytest.mark.parametrize(
    ("written", "hint"),
    [
        # (in quotes YAML reads a number as text: the message said to write 120 for 2 min)
        ("'120'", "write 120, without quotes (in quotes YAML reads it as text)"),
        ('"90.5"', "write 90.5, without quotes (in quotes YAML reads it as text)"),
        # (YAML 1.1, PyYAML's, reads an exponent without a dot as text, quoted or not)
        (
            "1e3",
            "write 1000 (YAML reads '1e3', an exponent without both a dot and a sign, as text)",
        ),
        (
            "2e-1",
            "write 0.2 (YAML reads '2e-1', an exponent without both a dot and a sign, as text)",
        ),
        ("'1.5e+3'", "write 1500, without quotes (in quotes YAML reads it as text)"),
        # (it has a dot: the reason given was "an exponent without a dot")
        (
            "1.5e3",
            "write 1500 (YAML reads '1.5e3', an exponent without both a dot and a sign, as text)",
        ),
    ],
)
def test_seconds_yaml_read_as_text_are_said_to_be_written_as_a_number(
    tmp_path: Path, written: str, hint: str
) -> None:
    f = tmp_path / "plan.yaml"
    f.write_text(f"{_CHANNELS}time_plan: {{interval: {written}, loops: 3}}\n")
    with pytest.raises(PlanError) as info:
        load_plan(f)
    (problem,) = info.value.problems
    assert problem.startswith("time_plan.interval: "), problem
    assert problem.endswith(f"; durations are seconds, written as a number: {hint}"), problem
    assert "e.g. 120 for 2 min" not in problem  # (what was written: it contradicted it)
    assert str(f) in str(info.value)


def test_a_position_time_plans_seconds_as_text_are_said_there(tmp_path: Path) -> None:
    f = tmp_path / "plan.yaml"
    f.write_text(
        f"{_CHANNELS}stage_positions:\n"
        "  - {x: 0, y: 0, name: A, sequence: {time_plan: {interval: 1e1, loops: 2}}}\n"
    )
    with pytest.raises(PlanError) as info:
        load_plan(f)
    (problem,) = info.value.problems
    # (useq's validator leaves the position's index out of the path)
    assert problem.startswith("stage_positions."), problem
    assert "sequence.time_plan.interval: " in problem
    assert "write 10 (YAML reads '1e1'" in problem


def test_a_duration_that_is_no_number_still_says_seconds(tmp_path: Path) -> None:
    f = tmp_path / "plan.yaml"
    f.write_text(f"{_CHANNELS}time_plan: {{interval: 2 min, loops: 3}}\n")
    with pytest.raises(PlanError) as info:
        load_plan(f)
    assert info.value.problems[0].endswith("; durations are seconds (e.g. 120 for 2 min)")


def _check(tmp_path: Path, text: str) -> tuple[str, dict[str, object]]:
    """Return ``plan check``'s summary line for a plan, and its JSON result."""
    f = tmp_path / "plan.yaml"
    f.write_text(text)
    said = run_cli("plan", "check", str(f))
    assert said.returncode == 0, said.stderr[-2000:]
    line = next(x.strip() for x in said.stderr.splitlines() if "frame(s):" in x)
    res = run_cli("plan", "check", str(f), "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    return line, json.loads(res.stdout)["results"][0]


def test_positions_with_time_points_of_their_own_are_said_apart(tmp_path: Path) -> None:
    # (it said "22 frame(s): 2 position(s) × 10 time point(s), channels Phase, DAPI": 40)
    line, result = _check(
        tmp_path,
        f"{_CHANNELS}stage_positions:\n"
        "  - {x: 0, y: 0, z: 0, name: fast, sequence: {time_plan: {interval: 30, loops: 10}}}\n"
        "  - {x: 500, y: 0, z: 0, name: slow}\n",
    )
    assert line == (
        "22 frame(s): 2 position(s) (10 time points at fast, 1 at slow), channels Phase, DAPI"
    )
    per_position = result["time_points_per_position"]
    assert per_position == {"fast": 10, "slow": 1}
    assert result["frames"] == 2 * sum(per_position.values())  # (× the 2 channels)


def test_positions_with_planes_of_their_own_are_said_apart(tmp_path: Path) -> None:
    # (it said "... 3 position(s) × 3 time point(s), channels Phase (1 or 5 planes), ...")
    line, result = _check(
        tmp_path,
        f"{_CHANNELS}time_plan: {{interval: 30, loops: 3}}\nstage_positions:\n"
        "  - {x: 0, y: 0, z: 0, name: deep, sequence: {z_plan: {range: 4, step: 1}}}\n"
        "  - {x: 500, y: 0, z: 0, name: flat}\n"
        "  - {x: 900, y: 0, z: 0, name: flat2}\n",
    )
    assert line == (
        "42 frame(s): 3 position(s) × 3 time point(s), channels Phase (5 planes at deep, 1 at "
        "flat and flat2), DAPI (5 planes at deep, 1 at flat and flat2)"
    )
    assert result["frames"] == 3 * 2 * (5 + 1 + 1)
    assert result["time_points_per_position"] == {"deep": 3, "flat": 3, "flat2": 3}


def test_a_channel_at_one_position_is_counted_against_its_time_points(tmp_path: Path) -> None:
    # (DAPI is taken at each of a's 5 time points: not "5 of 5", nor a's 5 at b too)
    line, result = _check(
        tmp_path,
        "channels: [{config: Phase, exposure: 20}]\nstage_positions:\n"
        "  - {x: 0, y: 0, z: 0, name: a, sequence: {channels: [{config: DAPI, exposure: 50}], "
        "time_plan: {interval: 10, loops: 5}}}\n"
        "  - {x: 500, y: 0, z: 0, name: b}\n",
    )
    assert line == (
        "6 frame(s): 2 position(s) (5 time points at a, 1 at b), channels DAPI (positions a "
        "only), Phase (positions b only)"
    )
    assert result["frames"] == 6


def test_a_plan_whose_positions_agree_is_said_as_before(tmp_path: Path) -> None:
    line, result = _check(
        tmp_path,
        f"{_CHANNELS}time_plan: {{interval: 30, loops: 4}}\nstage_positions:\n"
        "  - {x: 0, y: 0, name: A}\n  - {x: 1000, y: 0, name: B}\n",
    )
    assert line == "16 frame(s): 2 position(s) × 4 time point(s), channels Phase, DAPI"
    assert result["time_points_per_position"] == {"A": 4, "B": 4}


def test_a_negative_duration_read_as_text_is_not_suggested_as_written(tmp_path: Path) -> None:
    # ("write -5, without quotes" was said: the plan then refused it as negative)
    f = tmp_path / "plan.yaml"
    f.write_text(f"{_CHANNELS}time_plan: {{interval: '-5', loops: 3}}\n")
    with pytest.raises(PlanError) as info:
        load_plan(f)
    (problem,) = info.value.problems
    assert problem.endswith("; durations are seconds, 0 or more (e.g. 120 for 2 min)"), problem
    assert "write -5" not in problem
