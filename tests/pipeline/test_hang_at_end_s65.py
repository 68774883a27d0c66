"""A worker that hangs after it stored the run's last field is ended and restarted.

One short run on the simulated microscope with the real agent, bus, supervised worker
process and engines (segmentation only): the worker is stopped (SIGSTOP, as a deadlock
in its end: closing the bus, the CTC rewrite, the decisions' drain) once it stored the
last field. No recorded frame waits for it then, and it was never taken as hung: the
run failed after `WorkerSupervisor.wait`'s timeout (600 s), leaving no CTC result, no
``worker.json`` and no report, although every field had been analysed. Now it is taken
as hung after `WorkerSupervisor.end_timeout_s` and restarted; the restarted worker
finishes the ended run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from livescope.pipeline import WorkerConfig, WorkerSupervisor, run_adaptive
from livescope.schema import load_profile
from livescope.scope import demo_sequence
from livescope.view import write_report

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP is POSIX's"),
]

_TIMEPOINTS = 5


def test_a_worker_that_hangs_after_the_last_field_is_restarted_and_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prof = load_profile("sim")
    prof = prof.replace(simulation=prof.simulation.replace(time_acceleration=40).model_dump())
    seq = demo_sequence(prof, timepoints=_TIMEPOINTS, positions=1)
    out = tmp_path / "run"
    stopped: list[dict[str, int]] = []
    # (the wait after the run short: one that never ends the worker fails in 30 s, not 600)
    wait = WorkerSupervisor.wait
    monkeypatch.setattr(WorkerSupervisor, "wait", lambda self, timeout_s=30.0: wait(self, 30.0))

    def inject(sup: WorkerSupervisor) -> None:
        sup.end_timeout_s = 3.0  # (no progress in its end for 3 s: hung)
        sup.stop_grace_s = 2.0
        proc = sup.proc
        assert proc is not None

        def stop_at_the_end() -> None:
            state = out / "results" / "state.json"
            while proc.poll() is None:  # once the last field is stored, the worker hangs
                try:
                    done: dict[str, int] = json.loads(state.read_text())["done"]
                except (OSError, ValueError, KeyError):
                    done = {}
                if done.get("p0", -1) >= _TIMEPOINTS - 1:
                    os.kill(proc.pid, signal.SIGSTOP)
                    stopped.append(done)
                    return
                time.sleep(0.01)

        threading.Thread(target=stop_at_the_end, daemon=True).start()

    summary: dict[str, Any] = run_adaptive(
        prof, seq, out, policies=[], worker=WorkerConfig(stain=None, states=None),
        on_supervisor=inject, watch_stalls=False,
    )  # fmt: skip
    assert stopped, "the worker was never stopped after its last field"
    assert summary["worker_hangs"] >= 1
    assert summary["worker_restarts"] >= 1
    assert summary["fields_analysed"] == _TIMEPOINTS
    results = out / "results"
    assert (results / "ctc" / "p0" / "res_track.txt").is_file()  # (its cells tracked)
    assert len((results / "cells.csv").read_text(encoding="utf-8").splitlines()) > _TIMEPOINTS
    worker = json.loads((results / "worker.json").read_text(encoding="utf-8"))
    assert worker["ok"] is True
    assert worker["resumed"] is True  # (the worker restarted after the hang finished the run)
    assert write_report(out).is_file()  # (as `livescope demo` writes it after the run)
