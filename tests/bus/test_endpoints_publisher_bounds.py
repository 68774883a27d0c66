"""Relative ipc endpoints bound absolute; inline frames queued for a subscriber bounded in bytes."""

from __future__ import annotations

import gc
import os
import socket
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from livescope.bus import FramePublisher, FrameSubscriber
from livescope.bus import _publisher as publisher_module
from livescope.schema import FrameInfo, LivescopeError, decode_header

ipc_files = pytest.mark.skipif(
    os.name == "nt" or not hasattr(socket, "AF_UNIX") or not zmq.has("ipc"),
    reason="no ipc socket files on this platform",
)

FRAME_SHAPE = (256, 512)  # uint16: 256 KiB frames
FRAME_BYTES = 256 * 512 * 2
QUEUED = 16  # frames of FRAME_BYTES the tests' byte budget holds
SLACK = 4  # frames a subscriber holds beyond its queue (the one being written, ZeroMQ's lwm)


def _info(seq: int) -> FrameInfo:
    return FrameInfo(
        seq=seq, index={"t": seq}, channel="BF", position="p0", x_um=0.0, y_um=0.0, z_um=0.0,
        exposure_ms=10.0, pixel_size_um=0.5, sample_time_s=None, added_by=None,
    )  # fmt: skip


# ------------------------------------------------------------------ relative ipc endpoints


@ipc_files
def test_a_relative_ipc_endpoint_is_bound_absolute_and_reached_from_another_folder(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ipc://frames.sock`` was kept relative: bus.json sent workers elsewhere to another file."""
    agent_dir, worker_dir = short_dir / "agent", short_dir / "worker"
    agent_dir.mkdir()
    worker_dir.mkdir()
    monkeypatch.chdir(agent_dir)
    here = os.getcwd()  # (the folder as the process sees it: symbolic links resolved)
    pub = FramePublisher("r", endpoint="ipc://frames.sock", control_endpoint="ipc://control.sock")
    try:
        assert pub.endpoint == f"ipc://{os.path.join(here, 'frames.sock')}"
        assert pub.control_endpoint == f"ipc://{os.path.join(here, 'control.sock')}"
        monkeypatch.chdir(worker_dir)
        with FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint) as sub:
            frame = None
            deadline = time.monotonic() + 10
            while frame is None and time.monotonic() < deadline:  # (until it has subscribed)
                pub.publish(np.zeros((4, 4), np.uint16), _info(1), 0)
                frame = sub.get(timeout=0.05)
            assert frame is not None
            frame.release()
    finally:
        pub.close()
    assert sorted(os.listdir(agent_dir)) == []  # (the socket files removed, from elsewhere)


