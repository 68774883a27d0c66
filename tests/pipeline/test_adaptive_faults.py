"""Faults during an adaptive run: the worker killed, a rule that raises, a guardrail breach.

One short run on the simulated microscope with the real agent, bus, supervised
worker process and engines: the worker is killed mid-run and must come back with
its tracks; a Python policy raises on its first crowded field; one asks for more than the
guardrails allow.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.pipeline import WorkerSupervisor, run_adaptive
from livescope.record import read_decisions, read_frames
from livescope.schema import load_profile
from livescope.scope import demo_sequence

pytestmark = pytest.mark.slow

POLICIES = [
    {  # a bug in the user's Python policy that only shows at run time
        "name": "crowded-alarm",
        "python": "tests.policy.example_policy:CrowdAlarm",
        "args": {"above": 1},
    },
    {  # 0.5 s apart is under the profile's guardrails.min_interval_s (1 s); a Python
        # policy, since a declared rule asking for it is refused before the run
        "name": "too-fast",
        "python": "tests.policy.example_policy:TooFast",
        "args": {"times": 2, "gap_s": 0.5},
    },
    {
        "name": "closeup",
        "when": {"mitosis": {"frames": 2}},
        "do": {"acquire": {"channels": ["Phase", "DAPI"], "loops": 2, "interval_s": 30}},
        "cooldown_s": 1800,
        "cooldown_radius_um": 20,
    },
]


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, list[int]]:
    prof = load_profile("sim")
    prof = prof.replace(simulation=prof.simulation.replace(time_acceleration=40).model_dump())
    seq = demo_sequence(prof, timepoints=14, positions=2)
    out = tmp_path_factory.mktemp("faults") / "run"
    killed_at: list[int] = []

    def inject(sup: WorkerSupervisor) -> None:
        def killer() -> None:
            state = out / "results" / "state.json"
            while True:  # once 5 fields of each position are analysed, kill the worker
                try:
                    done = json.loads(state.read_text())["done"]
                except (OSError, ValueError, KeyError):
                    done = {}
                if len(done) == 2 and min(done.values()) >= 4:
                    killed_at.append(max(done.values()))
                    sup.kill()
                    return
                time.sleep(0.05)

        threading.Thread(target=killer, daemon=True).start()

    summary = run_adaptive(prof, seq, out, policies=POLICIES, on_supervisor=inject)
    return summary, out, killed_at


def test_the_killed_worker_is_restarted_and_nothing_is_lost(faulty_run) -> None:
    summary, out, killed_at = faulty_run
    assert killed_at, "the worker was never killed"
    assert summary["worker_restarts"] == 1
    frames = read_frames(out)
    planned = {(f["position"], f["index"]["t"], f["channel"]) for f in frames if not f["added_by"]}
    assert len(planned) == 14 * 2 * 2  # the recording has no gap
    assert summary["dropped_recorded_frames"] == 0
    assert summary["frames_analysed"] == 14 * 2 * 2  # missed fields were read back
    rows = _rows(out)
    fields = {(r["position"], int(r["t"])) for r in rows}
    assert fields == {(p, t) for p in ("p0", "p1") for t in range(14)}
    assert len(rows) == len({(r["position"], r["t"], r["label"]) for r in rows})  # once each


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "results" / "cells.csv").open() as f:
        return list(csv.DictReader(f))


def _true_cell(out: Path, pos: str, t: int, y: float, x: float) -> int:
    m = tifffile.imread(out / "ground_truth" / pos / "cell_ids" / f"t{t:04d}.tif")
    return int(m[round(y), round(x)])


def test_tracks_keep_their_ids_across_the_restart(faulty_run) -> None:
    _, out, killed_at = faulty_run
    rows = _rows(out)
    track_of: dict[tuple[str, int], dict[int, int]] = defaultdict(dict)
    for r in rows:
        cid = _true_cell(out, r["position"], int(r["t"]), float(r["y"]), float(r["x"]))
        if cid:
            track_of[(r["position"], int(r["t"]))][cid] = int(r["track"])
    # the first field analysed after the restart continues the last one before it
    state = json.loads((out / "results" / "state.json").read_text())
    assert state["counts"]["restarts"] == 1
    kept = total = 0
    for pos in ("p0", "p1"):
        for t in range(killed_at[0] - 1, killed_at[0] + 3):
            before, after = track_of[(pos, t)], track_of[(pos, t + 1)]
            for cid in set(before) & set(after):
                total += 1
                kept += before[cid] == after[cid]
    assert total > 30
    assert kept / total >= 0.9, (kept, total)


def test_a_policy_that_raises_is_disabled_and_the_run_goes_on(faulty_run) -> None:
    summary, out, _ = faulty_run
    disabled = {d["rule"]: d["error"] for d in summary["policies_disabled"]}
    assert "crowd alarm: the user's own bug" in disabled["crowded-alarm"]
    assert summary["decisions"]["accepted"] >= 1  # the other rules went on deciding
    log = (out / "results" / "worker.log").read_text()
    assert "crowded-alarm" in log
    assert "disabled" in log


def test_a_guardrail_breach_is_rejected_never_executed(faulty_run) -> None:
    summary, out, _ = faulty_run
    text = (out / "results" / "policy.jsonl").read_text()
    fired = [json.loads(line) for line in text.splitlines()]
    fast = [f for f in fired if f["rule"] == "too-fast"]
    assert len(fast) == 2
    assert all(f["verdict"] == "rejected" and f["stage"] == "guardrail" for f in fast)
    assert all("min_interval_s" in f["reason"] for f in fast)
    sent = [d for d in read_decisions(out) if "decision" in d]
    assert not [d for d in sent if d["decision"]["rule"] == "too-fast"]  # never reached the agent
    added_by = {f["added_by"] for f in read_frames(out) if f["added_by"]}
    accepted = {d["decision"]["decision_id"] for d in sent if d["ack"]["accepted"]}
    assert added_by == accepted  # only accepted decisions added frames
    assert summary["decisions"]["rejected_by_guardrails"] == 2
    # what the agent got is traceable: the frame, the rule, the inputs, the engines
    d = sent[0]["decision"]
    assert d["seq"] is not None
    assert d["rule"] == "closeup"
    assert d["inputs"]["track"] > 0
    # the engines whose outputs the decisions saw: the DAPI frame was segmented and no
    # rule reads the `stain` feature, so the virtual stain (the overlay's) is not one
    assert set(d["engines"]) == {"nuclei-unet", "cell-state"}
    assert np.all([len(v) == 64 for v in d["engines"].values()])
