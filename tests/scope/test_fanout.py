"""FrameFanout: every frame recorded; published on the acquisition thread, never waiting."""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq
from numpy.typing import NDArray

from livescope.bus import FramePublisher, FrameSubscriber
from livescope.record import OmeZarrWriter, zarr_threads
from livescope.schema import BULK_PRIORITY_ENV, FrameInfo, LivescopeError, clock_ns
from livescope.scope._fanout import RECORDING_HOLD_S, FrameFanout


class ListSink:
    """A recording sink that keeps what it is given (and on which thread)."""

    def __init__(self) -> None:
        self.frames: list[tuple[NDArray[Any], FrameInfo]] = []
        self.threads: set[int | None] = set()
        self.nice: list[int] = []
        self.idle: list[bool] = []
        self.ages_ns: list[int] = []  # how old each frame was when written

    def write(self, image: NDArray[Any], info: FrameInfo) -> None:
        self.ages_ns.append(clock_ns() - int(info["t_camera_ns"]))
        self.frames.append((image, info))
        self.threads.add(threading.get_native_id())
        if sys.platform.startswith("linux"):
            self.nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            self.idle.append(os.sched_getscheduler(0) == os.SCHED_IDLE)

    def close(self) -> None:
        pass


def _event(t: int) -> useq.MDAEvent:
    return useq.MDAEvent(index={"t": t, "c": 0}, channel={"config": "DAPI"}, pos_name="p0")


@pytest.mark.parametrize("mode", ["inline", "shm"])
def test_frames_are_recorded_and_reach_a_subscriber_in_order(mode: str) -> None:
    pub = FramePublisher("r1", mode=mode, max_frame_bytes=64 * 64 * 2, ring_bytes=8 * 64 * 64 * 2)  # type: ignore[arg-type]
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint, maxlen=64)
    time.sleep(0.3)  # let the subscription reach the publisher
    sink = ListSink()
    fan = FrameFanout([sink], publisher=pub)
    try:
        images = [np.full((64, 64), t, np.uint16) for t in range(6)]
        for t, img in enumerate(images):
            fan.on_frame(img, _event(t), {"pixel_size_um": 0.5})
            img[...] = 999  # the camera reuses its buffer: the fanout kept a copy
            got = sub.get(timeout=2)  # published before on_frame returned
            assert got is not None
            with got:
                assert got.seq == t
                assert int(got.array[0, 0]) == t
        fan.finish()
    finally:
        sub.close()
        pub.close()
    assert [int(i["seq"]) for _, i in sink.frames] == list(range(6))
    assert [int(a[0, 0]) for a, _ in sink.frames] == list(range(6))
    assert (fan.frames_acquired, fan.frames_written, fan.bus_published) == (6, 6, 6)
    assert fan.bus_dropped == 0
    assert threading.get_native_id() not in sink.threads  # recorded on the writer thread
    # frames going to analysis: none written before its field could reach the engines
    assert min(sink.ages_ns) >= RECORDING_HOLD_S * 1e9


def _hold_ns(monkeypatch: pytest.MonkeyPatch, mode: str, **kw: Any) -> int:
    monkeypatch.setenv(BULK_PRIORITY_ENV, mode)
    fan = FrameFanout([ListSink()], **kw)
    fan.finish()
    return fan._hold_ns


def test_the_writer_holds_frames_for_analysis_only_beside_idle_class_engines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pub = FramePublisher("r1", mode="inline", max_frame_bytes=64)  # type: ignore[arg-type]
    try:
        linux = sys.platform.startswith("linux")
        assert _hold_ns(monkeypatch, "", publisher=pub) == (3_000_000 if linux else 0)
        assert _hold_ns(monkeypatch, "nice", publisher=pub) == 0  # no idle class: no reason
        assert _hold_ns(monkeypatch, "", publisher=pub, recording_nice=0) == 0
        assert _hold_ns(monkeypatch, "") == 0  # nothing goes to analysis
    finally:
        pub.close()


def test_the_writer_holds_each_frame_once_not_the_stream_and_loses_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import livescope.scope._fanout as fanout

    naps: list[float] = []
    sleep = time.sleep

    def nap(s: float) -> None:
        naps.append(s)
        sleep(s)

    monkeypatch.setattr(fanout.time, "sleep", nap)
    sink = ListSink()
    fan = FrameFanout([sink], hold_s=0.2)
    for t in range(20):  # queued at once: the writer waits once, then the rest are old enough
        fan.on_frame(np.full((8, 8), t, np.uint16), _event(t), {})
    fan.finish()
    assert [int(a[0, 0]) for a, _ in sink.frames] == list(range(20))
    assert min(sink.ages_ns) >= 0.2e9
    # (per frame, the waits would add up to 20 x 0.2 s; the frames queued after the first wait
    # out what is left of their own hold, microseconds)
    assert sum(naps) < 0.3, f"the writer waited {sum(naps):.2f} s for 20 frames queued at once"


