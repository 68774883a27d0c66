"""The readers of the worker's logs pass over a damaged line instead of raising.

A worker killed mid-write leaves a half line that the next one appends to; a full disk
leaves NUL bytes; an editor leaves anything. One such line failed every restart (the
logs are trimmed as a worker resumes) or lost the worker's summary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from livescope.pipeline import PipelineWorker, WorkerConfig
from livescope.pipeline._results import (
    behind_from_log,
    latency_from_log,
    read_revisions,
    trim_results,
)
from livescope.tracking import Revision
from tests.pipeline.conftest import said_damaged

NO_ENGINES = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)

# lines that name no field (`livescope.record.field_key`), whatever log they are in
NO_FIELD = [
    pytest.param(b'{"t": 1, "ms": {}}', id="no-position"),
    pytest.param(b'{"position": "p0", "ms": {}}', id="no-t"),
    pytest.param(b'{"position": "p0", "t": true, "ms": {}}', id="t-is-a-bool"),
    pytest.param(b'{"position": "p0", "t": 1.0, "ms": {}}', id="t-is-a-float"),
    pytest.param(b'{"position": "p0", "t": 1, "m{"position": "p0", "t": 1}', id="half-line-glued"),
    pytest.param(b'{"position": "p\xe9", "t": 1}', id="not-utf8"),
    pytest.param(b"\x00" * 24, id="nul-bytes-of-a-full-disk"),
    pytest.param(b"[1, 2]", id="json-array"),
]


def _write(path: Path, recs: list[dict[str, Any]], damaged: bytes, at: int) -> None:
    """Write ``recs`` as JSON lines with the line ``damaged`` before the ``at``-th."""
    lines = [json.dumps(r).encode() + b"\n" for r in recs]
    lines.insert(at, damaged + b"\n")
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize("damaged", NO_FIELD)
def test_trimming_drops_a_damaged_line_and_keeps_the_fields_it_kept(
    tmp_path: Path, damaged: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # (a KeyError, TypeError or LivescopeError here failed the restart; a bool or float
    # time point was taken for a field)
    res = tmp_path / "results"
    res.mkdir()
    logs: dict[str, list[dict[str, Any]]] = {
        "latency.jsonl": [
            {"position": "p0", "t": t, "seq": t, "live": True, "ms": {"engines": 1.0}}
            for t in range(4)
        ],
        "policy.jsonl": [{"rule": "r", "position": "p0", "t": t, "track": 1} for t in range(4)],
        "revisions.jsonl": [
            {"position": "p0", "t": t, "old": 2, "new": 3, "first": 0, "last": t} for t in range(4)
        ],
    }
    for name, recs in logs.items():
        _write(res / name, recs, damaged, at=2)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        trim_results(res, {"p0": 2}, {"p0": 1})
    for name, recs in logs.items():
        upto = 1 if name == "policy.jsonl" else 2
        want = "".join(json.dumps(r) + "\n" for r in recs if r["t"] <= upto)
        assert (res / name).read_text(encoding="utf-8") == want, name
        said = said_damaged(caplog, name)
        assert len(said) == 1, said
        assert "1 damaged line(s) dropped" in said[0]


def test_a_resumed_worker_survives_damaged_lines_in_its_logs(tmp_path: Path) -> None:
    # the supervisor restarted the worker until it gave up: the run went unanalysed
    res = tmp_path / "results"
    res.mkdir()
    (res / "state.json").write_text(json.dumps(
        {"version": 1, "run_id": "r", "done": {"p0": 2}, "counts": {}, "trackers": {},
         "class_cols": []}
    ))  # fmt: skip
    lat = [
        {"position": "p0", "t": t, "live": False, "ms": {"engines": 2.0 * (t + 1)}}
        for t in range(3)
    ]
    # (names its field, so trimming keeps it; its ms is damaged: left out of the figures)
    lat.insert(1, {"position": "p0", "t": 0, "live": False, "ms": None})
    _write(res / "latency.jsonl", lat, b'{"position": "p0", "t": 1, "ms": {"eng', at=2)
    _write(res / "revisions.jsonl", [], b'{"position": "p0", "old": 1}', at=0)
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    try:
        assert w.done == {"p0": 2}
        kept = [json.loads(x) for x in (res / "latency.jsonl").read_text().splitlines()]
        assert kept == lat
        assert (res / "revisions.jsonl").read_text() == ""
    finally:
        summary = w._finish(failed=True)
    assert summary["latency_ms"]["engines"]["n"] == 3
    assert summary["latency_ms"] == latency_from_log(_clean(tmp_path, lat[:1] + lat[2:]))


def _clean(tmp_path: Path, recs: list[dict[str, Any]]) -> Path:
    path = tmp_path / "clean.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


@pytest.mark.parametrize(
    "damaged",
    [
        pytest.param({"position": "p0", "t": 9, "live": True}, id="no-ms"),
        pytest.param({"position": "p0", "t": 9, "live": True, "ms": None}, id="ms-null"),
        pytest.param({"position": "p0", "t": 9, "live": True, "ms": [1, 2]}, id="ms-a-list"),
        *(
            pytest.param(
                {
                    "position": "p0",
                    "t": 9,
                    "live": True,
                    "ms": {"engines": 1.0, "camera_to_received": 1.0, "queue_wait": v},
                },
                id=f"value-{name}",
            )
            for name, v in (
                ("a-string", "7"),
                ("a-bool", True),
                ("null", None),
                ("nan", float("nan")),
            )
        ),
        pytest.param(b'{"position": "p0", "t": 1, "ms": {"engines": 1.0, "q', id="half-line"),
        pytest.param(
            b'{"position": "p0", "t": 1, "ms": {"engines": 1.0}, "x": "\xe9"}', id="not-utf8"
        ),
    ],
)
def test_the_latency_figures_leave_out_a_damaged_line(
    tmp_path: Path, damaged: dict[str, Any] | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # (a KeyError, AttributeError or LivescopeError here lost the worker's summary; a
    # string or bool was taken for a time, a NaN made every percentile NaN)
    good = [
        {"position": "p0", "t": t, "live": True,
         "ms": {"engines": 2.0 * (t + 1), "camera_to_received": 100.0 * (t + 1), "queue_wait": 5.0}}
        for t in range(3)
    ]  # fmt: skip
    line = damaged if isinstance(damaged, bytes) else json.dumps(damaged).encode()
    path = tmp_path / "latency.jsonl"
    _write(path, good, line, at=2)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        got = latency_from_log(path)
        behind = behind_from_log(path)
    assert got["engines"]["n"] == len(good)
    assert got == latency_from_log(_clean(tmp_path, good))
    assert behind == behind_from_log(_clean(tmp_path, good))
    assert behind["last"] == pytest.approx((300.0 + 5.0) / 1000)
    said = said_damaged(caplog, "latency.jsonl")
    assert len(said) == 2, said  # (the figures, and how far behind)
    assert all("1 damaged line(s) left out" in s for s in said)


@pytest.mark.parametrize(
    "damaged",
    [
        *NO_FIELD,
        pytest.param(b'{"position": "p0", "t": 1, "new": 3, "first": 0, "last": 1}', id="no-old"),
        pytest.param(
            b'{"position": "p0", "t": 1, "old": "2", "new": 3, "first": 0, "last": 1}',
            id="old-a-string",
        ),
        pytest.param(
            b'{"position": "p0", "t": 1, "old": 2, "new": 3, "first": 0, "last": 1.5}',
            id="last-a-float",
        ),
    ],
)
def test_the_revisions_leave_out_a_damaged_line(
    tmp_path: Path, damaged: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # (one raised as the worker ended, before its summary was written)
    res = tmp_path / "results"
    res.mkdir()
    good = [
        {"position": p, "t": t, "old": 2, "new": 3 + t, "first": 0, "last": t}
        for p in ("p0", "p1")
        for t in range(2)
    ]
    _write(res / "revisions.jsonl", good, damaged, at=1)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        got = read_revisions(res)
    assert got == {p: [Revision(2, 3 + t, 0, t) for t in range(2)] for p in ("p0", "p1")}
    said = said_damaged(caplog, "revisions.jsonl")
    assert len(said) == 1, said
    assert "1 damaged line(s) left out" in said[0]
