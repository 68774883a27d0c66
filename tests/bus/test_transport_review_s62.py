"""Frame bus review: a stalled receiver's unread frames, headers no subscriber takes, a
subscriber without the control endpoint, publishing after close."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from livescope.bus import FramePublisher, FrameSubscriber
from livescope.bus._shm import ShmReader, ShmRing
from livescope.schema import HeaderError, LivescopeError, clock_ns
from tests.bus.test_shm_review import SHAPE, info
from tests.conftest import wait_for

NBYTES = SHAPE[0] * SHAPE[1]


def image(value: int = 0) -> np.ndarray[Any, Any]:
    return np.full(SHAPE, value % 256, np.uint8)


@pytest.fixture
def shm_bus() -> Iterator[tuple[FramePublisher, FrameSubscriber]]:
    """A publisher whose ring has 16 slots of one 8x8 uint8 frame, and a subscriber."""
    pub = FramePublisher("r1", mode="shm", max_frame_bytes=NBYTES, ring_bytes=16 * NBYTES)
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint, maxlen=8)
    try:
        # (until the subscription reaches the publisher: a frame comes)
        seq = iter(range(10**6))
        first = wait_for(lambda: pub.publish(image(), info(next(seq)), 0) and sub.get(0.05))
        first.release()
        while (frame := sub.get(timeout=0.2)) is not None:
            frame.release()
        # (a frame published before the subscription reached the publisher was lost in
        # transit, its slot held for the reader until its sweep: the tests count from here)
        assert pub.ring is not None
        ring = pub.ring
        wait_for(lambda: not ring.v.held().any(), timeout=10)
        yield pub, sub
    finally:
        sub.close()
        pub.close()


def unsent(pub: FramePublisher) -> int:
    """Publish a frame in the ring whose header is never sent (lost in transit); its slot."""
    assert pub.ring is not None
    with pub._lock:
        slot = pub.ring.claim(NBYTES)
        assert slot is not None
        pub.ring.write(slot, image(99))
        pub.ring.publish(slot)
    return slot


# ------------------------------------------------------------ a stalled receiver


def test_frames_waiting_in_a_stalled_receivers_socket_are_not_lost(
    shm_bus: tuple[FramePublisher, FrameSubscriber], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver thread held up over a second on one frame (a long GIL hold, an overloaded
    host): its next sweep gave back the slots of the frames waiting in its socket, which then
    came 'not_held' and were lost, also counted lost in transit."""
    pub, sub = shm_bus
    before = sub.stats()
    stalled, published = threading.Event(), threading.Event()
    receive = sub._receive

    def slow(parts: list[zmq.Frame]) -> None:
        if not stalled.is_set():
            stalled.set()
            published.wait(10)
            time.sleep(1.3)  # (the frames published meanwhile are now over a second old)
        receive(parts)

    monkeypatch.setattr(sub, "_receive", slow)
    assert pub.publish(image(0), info(100), 0)
    wait_for(stalled.is_set)
    for k in range(1, 6):
        assert pub.publish(image(k), info(100 + k), 0)
    published.set()
    got: list[int] = []

    def take() -> bool:
        frame = sub.get(timeout=0.05)
        if frame is not None:
            got.append(frame.seq)
            frame.release()
        return len(got) == 6

    wait_for(take)
    st = sub.stats()
    assert got == list(range(100, 106))
    assert (st["not_held"], st["lost_in_transit"]) == (
        before["not_held"], before["lost_in_transit"],
    ), st  # fmt: skip
    assert pub.stats()["dropped_no_slot"] == 0


def test_a_frame_whose_header_was_lost_before_a_newer_frame_is_given_back(
    shm_bus: tuple[FramePublisher, FrameSubscriber],
) -> None:
    """Headers come in the order sent: the hold of one lost before a frame received goes."""
    pub, sub = shm_bus
    assert pub.ring is not None
    assert sub.reader is not None
    before = sub.counts["lost_in_transit"]
    lost = unsent(pub)
    gen = sub.reader.generation(lost)
    assert sub.reader.holds(lost, gen)
    assert pub.publish(image(1), info(200), 0)
    frame = sub.get(timeout=5)
    assert frame is not None
    wait_for(lambda: sub.counts["lost_in_transit"] == before + 1)
    assert not sub.reader.holds(lost, gen)
    assert frame.valid()
    frame.release()


def test_a_lost_header_with_no_frame_after_it_is_given_back_once_the_socket_is_empty(
    shm_bus: tuple[FramePublisher, FrameSubscriber],
) -> None:
    """A ring whose slots all wait for headers that never come would stop every reader."""
    pub, sub = shm_bus
    assert sub.reader is not None
    before = sub.counts["lost_in_transit"]
    lost = unsent(pub)
    gen = sub.reader.generation(lost)
    wait_for(lambda: sub.counts["lost_in_transit"] == before + 1)
    assert not sub.reader.holds(lost, gen)


