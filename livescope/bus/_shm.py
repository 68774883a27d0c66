"""A ring of shared-memory frame slots: pixels are written once, readers map them.

Layout of the shared block (all little-endian):

* readers table: ``max_readers`` × (heartbeat ns, registration token; 0 = free) (u64)
* slots table: ``n_slots`` × (generation, publish time ns) (u64)
* holders table: ``n_slots`` × ``max_readers`` bytes (1: the slot was given to that reader)
* released table: ``n_slots`` × ``max_readers`` (u64): the generation of the slot
  that reader gave back
* data: ``n_slots`` × ``slot_bytes``

The writer (agent) is the only process that writes holder bytes and generations;
each reader writes only its own column of the released table and its own
heartbeat. A reader holds a slot while the slot is given to it and the
generation it gave back is not the slot's: a reader gives a slot back by the
generation it read before checking that its place is still its own, so a reader
declared dead while it was stalled after that check, whose place went to
another reader, writes an older generation, which frees none of the other's
slots (a stale one can only keep a slot held, until that reader's `ShmReader.sweep`).
A slot is reused when no live reader holds it; a reader whose heartbeat is older
than ``dead_after_s`` is declared dead and its holds are dropped. A receiver
checks the slot's generation before it hands a frame out (`ShmReader.holds`);
whether the frame was overwritten since (its reader was, wrongly, declared dead,
or the frame released) only `Frame.valid` says, when called after use.

A ring is named ``lvs_<pid>_<hex>`` after the process that made it. On Linux its
space in ``/dev/shm`` is reserved when it is made (a full ``/dev/shm`` is said
then, instead of killing the process with SIGBUS at the first frame), its maker
holds a shared lock on it while it lives, and the first ring a process makes
removes the rings killed processes left behind (`remove_stale_rings`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import stat
import sys
import threading
import uuid
import weakref
from collections.abc import Callable
from multiprocessing import shared_memory
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from livescope.schema import LivescopeError, clock_ns

from ._endpoints import STALE_AFTER_S, old_own_entries, pid_lives

__all__ = ["ShmReader", "ShmRing", "SlotHold", "remove_stale_rings"]

logger = logging.getLogger("livescope")

_MAGIC = 0x4C56534D52494E32  # "LVSMRIN2" (2: the released table; "LVSMRING" had none)

SHM_FOLDER = "/dev/shm"
"""Where Linux keeps named shared memory (a tmpfs; Docker gives a container 64 MiB)."""
_RING_NAME = re.compile(r"lvs_([0-9]+)_[0-9a-f]+")
_swept = threading.Event()


def _layout(n_slots: int, max_readers: int, slot_bytes: int) -> dict[str, int]:
    head = 4 * 8
    readers = head
    gens = readers + max_readers * 16
    released = gens + n_slots * 16
    holders = released + n_slots * max_readers * 8
    data = holders + n_slots * max_readers
    data = (data + 63) // 64 * 64
    return {"readers": readers, "gens": gens, "released": released, "holders": holders,
            "data": data, "total": data + n_slots * slot_bytes}  # fmt: skip


class _Views:
    """numpy views over a ring's shared block (both sides build the same views).

    All are made from ``block``, one `np.frombuffer` array over the whole block:
    it holds a buffer export of the mapping for as long as it, or any array made
    from it (a frame's view), lives, so `SharedMemory.close` cannot unmap the block
    under them (it raises BufferError: see `_close_block`). Arrays made with
    ``np.ndarray(..., buffer=...)`` hold none: the block was unmapped under a
    frame's array still in use, and reading it killed the process (SIGSEGV).
    """

    def __init__(self, buf: memoryview, n_slots: int, max_readers: int, slot_bytes: int) -> None:
        lay = _layout(n_slots, max_readers, slot_bytes)
        if buf.nbytes < lay["total"]:
            raise ValueError(f"block of {buf.nbytes} bytes; the geometry needs {lay['total']}")
        self.n_slots, self.max_readers, self.slot_bytes = n_slots, max_readers, slot_bytes
        self.block = np.frombuffer(buf, np.uint8, lay["total"])

        def table(offset: int, shape: tuple[int, int], dtype: type[Any]) -> NDArray[Any]:
            nbytes = shape[0] * shape[1] * np.dtype(dtype).itemsize
            out: NDArray[Any] = self.block[offset : offset + nbytes].view(dtype).reshape(shape)
            return out

        self.head = self.block[:32].view(np.uint64)
        self.readers = table(lay["readers"], (max_readers, 2), np.uint64)
        self.slots = table(lay["gens"], (n_slots, 2), np.uint64)
        self.released = table(lay["released"], (n_slots, max_readers), np.uint64)
        self.holders = table(lay["holders"], (n_slots, max_readers), np.uint8)
        self.data = table(lay["data"], (n_slots, slot_bytes), np.uint8)

    def release(self) -> None:
        del self.block, self.head, self.readers, self.slots, self.released, self.holders
        del self.data

    def held(self) -> NDArray[np.bool_]:
        """Return, for each slot, whether a reader holds it (see the module)."""
        by_reader = (self.holders != 0) & (self.released != self.slots[:, :1])
        return cast("NDArray[np.bool_]", by_reader.any(axis=1))


def _close_quietly(shm: shared_memory.SharedMemory) -> None:
    with contextlib.suppress(BufferError):
        shm.close()


def _close_block(shm: shared_memory.SharedMemory, views: _Views) -> bool:
    """Drop ``views`` and unmap ``shm``; return False if arrays over it still live.

    Those (a frame's array a user keeps, a write on another thread) keep the
    block mapped; it is unmapped, and its descriptor closed, once the last of
    them is freed, not at the process's end.
    """
    anchor = weakref.ref(views.block.base)  # (the memoryview of numpy's buffer export)
    views.release()
    try:
        shm.close()
    except BufferError:
        exporter = anchor()
        if exporter is None:  # (freed in between, on another thread)
            _close_quietly(shm)
            return True
        weakref.finalize(exporter, _close_quietly, shm).atexit = False
        return False
    return True


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


def remove_stale_rings(
    older_than_s: float = STALE_AFTER_S, *, folder: str = SHM_FOLDER
) -> list[str]:
    """Remove the rings killed processes left in ``/dev/shm``; return their paths (Linux).

    Python's resource tracker unlinks a ring whose maker ends without closing
    it, unless it dies too (a process group killed: a closed terminal, SIGKILL),
    and then nothing else frees that memory. A ring is removed only if its name
    is ``lvs_<pid>_<hex>`` (older names, without the maker's id, are left
    alone), it is a file of this user's, older than ``older_than_s`` (its
    maker may not hold its lock yet), the process named in it has ended, and no
    process holds a lock on it (its maker holds one while it lives, also from
    another PID namespace sharing ``/dev/shm``). ``folder``: where to look.
    Nothing is done elsewhere than on Linux (macOS cannot list its shared
    memory; Windows frees it with the last handle). Called by the first
    `ShmRing` of a process.
    """
    if sys.platform != "linux":
        return []
    else:
        import fcntl

        removed = []
        for entry in old_own_entries(folder, "lvs_", stat.S_ISREG, older_than_s):
            match = _RING_NAME.fullmatch(entry.name)
            if match is None or pid_lives(int(match[1])):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (raises if its maker lives)
                os.unlink(entry.path)
                removed.append(entry.path)
            except OSError:
                continue
            finally:
                os.close(fd)
        if removed:
            logger.info("removed %d shared-memory ring(s) left by killed processes", len(removed))
        return removed


def _free_bytes(folder: str = SHM_FOLDER) -> int | None:
    """Return the bytes free in ``folder`` (Linux); None where it has no limit or is not there."""
    if sys.platform != "linux":
        return None
    else:
        try:
            st = os.statvfs(folder)
        except OSError:
            return None
        if st.f_blocks == 0:  # (a tmpfs mounted without a size limit)
            return None
        return st.f_bavail * st.f_frsize


def _no_room(needed: int, free: int | None) -> LivescopeError:
    room = "not that much" if free is None else f"{free / 2**20:.0f} MiB"
    return LivescopeError(
        f"the shared-memory frame ring needs {needed / 2**20:.0f} MiB but {SHM_FOLDER} has "
        f"{room} free (Docker gives a container 64 MiB): start the agent with `--bus inline` "
        '(bus="inline" from Python), give the container more shared memory '
        "(`docker run --shm-size=1g`), or make the ring smaller (FramePublisher's ring_bytes)"
    )


def _reserve(name: str, size: int) -> int:
    """Reserve a new ring's pages and lock it as this process's (Linux); return the lock's fd.

    The block is made sparse: a page touched when ``/dev/shm`` is full kills the
    process with SIGBUS. ``posix_fallocate`` allocates every page now, or fails
    at once with ENOSPC (tmpfs gives back what it allocated). The shared lock,
    held until `ShmRing.close` (or the process's end), tells `remove_stale_rings`
    the ring's maker lives. Returns -1 where the block is not in ``/dev/shm``.

    Raises
    ------
    LivescopeError
        if ``/dev/shm`` has not ``size`` bytes free.

    """
    if sys.platform != "linux":
        return -1
    else:
        import fcntl

        try:
            fd = os.open(os.path.join(SHM_FOLDER, name), os.O_RDWR | os.O_NOFOLLOW)
        except OSError as exc:
            logger.debug(
                "shared block %s not found in %s (%s): not reserved", name, SHM_FOLDER, exc
            )
            return -1
        try:
            os.posix_fallocate(fd, 0, size)
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.ENOSPC:
                raise _no_room(size, _free_bytes()) from None
            logger.debug("could not reserve shared block %s: %s", name, exc)
            return -1
        return fd


class SlotHold:
    """A reader's hold on one slot: the base of the frame's array and every view of it.

    numpy keeps an array's base alive, so the hold lasts as long as the array a
    `Frame` hands out or anything made from it (a slice, a reshape) is
    referenced; ``release`` (a `weakref.finalize`) calls ``release_slot(*args)``
    once: when called (`Frame.release`), or when the last of them is collected.
    It also keeps the mapping referenced, so the block is not unmapped under them.
    """

    __slots__ = ("__array_interface__", "__weakref__", "_view", "release")

    def __init__(
        self, view: NDArray[Any], release_slot: Callable[..., object], *args: object
    ) -> None:
        self.__array_interface__ = view.__array_interface__  # (read-only, as the view)
        self._view = view
        self.release = weakref.finalize(self, release_slot, *args)

    def array(self) -> NDArray[Any]:
        """Return a new array over the slot whose base is this hold (zero-copy)."""
        return np.asarray(cast(Any, self))


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
        if not _swept.is_set():  # once per process: first free what killed runs left
            _swept.set()
            remove_stale_rings()
        free = _free_bytes()
        if free is not None and lay["total"] > free:
            raise _no_room(lay["total"], free)
        # (the maker's id in the name: `remove_stale_rings` never takes a live process's;
        # at most 7 + 16 digits: macOS allows 30 characters)
        self.name = f"lvs_{os.getpid()}_{uuid.uuid4().hex[:16]}"
        self._shm = shared_memory.SharedMemory(name=self.name, create=True, size=lay["total"])
        try:
            self._lock_fd = _reserve(self.name, lay["total"])
        except BaseException:
            self._shm.close()
            self._shm.unlink()
            raise
        self._closed = False
        self.v = _Views(_buffer(self._shm), n_slots, max_readers, slot_bytes)
        self.v.head[:] = (_MAGIC, n_slots, max_readers, slot_bytes)
        self.v.readers[:] = 0
        self.v.slots[:] = 0
        self.v.released[:] = 0
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
        held = self.v.held()
        if held.all():
            self._reap_dead()
            held = self.v.held()
        for k in range(n):
            slot = (self._next + k) % n
            if not held[slot]:
                self._next = (slot + 1) % n
                return slot
        return None

    def write(self, slot: int, image: NDArray[Any]) -> None:
        """Copy ``image`` into ``slot`` (the single copy of the shared-memory path)."""
        flat = np.ascontiguousarray(image).reshape(-1).view(np.uint8)
        # (no reader holds it: its bytes say only to whom it was given, which with a new
        # generation would read as held again by every reader that gave it back)
        self.v.holders[slot, :] = 0
        self.v.slots[slot, 0] += 1  # odd while being written
        np.copyto(self.v.data[slot, : flat.size], flat)

    def publish(self, slot: int) -> int:
        """Mark ``slot`` held by every live reader; returns its generation."""
        self.v.slots[slot, 1] = clock_ns()  # (before the generation: `ShmReader.sweep`)
        self.v.slots[slot, 0] += 1  # even: complete
        self.v.holders[slot, :] = self.v.readers[:, 1] != 0
        return int(self.v.slots[slot, 0])

    def withdraw(self, slot: int) -> None:
        """Drop every hold `publish` gave ``slot``: its frame is never sent (its header failed)."""
        self.v.holders[slot, :] = 0

    def close(self) -> None:
        """Unlink the shared block (readers keep their mapping until they detach); idempotent."""
        if self._closed:
            return
        self._closed = True
        # (the name first: the block goes from /dev/shm even while an array over it,
        # e.g. of a `write` on another thread, keeps it mapped here)
        with contextlib.suppress(FileNotFoundError):
            self._shm.unlink()
        _close_block(self._shm, self.v)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # (the lock goes with it)
            self._lock_fd = -1


class ShmReader:
    """Reader side: attaches to a ring by name with the place and token the writer gave it.

    Every giving back of slots first checks that the place is still this
    reader's (same token); once the writer has declared it dead, the reader
    touches nothing more and `registered` is False (a write already past that
    check gives back older generations, which free no other reader's slot).
    """

    def __init__(self, geometry: dict[str, Any], reader_index: int, token: int) -> None:
        """Map the ring named in ``geometry``.

        Raises
        ------
        OSError
            if the block cannot be mapped (``FileNotFoundError``: no block of that
            name here, e.g. the agent runs in another container or namespace).
        LivescopeError
            if the block is not a livescope ring of that geometry.

        """
        self._shm = _attach(str(geometry["name"]))
        try:
            self.v = _Views(
                _buffer(self._shm),
                int(geometry["n_slots"]),
                int(geometry["max_readers"]),
                int(geometry["slot_bytes"]),
            )
        except (TypeError, ValueError):  # (`_Views`: the block is smaller than the geometry)
            self._shm.close()
            raise LivescopeError(
                f"shared block {geometry['name']} is smaller than its geometry says"
            ) from None
        problem = None
        if int(self.v.head[0]) != _MAGIC:
            problem = "is not a livescope ring"
        elif self.v.head[1:].tolist() != [self.v.n_slots, self.v.max_readers, self.v.slot_bytes]:
            problem = f"has geometry {self.v.head[1:].tolist()}, not the one given"
        elif not 0 <= reader_index < self.v.max_readers:
            problem = f"has no reader place {reader_index}"
        if problem is not None:
            self.v.release()
            self._shm.close()
            raise LivescopeError(f"shared block {geometry['name']} {problem}")
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
        if self._closed:
            return False
        given = bool(self.v.holders[slot, self.index])
        released = int(self.v.released[slot, self.index])
        # (the place checked last: all that was read was this reader's then)
        return (
            given
            and released != generation
            and int(self.v.slots[slot, 0]) == generation
            and self.registered
        )

    def generation(self, slot: int) -> int:
        """Return the generation of ``slot`` (it changes when the writer reuses the slot)."""
        if self._closed:
            return -1
        return int(self.v.slots[slot, 0])

    def sweep(
        self, in_use: set[int], older_than_s: float = 1.0, *, before_ns: int | None = None
    ) -> int:
        """Release slots held for this reader whose message will never come.

        A frame's message may be lost in transit (sent before this reader
        subscribed, or dropped by a full socket queue); its hold would block
        the slot for ever. Released: each slot held for this reader that is not
        in ``in_use`` (received and not yet released), published more than
        ``older_than_s`` ago and, with ``before_ns``, before that time
        (`clock_ns`). The caller chooses them so that no such message can still
        come: one waiting unread in the reader's socket is not lost, however
        old (messages of one writer come in the order sent: a frame published
        before the newest message received, and not received, was lost).
        Returns how many were released.
        """
        if self._closed:
            return 0
        now = clock_ns()
        cutoff = now - int(older_than_s * 1e9)
        if before_ns is not None:
            cutoff = min(cutoff, before_ns)
        # (all read before the place is checked; the generation first: `ShmRing.publish`
        # writes the time before it, and `ShmRing.write` clears the holder bytes before
        # making it odd, so an even one read here comes with its time and holders)
        gens = self.v.slots[:, 0].copy()
        given = self.v.holders[:, self.index] != 0
        released = self.v.released[:, self.index].copy()
        times = self.v.slots[:, 1].astype(np.int64)
        if not self.registered:
            return 0
        lost = 0
        mine = given & (released != gens) & (gens % 2 == 0)  # (odd: being written)
        for slot in np.flatnonzero(mine).tolist():
            if slot not in in_use and int(times[slot]) < cutoff:
                self.v.released[slot, self.index] = gens[slot]
                lost += 1
        return lost

    def view(self, slot: int, shape: tuple[int, ...], dtype: str) -> NDArray[Any]:
        """Return a read-only numpy view of a slot (zero-copy; it holds nothing: see `SlotHold`)."""
        dt = np.dtype(dtype)
        n = int(np.prod(shape)) * dt.itemsize
        arr: NDArray[Any] = self.v.data[slot, :n].view(dt).reshape(shape)
        arr.flags.writeable = False
        return arr

    def release(self, slot: int) -> None:
        """Give ``slot`` back to the writer."""
        if self._closed:
            return
        generation = self.v.slots[slot, 0]  # (read before the check: see the module)
        if self.registered:
            self.v.released[slot, self.index] = generation

    def release_all(self) -> None:
        """Give every slot back (before saying goodbye)."""
        if self._closed:
            return
        generations = self.v.slots[:, 0].copy()  # (read before the check: see the module)
        if self.registered:
            self.v.released[:, self.index] = generations

    def close(self) -> None:
        """Release every hold and detach (views handed out stay readable until freed)."""
        if self._closed:
            return
        self.release_all()
        self._closed = True
        if not _close_block(self._shm, self.v):  # (frames' arrays still alive in user code)
            logger.debug(
                "shared block %s still in use; detaching when its views are freed", self.name
            )