@ipc_files
def test_a_relative_ipc_path_too_long_once_absolute_is_refused_saying_so(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bound relative it fitted ipc's limit: its absolute path, handed to workers, would not."""
    limit = zmq.IPC_PATH_MAX_LEN
    if not limit:
        pytest.skip("ZeroMQ knows no ipc path limit here")
    pad = limit - len(os.fsencode(short_dir)) - len("/d/frames.sock") + 1  # (one byte over)
    deep = short_dir / "d" / ("p" * pad)
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    path = os.path.join(os.getcwd(), "frames.sock")
    assert len(os.fsencode(path)) > limit
    with pytest.raises(LivescopeError) as err:
        FramePublisher("r", endpoint="ipc://frames.sock")
    assert str(err.value) == (
        f"cannot listen on ipc://{path}: its path is {len(os.fsencode(path))} bytes, over "
        f"ipc's {limit}; give a shorter path, or tcp://127.0.0.1:PORT (tcp://127.0.0.1:* for "
        "any free port); LIVESCOPE_TRANSPORT=tcp puts the endpoints not given on tcp"
    )
    assert os.listdir(deep) == []


@pytest.mark.skipif(
    not os.path.exists("/proc/net/unix") or not zmq.has("ipc"), reason="no abstract sockets"
)
def test_an_abstract_ipc_name_is_bound_as_given() -> None:
    """``@name`` has no file and no folder: not made absolute."""
    endpoint = f"ipc://@livescope-test-{uuid.uuid4().hex[:12]}"
    pub = FramePublisher("r", endpoint=endpoint)
    try:
        assert pub.endpoint == endpoint
    finally:
        pub.close()


# ------------------------------------------------------------------ inline queues in bytes


def _stalled_subscriber(ctx: zmq.Context[Any], pub: FramePublisher) -> zmq.Socket[Any]:
    """Subscribe to ``pub`` (once a frame came through), then read nothing more."""
    sock: zmq.Socket[Any] = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        sock.connect(pub.endpoint)
        probe = np.zeros(FRAME_SHAPE, np.uint16)
        deadline = time.monotonic() + 10
        while not sock.poll(50):  # (frames sent before the subscription arrives reach no one)
            assert time.monotonic() < deadline, "the subscriber never got a frame"
            pub.publish(probe, _info(0), 0)
        sock.recv_multipart()
    except BaseException:
        sock.close(0)
        raise
    return sock


def _frames_alive(refs: list[weakref.ref[Any]], bound: int) -> int:
    """Return how many frames sent are still held, once those dropped are let go (≤ bound)."""
    deadline = time.monotonic() + 5  # (pyzmq lets go of sent buffers on a thread of its own)
    while True:
        gc.collect()
        alive = sum(ref() is not None for ref in refs)
        if alive <= bound or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("max_frame_bytes", "late_subscriber"),
    [
        pytest.param(FRAME_BYTES, False, id="frame-size-known-at-bind"),
        pytest.param(0, False, id="frame-size-from-the-first-frame"),
        pytest.param(0, True, id="subscriber-connecting-after-the-first-frame"),
    ],
)
def test_inline_frames_queued_for_a_subscriber_that_stopped_reading_are_bounded_in_bytes(
    monkeypatch: pytest.MonkeyPatch, max_frame_bytes: int, late_subscriber: bool
) -> None:
    """256 whole frames were kept alive per stalled subscriber (zero-copy): 2 GiB of sCMOS."""
    monkeypatch.setattr(
        publisher_module, "QUEUE_BYTES_PER_SUBSCRIBER", QUEUED * FRAME_BYTES, raising=False
    )
    pub = FramePublisher("r", mode="inline", max_frame_bytes=max_frame_bytes)
    ctx: zmq.Context[Any] = zmq.Context()
    subs: list[zmq.Socket[Any]] = []
    try:
        subs.append(_stalled_subscriber(ctx, pub))
        if late_subscriber:
            subs.append(_stalled_subscriber(ctx, pub))
        refs: list[weakref.ref[Any]] = []
        for seq in range(1, 301):
            image = np.full(FRAME_SHAPE, seq, np.uint16)  # (a new buffer each, as a camera's)
            refs.append(weakref.ref(image))
            assert pub.publish(image, _info(seq), 0)
            del image
        bound = len(subs) * (QUEUED + SLACK)
        assert _frames_alive(refs, bound) <= bound
        # what was dropped stays visible to the subscriber as a gap in the sequence numbers
        seqs = []  # (the last subscriber's: the first's queue may hold only probes)
        while subs[-1].poll(500):
            seqs.append(decode_header(subs[-1].recv_multipart()[0])["seq"])
        assert seqs == sorted(set(seqs))
        assert 0 < len([s for s in seqs if s > 0]) < 300
    finally:
        for sock in subs:
            sock.close(0)
        ctx.term()
        pub.close()


@pytest.mark.parametrize(
    ("mode", "max_frame_bytes", "sndhwm", "queued"),
    [
        pytest.param("inline", 8 * 2**20, None, 32, id="inline-8MiB-sCMOS-frames"),
        pytest.param("inline", 2**30, None, 4, id="inline-huge-frames-keep-a-minimum"),
        pytest.param("inline", 64, None, 256, id="inline-small-frames-as-before"),
        pytest.param("inline", 0, None, 256, id="inline-size-unknown-until-a-frame"),
        pytest.param("inline", 8 * 2**20, 300, 300, id="inline-sndhwm-given-is-kept"),
        pytest.param("shm", 8 * 2**20, None, 256, id="shm-headers-unchanged"),
    ],
)
def test_the_queue_a_subscriber_gets_at_bind(
    mode: str, max_frame_bytes: int, sndhwm: int | None, queued: int
) -> None:
    """Subscribers get the SNDHWM the socket was bound with: it must be right before binding."""
    kw: dict[str, Any] = {} if sndhwm is None else {"sndhwm": sndhwm}
    ring = {"ring_bytes": 4 * max_frame_bytes} if mode == "shm" else {}
    pub = FramePublisher("r", mode=mode, max_frame_bytes=max_frame_bytes, **ring, **kw)  # type: ignore[arg-type]
    try:
        assert pub._sock.getsockopt(zmq.SNDHWM) == queued
    finally:
        pub.close()
