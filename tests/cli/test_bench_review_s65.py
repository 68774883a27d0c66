"""The benchmarks keep the user's files and take a Ctrl+C as one.

`bench replay-cluster --keep DIR` deleted what DIR's rec-<i> and replay-<n>w folders
held, whoever made them; Ctrl+C in it was reported as a failure, with a Python repr
of each replay; `bench pacing` ran a plan whose interval its camera's exposure
cannot meet; and `bench bus`'s receiver printed a KeyboardInterrupt traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

SMALLEST = ["--datasets", "2", "--timepoints", "2", "--size", "64", "--json"]
MARKER = ".livescope-bench"

# (a Ctrl+C while the bench waits for its replays: as_completed is dask's, not livescope's)
CTRL_C_IN_REPLAY = """\
import os, signal
import distributed
from livescope.cli import main
as_completed = distributed.as_completed
def ctrl_c_then_wait(futures, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    return as_completed(futures, *args, **kwargs)
if __name__ == "__main__":  # (not in the cluster's spawned processes, which import it too)
    distributed.as_completed = ctrl_c_then_wait
    main()
"""


def _livescope(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "livescope", *args],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False,
    )  # fmt: skip


def test_keep_refuses_a_folder_of_the_users_files(tmp_path: Path) -> None:
    mine = tmp_path / "mydata"
    (mine / "rec-0").mkdir(parents=True)
    (mine / "replay-1w").mkdir()
    (mine / "rec-0" / "notes.txt").write_text("x", encoding="utf-8")
    (mine / "replay-1w" / "figure.txt").write_text("y", encoding="utf-8")
    res = _livescope("bench", "replay-cluster", *SMALLEST, "--keep", str(mine))
    assert (mine / "rec-0" / "notes.txt").read_text(encoding="utf-8") == "x", res.stderr
    assert (mine / "replay-1w" / "figure.txt").read_text(encoding="utf-8") == "y", res.stderr
    assert res.returncode == 2, res.stderr
    said = json.loads(res.stdout)["error"]
    assert str(mine) in said, said
    assert "rec-0" in said, said
    assert MARKER in said, said


def test_keep_marks_an_empty_folder_and_keeps_the_rest(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()  # (empty: taken, and marked as the bench's)
    res = _livescope("bench", "replay-cluster", *SMALLEST, "--keep", str(keep))
    assert res.returncode == 0, res.stderr
    assert (keep / MARKER).is_file()
    assert {p.name for p in keep.iterdir()} == {MARKER, "rec-0", "rec-1", "replay-1w", "replay-2w"}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to itself: POSIX")
def test_ctrl_c_in_replay_cluster_says_interrupted(tmp_path: Path) -> None:
    (tmp_path / "ctrl_c_in_replay.py").write_text(CTRL_C_IN_REPLAY, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    res = subprocess.run(
        [sys.executable, "-m", "ctrl_c_in_replay", "bench", "replay-cluster", *SMALLEST],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False,
        # (a test run in the background of a shell ignores SIGINT, and so would the command)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    said = json.loads(res.stdout)["error"]
    assert said == "interrupted", said


def test_pacing_refuses_an_interval_the_exposure_cannot_meet() -> None:
    res = _livescope(
        "bench", "pacing", "--frames", "10", "--interval-ms", "20", "--worker-sleep-ms", "30",
        "--json",
    )  # fmt: skip
    assert res.returncode == 2, res.stdout
    said = json.loads(res.stdout)["error"]
    assert "20 ms exposure" in said, said


def _receiver(group: int) -> int | None:
    """A process of ``group`` that multiprocessing spawned (not its resource tracker)."""
    found = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True)
    for pid in map(int, found.stdout.split()):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the group's processes: /proc")
def test_ctrl_c_in_bench_bus_prints_no_traceback() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "livescope", "bench", "bus", "--paced-seconds", "0.5", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        # (its own group, as a terminal's foreground job; SIGINT as a shell's would be)
        preexec_fn=lambda: (signal.signal(signal.SIGINT, signal.SIG_DFL), os.setpgrp()),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while (receiver := _receiver(proc.pid)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver is not None, "no receiver process started within 60 s"
        time.sleep(0.3)  # (each receiver runs about 1 s, its start included)
        # (the receiver first, alone: whether it printed a traceback does not hang on how
        # soon the bench, interrupted at the same time, would end it)
        os.kill(receiver, signal.SIGINT)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # (then as a terminal's Ctrl+C: the whole group)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    # (multiprocessing starts a child's traceback with "Process SpawnProcess-<n>:")
    assert "Traceback" not in err, err
    assert "SpawnProcess" not in err, err
    assert proc.returncode == 2, err
    assert json.loads(out)["error"] == "interrupted", err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to one process: POSIX")
def test_pacing_stopped_lets_its_agent_close_its_bus(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # (the bench's folder and the agent's sockets)
    proc = subprocess.Popen(
        [sys.executable, "-m", "livescope", "bench", "pacing", "--frames", "50", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("livescope-pacing-*/no-worker/bus.json")):
            assert time.monotonic() < deadline, "the agent wrote no bus.json within 60 s"
            time.sleep(0.05)
        # (the bench alone, as a timeout stops the agent: a terminal's Ctrl+C reaches it too)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, err
    assert json.loads(out)["error"] == "interrupted", err
    # (killed, the agent left its bus's sockets: livescope-frames-<pid>-..., and so on)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], err
