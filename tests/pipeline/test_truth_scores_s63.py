"""Trigger scoring: one true mitosis seen in two fields, and the close-ups a trigger led to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import useq

from livescope.pipeline import evaluate_triggers
from livescope.policy._engine import _shared_reason
from livescope.policy._observation import Firing
from livescope.schema import AddEvents, load_profile

PROFILE = load_profile("sim")  # mitosis 1800 s: anaphase (daughters) 540 s


def _decision(did: str, sub: str) -> dict[str, Any]:
    """A close-up decision as ``policy.jsonl`` logs it (its events' sub-sequence ``sub``)."""
    return {"decision_id": did, "type": "add_events",
            "events": [{"index": {"t": 0}, "pos_name": sub, "min_start_time": 0.0}]}  # fmt: skip


def two_tiles(
    root: Path, firings: list[dict[str, Any]], closeups: dict[str, list[float]] | None = None
) -> Path:
    """Two overlapping tiles over 4 time points 120 s apart, both holding true cell 5.

    Cell 5 enters mitosis at 100 s (a mother until 1900 s); cell 9 (the other corner of
    tileA only) never. ``firings``: the mitosis rule ``r``'s lines of ``policy.jsonl``
    (position, t, y, x and the rest; the sample time is the field's); ``closeups``: the
    sample times of the frames each decision id added to ``frames.jsonl``.
    """
    truth = root / "ground_truth"
    truth.mkdir(parents=True)
    lineage = [
        {"cell_id": 5, "parent_id": 0, "birth_s": -3000.0, "end_s": 1900.0, "fate": "divided",
         "mitosis_onset_s": 100.0, "apoptosis_onset_s": None},
        {"cell_id": 9, "parent_id": 0, "birth_s": -100.0, "end_s": None, "fate": "alive",
         "mitosis_onset_s": None, "apoptosis_onset_s": None},
    ]  # fmt: skip
    (truth / "lineage.json").write_text(json.dumps(lineage))
    yy, xx = np.mgrid[:64, :64]
    frames: list[dict[str, Any]] = []
    for pos in ("tileA", "tileB"):  # the cell lies in their overlap: the same true id in both
        m = np.zeros((64, 64), np.uint16)
        m[(yy - 32) ** 2 + (xx - 32) ** 2 < 64] = 5
        if pos == "tileA":
            m[2:8, 2:8] = 9
        (truth / pos / "cell_ids").mkdir(parents=True)
        for t in range(4):
            tifffile.imwrite(truth / pos / "cell_ids" / f"t{t:04d}.tif", m)
            frames.append({"seq": len(frames), "index": {"t": t, "c": 0}, "position": pos,
                           "sample_time_s": 120.0 * t, "added_by": None})  # fmt: skip
    for did, times in (closeups or {}).items():
        frames += [{"seq": len(frames), "index": {"t": k, "c": 0}, "position": f"tileA~{did}",
                    "sample_time_s": s, "added_by": did} for k, s in enumerate(times)]  # fmt: skip
    (root / "frames.jsonl").write_text("".join(json.dumps(f) + "\n" for f in frames))
    (root / "results").mkdir()
    lines = [{"rule": "r", "trigger": "mitosis", "seq": 2, "sample_time_s": 120.0 * f["t"],
              "track": 1, "y": 32.0, "x": 32.0, "decision": None, "verdict": "accepted",
              "stage": "agent", "reason": "", "given_back": False, **f}
             for f in firings]  # fmt: skip
    (root / "results" / "policy.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


# --- one true mitosis in two overlapping fields (a grid's tiles) -------------------------


def test_a_mitosis_seen_in_two_tiles_and_triggered_once_is_caught(tmp_path: Path) -> None:
    # a rule with a cooldown fires once, in tileA: the one mitosis there is was caught
    ev = evaluate_triggers(
        two_tiles(tmp_path, [{"position": "tileA", "t": 2}]), PROFILE, rules=["r"]
    )
    assert ev["mitoses_observable"] == 1, ev["mitoses"]  # cell 5, not one per tile
    assert ev["recall"] == 1.0
    assert ev["precision"] == 1.0
    (m,) = ev["mitoses"]
    assert (m["cell_id"], m["position"], m["positions"]) == (5, "tileA", ["tileA", "tileB"])
    assert (m["triggered"], m["delay_s"]) == (True, 240 - 100)


def test_a_second_tile_firing_on_the_same_mitosis_is_a_repeat(tmp_path: Path) -> None:
    # the README: a repeat on a mitosis already triggered counts as wrong, whichever
    # field it fired in (the second tile's close-up images the same cell again)
    firings = [{"position": "tileA", "t": 2}, {"position": "tileB", "t": 3}]
    ev = evaluate_triggers(two_tiles(tmp_path, firings), PROFILE, rules=["r"])
    assert ev["triggers_correct"] == 2
    assert ev["duplicate_triggers"] == 1
    assert ev["precision"] == 0.5
    assert (ev["recall"], ev["mitoses_observable"], ev["mitoses_triggered"]) == (1.0, 1, 1)
    assert [tr["duplicate"] for tr in ev["triggers"]] == [False, True]
    assert ev["mitosis_to_trigger_s"] == 240 - 100  # from the first, in tileA


# --- the detector's figures and the acquisition's ----------------------------------------


def test_an_accepted_trigger_imaged_counts_from_its_close_ups_first_frame(
    tmp_path: Path,
) -> None:
    firings = [{"position": "tileA", "t": 2, "decision": _decision("d1", "tileA~r-0")}]
    run = two_tiles(tmp_path, firings, closeups={"d1": [330.0, 360.0]})
    ev = evaluate_triggers(run, PROFILE, rules=["r"])
    assert (ev["recall"], ev["mitosis_to_trigger_s"]) == (1.0, 240 - 100)
    assert ev["trigger_recall_imaged"] == 1.0
    assert ev["mitosis_to_closeup_s"] == 330 - 100  # the close-up's first frame, not its trigger
    assert ev["triggers"][0]["closeup_s"] == 330.0
    assert ev["mitoses"][0]["closeup_delay_s"] == 330 - 100


def test_triggers_never_imaged_count_for_the_detector_not_the_acquisition(
    tmp_path: Path,
) -> None:
    for name, firing in {
        # decided once the run had ended: never sent
        "not_sent": {"verdict": "not_sent", "stage": "not_sent",
                     "decision": _decision("d1", "tileA~r-0")},
        # refused by the agent (not as stale: not given back)
        "rejected": {"verdict": "rejected", "stage": "agent",
                     "decision": _decision("d1", "tileA~r-0")},
        # accepted, but the run ended before its first frame
        "accepted, no frame": {"decision": _decision("d2", "tileA~r-0")},
    }.items():  # fmt: skip
        run = two_tiles(tmp_path / name.replace(" ", "_").replace(",", ""),
                        [{"position": "tileA", "t": 2, **firing}],
                        closeups={"other": [300.0]})  # fmt: skip
        ev = evaluate_triggers(run, PROFILE, rules=["r"])
        assert (ev["precision"], ev["recall"]) == (1.0, 1.0), name  # the detector caught it
        assert ev["mitosis_to_trigger_s"] == 240 - 100, name
        assert ev["trigger_recall_imaged"] == 0.0, name  # no close-up was taken of it
        assert ev["mitosis_to_closeup_s"] is None, name
        assert ev["mitoses"][0]["closeup_delay_s"] is None, name


def test_a_shared_trigger_counts_as_imaged_by_the_close_up_it_shares(tmp_path: Path) -> None:
    # the rule fired on cell 9 (interphase: a wrong trigger) and on cell 5 in the same field;
    # cell 5's firing shared the close-up of cell 9's, which was imaged
    # (the reason as the policy engine words it: the scoring finds the close-up by its name)
    closeup = AddEvents(run_id="r1", events=(useq.MDAEvent(pos_name="tileA~r-1"),))
    share = _shared_reason(Firing("r", "mitosis", "tileA", closeup, track=7))
    firings = [
        {"position": "tileA", "t": 2, "track": 6, "y": 4.0, "x": 4.0,
         "decision": _decision("d0", "tileA~r-0")},  # another close-up of the field
        {"position": "tileA", "t": 2, "track": 7, "y": 4.0, "x": 5.0,
         "decision": _decision("d1", "tileA~r-1")},
        {"position": "tileA", "t": 2, "track": 1, "verdict": "shared", "stage": "shared",
         "reason": share},
    ]  # fmt: skip
    run = two_tiles(tmp_path / "imaged", firings, closeups={"d0": [250.0], "d1": [280.0]})
    ev = evaluate_triggers(run, PROFILE, rules=["r"])
    assert ev["recall"] == 1.0
    assert ev["trigger_recall_imaged"] == 1.0
    assert ev["mitosis_to_closeup_s"] == 280 - 100  # tileA~r-1's first frame, not tileA~r-0's
    # the close-up it shares was refused: its firing is logged rejected, and nothing imaged it
    refused = [{**f, "verdict": "rejected", "reason": f"{share}; its fate: refused"}
               if f["track"] == 1 else f for f in firings]  # fmt: skip
    run = two_tiles(tmp_path / "refused", refused, closeups={"d0": [250.0]})
    ev = evaluate_triggers(run, PROFILE, rules=["r"])
    assert (ev["recall"], ev["trigger_recall_imaged"]) == (1.0, 0.0)
    assert ev["mitosis_to_closeup_s"] is None


def test_the_acquisition_figures_are_over_the_observable_mitoses(tmp_path: Path) -> None:
    # no trigger: both recalls 0 over the one observable mitosis; no mitosis rule: neither
    ev = evaluate_triggers(two_tiles(tmp_path / "none", []), PROFILE, rules=["r"])
    assert (ev["recall"], ev["trigger_recall_imaged"], ev["mitosis_to_closeup_s"]) == (
        0.0, 0.0, None)  # fmt: skip
    ev = evaluate_triggers(two_tiles(tmp_path / "norule", []), PROFILE, rules=[])
    assert (ev["recall"], ev["trigger_recall_imaged"]) == (None, None)


def test_the_report_shows_the_acquisitions_figures_beside_the_detectors(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from livescope.view._report_decisions import truth_section

    firings = [
        {"position": "tileA", "t": 2, "decision": _decision("d1", "tileA~r-0")},
        {"position": "tileB", "t": 3, "verdict": "not_sent", "stage": "not_sent",
         "decision": _decision("d2", "tileB~r-0")},
    ]  # fmt: skip
    run = two_tiles(tmp_path, firings, closeups={"d1": [330.0]})
    ev = evaluate_triggers(run, PROFILE, rules=["r"])
    summary = {"evaluation": ev, "trigger_precision": ev["precision"],
               "trigger_recall": ev["recall"]}  # fmt: skip
    html = truth_section(SimpleNamespace(run=SimpleNamespace(summary=summary, run_dir=run)))  # type: ignore[arg-type]
    assert "1 of 1 mitoses in view got a close-up" in html, html
    assert "recall imaged 1" in html, html
    assert "first frame: 230" in html, html  # 330 s - onset 100 s
    assert "<td>tileA, tileB</td>" in html, html  # the one mitosis, in both fields
