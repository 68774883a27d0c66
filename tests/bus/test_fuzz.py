"""Malformed input never crashes the bus: headers, buffers, decisions (hypothesis)."""

from __future__ import annotations

import contextlib
import json
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livescope.bus import FramePublisher, FrameSubscriber
from livescope.schema import HeaderError, clock_ns, decode_header, encode_header, parse_decision

from .test_bus import frame, info


def _valid_header() -> dict:
    return {
        "v": 1, "run_id": "r", "seq": 3, "index": {"t": 1, "p": 0}, "channel": "DAPI",
        "position": "p0", "x_um": 1.0, "y_um": 2.0, "z_um": None, "exposure_ms": 10.0,
        "pixel_size_um": 0.65, "t_camera_ns": 1, "t_agent_ns": 2, "t_sent_ns": 3,
        "shape": [4, 4], "dtype": "uint16", "payload": "inline", "shm": None,
        "sample_time_s": 120.0, "added_by": None,
    }  # fmt: skip


def test_headers_of_older_senders_decode_without_the_optional_fields() -> None:
    h = _valid_header()
    del h["sample_time_s"], h["added_by"]
    got = decode_header(json.dumps(h).encode(), 32)
    assert got["sample_time_s"] is None
    assert got["added_by"] is None


def test_added_by_must_be_a_short_string() -> None:
    h = _valid_header()
    h["added_by"] = 7
    with pytest.raises(HeaderError, match="added_by"):
        decode_header(json.dumps(h).encode(), 32)


def test_valid_header_round_trips() -> None:
    h = _valid_header()
    assert decode_header(encode_header(h), 32) == h  # type: ignore[arg-type]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@given(st.binary(max_size=300))
def test_random_bytes_are_rejected_cleanly(raw: bytes) -> None:
    with contextlib.suppress(HeaderError):
        decode_header(raw)


@given(st.sampled_from(sorted(_valid_header())), json_values, st.integers(0, 64))
def test_mutated_headers_are_rejected_or_valid(key: str, value: object, payload: int) -> None:
    h = _valid_header()
    h[key] = value
    try:
        raw = json.dumps(h).encode()
    except ValueError:
        return
    try:
        out = decode_header(raw, payload)
    except HeaderError:
        return
    # whatever got through is fully consistent
    assert out["v"] == 1
    nbytes = int(np.prod(out["shape"])) * np.dtype(out["dtype"]).itemsize
    assert out["payload"] != "inline" or nbytes == payload


@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_random_decisions_are_rejected_with_a_reason(raw: bytes) -> None:
    try:
        parse_decision(raw)
    except ValueError as exc:
        reason = str(exc)
    else:
        return
    assert reason


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.lists(st.lists(st.binary(max_size=64), max_size=3), min_size=1, max_size=5))
def test_subscriber_survives_garbage_and_keeps_receiving(
    garbage: list[list[bytes]], rogue: tuple[zmq.Socket, FrameSubscriber]
) -> None:
    sock, sub = rogue
    before = sub.stats()["rejected"]
    for parts in garbage:
        if parts:
            sock.send_multipart(parts)
    seq = int(clock_ns() % 2**40)
    hdr = dict(_valid_header(), seq=seq, shape=[8, 8])
    sock.send_multipart([json.dumps(hdr).encode(), frame(0, (8, 8)).tobytes()[:-2]])  # truncated
    sock.send_multipart([json.dumps(hdr).encode(), frame(0, (8, 8)).tobytes()])  # good
    got = None
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        f = sub.get(timeout=0.5)
        if f is not None and f.seq == seq:
            got = f
            break
        if f is not None:
            f.release()
    assert got is not None
    assert np.array_equal(got.array, frame(0, (8, 8)))
    got.release()
    assert sub.stats()["rejected"] >= before + 1 + sum(1 for p in garbage if p)


@pytest.fixture(scope="module")
def rogue():  # type: ignore[no-untyped-def]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sub = FrameSubscriber(f"tcp://127.0.0.1:{port}", maxlen=64)
    time.sleep(0.3)
    yield sock, sub
    sub.close()
    sock.close(0)
    ctx.term()


def test_publisher_control_survives_garbage() -> None:
    pub = FramePublisher("r1", mode="shm", max_frame_bytes=1024)
    ctx = zmq.Context()
    for body in (b"", b"\xff\xfe", b"[1,2]", b'{"op": "nope"}', b'{"op": "bye", "reader": "x"}'):
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(pub.control_endpoint)
        req.send(body)
        assert req.poll(2000)
        reply = json.loads(req.recv())
        assert reply["ok"] is False or body.startswith(b'{"op": "bye"')
        req.close(0)
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint)
    time.sleep(0.3)
    pub.publish(frame(0, (16, 16)), info(0, (16, 16)), clock_ns())
    f = sub.get(timeout=2)
    assert f is not None
    f.release()
    sub.close()
    pub.close()
    ctx.term()
