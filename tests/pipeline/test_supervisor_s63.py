"""A worker killed as it starts, fields read back counted as missing, restarts under-counted.

- `run_adaptive` failed the run with "the pipeline worker did not start: killed by
  SIGKILL" while its supervisor was restarting the worker: a worker killed from outside
  before it was ready (the OOM killer, a user) is now waited for, one that fails by itself
  (an error, a crash) still fails the run at once, and one the supervisor gave up on too.
- Each field a worker read back from the recording was counted in ``fields_missing``
  ("neither received nor recorded: not analysed") once analysed: the frame log's mapping
  it checked had lost the field's entry as the field was analysed.
- A restarted worker killed before it stored a field left the next one to count its
  restarts from the state the one before it saved: ``worker.json``'s ``restarts`` said 1
  where the supervisor had restarted it twice. The supervisor tells each worker its number.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import useq

from livescope.pipeline import PipelineWorker, WorkerConfig, WorkerSupervisor, _demo
from livescope.schema import LivescopeError, load_profile
from livescope.scope import demo_sequence, run_simulated
from tests.pipeline.test_supervisor_review import _Scripted

NO_ENGINES = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)
WORKER_RESTART_ENV = "LIVESCOPE_WORKER_RESTART"  # (`_supervisor.WORKER_RESTART_ENV`)

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")


class _Started(Exception):
    """Raised by the stand-in acquisition once the worker is ready (the run started)."""


def _kills_itself(sig: signal.Signals) -> str:
    return f"import os, signal; os.kill(os.getpid(), signal.{sig.name})"


def _becomes_ready(results: Path) -> str:
    """A worker that becomes ready and runs until its stdin closes (the run stops it)."""
    return "\n".join([
        "import pathlib, sys, time",
        f"pathlib.Path({str(results)!r}, 'ready').write_text(str(time.time()))",
        "sys.stdin.read()",
    ])  # fmt: skip


def _start_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    first: str,
    resumed: str | None = None,
    *,
    made: list[_Scripted] | None = None,
    max_restarts: int = 5,
    restart_delay_s: float = 0.0,
) -> None:
    """Start `run_adaptive` with scripted workers until the worker is ready.

    ``resumed``: the restarted workers' script (None: one that becomes ready); ``made``
    gets the supervisor. Raises `_Started` once the worker is ready, or what the run's
    start raised.
    """
    out = tmp_path / "run"
    supervisors: list[_Scripted] = [] if made is None else made

    class Sup(_Scripted):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **{**kwargs, "max_restarts": max_restarts})
            self.restart_delay_s = restart_delay_s
            self.script = first
            self.resume_script = resumed or _becomes_ready(self.results)
            supervisors.append(self)

    def acquire(on_ready: Callable[[Any], None]) -> dict[str, Any]:
        on_ready(None)  # (the supervisor starts its worker and waits until it is ready)
        raise _Started

    monkeypatch.setattr(_demo, "WorkerSupervisor", Sup)
    try:
        _demo.run_adaptive(
            load_profile("sim"), useq.MDASequence(time_plan={"interval": 120, "loops": 2}),
            out, acquire=acquire, watch_stalls=False, ready_timeout_s=60,
        )  # fmt: skip
    finally:
        for sup in supervisors:
            sup.stop_grace_s = 0.5
            sup.stop()


# ------------------------------------------------------------------ 1. killed as it starts


@posix_only
def test_a_worker_killed_before_it_is_ready_is_restarted_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[_Scripted] = []
    with pytest.raises(_Started):  # (it was "did not start: killed by SIGKILL")
        _start_run(tmp_path, monkeypatch, _kills_itself(signal.SIGKILL), made=made)
    assert made[0].exits[0] == -signal.SIGKILL
    assert made[0].restarts == 1


@posix_only
def test_a_worker_killed_at_every_start_ends_the_run_once_the_supervisor_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed = _kills_itself(signal.SIGKILL)
    made: list[_Scripted] = []
    with pytest.raises(LivescopeError) as exc:
        _start_run(tmp_path, monkeypatch, killed, killed, made=made, max_restarts=2)
    assert str(exc.value) == (
        "the pipeline worker did not start: killed by SIGKILL (see "
        f"{tmp_path / 'run' / 'results' / 'worker.log'})"
    )
    assert made[0].gave_up
    assert made[0].exits == [-signal.SIGKILL] * 3  # (the first, and its 2 restarts)


@pytest.mark.parametrize(
    ("script", "said"),
    [
        pytest.param(
            "import sys; print('error: engine nuclei-unet: no such file: m.onnx', "
            "file=sys.stderr); sys.exit(1)",
            "engine nuclei-unet: no such file: m.onnx",
            id="exits-with-an-error",
        ),
        pytest.param(
            _kills_itself(signal.SIGSEGV),
            "killed by SIGSEGV",
            id="crashes-in-native-code",
            marks=posix_only,
        ),
    ],
)
def test_a_worker_that_fails_by_itself_before_it_is_ready_ends_the_run_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, said: str
) -> None:
    # a broken set-up (a model not there, a library that crashes as it loads) fails each
    # restart the same way: said at once, not after 5 restarts and ~31 s of pauses
    counted: list[Any] = []
    real = _Scripted._spawn

    def spawn(self: _Scripted, resume: bool) -> subprocess.Popen[bytes]:
        counted.append(resume)
        return real(self, resume)

    monkeypatch.setattr(_Scripted, "_spawn", spawn)
    with pytest.raises(LivescopeError) as exc:
        _start_run(tmp_path, monkeypatch, script, restart_delay_s=30.0)
    assert str(exc.value) == (
        f"the pipeline worker did not start: {said} (see "
        f"{tmp_path / 'run' / 'results' / 'worker.log'})"
    )
    assert counted == [False]  # (not waited for the restart, 30 s later)


# ------------------------------------------------------------------ 2. fields read back


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated recording of 2 positions x 4 time points (no worker ran on it)."""
    prof = load_profile("sim")
    run = tmp_path_factory.mktemp("s63") / "run"
    run_simulated(prof, demo_sequence(prof, timepoints=4, positions=2), run, seed=3)
    return run


