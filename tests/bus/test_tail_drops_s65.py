"""Frames lost after the last one a subscriber received are counted once the run ends.

A gap is seen only before the next frame: the run's last frames (dropped at a full
queue, refused by the publisher, or still queued when it closed) have none after them.
The publisher's end-of-run message says where the run ended; without it, the tail is
not known (None), never 0.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import numpy as np
import pytest
import zmq

from livescope.bus import FramePublisher, FrameSubscriber
from livescope.schema import LivescopeError, clock_ns

from .test_bus import info
from .test_fuzz import _valid_header


def ended(sub: FrameSubscriber, timeout: float = 10.0) -> dict[str, Any]:
    """Return the subscriber's stats once the end of its run came (or ``timeout`` s passed)."""
    deadline = time.monotonic() + timeout
    while (stats := sub.stats()).get("dropped_at_end") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return stats


def accounted(stats: dict[str, Any]) -> int:
    """Return the frames a subscriber accounts for: received, refused or counted lost."""
    return int(
        stats["received"] + stats["not_held"] + stats["dropped_upstream"]
        + stats["missed_at_start"]
    )  # fmt: skip


def connected(pub: FramePublisher, sub: FrameSubscriber, shape: tuple[int, int]) -> int:
    """Publish frames until one reaches ``sub`` (subscribed by then); return the next number."""
    seq = 0
    while sub.stats()["received"] == 0:
        assert seq < 200, "the subscriber never received a frame"
        pub.publish(np.zeros(shape, np.uint16), info(seq, shape), clock_ns())
        seq += 1
        time.sleep(0.02)
    return seq


def test_a_frame_refused_at_the_end_of_the_run_is_counted_as_dropped() -> None:
    pub = FramePublisher("r1")
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint, maxlen=1000)
    try:
        seq = connected(pub, sub, (8, 8))
        for s in range(seq, seq + 3):
            assert pub.publish(np.full((8, 8), s, np.uint16), info(s, (8, 8)), clock_ns())
        with pytest.raises(LivescopeError, match="dtype"):  # (the run's last frame: never sent)
            pub.publish(np.zeros((8, 8), np.float64), info(seq + 3, (8, 8)), clock_ns())
        pub.close()
        stats = ended(sub)
        assert accounted(stats) == seq + 4, stats
        assert stats["dropped_at_end"] == 1, stats
        assert stats["dropped_upstream"] == 1, stats
        assert stats["drops"] == 1, stats
        assert sub.ended
    finally:
        sub.close()
        pub.close()


@pytest.mark.parametrize("mode", ["inline", "shm"])
def test_every_frame_of_a_burst_over_the_queues_is_accounted_for(
    mode: Literal["inline", "shm"],
) -> None:
    """Frames dropped at the publisher's full queue after the last received are counted too."""
    shape = (1024, 1024)
    pub = FramePublisher(
        "r1", mode=mode, max_frame_bytes=2 * 2**20, ring_bytes=16 * 2**20, sndhwm=2
    )
    sub = FrameSubscriber(
        pub.endpoint, control_endpoint=pub.control_endpoint, maxlen=1000, rcvhwm=2
    )
    try:
        seq = connected(pub, sub, shape)
        last = seq + 299
        img = np.ones(shape, np.uint16)
        for s in range(seq, last + 1):
            pub.publish(img, info(s, shape), clock_ns())
        pub.close()
        stats = ended(sub)
        assert accounted(stats) == last + 1, stats
        assert stats["dropped_at_end"] is not None, stats
    finally:
        sub.close()
        pub.close()


def test_a_run_not_seen_to_end_has_an_unknown_tail() -> None:
    """A publisher that still runs (or one from before the end message) states no end: None."""
    pub = FramePublisher("r1")
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint, maxlen=1000)
    try:
        seq = connected(pub, sub, (8, 8))
        assert sub.stats()["received"] >= 1
        assert sub.stats()["dropped_at_end"] is None
        assert not sub.ended
        sub.close()  # stopped while the run goes on: what came after is not known either
        pub.publish(np.zeros((8, 8), np.uint16), info(seq, (8, 8)), clock_ns())
        pub.close()
        assert sub.stats()["dropped_at_end"] is None
    finally:
        sub.close()
        pub.close()


def test_a_repeated_end_counts_once_and_a_malformed_one_is_rejected() -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sub = FrameSubscriber(f"tcp://127.0.0.1:{port}", maxlen=1000, run_id="r1")
    try:
        hdr = dict(_valid_header(), run_id="r1", seq=0, shape=[8, 8])
        while sub.stats()["received"] == 0:  # (until the subscription reaches the socket)
            sock.send_multipart([json.dumps(hdr).encode(), np.zeros(64, np.uint16).tobytes()])
            time.sleep(0.02)
        bad = [
            {"v": 1, "type": "end", "run_id": "r1", "last_seq": -1},
            {"v": 1, "type": "end", "run_id": "r1", "last_seq": True},
            {"v": 1, "type": "end", "run_id": "", "last_seq": 3},
            {"v": 2, "type": "end", "run_id": "r1", "last_seq": 3},
            {"v": 1, "type": "end", "run_id": "r1"},
        ]
        for msg in bad:
            sock.send(json.dumps(msg).encode())
        end = {"v": 1, "type": "end", "run_id": "r1", "last_seq": 3}
        other = {"v": 1, "type": "end", "run_id": "r2", "last_seq": 9}  # (another run's)
        for msg in (end, other, end):
            sock.send(json.dumps(msg).encode())
        sock.send(b"not a frame")  # (once it is rejected, the ends before it were taken)
        deadline = time.monotonic() + 10
        while sub.stats()["rejected"] <= len(bad) and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = sub.stats()
        assert stats["dropped_at_end"] == 3, stats
        assert stats["rejected"] == len(bad) + 1, stats
        assert stats["drops"] == 3, stats
    finally:
        sub.close()
        sock.close(0)
        ctx.term()
