"""A Ctrl+C while the simulated microscope calls a device never leaves the device held.

pymmcore-plus's Python devices guard each call with a lock taken in ``__enter__``:
a SIGINT handled right after that acquire raised KeyboardInterrupt inside
``__enter__``, the ``with`` never released the lock, and `SimulatedMicroscope.close`
(unloading the device) then waited for it for ever: the agent, Ctrl+C'd as the
simulator started, wrote its summary and hung until killed.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

import pytest

from livescope.scope import SimulatedMicroscope
from tests.cli.test_cli_edges_s64 import PLAN, _interrupt, _start, needs_proc

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
    holder.start()
    with pytest.raises(KeyboardInterrupt):
        sim.core.getXYPosition()
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
    assert code in (0, 2), (code, out, err)