def test_the_sweep_gives_back_only_frames_published_before_the_time_given() -> None:
    ring = ShmRing(4, 64)
    try:
        place, token = ring.register_reader()
        reader = ShmReader(ring.geometry, place, token)
        try:
            slots = []
            for value in range(3):
                slot = ring.claim(64)
                assert slot is not None
                ring.write(slot, np.full(64, value, np.uint8))
                slots.append((slot, ring.publish(slot)))
                if value == 0:
                    between = clock_ns()
            assert reader.sweep(set(), 0.0, before_ns=between) == 1
            assert [reader.holds(*s) for s in slots] == [False, True, True]
            assert reader.sweep({slots[1][0]}, 0.0) == 1  # (no time: all, but those in use)
            assert [reader.holds(*s) for s in slots] == [False, True, False]
        finally:
            reader.close()
    finally:
        ring.close()


# ------------------------------------------------------------ headers no subscriber takes

REFUSED = [
    pytest.param({"position": "plate1_well_A1_" + "x" * 285}, "position", id="position-300"),
    pytest.param({"channel": "c" * 257}, "channel", id="channel-257"),
    pytest.param({"exposure_ms": -1.0}, "exposure_ms", id="negative-exposure"),
    pytest.param({"pixel_size_um": -0.65}, "pixel_size_um", id="negative-pixel-size"),
    pytest.param({"index": {"t": 2**31}}, "index", id="index-2**31"),
    pytest.param({"added_by": "d" * 65}, "added_by", id="added-by-65"),
    pytest.param({"index": {"t" * 70_000: 0}}, "larger than", id="header-over-64KiB"),
]


@pytest.mark.parametrize("mode", ["inline", "shm"])
@pytest.mark.parametrize(("change", "field"), REFUSED)
def test_a_header_every_subscriber_refuses_is_not_sent(
    mode: str, change: dict[str, Any], field: str
) -> None:
    """It was sent and counted published (every subscriber refused it), and in shared memory
    its slot stayed held a second."""
    pub = FramePublisher("r1", mode=mode, max_frame_bytes=NBYTES)  # type: ignore[arg-type]
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint)
    try:
        with pytest.raises(HeaderError, match=field):
            pub.publish(image(), info(0, **change), clock_ns())
        assert pub.stats()["published"] == 0
        if pub.ring is not None:
            assert not pub.ring.v.held().any()
    finally:
        sub.close()
        pub.close()


@pytest.mark.parametrize("mode", ["inline", "shm"])
def test_a_header_at_every_limit_is_sent_and_taken(mode: str) -> None:
    """The publisher's check is the subscriber's: no stricter."""
    pub = FramePublisher("r1", mode=mode, max_frame_bytes=NBYTES)  # type: ignore[arg-type]
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint)
    try:
        edge = info(
            0, position="p" * 256, channel="c" * 256, exposure_ms=0.0, pixel_size_um=0.0,
            index={"t": 2**31 - 1}, added_by="d" * 64,
        )  # fmt: skip
        frame = wait_for(lambda: pub.publish(image(), edge, clock_ns()) and sub.get(0.05))
        assert frame.header["position"] == "p" * 256
        assert frame.header["index"] == {"t": 2**31 - 1}
        frame.release()
        assert sub.stats()["rejected"] == 0
    finally:
        sub.close()
        pub.close()


# ------------------------------------------------------------ no control endpoint; closed


def test_a_subscriber_without_the_control_endpoint_says_so_for_shared_memory_frames(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It said only "not attached", and reported mode "inline"."""
    pub = FramePublisher("r1", mode="shm", max_frame_bytes=NBYTES, ring_bytes=4 * NBYTES)
    sub = FrameSubscriber(pub.endpoint)
    try:
        with caplog.at_level(logging.WARNING, logger="livescope"):
            wait_for(lambda: pub.publish(image(), info(0), 0) and sub.stats()["rejected"])
        assert "give control_endpoint (or use attach())" in caplog.text
        assert sub.stats()["mode"] == "shm"
    finally:
        sub.close()
        pub.close()


@pytest.mark.parametrize("mode", ["inline", "shm"])
def test_publishing_after_close_says_the_publisher_is_closed(mode: str) -> None:
    """It raised AttributeError (shm) or ZMQError (inline)."""
    pub = FramePublisher("r1", mode=mode, max_frame_bytes=NBYTES)  # type: ignore[arg-type]
    pub.close()
    with pytest.raises(LivescopeError, match="frame publisher is closed"):
        pub.publish(image(), info(0), clock_ns())
