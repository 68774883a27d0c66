"""A worker whose attach fails leaves nothing behind that holds the agent's ring."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

from livescope.bus import BusInfo, FramePublisher, attach, connect
from livescope.schema import LivescopeError, clock_ns

from .test_bus import info

SHAPE = (8, 8)


@pytest.mark.parametrize(
    "endpoint",
    [
        pytest.param("tcp://127.0.0.1", id="no-port"),
        pytest.param("nonsense", id="no-scheme"),
        pytest.param("udp://127.0.0.1:5555", id="other-scheme"),
    ],
)
def test_connecting_to_what_is_not_an_endpoint_says_which(endpoint: str) -> None:
    """It raised zmq's bare ZMQError (the CLI shows those as a traceback)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        with pytest.raises(LivescopeError, match="cannot connect to"):
            connect(sock, endpoint)
    finally:
        sock.close(0)
        ctx.term()


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # (all closed)
def test_a_failed_attach_gives_the_agents_ring_back() -> None:
    """A bus.json whose decision endpoint is malformed: attach raised, and the frame
    subscriber it had made kept running, holding every slot of the ring: the agent
    dropped every frame after, for every worker."""
    nbytes = SHAPE[0] * SHAPE[1]
    pub = FramePublisher("r1", mode="shm", max_frame_bytes=nbytes, ring_bytes=4 * nbytes)
    try:
        assert pub.ring is not None
        bad = BusInfo(run_id="r1", frames=pub.endpoint, control=pub.control_endpoint,
                      decisions="tcp://127.0.0.1", mode="shm")  # fmt: skip
        before = {t.ident for t in threading.enumerate()}
        with pytest.raises(LivescopeError, match=r"tcp://127\.0\.0\.1"):
            attach(bad)
        time.sleep(0.3)
        left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
        assert "livescope-bus-rx" not in left
        assert not (pub.ring.v.readers[:, 1] != 0).any(), "the reader place was kept"
        frames = [(np.full(SHAPE, i, np.uint8), info(i, SHAPE)) for i in range(8)]
        sent = [pub.publish(image, meta, clock_ns()) for image, meta in frames]
        assert all(sent), f"{pub.stats()}"
    finally:
        pub.close()
