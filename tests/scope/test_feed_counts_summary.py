"""The run summary says what became of the plan's events and those decisions added (``events``).

`EventFeed.counts` was kept by the feed but put in no summary: a run that stopped a
position, or ended with events still queued, did not say how many.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import useq

from livescope.record import open_dataset
from livescope.schema import (
    AddEvents,
    DecisionAck,
    HardwareProfile,
    StopPosition,
    clock_ns,
    load_plan,
)
from livescope.scope import (
    PycromanagerAgent,
    ScopeAgent,
    SimulatedMicroscope,
    demo_sequence,
    map_channels,
    run_replay_scope,
    run_simulated,
)

from .test_pycromanager import profile as profile
from .test_pycromanager import scope as scope


def _plan(loops: int) -> useq.MDASequence:
    # (120 s apart: 0.2 s of wall time on the simulator, time for the stop to find B's
    # later time points still queued)
    return useq.MDASequence(
        stage_positions=[useq.Position(x=0.0, y=0.0, z=0.0, name="A"),
                         useq.Position(x=600.0, y=0.0, z=0.0, name="B")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=120.0, loops=loops),
    )  # fmt: skip


@pytest.mark.parametrize(
    "agent_type",
    [
        pytest.param(ScopeAgent, id="pymmcore-plus"),
        pytest.param(PycromanagerAgent, id="pycromanager"),
    ],
)
def test_the_summary_counts_the_events_taken_stopped_and_added(
    agent_type: type[ScopeAgent], scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    seq = _plan(loops=5)
    run = tmp_path / "run"
    agent = agent_type(scope.core, scope.profile, seq, run, sim=scope, bus="off")
    acks: list[DecisionAck] = []

    def at_the_first_frame(written: int) -> None:  # (the writer thread)
        if acks:
            return
        # a close-up of A, due now, and B stopped: as decisions the decision server passes on
        closeup = [useq.MDAEvent(index={"t": 100, "p": 0}, channel={"config": "Phase"})]
        acks.append(agent._on_decision(AddEvents(run_id=agent.run_id, events=closeup),
                                       clock_ns()))  # fmt: skip
        acks.append(agent._on_decision(StopPosition(run_id=agent.run_id, position="B"),
                                       clock_ns()))  # fmt: skip

    summary = agent.run(at_the_first_frame)
    assert [a.accepted for a in acks] == [True, True], acks
    stopped = int(acks[1].reason.split()[0])  # "<n> pending event(s) dropped"
    events = summary["events"]
    assert events["planned"] == len(list(seq))
    assert events["added"] == 1
    assert events["planned_stopped"] == stopped > 0
    assert events["added_stopped"] == 0  # (A's close-up: A was not stopped)
    # every frame acquired was an event handed over; nothing was left queued at the end
    assert events["planned_taken"] + events["added_taken"] == summary["frames_acquired"]
    assert events["added_taken"] == 1
    assert events["left"] == 0
    assert events["planned_taken"] + events["planned_stopped"] + events["left"] == len(list(seq))
    # and summary.json says the same
    assert json.loads((run / "summary.json").read_text(encoding="utf-8"))["events"] == events


def test_a_replays_summary_counts_the_frames_its_recording_lacks_as_left(
    profile: HardwareProfile, tmp_path: Path
) -> None:
    recorded = tmp_path / "recorded"
    run_simulated(profile, demo_sequence(profile, timepoints=2, positions=1, interval_s=1.0),
                  recorded)  # fmt: skip
    longer = load_plan(recorded / "plan.yaml").replace(
        time_plan=useq.TIntervalLoops(interval=1.0, loops=3)
    )
    with open_dataset(recorded) as ds:
        summary = run_replay_scope(
            ds, profile, longer, tmp_path / "replayed", channels=map_channels(ds, profile)
        )
    events = summary["events"]
    assert events["planned"] == len(list(longer))
    assert events["planned_taken"] == summary["frames_served"] == summary["frames_acquired"]
    assert events["left"] == summary["frames_not_recorded"] > 0
    assert events["planned_stopped"] == events["added"] == 0
