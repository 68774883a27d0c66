"""Second review of the stall monitor and the jitter benchmark: a monitor started again,
the jitter benchmark's default load on a machine this process has only a share of."""

from __future__ import annotations

import os

import pytest

from livescope.bus import STALL_MS, StallMonitor
from livescope.schema import LivescopeError


def test_a_monitor_started_again_does_not_answer_with_its_earlier_watch() -> None:
    # a monitor reused for a second run whose probe then died: its stop failed, and
    # `result` and `during` went on answering with the first run's figures and stalls
    mon = StallMonitor()
    with mon:
        pass
    assert mon.result is not None
    late = int(3 * STALL_MS * 1e6)
    mon.stalls = [(10_000_000, late)]  # a stall the first watch saw
    assert mon.during(0, 20_000_000)
    mon.start()
    proc = mon._proc
    assert proc is not None
    proc.kill()  # as the OS might kill it
    proc.wait()
    with pytest.raises(LivescopeError, match="probe process"):
        mon.stop()
    assert mon.result is None
    assert mon.stalls == []
    assert not mon.during(0, 20_000_000)


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs a CPU affinity of at least two cores",
)
def test_the_default_load_is_one_busy_process_per_core_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # in a container or a batch job given one core of a large machine, the benchmark
    # started a busy process for every core of the machine, all crowding that one core.
    # The turns' processes are stood in for (they take seconds to start); the
    # affinity is real: this thread's, set to one core and given back
    from livescope.bus import _jitter

    asked: list[int] = []

    def turn(
        priority: str | None, seconds: float, period_s: float, n_busy: int
    ) -> tuple[list[int], bool, float]:
        asked.append(n_busy)
        return [100_000] * 10, True, 1.0

    monkeypatch.setattr(_jitter, "_slice", turn)
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        out = _jitter.bench_jitter(seconds=1.0, turns=1)
    finally:
        os.sched_setaffinity(0, cores)
    assert asked == [1] * len(_jitter.JITTER_ROUNDS)
    assert out["rounds"]["bulk"]["busy_processes"] == 1
