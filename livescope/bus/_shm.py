"""A ring of shared-memory frame slots: pixels are written once, readers map them.

Layout of the shared block (all little-endian):

* readers table: ``max_readers`` × (heartbeat ns, registration token; 0 = free) (u64)
* slots table: ``n_slots`` × (generation, publish time ns) (u64)
* holders table: ``n_slots`` × ``max_readers`` bytes (1: that reader still holds the slot)
* data: ``n_slots`` × ``slot_bytes``

The writer (agent) is the only process that sets holder bytes and generations;
each reader clears only its own holder bytes and writes only its own heartbeat.
A slot is reused when no live reader holds it; a reader whose heartbeat is older
than ``dead_after_s`` is declared dead and its holds are dropped. Readers check
the slot's generation before and after use, so a frame overwritten under a reader
that was (wrongly) declared dead is detected, never silently used.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import uuid
from multiprocessing import shared_memory
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import LivescopeError, clock_ns

__all__ = ["ShmReader", "ShmRing"]

logger = logging.getLogger("livescope")

_MAGIC = 0x4C56534D52494E47  # "LVSMRING"


def _layout(n_slots: int, max_readers: int, slot_bytes: int) -> dict[str, int]:
    head = 4 * 8
    readers = head
    gens = readers + max_readers * 16
    holders = gens + n_slots * 16
    data = holders + n_slots * max_readers
    data = (data + 63) // 64 * 64
    return {"readers": readers, "gens": gens, "holders": holders, "data": data,
            "total": data + n_slots * slot_bytes}  # fmt: skip


class _Views:
    """numpy views over a ring's shared block (both sides build the same views)."""

    def __init__(self, buf: memoryview, n_slots: int, max_readers: int, slot_bytes: int) -> None:
        lay = _layout(n_slots, max_readers, slot_bytes)
        self.n_slots, self.max_readers, self.slot_bytes = n_slots, max_readers, slot_bytes
        self.head = np.ndarray((4,), np.uint64, buf, 0)
        self.readers = np.ndarray((max_readers, 2), np.uint64, buf, lay["readers"])
        self.slots = np.ndarray((n_slots, 2), np.uint64, buf, lay["gens"])
        self.holders = np.ndarray((n_slots, max_readers), np.uint8, buf, lay["holders"])
        self.data = np.ndarray((n_slots, slot_bytes), np.uint8, buf, lay["data"])

    def release(self) -> None:
        del self.head, self.readers, self.slots, self.holders, self.data


def _buffer(shm: shared_memory.SharedMemory) -> memoryview:
    buf = shm.buf
    if buf is None:  # pragma: no cover (closed)
        raise LivescopeError(f"shared block {shm.name} is closed")
    return buf


def _attach(name: str) -> shared_memory.SharedMemory:
    """Attach without handing the block to this process's resource tracker.

    Only the creator may unlink a ring; a tracker that registered an attaching
    process would unlink the block when that process exits (Python < 3.13).
    """
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]
    except TypeError:  # Python < 3.13: no track argument
        pass
    from multiprocessing import resource_tracker

    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register


class ShmRing:
    """Writer side: owns the shared block (created here, unlinked on `close`).

    Parameters
    ----------
    n_slots
        Frames that can be in flight at once.
    slot_bytes
        Largest frame, bytes.
    max_readers
        Readers that can attach at once.
    dead_after_s
        A reader that has not beaten its heartbeat for this long is dropped.

    Notes
    -----
    Call `claim`, `write` and `publish` from one thread (the agent's publisher).

    """

    def __init__(
        self, n_slots: int, slot_bytes: int, *, max_readers: int = 8, dead_after_s: float = 3.0
    ) -> None:
        if n_slots < 2 or slot_bytes < 1 or not 1 <= max_readers <= 64:
            raise LivescopeError(
                f"bad ring geometry: {n_slots} slots of {slot_bytes} bytes, {max_readers} readers"
            )
        lay = _layout(n_slots, max_readers, slot_bytes)
        self.name = f"lvs_{uuid.uuid4().hex[:16]}"
        self._shm = shared_memory.SharedMemory(name=self.name, create=True, size=lay["total"])
        self.v = _Views(_buffer(self._shm), n_slots, max_readers, slot_bytes)
        self.v.head[:] = (_MAGIC, n_slots, max_readers, slot_bytes)
        self.v.readers[:] = 0
        self.v.slots[:] = 0
        self.v.holders[:] = 0
        self.v.data[:] = 0  # touch every page now, not during the acquisition
        self.dead_after_ns = int(dead_after_s * 1e9)
        self.readers_declared_dead = 0
        self._next = 0

    @property
    def geometry(self) -> dict[str, Any]:
        """What a reader needs to attach."""
        return {
            "name": self.name,
            "n_slots": self.v.n_slots,
            "max_readers": self.v.max_readers,
            "slot_bytes": self.v.slot_bytes,
        }

    # -------------------------------------------------------------- readers

    def register_reader(self) -> tuple[int, int]:
        """Give a new reader a place and a token (control thread). Raises if the table is full.

        The token tells a reader whether its place is still its own: a reader
        declared dead finds a different token and must register again.
        """
        self._reap_dead()
        free = np.flatnonzero(self.v.readers[:, 1] == 0)
        if free.size == 0:
            raise LivescopeError(f"all {self.v.max_readers} shared-memory reader places are taken")
        i = int(free[0])
        token = secrets.randbits(62) | 1
        self.v.holders[:, i] = 0
        self.v.readers[i, 0] = clock_ns()
        self.v.readers[i, 1] = token
        return i, token

    def unregister_reader(self, i: int, token: int | None = None) -> None:
        """Drop reader ``i`` and its holds (only if ``token``, when given, is still its own)."""
        if not 0 <= i < self.v.max_readers:
            return
        if token is not None and int(self.v.readers[i, 1]) != token:
            return
        self.v.readers[i, 1] = 0
        self.v.holders[:, i] = 0

    def _reap_dead(self) -> None:
        now = clock_ns()
        active = self.v.readers[:, 1] != 0
        stale = active & (now - self.v.readers[:, 0].astype(np.int64) > self.dead_after_ns)
        for i in np.flatnonzero(stale).tolist():
            logger.warning("shared-memory reader %d missed its heartbeat; declared dead", i)
            self.unregister_reader(i)
            self.readers_declared_dead += 1

    # -------------------------------------------------------------- frames

    def claim(self, nbytes: int) -> int | None:
        """Find a slot no live reader holds; None when all are held (the frame is dropped)."""
        if nbytes > self.v.slot_bytes:
            raise LivescopeError(f"frame of {nbytes} bytes exceeds the ring's {self.v.slot_bytes}")
        n = self.v.n_slots
        held = self.v.holders.any(axis=1)
        if held.all():
            self._reap_dead()
            held = self.v.holders.any(axis=1)
        for k in range(n):
            slot = (self._next + k) % n
            if not held[slot]:
                self._next = (slot + 1) % n
                return slot
        return None

    def write(self, slot: int, image: NDArray[Any]) -> None:
        """Copy ``image`` into ``slot`` (the single copy of the shared-memory path)."""
        flat = np.ascontiguousarray(image).reshape(-1).view(np.uint8)
        self.v.slots[slot, 0] += 1  # odd while being written
        np.copyto(self.v.data[slot, : flat.size], flat)

    def publish(self, slot: int) -> int:
        """Mark ``slot`` held by every live reader; returns its generation."""
        self.v.slots[slot, 0] += 1  # even: complete
        self.v.slots[slot, 1] = clock_ns()
        self.v.holders[slot, :] = self.v.readers[:, 1] != 0
        return int(self.v.slots[slot, 0])

    def close(self) -> None:
        """Unlink the shared block (readers keep their mapping until they detach)."""
        self.v.release()
        self._shm.close()
        with contextlib.suppress(FileNotFoundError):
            self._shm.unlink()


