"""Shared-memory frames: who holds a slot, and for how long (arrays, re-registration, close)."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import numpy as np
import pytest

from livescope.bus import Frame, FramePublisher, FrameSubscriber
from livescope.schema import FrameInfo, clock_ns
from tests.conftest import wait_for

SHAPE = (8, 8)
SLOTS = 4


def info(seq: int) -> FrameInfo:
    return FrameInfo(
        seq=seq, index={"t": seq}, position="p0", channel="DAPI", x_um=0.0, y_um=0.0, z_um=0.0,
        exposure_ms=10.0, pixel_size_um=0.65, sample_time_s=float(seq), runner_time_ms=0.0,
        t_camera_ns=clock_ns(), hardware_triggered=False, added_by=None, adler32=0,
        shape=SHAPE, dtype="uint8", event={},
    )  # fmt: skip


@pytest.fixture
def ring() -> Iterator[tuple[FramePublisher, FrameSubscriber]]:
    """A publisher whose ring has 4 slots of one 8x8 uint8 frame, and a subscriber."""
    nbytes = SHAPE[0] * SHAPE[1]
    pub = FramePublisher("r1", mode="shm", max_frame_bytes=nbytes, ring_bytes=SLOTS * nbytes)
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint, maxlen=64)
    time.sleep(0.3)  # let the subscription reach the publisher
    yield pub, sub
    sub.close()
    pub.close()


def slot_of(frame: Frame) -> int:
    shm = frame.header["shm"]
    assert shm is not None
    return shm["slot"]


class Sender:
    def __init__(self, pub: FramePublisher) -> None:
        self.pub = pub
        self.seq = 0

    def __call__(self, value: int) -> bool:
        ok = self.pub.publish(np.full(SHAPE, value, np.uint8), info(self.seq), clock_ns())
        self.seq += 1
        return ok


def test_an_array_kept_without_its_frame_keeps_the_slot(
    ring: tuple[FramePublisher, FrameSubscriber],
) -> None:
    """``a = sub.get().array``: the frame is collected at once, and its slot used to go back
    to the ring with it, so the writer overwrote the pixels under the array still in use."""
    pub, sub = ring
    send = Sender(pub)
    kept = []
    for value in range(1, SLOTS + 1):
        assert send(value)
        got = sub.get(timeout=2)
        assert got is not None
        # the array alone, or a view of it (a slice, a reshape): no Frame left
        kept.append(
            [got.array, got.array[2:, 1:], got.array.T, got.array.reshape(-1)[8:]][value - 1]
        )
        del got
    gc.collect()
    for value in range(100, 100 + SLOTS):  # every slot is still held: nothing overwritten
        assert not send(value)
    assert pub.stats()["dropped_no_slot"] == SLOTS
    assert [int(a[0]) if a.ndim == 1 else int(a[0, 0]) for a in kept] == [1, 2, 3, 4]
    assert not any(a.flags.writeable for a in kept)
    del kept  # the last arrays gone: their slots return to the ring
    gc.collect()
    for value in range(200, 200 + SLOTS):
        assert send(value)
        got = sub.get(timeout=2)
        assert got is not None
        with got:
            assert int(got.array[0, 0]) == value


def test_release_gives_the_slot_back_though_the_array_lives(
    ring: tuple[FramePublisher, FrameSubscriber],
) -> None:
    pub, sub = ring
    send = Sender(pub)
    assert send(1)
    first = sub.get(timeout=2)
    assert first is not None
    arr = first.array
    first.release()  # early: the array must not be used after it (`valid` says so)
    first.release()  # (again: nothing)
    slot = slot_of(first)
    reused = None
    for value in range(2, 2 + SLOTS):  # every slot free: one lands in the first frame's
        assert send(value)
        got = sub.get(timeout=2)
        assert got is not None
        if slot_of(got) == slot:
            reused = got
        else:
            got.release()
    assert reused is not None
    assert not first.valid()
    assert int(arr[0, 0]) == int(reused.array[0, 0])  # (what the warning is about)
    reused.release()


def test_a_frame_released_after_a_reregistration_keeps_the_newer_frames_hold(
    ring: tuple[FramePublisher, FrameSubscriber],
) -> None:
    """A frame from before the reader was declared dead and registered again, released
    later, used to drop the count of a newer frame in the same slot: the subscriber's
    sweep then gave that slot back and the writer overwrote the newer frame in use."""
    pub, sub = ring
    send = Sender(pub)
    assert send(1)
    old = sub.get(timeout=2)
    assert old is not None
    assert pub.ring is not None
    assert sub.reader is not None
    pub.ring.unregister_reader(sub.reader.index)  # as the writer does after a stall
    deadline = time.monotonic() + 3
    while sub.counts["reregistered"] < 1 or sub.reader is None or not sub.reader.registered:
        assert time.monotonic() < deadline, "the reader did not register again"
        time.sleep(0.01)
    newer = []
    for value in range(2, 2 + SLOTS):  # the ring's 4 slots in turn: one is the old frame's
        assert send(value)
        got = sub.get(timeout=2)
        assert got is not None
        newer.append(got)
    same = [f for f in newer if slot_of(f) == slot_of(old)]
    assert len(same) == 1
    kept = same[0]
    for f in newer:
        if f is not kept:
            f.release()
    published_ns = clock_ns()
    old.release()  # the user is done with the frame from before the re-registration
    # the receiver sweeps every 0.2 s the holds older than 1 s it has no frame for
    while clock_ns() - published_ns < 1.6e9:
        time.sleep(0.05)
    assert sub.counts["lost_in_transit"] == 0
    value = int(kept.array[0, 0])
    for v in range(100, 100 + SLOTS):  # three free slots; the kept frame's stays held
        send(v)
    assert kept.valid()
    assert int(kept.array[0, 0]) == value
    kept.release()


def test_closing_a_publisher_twice_does_nothing_the_second_time() -> None:
    pub = FramePublisher("r1", mode="shm", max_frame_bytes=64)
    assert pub.ring is not None
    ring = pub.ring
    pub.close()
    pub.close()
    ring.close()


def test_a_slow_receiver_drops_its_own_oldest_frames_not_the_newest_of_every_receiver(
    ring: tuple[FramePublisher, FrameSubscriber],
) -> None:
    """A receiver that never takes its frames queued up to ``maxlen`` (16), holding every
    slot of a ring of fewer (large frames: 16 MiB ones fill 256 MiB in 16): the publisher
    then had no slot and dropped the newest frames for every receiver."""
    pub, slow = ring  # (slow: maxlen 64, never read)
    fast = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint, maxlen=64)
    try:
        time.sleep(0.3)
        send = Sender(pub)
        for value in range(12):
            assert send(value), f"frame {value} found no slot"
            got = fast.get(timeout=2)
            assert got is not None
            with got:
                assert int(got.array[0, 0]) == value
            # (the slow one's receiver thread takes each frame before the next is sent: on a
            # loaded host it could lag one frame behind, its slot not yet given back)
            wait_for(lambda v=value: slow.counts["received"] > v)
        assert pub.stats()["dropped_no_slot"] == 0
        time.sleep(0.2)  # (the slow one's receiver thread has them all)
        kept = [slow.get(timeout=1) for _ in range(SLOTS - 2)]
        assert [int(f.array[0, 0]) for f in kept if f is not None] == [10, 11]  # the newest
        assert slow.counts["dropped_queue"] == 12 - (SLOTS - 2)
    finally:
        fast.close()
