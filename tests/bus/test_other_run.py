"""A worker's frame socket reconnects by itself: to the next agent that binds the same address."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from livescope.bus import FramePublisher, FrameSubscriber
from livescope.schema import FrameInfo, clock_ns


def info(seq: int) -> FrameInfo:
    return FrameInfo(
        seq=seq, index={"t": seq}, position="p0", channel="DAPI", x_um=0.0, y_um=0.0, z_um=0.0,
        exposure_ms=10.0, pixel_size_um=0.65, sample_time_s=0.0, runner_time_ms=0.0,
        t_camera_ns=clock_ns(), hardware_triggered=False, added_by=None, adler32=0,
        shape=(4, 4), dtype="uint16", event={},
    )  # fmt: skip


def send(pub: FramePublisher, seqs: list[int]) -> None:
    for seq in seqs:
        assert pub.publish(np.full((4, 4), seq, np.uint16), info(seq), clock_ns())
        time.sleep(0.02)


def drain(sub: FrameSubscriber) -> list[tuple[str, int]]:
    got = []
    while (f := sub.get(timeout=1.0)) is not None:
        got.append((f.header["run_id"], f.seq))
        f.release()
    return got


@pytest.fixture
def restarted() -> Iterator[tuple[FramePublisher, str, str]]:
    """Run A's publisher on a tcp address (closed by the test), the address kept."""
    pub = FramePublisher("A", endpoint="tcp://127.0.0.1:*", control_endpoint="tcp://127.0.0.1:*")
    yield pub, pub.endpoint, pub.control_endpoint
    pub.close()


def test_a_worker_of_one_run_takes_no_frame_of_the_next_agent_at_its_address(
    restarted: tuple[FramePublisher, str, str],
) -> None:
    """Run B's frames were delivered to the worker of run A as its own."""
    pub_a, endpoint, control = restarted
    sub = FrameSubscriber(endpoint, control_endpoint=control, run_id="A")
    try:
        time.sleep(0.3)
        send(pub_a, [100, 101])
        assert drain(sub) == [("A", 100), ("A", 101)]
        pub_a.close()
        pub_b = FramePublisher("B", endpoint=endpoint, control_endpoint=control)
        try:
            time.sleep(1.0)  # the subscriber reconnects
            send(pub_b, [0, 2, 4])
            assert drain(sub) == []
            assert sub.stats()["rejected"] == 3
        finally:
            pub_b.close()
    finally:
        sub.close()


def test_a_subscriber_of_any_run_counts_the_gaps_of_the_next_run(
    restarted: tuple[FramePublisher, str, str],
) -> None:
    """The next run's numbers start again: its gaps went uncounted (below the last run's)."""
    pub_a, endpoint, control = restarted
    sub = FrameSubscriber(endpoint, control_endpoint=control)
    try:
        time.sleep(0.3)
        send(pub_a, [100, 101])
        assert len(drain(sub)) == 2
        pub_a.close()
        pub_b = FramePublisher("B", endpoint=endpoint, control_endpoint=control)
        try:
            time.sleep(1.0)  # the subscriber reconnects
            send(pub_b, [0, 2, 4])
            assert drain(sub) == [("B", 0), ("B", 2), ("B", 4)]
            assert sub.stats()["dropped_upstream"] == 2
        finally:
            pub_b.close()
    finally:
        sub.close()