def test_fields_read_back_from_the_recording_are_not_counted_missing(
    recorded: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the worker at a live field p0 t=3 whose fields t=0..2 the bus never delivered reads
    # them back from the recording: analysed, not "neither received nor recorded"
    run = tmp_path / "run"
    shutil.copytree(recorded, run, ignore=shutil.ignore_patterns("results"))
    frames = [json.loads(ln) for ln in (run / "frames.jsonl").read_text().splitlines()]
    counts = _caught_up_to_p0_t3(run, frames, caplog)
    assert (counts["fields_analysed"], counts["dropped_live"]) == (3, 3)
    assert counts["fields_missing"] == 0
    assert "neither received nor recorded" not in caplog.text


def _caught_up_to_p0_t3(
    run: Path, frames: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> collections.Counter[str]:
    """Catch a worker up from the recording to the live field p0 t=3; its counts."""
    seq = next(f["seq"] for f in frames if f["position"] == "p0" and f["index"]["t"] == 3)
    w = PipelineWorker(run, NO_ENGINES)
    w.run_id = "s63"
    try:
        with caplog.at_level(logging.WARNING, logger="livescope"):
            w._catch_up("p0", 3, seq)
        w._drain_decisions()
        w._drain_store()
        return w.counts.copy()  # (a Counter: a count never added is 0)
    finally:
        w._finish()


def test_fields_neither_received_nor_recorded_are_still_counted_missing(
    recorded: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the recording lost p0 t=1 (its lines cut from the log): t=0 and 2 read back, t=1 missing
    run = tmp_path / "run"
    shutil.copytree(recorded, run, ignore=shutil.ignore_patterns("results"))
    log = run / "frames.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    frames = [json.loads(ln) for ln in lines]
    log.write_text("".join(
        ln for ln, f in zip(lines, frames, strict=True)
        if (f["position"], f["index"]["t"]) != ("p0", 1)
    ))  # fmt: skip
    counts = _caught_up_to_p0_t3(run, frames, caplog)
    assert counts["fields_analysed"] == 2
    assert counts["fields_missing"] == 1
    assert "fields [('p0', 1)] were neither received nor recorded" in caplog.text


# ------------------------------------------------------------------ 3. restarts counted


@posix_only
def test_the_supervisor_tells_each_worker_its_restart_number(
    supervisors: Callable[..., _Scripted], tmp_path: Path
) -> None:
    seen = tmp_path / "seen"

    class Real(_Scripted):  # the supervisor's own spawn (its environment), a script's command
        _spawn = WorkerSupervisor._spawn

        def _command(self, resume: bool) -> list[str]:
            return [sys.executable, "-c", "\n".join([
                "import os, pathlib, signal",
                f"seen = pathlib.Path({str(seen)!r})",
                f"n = os.environ.get({WORKER_RESTART_ENV!r}, 'none')",
                "with seen.open('a') as f: f.write(n + '\\n')",
                "if n in ('0', '1'): os.kill(os.getpid(), signal.SIGKILL)",
            ])]  # fmt: skip

    sup = supervisors(Real, max_restarts=3)
    sup.start()
    summary = sup.wait(60)
    assert seen.read_text().split() == ["0", "1", "2"]
    assert summary["supervisor"]["restarts"] == 2


def test_a_restarted_worker_records_the_restart_number_it_was_given(
    recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the first worker saved its state (restarts 0); the one restarted after it was killed
    # before it stored a field; the third restores the first one's state: 2, not 1
    run = tmp_path / "run"
    shutil.copytree(recorded, run, ignore=shutil.ignore_patterns("results"))
    PipelineWorker(run, NO_ENGINES).run(attach_timeout_s=0.1)
    state = json.loads((run / "results" / "state.json").read_text(encoding="utf-8"))
    assert state["counts"].get("restarts", 0) == 0
    monkeypatch.setenv(WORKER_RESTART_ENV, "2")
    summary = PipelineWorker(run, NO_ENGINES, resume=True).run(attach_timeout_s=0.1)
    assert summary["restarts"] == 2
    written = json.loads((run / "results" / "worker.json").read_text(encoding="utf-8"))
    assert written["restarts"] == 2


def test_a_worker_resumed_by_hand_counts_its_restart_itself(
    recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (`livescope worker RUN --resume` by hand: no supervisor's number; one more than saved)
    run = tmp_path / "run"
    shutil.copytree(recorded, run, ignore=shutil.ignore_patterns("results"))
    monkeypatch.delenv(WORKER_RESTART_ENV, raising=False)
    PipelineWorker(run, NO_ENGINES).run(attach_timeout_s=0.1)
    summary = PipelineWorker(run, NO_ENGINES, resume=True).run(attach_timeout_s=0.1)
    assert summary["restarts"] == 1
