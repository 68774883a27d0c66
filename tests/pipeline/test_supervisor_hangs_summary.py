"""Hung workers in the run's summary, Windows exit statuses named, slow fields not taken for hangs.

Scripts stand in for workers (`_Scripted`); the tests write the agent's frame log
(``frames.jsonl``) themselves, as a recording run would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import useq

from livescope.pipeline import _demo
from livescope.pipeline._supervisor import _ended_by
from livescope.schema import load_profile
from tests.conftest import wait_for
from tests.pipeline.test_supervisor_hang_review import _record, _worker
from tests.pipeline.test_supervisor_review import _Scripted


def test_the_run_summary_counts_the_workers_taken_for_hung(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `livescope demo --json` and `livescope run` (both `run_adaptive`) gave the restarts
    # but not that the worker had hung: a deadlocked engine read as a crash
    out = tmp_path / "run"
    results = out / "results"
    made: list[_Scripted] = []

    class Hangs(_Scripted):  # the real supervisor; scripts stand in for its workers
        hang_timeout_s = 0.3
        script = _worker(results, stores=(("p0", 0, 0),))  # stores t=0, hangs on t=1
        resume_script = _worker(results, stores=(("p0", 1, 1),), then="finish")

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    def acquire(on_ready: Callable[[Any], None]) -> dict[str, Any]:
        on_ready(None)  # (the supervisor starts its worker and waits until it is ready)
        _record(made[0], (0, "p0", 0, None), (1, "p0", 1, None))
        return {"frames_acquired": 2, "frames_written": 2, "decisions_accepted": 0,
                "decisions_rejected": 0, "duration_s": 1.0}  # fmt: skip

    monkeypatch.setattr(_demo, "WorkerSupervisor", Hangs)
    try:
        summary = _demo.run_adaptive(
            load_profile("sim"), useq.MDASequence(time_plan={"interval": 120, "loops": 2}),
            out, acquire=acquire, watch_stalls=False,
        )  # fmt: skip
    finally:
        for sup in made:
            sup.stop_grace_s = 0.5
            sup.stop()
    assert (summary["worker_restarts"], summary["worker_hangs"]) == (1, 1)
    written = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert written["worker_hangs"] == 1


@pytest.mark.parametrize(
    ("code", "said"),
    [
        pytest.param(
            3221225477,
            "ended by 0xC0000005 STATUS_ACCESS_VIOLATION, a crash in native code",
            id="access-violation",
        ),
        pytest.param(0xC00000FD, "ended by 0xC00000FD STATUS_STACK_OVERFLOW", id="stack-overflow"),
        pytest.param(0xC0000409, "ended by 0xC0000409 STATUS_STACK_BUFFER_OVERRUN", id="overrun"),
        pytest.param(0xC0000374, "ended by 0xC0000374 STATUS_HEAP_CORRUPTION", id="heap"),
        pytest.param(3221225786, "ended by 0xC000013A STATUS_CONTROL_C_EXIT, a Ctrl+C", id="ctrl"),
        pytest.param(0xE06D7363, "ended by 0xE06D7363", id="unknown-large-code-in-hex"),
        pytest.param(-9, "killed by SIGKILL", id="posix-signal"),
        pytest.param(3, "", id="a-status-it-chose"),
        pytest.param(255, "", id="largest-posix-status"),
    ],
)
def test_a_worker_s_exit_is_named_by_its_windows_status_on_any_platform(
    code: int, said: str
) -> None:
    # a crashed worker on Windows was reported as "worker exited with 3221225477": a
    # number that says nothing until written 0xC0000005 (an access violation)
    text = _ended_by(code)
    assert text.startswith(said)
    assert bool(text) == bool(said)
    if code == 0xE06D7363:
        assert text == said  # (no meaning made up for a status not known)


def _slow_worker(results: Path, engines_ms: float, go: Path | None) -> str:
    """A ready worker that stores field (p0, 0) taking ``engines_ms``; then (p0, 1) once ``go``
    exists and exits, or (None) hangs."""
    rec = {"position": "p0", "t": 0, "seq": 0, "live": True,
           "ms": {"engines": engines_ms, "analyse_other": 0.5, "store": 0.5}}  # fmt: skip
    lines = [
        "import json, pathlib, sys, time",
        f"res = pathlib.Path({str(results)!r})",
        "(res / 'ready').write_text(str(time.time()))",
        f"with (res / 'latency.jsonl').open('a') as f: f.write({json.dumps(rec)!r} + '\\n')",
    ]
    if go is None:
        lines.append("sys.stdin.readline()")
    else:
        nxt = {**rec, "t": 1, "seq": 1}
        lines += [
            f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.01)",
            f"with (res / 'latency.jsonl').open('a') as f: f.write({json.dumps(nxt)!r} + '\\n')",
        ]
    return "\n".join(lines)


def test_a_worker_whose_fields_take_long_is_not_taken_for_hung(
    supervisors: Callable[..., _Scripted], tmp_path: Path
) -> None:
    # a large tiled field on a slow CPU: a worker taking 2 s a field (here; minutes on a
    # rig) was taken as hung after `hang_timeout_s` with no field stored, and restarted
    sup = supervisors(max_restarts=1)
    sup.hang_timeout_s = 0.2
    go = tmp_path / "go"
    sup.script = _slow_worker(sup.results, 2000.0, go)
    sup.resume_script = _worker(sup.results, stores=(("p0", 1, 1),), then="finish")
    sup.start()
    stored = sup.results / "latency.jsonl"
    wait_for(lambda: stored.is_file() and stored.read_text().endswith("\n"), timeout=30)
    _record(sup, (0, "p0", 0, None), (1, "p0", 1, None))  # its next field waits for it
    time.sleep(1.0)  # (5 times its hang_timeout_s; the supervisor looks every 0.02 s)
    assert len(sup.spawned) == 1  # (not ended, nor restarted)
    assert sup.hangs == 0
    go.touch()  # its slow field is done
    summary = sup.wait(10)
    assert summary["supervisor"] == {"restarts": 0, "exit_codes": [0]}


def test_a_worker_is_allowed_five_times_its_slowest_field_and_no_more(
    supervisors: Callable[..., _Scripted],
) -> None:
    sup = supervisors(max_restarts=1)
    sup.hang_timeout_s = 0.1
    sup.script = _slow_worker(sup.results, 99.0, None)  # 100 ms a field: 0.5 s allowed
    sup.resume_script = _worker(sup.results, stores=(("p0", 1, 1),), then="finish")
    sup.start()
    stored = sup.results / "latency.jsonl"
    wait_for(lambda: stored.is_file() and stored.read_text().endswith("\n"), timeout=30)
    recorded = time.monotonic()
    _record(sup, (0, "p0", 0, None), (1, "p0", 1, None))
    assert sup.wait(10)["supervisor"]["hangs"] == 1  # still hung, once that has passed
    assert sup.spawned[1] - recorded >= 5 * 0.1  # (a lower bound: its allowance)
