"""The fast fields' share of stalls beside the slow fields', in the demo's table and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

STALLS = {"over_2ms_per_s": 2.1, "max_ms": 9.5, "slow_fields": 10, "slow_fields_in_a_stall": 2,
          "fast_fields": 600, "fast_fields_in_a_stall": 31}  # fmt: skip


def test_the_demo_table_shows_the_fast_fields_beside_the_slow(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from livescope.cli._app import _print_demo
    from livescope.cli._common import stderr

    monkeypatch.setattr(stderr, "width", 200)  # one line per row
    summary = {
        "frames_acquired": 10, "timepoints": 2, "positions": ["p0"], "channels": ["DAPI"],
        "duration_s": 1.0, "fps": 10.0, "frames_analysed": 4,
        "decisions": {"accepted": 1, "rejected": 0}, "trigger_precision": None,
        "trigger_recall": None, "evaluation": None, "latency_ms": {}, "mitosis_to_trigger_s": None,
        "machine_stalls": STALLS, "dropped_analysis_frames": 0, "dropped_recorded_frames": 0,
        "recording": "r", "report": "r.html", "out": "o",
    }  # fmt: skip
    _print_demo(summary)
    assert "in 2 of 10 slow fields, 31 of 600 fast" in capsys.readouterr().err
    # a summary from before the fast fields were counted
    old = {k: v for k, v in STALLS.items() if not k.startswith("fast")}
    _print_demo({**summary, "machine_stalls": old})
    err = capsys.readouterr().err
    assert "in 2 of 10 slow fields" in err
    assert "fast" not in err.split("in 2 of 10 slow fields")[1].splitlines()[0]


def test_the_report_shows_the_fast_fields_beside_the_slow(tmp_path: Path) -> None:
    from livescope.view import write_report

    (tmp_path / "summary.json").write_text(json.dumps({"ok": True, "machine_stalls": STALLS}))
    (tmp_path / "frames.jsonl").write_text("")
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "in fast fields (over their overhead)" in page
    assert "2 of 10 · 31 of 600" in page
