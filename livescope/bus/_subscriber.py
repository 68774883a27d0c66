"""Worker side of the frame bus: receive frames as numpy arrays, with a delivery policy.

A receiver thread drains the socket as fast as it can and keeps frames in a
queue whose policy the receiver chooses:

* ``every``: a bounded queue; when it is full the oldest frame is dropped (and
  counted) so the newest always get in (shared-memory frames: at most 2 fewer
  than the ring's slots, so that a slow receiver never holds them all);
* ``latest``: only the newest frame is kept (conflation for live views).

Every header is validated before use; a bad message is counted, logged and
skipped, and the socket goes on. Frames lost upstream are counted from the gaps
in their numbers, and those after the last received from the publisher's
end-of-run message (`livescope.bus._publisher.end_message`); until it comes,
those are not known. Frames are zero-copy views (of the message
buffer, or of a shared-memory slot): call `Frame.release` (or use ``with``) when done.
A shared-memory frame's array keeps its slot held for as long as it (or any
view of it) is referenced, not only the `Frame`: see `livescope.bus._shm.SlotHold`.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import zmq
from numpy.typing import NDArray

from livescope.schema import (
    MAX_RUN_ID,
    PROTOCOL_VERSION,
    FrameHeader,
    HeaderError,
    LivescopeError,
    clock_ns,
    decode_header,
)

from ._endpoints import BusSecurity, connect, handshake_problem, subscribe, watch_handshake
from ._shm import ShmReader, SlotHold

__all__ = ["Frame", "FrameSubscriber"]

logger = logging.getLogger("livescope")

_LATENCY_SAMPLES = 20000
_IN_FLIGHT_NS = 1_000_000_000
"""A frame's header not in the socket this long after the frame was published is lost."""
_END_TYPE = "end"  # (`livescope.bus._publisher.end_message`)
_MAX_END_BYTES = 4096  # (a run id of `MAX_RUN_ID` characters, each escaped, fits)


def _end_of_run(raw: bytes) -> tuple[str, int | None] | None:
    """Return the run id and last frame number of an end-of-run message; None: not one.

    Raises
    ------
    HeaderError
        for a message that says it is one and is malformed.

    """
    if len(raw) > _MAX_END_BYTES:
        return None
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(msg, dict) or msg.get("type") != _END_TYPE:
        return None
    v, run_id, last = msg.get("v"), msg.get("run_id"), msg.get("last_seq")
    if type(v) is not int or v != PROTOCOL_VERSION:  # (true and 1.0 equal 1 in Python)
        raise HeaderError(f"end-of-run message of protocol version {v!r}, not {PROTOCOL_VERSION}")
    if not isinstance(run_id, str) or not 0 < len(run_id) <= MAX_RUN_ID:
        raise HeaderError(
            f"end-of-run message of run id {run_id!r:.60}: not 1 to {MAX_RUN_ID} characters"
        )
    if "last_seq" not in msg or (last is not None and (type(last) is not int or last < 0)):
        raise HeaderError(f"end-of-run message of last_seq {last!r:.40}: not a number >= 0")
    return run_id, last


