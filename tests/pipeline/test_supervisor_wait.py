"""The wait after the run allows slow fields; Windows exit statuses in hex wherever shown.

Scripts stand in for workers (`_Scripted`, the real supervisor otherwise).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from livescope.schema import LivescopeError
from tests.conftest import wait_for
from tests.pipeline.test_supervisor_review import _Scripted

_CRASH = 5
"""The status the scripts below exit with, read as Windows gives a crash (`_WindowsStatus`)."""

_ACCESS_VIOLATION = 0xC0000005


class _WindowsStatus(subprocess.Popen[bytes]):
    """A real process whose exit status `_CRASH` reads as Windows gives an access violation.

    A POSIX process cannot exit with a status above 255; on Windows a crash in native
    code exits with 3221225477 (0xC0000005).
    """

    def poll(self) -> int | None:
        return self._as_windows(super().poll())

    def wait(self, timeout: float | None = None) -> int:
        code = self._as_windows(super().wait(timeout))
        assert code is not None
        return code

    def _as_windows(self, code: int | None) -> int | None:
        if code == _CRASH:
            self.returncode = code = _ACCESS_VIOLATION
        return code


class _CrashesOnWindows(_Scripted):
    """The supervisor under test; its workers' crashes read as on Windows."""

    def _spawn(self, resume: bool) -> subprocess.Popen[bytes]:
        self.spawned.append(0.0)
        return _WindowsStatus(
            [sys.executable, "-c", self.resume_script if resume else self.script],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip


@pytest.fixture
def supervisors(supervisors: Callable[..., _Scripted]) -> Callable[..., _Scripted]:
    """The folder's `supervisors` (tests/pipeline/conftest.py), each checked for hangs often."""

    def make(kind: type[_Scripted] = _Scripted, **kwargs: object) -> _Scripted:
        sup = supervisors(kind, **kwargs)
        sup.hang_timeout_s = 0.2  # (its backlog read every 0.02 s; no frame waits: never hung)
        return sup

    return make


def _storing_worker(results: Path, engines_ms: float, then: str) -> str:
    """A ready worker that stores a field taking ``engines_ms``, then ``then`` (Python)."""
    rec = {"position": "p0", "t": 0, "seq": 0, "live": True,
           "ms": {"engines": engines_ms, "analyse_other": 0.5, "store": 0.5}}  # fmt: skip
    return "\n".join([
        "import pathlib, sys, time",
        f"res = pathlib.Path({str(results)!r})",
        "(res / 'ready').write_text(str(time.time()))",
        f"with (res / 'latency.jsonl').open('a') as f: f.write({json.dumps(rec)!r} + '\\n')",
        then,
    ])  # fmt: skip


def _stored(sup: _Scripted) -> None:
    stored = sup.results / "latency.jsonl"
    wait_for(lambda: stored.is_file() and stored.read_text().endswith("\n"), timeout=30)


def test_after_the_run_a_worker_is_allowed_five_times_its_slowest_field(
    supervisors: Callable[..., _Scripted],
) -> None:
    # a big tiled field on a slow CPU takes minutes: wait() terminated a worker that stored
    # no field for its fixed timeout_s (600 s) after the run, while it was still working
    sup = supervisors()
    # 1 s a field: 5 s allowed; its next field takes 1.5 s, over the 0.5 s given to wait()
    sup.script = _storing_worker(sup.results, 999.0, "time.sleep(1.5)")
    sup.start()
    _stored(sup)
    summary = sup.wait(0.5)
    assert summary["supervisor"] == {"restarts": 0, "exit_codes": [0]}


def test_after_the_run_a_worker_not_ready_is_allowed_its_start_up(
    supervisors: Callable[..., _Scripted],
) -> None:
    # a worker restarted after the run loads its engines again (TensorRT plans take
    # minutes): wait() allowed it timeout_s, while the hang check allows start_timeout_s
    sup = supervisors()
    sup.start_timeout_s = 30.0
    sup.script = "import time; time.sleep(1.0)"  # (its start-up: then it ends, all done)
    sup.start()
    summary = sup.wait(0.3)
    assert summary["supervisor"] == {"restarts": 0, "exit_codes": [0]}


def test_after_the_run_a_worker_with_quick_fields_is_still_given_timeout_s(
    supervisors: Callable[..., _Scripted],
) -> None:
    # never less than before: fields of 2 ms (10 ms allowed) leave the 0.3 s asked for
    sup = supervisors()
    sup.script = _storing_worker(sup.results, 1.0, "sys.stdin.readline()")  # then hangs
    sup.start()
    _stored(sup)
    with pytest.raises(LivescopeError, match=r"it stored no field for 0\.3 s after the run"):
        sup.wait(0.3)


def test_a_windows_crash_is_given_in_hex_in_the_log_lines_and_the_error(
    supervisors: Callable[..., _Scripted], caplog: pytest.LogCaptureFixture
) -> None:
    # "worker exited with 3221225477 (ended by 0xC0000005 ...)": the same status in decimal
    # in one place and in hex in the next
    sup = supervisors(_CrashesOnWindows, max_restarts=1)
    sup.script = sup.resume_script = f"import sys; sys.exit({_CRASH})"
    sup.start()
    with pytest.raises(LivescopeError) as raised:
        sup.wait(30)
    said = "worker exited with 0xC0000005 (ended by 0xC0000005 STATUS_ACCESS_VIOLATION"
    assert f"{said}, a crash in native code); restarting it (1)" in caplog.text
    assert f"{said}, a crash in native code); 1 restarts in a row used, giving up" in caplog.text
    assert "the worker failed (exit codes [0xC0000005, 0xC0000005]: ended by 0xC0000005" in str(
        raised.value
    )
    assert str(_ACCESS_VIOLATION) not in caplog.text + str(raised.value)


def test_a_windows_crash_before_stop_is_given_in_hex(
    supervisors: Callable[..., _Scripted], caplog: pytest.LogCaptureFixture
) -> None:
    # a worker that crashed just before the run stopped it (the watching thread not yet
    # started, or not yet seen it): stop() takes its exit
    sup = supervisors()
    sup.proc = proc = _WindowsStatus(  # (as start() would, without the watching thread)
        [sys.executable, "-c", f"import sys; sys.exit({_CRASH})"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.wait(30) == _ACCESS_VIOLATION
    sup.stop()
    assert sup.exits == [_ACCESS_VIOLATION]
    assert "the worker had exited with 0xC0000005 before it was stopped: ended by 0xC0000005" in (
        caplog.text
    )
    assert str(_ACCESS_VIOLATION) not in caplog.text
