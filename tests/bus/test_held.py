"""Small messages sent without giving up the GIL, and pyzmq's send where that is not possible."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator

import pytest
import zmq

from livescope.bus import _held
from livescope.bus._held import held_send_available, send_held


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.DEALER), ctx.socket(zmq.ROUTER)
    a.setsockopt(zmq.LINGER, 0)
    b.setsockopt(zmq.LINGER, 0)
    b.bind("inproc://held")
    a.connect("inproc://held")
    try:
        yield a, b
    finally:
        a.close(0)
        b.close(0)
        ctx.term()


@pytest.mark.parametrize("held", [pytest.param(True, id="held"), pytest.param(False, id="pyzmq")])
def test_messages_arrive_whole_and_in_order(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]], held: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not held:
        monkeypatch.setattr(_held, "_lib", False)  # (as where libzmq is not found)
    elif sys.platform.startswith("linux"):
        assert held_send_available()  # (else this would test pyzmq's send twice)
    a, b = pair
    msgs = [[b"one"], [b'{"a": 1}', b"\x00binary\x00", b""], [b"x" * 100_000]]
    for m in msgs:
        send_held(a, m)
    got = [b.recv_multipart()[1:] for _ in msgs]  # (the ROUTER's first part: the sender)
    assert got == msgs
    send_held(a, [b"text:", bytearray(b"not bytes"), memoryview(b"nor this")])  # via pyzmq
    assert b.recv_multipart()[1:] == [b"text:", b"not bytes", b"nor this"]
    # and back through a ROUTER, addressed by its first part
    ident = b"\x00" + b"k" * 4
    send_held(b, [ident, b"answer"])  # an unknown peer: dropped, as pyzmq's send drops it
    send_held(a, [b"hello"])
    peer = b.recv_multipart()[0]
    send_held(b, [peer, b"answer", b"two"])
    assert a.recv_multipart() == [b"answer", b"two"]


def test_the_gil_is_not_given_up(pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]]) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("sending with the GIL held is looked for on Linux only")
    assert held_send_available()
    a, b = pair
    count = 0
    stop = threading.Event()

    def other() -> None:  # runs Python whenever it has the GIL, gives it up at once
        nonlocal count
        while not stop.is_set():
            count += 1
            time.sleep(0)

    old = sys.getswitchinterval()
    sys.setswitchinterval(10.0)  # no forced hand-over within the test: only a release
    th = threading.Thread(target=other, daemon=True)
    th.start()
    try:
        time.sleep(0.01)
        assert count > 0
        before = count
        for i in range(200):
            send_held(a, [b"decision %d" % i])
        after = count
    finally:
        sys.setswitchinterval(old)
        stop.set()
        th.join()
    assert after == before  # the other thread never ran: the GIL was kept throughout
    assert len([b.recv_multipart() for _ in range(200)]) == 200


def test_an_error_is_pyzmqs_to_raise(pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]]) -> None:
    a, _ = pair
    a.close(0)  # a socket that cannot take it: pyzmq's send says why
    with pytest.raises(zmq.ZMQError):
        send_held(a, [b"late"])


def test_a_message_libzmq_cannot_queue_at_once_waits_as_pyzmqs_send_does() -> None:
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.DEALER), ctx.socket(zmq.ROUTER)
    for s, opt in ((a, zmq.SNDHWM), (b, zmq.RCVHWM)):
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(opt, 2)
    b.bind("inproc://held-full")
    a.connect("inproc://held-full")
    got: list[list[bytes]] = []
    try:
        queued = 0
        while a.poll(0, zmq.POLLOUT):  # until the peer's queue is full
            a.send(b"filler", zmq.NOBLOCK)
            queued += 1
        assert queued > 0

        def read_later() -> None:
            time.sleep(0.2)  # (after send_held has found the queue full)
            got.extend(b.recv_multipart()[1:] for _ in range(queued + 1))

        reader = threading.Thread(target=read_later)
        reader.start()
        send_held(a, [b"first part", b"second part"])  # waits for room, then sends whole
        reader.join(10)
        assert not reader.is_alive()
    finally:
        a.close(0)
        b.close(0)
        ctx.term()
    assert got[-1] == [b"first part", b"second part"]
    assert got[:-1] == [[b"filler"]] * queued
