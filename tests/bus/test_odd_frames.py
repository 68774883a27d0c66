"""Frames of odd layouts through the bus: what arrives is what was sent, or the sender is told."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from livescope.bus import FramePublisher, FrameSubscriber
from livescope.schema import FrameInfo, LivescopeError, clock_ns

SLOT_BYTES = 4096


def info(seq: int, image: np.ndarray) -> FrameInfo:
    return FrameInfo(
        seq=seq, index={"t": seq}, position="p0", channel="DAPI", x_um=0.0, y_um=0.0, z_um=0.0,
        exposure_ms=10.0, pixel_size_um=0.65, sample_time_s=0.0, runner_time_ms=0.0,
        t_camera_ns=clock_ns(), hardware_triggered=False, added_by=None, adler32=0,
        shape=image.shape, dtype=str(image.dtype), event={},
    )  # fmt: skip


@pytest.fixture(params=["inline", "shm"])
def pubsub(request: pytest.FixtureRequest) -> Iterator[tuple[FramePublisher, FrameSubscriber]]:
    pub = FramePublisher(
        "r1", mode=request.param, max_frame_bytes=SLOT_BYTES, ring_bytes=4 * SLOT_BYTES
    )
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint, maxlen=8)
    time.sleep(0.3)  # let the subscription reach the publisher
    yield pub, sub
    sub.close()
    pub.close()


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(np.arange(64, dtype=">u2").reshape(8, 8), id="big-endian-uint16"),
        pytest.param(np.linspace(0, 1, 12, dtype=">f4").reshape(3, 4), id="big-endian-float32"),
        pytest.param(np.arange(24, dtype=np.uint16).reshape(2, 3, 4), id="3-d"),
        pytest.param(np.arange(64, dtype=np.uint32).reshape(8, 8)[::2, ::3], id="strided"),
        pytest.param(np.asfortranarray(np.ones((3, 5), np.float32)), id="fortran-order"),
    ],
)
def test_odd_layouts_arrive_with_their_values_and_shape(
    pubsub: tuple[FramePublisher, FrameSubscriber], image: np.ndarray
) -> None:
    """A big-endian frame was sent with dtype '>u2', which every subscriber rejects."""
    pub, sub = pubsub
    assert pub.publish(image, info(0, image), clock_ns())
    got = sub.get(timeout=2)
    assert got is not None, sub.stats()
    with got:
        assert got.array.shape == image.shape
        assert got.array.dtype == image.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got.array, image)
    assert sub.stats()["rejected"] == 0


@pytest.mark.parametrize(
    ("image", "why"),
    [
        pytest.param(np.zeros((0, 4), np.uint16), "shape", id="zero-size"),
        pytest.param(np.array(7, np.uint16), "shape", id="0-d"),
        pytest.param(np.zeros((1, 1, 1, 2, 2), np.uint16), "shape", id="5-d"),
        pytest.param(np.zeros((4, 4), np.int16), "int16", id="int16"),
        pytest.param(np.zeros((4, 4), np.float64), "float64", id="float64"),
        pytest.param(np.zeros((4, 4), bool), "bool", id="bool"),
    ],
)
def test_a_frame_no_subscriber_can_take_is_refused_by_the_publisher(
    pubsub: tuple[FramePublisher, FrameSubscriber], image: np.ndarray, why: str
) -> None:
    """They were sent (publish said True), then rejected by every subscriber (or a TypeError)."""
    pub, sub = pubsub
    with pytest.raises(LivescopeError, match=why):
        pub.publish(image, info(0, image), clock_ns())
    assert pub.published == 0
    if pub.ring is not None:  # no slot taken by a frame that was not sent
        assert not pub.ring.v.holders.any()
    ok = np.ones((4, 4), np.uint16)  # the bus goes on
    assert pub.publish(ok, info(1, ok), clock_ns())
    got = sub.get(timeout=2)
    assert got is not None
    got.release()
    assert sub.stats()["rejected"] == 0


def test_a_run_id_no_subscriber_takes_is_refused_when_the_publisher_is_made() -> None:
    """Over 128 characters: every frame was published, and every one rejected by every worker."""
    with pytest.raises(LivescopeError, match="at most 128 characters"):
        FramePublisher("r" * 129)
    FramePublisher("r" * 128).close()
