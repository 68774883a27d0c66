"""Trigger scoring against simulated ground truth: what counts as right, on a made-up run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

from livescope.pipeline import evaluate_triggers
from livescope.schema import load_profile

PROFILE = load_profile("sim")  # mitosis 1800 s: anaphase (daughters) 540 s


def made_up_run(
    tmp_path: Path, triggers: list[tuple[int, float, float]], given_back: tuple[int, ...] = (),
    rule: str = "m", compression: str | None = None,
) -> Path:  # fmt: skip
    """Two cells over 4 time points 120 s apart: cell 1 enters mitosis at 100 s, cell 2 never.

    ``triggers``: (t, y, x) of each firing of mitosis rule ``rule``; ``given_back``: the
    indices of those given back to their rule (refused as stale); ``compression``: the
    true cell ids' (``"zlib"``, as the simulator writes them), none unless given.
    """
    truth = tmp_path / "ground_truth"
    (truth / "p0" / "cell_ids").mkdir(parents=True)
    lineage = [
        {"cell_id": 1, "parent_id": 0, "birth_s": -500.0, "end_s": None, "fate": "alive",
         "mitosis_onset_s": 100.0, "apoptosis_onset_s": None},
        {"cell_id": 2, "parent_id": 0, "birth_s": -500.0, "end_s": None, "fate": "alive",
         "mitosis_onset_s": None, "apoptosis_onset_s": None},
    ]  # fmt: skip
    (truth / "lineage.json").write_text(json.dumps(lineage))
    frames = []
    for t in range(4):
        m = np.zeros((64, 64), np.uint16)
        m[10:20, 10:20] = 1
        m[40:50, 40:50] = 2
        tifffile.imwrite(truth / "p0" / "cell_ids" / f"t{t:04d}.tif", m, compression=compression)
        frames.append({"seq": t, "position": "p0", "index": {"t": t}, "added_by": None,
                       "sample_time_s": 120.0 * t, "channel": "DAPI"})  # fmt: skip
    (tmp_path / "frames.jsonl").write_text("".join(json.dumps(f) + "\n" for f in frames))
    (tmp_path / "results").mkdir(exist_ok=True)
    fired = [
        {"rule": rule, "trigger": "mitosis", "position": "p0", "t": t, "y": y, "x": x,
         "sample_time_s": 120.0 * t, "verdict": "rejected" if i in given_back else "accepted",
         "given_back": i in given_back}
        for i, (t, y, x) in enumerate(triggers)
    ]  # fmt: skip
    (tmp_path / "results" / "policy.jsonl").write_text("".join(json.dumps(f) + "\n" for f in fired))
    return tmp_path


def test_one_right_trigger_is_precision_and_recall_one(tmp_path: Path) -> None:
    ev = evaluate_triggers(made_up_run(tmp_path, [(2, 15, 15)]), PROFILE)
    assert ev["precision"] == 1.0
    assert ev["recall"] == 1.0
    assert ev["mitosis_to_trigger_s"] == 240 - 100
    assert ev["mitoses_observable"] == 1  # cell 1 is mitotic at t = 1, 2, 3


def test_repeats_and_wrong_cells_count_against_precision(tmp_path: Path) -> None:
    # the mitosis triggered three times, the interphase cell once, a trigger before onset once
    ev = evaluate_triggers(
        made_up_run(tmp_path, [(0, 15, 15), (1, 15, 15), (2, 15, 15), (3, 15, 15), (2, 45, 45)]),
        PROFILE,
    )
    assert ev["triggers_fired"] == 5
    assert ev["triggers_correct"] == 3  # on a mitotic cell at that time
    assert ev["duplicate_triggers"] == 2
    assert ev["precision"] == 0.2  # one useful trigger out of five
    assert ev["recall"] == 1.0
    assert ev["mitosis_to_trigger_s"] == 120 - 100


def test_a_firing_given_back_to_its_rule_is_no_trigger(tmp_path: Path) -> None:
    # its close-up refused as stale, the rule fired on the mitosis again a field later:
    # one trigger, not a repeat (the first was never imaged)
    ev = evaluate_triggers(
        made_up_run(tmp_path, [(1, 15, 15), (2, 15, 15)], given_back=(0,)), PROFILE
    )
    assert (ev["triggers_fired"], ev["triggers_given_back"]) == (1, 1)
    assert ev["duplicate_triggers"] == 0
    assert ev["precision"] == 1.0
    assert ev["mitosis_to_trigger_s"] == 240 - 100  # from the trigger that stood


def test_no_trigger_is_recall_zero(tmp_path: Path) -> None:
    ev = evaluate_triggers(made_up_run(tmp_path, []), PROFILE)
    assert ev["precision"] is None
    assert ev["recall"] == 0.0
    # the plan's mitosis rule never fired: it missed the mitosis
    ev = evaluate_triggers(made_up_run(tmp_path / "m", []), PROFILE, rules=["m"])
    assert ev["recall"] == 0.0
    assert ev["note"] is None


def test_a_plan_without_a_mitosis_rule_is_not_scored_on_recall(tmp_path: Path) -> None:
    # it never tried to catch mitoses: a recall of 0 would say it missed them
    ev = evaluate_triggers(made_up_run(tmp_path, []), PROFILE, rules=[])
    assert (ev["precision"], ev["recall"]) == (None, None)
    assert ev["note"] == "the plan has no mitosis rule"
    assert ev["mitoses_observable"] == 1  # (the truth is still read)
    # a policy of its own that fires on mitoses is scored
    ev = evaluate_triggers(made_up_run(tmp_path / "own", [(2, 15, 15)]), PROFILE, rules=[])
    assert (ev["precision"], ev["recall"], ev["note"]) == (1.0, 1.0, None)


def test_tracks_are_scored_per_position_and_one_without_a_result_says_why(
    tmp_path: Path,
) -> None:
    from livescope.pipeline import evaluate_tracks

    run = made_up_run(tmp_path, [])
    truth = run / "ground_truth"
    for pos in ("p0", "p1"):  # the truth's two cells, as CTC ground truth
        tra = truth / pos / "TRA"
        tra.mkdir(parents=True, exist_ok=True)
        res = run / "results" / "ctc" / pos
        for t in range(4):
            m = tifffile.imread(truth / "p0" / "cell_ids" / f"t{t:04d}.tif")
            tifffile.imwrite(tra / f"man_track{t:03d}.tif", m)
            if pos == "p0":  # p1's tracks were never written
                res.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(res / f"mask{t:03d}.tif", m)
        (tra / "man_track.txt").write_text("1 0 3 0\n2 0 3 0\n")
    (run / "results" / "ctc" / "p0" / "res_track.txt").write_text("1 0 3 0\n2 0 3 0\n")
    got = evaluate_tracks(run, truth)
    assert set(got) == {"p0", "p1"}
    assert got["p0"]["tra"] == 1.0
    assert got["p0"]["tracks"] == 2
    assert "aogm" not in got["p0"]
    assert set(got["p1"]) == {"error"}
    assert "ctc" in got["p1"]["error"]
    assert "p1" in got["p1"]["error"]
