"""Replay of a livescope recording: the same results and decisions every time (issue 8).

One short adaptive run on the simulated microscope (real agent, bus, supervised
worker process, engines and a rule that fires), then two replays of its
recording at full speed: one through the ``livescope replay`` command, one
through `run_replay`. Both must reproduce the live run's per-cell table, masks,
tracks and policy firings, and each other's.
"""

from __future__ import annotations

import csv
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.pipeline import run_adaptive, run_replay
from livescope.record import RecordingReader, read_decisions, read_frames
from livescope.schema import LivescopeError, load_profile
from livescope.scope import demo_sequence

from ..conftest import run_cli

pytestmark = pytest.mark.slow

POLICIES = [
    {  # fires at every position once in a while: a close-up of one time point
        "name": "crowded",
        "when": {"cell_count": {"above": 1}},
        "do": {"acquire": {"channels": ["DAPI"], "loops": 2, "interval_s": 20}},
        "cooldown_s": 500,
    },
    {
        "name": "mitosis-note",
        "when": {"mitosis": {"frames": 1}},
        "do": {"record": {}},
    },
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    prof = load_profile("sim")
    prof = prof.replace(simulation=prof.simulation.replace(time_acceleration=40).model_dump())
    seq = demo_sequence(prof, timepoints=8, positions=2)
    out = tmp_path_factory.mktemp("live") / "run"
    return run_adaptive(prof, seq, out, policies=POLICIES, seed=3), out


@pytest.fixture(scope="module")
def replays(live, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, dict, Path]:
    _, rec = live
    base = tmp_path_factory.mktemp("replays")
    a = base / "cli"
    res = run_cli("replay", str(rec), "--out", str(a), "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    summary_a = json.loads(res.stdout)
    b = base / "api"
    summary_b = run_replay(rec, b)
    return summary_a, a, summary_b, b


def _cells(run: Path) -> list[tuple]:
    with (run / "results" / "cells.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r.pop("seq")  # frame numbers of the replay's own recording
        # the overlay's virtual stain is left out of a field while the worker is a time
        # point behind (a matter of timing), and with it the cells' mean stain
        r.pop("stain")
    return sorted(tuple(r.values()) for r in rows)


def _firings(run: Path, last_t: int | None = None) -> list[dict]:
    """Policy firings without ids, clocks and frame numbers.

    In a live run, decisions answering the plan's last time point may find the
    run over (the agent finishes while the worker still analyses it): with
    ``last_t`` their verdicts are left out (a replay waits for them); the
    firings stay.
    """
    out = []
    for line in (run / "results" / "policy.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec.pop("seq")
        rec.pop("engines")
        if rec["decision"] is not None:
            for k in ("decision_id", "run_id", "seq", "t_sent_ns", "t_created_ns"):
                rec["decision"].pop(k, None)
        if rec["t"] == last_t:
            for k in ("verdict", "stage", "reason"):
                rec.pop(k)
        else:
            rec["reason"] = rec["reason"].split("what-if: ")[0]  # the live agent's has no note
        out.append(rec)
    return sorted(out, key=lambda r: (r["t"], r["position"], r["rule"], str(r["track"])))


def _masks(run: Path) -> dict[str, bytes]:
    ctc = run / "results" / "ctc"
    return {
        str(p.relative_to(ctc)): tifffile.imread(p).tobytes() for p in sorted(ctc.rglob("*.tif"))
    }


def _tracks(run: Path) -> dict[str, str]:
    ctc = run / "results" / "ctc"
    return {str(p.relative_to(ctc)): p.read_text() for p in sorted(ctc.rglob("res_track.txt"))}


def test_replay_command_writes_results_report_and_what_if_decisions(live, replays) -> None:
    live_summary, rec = live
    summary, out, _, _ = replays
    for key in ("frames_analysed", "decisions", "report", "out", "deterministic"):
        assert key in summary, key
    assert summary["out"] == str(out.resolve())
    assert "Replay overhead" in Path(summary["report"]).read_text(encoding="utf-8")
    assert summary["deterministic"] is True
    planned = [f for f in read_frames(rec) if not f.get("added_by")]
    assert summary["frames_analysed"] == len(planned)  # every recorded planned frame
    assert summary["decisions"]["what_if"] >= 1
    logged = read_decisions(out)
    assert logged
    assert all(r.get("what_if") for r in logged)
    assert live_summary["decisions"]["accepted"] >= 1  # the rule fired in the live run too
    over = summary["replay_overhead"]
    assert 0.0 <= over["share"] < 1.0
    assert over["fields"] == summary["fields_analysed"]


def test_replays_reproduce_the_live_run_and_each_other(live, replays) -> None:
    live_summary, rec = live
    _, a, _, b = replays
    last_t = max(int(f["index"].get("t", 0)) for f in read_frames(rec))
    assert _cells(a) == _cells(b)
    assert _masks(a) == _masks(b)
    assert _tracks(a) == _tracks(b)
    assert _firings(a) == _firings(b)
    assert any(f["rule"] == "crowded" and f["verdict"] == "accepted" for f in _firings(a))
    # the live run analysed every field as it came (none read back late): same results
    assert live_summary["fields_analysed_late"] == 0
    assert _cells(rec) == _cells(a)
    assert _masks(rec) == _masks(a)
    assert _tracks(rec) == _tracks(a)
    assert _firings(rec, last_t) == _firings(a, last_t)


def test_a_replay_of_a_simulated_recording_is_scored_against_its_ground_truth(
    live, replays
) -> None:
    """The recording's ground truth scores the replay's mitosis triggers: as the live run's."""
    live_summary, rec = live
    summary_a, _, summary_b, _ = replays
    ev = live_summary["evaluation"]
    assert ev["triggers_fired"] >= 1  # the mitosis rule fired in the live run
    assert ev["mitoses_observable"] >= 1
    for summary in (summary_a, summary_b):
        got = summary["evaluation"]
        assert got["ground_truth"] == str((rec / "ground_truth").resolve())
        assert summary["trigger_precision"] == live_summary["trigger_precision"]
        assert summary["trigger_recall"] == live_summary["trigger_recall"]
        for key in ("triggers_fired", "triggers_correct", "mitoses_observable"):
            assert got[key] == ev[key], key
        # the same tracks as live (same masks): the same scores, every position scored
        assert summary["tracking"] == live_summary["tracking"]
    assert set(live_summary["tracking"]) == {"p0", "p1"}
    assert all("tra" in sc for sc in live_summary["tracking"].values())


def test_replay_serves_recorded_frames_bit_for_bit(live, replays) -> None:
    _, rec = live
    _, a, _, _ = replays
    src = {
        (f["position"], f["index"].get("t", 0), f["channel"], f["index"].get("z", 0)): f
        for f in read_frames(rec)
    }
    served = read_frames(a)
    assert len(served) >= len([f for f in src.values() if not f.get("added_by")])
    for f in served:
        key = (f["position"], f["index"].get("t", 0), f["channel"], f["index"].get("z", 0))
        assert key in src, key
        assert f["adler32"] == src[key]["adler32"], key  # close-ups served too
        assert f["sample_time_s"] == src[key]["sample_time_s"], key
    reader = RecordingReader(a)
    frame = reader.read(served[0])
    assert zlib.adler32(np.ascontiguousarray(frame).data.cast("B")) == served[0]["adler32"]


def test_replay_refuses_a_folder_in_use_and_a_bad_speed(live, tmp_path: Path) -> None:
    _, rec = live
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    with pytest.raises(LivescopeError, match="not empty"):
        run_replay(rec, busy)
    with pytest.raises(LivescopeError, match=r"replay speed must be a number > 0 .*got"):
        run_replay(rec, tmp_path / "new", speed=0)
    res = run_cli("replay", str(rec), "--speed", "fast", "--out", str(tmp_path / "o"), "--json")
    assert res.returncode == 2
    assert "use realtime, max or a factor" in json.loads(res.stdout)["error"]


def test_a_replay_on_another_profile_is_scored_with_the_recordings_simulation(
    live, tmp_path: Path
) -> None:
    """Scored with the simulation the recording was made with, whatever the replay runs on."""
    _, rec = live
    summary = run_replay(rec, tmp_path / "r", profile="replay")
    assert summary["profile"] == "replay"
    assert summary["evaluation"]["ground_truth"] == str((rec / "ground_truth").resolve())
    assert "triggers" in summary["evaluation"]
    assert set(summary["tracking"]) == {"p0", "p1"}
    assert all("tra" in sc for sc in summary["tracking"].values())
    assert not any("not scored" in w for w in summary["warnings"])


def test_a_recording_whose_own_profile_is_not_simulated_is_not_scored_and_says_why(
    live, tmp_path: Path
) -> None:
    _, rec = live
    copy = tmp_path / "rec"
    shutil.copytree(rec, copy, ignore=shutil.ignore_patterns("report.html"))
    replay_profile = Path(__file__).parents[2] / "hardware_profiles" / "replay.yaml"
    (copy / "profile.yaml").write_text(replay_profile.read_text(encoding="utf-8"))
    summary = run_replay(copy, tmp_path / "r")
    assert summary["trigger_precision"] is None
    assert "triggers" not in summary["evaluation"]
    assert summary["tracking"] is None
    assert any("is not simulated: the replay is not scored" in w for w in summary["warnings"])


def test_ground_truth_is_scored_with_a_simulated_profile_or_refused_before_acquiring(
    tmp_path: Path,
) -> None:
    prof = load_profile("replay")
    seq = demo_sequence(load_profile("sim"), timepoints=1, positions=1)
    with pytest.raises(LivescopeError, match="'replay' is not one"):
        run_adaptive(prof, seq, tmp_path / "out", ground_truth=(tmp_path, prof))
    assert not (tmp_path / "out" / "data.ome.zarr").exists()
