"""Thread priorities: bulk work (engines, recording) yields the CPU to the hand-offs.

On Linux a bulk thread is niced and, by default, also moved to the ``SCHED_IDLE``
class: it runs whenever no normal thread wants the core, and a normal thread
that wakes (a frame or a decision on its way) takes the core from it at once.
A niceness alone only shrinks the thread's share: under the kernel's EEVDF
scheduler a waking thread can still wait out the bulk thread's slice (on a busy
2-core machine the frames' way to the worker and the decisions' way back had
p99s of 4-8 ms with niceness alone, 1.4-1.9 ms with ``SCHED_IDLE``). The cost:
while normal threads keep every core busy, a ``SCHED_IDLE`` thread waits. Set
``LIVESCOPE_BULK_PRIORITY=nice`` to keep niceness only (e.g. on a machine
shared with other busy programs).

The recorder's writer thread is a bulk thread too. It was niced only
(``idle=False``) while it wrote through zarr's own path, at twice today's CPU
per frame, lest it fall behind the camera in the idle class; a recording that
falls behind is now logged (see `livescope.scope`'s frame fan-out).

On Windows a bulk thread is set to ``THREAD_PRIORITY_LOWEST`` (two steps below
its process's priority class; the worker's process runs ``BELOW_NORMAL``), not
to ``THREAD_PRIORITY_IDLE``: an idle-priority thread would wait behind every
other program of the PC, and a recording must keep up with the camera. Written
from the Win32 documentation; not yet run on Windows.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable

from ._errors import LivescopeError

__all__ = [
    "BULK_PRIORITY_ENV",
    "WORKER_NICE",
    "bulk_priority",
    "lower_native_threads",
    "lower_thread_priority",
    "native_thread_ids",
    "start_daemon",
]

logger = logging.getLogger("livescope")

BULK_PRIORITY_ENV = "LIVESCOPE_BULK_PRIORITY"
"""``idle`` (default: niceness and ``SCHED_IDLE``) or ``nice`` (niceness only)."""
WORKER_NICE = 5
"""How much lower the worker's CPU priority is than the agent's (POSIX nice): on
Linux its engine and store threads only, elsewhere the whole process."""

_WIN_THREAD_PRIORITY_LOWEST = -2
_WIN_THREAD_SET_LIMITED_INFORMATION = 0x0400

_base: list[int] = []
"""The process's own niceness: that of the first thread lowered, before it was."""
_base_lock = threading.Lock()


def bulk_priority() -> str:
    """How bulk threads are lowered: ``idle`` or ``nice`` (from ``LIVESCOPE_BULK_PRIORITY``).

    Call it where a run starts, so that a wrong value stops the run there with
    a clear message, not on a bulk thread.

    Raises
    ------
    LivescopeError
        if the variable is set to anything else.

    """
    mode = os.environ.get(BULK_PRIORITY_ENV, "").strip().lower() or "idle"
    if mode not in ("idle", "nice"):
        raise LivescopeError(f"{BULK_PRIORITY_ENV} must be 'idle' or 'nice', got {mode!r}")
    return mode


def lower_thread_priority(
    nice: int, thread: threading.Thread | None = None, *, idle: bool | None = None
) -> bool:
    """Run a thread (default: the calling one) ``nice`` steps below the process's priority.

    Linux gives each thread its own niceness, and a thread starts with its
    creator's. The step counts from the process's niceness (that of the first
    thread lowered, taken before it was), not the thread's: lowering is
    idempotent, threads shared between runs (zarr's) are not lowered again and
    again, and a thread started by a lowered one is not lowered twice.
    With ``idle`` True, or None and ``LIVESCOPE_BULK_PRIORITY`` not ``nice``, the
    thread also joins the ``SCHED_IDLE`` class (see the module's docstring;
    ``idle=False``: niceness only, whichever valid value the variable has). A
    thread already in that class stays there. On Windows the thread gets
    ``THREAD_PRIORITY_LOWEST`` whatever ``nice`` and ``idle`` (see the module's
    docstring). Elsewhere (macOS), or with ``nice <= 0``, nothing changes. On
    Linux neither can be undone without privileges: call it only for threads
    that do bulk work for the rest of their life.

    Raises
    ------
    LivescopeError
        if ``LIVESCOPE_BULK_PRIORITY`` is neither ``idle`` nor ``nice`` (see
        `bulk_priority`).

    Returns
    -------
    bool
        True if the priority was lowered.

    """
    t = thread or threading.current_thread()
    # (an ended thread's id may belong to another thread by now, even another process's)
    if nice <= 0 or t.native_id is None or not t.is_alive():
        return False
    if sys.platform == "win32":
        _mode(idle)  # (a wrong LIVESCOPE_BULK_PRIORITY is refused here too)
        return _lower_windows(t.native_id, t.name)
    elif sys.platform.startswith("linux"):
        return _lower(t.native_id, t.name, nice, _mode(idle))
    else:  # (macOS: nothing. One if-elif-else: mypy skips the other platforms' branches)
        return False


