"""Frames published before a subscriber attached: its stats say which it never saw.

A counting worker started before the agent attaches once bus.json is there; frames the
agent publishes meanwhile (numbered from 0) were lost with no count (no gap before the
first frame received): its stats report the first frame's number and those before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import pytest

from livescope.bus import FramePublisher, FrameSubscriber
from livescope.schema import FrameInfo, clock_ns
from tests.conftest import wait_for

SHAPE = (16, 16)


def info(seq: int) -> FrameInfo:
    return FrameInfo(
        seq=seq, index={"t": seq}, position="p0", channel="DAPI", x_um=0.0, y_um=0.0, z_um=0.0,
        exposure_ms=10.0, pixel_size_um=0.65, sample_time_s=0.0, runner_time_ms=0.0,
        t_camera_ns=clock_ns(), hardware_triggered=False, added_by=None, adler32=0,
        shape=SHAPE, dtype="uint16", event={},
    )  # fmt: skip


def publish(pub: FramePublisher, seq: int) -> None:
    assert pub.publish(np.full(SHAPE, seq, np.uint16), info(seq), clock_ns()), f"frame {seq}"


def subscribed(pub: FramePublisher, sub: FrameSubscriber) -> None:
    """Return once ``sub`` receives what ``pub`` sends (ZeroMQ subscribes asynchronously).

    The probes are one-part messages: rejected, so no frame number of the run.
    """

    def probe() -> bool:
        pub._sock.send_multipart([b"probe"])  # (the publisher's own socket)
        return bool(sub.stats()["rejected"])

    wait_for(probe)


@pytest.fixture(params=["inline", "shm"])
def pub(request: pytest.FixtureRequest) -> Iterator[FramePublisher]:
    mode: Literal["inline", "shm"] = request.param
    publisher = FramePublisher(
        "r1", mode=mode, max_frame_bytes=SHAPE[0] * SHAPE[1] * 2, ring_bytes=16 * 1024
    )
    yield publisher
    publisher.close()


@pytest.mark.parametrize("k", [0, 4])
def test_a_subscriber_attached_after_frames_0_to_k_reports_them_missed(
    pub: FramePublisher, k: int
) -> None:
    for seq in range(k + 1):  # nobody subscribed: gone
        publish(pub, seq)
    with FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint) as sub:
        subscribed(pub, sub)
        for seq in range(k + 1, k + 4):
            publish(pub, seq)
            got = sub.get(timeout=5)
            assert got is not None, f"frame {seq} did not come: {sub.stats()}"
            with got:
                assert got.seq == seq
        stats = sub.stats()
    assert stats["received"] == 3
    assert stats["first_seq"] == k + 1, stats
    assert stats["missed_at_start"] == k + 1, stats
    # not a drop: frames before a subscriber attached were never its to lose
    assert stats["drops"] == 0, stats
    assert stats["dropped_upstream"] == 0, stats


def test_a_subscriber_from_the_first_frame_missed_none(pub: FramePublisher) -> None:
    with FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint) as sub:
        before = sub.stats()
        subscribed(pub, sub)
        for seq in range(3):
            publish(pub, seq)
            got = sub.get(timeout=5)
            assert got is not None, f"frame {seq} did not come: {sub.stats()}"
            got.release()
        stats = sub.stats()
    assert before["first_seq"] is None, before  # (no frame yet: nothing known)
    assert before["missed_at_start"] == 0, before
    assert stats["first_seq"] == 0, stats
    assert stats["missed_at_start"] == 0, stats
