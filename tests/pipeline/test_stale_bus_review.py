"""Review: a worker and an agent killed without ending its run (its ``bus.json`` left over).

The agent removes ``bus.json`` as it ends; one killed (SIGKILL, a crash) leaves it, and a
worker waited on it for ever, saying nothing: attached, it took no frame and never
ended; started later, it failed on a bus that nobody served, the recording unanalysed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from livescope.bus import BUS_FILE, BusInfo, attach
from livescope.pipeline import PipelineWorker, WorkerConfig
from livescope.schema import LivescopeError

from ..conftest import ROOT, wait_for

NO_ENGINES = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)

SAFETY_S = 60.0
"""Longest a worker may take to end once its agent is killed: past it, the test fails
(the worker hung) instead of hanging itself."""

needs_sigkill = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


class Agent:
    """A real agent process (`livescope agent`) acquiring a long plan into ``run``."""

    def __init__(self, tmp_path: Path) -> None:
        plan = tmp_path / "plan.yaml"
        plan.write_text(
            "stage_positions: [{x: 0, y: 0, z: 0, name: A}]\n"
            "channels: [{config: Phase, exposure: 10}, {config: DAPI, exposure: 30}]\n"
            "time_plan: {interval: 300, loops: 1000}\n"  # a time point every 0.5 s at 600x
        )
        self.run = tmp_path / "run"
        # (what the killed agent leaves in the temp folder, its socket files, stays in tmp_path)
        temp = tmp_path / "t"
        temp.mkdir()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livescope", "agent", "--plan", str(plan), "--out",
             str(self.run), "--bus", "inline", "--time-acceleration", "600", "--json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
            env={**os.environ, "TMPDIR": str(temp)},
        )  # fmt: skip

    def bus(self) -> dict[str, Any]:
        """Return its ``bus.json`` once written (failing if the agent exits first)."""
        path = self.run / BUS_FILE
        wait_for(lambda: path.exists() or self.proc.poll() is not None, timeout=60)
        assert self.proc.poll() is None, "the agent exited before writing bus.json"
        return dict(json.loads(path.read_text(encoding="utf-8")))

    def kill(self) -> None:
        """SIGKILL: no teardown, no summary; its ``bus.json`` stays."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert (self.run / BUS_FILE).exists()
        assert not (self.run / "summary.json").exists()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = Agent(tmp_path)
    yield a
    if a.proc.poll() is None:
        a.proc.kill()
        a.proc.wait(timeout=30)


def _recorded_frames(run: Path) -> int:
    try:
        return len((run / "frames.jsonl").read_text(encoding="utf-8").splitlines())
    except OSError:
        return 0


@needs_sigkill
@pytest.mark.slow
def test_a_worker_whose_agent_is_killed_ends_with_a_warning_and_analyses_the_recording(
    agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    bus = agent.bus()
    assert bus["pid"] == agent.proc.pid  # the agent names its process
    worker = PipelineWorker(agent.run, NO_ENGINES)
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            out["summary"] = worker.run(attach_timeout_s=10)
        except BaseException as exc:  # noqa: BLE001 (raised by the test below)
            out["error"] = exc

    thread = threading.Thread(target=work, name="test-worker", daemon=True)
    with caplog.at_level("WARNING", logger="livescope"):
        thread.start()
        wait_for(lambda: worker.counts["fields_analysed"] >= 1 or not thread.is_alive(), 60)
        assert thread.is_alive(), out  # attached, and analysing fields live
        agent.kill()
        thread.join(SAFETY_S)
        if thread.is_alive():  # (it waits for the left-over bus.json to go: let it end)
            (agent.run / BUS_FILE).unlink()
            thread.join(SAFETY_S)
            pytest.fail(f"the worker did not end within {SAFETY_S:g} s of its agent's kill")
    assert "error" not in out, out
    summary = out["summary"]
    assert summary["ok"]
    assert summary["run_id"] == bus["run_id"]
    assert summary["frames_received"] > 0  # (live, before the kill)
    # every field the killed agent recorded is analysed (live, or read back from the recording)
    assert summary["frames_analysed"] >= 2 * (_recorded_frames(agent.run) // 2)
    said = [r.getMessage() for r in caplog.records if "gone without ending" in r.getMessage()]
    assert said, [r.getMessage() for r in caplog.records]
    assert f"(process {agent.proc.pid})" in said[0]
    assert "stops taking frames" in said[0]


@needs_sigkill
@pytest.mark.slow
def test_a_worker_started_after_its_agent_was_killed_analyses_what_it_recorded(
    agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    bus = agent.bus()
    wait_for(lambda: _recorded_frames(agent.run) >= 4, 60)
    agent.kill()
    recorded = _recorded_frames(agent.run)
    with caplog.at_level("WARNING", logger="livescope"):
        # (before: "no answer from the bus control" after 3 s, nothing analysed)
        summary = PipelineWorker(agent.run, NO_ENGINES).run(attach_timeout_s=1)
    assert summary["ok"]
    assert summary["run_id"] == bus["run_id"]  # (no summary.json to read it from)
    assert summary["frames_received"] == 0
    assert summary["frames_analysed"] >= 2 * (recorded // 2) >= 4
    said = [r.getMessage() for r in caplog.records if "gone without ending" in r.getMessage()]
    assert said, [r.getMessage() for r in caplog.records]
    assert f"(process {agent.proc.pid})" in said[0]
    # a worker of one's own (`attach`) is told at once, not "no answer" after a wait
    with pytest.raises(LivescopeError, match=rf"process {agent.proc.pid}\) is gone without"):
        attach(agent.run)


def _ended_pid() -> int:
    """Return the id of a process of this host that has ended (and been waited for)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def _agent_here() -> BusInfo:
    """A `BusInfo` as an agent of this process writes it (this process runs)."""
    return BusInfo("r1", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3",
                   "inline").with_this_process()  # fmt: skip


@pytest.mark.parametrize(
    ("info", "gone"),
    [
        pytest.param(lambda: replace(_agent_here(), pid=_ended_pid()), True, id="ended-here"),
        pytest.param(_agent_here, False, id="running-here"),
        # another host's process ids say nothing here
        pytest.param(
            lambda: replace(_agent_here(), pid=_ended_pid(), host="elsewhere"),
            False,
            id="another-hosts",
        ),
        # (an agent from before the process was named)
        pytest.param(lambda: replace(_agent_here(), pid=None, host=None), False, id="unnamed"),
    ],
)
def test_only_an_agent_process_of_this_host_that_has_ended_counts_as_gone(
    tmp_path: Path, info: Any, gone: bool
) -> None:
    written = info()
    written.write(tmp_path)
    read = BusInfo.read(tmp_path)
    assert read == written
    assert read.agent_gone() is gone


def test_an_older_bus_file_without_a_process_still_reads(tmp_path: Path) -> None:
    (tmp_path / BUS_FILE).write_text(json.dumps({
        "run_id": "r1", "frames": "tcp://127.0.0.1:1", "control": "tcp://127.0.0.1:2",
        "decisions": "tcp://127.0.0.1:3", "mode": "inline", "decision_protocol": 2,
    }))  # fmt: skip
    info = BusInfo.read(tmp_path)
    assert (info.pid, info.host) == (None, None)
    assert not info.agent_gone()
