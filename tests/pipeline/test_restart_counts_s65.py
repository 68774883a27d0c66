"""A restarted worker's counts: each state saved counts the fields up to its ``done``, no more.

The state of a field is taken when it is decided, but the main thread has usually
analysed the next field or two by then: a state that counted those, resumed from,
had them analysed (and counted) twice (``frames_analysed`` above the frames written).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from livescope.pipeline import PipelineWorker, WorkerConfig, WorkerSupervisor, run_adaptive
from livescope.record import read_frames
from livescope.schema import load_profile
from livescope.scope import demo_sequence, run_simulated

NO_ENGINES = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)

FIELD_COUNTS = ("fields_analysed", "frames_analysed", "dropped_live", "frames_dropped_live")
"""What the main thread counts per field analysed (all read back: a recorded run)."""


def test_each_saved_state_counts_the_fields_up_to_its_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prof = load_profile("sim")
    run = tmp_path / "run"
    timepoints = 5
    run_simulated(prof, demo_sequence(prof, timepoints=timepoints, positions=1), run, seed=3)
    frames_at = [0] * timepoints
    for f in read_frames(run):
        frames_at[f["index"]["t"]] += 1
    w = PipelineWorker(run, NO_ENGINES)
    real_decide, real_save = w._decide, w._save_state
    saved: list[tuple[int, dict[str, int]]] = []

    def decide(job: Any) -> None:
        # as when the engines are quicker than the decisions: each field is decided once
        # the main thread has analysed (and counted) the next one
        if job.fld.t < timepoints - 1:
            deadline = time.monotonic() + 30
            while w.counts["fields_analysed"] < job.fld.t + 2 and time.monotonic() < deadline:
                time.sleep(0.005)
        real_decide(job)

    def save(state: dict[str, Any] | None = None, **kw: Any) -> None:
        if state is not None:  # (each field's; the run's end saves its own)
            counts = state["counts"]
            saved.append((state["done"]["p0"], {k: counts.get(k, 0) for k in FIELD_COUNTS}))
        real_save(state, **kw)

    monkeypatch.setattr(w, "_decide", decide)
    monkeypatch.setattr(w, "_save_state", save)
    summary = w.run(attach_timeout_s=0.1)
    assert summary["fields_analysed"] == timepoints
    assert [done for done, _ in saved] == list(range(timepoints))
    for done, counts in saved:  # a worker resumed from it counts the fields after done
        frames = sum(frames_at[: done + 1])
        assert counts == {
            "fields_analysed": done + 1, "frames_analysed": frames,
            "dropped_live": done + 1, "frames_dropped_live": frames,
        }, f"the state saved at done={done}"  # fmt: skip


class SlowDecisions:
    """A Python policy that takes ``seconds`` over each field (and never fires)."""

    def __init__(self, name: str, seconds: float = 1.0) -> None:
        self.name = name
        self.seconds = seconds

    def decide(self, obs: Any) -> list[Any]:
        time.sleep(self.seconds)
        return []


@pytest.mark.slow
def test_a_worker_killed_twice_counts_each_field_once(tmp_path: Path) -> None:
    # a real run: agent, bus, supervised worker process; the worker is killed (SIGKILL)
    # once 3 fields are done, and the restarted one as it saves its first field; its
    # decisions (a policy of 1.5 s a field) are slower than the fields come (one a second):
    # the main thread, which does not wait for them, has analysed the next fields by then
    prof = load_profile("sim")
    prof = prof.replace(simulation=prof.simulation.replace(time_acceleration=120).model_dump())
    timepoints = 13
    seq = demo_sequence(prof, timepoints=timepoints, positions=1)
    out = tmp_path / "run"
    slow = {"name": "slow", "python": f"{__name__}:SlowDecisions", "args": {"seconds": 1.5}}
    killed: list[int] = []

    def inject(sup: WorkerSupervisor) -> None:
        def killer() -> None:
            results = out / "results"
            at = 2
            for _ in range(2):
                while (done := _done(results)) < at:
                    time.sleep(0.002)
                first, ready = sup.proc, _read(results / "ready")
                sup.kill()
                killed.append(done)
                at = done + 1  # (the restarted worker's first field stored)
                while sup.proc is first or _read(results / "ready") == ready:  # restarted
                    time.sleep(0.01)

        threading.Thread(target=killer, daemon=True).start()

    cfg = WorkerConfig(stain=None, states=None)
    summary = run_adaptive(prof, seq, out, policies=[slow], worker=cfg, on_supervisor=inject)
    assert len(killed) == 2, killed
    assert summary["worker_restarts"] == 2
    assert summary["frames_written"] == summary["frames_acquired"]
    assert summary["frames_analysed"] == summary["frames_written"]
    assert summary["fields_analysed"] == timepoints


def _done(results: Path) -> int:
    """The last field of p0 the worker's saved state says is done (-1: none yet)."""
    try:
        return int(json.loads((results / "state.json").read_text())["done"]["p0"])
    except (OSError, ValueError, KeyError):
        return -1


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
