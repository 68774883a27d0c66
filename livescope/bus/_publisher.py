"""Agent side of the frame bus: publish every frame to whoever listens.

A PUB socket never blocks the sender: a subscriber that falls behind loses
frames (it counts them from the sequence-number gaps), the acquisition never
waits. In shared-memory mode the pixels go into a `ShmRing` slot and only the
header travels; a small control socket (REP) hands readers their place in the ring.
Closing sends an end-of-run message (`end_message`): the number of the run's last
frame, so that a subscriber counts the frames lost after the last it received too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Literal

import numpy as np
import zmq
from numpy.typing import NDArray

from livescope.schema import (
    ALLOWED_DTYPES,
    MAX_RUN_ID,
    MAX_SIDE,
    PROTOCOL_VERSION,
    FrameHeader,
    FrameInfo,
    LivescopeError,
    ShmRef,
    check_header,
    clock_ns,
    encode_header,
)

from ._endpoints import BusSecurity, bind, local_endpoint, remove_ipc_files
from ._held import held_send_available, send_held
from ._shm import ShmRing

__all__ = ["FramePublisher"]

logger = logging.getLogger("livescope")

QUEUE_BYTES_PER_SUBSCRIBER = 256 * 2**20
"""Bytes of inline frames queued for one subscriber (bus mode ``inline``), beyond which its
frames are dropped (counted by it from the sequence gaps). Inline frames are sent without a
copy: each one queued for a subscriber that does not read (a worker paused in a debugger, a
slow link) keeps a whole camera frame alive in the agent, and ZeroMQ counts its queue in
frames. 256 MiB holds 32 frames of an 8 MiB sCMOS camera, over a second of its bursts;
frames of 1 MiB or less stay at `DEFAULT_SNDHWM`."""
MIN_QUEUED_FRAMES = 4
"""Inline frames queued for one subscriber however large they are: a worker that reads
needs a few frames' slack for its pauses (a garbage collection), or it would lose frames."""
DEFAULT_SNDHWM = 256
"""Frames queued for one subscriber unless told (``sndhwm``); shared-memory headers."""
END_REPEAT_S = 0.1
"""How long closing repeats the end-of-run message (s), every `END_REPEAT_EVERY_S`. Sent to a
subscriber whose queue is full (the case where the run's last frames were dropped), it is
dropped like a frame; once that subscriber reads again, a repeat gets in."""
END_REPEAT_EVERY_S = 0.01
END_LINGER_MS = 1000
"""How long closing waits for what is still queued for a subscriber (the run's last frames,
the end-of-run message) to reach it (ms). One that reads none of it by then gets none: its
subscriber, told of no end, says that the frames after the last it received are not known."""
END_TYPE = "end"
"""``type`` of the end-of-run message (`end_message`)."""


def end_message(run_id: str, last_seq: int | None) -> bytes:
    """Return the end-of-run message of run ``run_id`` (one part, unlike a frame's two).

    ``last_seq``: the number of the last frame handed to `FramePublisher.publish`,
    sent or not (None: none was). A subscriber counts the frames numbered after the
    last it received as lost (`livescope.bus.FrameSubscriber`); one from before this
    message existed rejects it (a message of one part), counted and logged.
    """
    msg = {"v": PROTOCOL_VERSION, "type": END_TYPE, "run_id": run_id, "last_seq": last_seq}
    return json.dumps(msg).encode()