class Frame:
    """One received frame: ``header`` (wire protocol v1) and ``array`` (read-only view).

    ``t_received_ns`` is when the receiver thread got it (`livescope.schema.clock_ns`).
    A frame's memory (its shared-memory slot) is given back by `release`, or once
    the frame, its ``array`` and every array made from that (a slice, a reshape)
    have been garbage-collected: ``a = frame.array`` may outlive the frame.
    """

    __slots__ = ("__weakref__", "_finalizer", "_owner", "array", "header", "t_received_ns")

    def __init__(
        self,
        header: FrameHeader,
        array: NDArray[Any],
        t_received_ns: int,
        owner: FrameSubscriber | None = None,
        release: Callable[[], object] | None = None,
    ) -> None:
        self.header = header
        self.array = array
        self.t_received_ns = t_received_ns
        self._owner = owner
        self._finalizer = release  # (runs once; also when the array's hold is collected)

    @property
    def seq(self) -> int:
        """Sequence number of the frame in its run."""
        return self.header["seq"]

    def valid(self) -> bool:
        """Return False if the shared-memory slot was reused under this frame (data gone).

        Also False while the receiver registers again (declared dead by the
        writer): its slot cannot be checked then.
        """
        shm = self.header["shm"]
        if shm is None or self._owner is None:
            return True
        reader = self._owner.reader
        return reader is not None and reader.generation(shm["slot"]) == shm["generation"]

    def release(self) -> None:
        """Give the frame's memory back now (shared-memory slots return to the ring).

        After it, ``array`` and every array made from it must not be used: the
        writer may overwrite the slot under them at any time (`valid` says
        whether it has). Copy what must outlive the frame first. Calling it
        again does nothing.
        """
        if self._finalizer is not None:
            self._finalizer()  # runs once

    def __enter__(self) -> Frame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class FrameSubscriber:
    """Receives frames from a `FramePublisher`.

    Parameters
    ----------
    endpoint
        The publisher's frame endpoint.
    control_endpoint
        The publisher's control endpoint (needed for shared-memory frames).
    policy
        ``"every"`` or ``"latest"`` (see the module doc).
    maxlen
        Queue length for ``every``. Shared-memory frames are kept to 2 fewer than
        the ring's slots (one being worked on, one for the writer): a slow
        receiver holding every slot would make the publisher drop the newest
        frames of every receiver, not its own oldest.
    security
        CURVE keys when the publisher listens on a network.
    run_id
        The run whose frames are wanted: a control endpoint that answers for
        another run is refused (None: any).

    Notes
    -----
    `get` and iteration may be used from any one thread; the socket lives on
    the receiver thread.

    """

    def __init__(
        self,
        endpoint: str,
        *,
        control_endpoint: str | None = None,
        policy: Literal["every", "latest"] = "every",
        maxlen: int = 16,
        security: BusSecurity | None = None,
        rcvhwm: int = 256,
        run_id: str | None = None,
    ) -> None:
        if policy not in ("every", "latest"):
            raise LivescopeError(f"delivery policy must be 'every' or 'latest', got {policy!r}")
        if maxlen < 1:
            raise LivescopeError(f"maxlen must be >= 1, got {maxlen}")
        self.endpoint = endpoint
        self.control_endpoint = control_endpoint
        self.policy = policy
        self.maxlen = 1 if policy == "latest" else maxlen
        self.security = security
        self.rcvhwm = rcvhwm
        self.run_id = run_id
        self.reader: ShmReader | None = None
        self._queue: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._in_use: dict[int, int] = {}  # shm slot -> frames of this registration holding it
        self._registration = 0  # counts the reader's registrations (see `release_slot`)
        self._ring_changed = False  # (a frame named another ring: the agent here changed)
        self._unattached_shm = False  # (a shared-memory frame came, with no ring attached)
        self._newest_sent_ns = 0  # (t_sent_ns of the newest frame of the ring attached)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.counts = collections.Counter[str]()
        self._last_seq: int | None = None
        self._last_run: str | None = None  # (the run of the last frame: its own sequence)
        self._first_seq: int | None = None  # (the first frame of that run whose header came)
        self._ended_run: str | None = None  # (the last run whose end-of-run message came)
        self.max_depth = 0
        self._lat: dict[str, collections.deque[int]] = {
            k: collections.deque(maxlen=_LATENCY_SAMPLES)
            for k in ("camera_to_agent", "agent_to_sent", "sent_to_received", "camera_to_received")
        }
        self._thread = threading.Thread(target=self._run, name="livescope-bus-rx", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)
        if self._error is not None:
            raise LivescopeError(f"cannot attach to the frame bus: {self._error}")

    # ------------------------------------------------------------ receiver thread

    def _hello(self, ctx: zmq.Context[Any]) -> None:
        if self.control_endpoint is None:
            return
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.RCVTIMEO, 3000)
        monitor = watch_handshake(req)
        try:
            connect(req, self.control_endpoint, self.security)
            req.send(b'{"op": "hello"}')
            reply = json.loads(req.recv())
        except zmq.Again:
            why = handshake_problem(monitor, self.security)
            raise LivescopeError(
                f"no answer from the bus control at {self.control_endpoint}: {why}"
            ) from None
        finally:
            req.disable_monitor()
            monitor.close(0)
            req.close(0)
        if not reply.get("ok"):
            raise LivescopeError(f"bus control refused: {reply.get('error')}")
        if self.run_id is not None and reply.get("run_id") != self.run_id:
            if "ring" in reply:  # (hello gave a place: every frame would be held for it)
                self._send_bye(ctx, int(reply["reader"]), int(reply["token"]))
            raise LivescopeError(
                f"the bus control at {self.control_endpoint} belongs to run "
                f"{reply.get('run_id')!r}, not {self.run_id!r}: that run's agent has ended "
                "and another listens at its address (its bus.json is out of date)"
            )
        if "ring" in reply:
            ring, place, token = reply["ring"], int(reply["reader"]), int(reply["token"])
            try:
                self.reader = ShmReader(ring, place, token)
            except OSError as exc:  # (not the agent's host, or another container/namespace)
                self._send_bye(ctx, place, token)
                raise LivescopeError(
                    f"cannot map the agent's shared memory {ring.get('name')!r} "
                    f"({exc.strerror or exc}): the agent sends frames in shared memory (bus "
                    "mode shm); only a process on the same host sharing its shared memory "
                    "(not another container or namespace) can read them: start the agent "
                    'with `--bus inline` (bus="inline" from Python)'
                ) from None
            except LivescopeError:
                self._send_bye(ctx, place, token)
                raise

    def _bye(self, ctx: zmq.Context[Any]) -> None:
        if self.reader is None:
            return
        self.reader.release_all()  # holds first: the place may be reassigned once we leave
        self._send_bye(ctx, self.reader.index, self.reader.token)

    def _send_bye(self, ctx: zmq.Context[Any], place: int, token: int) -> None:
        """Give reader place ``place`` back to the writer (it may also be gone)."""
        if self.control_endpoint is None:
            return
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.RCVTIMEO, 500)
        try:
            connect(req, self.control_endpoint, self.security)
            req.send(json.dumps({"op": "bye", "reader": place, "token": token}).encode())
            req.recv()
        except (zmq.ZMQError, LivescopeError):
            pass  # the agent may be gone; it will declare this reader dead
        finally:
            req.close(0)

    def _run(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        sock: zmq.Socket[Any] | None = None
        try:
            sock = subscribe(ctx, self.endpoint, self.security, self.rcvhwm)
            self._hello(ctx)
        except Exception as exc:  # noqa: BLE001 (reported to the constructor, which raises)
            self._error = exc
            self._stop.set()
            self._ready.set()
            if sock is not None:
                sock.close(0)
            ctx.term()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        last_beat = 0
        now = clock_ns()
        try:
            while not self._stop.is_set():
                polled_at = now  # (at or before this poll)
                waiting = poller.poll(50)
                if waiting:
                    try:
                        self._receive(sock.recv_multipart(copy=False))
                    except Exception:
                        self.counts["errors"] += 1
                        logger.exception("frame receiver: a message could not be handled")
                    if self._ring_changed:
                        self._ring_changed = False
                        self._bye(ctx)  # (harmless to another agent: the token is not its)
                        self._reregister(ctx, "frames come in another shared-memory ring")
                        continue
                now = clock_ns()
                if self.reader is not None and now - last_beat > 200_000_000:
                    last_beat = now
                    if not self.reader.heartbeat():
                        self._reregister(ctx, "lost its place (declared dead)")
                        continue
                    with self._cond:
                        in_use = set(self._in_use)
                    # only frames whose header will never come, not those waiting unread in
                    # the socket (this thread held up): headers come in the order sent, so
                    # one published before the newest received that did not come is lost;
                    # the socket found empty, so is one published well before the poll
                    before = self._newest_sent_ns
                    if not waiting:
                        before = max(before, polled_at - _IN_FLIGHT_NS)
                    self.counts["lost_in_transit"] += self.reader.sweep(
                        in_use, 0.0, before_ns=before
                    )
        except Exception as exc:
            logger.exception("frame receiver stopped")
            self._error = exc
        finally:
            self._stop.set()
            self._bye(ctx)
            sock.close(0)
            with self._cond:
                while self._queue:
                    self._queue.popleft().release()
                if self.reader is not None:  # (under the lock: a frame may be released now)
                    self.reader.close()
            ctx.term()

    def _reregister(self, ctx: zmq.Context[Any], why: str) -> None:
        """Register again (receiver thread), with a ``why`` for the log.

        The writer declared this reader dead (e.g. it stalled), or another agent
        publishes at the endpoint (restarted at the same tcp address).
        """
        logger.warning("shared-memory reader %s; registering again", why)
        self.counts["reregistered"] += 1
        with self._cond:
            old, self.reader = self.reader, None
            # those holds are gone; frames still out are invalid, and their release
            # must not count against the new place's (`release_slot`)
            self._in_use.clear()
            self._registration += 1
            self._newest_sent_ns = 0
            if old is not None:
                old.close()
        self._hello(ctx)

    def _note_seq(self, run_id: str, seq: int) -> None:
        """Count the gap before frame ``seq`` of ``run_id`` (taken in or refused: not a drop).

        Before the first frame of a run whose header came, the frames the agent numbered
        from 0 never came either: counted apart (``missed_at_start``), as published
        before this subscriber attached (or while it did), not as drops.
        """
        if run_id == self._ended_run:  # (a run of that id again: its end is to come)
            self._ended_run = None
        if run_id != self._last_run:  # (another run's numbers: no gap to count)
            self._last_run, self._last_seq, self._first_seq = run_id, None, seq
            self.counts["missed_at_start"] += max(seq, 0)
        if self._last_seq is not None and seq > self._last_seq + 1:
            self.counts["dropped_upstream"] += seq - self._last_seq - 1
        self._last_seq = seq if self._last_seq is None else max(seq, self._last_seq)

    def _note_end(self, run_id: str, last_seq: int | None) -> None:
        """Count the frames of ``run_id`` after the last whose header came, up to ``last_seq``.

        Those are lost (``dropped_at_end``, also in ``dropped_upstream``); of a run
        none of whose frames came, all were (``missed_at_start``, as before a first
        frame). The publisher repeats the message: counted once.
        """
        if run_id == self._ended_run:
            return
        if self.run_id is not None and run_id != self.run_id:  # (another agent's, since)
            logger.debug("end of run %r, not %r: ignored", run_id, self.run_id)
            return
        self._ended_run = run_id
        if run_id != self._last_run or self._last_seq is None:
            self._last_run, self._last_seq, self._first_seq = run_id, last_seq, None
            self.counts["missed_at_start"] += 0 if last_seq is None else last_seq + 1
            return
        if last_seq is None:  # (nothing was published, said a publisher of this run)
            return
        if last_seq > self._last_seq:
            lost = last_seq - self._last_seq
            self.counts["dropped_at_end"] += lost
            self.counts["dropped_upstream"] += lost
            self._last_seq = last_seq

    def _receive(self, parts: list[zmq.Frame]) -> None:
        t_rx = clock_ns()
        self.counts["messages"] += 1
        ours: FrameHeader | None = None  # (a frame of the run: its number is in the sequence)
        try:
            if len(parts) == 1 and (end := _end_of_run(parts[0].bytes)) is not None:
                self._note_end(*end)
                return
            if len(parts) != 2:
                raise HeaderError(f"bad frame message: {len(parts)} parts, expected 2")
            header = decode_header(parts[0].bytes, len(parts[1].buffer))
            if self.run_id is not None and header["run_id"] != self.run_id:
                # (the socket reconnects by itself to whatever binds the address next)
                raise HeaderError(
                    f"frame {header['seq']} is of run {header['run_id']!r}, not "
                    f"{self.run_id!r}: that run's agent has ended and another publishes at "
                    f"its address {self.endpoint}"
                )
            ours = header
            frame = self._frame(header, parts[1], t_rx)
        except HeaderError as exc:
            self.counts["rejected"] += 1
            if self.counts["rejected"] <= 10 or self.counts["rejected"] % 1000 == 0:
                logger.warning(
                    "rejected a frame message (%d so far): %s", self.counts["rejected"], exc
                )
            if ours is not None:  # counted once, as rejected (not again as a gap by the next)
                self._note_seq(ours["run_id"], ours["seq"])
            return
        self._note_seq(header["run_id"], header["seq"])
        if frame is None:  # counted once, as not_held (not again as a gap by the next frame)
            return
        self.counts["received"] += 1
        lat = self._lat
        lat["camera_to_agent"].append(header["t_agent_ns"] - header["t_camera_ns"])
        lat["agent_to_sent"].append(header["t_sent_ns"] - header["t_agent_ns"])
        lat["sent_to_received"].append(t_rx - header["t_sent_ns"])
        lat["camera_to_received"].append(t_rx - header["t_camera_ns"])
        dropped: list[Frame] = []
        limit = self.maxlen
        if frame.header["shm"] is not None and self.reader is not None:
            limit = min(limit, max(1, self.reader.v.n_slots - 2))
        with self._cond:
            self._queue.append(frame)
            while len(self._queue) > limit:
                dropped.append(self._queue.popleft())
            self.max_depth = max(self.max_depth, len(self._queue))
            self._cond.notify()
        for old in dropped:
            self.counts["dropped_queue" if self.policy == "every" else "replaced"] += 1
            old.release()

    def _frame(self, header: FrameHeader, part: zmq.Frame, t_rx: int) -> Frame | None:
        shape = tuple(header["shape"])
        shm = header["shm"]
        if shm is None:
            arr = np.frombuffer(part.buffer, dtype=header["dtype"]).reshape(shape)
            arr.flags.writeable = False
            return Frame(header, arr, t_rx, self)
        if self.reader is None or shm["name"] != self.reader.name:
            # (another agent at this address: its ring is attached on the receiver loop)
            self._ring_changed = self.reader is not None
            self._unattached_shm = self.reader is None
            if self.reader is None and self.control_endpoint is None:
                raise HeaderError(
                    f"frame {header['seq']} is in shared memory {shm['name']!r}: the publisher "
                    "sends shared-memory frames, which only a subscriber given its control "
                    "endpoint can read: give control_endpoint (or use attach())"
                )
            raise HeaderError(
                f"frame {header['seq']} is in shared memory {shm['name']!r}, not attached"
            )
        if header["t_sent_ns"] > self._newest_sent_ns:  # (for the sweep)
            self._newest_sent_ns = header["t_sent_ns"]
        slot = shm["slot"]
        if slot >= self.reader.v.n_slots:
            raise HeaderError(f"shared-memory slot {slot} does not exist")
        nbytes = int(np.prod(shape)) * np.dtype(header["dtype"]).itemsize
        if nbytes > self.reader.v.slot_bytes:
            raise HeaderError(f"frame of {nbytes} bytes exceeds the ring's slots")
        generation = shm["generation"]
        if not self.reader.holds(slot, generation):
            self.counts["not_held"] += 1  # published before this reader registered, or reused
            return None
        view = self.reader.view(slot, shape, header["dtype"])
        with self._cond:
            self._in_use[slot] = self._in_use.get(slot, 0) + 1
            registration = self._registration
        # the array's base holds the slot: it stays held while the frame or any array
        # made from it lives (`SlotHold`), and is given back once, by `release_slot`
        hold = SlotHold(view, self.release_slot, slot, generation, registration)
        return Frame(header, hold.array(), t_rx, self, release=hold.release)

    def release_slot(self, slot: int, generation: int, registration: int) -> None:
        """Give a frame's slot back: once per frame, on any thread (`SlotHold.release`).

        `Frame.release` calls it, or the collection of the frame's hold. A frame
        from before the reader registered again (``registration``: the number of
        re-registrations when it came) lost its hold with the old place: its
        release changes nothing, so that it cannot drop the hold of a newer
        frame in the same slot.
        """
        with self._cond:
            reader = self.reader
            if reader is None or registration != self._registration:
                return
            left = self._in_use.get(slot, 0) - 1
            if left > 0:
                self._in_use[slot] = left
                return
            self._in_use.pop(slot, None)
            if reader.generation(slot) == generation:
                reader.release(slot)

    # ------------------------------------------------------------ consumer API

    def get(self, timeout: float | None = None) -> Frame | None:
        """Next frame by the policy, or None after ``timeout`` seconds (None: wait forever).

        Raises
        ------
        LivescopeError
            if the receiving thread stopped on an error: no more frames will
            come (those still queued then were released with it, unread), and
            the caller must not wait for them.

        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self._stop.is_set():
                    if self._error is not None:
                        raise LivescopeError(f"the frame receiver stopped: {self._error!r}")
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(0.1 if left is None else min(left, 0.1))
            self.counts["delivered"] += 1
            return self._queue.popleft()

    @property
    def ended(self) -> bool:
        """Whether the publisher's end-of-run message for the newest run came (any thread).

        No frame of that run comes after it: a caller waiting for the run's last
        frames may stop once `pending` is 0 (``dropped_at_end`` in `stats` then counts
        those lost).
        """
        return self._ended_run is not None and self._ended_run == self._last_run

    def pending(self) -> int:
        """Return how many frames are waiting to be taken with `get`."""
        with self._cond:
            return len(self._queue)

    def stats(self) -> dict[str, Any]:
        """Counters, queue depth and per-hop latency percentiles (ms).

        ``first_seq`` is the number of the first frame whose header came (of the run of
        the newest one; None before any), and ``missed_at_start`` the frames numbered
        before it (summed over the runs seen), which never came: not in ``drops``, which
        counts only the frames lost after it. Reported always: whether they were lost
        (the subscriber attached before the run's first frame, e.g. a worker that waited
        for its bus.json) or only published before it attached, its caller knows.

        ``dropped_at_end`` (of ``dropped_upstream``) counts the frames numbered after
        the last received, which no gap shows: lost at a full queue, refused by the
        publisher, or still queued when it closed. It is None until the publisher's
        end-of-run message for the newest run came (the run goes on, this subscriber
        stopped first, or the publisher is older): frames may have been lost there.
        """
        out: dict[str, Any] = {
            "policy": self.policy,
            "maxlen": self.maxlen,
            "depth": len(self._queue),
            "max_depth": self.max_depth,
            "mode": "shm" if self.reader is not None or self._unattached_shm else "inline",
        }
        for key in ("messages", "received", "delivered", "rejected", "dropped_queue", "replaced",
                    "dropped_upstream", "not_held", "lost_in_transit", "reregistered",
                    "errors"):  # fmt: skip
            out[key] = int(self.counts[key])
        out["drops"] = out["dropped_queue"] + out["dropped_upstream"] + out["not_held"]
        # (the frames after the last received: known once the run's end came, else None)
        out["dropped_at_end"] = int(self.counts["dropped_at_end"]) if self.ended else None
        # the frames before the first whose header came are not drops: a subscriber attached
        # mid-run never had them; one attached before the run's first frame lost them
        out["first_seq"] = self._first_seq
        out["missed_at_start"] = int(self.counts["missed_at_start"])
        latency: dict[str, dict[str, float]] = {}
        for hop, samples in self._lat.items():
            if samples:
                a = np.fromiter(samples, np.int64, len(samples)) / 1e6
                latency[hop] = {
                    "p50_ms": round(float(np.percentile(a, 50)), 3),
                    "p99_ms": round(float(np.percentile(a, 99)), 3),
                }
        out["latency"] = latency
        return out

    def close(self) -> None:
        """Stop receiving, release every frame still queued, detach."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def __enter__(self) -> FrameSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
