"""Added time-lapses' timing; acquire's channels, light-dose refusals (reviewer r_actions).

A close-up time-lapse asked for during a long plan time point waited for it, and
then its time points, all overdue, were handed out in one batch: five frames
meant ``interval_s`` = 120 s apart came ~30 s of plan time apart (on a real
camera, milliseconds), faster than the spacing the guardrails passed. An
``acquire`` listing a channel twice loaded, and every firing was then refused
by the agent; a light-dose refusal printed a total that read as within its limit.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
import useq

import livescope.scope._feed as feed_module
from livescope.policy import Guardrails
from livescope.policy._actions import Acquire
from livescope.policy._engine import rules_for_profile
from livescope.record import read_frames
from livescope.schema import AddEvents, LivescopeError, clock_ns, load_profile
from livescope.scope import EventFeed, LivescopeEngine, ScopeAgent, SimulatedMicroscope
from livescope.scope._fanout import position_name

# ------------------------------------------------------------ a late close-up time-lapse


class _Clock:
    """A stand-in for the feed's `time` module and waits: plan time moves only as the feed
    waits (by what it waits) or as the test says, so hand-out times are exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def wait(self, timeout: float | None = None) -> bool:  # (the feed's `_changed.wait`)
        # (at least a µs: a wait to the float just short of a due time never got there)
        self.now += 0.25 if timeout is None else max(timeout, 1e-6)
        return False

    def notify_all(self) -> None:
        pass


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(feed_module, "time", types.SimpleNamespace(perf_counter=c.perf_counter))
    return c


def _feed(sim: SimulatedMicroscope, clock: _Clock) -> EventFeed:
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0.0, y=0.0, z=0.0, name="A")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=3000.0, loops=2),
    )
    engine = LivescopeEngine(sim.core, sim.profile)  # (no time scaling: times as queued)
    engine.use_hardware_sequencing = False
    feed = EventFeed(seq, engine, 1.0)
    feed._changed = clock  # type: ignore[assignment]  # (its waits move the clock)
    return feed


def _time_lapse(
    decision: str, asked_s: float, loops: int, interval_s: float, channels: tuple[str, ...]
) -> list[useq.MDAEvent]:
    """A close-up time-lapse as `prepare_added` times it: due from when it was asked for."""
    out = []
    for t in range(loops):
        due = asked_s + t * interval_s
        out += [
            useq.MDAEvent(
                index={"t": t}, pos_name=f"A~{decision}", x_pos=10.0, y_pos=0.0,
                channel={"config": ch}, exposure=5.0, min_start_time=due,
                metadata={"added_by": decision, "explicit_xy": True, "sample_time_s": due},
            )
            for ch in channels
        ]  # fmt: skip
    return out


def test_a_closeup_time_lapse_that_starts_late_keeps_its_interval_from_when_it_began(
    sim: SimulatedMicroscope, clock: _Clock
) -> None:
    feed = _feed(sim, clock)
    events = iter(feed)
    assert next(events).index["t"] == 0  # the plan's time point t=0 begins at 0 s
    # asked for at 10 s and 500 s while that time point runs; it ends at 1000 s
    feed.add(_time_lapse("d1", 10.0, loops=5, interval_s=120.0, channels=("DAPI", "Phase")))
    feed.add(_time_lapse("d2", 500.0, loops=3, interval_s=200.0, channels=("DAPI",)))
    clock.now = 1000.0
    handed: list[tuple[str, int, str, float, float, float]] = []
    for ev in events:
        name = position_name(ev)
        handed.append((name, ev.index["t"], ev.channel.config if ev.channel else "",
                       feed.now(), float(ev.min_start_time or 0.0),
                       ev.metadata.get("sample_time_s", -1.0)))  # fmt: skip
    order = [(name, t) for name, t, *_ in handed]
    # each decision's first time point at once, its later ones as far apart as asked from
    # then (d1 was 990 s late, d2 500 s): d1 at 1000 + 120 k, d2 at 1000 + 200 k
    assert order == [
        ("A~d1", 0), ("A~d1", 0), ("A~d2", 0),
        ("A~d1", 1), ("A~d1", 1), ("A~d2", 1), ("A~d1", 2), ("A~d1", 2),
        ("A~d1", 3), ("A~d1", 3), ("A~d2", 2), ("A~d1", 4), ("A~d1", 4),
        ("A", 1),  # the plan's next time point, when it was planned
    ]  # fmt: skip
    lead = feed.lead_s
    for name, step in (("A~d1", 120.0), ("A~d2", 200.0)):
        got = [h for h in handed if h[0] == name]
        firsts: dict[int, float] = {}  # each time point's first event: when handed out
        for _, t, _, now, _, _ in got:
            firsts.setdefault(t, now)
        when = [firsts[t] for t in sorted(firsts)]
        assert when[0] == pytest.approx(1000.0)
        # handed out within the lead of when each is now due (the bug: all at 1000 s)
        assert when[1:] == pytest.approx(
            [1000.0 + k * step - lead for k in range(1, len(when))], abs=1e-5
        )
        # and given that time, as the runner waits on it and the frame records it
        for _, t, _, _, start, sample in got:
            if t:
                assert start == sample == pytest.approx(1000.0 + t * step)
    assert handed[-1][3] == pytest.approx(3000.0 - lead)  # (the plan's own timing unchanged)
    assert feed.counts["added_taken"] == 13
    assert feed.counts["left"] == 0


