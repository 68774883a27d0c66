"""A replay's what-if close-up is served the recorded frame only where it was taken at its place.

A close-up is named by its rule's firing count (``A1~mitosis-closeup-3``), not by its
cell: a replay with another threshold or engine gives cell B's close-up the name and
time of the recording's close-up of cell A. It was served A's frames (tens of µm away),
and the analysis took them for B's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import useq

from livescope.record import open_dataset, read_frames
from livescope.schema import AddEvents, DecisionAck, clock_ns, load_plan, load_profile
from livescope.scope import (
    ScopeAgent,
    demo_sequence,
    map_channels,
    run_replay_scope,
    run_simulated,
)

CLOSEUP = "~mitosis-closeup-1"


def _closeup(name: str, places: list[tuple[float, float]]) -> list[useq.MDAEvent]:
    """One DAPI frame per time point t = 0, 1, ..., at ``places[t]`` (stage µm)."""
    return [
        useq.MDAEvent(index={"t": t}, channel={"config": "DAPI"}, x_pos=x, y_pos=y, pos_name=name)
        for t, (x, y) in enumerate(places)
    ]  # fmt: skip


def _sender(
    name: str, places: list[tuple[float, float]], acks: list[DecisionAck]
) -> Callable[[ScopeAgent], None]:
    def on_ready(agent: ScopeAgent) -> None:
        decision = AddEvents(run_id=agent.run_id, events=_closeup(name, places))
        acks.append(agent._on_decision(decision, clock_ns()))

    return on_ready


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float, float]:
    """1 position × 3 time points, and the close-up of a cell at its centre (t = 0, 1)."""
    prof = load_profile("sim")
    prof = prof.replace(camera=prof.camera.replace(sensor_shape_px=(64, 64)).model_dump())
    seq = demo_sequence(prof, timepoints=3, positions=1, interval_s=1.0)
    p = seq.stage_positions[0]
    assert p.x is not None
    assert p.y is not None
    assert p.name
    out = tmp_path_factory.mktemp("rec") / "run"
    acks: list[DecisionAck] = []
    run_simulated(prof, seq, out, on_ready=_sender(p.name + CLOSEUP, [(p.x, p.y)] * 2, acks))
    assert acks[0].accepted
    assert acks[0].events_added == 2
    taken = [(f["x_um"], f["y_um"]) for f in read_frames(out) if f.get("added_by")]
    assert taken == [(p.x, p.y)] * 2  # the recording states where it took them
    return out, p.name + CLOSEUP, p.x, p.y


@pytest.mark.parametrize(
    ("offsets", "xy_recorded", "served", "note"),
    [
        pytest.param([(0, 0), (0, 0)], True, 2, "", id="same-place"),
        pytest.param([(2, -1), (1, 2)], True, 2, "", id="same-cell-found-by-another-engine"),
        pytest.param([(40, 0), (0, 40)], True, 0, " (2 more taken 40 µm away: not served)",
                     id="another-cell"),
        pytest.param([(0, 0), (40, 0)], True, 1, " (1 more taken 40 µm away: not served)",
                     id="one-of-two-elsewhere"),
        pytest.param([(30, 0), (0, -45)], True, 0, " (2 more taken 30 to 45 µm away: not served)",
                     id="elsewhere-at-two-distances"),
        pytest.param([(40, 0), (0, 40)], False, 2, "", id="recording-without-xy-as-before"),
    ],
)  # fmt: skip
def test_a_what_if_closeup_is_served_only_frames_taken_at_its_place(
    recording: tuple[Path, str, float, float],
    tmp_path: Path,
    offsets: list[tuple[float, float]],
    xy_recorded: bool,
    served: int,
    note: str,
) -> None:
    rec, name, x0, y0 = recording
    prof = load_profile("sim")
    acks: list[DecisionAck] = []
    places = [(x0 + dx, y0 + dy) for dx, dy in offsets]
    with open_dataset(rec) as ds:
        assert any(f.key.position == name for f in ds.frames)
        if not xy_recorded:  # (a format that does not record the stage place)
            ds.frames = [dataclasses.replace(f, x_um=None, y_um=None) for f in ds.frames]
        summary = run_replay_scope(
            ds, prof, load_plan(rec / "plan.yaml"), tmp_path / "replay",
            channels=map_channels(ds, prof), speed=None, on_ready=_sender(name, places, acks),
        )  # fmt: skip
    (ack,) = acks
    assert ack.accepted
    assert ack.reason == (
        f"what-if: the recording holds {served} of 2 requested frame(s){note}; {served} served"
    )
    assert ack.events_added == served
    assert summary["what_if_served"] == served
    added = [f for f in read_frames(tmp_path / "replay") if f.get("added_by")]
    assert len(added) == served
    assert summary["frames_written"] == 6 + served  # every planned frame, as before
