"""A frame the subscriber refuses is counted once, as rejected, not again as a gap."""

from __future__ import annotations

import time

import numpy as np
import zmq

from livescope.bus import FrameSubscriber
from livescope.schema import encode_header


def drain(sub: FrameSubscriber) -> list[int]:
    """Return the numbers of the frames taken until none came for 0.5 s."""
    seqs = []
    while (f := sub.get(timeout=0.5)) is not None:
        seqs.append(f.seq)
        f.release()
    return seqs


def _header(seq: int, shm: dict[str, object] | None = None) -> bytes:
    return encode_header(
        {
            "v": 1, "run_id": "r1", "seq": seq, "index": {"t": seq}, "channel": "DAPI",
            "position": "p0", "x_um": 0.0, "y_um": 0.0, "z_um": 0.0, "exposure_ms": 10.0,
            "pixel_size_um": 0.65, "t_camera_ns": 1, "t_agent_ns": 2, "t_sent_ns": 3,
            "shape": [4, 4], "dtype": "uint16", "payload": "inline" if shm is None else "shm",
            "shm": shm, "sample_time_s": None, "added_by": None,
        }  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_refused_frame_is_counted_once_as_rejected_not_again_as_a_gap() -> None:
    """A frame in shared memory not attached: in ``rejected`` only (it was also a gap)."""
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{pub.bind_to_random_port('tcp://127.0.0.1')}"
    sub = FrameSubscriber(endpoint)
    try:
        time.sleep(0.3)
        pixels = np.zeros((4, 4), np.uint16).tobytes()
        pub.send_multipart([_header(0), pixels])
        pub.send_multipart([_header(1, {"name": "other", "slot": 0, "generation": 2}), b""])
        pub.send_multipart([_header(2), pixels])
        assert drain(sub) == [0, 2]
        st = sub.stats()
        assert (st["received"], st["rejected"], st["dropped_upstream"]) == (2, 1, 0), st
    finally:
        sub.close()
        pub.close(0)
