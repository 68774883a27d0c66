"""FrameFanout under pressure: a recording that falls too far behind, a sink other than the
recording that fails, a frame the camera hands in that cannot be taken, a Ctrl+C while a
complete recording closes."""

from __future__ import annotations

import errno
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq
from numpy.typing import NDArray

from livescope.record import read_frames
from livescope.schema import FrameInfo, LivescopeError
from livescope.scope import ScopeAgent, SimulatedMicroscope, interrupted_summary
from livescope.scope._fanout import FrameFanout

from ..conftest import wait_for


class ListSink:
    """Keeps the seq of every frame it is given."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.closed = False

    def write(self, image: NDArray[Any], info: FrameInfo) -> None:
        self.seqs.append(info["seq"])

    def close(self) -> None:
        self.closed = True


class GatedSink(ListSink):
    """Writes nothing until ``gate`` is set (a disk that has stopped keeping up)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def write(self, image: NDArray[Any], info: FrameInfo) -> None:
        assert self.gate.wait(10), "the gate was never opened"
        super().write(image, info)


class FailsAt(ListSink):
    """Raises a full disk's error on frame ``seq`` (as a ground truth writer might)."""

    def __init__(self, seq: int) -> None:
        super().__init__()
        self.at = seq

    def write(self, image: NDArray[Any], info: FrameInfo) -> None:
        if info["seq"] == self.at:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/truth/t0005.tif")
        super().write(image, info)


def _event(t: int) -> useq.MDAEvent:
    return useq.MDAEvent(index={"t": t, "c": 0}, channel={"config": "DAPI"}, pos_name="p0")


def _frame(t: int) -> NDArray[np.uint16]:
    return np.full((8, 8), t, np.uint16)  # (128 bytes)


# ------------------------------------------------------------ memory held


def test_a_recording_past_its_memory_ceiling_cancels_the_run_and_writes_what_was_queued() -> None:
    sink, cancelled = GatedSink(), []
    # three frames may wait: the one being written and two queued behind it
    fan = FrameFanout(
        [sink], recording_nice=0, on_cancel=lambda: cancelled.append(True), max_held_bytes=3 * 128
    )
    started = time.perf_counter()
    for t in range(10):
        fan.on_frame(_frame(t), _event(t), {})
    assert time.perf_counter() - started < 2.0  # the camera was never held up
    assert cancelled == [True]  # once, at the first frame that would pass it
    assert fan.overrun is not None
    assert "the disk is slower than the camera" in fan.overrun
    sink.gate.set()
    with pytest.raises(LivescopeError) as err:
        fan.finish()
    text = str(err.value)
    assert "fell 3 frame(s)" in text
    assert "behind the camera" in text
    assert "3 of 10 frame(s) recorded, 7 not" in text
    # the frames queued before it were written, in order; none after it
    assert sink.seqs == [0, 1, 2]
    assert sink.closed
    assert (fan.frames_acquired, fan.frames_written, fan.frames_unwritten) == (10, 3, 7)
    assert (fan._held_bytes, fan._held_frames) == (0, 0)


def test_the_default_memory_ceiling_is_a_share_of_the_pcs_memory() -> None:
    from livescope.scope._fanout import recording_memory_default

    held = recording_memory_default()
    assert held > 0
    if sys.platform.startswith("linux"):
        import os

        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        assert held == int(total * 0.25)
    fan = FrameFanout([ListSink()], recording_nice=0)
    fan.finish()  # (its writer thread ends)
    assert fan.max_held_bytes == held


class GatedUntilOverrun(ListSink):
    """Writes nothing until the agent's recording has fallen past its ceiling."""

    agent: ScopeAgent

    def write(self, image: NDArray[Any], info: FrameInfo) -> None:
        wait_for(lambda: self.agent._fanout is not None and self.agent._fanout.overrun)
        super().write(image, info)


def test_an_agent_whose_recording_falls_too_far_behind_stops_with_exact_counts(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    seq = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=0, loops=40),
    )
    frame_bytes = sim.core.getImageWidth() * sim.core.getImageHeight() * sim.core.getBytesPerPixel()
    slow = GatedUntilOverrun()
    agent = slow.agent = ScopeAgent(
        sim.core, sim.profile, seq, tmp_path, sim=sim, bus="off", extra_sinks=[slow],
        recording_memory_bytes=3 * frame_bytes,
    )  # fmt: skip
    with pytest.raises(LivescopeError, match=r"behind the camera, .* the disk is slower"):
        agent.run()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"] is False
    assert not summary["interrupted"]
    assert "the disk is slower than the camera" in summary["error"]
    # what the summary says was written is what the recording holds
    assert summary["frames_written"] == len(read_frames(tmp_path)) == len(slow.seqs) == 3
    assert summary["frames_acquired"] > 3