def test_a_closeup_time_lapse_on_time_is_not_moved(sim: SimulatedMicroscope, clock: _Clock) -> None:
    feed = _feed(sim, clock)
    events = iter(feed)
    assert next(events).index["t"] == 0
    feed.add(_time_lapse("d1", 10.0, loops=3, interval_s=120.0, channels=("DAPI",)))
    got = [(ev.index["t"], feed.now(), ev.min_start_time) for ev in events if ev.pos_name != "A"]
    assert [t for t, _, _ in got] == [0, 1, 2]
    # each handed out within the lead of when it was due, and given that time
    assert [now for _, now, _ in got] == pytest.approx(
        [10.0 + 120 * t - feed.lead_s for t in range(3)], abs=1e-5
    )
    assert [start for _, _, start in got] == [10.0 + 120 * t for t in range(3)]


def test_a_closeup_time_lapse_asked_for_during_a_long_time_point_is_timed_from_its_start(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # the reviewer's run: one time point of 121 planes (~900 s of plan time on the simulator;
    # with 81, ~400-600 s, a quick moment of the host ended it before 410 s);
    # a close-up time-lapse 200 s apart from 10 s in waits for it: its frames, all overdue
    # by then, came back to back
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0.0, y=0.0, z=0.0, name="A")],
        channels=[useq.Channel(config="Phase", exposure=1.0)],
        z_plan=useq.ZRangeAround(range=120, step=1),
    )
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path / "run", sim=sim, bus="off")
    closeup = AddEvents(run_id=agent.run_id, delay_s=10.0, events=[
        useq.MDAEvent(index={"t": t}, pos_name="A~closeup-1", x_pos=40.0, y_pos=0.0, z_pos=0.0,
                      channel={"config": "DAPI"}, exposure=20.0, min_start_time=200.0 * t)
        for t in range(3)])  # fmt: skip
    ack = agent._on_decision(closeup, clock_ns())
    assert ack.accepted, ack.reason
    summary = agent.run()
    assert summary["ok"]
    frames = read_frames(agent.run_dir)
    accel = sim.time_acceleration

    def runner_s(f: Any) -> float:  # when the runner took it, plan seconds
        return float(f["runner_time_ms"]) / 1000.0 * accel

    plan_end = max(runner_s(f) for f in frames if f["position"] == "A")
    cu = sorted(
        (f for f in frames if f["position"] == "A~closeup-1"), key=lambda f: f["index"]["t"]
    )
    taken, due = [runner_s(f) for f in cu], [float(f["sample_time_s"] or 0.0) for f in cu]
    # it waited for the time point in progress, which ended after its last time point was due
    assert len(cu) == 3
    assert plan_end > 410.0
    assert taken[0] > plan_end
    # the later ones 200 s apart from when the first was taken, after that time point (they
    # were due at 210 and 410 s: overdue, taken back to back ~30-90 s of plan time apart)
    assert due[1] - 200.0 > plan_end - 5.0, (plan_end, due)
    assert due[2] - due[1] == pytest.approx(200.0)
    # and the runner waited for each (on the simulator the frame may come later still:
    # the sample is simulated up to its time first)
    assert all(t >= d - 5.0 for t, d in zip(taken[1:], due[1:], strict=True)), (taken, due)


# ------------------------------------------------------------ acquire, light-dose messages


def test_an_acquire_that_lists_a_channel_twice_is_refused_when_loaded() -> None:
    # it loaded, and the agent refused every firing ("already planned or acquired"), each
    # still counted as fired
    with pytest.raises(ValueError, match=r"acquire\.channels lists 'DAPI' more than once"):
        Acquire(channels=("DAPI", "Phase", "DAPI"))
    acquire = {"channels": ["DAPI", "DAPI"], "exposure_ms": {"DAPI": 30}}
    spec = [{"name": "dup", "when": {"mitosis": {"p_min": 0.5}}, "do": {"acquire": acquire}}]
    with pytest.raises(LivescopeError, match=r"\(dup\): acquire\.channels lists 'DAPI' more"):
        rules_for_profile(spec, load_profile("sim"))
    assert Acquire(channels=("DAPI", "Phase")).channels == ("DAPI", "Phase")


def _guardrails(**light_dose: Any) -> Guardrails:
    p = load_profile("sim")
    prof = p.replace(light_dose={**p.light_dose.model_dump(), **light_dose})
    plan = useq.MDASequence(
        stage_positions=[useq.Position(x=0.0, y=0.0, z=0.0, name="A")],
        channels=[useq.Channel(config="DAPI", exposure=100.0)],
        time_plan=useq.TIntervalLoops(interval=600.0, loops=5),
    )  # 0.5 s of DAPI at A
    return Guardrails(prof, plan)


def _dapi(exposure_ms: float, n: int = 1, t0: int = 100) -> AddEvents:
    return AddEvents(run_id="r1", events=[
        useq.MDAEvent(index={"t": t0 + i}, pos_name="A", channel={"config": "DAPI"},
                      exposure=exposure_ms) for i in range(n)])  # fmt: skip


@pytest.mark.parametrize(
    ("field", "where"),
    [
        ("max_fluorescence_s_per_channel", "A/DAPI"),
        ("max_fluorescence_s_per_position", "position A"),
    ],
)
def test_a_light_dose_refusal_shows_the_total_past_its_limit(field: str, where: str) -> None:
    # "would get 1.00 s of fluorescence; ... = 1 s" read as within the limit
    g = _guardrails(**{field: 1.0})
    g.commit(_dapi(100.0, n=5), 0.0)  # to 1 s exactly
    assert g.check(_dapi(1.0, t0=200), 0.0) == (
        f"light dose: {where} would get 1.001 s of fluorescence; light_dose.{field} = 1 s"
    )
    # (an excess two decimals show stays as it was)
    assert g.check(_dapi(100.0, t0=200), 0.0) == (
        f"light dose: {where} would get 1.10 s of fluorescence; light_dose.{field} = 1 s"
    )
