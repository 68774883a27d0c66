"""The results lock (`ResultsLock`) between real worker processes: a pid reused, three takers.

Each worker is a Python process of its own that takes the lock as the analysis worker does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from livescope.pipeline._results import WORKER_LOCK, ResultsLock
from livescope.schema import LivescopeError

WAIT_S = 3.0
"""How long a scripted worker waits for another's step before it goes on without it."""

_TAKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    from livescope.pipeline._results import ResultsLock
    from livescope.schema import LivescopeError

    results, role = Path(sys.argv[1]), sys.argv[2]


    def wait_for(name):  # another worker's step, said by a file; not forever
        deadline = time.monotonic() + {wait_s}
        while not (results / name).exists() and time.monotonic() < deadline:
            time.sleep(0.01)


    def say(name):
        (results / name).touch()


    if role == "B":  # slow between its check and each of its moves (a slow file system)
        replace, link = os.replace, os.link

        def slow_replace(src, dst):
            say("B_checked")
            wait_for("A_holds")
            replace(src, dst)

        def slow_link(src, dst):
            say("B_aside")
            wait_for("C_done")
            link(src, dst)

        os.replace, os.link = slow_replace, slow_link
    elif role == "A":
        wait_for("B_checked")
    elif role == "C":
        wait_for("B_aside")
    try:
        ResultsLock(results)
    except LivescopeError:
        print("refused", flush=True)
    else:
        print("holds", flush=True)
    if role == "A":
        say("A_holds")
    elif role == "C":
        say("C_done")
    sys.stdin.read()  # (held until told to end)
    """
).format(wait_s=WAIT_S)


def _worker(results: Path, role: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _TAKER, str(results), role],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _stale_lock(results: Path) -> str:
    """Leave the lock of a worker killed while it held it; return the lock file's text."""
    results.mkdir(parents=True, exist_ok=True)
    w = _worker(results, "killed")
    assert w.stdout is not None
    assert w.stdout.readline().strip() == "holds"
    w.kill()
    w.communicate()
    return (results / WORKER_LOCK).read_text(encoding="utf-8")


def test_of_three_workers_taking_over_a_stale_lock_at_once_one_holds_it(tmp_path: Path) -> None:
    # B found the lock stale and is slow to move it aside: A takes it over meanwhile; B then
    # moved A's fresh lock aside, and C made one before B put A's back: A and C both held it
    results = tmp_path / "results"
    _stale_lock(results)
    workers = {role: _worker(results, role) for role in "BAC"}
    try:
        said = {role: w.stdout.readline().strip() for role, w in workers.items() if w.stdout}
    finally:
        for w in workers.values():
            w.communicate("")
    assert sorted(said.values()) == ["holds", "refused", "refused"], said


@pytest.mark.skipif(sys.platform != "linux", reason="a process's start time is read from /proc")
def test_a_stale_lock_whose_pid_another_process_now_has_is_taken_over(tmp_path: Path) -> None:
    results = tmp_path / "results"
    lock = json.loads(_stale_lock(results))
    # its pid given to an unrelated process, as the system does once the worker is gone
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock["pid"] = other.pid
        (results / WORKER_LOCK).write_text(json.dumps(lock), encoding="utf-8")
        taken = ResultsLock(results)
        assert json.loads((results / WORKER_LOCK).read_text(encoding="utf-8"))["pid"] != other.pid
        taken.release()
    finally:
        other.kill()
        other.wait()


def test_the_lock_of_a_running_worker_is_held(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    w = _worker(results, "running")
    try:
        assert w.stdout is not None
        assert w.stdout.readline().strip() == "holds"
        with pytest.raises(LivescopeError, match=f"process {w.pid}"):
            ResultsLock(results)
    finally:
        w.communicate("")
