"""The hang allowance follows the worker's recent fields; a damaged latency line is passed over.

`_Backlog` reads ``results/latency.jsonl`` as the supervisor's watching thread does;
scripts stand in for workers (`_Scripted`) where the hang check itself is tested.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from livescope.pipeline._results import _stage_ms, latency_from_log
from livescope.pipeline._supervisor import _Backlog
from tests.conftest import wait_for
from tests.pipeline.test_supervisor_hang_review import _record
from tests.pipeline.test_supervisor_review import _Scripted

_HOUR_MS = 3_600_000.0


def _field(seq: int, engines_ms: float) -> str:
    """A ``latency.jsonl`` line of field (p0, seq) that took the worker ``engines_ms`` + 1 ms."""
    ms = {"queue_wait": 7.0, "engines": engines_ms, "analyse_other": 0.5, "store": 0.5}
    rec = {"position": "p0", "t": seq, "seq": seq, "live": True, "ms": ms}
    return json.dumps(rec) + "\n"


def _append(log: Path, *lines: str) -> None:
    with log.open("a", encoding="utf-8") as f:
        f.write("".join(lines))


@pytest.fixture
def backlog(tmp_path: Path) -> _Backlog:
    (tmp_path / "results").mkdir()
    return _Backlog(tmp_path, tmp_path / "results", analyse_added=False)


def test_a_field_that_took_an_hour_once_stops_counting_once_later_fields_are_quick(
    backlog: _Backlog, tmp_path: Path
) -> None:
    # the PC slept mid-field: that one field took an hour, and the worker was allowed 5
    # hours for every field after it, all run, before it was taken as hung
    log = tmp_path / "results" / "latency.jsonl"
    _append(log, _field(0, 9.0), _field(1, _HOUR_MS))
    backlog.read()
    assert backlog.slowest_ms == pytest.approx(_HOUR_MS + 1)
    _append(log, *(_field(seq, 9.0) for seq in range(2, 1002)))  # (hours of a run)
    backlog.read()
    assert backlog.slowest_ms == pytest.approx(10.0)


def test_a_slow_position_each_time_point_keeps_its_allowance(
    backlog: _Backlog, tmp_path: Path
) -> None:
    # a big tiled position among 96 (a 96-well plate): it takes minutes once a time point;
    # the worker must not be taken as hung in it each time the others were quick
    log = tmp_path / "results" / "latency.jsonl"
    for seq in range(0, 96 * 5, 96):  # five time points, read as the supervisor goes
        _append(log, _field(seq, 600_000.0), *(_field(s, 9.0) for s in range(seq + 1, seq + 96)))
        backlog.read()
        assert backlog.slowest_ms == pytest.approx(600_001.0)


def test_the_allowance_outlives_a_restarted_worker_rewriting_the_log(
    backlog: _Backlog, tmp_path: Path
) -> None:
    # a restarted worker runs the same engines on the same fields: it keeps the slow field's
    # allowance though it rewrote latency.jsonl (cut to the fields it does not redo)
    log = tmp_path / "results" / "latency.jsonl"
    _append(log, _field(0, 9.0), _field(1, 60_000.0), _field(2, 9.0))
    backlog.read()
    new = log.with_name("latency.jsonl.new")
    new.write_text(_field(0, 9.0), encoding="utf-8")
    os.replace(new, log)  # (a new file, as the worker's rewrite leaves it)
    stored, _ = backlog.read()
    assert stored
    assert backlog.slowest_ms == pytest.approx(60_001.0)


@pytest.mark.parametrize(
    "ms",
    [
        pytest.param('{"engines": 60000.0, "store": true}', id="bool"),
        pytest.param('{"engines": 60000.0, "store": null}', id="null"),
        pytest.param('{"engines": 60000.0, "queue_wait": "7"}', id="text-in-another-stage"),
        pytest.param('{"engines": 60000.0, "queue_wait": 1e999}', id="infinite-in-another-stage"),
    ],
)
def test_a_line_the_latency_figures_take_as_damaged_is_passed_over(
    backlog: _Backlog, tmp_path: Path, ms: str
) -> None:
    # the supervisor summed a line's stages its own way (true as 1 ms, null as 0): a line the
    # results leave out as damaged lifted the hang allowance for the rest of the run
    log = tmp_path / "results" / "latency.jsonl"
    damaged = '{"position": "p0", "t": 1, "seq": 1, "live": true, "ms": ' + ms + "}\n"
    _append(log, _field(0, 9.0), damaged)
    assert _stage_ms(json.loads(damaged)) is None
    assert latency_from_log(log)["engines"]["n"] == 1  # (the results leave it out)
    stored, _ = backlog.read()
    assert stored
    assert backlog.newest_stored == (1, ("p0", 1))  # (still a field stored)
    assert backlog.slowest_ms == pytest.approx(10.0)


def test_a_worker_hung_long_after_its_one_slow_field_is_found_out(
    supervisors: Callable[..., _Scripted],
) -> None:
    # the hang check itself: one field of a minute (5 minutes allowed, for good) and then a
    # thousand quick ones; the worker hangs, and is found out after hang_timeout_s
    sup = supervisors(max_restarts=1)
    sup.hang_timeout_s = 0.2  # (its logs read every 0.02 s)
    sup.script = "\n".join([
        "import json, pathlib, sys, time",
        f"res = pathlib.Path({str(sup.results)!r})",
        "(res / 'ready').write_text(str(time.time()))",
        f"quick = {json.loads(_field(0, 9.0))!r}",
        f"lines = [{_field(0, 60_000.0)!r}]",
        "lines += [json.dumps({**quick, 't': s, 'seq': s}) + '\\n' for s in range(1, 1001)]",
        "(res / 'latency.jsonl').write_text(''.join(lines))",
        "sys.stdin.readline()",  # (then hangs)
    ])  # fmt: skip
    sup.resume_script = sup.script
    sup.start()
    stored = sup.results / "latency.jsonl"
    wait_for(lambda: stored.is_file() and stored.read_text().count("\n") == 1001, timeout=30)
    _record(sup, (1001, "p0", 1001, None))  # its next field waits for it
    wait_for(lambda: sup.hangs >= 1, timeout=20)  # (not 300 s)
