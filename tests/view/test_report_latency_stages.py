"""The report's Latency section shows every stage of the run summary's ``latency_ms``.

results/latency.jsonl has the worker's stages per field; the summary adds the frame bus's
hops (``camera_to_agent``, ``agent_to_sent``, ``sent_to_received``) and the decisions'
``decision_executed`` (decision → its first added frame), which the report left out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from livescope.view import write_report

from .test_report_robustness import make_run, not_drawn, notes, section

BUS_HOPS = {
    "camera_to_agent": {"p50": 0.279, "p99": 8.69},
    "agent_to_sent": {"p50": 0.189, "p99": 2.68},
    "sent_to_received": {"p50": 1.28, "p99": 36.6},
}
ACKED_NS = {"d1": 1_000_000_000, "d2": 2_000_000_000}
FIRST_FRAME_NS = {"d1": 1_042_500_000, "d2": 2_017_250_000}  # 42.5 and 17.25 ms later
EXECUTED_MS = [42.5, 17.25]


def _rows(page: str) -> dict[str, list[str]]:
    """The Latency table's rows, by stage: the text of each cell."""
    rows = {}
    for tr in re.findall(r"<tr>(.*?)</tr>", section(page, "latency"), re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)
        if cells:
            rows[cells[0]] = cells
    return rows


def _with_decisions(run: Path, latency_ms: dict[str, Any]) -> Path:
    """Give ``run`` two carried-out decisions (their acks and added frames) and ``latency_ms``."""
    with (run / "decisions.jsonl").open("w", encoding="utf-8") as fh:
        for d, t in ACKED_NS.items():
            decision = {"decision_id": d, "rule": "mitosis-burst", "type": "add_events"}
            ack = {"decision_id": d, "accepted": True, "t_acked_ns": t}
            fh.write(json.dumps({"decision": decision, "ack": ack}) + "\n")
    with (run / "frames.jsonl").open("a", encoding="utf-8") as fh:
        for i, (d, t) in enumerate(FIRST_FRAME_NS.items()):
            for k in range(2):  # (the second frame is not the decision's first)
                frame = {"seq": 100 + 2 * i + k, "position": f"p0~mitosis-burst-{i}",
                         "channel": "DAPI", "index": {"t": k, "z": 0},
                         "sample_time_s": 60.0 + k, "added_by": d,
                         "t_camera_ns": t + k * 10**9}  # fmt: skip
                fh.write(json.dumps(frame) + "\n")
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    summary["latency_ms"] = latency_ms
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return run


def _summary_latency() -> dict[str, Any]:
    """``latency_ms`` as the run's summary says it (`livescope.pipeline._demo`)."""
    a = np.asarray(EXECUTED_MS)
    return {
        "segment": {"p50": 6.5, "p99": 7.93},
        "end_to_end": {"p50": 21.5, "p99": 22.97},
        **BUS_HOPS,
        "decision_executed": {
            "p50": round(float(np.percentile(a, 50)), 3),
            "p99": round(float(np.percentile(a, 99)), 3),
        },
    }


def test_every_stage_of_the_summary_is_in_the_latency_table(tmp_path: Path) -> None:
    run = _with_decisions(make_run(tmp_path / "run"), _summary_latency())
    page = write_report(run).read_text(encoding="utf-8")
    assert not_drawn(page) == []
    rows = _rows(page)
    # the bus's hops: in the summary only, its p50 and p99 shown and said to be its
    for stage, v in BUS_HOPS.items():
        assert stage in rows, f"{stage} is not in the report's latency table: {list(rows)}"
        assert rows[stage][2:4] == [str(v["p50"]), str(v["p99"])], rows[stage]
        assert "run summary" in rows[stage][-1], rows[stage]
    # the decisions' execution latency: computed from the run's files as the summary does
    executed = rows.get("decision_executed")
    assert executed is not None, f"decision_executed is not in the latency table: {list(rows)}"
    assert executed[1:5] == ["2", "29.9", "42.2", "42.5"], executed  # n, p50, p99, max
    assert "decisions.jsonl" in executed[-1], executed
    # latency.jsonl's stages as before, per field
    assert rows["segment"][1:5] == ["8", "6.5", "8", "8"], rows["segment"]
    assert "latency.jsonl" in rows["segment"][-1], rows["segment"]
    # camera → agent → bus → engines → decision → executed
    assert list(rows) == ["camera_to_agent", "agent_to_sent", "sent_to_received", "segment",
                          "decision_executed", "end_to_end"]  # fmt: skip


def test_without_the_decisions_file_decision_executed_is_the_summary_s(tmp_path: Path) -> None:
    run = _with_decisions(make_run(tmp_path / "run"), _summary_latency())
    (run / "decisions.jsonl").unlink()
    page = write_report(run).read_text(encoding="utf-8")
    executed = _rows(page).get("decision_executed")
    assert executed is not None
    assert executed[2:4] == ["29.9", "42.2"], executed
    assert "run summary" in executed[-1], executed


def test_a_damaged_summary_stage_costs_only_its_row(tmp_path: Path) -> None:
    latency_ms = {**_summary_latency(), "camera_to_agent": "oops", "agent_to_sent": [1, 2]}
    run = _with_decisions(make_run(tmp_path / "run"), latency_ms)
    page = write_report(run).read_text(encoding="utf-8")
    rows = _rows(page)
    assert "camera_to_agent" not in rows
    assert "agent_to_sent" not in rows
    assert rows["sent_to_received"][2] == "1.28"
    assert "decision_executed" in rows
    said = [n for n in notes(page) if "latency_ms" in n]
    assert any("camera_to_agent" in n and "agent_to_sent" in n for n in said), notes(page)


def test_without_a_latency_log_the_summary_stages_are_shown(tmp_path: Path) -> None:
    run = _with_decisions(make_run(tmp_path / "run"), _summary_latency())
    (run / "results" / "latency.jsonl").unlink()
    page = write_report(run).read_text(encoding="utf-8")
    rows = _rows(page)
    assert any("results/latency.jsonl is missing" in n for n in notes(page))
    assert rows["segment"][2:4] == ["6.5", "7.93"]
    assert "run summary" in rows["segment"][-1]
    assert rows["decision_executed"][2] == "29.9"
    assert list(rows)[:3] == list(BUS_HOPS)


def test_a_summary_latency_that_is_no_object_is_said(tmp_path: Path) -> None:
    run = _with_decisions(make_run(tmp_path / "run"), ["oops"])  # type: ignore[arg-type]
    page = write_report(run).read_text(encoding="utf-8")
    assert _rows(page)["segment"][1] == "8"  # (latency.jsonl's stages stand)
    assert any("latency_ms" in n and "no object" in n for n in notes(page)), notes(page)
