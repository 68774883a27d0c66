"""Trigger scoring (session 65's review): delays of mitoses begun before the run could see
them, given-back firings that were wrong, two mitosis rules in one plan, and close-ups begun
after the division."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livescope.pipeline import evaluate_triggers
from tests.pipeline.test_followups_s63 import _with_daughters
from tests.pipeline.test_truth_scores_s63 import PROFILE, _decision, two_tiles


def _onset(run: Path, onset_s: float) -> Path:
    """Set ``two_tiles``'s cell 5's mitosis onset (100 s there)."""
    path = run / "ground_truth" / "lineage.json"
    lineage = json.loads(path.read_text())
    next(c for c in lineage if c["cell_id"] == 5)["mitosis_onset_s"] = onset_s
    path.write_text(json.dumps(lineage))
    return run


def _later(run: Path, offset_s: float) -> Path:
    """Move the plan's frames ``offset_s`` later (the run's first at it; close-ups stay)."""
    path = run / "frames.jsonl"
    frames = [json.loads(x) for x in path.read_text().splitlines()]
    for f in frames:
        if not f["added_by"]:
            f["sample_time_s"] += offset_s
    path.write_text("".join(json.dumps(f) + "\n" for f in frames))
    return run


# --- a mitosis begun before the run could see it: its delays from its first frame ---------


def test_a_mitosis_begun_before_the_first_frame_is_timed_from_that_frame(
    tmp_path: Path,
) -> None:
    # cell 5 in mitosis since -500 s; the fields first imaged at 30 s, the firing at the
    # second time point (150 s), the earliest a 2-frame rule allows: 120 s, not 650 s
    firings = [{"position": "tileA", "t": 1, "sample_time_s": 150.0,
                "decision": _decision("d1", "tileA~r-0")}]  # fmt: skip
    run = _later(two_tiles(tmp_path, firings, closeups={"d1": [300.0]}), 30.0)
    ev = evaluate_triggers(_onset(run, -500.0), PROFILE, rules=["r"])
    assert ev["recall"] == 1.0
    assert ev["mitosis_to_trigger_s"] == 150 - 30
    assert ev["mitosis_to_closeup_s"] == 300 - 30
    assert ev["mitoses_begun_before_first_frame"] == 1
    (m,) = ev["mitoses"]
    assert (m["onset_s"], m["delay_s"], m["closeup_delay_s"]) == (-500.0, 120.0, 270.0)


def test_a_mitosis_begun_during_the_run_is_timed_from_its_onset(tmp_path: Path) -> None:
    firings = [{"position": "tileA", "t": 2, "sample_time_s": 270.0,
                "decision": _decision("d1", "tileA~r-0")}]  # fmt: skip
    run = _later(two_tiles(tmp_path, firings, closeups={"d1": [300.0]}), 30.0)
    ev = evaluate_triggers(run, PROFILE, rules=["r"])  # (onset 100 s, after the 30 s frame)
    assert (ev["mitosis_to_trigger_s"], ev["mitosis_to_closeup_s"]) == (270 - 100, 300 - 100)
    assert ev["mitoses_begun_before_first_frame"] == 0


# --- a firing given back to its rule ------------------------------------------------------


def test_a_wrong_firing_given_back_counts_against_precision(tmp_path: Path) -> None:
    # on cell 9 (never in mitosis), its close-up refused as stale: still a wrong trigger
    firings = [
        {"position": "tileA", "t": 1, "track": 9, "y": 4.0, "x": 4.0, "given_back": True,
         "verdict": "rejected"},
        {"position": "tileA", "t": 2},
    ]  # fmt: skip
    ev = evaluate_triggers(two_tiles(tmp_path, firings), PROFILE, rules=["r"])
    assert ev["triggers_given_back"] == 1
    assert (ev["triggers_fired"], ev["triggers_correct"]) == (2, 1)
    assert ev["precision"] == 0.5
    assert ev["recall"] == 1.0


def test_a_right_firing_given_back_is_no_repeat(tmp_path: Path) -> None:
    # the rule fired on cell 5 again once its first firing was given back: one trigger
    firings = [
        {"position": "tileA", "t": 1, "given_back": True, "verdict": "rejected"},
        {"position": "tileA", "t": 2},
    ]  # fmt: skip
    ev = evaluate_triggers(two_tiles(tmp_path, firings), PROFILE, rules=["r"])
    assert (ev["triggers_given_back"], ev["triggers_fired"]) == (1, 1)
    assert (ev["precision"], ev["duplicate_triggers"]) == (1.0, 0)
    assert ev["mitosis_to_trigger_s"] == 240 - 100  # from the firing that stood


# --- two mitosis rules in one plan --------------------------------------------------------


def test_two_mitosis_rules_each_catch_a_mitosis_once(tmp_path: Path) -> None:
    # a record-only rule first, then the close-up rule: neither firing is a repeat
    firings = [
        {"rule": "log", "position": "tileA", "t": 1, "verdict": "record", "stage": "record"},
        {"rule": "r", "position": "tileA", "t": 2, "decision": _decision("d1", "tileA~r-0")},
    ]  # fmt: skip
    ev = evaluate_triggers(
        two_tiles(tmp_path, firings, closeups={"d1": [330.0]}), PROFILE, rules=["log", "r"]
    )
    assert (ev["triggers_fired"], ev["triggers_correct"]) == (2, 2)
    assert (ev["precision"], ev["duplicate_triggers"]) == (1.0, 0)
    assert [tr["duplicate"] for tr in ev["triggers"]] == [False, False]
    assert (ev["recall"], ev["mitosis_to_trigger_s"]) == (1.0, 120 - 100)  # the earliest
    # imaged by the close-up rule's, though the record-only rule fired first
    assert (ev["trigger_recall_imaged"], ev["mitosis_to_closeup_s"]) == (1.0, 330 - 100)
    assert ev["mitoses_imaged"] == 1


def test_a_rules_second_firing_on_a_mitosis_is_still_a_repeat(tmp_path: Path) -> None:
    firings = [
        {"rule": "log", "position": "tileA", "t": 1},
        {"rule": "r", "position": "tileA", "t": 2},
        {"rule": "r", "position": "tileB", "t": 3},
    ]  # fmt: skip
    ev = evaluate_triggers(two_tiles(tmp_path, firings), PROFILE, rules=["log", "r"])
    assert ev["duplicate_triggers"] == 1
    assert ev["precision"] == round(2 / 3, 4)
    assert [tr["duplicate"] for tr in ev["triggers"]] == [False, False, True]
    assert ev["mitoses_triggered_outside_observable"] == 0


# --- a close-up begun after the division --------------------------------------------------


@pytest.mark.parametrize(
    ("first_frame", "after"),
    [(1800.0, False), (1900.0, True), (1950.0, True)],  # (the division at 1900 s)
)
def test_a_close_up_begun_after_the_division_is_counted(
    tmp_path: Path, first_frame: float, after: bool
) -> None:
    firings = [{"position": "tileA", "t": 2, "decision": _decision("d1", "tileA~r-0")}]
    run = _with_daughters(two_tiles(tmp_path, firings, closeups={"d1": [first_frame]}))
    ev = evaluate_triggers(run, PROFILE, rules=["r"])
    (m,) = ev["mitoses"]
    assert m["imaged"] is True  # (a daughter in anaphase: the mitosis still)
    assert m["closeup_after_division"] is after
    assert ev["closeups_after_division"] == int(after)
    assert ev["trigger_recall_imaged"] == 1.0


def test_the_report_says_from_when_an_early_mitosis_is_timed(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from livescope.view._report_decisions import truth_section

    firings = [{"position": "tileA", "t": 1, "sample_time_s": 150.0,
                "decision": _decision("d1", "tileA~r-0")}]  # fmt: skip
    run = _later(two_tiles(tmp_path, firings, closeups={"d1": [300.0]}), 30.0)
    ev = evaluate_triggers(_onset(run, -500.0), PROFILE, rules=["r"])
    summary = {"evaluation": ev, "trigger_precision": ev["precision"],
               "trigger_recall": ev["recall"]}  # fmt: skip
    html = truth_section(SimpleNamespace(run=SimpleNamespace(summary=summary, run_dir=run)))  # type: ignore[arg-type]
    assert "onset to trigger: 120 s (1 mitoses began before their fields" in html, html
