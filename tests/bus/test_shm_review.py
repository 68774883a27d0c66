"""Shared-memory frame bus: places, holds and blocks that must not outlive a failure."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from livescope.bus import FramePublisher, FrameSubscriber
from livescope.bus._shm import ShmReader, ShmRing
from livescope.schema import FrameInfo, LivescopeError, clock_ns

SHAPE = (8, 8)


def info(seq: int, **changes: object) -> FrameInfo:
    out = FrameInfo(
        seq=seq, index={"t": seq}, position="p0", channel="DAPI", x_um=0.0, y_um=0.0, z_um=0.0,
        exposure_ms=10.0, pixel_size_um=0.65, sample_time_s=float(seq), runner_time_ms=0.0,
        t_camera_ns=clock_ns(), hardware_triggered=False, added_by=None, adler32=0,
        shape=SHAPE, dtype="uint8", event={},
    )  # fmt: skip
    out.update(changes)  # type: ignore[typeddict-item]
    return out


@pytest.fixture
def pub() -> Iterator[FramePublisher]:
    """A shared-memory publisher of 4 slots of one 8x8 uint8 frame."""
    nbytes = SHAPE[0] * SHAPE[1]
    p = FramePublisher("r1", mode="shm", max_frame_bytes=nbytes, ring_bytes=4 * nbytes)
    yield p
    p.close()


def test_a_subscriber_refusing_the_run_gives_its_ring_place_back(pub: FramePublisher) -> None:
    """``hello`` registers a reader place before the run id is checked: refused, the place
    stayed taken, and every frame after was held for a reader that never reads."""
    with pytest.raises(LivescopeError, match="belongs to run"):
        FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint, run_id="other")
    assert pub.ring is not None
    assert not pub.ring.v.readers[:, 1].any()
    for seq in range(8):  # no place left taken: no slot is held, none is dropped
        assert pub.publish(np.full(SHAPE, seq, np.uint8), info(seq), clock_ns())
    assert not pub.ring.v.holders.any()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"x_um": float("nan")}, id="nan-stage-position"),
        pytest.param({"exposure_ms": "fast"}, id="exposure-not-a-number"),
    ],
)
def test_a_frame_whose_header_fails_holds_no_slot(
    pub: FramePublisher, bad: dict[str, object]
) -> None:
    """A header that cannot be made or encoded raised once the slot was marked held by every
    reader: no message told them, so the slot stayed held; four such frames held the ring."""
    assert pub.ring is not None
    index, token = pub.ring.register_reader()  # (a reader attached, as `hello` does)
    for seq in range(4):
        with pytest.raises((ValueError, TypeError)):
            pub.publish(np.zeros(SHAPE, np.uint8), info(seq, **bad), clock_ns())
    assert not pub.ring.v.holders.any()
    assert pub.publish(np.zeros(SHAPE, np.uint8), info(4), clock_ns())
    assert pub.stats()["dropped_no_slot"] == 0
    pub.ring.unregister_reader(index, token)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"slot_bytes": 32}, id="smaller-slots"),
        pytest.param({"n_slots": 2}, id="fewer-slots"),
        pytest.param({"max_readers": 4}, id="fewer-readers"),
    ],
)
def test_a_reader_refuses_a_geometry_other_than_the_rings(change: dict[str, int]) -> None:
    """The ring's own header (slots, readers, slot size) was not checked against the
    geometry a reader was given: a smaller one mapped every table at the wrong offset."""
    ring = ShmRing(4, 64)
    try:
        index, token = ring.register_reader()
        with pytest.raises(LivescopeError, match="geometry"):
            ShmReader({**ring.geometry, **change}, index, token)
    finally:
        ring.close()


@pytest.mark.parametrize("index", [pytest.param(-1, id="negative"), pytest.param(8, id="past")])
def test_a_reader_refuses_a_place_outside_the_table(index: int) -> None:
    """A place outside the readers table raised IndexError (or beat another's heartbeat)."""
    ring = ShmRing(4, 64)
    try:
        with pytest.raises(LivescopeError, match="place"):
            ShmReader(ring.geometry, index, 1)
        assert not ring.v.readers.any()
    finally:
        ring.close()


def test_a_subscriber_of_any_run_attaches_to_the_ring_of_the_next_agent_at_its_address() -> None:
    """An agent restarted at the same tcp addresses (Windows' transport) makes a new ring: a
    subscriber of any run refused every frame of it ("not attached") for good, none counted
    as a drop, where inline frames of the next run are taken (test_other_run)."""
    kw: dict[str, object] = {"mode": "shm", "max_frame_bytes": 64, "ring_bytes": 4 * 64}
    first = FramePublisher("A", endpoint="tcp://127.0.0.1:*", control_endpoint="tcp://127.0.0.1:*",
                           **kw)  # type: ignore[arg-type]  # fmt: skip
    endpoint, control = first.endpoint, first.control_endpoint
    sub = FrameSubscriber(endpoint, control_endpoint=control)
    try:
        first.close()
        nxt = FramePublisher("B", endpoint=endpoint, control_endpoint=control, **kw)  # type: ignore[arg-type]
        try:
            got = None
            deadline = time.monotonic() + 10
            seq = 0
            while got is None and time.monotonic() < deadline:
                nxt.publish(np.full(SHAPE, seq % 256, np.uint8), info(seq), clock_ns())
                seq += 1
                got = sub.get(timeout=0.05)
            assert got is not None, f"no frame of the next agent: {sub.stats()}"
            assert got.header["run_id"] == "B"
            assert np.array_equal(got.array, np.full(SHAPE, got.seq % 256, np.uint8))
            got.release()
        finally:
            sub.close()
            nxt.close()
    finally:
        sub.close()