class ShmReader:
    """Reader side: attaches to a ring by name with the place and token the writer gave it.

    Every operation on holder bytes first checks that the place is still this
    reader's (same token); once the writer has declared it dead, the reader
    touches nothing and `registered` is False.
    """

    def __init__(self, geometry: dict[str, Any], reader_index: int, token: int) -> None:
        self._shm = _attach(str(geometry["name"]))
        self.v = _Views(
            _buffer(self._shm),
            int(geometry["n_slots"]),
            int(geometry["max_readers"]),
            int(geometry["slot_bytes"]),
        )
        if int(self.v.head[0]) != _MAGIC:
            raise LivescopeError(f"shared block {geometry['name']} is not a livescope ring")
        self.index = reader_index
        self.token = token
        self.name = str(geometry["name"])
        self._closed = False
        self.heartbeat()

    @property
    def registered(self) -> bool:
        """False once the writer gave this reader's place to another (or dropped it)."""
        return not self._closed and int(self.v.readers[self.index, 1]) == self.token

    def heartbeat(self) -> bool:
        """Tell the writer this reader is alive (call at least every second).

        Returns False (and does nothing) if the place is no longer this reader's.
        """
        if not self.registered:
            return False
        self.v.readers[self.index, 0] = clock_ns()
        return True

    def holds(self, slot: int, generation: int) -> bool:
        """Return True if this reader holds ``slot`` at ``generation``."""
        return (
            self.registered
            and bool(self.v.holders[slot, self.index])
            and int(self.v.slots[slot, 0]) == generation
        )

    def generation(self, slot: int) -> int:
        """Return the generation of ``slot`` (it changes when the writer reuses the slot)."""
        if self._closed:
            return -1
        return int(self.v.slots[slot, 0])

    def sweep(self, in_use: set[int], older_than_s: float = 1.0) -> int:
        """Release slots held for this reader whose message never arrived.

        A frame published more than ``older_than_s`` ago that is not in ``in_use``
        (received and not yet released) was lost in transit (before this reader
        subscribed, or dropped by the socket); its hold would block the slot forever.
        Returns how many were released.
        """
        if not self.registered:
            return 0
        now = clock_ns()
        held = np.flatnonzero(self.v.holders[:, self.index])
        lost = 0
        for slot in held.tolist():
            age = now - int(self.v.slots[slot, 1])
            if slot not in in_use and age > older_than_s * 1e9:
                self.v.holders[slot, self.index] = 0
                lost += 1
        return lost

    def view(self, slot: int, shape: tuple[int, ...], dtype: str) -> NDArray[Any]:
        """Return a read-only numpy view of a slot (zero-copy)."""
        dt = np.dtype(dtype)
        n = int(np.prod(shape)) * dt.itemsize
        arr: NDArray[Any] = self.v.data[slot, :n].view(dt).reshape(shape)
        arr.flags.writeable = False
        return arr

    def release(self, slot: int) -> None:
        """Give ``slot`` back to the writer."""
        if self.registered:
            self.v.holders[slot, self.index] = 0

    def release_all(self) -> None:
        """Give every slot back (before saying goodbye)."""
        if self.registered:
            self.v.holders[:, self.index] = 0

    def close(self) -> None:
        """Release every hold and detach (views handed out stay readable until freed)."""
        if self._closed:
            return
        self.release_all()
        self._closed = True
        self.v.release()
        try:
            self._shm.close()
        except BufferError:  # views still alive in user code: the mapping goes with them
            logger.debug(
                "shared block %s still in use; detaching when its views are freed", self.name
            )
