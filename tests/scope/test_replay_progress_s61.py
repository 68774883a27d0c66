"""A gated replay serves decisions' frames in time order, and its progress counts them.

Found by a review: the gate held each time point only once the feed had taken it
off its queue, so a close-up that the worker's decisions on an earlier time point
asked for meanwhile was timed by that time point's clock and served after it (a
replay of a demo run served its close-ups after the last time point); and the
progress total counted the planned frames only, so the bar was full long before
the end (the close-ups were written after "complete").
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest
import useq

from livescope.record import open_dataset, read_frames
from livescope.schema import AddEvents, DecisionAck, clock_ns, load_plan, load_profile
from livescope.scope import (
    ReplayGate,
    ScopeAgent,
    demo_sequence,
    map_channels,
    run_replay_scope,
    run_simulated,
)
from livescope.scope import _replay as replay_module

CLOSEUP = "~mitosis-closeup-1"
CLOSEUP_DELAY_S = 0.5
"""When the close-up is due after its decision (plan seconds; the time points are 1 s apart)."""


Closeup = tuple[str, float, float]
"""Where a close-up is taken: its position's name, x and y (stage µm)."""


def _decide_closeup(agent: ScopeAgent, closeup: Closeup, start_s: float) -> DecisionAck:
    """Send the agent a close-up's decision: one DAPI frame, ``start_s`` after it is applied."""
    name, x, y = closeup
    event = useq.MDAEvent(
        index={"t": 0}, channel={"config": "DAPI"}, x_pos=x, y_pos=y, pos_name=name,
        min_start_time=start_s,
    )  # fmt: skip
    return agent._on_decision(AddEvents(run_id=agent.run_id, events=[event]), clock_ns())


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Closeup]:
    """1 position × 4 time points 1 s apart (phase + DAPI), and a close-up at 1.5 s.

    Returns the run folder and where the close-up was taken.
    """
    prof = load_profile("sim")
    prof = prof.replace(camera=prof.camera.replace(sensor_shape_px=(64, 64)).model_dump())
    seq = demo_sequence(prof, timepoints=4, positions=1, interval_s=1.0)
    p = seq.stage_positions[0]
    assert p.x is not None
    assert p.y is not None
    assert p.name
    closeup = (p.name + CLOSEUP, p.x, p.y)
    acks: list[DecisionAck] = []

    def on_ready(agent: ScopeAgent) -> None:  # (applied at 0 s: as one applied at 1 s)
        acks.append(_decide_closeup(agent, closeup, 1.0 + CLOSEUP_DELAY_S))

    out = tmp_path_factory.mktemp("rec") / "run"
    run_simulated(prof, seq, out, on_ready=on_ready)
    assert acks[0].accepted
    times = sorted(f["sample_time_s"] for f in read_frames(out))
    assert times == [0.0, 0.0, 1.0, 1.0, 1.5, 2.0, 2.0, 3.0, 3.0]  # the close-up between t=1, 2
    return out, closeup


def _worker_at_the_gate(closeup: Closeup, agents: list[ScopeAgent]) -> type[ReplayGate]:
    """A gate whose pipeline worker is as slow as the gate lets it be.

    It analyses a field only once the replay waits for it: its decisions are
    answered (on the first field, t = 0: the close-up, due `CLOSEUP_DELAY_S`
    later), then the field is logged (``results/latency.jsonl``), as the worker does.
    """

    class WorkerAtTheGate(ReplayGate):
        def wait_for(self, fields: Iterable[tuple[str, int]]) -> bool:
            want = set(fields)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                for pos, t in sorted(want - self.done):
                    if t == 0:
                        (agent,) = agents
                        ack = _decide_closeup(agent, closeup, CLOSEUP_DELAY_S)
                        assert ack.accepted, ack.reason
                    fh.write(json.dumps({"position": pos, "t": t, "live": True}) + "\n")
            return super().wait_for(want)

    return WorkerAtTheGate


@pytest.fixture(scope="module")
def gated_replay(
    recording: tuple[Path, Closeup], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict, list[tuple[int, int]]]:
    """Replay the recording at full speed, gated; return its folder, summary and progress calls."""
    rec, closeup = recording
    prof = load_profile("sim")
    agents: list[ScopeAgent] = []
    calls: list[tuple[int, int]] = []
    out = tmp_path_factory.mktemp("replay") / "run"
    with pytest.MonkeyPatch.context() as mp, open_dataset(rec) as ds:
        mp.setattr(replay_module, "ReplayGate", _worker_at_the_gate(closeup, agents))
        summary = run_replay_scope(
            ds, prof, load_plan(rec / "plan.yaml"), out, channels=map_channels(ds, prof),
            speed=None, gate=True, gate_timeout_s=5.0, on_ready=agents.append,
            progress=lambda done, total: calls.append((done, total)),
        )  # fmt: skip
    assert summary["gate_timeouts"] == 0
    assert summary["what_if_served"] == 1
    return out, summary, calls


def test_a_closeup_decided_while_the_gate_waits_is_served_before_the_next_time_point(
    gated_replay: tuple[Path, dict, list[tuple[int, int]]],
) -> None:
    # the worker decides on (p, t=0) while the gate holds t = 2: the close-up (due
    # 0.5 s after the decision, at 1.5 s of the recording's clock) comes before t = 2,
    # as in the recording; it came after, timed by t = 2's clock (2.5 s)
    out, _, _ = gated_replay
    frames = read_frames(out)
    assert [f["sample_time_s"] for f in frames] == [0.0, 0.0, 1.0, 1.0, 1.5, 2.0, 2.0, 3.0, 3.0]
    assert [bool(f.get("added_by")) for f in frames].index(True) == 4


def test_the_progress_total_grows_with_the_frames_decisions_add(
    gated_replay: tuple[Path, dict, list[tuple[int, int]]],
) -> None:
    # 8 planned frames and the close-up's: the bar read 9/8 (clamped to full) at the end
    _, summary, calls = gated_replay
    assert summary["frames_written"] == 9
    assert all(done <= total for done, total in calls), calls
    assert calls[-1] == (9, 9)
    # the plan's 8 frames, then 9 once the decision added its close-up (the writer may
    # report its first frame after that: which comes first is the threads' timing)
    totals = [total for _, total in calls]
    assert totals == sorted(totals), calls
    assert set(totals) <= {8, 9}, calls