def test_a_frame_with_no_free_slot_is_dropped_for_analysis_only() -> None:
    pub = FramePublisher("r1", mode="shm", max_frame_bytes=64 * 64 * 2, ring_bytes=0)  # 4 slots
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint, maxlen=64)
    time.sleep(0.3)
    sink = ListSink()
    fan = FrameFanout([sink], publisher=pub)
    try:
        held = []
        for t in range(6):  # the subscriber holds every frame it gets: four slots, six frames
            fan.on_frame(np.full((64, 64), t, np.uint16), _event(t), {})
            if (got := sub.get(timeout=0.5)) is not None:
                held.append(got)
        fan.finish()
        for g in held:
            g.release()
    finally:
        sub.close()
        pub.close()
    assert fan.frames_written == 6  # the recording has every frame
    assert fan.bus_published == 4
    assert fan.bus_dropped == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")
def test_recording_threads_run_at_lower_priority_the_others_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer and zarr's threads yield; the acquisition thread and a bystander do not."""
    monkeypatch.delenv(BULK_PRIORITY_ENV, raising=False)  # idle-class bulk threads
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with ThreadPoolExecutor(1, thread_name_prefix="asyncio") as bystander:  # e.g. a notebook's
        other = bystander.submit(threading.current_thread).result()
        sink = ListSink()
        zarr_sink = OmeZarrWriter(tmp_path, channels=["DAPI"], pixel_size_um=0.5)
        fan = FrameFanout([sink, zarr_sink], recording_nice=3)
        for t in range(3):
            fan.on_frame(np.full((32, 32), t, np.uint16), _event(t), {})
        fan.finish()
        assert sink.nice == [min(19, base + 3)] * 3
        assert sink.idle == [True] * 3  # a bulk thread, as the worker's engines
        zarr_own = zarr_threads()
        assert zarr_own  # its I/O thread at least
        for t in zarr_own:  # process-wide threads: an earlier run may have lowered them more
            assert t.native_id is not None
            assert os.getpriority(os.PRIO_PROCESS, t.native_id) >= min(19, base + 3), t.name
        assert other.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, other.native_id) == base
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")
def test_bulk_priority_nice_keeps_the_recorder_out_of_the_idle_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(BULK_PRIORITY_ENV, "nice")
    sink = ListSink()
    fan = FrameFanout([sink], recording_nice=2)
    fan.on_frame(np.zeros((8, 8), np.uint16), _event(0), {})
    fan.finish()
    assert sink.idle == [False]


class GatedSink(ListSink):
    """A sink that writes nothing until released: the recording falls behind."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def write(self, image: NDArray[Any], info: FrameInfo) -> None:
        self.gate.wait(10)
        super().write(image, info)


def test_a_recording_falling_behind_is_logged_and_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from livescope.scope._fanout import RECORDING_LAG_WARN

    sink = GatedSink()
    fan = FrameFanout([sink], recording_nice=0)
    n = 2 * RECORDING_LAG_WARN + 1
    with caplog.at_level("WARNING", logger="livescope"):
        for t in range(n):
            fan.on_frame(np.zeros((100, 100), np.uint16), _event(t), {})
    sink.gate.set()
    fan.finish()
    warned = [r.getMessage() for r in caplog.records if "behind the camera" in r.getMessage()]
    # the writer holds the first frame: the queue reaches 64 and 128 frames (20 kB each)
    assert len(warned) == 2, warned
    assert warned[0].startswith(f"recording is {RECORDING_LAG_WARN} frames behind")
    assert "(1 MB held in memory)" in warned[0]
    assert "LIVESCOPE_BULK_PRIORITY=nice" in warned[0]
    assert len(sink.frames) == n  # nothing dropped
    assert [i["seq"] for _, i in sink.frames] == list(range(n))


def test_a_frame_after_finish_is_reported_not_published(caplog: pytest.LogCaptureFixture) -> None:
    pub = FramePublisher("r1")
    sink = ListSink()
    fan = FrameFanout([sink], publisher=pub)
    try:
        fan.on_frame(np.zeros((8, 8), np.uint16), _event(0), {})
        fan.finish()
        with caplog.at_level("ERROR", logger="livescope"):
            fan.on_frame(np.zeros((8, 8), np.uint16), _event(1), {})
    finally:
        pub.close()
    assert "came after the acquisition ended: not recorded" in caplog.text
    assert (fan.frames_acquired, fan.frames_written, fan.bus_published) == (2, 1, 1)
    assert pub.published == 1


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is sent differently on Windows")
def test_ctrl_c_during_a_publish_is_raised_right_after_it() -> None:
    """Publishing runs on the acquisition (main) thread: Ctrl-C must not cut it in half."""
    import signal

    from livescope.scope._fanout import _no_ctrl_c

    done: list[bool] = []

    def publish_interrupted() -> None:
        with _no_ctrl_c():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # KeyboardInterrupt raised here would skip the next line
            done.append(True)

    # Python's own Ctrl-C handler (a shell starting the tests in the background ignores SIGINT)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            publish_interrupted()
        assert done == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def _press_ctrl_c_once_held(presses_held: int = 0) -> None:
    """From the writer thread: once finish() holds Ctrl+C back (and has held
    ``presses_held`` already), press it, as a user would (sent to the main thread)."""
    import signal

    from livescope.scope._fanout import _CtrlCHeld

    deadline = time.monotonic() + 10
    while True:
        handler = signal.getsignal(signal.SIGINT)
        held = getattr(handler, "__self__", None)
        if isinstance(held, _CtrlCHeld) and held.held >= presses_held:
            break
        if time.monotonic() > deadline:
            raise AssertionError("finish() did not hold Ctrl+C back within 10 s")
        time.sleep(0.005)
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


def _finish_interrupted(fan: FrameFanout, caplog: pytest.LogCaptureFixture) -> None:
    """Run ``fan.finish()``, expecting the KeyboardInterrupt of a Ctrl+C its sinks press."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with caplog.at_level("WARNING", logger="livescope"), pytest.raises(KeyboardInterrupt):
            fan.finish()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


