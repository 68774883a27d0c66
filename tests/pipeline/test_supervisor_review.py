"""The supervisor's restarts, found by an independent review (scripts stand in for workers)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from livescope.pipeline import WorkerConfig, WorkerSupervisor
from livescope.schema import LivescopeError


class _Scripted(WorkerSupervisor):
    """The supervisor under test, its first worker ``script``, a restarted one ``resume_script``."""

    restart_delay_s = 0.0
    script = "import sys; sys.exit(3)"
    resume_script = "import sys; sys.exit(3)"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.spawned: list[float] = []  # when each worker was started (monotonic s)

    def _spawn(self, resume: bool) -> subprocess.Popen[bytes]:
        self.spawned.append(time.monotonic())
        return subprocess.Popen(
            [sys.executable, "-c", self.resume_script if resume else self.script],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip


def _script(ready: bool, says: str, code: int) -> str:
    """A worker that (maybe) becomes ready, prints ``says`` on stderr and exits ``code``."""
    lines = ["import pathlib, sys, time"]
    if ready:  # as the worker does once its engines are loaded
        lines.append("pathlib.Path('RESULTS', 'ready').write_text(str(time.time()))")
    lines += [f"print({says!r}, file=sys.stderr)", f"sys.exit({code})"]
    return "\n".join(lines)


def _supervisor(tmp_path: Path, **kwargs: object) -> _Scripted:
    return _Scripted(tmp_path / "run", WorkerConfig(), **kwargs)  # type: ignore[arg-type]


def test_a_worker_whose_storing_failed_mid_run_is_restarted_not_taken_for_a_refusal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the worker exits 2 (the CLI's user-error status) when its deciding or storing thread
    # failed; it was taken for a worker refusing its config, never restarted, and the rest
    # of the run went unanalysed
    sup = _supervisor(tmp_path, max_restarts=1)
    sup.script = _script(True, "error: storing results failed: [Errno 28] No space left", 2)
    sup.script = sup.script.replace("RESULTS", str(sup.results))
    sup.resume_script = "pass"  # the restarted worker finishes the run
    sup.start()
    summary = sup.wait(60)
    assert summary["supervisor"] == {"restarts": 1, "exit_codes": [2, 0]}
    assert not (sup.results / "worker.failed").exists()
    assert "refused" not in caplog.text
    assert "storing results failed: [Errno 28] No space left); restarting it (1)" in caplog.text


@pytest.mark.parametrize("resumed", [False, True], ids=["first", "restarted"])
def test_a_worker_that_refuses_before_it_is_ready_is_not_restarted_and_the_log_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, resumed: bool
) -> None:
    sup = _supervisor(tmp_path, max_restarts=3)
    refuses = _script(False, "error: cannot read worker state state.json: bad JSON", 2)
    if resumed:  # a first worker that was ready, then crashed; the restarted one refuses
        sup.script = _script(True, "Traceback ...\nRuntimeError: CUDA error", 1)
        sup.script = sup.script.replace("RESULTS", str(sup.results))
        sup.resume_script = refuses
    else:
        sup.script = refuses
    sup.start()
    with pytest.raises(LivescopeError, match="cannot read worker state"):
        sup.wait(60)
    assert sup.exits == ([1, 2] if resumed else [2])
    log = str(sup.results / "worker.log")
    assert f"refused to run: cannot read worker state state.json: bad JSON (see {log})" in (
        caplog.text
    )


def test_giving_up_says_why_the_worker_failed_and_where_its_log_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # during a long run this line is all the operator sees until the run ends
    sup = _supervisor(tmp_path, max_restarts=0)
    sup.script = _script(False, "error: the engines could not load", 3)
    sup.start()
    with pytest.raises(LivescopeError):
        sup.wait(60)
    log = sup.results / "worker.log"
    assert (
        f"worker exited with 3 (the engines could not load); 0 restarts in a row used, giving up "
        f"(see {log})" in caplog.text
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(
    ("says", "signal_name", "error"),
    [
        pytest.param(
            "WARNING livescope: frame 12 was overwritten in shared memory before it was read",
            "SIGKILL", "killed by SIGKILL", id="oom-killer-after-a-warning",
        ),
        pytest.param(
            "terminate called after throwing an instance of 'std::bad_alloc'",
            "SIGABRT",
            "killed by SIGABRT: terminate called after throwing an instance of 'std::bad_alloc'",
            id="native-abort-says-why",
        ),
    ],
)  # fmt: skip
def test_a_worker_killed_by_a_signal_is_reported_by_its_signal_not_its_last_warning(
    tmp_path: Path, says: str, signal_name: str, error: str
) -> None:
    # the worker's last logged warning was reported as its error (and left in worker.failed)
    sup = _supervisor(tmp_path, max_restarts=0)
    sup.script = (
        f"import os, signal, sys; print({says!r}, file=sys.stderr, flush=True); "
        f"os.kill(os.getpid(), signal.{signal_name})"
    )
    sup.start()
    with pytest.raises(LivescopeError, match="exit codes"):
        sup.wait(60)
    assert sup.error == error
    assert (sup.results / "worker.failed").read_text(encoding="utf-8") == error


def test_a_worker_that_exits_after_only_warnings_has_no_error_line(tmp_path: Path) -> None:
    sup = _supervisor(tmp_path, max_restarts=0)
    sup.script = _script(False, "WARNING livescope: the field p0 t=3 took 812 ms", 1)
    sup.start()
    with pytest.raises(LivescopeError, match=r"exit codes \[1\]\); see"):
        sup.wait(60)
    assert sup.error == ""


def test_each_restart_waits_longer_than_the_one_before(tmp_path: Path) -> None:
    # a worker that fails as it starts was started again at once, over and over
    sup = _supervisor(tmp_path, max_restarts=2)
    sup.restart_delay_s = 0.5
    sup.start()
    with pytest.raises(LivescopeError, match=r"exit codes \[3, 3, 3\]"):
        sup.wait(60)
    first, second, third = sup.spawned
    assert second - first >= 0.5  # (lower bounds: the waits guarantee them)
    assert third - second >= 1.0


def test_stop_during_the_wait_before_a_restart_starts_no_other_worker(tmp_path: Path) -> None:
    sup = _supervisor(tmp_path, max_restarts=3)
    sup.restart_delay_s = 600.0
    sup.start()
    deadline = time.monotonic() + 30
    while not sup.exits and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sup.exits == [3]
    sup.stop()  # (returns at once: the watcher's wait ends with it)
    assert sup._watched is not None
    assert sup._watched.is_set()
    assert len(sup.spawned) == 1
    assert sup.exits == [3]


def test_restarts_are_counted_in_a_row_a_worker_that_analysed_fields_starts_again(
    tmp_path: Path,
) -> None:
    # (over a run of days, max_restarts rare crashes, each after hours of fields analysed,
    # stopped the analysis for good: the count was the run's total)
    sup = _supervisor(tmp_path, max_restarts=1)
    runs = tmp_path / "runs"
    stores_then_crashes = "\n".join([
        "import pathlib, sys",
        f"runs = pathlib.Path({str(runs)!r})",
        "n = len(runs.read_text()) if runs.exists() else 0",
        "runs.write_text('x' * (n + 1))",
        f"log = pathlib.Path({str(sup.results / 'latency.jsonl')!r})",
        "if n < 3:  # a field stored, then a crash",
        "    log.open('a').write('{}\\n')",
        "    sys.exit(1)",
    ])  # fmt: skip
    sup.script = sup.resume_script = stores_then_crashes
    sup.start()
    summary = sup.wait(60)
    assert summary["supervisor"] == {"restarts": 3, "exit_codes": [1, 1, 1, 0]}
    assert not (sup.results / "worker.failed").exists()


def test_a_worker_that_fails_again_without_analysing_a_field_is_given_up_on(
    tmp_path: Path,
) -> None:
    sup = _supervisor(tmp_path, max_restarts=2)
    log = sup.results / "latency.jsonl"
    # the first stores a field; the restarted ones fail before any
    sup.script = (
        f"import pathlib, sys; pathlib.Path({str(log)!r}).write_text('{{}}\\n'); sys.exit(1)"
    )
    sup.resume_script = "import sys; sys.exit(1)"
    sup.start()
    with pytest.raises(LivescopeError):
        sup.wait(60)
    assert sup.exits == [1, 1, 1]
    assert (sup.results / "worker.failed").exists()
