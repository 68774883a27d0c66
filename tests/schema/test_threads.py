"""Per-thread priorities: bulk threads yield the CPU; the threads beside them keep theirs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from livescope.schema import (
    BULK_PRIORITY_ENV,
    LivescopeError,
    bulk_priority,
    lower_native_threads,
    lower_thread_priority,
    native_thread_ids,
)

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread priority is Linux's"
)


def _nice(thread: threading.Thread | None = None) -> int:
    tid = (thread or threading.current_thread()).native_id
    assert tid is not None
    return os.getpriority(os.PRIO_PROCESS, tid)


def _parked() -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()
    t = threading.Thread(target=done.wait, args=(5,))
    t.start()
    return t, done


@linux_only
def test_only_the_thread_that_asks_is_lowered() -> None:
    seen: dict[str, int] = {}
    done = threading.Event()

    def lowered() -> None:
        seen["ok"] = int(lower_thread_priority(3))
        seen["lowered"] = _nice()
        done.wait(5)

    base = _nice()
    a = threading.Thread(target=lowered)
    a.start()
    b, b_done = _parked()
    try:
        while "lowered" not in seen:
            done.wait(0.01)
        assert seen == {"ok": 1, "lowered": min(19, base + 3)}
        assert _nice(b) == base
        assert _nice() == base
    finally:
        done.set()
        b_done.set()
        a.join()
        b.join()


@linux_only
def test_another_thread_is_lowered_and_capped_at_19() -> None:
    t, done = _parked()
    try:
        base = _nice()
        assert lower_thread_priority(30, t)
        assert _nice(t) == 19
        assert _nice() == base
    finally:
        done.set()
        t.join()


def test_nothing_happens_for_zero_or_an_unstarted_or_ended_thread() -> None:
    base = _nice() if sys.platform.startswith("linux") else None
    assert not lower_thread_priority(0)
    assert not lower_thread_priority(5, threading.Thread(target=print))
    ended = threading.Thread(target=int)
    ended.start()
    ended.join()
    assert ended.native_id is not None  # (kept: the kernel may give it to another thread)
    assert not lower_thread_priority(5, ended)
    if base is not None:
        assert _nice() == base


@linux_only
def test_lowering_twice_counts_from_the_threads_own_priority() -> None:
    """zarr's threads outlive a run: the next run's recorder must not lower them again."""
    t, done = _parked()
    try:
        base = _nice(t)
        assert lower_thread_priority(2, t)
        assert lower_thread_priority(2, t)
        assert _nice(t) == min(19, base + 2)
        assert lower_thread_priority(4, t)
        assert _nice(t) == min(19, base + 4)
    finally:
        done.set()
        t.join()


@linux_only
def test_a_thread_started_by_a_lowered_thread_is_not_lowered_twice() -> None:
    """zarr starts its codec threads from its (lowered) I/O thread: they inherit its niceness."""
    base = _nice()
    seen: dict[str, int] = {}
    done = threading.Event()

    def child() -> None:
        seen["inherited"] = _nice()
        lower_thread_priority(2)
        seen["after"] = _nice()

    def parent() -> None:
        lower_thread_priority(2)
        c = threading.Thread(target=child)
        c.start()
        c.join()
        done.set()

    p = threading.Thread(target=parent)
    p.start()
    p.join()
    assert done.is_set()
    assert seen == {"inherited": min(19, base + 2), "after": min(19, base + 2)}


@linux_only
@pytest.mark.parametrize(
    ("mode", "idle", "expect_idle"),
    [pytest.param("", None, True, id="default-idle"),
     pytest.param("nice", None, False, id="nice-only"),
     pytest.param("", False, False, id="caller-says-nice"),  # the recorder's threads
     pytest.param("nice", True, True, id="caller-says-idle")],
)  # fmt: skip
def test_a_bulk_thread_joins_the_idle_class_unless_told_nice_only(
    mode: str, idle: bool | None, expect_idle: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCHED_IDLE: a waking normal thread takes the core from it at once.

    The variable decides unless the caller does (``idle=``).
    """
    monkeypatch.setenv(BULK_PRIORITY_ENV, mode)
    t, done = _parked()
    try:
        assert lower_thread_priority(2, t, idle=idle)
        assert t.native_id is not None
        policy = os.sched_getscheduler(t.native_id)
        assert (policy == os.SCHED_IDLE) is expect_idle
        assert _nice(t) > _nice()
        assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the caller keeps its class
    finally:
        done.set()
        t.join()


