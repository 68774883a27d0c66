"""A new interval asked for while a time point is in progress: each test a bug found and fixed."""

from __future__ import annotations

import logging
import time

import pytest
import useq

from livescope.scope import EventFeed, LivescopeEngine, SimulatedMicroscope


def _lapse() -> useq.MDASequence:
    """Two places, four time points 60 s apart."""
    return useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A"),
                         useq.Position(x=300, y=0, z=0, name="B")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=60, loops=4),
    )  # fmt: skip


def _order(events: list[useq.MDAEvent]) -> list[tuple[str, int]]:
    return [(str(e.pos_name), e.index["t"]) for e in events]


def _changed_during_t0(
    sim: SimulatedMicroscope, interval_s: float | None
) -> tuple[EventFeed, float, list[useq.MDAEvent]]:
    """Change the interval ``interval_s`` (None: twice the time since t=0 began) during t=0.

    Returns the feed, the plan time the change came at (t=0 began at 0 s), and
    the events after it. The feed's clock is paused for the change, as a
    runner's pause does: the change comes at a known plan time.
    """
    feed = EventFeed(_lapse(), LivescopeEngine(sim.core, sim.profile, sim=sim), 1e6)
    events = iter(feed)
    assert _order([next(events)]) == [("A", 0)]  # t=0 begins, planned at 0 s
    time.sleep(0.001)  # at least 1000 s of plan time at this clock scale
    feed.pause_toggled(True)
    try:
        now = feed.now()
        assert feed.change_interval(2 * now if interval_s is None else interval_s) == 6
    finally:
        feed.pause_toggled(False)
    return feed, now, list(events)


@pytest.mark.parametrize("late", [pytest.param(True, id="late"), pytest.param(False, id="in-time")])
def test_a_new_interval_asked_for_late_in_a_time_point_starts_the_next_one_now(
    sim: SimulatedMicroscope, late: bool
) -> None:
    # 10 s asked for over 1000 s into t=0 made t=1..3 due at 10, 20, 30 s: all overdue,
    # they ran back to back, not 10 s apart. In time (an interval longer than t=0 has
    # run), the new interval still counts from when t=0 began.
    _, now, rest = _changed_during_t0(sim, 10.0 if late else None)
    assert now >= 1000.0
    interval = 10.0 if late else 2 * now
    assert _order(rest) == [("B", 0), *((p, t) for t in (1, 2, 3) for p in "AB")]
    first = now if late else interval  # (t=0 began at 0 s)
    times = [e.metadata["sample_time_s"] for e in rest[1:]]
    assert times == [first + k * interval for k in (0, 0, 1, 1, 2, 2)]


def test_a_new_interval_logs_when_the_next_time_point_is_due(
    sim: SimulatedMicroscope, caplog: pytest.LogCaptureFixture
) -> None:
    # the answer says how many events were re-timed, never when the next time point comes
    with caplog.at_level(logging.INFO, logger="livescope"):
        _, now, _ = _changed_during_t0(sim, 10.0)
    logged = [r.getMessage() for r in caplog.records if "new interval" in r.getMessage()]
    assert logged == [f"new interval 10 s: time point t=1 is due at {now:.3f} s of plan time "
                      f"(now {now:.3f} s)"]  # fmt: skip
