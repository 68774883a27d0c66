"""The supervisor's verdict on a worker that has ended (no worker process is started here)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from livescope.pipeline import WorkerConfig, WorkerSupervisor
from livescope.schema import LivescopeError


@pytest.mark.parametrize(
    ("exits", "says", "error"),
    [
        ([0], {"ok": True, "fields": 3}, None),
        ([0], {"ok": False, "fields": 3}, "says its results are incomplete"),
        ([1, 0], {"ok": True}, None),  # restarted once, then finished
        ([1], {"ok": True}, r"the worker failed \(exit codes \[1\]"),
        ([], {}, r"the worker failed \(exit codes \[\]"),  # never ran to an exit
    ],
)
def test_the_run_takes_the_workers_results_only_if_it_finished_and_says_they_are_whole(
    tmp_path: Path, exits: list[int], says: dict[str, object], error: str | None
) -> None:
    sup = WorkerSupervisor(tmp_path / "run", WorkerConfig())
    sup.exits.extend(exits)  # what the watch thread saw of the worker's exits
    sup.restarts = max(0, len(exits) - 1)
    if says:
        (sup.results / "worker.json").write_text(json.dumps(says), encoding="utf-8")
    if error is not None:
        with pytest.raises(LivescopeError, match=error):
            sup.wait(1)
        return
    summary = sup.wait(1)
    assert summary.get("fields") == says.get("fields")
    assert summary["supervisor"] == {"restarts": len(exits) - 1, "exit_codes": exits}


class _ScriptedSupervisor(WorkerSupervisor):
    """The supervisor under test, its worker process a short script instead of a worker."""

    script = "import sys; sys.stdin.readline()"  # waits until told (or stopped)

    def _spawn(self, resume: bool) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", self.script], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip


_FAILS_WHEN_TOLD = (
    "import sys; sys.stdin.readline(); "
    "print('error: the engines could not load', file=sys.stderr); sys.exit(3)"
)


def test_a_worker_that_failed_just_before_stop_keeps_its_exit_and_error_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sup = _ScriptedSupervisor(tmp_path / "run", WorkerConfig(), max_restarts=0)
    sup.script = _FAILS_WHEN_TOLD
    sup.start()
    proc = sup.proc
    assert proc is not None
    assert proc.stdin is not None
    with sup._lock:  # the watcher cannot look at the worker until stop() has
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        assert proc.wait(20) == 3
        stopper = threading.Thread(target=sup.stop, name="test-stop")
        stopper.start()
        assert sup._stop.wait(5)  # stop() is waiting for the lock, the exit not yet taken
    stopper.join(30)
    assert not stopper.is_alive()
    assert sup.exits == [3]
    assert sup.error == "the engines could not load"
    assert "exited with 3 before it was stopped: the engines could not load" in caplog.text


def test_a_worker_that_stop_ended_is_not_taken_for_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sup = _ScriptedSupervisor(tmp_path / "run", WorkerConfig())
    sup.start()
    sup.stop()
    assert len(sup.exits) == 1
    assert sup.exits[0] != 0  # terminated
    assert sup.restarts == 0
    assert sup.error == ""
    assert "before it was stopped" not in caplog.text


def test_a_restart_says_why_the_worker_exited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sup = _ScriptedSupervisor(tmp_path / "run", WorkerConfig(), max_restarts=1)
    sup.script = _FAILS_WHEN_TOLD.replace("sys.stdin.readline(); ", "")  # fails at once
    sup.start()
    with pytest.raises(LivescopeError, match=r"exit codes \[3, 3\]: the engines could not load"):
        sup.wait(60)
    assert "worker exited with 3 (the engines could not load); restarting it (1)" in caplog.text
    assert (sup.results / "worker.failed").read_text(encoding="utf-8") == (
        "the engines could not load"
    )


# ---------------------------------------------------------------- found by an independent review


class _ResumingSupervisor(_ScriptedSupervisor):
    """Its first worker runs ``script``, a restarted one ``resume_script`` (None: cannot start)."""

    resume_script: str | None = "import sys; sys.exit(5)"  # fails without a word

    def _spawn(self, resume: bool) -> subprocess.Popen[bytes]:
        if not resume:
            return super()._spawn(resume)
        if self.resume_script is None:
            raise OSError(12, "Cannot allocate memory")
        return subprocess.Popen(
            [sys.executable, "-c", self.resume_script], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip


_FAILS_AT_ONCE = _FAILS_WHEN_TOLD.replace("sys.stdin.readline(); ", "")


def test_a_restarted_worker_is_not_reported_with_an_earlier_workers_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sup = _ResumingSupervisor(tmp_path / "run", WorkerConfig(), max_restarts=1)
    sup.script = _FAILS_AT_ONCE  # "error: the engines could not load", exit 3
    sup.start()
    with pytest.raises(LivescopeError, match=r"exit codes \[3, 5\]") as err:
        sup.wait(60)
    assert "engines could not load" not in str(err.value)  # (the first worker's)
    assert "engines could not load" not in sup.error
    assert "worker exited with 3 (the engines could not load); restarting it" in caplog.text


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_worker_killed_by_a_signal_says_which(tmp_path: Path) -> None:
    sup = _ResumingSupervisor(tmp_path / "run", WorkerConfig(), max_restarts=1)
    sup.script = _FAILS_AT_ONCE
    sup.resume_script = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    sup.start()
    with pytest.raises(LivescopeError, match=r"exit codes \[3, -9\]: killed by SIGKILL"):
        sup.wait(60)
    assert (sup.results / "worker.failed").read_text(encoding="utf-8") == "killed by SIGKILL"


def test_a_worker_that_cannot_be_started_again_is_given_up_on_and_says_why(
    tmp_path: Path,
) -> None:
    sup = _ResumingSupervisor(tmp_path / "run", WorkerConfig())
    sup.script = _FAILS_AT_ONCE
    sup.resume_script = None  # e.g. fork fails right after the OOM killer took the worker
    sup.start()
    with pytest.raises(
        LivescopeError, match=r"exit codes \[3\]: the worker could not be started again: .*memory"
    ):
        sup.wait(60)
    assert sup.restarts == 0
    # (the replay's gate stops waiting for it)
    assert "could not be started again" in (sup.results / "worker.failed").read_text("utf-8")


def test_a_wait_that_times_out_stops_and_reaps_the_worker_it_ended(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sup = _ScriptedSupervisor(tmp_path / "run", WorkerConfig())
    sup.start_timeout_s = 0.5  # (it never becomes ready: allowed that long to start)
    sup.start()
    proc = sup.proc
    assert proc is not None
    with pytest.raises(LivescopeError, match=r"did not finish: it stored no field for 0.5 s"):
        sup.wait(0.5)
    assert proc.returncode is not None  # reaped (no zombie left)
    sup.stop()  # (as run_adaptive does after wait() raised): nothing more to do
    assert len(sup.exits) == 1
    assert sup.error == ""
    assert "before it was stopped" not in caplog.text


@pytest.mark.skipif(sys.platform == "win32", reason="Windows' terminate cannot be ignored")
def test_a_worker_that_ignores_being_told_to_end_is_killed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # stop() waited 10 s, then raised TimeoutExpired, leaving the worker running and hiding
    # whatever error the run was being stopped for
    ready = tmp_path / "ready"
    sup = _ScriptedSupervisor(tmp_path / "run", WorkerConfig(), max_restarts=0)
    sup.stop_grace_s = 0.5
    sup.script = (
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(120)"
    )
    sup.start()
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists()
    proc = sup.proc
    assert proc is not None
    sup.stop()
    assert proc.poll() is not None  # ended: killed, not left running
    assert "did not end within 0.5 s of being told to; killing it" in caplog.text


def test_a_worker_catching_up_after_the_run_is_waited_for_while_it_stores_fields(
    tmp_path: Path,
) -> None:
    # a worker behind the camera analyses the recorded fields it missed once the run
    # has ended: it was terminated 600 s after the run however far it had got
    sup = _ScriptedSupervisor(tmp_path / "run", WorkerConfig())
    log = sup.results / "latency.jsonl"
    sup.script = (
        "import time\n"
        "for i in range(12):\n"
        f"    with open({str(log)!r}, 'a') as f: f.write('{{}}\\n')\n"
        "    time.sleep(0.25)\n"
    )  # 3 s of fields, one every 0.25 s
    sup.start()
    t0 = time.monotonic()
    summary = sup.wait(1.0)
    assert time.monotonic() - t0 > 1.0  # waited past timeout_s: it kept storing fields
    assert summary["supervisor"]["exit_codes"] == [0]
    assert len(log.read_text().splitlines()) == 12
