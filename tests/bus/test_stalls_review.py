"""Review of the stall monitor and the jitter benchmark: interrupted starts, endless rounds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from livescope.bus import StallMonitor, bench_jitter
from livescope.schema import LivescopeError


@pytest.mark.skipif(sys.platform == "win32", reason="interrupts the main thread with SIGINT")
def test_a_ctrl_c_while_the_probe_starts_leaves_no_probe_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a Ctrl+C while start() waits for the probe's first answer (it imports for a while on a
    # loaded PC) left the probe running, ~500 wake-ups a second, until the program ended,
    # and the monitor "already running". The stand-in interpreter is a real process that
    # never answers and, as the probe, ends when its stdin closes.
    pid_file = tmp_path / "pid"
    stand_in = tmp_path / "python"
    stand_in.write_text(
        f"#!/bin/sh\necho $$ > '{pid_file}'\n"
        f"exec '{sys.executable}' -c 'import sys; sys.stdin.readline()'\n"
    )
    stand_in.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(stand_in))
    main = threading.get_ident()

    def ctrl_c() -> None:
        # once the stand-in probe runs (its pid written: start() then waits for its answer);
        # not on the first new thread: in a whole test run other tests' threads come and go
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            pid_file.exists() and pid_file.read_text().strip()
        ):
            time.sleep(0.005)
        time.sleep(0.1)
        signal.pthread_kill(main, signal.SIGINT)

    sender = threading.Thread(target=ctrl_c)
    mon = StallMonitor()
    leaked: subprocess.Popen[str] | None = None
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # (Python's own)
    sender.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            mon.start(timeout_s=30)
    finally:
        sender.join(30)
        signal.signal(signal.SIGINT, handler)
        leaked = mon._proc
        if leaked is not None:  # (the old code's: ended here, not left to the test run)
            leaked.kill()
            leaked.wait()
            for f in (leaked.stdin, leaked.stdout):
                if f is not None:
                    f.close()
    assert leaked is None, "the probe was left running"
    with pytest.raises(ProcessLookupError):  # ended and reaped, not a zombie
        os.kill(int(pid_file.read_text()), 0)


def test_an_endless_jitter_round_is_refused_before_any_process_starts() -> None:
    # (an OverflowError from deep inside multiprocessing, after a probe had started and
    # died with a traceback of its own)
    with pytest.raises(LivescopeError, match="seconds must be a finite number > 0, got inf"):
        bench_jitter(seconds=float("inf"), busy=1, turns=1)


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
@pytest.mark.parametrize("role", ["busy", "probe"])
def test_a_terminal_ctrl_c_leaves_the_jitter_processes_to_the_benchmark(role: str) -> None:
    # a terminal's Ctrl+C reaches the whole process group: each busy process and the probe
    # died with a KeyboardInterrupt traceback of its own (one per core, above the
    # benchmark's "interrupted"); the benchmark stops them itself, as the stall monitor's
    import multiprocessing as mp

    from livescope.bus import _jitter

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    if role == "busy":
        proc = ctx.Process(target=_jitter._busy, args=("normal", child), daemon=True)
    else:
        proc = ctx.Process(target=_jitter._probe, args=(0.005, 0.3, child), daemon=True)
    proc.start()
    child.close()
    try:
        assert parent.poll(60)
        parent.recv()  # it runs its loop (its lowering, or "ready")
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGINT)
        if role == "busy":
            parent.send("stop")
        assert parent.poll(60)
        answer = parent.recv()  # (EOFError: it had died)
        # its report: passes a second (0.0 if stopped at once), or each wake-up's lateness
        assert isinstance(answer, float) if role == "busy" else len(answer) > 0
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent.close()
    assert proc.exitcode == 0


def test_a_busy_process_that_dies_is_named_by_its_round(monkeypatch: pytest.MonkeyPatch) -> None:
    # the error named the priority as a round: "a busy process of round 'idle'", where the
    # round called idle has no busy process (this one was bulk_idle_class's)
    from livescope.bus import _jitter

    monkeypatch.setenv("LIVESCOPE_BULK_PRIORITY", "bogus")  # its lowering fails: it dies
    with pytest.raises(LivescopeError, match=r"a busy process of round 'bulk_idle_class' ended"):
        _jitter._slice("idle", 0.1, 0.005, 1)