def _wire_array(image: NDArray[Any], seq: object) -> NDArray[Any]:
    """Return ``image`` as wire protocol v1 carries it: C order, native byte order.

    A big-endian frame (read from a file, a camera's driver) is converted, its
    values kept: sent as it is, every subscriber would refuse its dtype.

    Raises
    ------
    LivescopeError
        for a frame no subscriber accepts (`decode_header`): a dtype other
        than `ALLOWED_DTYPES`, not 1 to 4 dimensions, or a side of 0 or over
        65536 pixels; sent, it would only be refused at the other end.

    """
    arr = np.asarray(image)
    if not 1 <= arr.ndim <= 4 or not all(1 <= s <= MAX_SIDE for s in arr.shape):
        raise LivescopeError(
            f"frame {seq} of shape {arr.shape} cannot go on the frame bus: a frame has 1 to 4 "
            f"dimensions of 1 to {MAX_SIDE} pixels"
        )
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.name not in ALLOWED_DTYPES:
        raise LivescopeError(
            f"frame {seq} of dtype {arr.dtype} cannot go on the frame bus: it carries "
            f"{', '.join(ALLOWED_DTYPES)} (convert the frame first)"
        )
    return np.ascontiguousarray(arr)


def _bytes_hwm(hwm: int, frame_bytes: int) -> int:
    """Return ``hwm`` lowered to the frames of ``frame_bytes`` that fit in a subscriber's queue."""
    return min(hwm, max(MIN_QUEUED_FRAMES, QUEUE_BYTES_PER_SUBSCRIBER // frame_bytes))


class FramePublisher:
    """Publishes frames (wire protocol v1) on a PUB socket.

    Parameters
    ----------
    run_id
        Written into every header.
    endpoint, control_endpoint
        Where to bind (default: a fresh local endpoint each).
    mode
        ``"inline"`` (pixels in the message) or ``"shm"`` (pixels in shared memory).
    max_frame_bytes, ring_bytes
        Shared-memory ring geometry (``shm`` mode): slots of ``max_frame_bytes``,
        as many as fit in ``ring_bytes`` (at least 4, at most 64). In ``inline``
        mode ``max_frame_bytes`` (0: not known) sizes the subscribers' queues
        (``sndhwm``).
    security
        CURVE keys; required to bind to a non-loopback address.
    sndhwm
        Frames queued for each subscriber before its frames are dropped. Unset:
        `DEFAULT_SNDHWM`, and in ``inline`` mode no more than fit in
        `QUEUE_BYTES_PER_SUBSCRIBER` (at least `MIN_QUEUED_FRAMES`), counted in
        frames of ``max_frame_bytes`` (or of the largest frame published yet,
        where it is 0 or smaller).

    Notes
    -----
    `publish` must always be called from the same thread. The control socket
    is served by a thread of its own.

    """

    def __init__(
        self,
        run_id: str,
        *,
        endpoint: str | None = None,
        control_endpoint: str | None = None,
        mode: Literal["inline", "shm"] = "inline",
        max_frame_bytes: int = 0,
        ring_bytes: int = 256 * 2**20,
        security: BusSecurity | None = None,
        sndhwm: int | None = None,
    ) -> None:
        if mode not in ("inline", "shm"):
            raise LivescopeError(f"bus mode must be 'inline' or 'shm', got {mode!r}")
        if not isinstance(run_id, str) or not 0 < len(run_id) <= MAX_RUN_ID:
            # (over: every subscriber would refuse every frame's header; empty: the run's
            # decisions, which name it, would all be refused)
            raise LivescopeError(
                f"run id {run_id!r:.60} cannot go on the frame bus: give a string of at least "
                f"1 and at most {MAX_RUN_ID} characters"
            )
        self.run_id = run_id
        self.mode = mode
        self._security = security
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        self._hwm = DEFAULT_SNDHWM if sndhwm is None else sndhwm
        self._bytes_bound = mode == "inline" and sndhwm is None  # (`_bound_queues`)
        self._hwm_frame_bytes = max(0, max_frame_bytes)  # (the frames it is sized for)
        if self._bytes_bound and max_frame_bytes > 0:
            self._hwm = _bytes_hwm(self._hwm, max_frame_bytes)
        # (set before binding: ZeroMQ gives each subscriber the SNDHWM the socket was bound with)
        self._sock.setsockopt(zmq.SNDHWM, self._hwm)
        self._bound_hwm = self._hwm
        self._sock.setsockopt(zmq.LINGER, 0)
        self._control = self._ctx.socket(zmq.REP)
        self._control.setsockopt(zmq.LINGER, 0)
        self._lock = threading.Lock()
        self.ring: ShmRing | None = None
        self._closed = False
        self.endpoint = self.control_endpoint = ""
        try:
            self.endpoint = bind(self._sock, endpoint or local_endpoint("frames"), security)
            self.control_endpoint = bind(
                self._control, control_endpoint or local_endpoint("control"), security
            )
            if mode == "shm":
                if max_frame_bytes <= 0:
                    raise LivescopeError("shared-memory mode needs max_frame_bytes > 0")
                slots = min(64, max(4, ring_bytes // max_frame_bytes))
                self.ring = ShmRing(slots, max_frame_bytes)
        except BaseException:
            self._sock.close(0)
            self._control.close(0)
            if security is not None:
                security.release(self._ctx)
            self._ctx.term()
            remove_ipc_files(self.endpoint, self.control_endpoint)  # (those bound already)
            raise
        if mode == "shm":
            held_send_available()  # looked for now, not at the first frame
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name="livescope-bus-control", daemon=True
        )
        self._thread.start()
        self.published = 0
        self.bytes_published = 0
        self.dropped_no_slot = 0
        self.last_seq: int | None = None
        """The highest frame number handed to `publish` (sent or not); None before any."""

    # ------------------------------------------------------------ control

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._control, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(100):
                    continue
                parts = self._control.recv_multipart()  # REP: always read the whole request
                try:
                    reply = self._handle(json.loads(parts[0]) if len(parts) == 1 else None)
                except (ValueError, RecursionError, LivescopeError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                except Exception as exc:
                    logger.exception("bus control: request failed")
                    reply = {"ok": False, "error": f"internal error: {exc}"}
                self._control.send(json.dumps(reply).encode())
        finally:
            self._control.close(0)

    def _handle(self, req: Any) -> dict[str, Any]:
        if not isinstance(req, dict):
            raise ValueError("control request must be one JSON object")
        op = req.get("op")
        info: dict[str, Any] = {"ok": True, "run_id": self.run_id, "mode": self.mode,
                                "v": PROTOCOL_VERSION}  # fmt: skip
        if op == "info":
            return info
        if op == "hello":
            if self.ring is None:
                return info
            with self._lock:
                index, token = self.ring.register_reader()
            return {**info, "ring": self.ring.geometry, "reader": index, "token": token}
        if op == "bye":
            place, key = req.get("reader"), req.get("token")
            if self.ring is not None and isinstance(place, int) and isinstance(key, int):
                with self._lock:
                    self.ring.unregister_reader(place, key)
            return info
        raise ValueError(f"unknown control op {op!r}")

    # ------------------------------------------------------------ frames

    def publish(self, image: NDArray[Any], info: FrameInfo, t_camera_ns: int) -> bool:
        """Send one frame; returns False if it was dropped (no free shared-memory slot).

        Never blocks on slow subscribers. ``image`` must not change afterwards
        (inline frames are sent without a copy).

        Raises
        ------
        LivescopeError
            for a frame the bus cannot carry (dtype, dimensions: `_wire_array`),
            or larger than the shared-memory ring's slots; `HeaderError` for
            metadata every subscriber would refuse (`check_header`: a name too
            long, a negative exposure, ...), naming the field; nothing is sent.
            Also once the publisher is closed.

        """
        if self._closed:
            raise LivescopeError("frame publisher is closed")
        seq = int(info["seq"])
        # (a frame refused below is lost to every subscriber: at the end of the run too)
        self.last_seq = seq if self.last_seq is None else max(seq, self.last_seq)
        arr = _wire_array(image, seq)
        t_agent = clock_ns()
        # (made before a slot is taken: a field that fails must not leave one held)
        header = FrameHeader(
            v=PROTOCOL_VERSION,
            run_id=self.run_id,
            seq=seq,
            index=dict(info["index"]),
            channel=info["channel"],
            position=info["position"],
            x_um=info["x_um"],
            y_um=info["y_um"],
            z_um=info["z_um"],
            exposure_ms=float(info["exposure_ms"]),
            pixel_size_um=float(info["pixel_size_um"]),
            t_camera_ns=int(t_camera_ns),
            t_agent_ns=t_agent,
            t_sent_ns=0,
            shape=[int(s) for s in arr.shape],
            dtype=str(arr.dtype),
            payload="inline",
            shm=None,
            sample_time_s=info["sample_time_s"],
            added_by=info["added_by"],
        )
        if (offset := info.get("roi_offset_px")) is not None:
            header["roi_offset_px"] = [float(offset[0]), float(offset[1])]
        check_header(header)  # (a header every subscriber refuses: not sent, no slot taken)
        shm: ShmRef | None = None
        if self.ring is not None:
            with self._lock:
                slot = self.ring.claim(arr.nbytes)
                if slot is None:
                    self.dropped_no_slot += 1
                    return False
                self.ring.write(slot, arr)
                gen = self.ring.publish(slot)
            shm = ShmRef(name=self.ring.name, slot=slot, generation=gen)
            header["payload"], header["shm"] = "shm", shm
        header["t_sent_ns"] = clock_ns()
        try:
            hdr = encode_header(header)
        except BaseException:  # (e.g. a NaN stage position): no reader is told of the slot
            if shm is not None and self.ring is not None:
                with self._lock:
                    self.ring.withdraw(shm["slot"])
            raise
        if shm is None:
            if self._bytes_bound:
                self._bound_queues(arr.nbytes)
            self._sock.send_multipart([hdr, arr.data.cast("B")], copy=False)
        else:  # a header only: sent keeping the GIL (`livescope.bus._held`)
            send_held(self._sock, [hdr, b""])
        self.published += 1
        self.bytes_published += arr.nbytes
        return True

    def _bound_queues(self, nbytes: int) -> None:
        """Keep each subscriber's queue within `QUEUE_BYTES_PER_SUBSCRIBER` (inline frames).

        Called by `publish` before each inline frame of ``nbytes`` is sent; does
        something only where the queues were not sized at bind for frames this
        large (no ``max_frame_bytes``, or a frame over it).
        """
        if nbytes > self._hwm_frame_bytes:
            self._hwm_frame_bytes = nbytes
            self._hwm = _bytes_hwm(self._hwm, nbytes)
        if self._hwm < self._bound_hwm:
            # A new SNDHWM reaches only the subscribers the socket has taken in (EVENTS
            # takes in those that connected since); one that connects later comes with
            # the SNDHWM of the bind: set again for every frame, such a subscriber
            # queues a frame or two beyond the bound before it has it.
            self._sock.getsockopt(zmq.EVENTS)
            self._sock.setsockopt(zmq.SNDHWM, self._hwm)

    def stats(self) -> dict[str, Any]:
        """Counters of this publisher."""
        return {
            "mode": self.mode,
            "published": self.published,
            "bytes": self.bytes_published,
            "dropped_no_slot": self.dropped_no_slot,
            "readers_declared_dead": self.ring.readers_declared_dead if self.ring else 0,
            "last_seq": self.last_seq,
        }

    def close(self) -> None:
        """End the run: send the end-of-run message, close the sockets, unlink shared memory.

        Takes `END_REPEAT_S` (the message is repeated), and up to `END_LINGER_MS`
        more while a subscriber that does not read has frames queued. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        end = end_message(self.run_id, self.last_seq)
        until = time.monotonic() + END_REPEAT_S
        while True:  # (the control thread stops meanwhile: it polls every 100 ms)
            self._sock.send(end)
            if time.monotonic() >= until:
                break
            time.sleep(END_REPEAT_EVERY_S)
        self._thread.join(timeout=2)
        self._sock.close(END_LINGER_MS)  # (the context's end waits for what is queued)
        if self.ring is not None:
            self.ring.close()
        if self._security is not None:
            self._security.release(self._ctx)
        self._ctx.term()
        remove_ipc_files(self.endpoint, self.control_endpoint)
