"""Stops during a hardware-timed burst: what is acquired, and what the summary counts.

An interval-0 time-lapse of one place runs as one burst, its time points handed to
the runner together (each counted taken). A `StopRun` that cut the burst short left
the frames it cut off counted taken (60 taken, 4 acquired, none left); a
`StopPosition` of the burst's position dropped nothing ("0 pending event(s)
dropped") and every frame was acquired at the stopped position.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import useq

from livescope.schema import DecisionAck, StopPosition, StopRun, clock_ns
from livescope.scope import LivescopeEngine, ScopeAgent, SimulatedMicroscope

LOOPS = 60


def _burst_plan() -> useq.MDASequence:
    return useq.MDASequence(
        stage_positions=[useq.Position(x=0.0, y=0.0, z=0.0, name="A")],
        channels=[useq.Channel(config="Phase", exposure=20.0)],
        time_plan=useq.TIntervalLoops(interval=0, loops=LOOPS),
        axis_order="tpc",
    )


def _frames(run: Path) -> list[dict[str, Any]]:
    text = (run / "frames.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _run_stopped_after(
    sim: SimulatedMicroscope, run: Path, stop: str, after: int = 3
) -> tuple[dict[str, Any], DecisionAck]:
    """Run the burst plan; apply ``stop`` as frame ``after`` is ready (between two frames)."""
    agent = ScopeAgent(sim.core, sim.profile, _burst_plan(), run, sim=sim, bus="off")
    acks: list[DecisionAck] = []
    ready = [0]

    def on_frame(*_: Any) -> None:  # (the runner's thread: the burst waits meanwhile)
        ready[0] += 1
        if ready[0] != after:
            return
        decision = (
            StopRun(run_id=agent.run_id)
            if stop == "run"
            else StopPosition(run_id=agent.run_id, position="A")
        )
        acks.append(agent._on_decision(decision, clock_ns()))

    sim.core.mda.events.frameReady.connect(on_frame)
    try:
        summary = agent.run()
    finally:
        sim.core.mda.events.frameReady.disconnect(on_frame)
    assert [a.accepted for a in acks] == [True], acks
    return summary, acks[0]


def test_a_stop_of_the_run_counts_a_bursts_frames_it_cut_off_as_left(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    summary, _ = _run_stopped_after(sim, run, "run")
    frames = _frames(run)
    assert frames
    assert all(f["hardware_triggered"] for f in frames)  # (it ran as a burst)
    assert len(frames) == 3  # the stop cut the burst short after the frame in hand
    events = summary["events"]
    # what was taken is what was acquired; the rest never was, and is left
    assert events["planned_taken"] == summary["frames_acquired"] == len(frames)
    assert events["left"] == LOOPS - len(frames)
    assert events["planned_stopped"] == 0
    assert summary["frames_failed"] == 0


def test_a_stop_of_its_position_ends_a_running_burst(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    summary, ack = _run_stopped_after(sim, run, "position")
    frames = _frames(run)
    assert frames
    assert all(f["hardware_triggered"] for f in frames)
    assert len(frames) == 3, "frames acquired after the stop of their position"
    stopped = int(ack.reason.split()[0])  # "<n> pending event(s) dropped"
    events = summary["events"]
    assert events["planned_stopped"] == stopped == LOOPS - len(frames)
    assert events["planned_taken"] == summary["frames_acquired"] == len(frames)
    assert events["left"] == 0
    assert summary["frames_failed"] == 0
    assert summary["ok"]


def _burst(engine: LivescopeEngine, n: int) -> useq.MDAEvent:
    events = [
        useq.MDAEvent(index={"t": t}, channel={"config": "Phase"}, exposure=5.0) for t in range(n)
    ]
    (burst,) = engine.event_iterator(events)
    assert len(getattr(burst, "events", ())) == n
    return burst


def test_a_burst_stopped_before_it_began_is_not_begun(sim: SimulatedMicroscope) -> None:
    engine = LivescopeEngine(sim.core, sim.profile)
    engine.use_hardware_sequencing = True
    burst = _burst(engine, 5)
    engine.burst_handed(burst)
    cut_off = engine.end_burst(lambda e: True)
    assert cut_off == list(burst.events)  # type: ignore[attr-defined]
    assert list(engine.exec_event(burst)) == []
    assert not sim.core.isSequenceRunning()
    assert engine.failed_events == []
    assert engine.cut_off_events() == []  # (the stop counted them: not left as well)
    # and one that a stop does not drop the end of goes on
    burst = _burst(engine, 3)
    engine.burst_handed(burst)
    assert engine.end_burst(lambda e: e.index["t"] == 0) == []


def test_a_burst_the_run_ended_before_it_began_is_left(sim: SimulatedMicroscope) -> None:
    engine = LivescopeEngine(sim.core, sim.profile)
    engine.use_hardware_sequencing = True
    burst = _burst(engine, 4)
    engine.burst_handed(burst)  # (the runner, cancelled, never runs it)
    assert engine.cut_off_events() == list(burst.events)  # type: ignore[attr-defined]
    assert engine.cut_off_events() == []
