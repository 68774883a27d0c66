"""The figures taken from ``latency.jsonl`` as a run ends come from one read of it.

A run of days holds hundreds of thousands of lines: the worker read the whole log
twice for its summary (``latency_ms``, ``behind_s``), the demo twice more (its slow
fields, how far behind). The figures are those of before, worked out by hand below
for a small log with a line that is no JSON and one whose ``ms`` is damaged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livescope.bus import StallMonitor
from livescope.pipeline import PipelineWorker, WorkerConfig
from livescope.pipeline._demo import _slow_fields
from livescope.pipeline._results import behind_from_log, latency_from_log
from tests.pipeline.conftest import said_damaged

NO_ENGINES = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)


def _field(t: int, t_start_ns: int, camera_ms: float, overhead_ms: float) -> dict[str, Any]:
    """A live field's line: engines 2 ms per t + 2, a 5 ms wait, 50 ms end to end."""
    ms = {"engines": 2.0 * (t + 1), "camera_to_received": camera_ms, "queue_wait": 5.0,
          "end_to_end": 50.0, "overhead": overhead_ms}  # fmt: skip
    return {"position": "p0", "t": t, "seq": t, "live": True, "t_start_ns": t_start_ns, "ms": ms}


LINES = [
    json.dumps(_field(0, 10**9, 100.0, 10.0)).encode(),  # slow, in the stall below
    b'{"position": "p0", "t": 1, "m{"position": "p0", "t": 1}',  # damaged: no JSON
    json.dumps(_field(1, 2 * 10**9, 50.0, 8.0)).encode(),  # slow, after the stall
    b'{"position": "p0", "t": 2, "live": true, "ms": null}',  # damaged: no ms
    # a recorded field: not behind
    json.dumps({"position": "p1", "t": 0, "live": False, "ms": {"engines": 6.0}}).encode(),
]

# numpy's percentiles (linear) of each stage's values, by hand: p = lo + q * (n - 1) steps
LATENCY_MS = {
    "engines": {"p50": 4.0, "p99": 5.96, "n": 3},  # 2, 4, 6: 4 + 0.98 * 2
    "camera_to_received": {"p50": 75.0, "p99": 99.5, "n": 2},  # 50, 100: 50 + 0.99 * 50
    "queue_wait": {"p50": 5.0, "p99": 5.0, "n": 2},
    "end_to_end": {"p50": 50.0, "p99": 50.0, "n": 2},
    "overhead": {"p50": 9.0, "p99": 9.98, "n": 2},  # 8, 10: 8 + 0.99 * 2
}
BEHIND_S = {"max": 0.105, "last": 0.055}  # (100 + 5) ms, then (50 + 5) ms
# t=0's span: camera time 1 s - 105 ms, 50 ms long; t=1's: 2 s - 55 ms, 50 ms long
SLOW = {"slow_fields": 2, "slow_fields_in_a_stall": 1}


def _run(tmp_path: Path) -> Path:
    """A run folder whose ``results/latency.jsonl`` holds `LINES`."""
    res = tmp_path / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "latency.jsonl").write_bytes(b"".join(line + b"\n" for line in LINES))
    return tmp_path


def _monitor() -> StallMonitor:
    """A monitor that saw one 10 ms stall, ending 5 ms into t=0's span (none in t=1's)."""
    mon = StallMonitor()
    mon.stalls = [(900 * 10**6, 10 * 10**6)]  # (woke at, late by), as `stop` keeps
    return mon


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count each opening of a ``latency.jsonl`` to read (its modes), from now on."""
    opened: list[str] = []
    real: Callable[..., Any] = Path.open

    def counting(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if self.name == "latency.jsonl" and "r" in mode:
            opened.append(mode)
        return real(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting)
    return opened


def test_the_figures_are_those_worked_out_by_hand(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = _run(tmp_path) / "results" / "latency.jsonl"
    with caplog.at_level(logging.WARNING, logger="livescope"):
        assert latency_from_log(log) == LATENCY_MS
        assert behind_from_log(log) == BEHIND_S
        assert _slow_fields(tmp_path, _monitor()) == SLOW
    said = said_damaged(caplog, "latency.jsonl")
    assert len(said) == 3, said  # (the figures, how far behind, the slow fields)
    assert all("2 damaged line(s) left out" in s for s in said)


def test_the_figures_of_a_log_read_once_are_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from livescope.pipeline._results import LatencyLog

    run = _run(tmp_path)
    opened = _count_reads(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        log = LatencyLog.read(run / "results" / "latency.jsonl")
        got = (latency_from_log(log), behind_from_log(log), _slow_fields(run, _monitor(), log))
    assert got == (LATENCY_MS, BEHIND_S, SLOW)
    assert len(opened) == 1, opened
    said = said_damaged(caplog, "latency.jsonl")
    assert len(said) == 3, said  # (each figure says what it left out, as before)
    assert all("2 damaged line(s) left out" in s for s in said)


def test_a_missing_log_read_once_holds_no_field(tmp_path: Path) -> None:
    from livescope.pipeline._results import LatencyLog

    log = LatencyLog.read(tmp_path / "latency.jsonl")
    assert latency_from_log(log) == latency_from_log(tmp_path / "latency.jsonl") == {}
    assert behind_from_log(log) == {"max": 0.0, "last": 0.0}
    assert _slow_fields(tmp_path, _monitor(), log) == {"slow_fields": 0,
                                                       "slow_fields_in_a_stall": 0}  # fmt: skip


def test_the_worker_reads_its_latency_log_once_as_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    w = PipelineWorker(tmp_path, NO_ENGINES)
    try:
        _run(tmp_path)  # (what the worker's processes logged: none appended by this one)
        opened = _count_reads(monkeypatch)
    finally:
        with caplog.at_level(logging.WARNING, logger="livescope"):
            summary = w._finish(failed=True)
    assert len(opened) == 1, opened
    assert summary["latency_ms"] == LATENCY_MS
    assert summary["behind_s"] == BEHIND_S
    said = said_damaged(caplog, "latency.jsonl")
    assert len(said) == 2, said  # (the figures, and how far behind)
    assert all("2 damaged line(s) left out" in s for s in said)
