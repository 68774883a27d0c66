"""Latency helpers: the GIL switch interval and garbage collection held off in a block."""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from livescope.bus import SWITCH_INTERVAL_S, collection_deferred, fast_thread_switching
from livescope.bus._switching import fine_system_timer


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """Generation of each collection that starts in the test's thread while it runs.

    (Threads left over from other tests may collect explicitly at any time.)
    """
    seen: list[int] = []
    me = threading.get_ident()

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and threading.get_ident() == me:
            seen.append(info["generation"])

    gc.callbacks.append(on_gc)
    try:
        yield seen
    finally:
        gc.callbacks.remove(on_gc)


def _cycles(n: int) -> list[list[object]]:
    """``n`` container objects that survive (each refers to itself)."""
    out: list[list[object]] = []
    for _ in range(n):
        x: list[object] = []
        x.append(x)
        out.append(x)
    return out


def test_fast_thread_switching_shortens_the_interval_and_restores_it() -> None:
    old = sys.getswitchinterval()
    with fast_thread_switching():
        assert sys.getswitchinterval() == pytest.approx(min(old, SWITCH_INTERVAL_S))
    assert sys.getswitchinterval() == old


def test_a_fine_system_timer_is_asked_for_on_windows_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Windows rounds timed waits up to its timer tick (~15.6 ms) unless asked for 1 ms
    with fine_system_timer() as given:
        assert given is (sys.platform == "win32")
    # the agent and the worker hold it for as long as they switch threads fast
    import contextlib

    import livescope.bus._switching as switching

    seen: list[str] = []

    @contextlib.contextmanager
    def noted(ms: int = 1):  # type: ignore[no-untyped-def]
        seen.append("asked")
        yield False
        seen.append("given back")

    monkeypatch.setattr(switching, "fine_system_timer", noted)
    with fast_thread_switching():
        assert seen == ["asked"]
    assert seen == ["asked", "given back"]


def _enabled_soon() -> bool:
    """Whether the collector is on, waiting out a block another test's thread may be in."""
    for _ in range(100):
        if gc.isenabled():
            return True
        time.sleep(0.01)
    return False


def test_no_collection_starts_inside_the_block_and_one_can_after(collections: list[int]) -> None:
    assert _enabled_soon()
    threshold = gc.get_threshold()[0]
    with collection_deferred():
        assert not gc.isenabled()
        kept = _cycles(20 * threshold)  # enough to start a collection many times over
        assert collections == []
    assert _enabled_soon()
    more = _cycles(2 * threshold)
    assert collections, "the collector did not run again after the block"
    del kept, more


def test_blocks_on_two_threads_resume_collection_when_the_last_ends() -> None:
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with collection_deferred():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=other)
    t.start()
    try:
        assert inside.wait(5)
        with collection_deferred():
            with collection_deferred():  # nested
                assert not gc.isenabled()
            assert not gc.isenabled()
        assert not gc.isenabled(), "the other thread's block is still running"
    finally:
        release.set()
        t.join(5)
    assert _enabled_soon()


def test_a_disabled_collector_stays_disabled_and_an_error_still_restores() -> None:
    gc.disable()
    try:
        with collection_deferred():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), collection_deferred():
        raise RuntimeError("boom")
    assert _enabled_soon()
