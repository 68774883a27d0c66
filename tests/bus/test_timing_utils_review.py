"""Review of the bus's timing helpers: switch interval, jitter ratios, stall stamps."""

from __future__ import annotations

import sys
import threading

import pytest

from livescope.bus import fast_thread_switching


def test_switching_blocks_on_two_threads_that_end_out_of_order_restore_the_interval() -> None:
    # the agent's and the worker's blocks in one process: the first to begin ends first
    old = sys.getswitchinterval()
    short = 0.0003
    inside, release, done = threading.Event(), threading.Event(), threading.Event()
    seen: list[float] = []

    def first() -> None:
        with fast_thread_switching(short):
            inside.set()
            release.wait(5)
        done.set()

    t = threading.Thread(target=first)
    t.start()
    try:
        assert inside.wait(5)
        with fast_thread_switching(short):
            release.set()
            assert done.wait(5)
            seen.append(sys.getswitchinterval())  # the other block has ended: this one hasn't
    finally:
        release.set()
        t.join(5)
    assert seen == [pytest.approx(short)]
    assert sys.getswitchinterval() == pytest.approx(old)  # (was left at the short interval)


def test_nested_switching_blocks_keep_the_shortest_interval_until_the_last_ends() -> None:
    old = sys.getswitchinterval()
    with fast_thread_switching(0.0004):
        with fast_thread_switching(0.0002):
            assert sys.getswitchinterval() == pytest.approx(0.0002)
        assert sys.getswitchinterval() == pytest.approx(0.0004)
    assert sys.getswitchinterval() == pytest.approx(old)
    with pytest.raises(ValueError, match="positive"), fast_thread_switching(0.0):  # by CPython
        pass
    assert sys.getswitchinterval() == pytest.approx(old)


def test_jitter_ratios_of_a_long_run_count_a_rare_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    # an hour's rounds (the processes' lateness given, not waited for): idle stalled over
    # 2 ms once, bulk 5 times; each rate rounded to 3 decimals was 0.0 and 0.001, so the
    # ratio read None ("no stall in the idle round") where it is 5
    from livescope.bus import _jitter

    stalls = {"idle": 1, "bulk": 5, "bulk_nice": 3, "bulk_idle_class": 2}
    by_priority = {p: stalls[name] for name, p in _jitter.JITTER_ROUNDS.items()}

    def lateness(
        priority: str | None, seconds: float, period_s: float, n_busy: int
    ) -> tuple[list[int], bool, float]:
        return [100_000] * 2000 + [3_000_000] * by_priority[priority], True, 1.0

    monkeypatch.setattr(_jitter, "_slice", lateness)
    out = _jitter.bench_jitter(seconds=3600.0, busy=1, turns=1)
    assert out["rounds"]["idle"]["stalls_per_s"]["over_2ms"] == pytest.approx(1 / 3600, rel=1e-3)
    assert out["ratios"]["bulk_vs_idle_stalls_over_2ms"] == pytest.approx(5.0)
    assert out["ratios"]["bulk_nice_vs_idle_stalls_over_2ms"] == pytest.approx(3.0)
    assert out["ratios"]["bulk_idle_class_vs_bulk_stalls_over_2ms"] == pytest.approx(0.4)


def test_stalls_of_a_run_of_hours_are_not_reported_as_none_a_second() -> None:
    # a stand-in probe (a real process) that reports a two-hour run with 3 late wake-ups
    # over each threshold: rounded to 3 decimals, each rate read 0.0 beside "stalls": 3
    import json
    import subprocess

    from livescope.bus import StallMonitor

    hours = 2 * 3600 * 10**9
    report = {"t_begin_ns": 0, "t_end_ns": hours, "wakeups": 3_600_000, "counts": [3, 3, 3],
              "worst_ns": 9_000_000, "stalls": [[10**9, 9_000_000]] * 3}  # fmt: skip
    mon = StallMonitor()
    mon._proc = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.stdin.readline(); print({json.dumps(report)!r})"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    out = mon.stop()
    assert out["stalls"] == 3
    for key in ("over_1ms_per_s", "over_2ms_per_s", "over_5ms_per_s"):
        assert out[key] == pytest.approx(3 / 7200, rel=1e-3), (key, out)


def test_a_stall_is_stamped_with_the_wake_up_that_measured_it() -> None:
    # the probe's program on a made-up clock: each sleep wakes 3+ ms late on a 10 ms mark,
    # each reading moves it on 1 ns. A stall spans [woke - late, woke]: its "woke" was a
    # second reading, after the counting (later still on a machine that stalls again)
    import json
    import subprocess

    from livescope.bus import _stalls

    wrapper = f"""
import sys, time
clock, slept, g = [0], [0], {{}}
def perf_counter_ns():
    clock[0] += 1
    return clock[0] - 1
def sleep(s):
    t = clock[0] + int(s * 1e9) + 3_000_000
    clock[0] = -(-t // 10_000_000) * 10_000_000
    slept[0] += 1
    if slept[0] == 5:
        g["stop"].set()
time.perf_counter_ns, time.sleep = perf_counter_ns, sleep
sys.argv = ["-c", "0.002", "[1000000, 2000000, 5000000]", "2000000", "100"]
exec({_stalls._PROBE!r}, g)
"""
    import os

    r, w = os.pipe()  # stdin kept open: the probe stops after its 5th sleep, not at EOF
    try:
        proc = subprocess.run(
            [sys.executable, "-c", wrapper], stdin=r, capture_output=True, text=True, timeout=60
        )
    finally:
        os.close(r)
        os.close(w)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["wakeups"] == 5
    assert len(out["stalls"]) == out["counts"][1] >= 1
    for woke, late in out["stalls"]:
        assert woke % 10_000_000 == 0, out["stalls"]  # the reading the sleep ended on
        assert late >= 3_000_000


@pytest.mark.parametrize("held", [pytest.param(True, id="held"), pytest.param(False, id="pyzmq")])
def test_a_message_of_no_part_is_refused_alike_held_or_not(
    held: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (the held send returned as if it had sent it: a decision that never left, unnoticed)
    import zmq

    from livescope.bus import _held

    if not held:
        monkeypatch.setattr(_held, "_lib", False)  # (as where libzmq is not found)
    elif sys.platform.startswith("linux"):
        assert _held.held_send_available()
    ctx = zmq.Context()
    a = ctx.socket(zmq.PAIR)
    a.setsockopt(zmq.LINGER, 0)
    try:
        with pytest.raises(ValueError, match="at least one part"):
            _held.send_held(a, [])
    finally:
        a.close(0)
        ctx.term()