def _lower_windows(tid: int, label: str) -> bool:
    """Set the thread of id ``tid`` to ``THREAD_PRIORITY_LOWEST`` (Windows; see the module)."""
    if sys.platform == "win32":  # (the calls exist on Windows only)
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenThread.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
        kernel32.OpenThread.restype = wintypes.HANDLE
        kernel32.SetThreadPriority.argtypes = [wintypes.HANDLE, ctypes.c_int]
        kernel32.SetThreadPriority.restype = wintypes.BOOL
        kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
        kernel32.CloseHandle.restype = wintypes.BOOL
        handle = kernel32.OpenThread(_WIN_THREAD_SET_LIMITED_INFORMATION, False, tid)
        done = bool(handle)
        if handle:
            done = bool(kernel32.SetThreadPriority(handle, _WIN_THREAD_PRIORITY_LOWEST))
            error = ctypes.get_last_error()
            kernel32.CloseHandle(handle)
        else:
            error = ctypes.get_last_error()
        if not done:
            why = ctypes.FormatError(error).strip()
            logger.warning("could not lower the priority of %s (%s)", label, why)
        return done
    else:  # (an if-else on the platform: mypy checks each platform's branch for it alone)
        return False


def native_thread_ids() -> set[int]:
    """Return the kernel ids of this process's threads (Linux; elsewhere an empty set).

    Libraries start threads of their own that Python does not list (ONNX
    Runtime's intra-op pool when a session gets more than one thread, torch's
    CPU pool): compare the ids before and after such a library starts them.
    """
    if sys.platform.startswith("linux"):
        try:
            return {int(name) for name in os.listdir("/proc/self/task")}
        except OSError:  # (no /proc)
            return set()
    else:
        return set()


def lower_native_threads(nice: int, tids: Iterable[int], *, idle: bool | None = None) -> int:
    """Lower threads given by kernel id as `lower_thread_priority` lowers one; return how many.

    For the threads a library starts (see `native_thread_ids`): a thread
    inherits its creator's priority, so a pool started while the engines were
    loaded at normal priority would compute at normal priority for the rest
    of the run. A thread that has ended since is skipped (its id may belong to
    another process by now).
    """
    if nice <= 0:
        return 0
    if sys.platform.startswith("linux"):
        mode = _mode(idle)
        # (an id no longer among this process's threads is skipped: the kernel may give it
        # to another)
        return sum(_lower(tid, f"native thread {tid}", nice, mode, gone_ok=True) for tid in tids
                   if os.path.exists(f"/proc/self/task/{tid}"))  # fmt: skip
    else:
        return 0


def _mode(idle: bool | None) -> str:
    mode = bulk_priority()
    if idle is not None:
        mode = "idle" if idle else "nice"
    return mode


def _lower(tid: int, label: str, nice: int, mode: str, *, gone_ok: bool = False) -> bool:
    """Nice thread ``tid`` and, with ``mode`` ``idle``, move it to ``SCHED_IDLE`` (Linux)."""
    if not sys.platform.startswith("linux"):  # (its callers are Linux's branches)
        return False
    else:  # (an else, not code after a return: mypy then checks it for Linux only)
        try:
            now = os.getpriority(os.PRIO_PROCESS, tid)
            with _base_lock:
                if not _base:
                    _base.append(now)
            target = min(19, _base[0] + nice)
            if now < target:
                os.setpriority(os.PRIO_PROCESS, tid, target)
            if mode == "idle" and os.sched_getscheduler(tid) != os.SCHED_IDLE:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except ProcessLookupError:
            if not gone_ok:
                logger.warning("could not lower the priority of %s: it has ended", label)
            return False
        except OSError as exc:
            logger.warning("could not lower the priority of %s (%s)", label, exc)
            return False
        return True


def start_daemon(target: Callable[[], object], name: str) -> threading.Event:
    """Run ``target`` on a daemon thread named ``name``; return an event set when it ends.

    Wait on the event, not with ``Thread.join``: a Ctrl+C that interrupts
    ``join`` in the main thread makes Python < 3.13 take the still-running
    thread for ended (threading's bpo-45274 handling releases the lock the
    thread holds), so later joins return at once (once, pycromanager's
    acquisition was cut short that way and the process could not exit). Wait
    in slices (``while not ended.wait(0.1)``) where Ctrl+C must get through: an
    untimed wait cannot be interrupted on Windows.
    """
    ended = threading.Event()

    def run() -> None:
        try:
            target()
        finally:
            ended.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    return ended
