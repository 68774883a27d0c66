"""A Ctrl+C while the simulated microscope calls a device never leaves the device held.

pymmcore-plus's Python devices guard each call with a lock taken in ``__enter__``:
a SIGINT handled right after that acquire raised KeyboardInterrupt inside
``__enter__``, the ``with`` never released the lock, and `SimulatedMicroscope.close`
(unloading the device) then waited for it for ever: the agent, Ctrl+C'd as the
simulator started, wrote its summary and hung until killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from livescope.scope import SimulatedMicroscope
from tests.cli.test_cli_edges_s64 import PLAN, _interrupt, _start, needs_proc
from tests.conftest import ROOT

CLOSE_BOUND_S = 30.0


def _signal_as_main_takes_the_lock(device: object, main: int, failures: list[str]) -> None:
    """Hold ``device``; once the main thread waits for it, mark SIGINT pending and let go.

    The signal is delivered to this thread (which only marks it): the main thread,
    woken by the release, acquires the lock and then handles the pending SIGINT,
    as when a Ctrl+C lands while a device call acquires its lock.
    """
    with device:  # type: ignore[attr-defined]
        deadline = time.monotonic() + CLOSE_BOUND_S
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(main)
            if frame is not None and frame.f_code.co_name == "__enter__" and frame.f_lasti > 0:
                break
            time.sleep(0.001)
        else:
            failures.append("the main thread never came to the device's __enter__")
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="signals a thread: POSIX")
def test_close_returns_after_a_ctrl_c_as_a_device_call_takes_its_lock() -> None:
    sim = SimulatedMicroscope(seed=1)
    failures: list[str] = []
    holder = threading.Thread(
        target=_signal_as_main_takes_the_lock,
        args=(sim._xy, threading.get_ident(), failures),
        daemon=True,
    )
    # (Python's own handler: a test run in the background of a shell ignores SIGINT)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        holder.start()
        with pytest.raises(KeyboardInterrupt):
            sim.core.getXYPosition()
    finally:
        signal.signal(signal.SIGINT, before)
    holder.join(CLOSE_BOUND_S)
    assert not failures, failures
    # the interrupted call let go of the stage: the core still answers, close() returns
    closer = threading.Thread(target=sim.close, daemon=True)  # (a hang must not hang pytest)
    closer.start()
    closer.join(CLOSE_BOUND_S)
    assert not closer.is_alive(), (
        f"SimulatedMicroscope.close() still waiting {CLOSE_BOUND_S:g} s after a Ctrl+C "
        "interrupted a call to the XY stage: its device lock was left held"
    )


@needs_proc
@pytest.mark.parametrize("after_s", [1.5, 2.5, 3.5])
def test_the_agent_ctrl_c_as_the_simulator_starts_exits(tmp_path, after_s: float) -> None:  # type: ignore[no-untyped-def]
    proc = _start(
        "agent", "--json", "--bus", "off", "--plan", str(PLAN), "--out", str(tmp_path / "run")
    )
    code, out, err = _interrupt(proc, after_s)  # (fails the test if it has not ended in 120 s)
    assert "Traceback" not in err, err
    assert code == 2, (code, out, err)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to itself: POSIX")
def test_the_agent_ctrl_c_as_the_recording_closes_exits_2(tmp_path: Path) -> None:
    # a Ctrl+C that came once acquisition had ended, while the recording closed (held
    # back until it was closed, the summary's interrupted_while_closing) ended the
    # agent with exit 0 and "interrupted": false, as if it had never come
    (tmp_path / "ctrl_c_at_close.py").write_text(
        "import os, signal\n"
        "from livescope.record import OmeZarrWriter\n"
        "from livescope.cli import main\n"
        "close = OmeZarrWriter.close\n"
        "def ctrl_c_then_close(self):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    close(self)\n"
        "OmeZarrWriter.close = ctrl_c_then_close\n"
        "main()\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    run = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "ctrl_c_at_close", "agent", "--json", "--bus", "off",
         "--plan", str(PLAN), "--out", str(run)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=False,
        # (a test run in the background of a shell ignores SIGINT, and so would the agent)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert "Traceback" not in res.stderr, res.stderr
    summary = json.loads(res.stdout.splitlines()[-1])
    # (the Ctrl+C came where the test meant it to: every frame acquired was recorded)
    assert summary.get("interrupted_while_closing") is True, summary
    assert res.returncode == 2, (
        f"agent exited {res.returncode} after a Ctrl+C as its recording closed "
        f"(summary interrupted={summary.get('interrupted')}); stderr: {res.stderr}"
    )


def test_every_python_device_of_the_simulator_and_the_replay_has_the_safe_lock() -> None:
    # (the replay core loads the same stages and shutter, and a camera of its own: with
    # plain locks, a Ctrl+C as a call took one left it held, as the simulator's did)
    from livescope.scope._devices import (
        CtrlCSafe,
        SimCamera,
        SimShutter,
        SimStateDevice,
        SimXYStage,
        SimZStage,
    )
    from livescope.scope._replay_source import ReplayCamera

    for cls in (SimCamera, SimShutter, SimStateDevice, SimXYStage, SimZStage, ReplayCamera):
        assert issubclass(cls, CtrlCSafe), cls.__name__