# ------------------------------------------------------------ a sink that fails


@pytest.mark.parametrize(
    ("failing", "written", "message"),
    [
        pytest.param(1, 6, r"FailsAt failed \(not the recording\) after 6 of 10 frame\(s\) were "
                     r"recorded: \[Errno 28\]", id="the second sink (ground truth)"),
        pytest.param(0, 5, r"recording failed after 5 of 10 frame\(s\) were written: \[Errno 28\]",
                     id="the recording"),
    ],
)  # fmt: skip
def test_the_written_count_is_the_recordings_and_the_error_names_the_sink_that_failed(
    failing: int, written: int, message: str
) -> None:
    sinks: list[ListSink] = [ListSink(), ListSink()]
    sinks[failing] = FailsAt(5)
    fan = FrameFanout(sinks, recording_nice=0, on_cancel=lambda: None)
    for t in range(10):
        fan.on_frame(_frame(t), _event(t), {})
    with pytest.raises(LivescopeError, match=message):
        fan.finish()
    assert fan.frames_written == len(sinks[0].seqs) == written
    assert fan.frames_unwritten == 10 - written


def test_an_agent_whose_ground_truth_fails_counts_the_frames_the_recording_holds(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    seq = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=0, loops=20),
    )
    agent = ScopeAgent(
        sim.core, sim.profile, seq, tmp_path, sim=sim, bus="off", extra_sinks=[FailsAt(5)]
    )
    with pytest.raises(LivescopeError, match=r"FailsAt failed \(not the recording\) after 6 "):
        agent.run()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames_written"] == len(read_frames(tmp_path)) == 6
    assert "FailsAt failed" in summary["error"]


# ------------------------------------------------------------ a frame refused


def test_a_frame_refused_is_acquired_and_not_written_and_keeps_its_own_seq() -> None:
    sink, now = ListSink(), iter(range(100))
    fan = FrameFanout([sink], recording_nice=0, on_cancel=lambda: None, clock=lambda: next(now))
    for t in range(6):
        meta = {"exposure_ms": "20 ms"} if t == 3 else {}
        fan.on_frame(_frame(t), _event(t), meta)
    with pytest.raises(LivescopeError, match=r"1 frame\(s\) from the camera could not be taken"):
        fan.finish()
    assert (fan.frames_acquired, fan.frames_written, fan.frames_unwritten) == (6, 5, 1)
    assert sink.seqs == [0, 1, 2, 4, 5]  # the gap where the refused frame was
    assert list(fan.frame_times) == [0, 1, 2, 3, 4, 5]  # (by seq: the refused one's too)


# ------------------------------------------------------------ Ctrl+C while closing


class CtrlCWhileClosing(ListSink):
    """Slow; presses Ctrl+C once, after acquisition ended, while frames wait to be written."""

    agent: ScopeAgent

    def write(self, image: NDArray[Any], info: FrameInfo) -> None:
        if not self.seqs:
            fan = wait_for(lambda: self.agent._fanout)
            wait_for(lambda: fan._finished)  # finish() has begun (the camera is done)
            from livescope.scope._fanout import _CtrlCHeld

            wait_for(lambda: isinstance(getattr(signal.getsignal(signal.SIGINT), "__self__", None),
                                        _CtrlCHeld))  # fmt: skip
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        time.sleep(0.01)
        super().write(image, info)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is sent differently on Windows")
def test_a_ctrl_c_after_acquisition_ended_leaves_a_complete_run_ok(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    seq = useq.MDASequence(
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=0, loops=12),
    )
    slow = CtrlCWhileClosing()
    agent = slow.agent = ScopeAgent(
        sim.core, sim.profile, seq, tmp_path, sim=sim, bus="off", extra_sinks=[slow]
    )
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):  # (raised once summary.json is written)
            agent.run()
    finally:
        signal.signal(signal.SIGINT, before)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["ok"], summary["interrupted"], summary["error"]) == (True, False, None)
    assert summary["interrupted_while_closing"] is True
    assert summary["frames_acquired"] == summary["frames_written"] == 12
    assert len(read_frames(tmp_path)) == len(slow.seqs) == 12
    # what the CLI reads after the KeyboardInterrupt: the run's summary, reported as it is
    assert interrupted_summary(tmp_path)["ok"] is True
