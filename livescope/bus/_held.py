"""Small messages sent on a ZeroMQ socket without giving up the GIL.

pyzmq releases the GIL around every send (its ``zmq_msg_send`` runs without
it), so a thread that sends hands the GIL to any thread waiting for it and
then waits up to a switch interval (0.5 ms in the agent and the worker) to
have it back; longer when the thread that took it is an idle-class one that
a busy core does not run. A decision or an answer is a few hundred bytes that
libzmq queues in microseconds without blocking (``ZMQ_DONTWAIT``): called
through ctypes' `PyDLL`, which keeps the GIL, the send costs that and no
more. With two other Python threads busy in the process, a 1.5 kB send took
p50 0.65 ms / p99 2.1 ms through pyzmq and 29 µs / 117 µs held (this
project's 2-core machine, 2026-12-02); in the demo the first decision of a
field waited 0.3-1.3 ms in its send.

The library called is the one pyzmq runs on (looked up through pyzmq's own
extension, checked by its version and by a message sent through it), so the
socket handle (`zmq.Socket.underlying`) is its own. Elsewhere (Windows,
macOS: not looked for), with ``LIVESCOPE_HELD_SEND=0``, for parts other than
`bytes`, or for a message libzmq cannot queue at once (the peer's queue full),
pyzmq's own send is used (or, for a sender that must not wait, none: the
caller is told it was not queued).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Sequence

import zmq

__all__ = ["HELD_SEND_ENV", "held_send_available", "send_held"]

logger = logging.getLogger("livescope")

HELD_SEND_ENV = "LIVESCOPE_HELD_SEND"
"""``0`` sends every message through pyzmq (the GIL given up), e.g. to compare."""

_lib: ctypes.PyDLL | bool | None = None  # None: not looked for yet; False: not available


def _load() -> ctypes.PyDLL | None:
    """Return the libzmq pyzmq runs on, as a `PyDLL` (GIL held), or None."""
    # (an if-else, not code after a return: mypy checks the else branch for Linux only)
    if not sys.platform.startswith("linux") or os.environ.get(HELD_SEND_ENV, "").strip() == "0":
        return None
    else:
        try:
            # looked up through pyzmq's own extension: its libzmq (bundled beside it, or
            # linked into it), whatever other libzmq the process may have loaded
            from zmq.backend.cython import _zmq

            lib = ctypes.PyDLL(_zmq.__file__)
            major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
            lib.zmq_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
            if (major.value, minor.value, patch.value) != zmq.zmq_version_info():
                return None
            lib.zmq_send.argtypes = [
                ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int
            ]  # fmt: skip
            lib.zmq_send.restype = ctypes.c_int
        except (ImportError, OSError, AttributeError, ValueError) as exc:
            logger.debug("sending with the GIL held is not available: %s", exc)
            return None
        return lib if _probe(lib) else None


def _probe(lib: ctypes.PyDLL) -> bool:
    """Whether a message sent through ``lib`` on a pyzmq socket arrives through pyzmq."""
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        b.bind("inproc://livescope-held-probe")
        a.connect("inproc://livescope-held-probe")
        token = os.urandom(16)
        if lib.zmq_send(a.underlying, token, len(token), zmq.DONTWAIT) != len(token):
            return False
        return bool(b.poll(1000)) and b.recv(zmq.NOBLOCK) == token
    except zmq.ZMQError:
        return False
    finally:
        a.close(0)
        b.close(0)
        ctx.term()


def _libzmq() -> ctypes.PyDLL | None:
    global _lib
    if _lib is None:
        _lib = _load() or False
    return _lib if isinstance(_lib, ctypes.PyDLL) else None


def held_send_available() -> bool:
    """Whether `send_held` keeps the GIL here (else it sends through pyzmq)."""
    return _libzmq() is not None


def send_held(sock: zmq.Socket[bytes], parts: Sequence[bytes], *, wait: bool = True) -> bool:
    """Send ``parts`` as one message on ``sock``, keeping the GIL (see the module).

    For small messages, from the one thread that uses ``sock``; parts other
    than `bytes` go through pyzmq. A message libzmq cannot queue at once (the
    peer's queue full) goes, with ``wait``, through pyzmq's send instead, which
    blocks as ``sock.send_multipart`` does; without ``wait`` it is not sent
    (False returned), e.g. for a sender that must not hang on a peer that
    reads nothing. An error goes through pyzmq's send, which raises it.
    libzmq takes a message's first part only if it will take the rest, unless
    the peer's pipe is being torn down: a later part refused then means the
    message is dropped (as libzmq drops it; logged).

    Returns
    -------
    bool
        True once the message is queued (or dropped, as above); False only
        without ``wait``, when it could not be queued at once.

    Raises
    ------
    ValueError
        if ``parts`` is empty (a ZeroMQ message has at least one part).
    zmq.ZMQError
        as pyzmq's send raises it.

    """
    if not parts:  # (pyzmq's send fails on it, the held send sent nothing and said nothing)
        raise ValueError("send_held: a message needs at least one part, got none")
    lib = _libzmq()
    if lib is None or not all(type(p) is bytes for p in parts):
        return _send_pyzmq(sock, parts, wait)
    handle = sock.underlying
    last = len(parts) - 1
    for i, data in enumerate(parts):
        flags = zmq.DONTWAIT | (zmq.SNDMORE if i < last else 0)
        if lib.zmq_send(handle, data, len(data), flags) < 0:
            if i == 0:
                return _send_pyzmq(sock, parts, wait)
            logger.warning("a message's part %d of %d was refused: message dropped",
                           i + 1, len(parts))  # fmt: skip
            return True
    return True


def _send_pyzmq(sock: zmq.Socket[bytes], parts: Sequence[bytes], wait: bool) -> bool:
    """Send through pyzmq (the GIL given up); without ``wait``, False if not queued at once."""
    if wait:
        sock.send_multipart(parts)
        return True
    try:
        sock.send_multipart(parts, flags=zmq.DONTWAIT)
    except zmq.Again:
        return False
    return True
