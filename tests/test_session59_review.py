"""Session 59's changes, reviewed: a damaged log line the readers did not pass over.

The supervisor's watching thread reads the worker's ``latency.jsonl`` and the
frame log for its hang check and its slowest-field allowance; a line nested too
deep for ``json`` (thousands of "[") or holding a number no int or float takes
(``Infinity`` as a frame number, an integer of hundreds of digits as ms) raised
there, ending the watching thread: the worker was no longer restarted or checked,
and `WorkerSupervisor.wait` returned at once, failing the run's analysis with
"exit codes []". The results' latency figures raised on such a number too, and the
worker's summary was lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from livescope.pipeline import WorkerConfig
from livescope.pipeline._results import behind_from_log, latency_from_log
from livescope.record import FRAMES_FILE
from tests.pipeline.test_supervisor_review import _Scripted

_GOOD = {"position": "p0", "t": 0, "seq": 0, "live": True,
         "ms": {"camera_to_received": 2.0, "queue_wait": 3.0, "engines": 40.0}}  # fmt: skip
_HUGE = "1" + "0" * 400  # (JSON's integers have no limit; no float holds this one)

_DAMAGED = [
    pytest.param("latency.jsonl", "[" * 100_000, id="nested-too-deep"),
    pytest.param("latency.jsonl", '{"position": "p0", "t": 1, "seq": Infinity}', id="seq-inf"),
    pytest.param(
        "latency.jsonl",
        '{"position": "p0", "t": 1, "seq": 1, "ms": {"engines": ' + _HUGE + "}}",
        id="ms-huge",
    ),
    pytest.param(FRAMES_FILE, '{"seq": 1e999, "position": "p0", "index": {"t": 1}}', id="frame"),
]


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[_Scripted]:
    sup = _Scripted(tmp_path / "run", WorkerConfig())
    sup.hang_timeout_s = 0.2  # (its logs read every 0.02 s)
    yield sup
    sup.stop_grace_s = 0.5
    sup.stop()


@pytest.mark.parametrize(("log", "line"), _DAMAGED)
def test_a_damaged_log_line_does_not_end_the_supervisors_watch(
    supervisor: _Scripted, log: str, line: str
) -> None:
    folder = supervisor.run_dir if log == FRAMES_FILE else supervisor.results
    (folder / log).write_text(json.dumps(_GOOD) + "\n" + line + "\n", encoding="utf-8")
    # a worker that becomes ready, works a while and finishes: the watching thread reads
    # the logs meanwhile
    supervisor.script = "\n".join([
        "import pathlib, time",
        f"pathlib.Path({str(supervisor.results / 'ready')!r}).write_text(str(time.time()))",
        "time.sleep(0.5)",
    ])  # fmt: skip
    supervisor.start()
    summary = supervisor.wait(30)  # (the watch ended at the damaged line: "exit codes []")
    assert summary["supervisor"] == {"restarts": 0, "exit_codes": [0]}


def test_latency_figures_leave_out_a_number_no_float_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "latency.jsonl"
    damaged = '{"position": "p0", "t": 1, "seq": 1, "live": true, "ms": {"engines": ' + _HUGE
    log.write_text(json.dumps(_GOOD) + "\n" + damaged + "}}\n", encoding="utf-8")
    figures = latency_from_log(log)
    assert figures["engines"]["n"] == 1
    assert figures["engines"]["p50"] == pytest.approx(40.0)
    assert "1 damaged line(s) left out of the latency figures" in caplog.text
    assert behind_from_log(log) == {"max": 0.005, "last": 0.005}
