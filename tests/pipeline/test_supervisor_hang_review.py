"""A worker that hangs is ended and restarted; a Ctrl+C in stop() leaves no worker running.

Scripts stand in for workers (`_Scripted`); the tests write the agent's frame log
(``frames.jsonl``) themselves, as a recording run would.
"""

from __future__ import annotations

import _thread
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from livescope.schema import LivescopeError
from tests.conftest import wait_for
from tests.pipeline.test_supervisor_review import _Scripted


def _worker(results: Path, *, ready: bool = True, stores: tuple[tuple[str, int, int], ...] = (),
            then: str = "hang") -> str:  # fmt: skip
    """A worker that (maybe) becomes ready, stores fields (position, t, seq), then ``then``.

    ``then``: "hang" (stops making progress), "hang-deaf" (and ignores being told to
    end, as one stuck in native code) or "finish" (exits 0).
    """
    lines = ["import json, pathlib, signal, sys, time", f"res = pathlib.Path({str(results)!r})"]
    if then == "hang-deaf":  # (before it is ready: until then it is not judged)
        lines.append("signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    if ready:  # as the worker does once its engines are loaded
        lines.append("(res / 'ready').write_text(str(time.time()))")
    for pos, t, seq in stores:  # as `ResultsStore.log_latency` writes a field
        rec = {"position": pos, "t": t, "seq": seq, "live": True, "ms": {"total": 1.0}}
        lines.append(f"with (res / 'latency.jsonl').open('a') as f: f.write({json.dumps(rec)!r})")
        lines.append("with (res / 'latency.jsonl').open('a') as f: f.write('\\n')")
    if then != "finish":  # (its stdin is the supervisor's pipe: it ends if this test dies)
        lines.append("sys.stdin.readline()")
    return "\n".join(lines)


def _record(sup: _Scripted, *frames: tuple[int, str, int, str | None]) -> None:
    """Append frames (seq, position, t, added_by) to the run's frame log, as the recorder does."""
    with (sup.run_dir / "frames.jsonl").open("a", encoding="utf-8") as f:
        for seq, pos, t, added_by in frames:
            f.write(json.dumps({
                "seq": seq, "index": {"t": t, "c": 0}, "position": pos, "channel": "Phase",
                "added_by": added_by,
            }) + "\n")  # fmt: skip


def test_a_worker_that_hangs_while_frames_wait_is_ended_and_restarted(
    supervisors: Callable[..., _Scripted], caplog: pytest.LogCaptureFixture
) -> None:
    # a deadlocked engine: the rest of the run got no analysis and no decisions, and
    # wait() gave up on it 600 s after the run, without a restart
    sup = supervisors(max_restarts=1)
    sup.hang_timeout_s = 0.3
    _record(sup, (0, "p0", 0, None), (1, "p0", 1, None))
    sup.script = _worker(sup.results, stores=(("p0", 0, 0),))  # stores t=0, hangs on t=1
    sup.resume_script = _worker(sup.results, stores=(("p0", 1, 1),), then="finish")
    sup.start()
    assert sup.proc is not None
    pid = sup.proc.pid
    summary = sup.wait(10)
    codes = summary["supervisor"]["exit_codes"]
    assert codes[0] != 0
    assert summary["supervisor"] == {"restarts": 1, "exit_codes": [codes[0], 0], "hangs": 1}
    log = re.escape(str(sup.results / "worker.log"))
    assert re.search(
        rf"the worker \(process {pid}\) analysed no field for \d+ s while recorded frames "
        rf"waited for it: it is taken as hung and ended \(see {log}\)", caplog.text
    )  # fmt: skip
    assert re.search(
        rf"worker exited with {codes[0]} \(hung: it analysed no field for \d+ s while recorded "
        r"frames waited\); restarting it \(1\)", caplog.text
    )  # fmt: skip


def test_a_worker_with_nothing_to_analyse_is_not_taken_for_hung(
    supervisors: Callable[..., _Scripted],
) -> None:
    sup = supervisors(max_restarts=1)
    sup.hang_timeout_s = 0.2
    # it stored both fields of t=0 (p1's completed by its frame 2 as received)
    sup.script = _worker(sup.results, stores=(("p0", 0, 0), ("p1", 0, 2)))
    sup.resume_script = _worker(sup.results, then="finish")
    sup.start()
    stored = sup.results / "latency.jsonl"
    wait_for(lambda: stored.is_file() and len(stored.read_text().splitlines()) == 2, timeout=30)
    _record(
        sup,
        (0, "p0", 0, None),  # logged after the worker stored them (the recorder behind)
        (1, "p1", 0, None),
        (2, "p1", 0, None),
        (3, "p1", 0, None),  # lost on the bus, logged after: its field was stored without it
        (4, "p0~closeup-1", 0, "closeup"),  # a decision's frames: not analysed (analyse_added)
    )
    time.sleep(1.0)  # (the supervisor looks every 0.02 s: it had 50 chances to take it as hung)
    assert len(sup.spawned) == 1  # (not ended, nor restarted)
    assert sup.exits == []
    recorded = time.monotonic()
    _record(sup, (5, "p0", 1, None))  # the next field: now there is work it does not do
    wait_for(lambda: len(sup.spawned) == 2, timeout=30)
    assert sup.spawned[1] - recorded >= sup.hang_timeout_s  # (a lower bound: its allowance)
    assert sup.wait(10)["supervisor"]["hangs"] == 1


def test_a_worker_not_yet_ready_has_the_longer_start_up_allowance(
    supervisors: Callable[..., _Scripted], caplog: pytest.LogCaptureFixture
) -> None:
    # loading its engines (building a TensorRT plan) takes minutes, not a field's seconds
    sup = supervisors(max_restarts=1)
    sup.hang_timeout_s = 0.1
    sup.start_timeout_s = 1.0
    _record(sup, (0, "p0", 0, None))
    sup.script = _worker(sup.results, ready=False)  # stuck loading its engines
    sup.resume_script = _worker(sup.results, stores=(("p0", 0, 0),), then="finish")
    sup.start()
    summary = sup.wait(10)
    assert summary["supervisor"]["hangs"] == 1
    assert sup.spawned[1] - sup.spawned[0] >= sup.start_timeout_s  # (a lower bound)
    assert "waited for it (it never became ready): it is taken as hung" in caplog.text


@pytest.mark.skipif(sys.platform == "win32", reason="Windows' terminate cannot be ignored")
def test_a_worker_that_hangs_again_is_given_up_on_and_one_deaf_to_terminate_is_killed(
    supervisors: Callable[..., _Scripted], caplog: pytest.LogCaptureFixture
) -> None:
    sup = supervisors(max_restarts=1)
    sup.hang_timeout_s = 0.2
    sup.stop_grace_s = 0.3
    _record(sup, (0, "p0", 0, None))
    sup.script = _worker(sup.results)  # ready, then no field
    sup.resume_script = _worker(sup.results, then="hang-deaf")  # ... and SIGTERM ignored
    sup.start()
    with pytest.raises(LivescopeError, match=r"exit codes \[-15, -9\]: hung: it analysed no"):
        sup.wait(10)
    assert (sup.hangs, sup.restarts) == (2, 1)
    assert (sup.results / "worker.failed").read_text(encoding="utf-8").startswith("hung: ")
    assert "the hung worker did not end within 0.3 s of being told to; killing it" in caplog.text
    assert "1 restarts in a row used, giving up" in caplog.text


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_ctrl_c_while_stop_waits_for_the_worker_kills_it_and_closes_its_log(
    supervisors: Callable[..., _Scripted], tmp_path: Path
) -> None:
    # a second Ctrl+C while the worker saved its state escaped stop(): the worker, in a
    # session of its own, ran on after the run (holding the GPU) and worker.log stayed open
    # (Python's own handler, as in a terminal: a test run started in the background by a
    # shell has SIGINT ignored, and interrupt_main() then did nothing; put back after)
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_while_stop_waits(supervisors, tmp_path)
    finally:
        signal.signal(signal.SIGINT, handler)


def _ctrl_c_while_stop_waits(supervisors: Callable[..., _Scripted], tmp_path: Path) -> None:
    told, ready = tmp_path / "told", tmp_path / "ready"
    sup = supervisors()
    sup.stop_grace_s = 60.0  # (a worker ending slowly: stop() is still waiting at the Ctrl+C)
    sup.script = "\n".join([
        "import pathlib, signal, time",
        f"told = pathlib.Path({str(told)!r})",
        "signal.signal(signal.SIGTERM, lambda *_: told.touch())",
        f"pathlib.Path({str(ready)!r}).touch()",
        "while True: time.sleep(0.05)",
    ])  # fmt: skip
    sup.start()
    wait_for(ready.exists, timeout=30)
    proc = sup.proc
    assert proc is not None

    def ctrl_c() -> None:  # once stop() has told the worker to end
        deadline = time.monotonic() + 30
        while not told.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        _thread.interrupt_main()

    presser = threading.Thread(target=ctrl_c, name="test-ctrl-c")
    presser.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            sup.stop()
        presser.join(30)
        assert proc.wait(10) == -signal.SIGKILL  # killed on the way out, not left running
        assert sup._log.closed
    finally:
        if proc.poll() is None:
            proc.kill()
