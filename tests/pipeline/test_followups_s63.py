"""Session 63 follow-ups: close-ups that came after their mitosis, close-up names too long
for a plan's positions, and ``plan check``'s frames said per channel when a channel skips
time points or positions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livescope.pipeline import evaluate_triggers
from tests.pipeline.test_truth_scores_s63 import PROFILE, _decision, two_tiles

# --- a close-up counts as imaging its mitosis only if it began during it ------------------


def _with_daughters(run: Path) -> Path:
    """Give ``two_tiles``'s cell 5 (divided at 1900 s) its two daughters, born then."""
    path = run / "ground_truth" / "lineage.json"
    lineage = json.loads(path.read_text())
    lineage += [{"cell_id": d, "parent_id": 5, "birth_s": 1900.0, "end_s": None, "fate": "alive",
                 "mitosis_onset_s": None, "apoptosis_onset_s": None} for d in (11, 12)]  # fmt: skip
    path.write_text(json.dumps(lineage))
    return run


@pytest.mark.parametrize(
    ("first_frame", "daughters", "imaged"),
    [
        (1800.0, False, True),  # the mother still in mitosis
        (1900.0, False, True),  # at the division (the mother's end_s: still hers)
        (1950.0, False, False),  # after the division, no daughters in the lineage
        (1950.0, True, True),  # a daughter in anaphase (born 1900 s, anaphase 540 s)
        (2440.0, True, False),  # the daughters back to interphase (birth + 540 s)
        (2600.0, True, False),
    ],
)
def test_a_close_up_begun_after_its_mitosis_does_not_image_it(
    tmp_path: Path, first_frame: float, daughters: bool, imaged: bool
) -> None:
    firings = [{"position": "tileA", "t": 2, "decision": _decision("d1", "tileA~r-0")}]
    run = two_tiles(tmp_path, firings, closeups={"d1": [first_frame, first_frame + 30.0]})
    if daughters:
        _with_daughters(run)
    ev = evaluate_triggers(run, PROFILE, rules=["r"])
    assert (ev["recall"], ev["mitosis_to_trigger_s"]) == (1.0, 240 - 100)  # the detector's
    (m,) = ev["mitoses"]
    assert m["imaged"] is imaged, m
    assert m["closeup_after_mitosis"] is not imaged, m
    assert ev["trigger_recall_imaged"] == (1.0 if imaged else 0.0)
    assert ev["mitoses_imaged"] == int(imaged)
    assert ev["closeups_after_mitosis"] == int(not imaged)
    # the delay is the imaged ones' only (a late close-up's would pull the median up)
    assert ev["mitosis_to_closeup_s"] == (first_frame - 100 if imaged else None)
    assert m["closeup_delay_s"] == (first_frame - 100 if imaged else None)
    assert ev["triggers"][0]["closeup_s"] == first_frame  # (the frame is still told)


def test_a_close_up_never_taken_is_not_counted_as_late(tmp_path: Path) -> None:
    firings = [{"position": "tileA", "t": 2, "decision": _decision("d1", "tileA~r-0")}]
    ev = evaluate_triggers(two_tiles(tmp_path, firings), PROFILE, rules=["r"])
    (m,) = ev["mitoses"]
    assert (m["imaged"], m["closeup_after_mitosis"], ev["closeups_after_mitosis"]) == (
        False, False, 0)  # fmt: skip


# --- plan check: each channel's frames, where it skips time points or positions ---------


def _plan_check_line(plan: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Return ``plan check``'s frames line for ``plan`` (it must fit the sim rig)."""
    from livescope.cli._plan import plan_check

    plan_check([plan], profile="sim", json_out=False)
    err = capsys.readouterr().err
    (line,) = [x.strip() for x in err.splitlines() if "frame(s)" in x]
    return line


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    from livescope.cli._common import stderr

    monkeypatch.setattr(stderr, "width", 300)  # one line each


@pytest.mark.usefixtures("wide")
def test_plan_check_says_a_channel_taken_every_nth_time_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "every.yaml"
    plan.write_text(
        "stage_positions: [{name: A, x: 0, y: 0, z: 0}]\n"
        "channels:\n"
        "  - {config: Phase, exposure: 20}\n"
        "  - {config: DAPI, exposure: 50, acquire_every: 2}\n"
        "z_plan: {range: 4, step: 1}\n"
        "time_plan: {interval: 60, loops: 3}\n"
    )
    # 1 × (3 × 5 + 2 × 5) = 25: DAPI at t = 0 and 2 only
    assert _plan_check_line(plan, capsys) == (
        "25 frame(s): 1 position(s) × 3 time point(s), channels Phase (5 planes), "
        "DAPI (5 planes; every 2nd time point)"
    )
    flat = tmp_path / "flat.yaml"  # (no z-stack: the note alone)
    flat.write_text(
        "channels: [{config: Phase}, {config: DAPI, acquire_every: 3}]\n"
        "time_plan: {interval: 60, loops: 7}\n"
    )
    assert _plan_check_line(flat, capsys) == (
        "10 frame(s): 1 position(s) × 7 time point(s), channels Phase, DAPI (every 3rd time point)"
    )


@pytest.mark.usefixtures("wide")
def test_plan_check_says_a_channel_taken_at_some_positions_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "own.yaml"
    plan.write_text(
        "stage_positions:\n"
        "  - {name: p0, x: 0, y: 0, z: 0}\n"
        "  - {name: p1, x: 1000, y: 0, z: 0,\n"
        "     sequence: {channels: [{config: DAPI, exposure: 50}], z_plan: {range: 4, step: 1}}}\n"
        "channels: [{config: Phase, exposure: 20}]\n"
        "time_plan: {interval: 60, loops: 2}\n"
    )
    # 2 × (1 + 5) = 12: Phase at p0, DAPI at p1
    assert _plan_check_line(plan, capsys) == (
        "12 frame(s): 2 position(s) × 2 time point(s), channels Phase (1 plane; positions p0 "
        "only), DAPI (5 planes; positions p1 only)"
    )
    many = tmp_path / "many.yaml"  # (more than a few: counted, not listed)
    own = "sequence: {channels: [{config: DAPI, exposure: 50}]}"
    many.write_text(
        "stage_positions:\n"
        + "".join(f"  - {{name: q{i}, x: {200 * i}, y: 0, z: 0, {own}}}\n" for i in range(4))
        + "  - {name: r, x: 1000, y: 0, z: 0}\n"
        "channels: [{config: Phase, exposure: 20}]\n"
        "time_plan: {interval: 60, loops: 2}\n"
    )
    assert _plan_check_line(many, capsys) == (
        "10 frame(s): 5 position(s) × 2 time point(s), channels DAPI (4 of 5 positions), "
        "Phase (positions r only)"
    )