class SlowSink(ListSink):
    """Writes slowly; the first frame written presses Ctrl+C (as a user would, twice)."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def write(self, image: NDArray[Any], info: FrameInfo) -> None:
        if not self.frames:
            _press_ctrl_c_once_held()  # lands while finish() waits for the writer
        time.sleep(0.02)
        super().write(image, info)

    def close(self) -> None:
        self.closed = True


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is sent differently on Windows")
def test_ctrl_c_while_the_recording_closes_waits_for_every_frame_then_is_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A second Ctrl+C during finish() must not leave frames unwritten or a sink unclosed."""

    sink, last = SlowSink(), ListSink()
    fan = FrameFanout([sink, last])
    for t in range(10):
        fan.on_frame(np.full((8, 8), t, np.uint16), _event(t), {})
    _finish_interrupted(fan, caplog)
    assert [int(a[0, 0]) for a, _ in sink.frames] == list(range(10))
    assert len(last.frames) == 10
    assert sink.closed
    assert (fan.frames_acquired, fan.frames_written) == (10, 10)
    assert "Ctrl+C: the recording is closed first" in caplog.text


class AbandonedSink(SlowSink):
    """Presses Ctrl+C at its first and third frames, once finish() holds Ctrl+C back."""

    fan: FrameFanout

    def write(self, image: NDArray[Any], info: FrameInfo) -> None:
        if len(self.frames) == 2:
            _press_ctrl_c_once_held(presses_held=1)  # (once the first was held)
            deadline = time.monotonic() + 10
            while not self.fan.abandoned and time.monotonic() < deadline:
                time.sleep(0.005)  # (this frame is being written when it is abandoned)
        super().write(image, info)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is sent differently on Windows")
def test_ctrl_c_pressed_again_while_the_recording_closes_abandons_it_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A close that hangs must not hold the user for ever: Ctrl+C again gives up on it."""

    sink = AbandonedSink()
    fan = sink.fan = FrameFanout([sink], recording_nice=0)
    for t in range(10):
        fan.on_frame(np.full((8, 8), t, np.uint16), _event(t), {})
    _finish_interrupted(fan, caplog)
    assert fan.abandoned
    assert fan._writer_done.wait(10), "the writer did not end"
    assert len(sink.frames) == fan.frames_written == 3  # (the frame being written was)
    assert not sink.closed
    assert fan.frames_acquired == 10
    assert "Ctrl+C again abandons them" in caplog.text
    assert "the recording is abandoned: 7 frame(s) not written" in caplog.text


def test_a_frame_that_cannot_be_taken_cancels_the_run_and_is_not_lost_without_a_word() -> None:
    # pymmcore-plus only logs what a frameReady handler raises: the frame was lost, the
    # run "ok". Metadata a device filled with text where a number belongs, for instance
    sink, cancelled = ListSink(), []
    fan = FrameFanout([sink], on_cancel=lambda: cancelled.append(True))
    img = np.zeros((8, 8), np.uint16)
    fan.on_frame(img, _event(0), {"pixel_size_um": 0.5})
    fan.on_frame(img, _event(1), {"pixel_size_um": 0.5, "exposure_ms": "n/a"})
    assert cancelled == [True]
    fan.on_frame(img, _event(2), {"pixel_size_um": 0.5})  # (came before the cancel took)
    with pytest.raises(LivescopeError, match=r"1 frame\(s\) from the camera could not be taken"):
        fan.finish()
    # the frames before and after it are recorded, not abandoned with it
    assert [info["index"]["t"] for _, info in sink.frames] == [0, 2]