@linux_only
def test_threads_a_library_started_are_lowered_by_kernel_id(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(BULK_PRIORITY_ENV, raising=False)
    t, done = _parked()
    try:
        assert t.native_id is not None
        ids = native_thread_ids()
        assert {threading.get_native_id(), t.native_id} <= ids
        # another process's id (e.g. a thread's id the kernel gave away): never touched
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10)"])
        try:
            assert lower_native_threads(4, [t.native_id, other.pid]) == 1
            assert os.getpriority(os.PRIO_PROCESS, other.pid) == _nice()
            assert os.sched_getscheduler(other.pid) != os.SCHED_IDLE
        finally:
            other.kill()
            other.wait()
        assert os.sched_getscheduler(t.native_id) == os.SCHED_IDLE
        assert _nice(t) > _nice()
        assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the caller keeps its class
        assert lower_native_threads(0, [threading.get_native_id()]) == 0  # nice 0: nothing
        assert "could not lower" not in caplog.text
    finally:
        done.set()
        t.join()


def test_a_wrong_bulk_priority_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BULK_PRIORITY_ENV, "realtime")
    with pytest.raises(LivescopeError, match=r"LIVESCOPE_BULK_PRIORITY.*'realtime'"):
        bulk_priority()
    if sys.platform.startswith("linux"):
        with pytest.raises(LivescopeError, match="LIVESCOPE_BULK_PRIORITY"):
            lower_thread_priority(2)


@pytest.mark.skipif(sys.platform != "win32", reason="Windows' thread priorities")
def test_a_bulk_thread_runs_at_the_lowest_thread_priority_on_windows() -> None:
    # the recorder's threads kept the acquisition's priority there, above the worker's
    t, done = _parked()
    try:
        assert lower_thread_priority(5, t)
        if sys.platform == "win32":  # (for the type checker, which runs as on Linux)
            import ctypes

            kernel32 = ctypes.WinDLL("kernel32")
            kernel32.OpenThread.restype = ctypes.c_void_p
            kernel32.GetThreadPriority.argtypes = [ctypes.c_void_p]
            handle = kernel32.OpenThread(0x0800, False, t.native_id)  # (query, limited)
            assert handle
            try:
                assert kernel32.GetThreadPriority(handle) == -2  # THREAD_PRIORITY_LOWEST
            finally:
                kernel32.CloseHandle(ctypes.c_void_p(handle))
            kernel32.GetCurrentThread.restype = ctypes.c_void_p
            assert kernel32.GetThreadPriority(kernel32.GetCurrentThread()) == 0  # the caller's
    finally:
        done.set()
        t.join()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is sent differently on Windows")
def test_start_daemon_says_ended_only_once_its_target_has_ended() -> None:
    """A Ctrl+C that interrupts a join must not pass for the thread's end."""
    import signal

    from livescope.schema import start_daemon

    go = threading.Event()
    ended = start_daemon(go.wait, "livescope-test-daemon")
    (thread,) = [t for t in threading.enumerate() if t.name == "livescope-test-daemon"]
    main = threading.main_thread().ident or 0
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.05, signal.pthread_kill, (main, signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):
            thread.join()  # (Python < 3.13 then takes the thread for ended)
    finally:
        signal.signal(signal.SIGINT, before)
    assert not ended.is_set()
    go.set()
    assert ended.wait(5)
    assert thread.daemon
