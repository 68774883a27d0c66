"""The report's Channels and Time points rows say what the run took, replays included.

The summary's ``channels`` are the recording's channel axis (the plan's channels, then
every other preset of the rig): a one-channel replay's report listed "Fluo, Phase, DAPI".
A replay's summary has no ``timepoints``: its report said "—".
"""

from __future__ import annotations

import json
from pathlib import Path

from livescope.view import write_report

from .test_report_robustness import make_run, section


def _rows(run: Path) -> str:
    return section(write_report(run).read_text(encoding="utf-8"), "summary")


def test_the_channels_row_lists_the_channels_taken_not_the_rigs(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")  # (its frames: DAPI only)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    summary["channels"] = ["DAPI", "Phase", "GFP", "mCherry"]  # (the recording's axis)
    del summary["timepoints"]  # (as a replay's summary)
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    rows = _rows(run)
    assert "<th>Channels</th><td>DAPI</td>" in rows
    assert "<th>Time points</th><td>4</td>" in rows


def test_a_channel_only_a_close_up_added_is_not_a_channel_of_the_plan(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", timepoints=3)
    closeup = [{"seq": 100 + t, "position": "p0~burst-0", "channel": "GFP",
                "index": {"t": t, "z": 0, "c": 1}, "sample_time_s": 61.0 + 5 * t,
                "added_by": "d-1"} for t in range(5)]  # fmt: skip
    with (run / "frames.jsonl").open("a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(f) + "\n" for f in closeup)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    del summary["timepoints"]
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    rows = _rows(run)
    assert "<th>Channels</th><td>DAPI</td>" in rows
    assert "<th>Time points</th><td>3</td>" in rows  # (not the close-up's 5)


def test_the_summarys_time_points_are_kept_where_it_has_them(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", timepoints=2)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    summary["timepoints"] = 30  # (a run stopped after 2 of its plan's 30)
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    assert "<th>Time points</th><td>30</td>" in _rows(run)


def test_without_frames_the_summarys_channels_are_shown(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (run / "frames.jsonl").write_text("", encoding="utf-8")
    assert "<th>Channels</th><td>DAPI</td>" in _rows(run)
