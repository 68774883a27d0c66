"""A new user's journey (session 63): what the demo, ``plan check`` and the report say.

The end-of-run table's paths whole on a narrow terminal, ``plan check``'s frame count
with a z-stack, a guardrail in a plan pointed at the hardware profile, and the ground
truth's divisions told apart from the mitoses recall is over.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer

from livescope.schema import PlanError, load_plan


def _cell(lines: list[str], key: str) -> str:
    """Return the value of the table row ``key``, its folded lines joined."""
    value, inside = "", False
    for line in lines:
        cells = [c.strip() for c in line.split("│")]
        if len(cells) < 4:  # (a border line)
            inside = False
            continue
        if cells[1] == key:
            inside = True
        elif cells[1]:
            inside = False
        if inside:
            value += cells[2]
    return value


@pytest.mark.parametrize("width", [80, 60])
def test_the_demo_table_prints_a_long_path_whole_on_a_narrow_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    from livescope.cli._app import _print_demo
    from livescope.cli._common import stderr

    monkeypatch.setattr(stderr, "width", width)  # (80: stderr not a terminal)
    report = "/home/someone/projects/livescope-trial/runs/demo1/report.html"
    recording = "/home/someone/projects/livescope-trial/runs/demo1/recording.zarr"
    _print_demo({"frames_acquired": 10, "recording": recording, "report": report, "out": "o"})
    lines = capsys.readouterr().err.splitlines()
    assert _cell(lines, "report") == report, "\n".join(lines)
    assert _cell(lines, "recording") == recording, "\n".join(lines)
    assert "…" not in "\n".join(lines)


def _say(plan: Path) -> str:
    from livescope.cli._plan import plan_check

    plan_check([plan], profile="sim", json_out=False)  # (exits 1 only when it does not fit)
    return plan.name


def test_plan_check_names_the_planes_of_each_channel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from livescope.cli._common import stderr

    monkeypatch.setattr(stderr, "width", 200)  # one line each
    plan = tmp_path / "stack.yaml"
    plan.write_text(
        "stage_positions: [{name: A, x: 0, y: 0, z: 0}, {name: B, x: 600, y: 300, z: 0}]\n"
        "channels:\n"
        "  - {config: Phase, exposure: 20, do_stack: false}\n"
        "  - {config: DAPI, exposure: 50}\n"
        "z_plan: {range: 4, step: 2}\n"
        "time_plan: {interval: 120, loops: 10}\n"
    )
    _say(plan)
    err = capsys.readouterr().err
    # 2 × 10 × (1 + 3) = 80: the factors shown multiply to the frames
    assert (
        "80 frame(s): 2 position(s) × 10 time point(s), channels Phase (1 plane), DAPI (3 planes)"
        in err
    ), err
    flat = tmp_path / "flat.yaml"  # (no z-stack: as before, no planes to say)
    flat.write_text(
        "channels: [{config: Phase}, {config: DAPI}]\ntime_plan: {interval: 60, loops: 2}\n"
    )
    _say(flat)
    err = capsys.readouterr().err
    assert "4 frame(s): 1 position(s) × 2 time point(s), channels Phase, DAPI\n" in err, err


@pytest.mark.parametrize("key", ["guardrails", "light_dose"])
def test_a_profile_section_in_a_plan_names_the_hardware_profile(tmp_path: Path, key: str) -> None:
    plan = tmp_path / "guard.yaml"
    plan.write_text(
        "channels: [{config: DAPI}]\ntime_plan: {interval: 60, loops: 2}\n"
        f"{key}: {{max_decisions_per_min: 5}}\n"
    )
    with pytest.raises(PlanError) as caught:
        load_plan(plan)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{key}: "), problem
    assert "hardware profile" in problem, problem
    assert "--profile" in problem, problem
    assert f"edit `{key}:` in your rig's profile" in problem, problem
    assert "sim.yaml" not in problem, problem  # (a rig's copy of it would run simulated)
    assert "check its spelling" not in problem, problem
    # a misspelt plan key is still one
    plan.write_text("channels: [{config: DAPI}]\ntime_plann: {interval: 60, loops: 2}\n")
    with pytest.raises(PlanError) as caught:
        load_plan(plan)
    assert any("time_plann: unknown field" in p and "spelling" in p for p in caught.value.problems)


def test_plan_check_says_where_a_guardrail_goes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "guard.yaml"
    plan.write_text(
        "channels: [{config: DAPI}]\ntime_plan: {interval: 60, loops: 2}\n"
        "guardrails: {max_decisions_per_min: 5}\n"
    )
    with pytest.raises(typer.Exit):
        _say(plan)
    assert "set in the hardware profile" in capsys.readouterr().err


def test_the_demo_table_says_which_divisions_it_counts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from livescope.cli._app import _print_demo
    from livescope.cli._common import stderr

    monkeypatch.setattr(stderr, "width", 200)
    summary: dict[str, Any] = {"truth": {"tracks": 102, "divisions": 8}, "recording": "r",
                               "report": "r.html", "out": "o"}  # fmt: skip
    _print_demo(summary)
    lines = capsys.readouterr().err.splitlines()
    assert _cell(lines, "divisions completed in view") == "8", "\n".join(lines)
    assert not _cell(lines, "divisions in view"), "\n".join(lines)
    # scored: the mitoses recall is over beside them, and why they differ
    _print_demo({**summary, "evaluation": {"mitoses_observable": 31, "triggers": []}})
    lines = capsys.readouterr().err.splitlines()
    said = _cell(lines, "divisions completed in view")
    assert said.startswith("8 (31 mitoses seen in view at 2+ time points"), "\n".join(lines)
    assert "begun before the run" in said, said


def test_the_report_labels_divisions_and_mitoses_apart(tmp_path: Path) -> None:
    from livescope.view._report import _summary_section
    from livescope.view._report_decisions import truth_section

    summary: dict[str, Any] = {
        "truth": {"tracks": 102, "divisions": 8},
        "trigger_precision": 1.0,
        "trigger_recall": 1.0,
        "evaluation": {"triggers": [{"ok": True}], "mitoses": [{"triggered": True}]},
    }
    run = SimpleNamespace(summary=summary, run_dir=tmp_path, positions=["p0"],
                          channels_taken=["DAPI"], timepoints=2, has_results=True,
                          problems=[])  # fmt: skip
    page: Any = SimpleNamespace(run=run)
    html = _summary_section(page)
    assert "Ground truth: tracks · divisions completed in view" in html, html
    assert "102 · 8" in html, html
    text = truth_section(page)
    assert "1 of 1 mitoses seen in view at 2+ time points were triggered on" in text, text
    assert "begun before the run" in text, text
    assert "divisions completed in view" in text, text
