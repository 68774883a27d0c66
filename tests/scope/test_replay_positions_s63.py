"""A replay's frames carry the stage place the recording took them at, not the plan's.

The replay's stage follows the plan (it applies no live moves), and each served frame
was logged at the replay stage's place: a recording taken after a live recentre
(frames at (-110, -156) µm) replayed at the plan's (0, 0), and an OME-TIFF whose
position moved between time points at its first frame's place. The worker aims
close-ups and recentrings from that place: a what-if close-up of the recorded cell
was aimed ~190 µm off, and the recording's close-up was then not served ("taken
N µm away").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import useq

from livescope.pipeline._observe import roi_offset_um
from livescope.pipeline._replay import fit_to_recording
from livescope.policy import Observation
from livescope.record import open_dataset, read_frames
from livescope.schema import (
    AddEvents,
    DecisionAck,
    HardwareProfile,
    Move,
    clock_ns,
    load_plan,
    load_profile,
)
from livescope.scope import (
    ScopeAgent,
    demo_sequence,
    map_channels,
    replay_sequence,
    run_replay_scope,
    run_simulated,
)

Recording = tuple[Path, str, tuple[float, float]]
"""The recording's folder, its position's name and the place the live run moved it to."""

MOVED = (150.0, -90.0)
"""How far (stage x/y, µm) the live run moved its position from the plan's place."""
CELL = (40.0, 21.0)
"""The pixel (row, column) of a 64² frame a close-up is aimed at (off the centre)."""


def _places(run: Path, added: bool = False) -> dict[tuple[str, int, str], tuple[Any, ...]]:
    """(position, t, channel) → (x, y, z) µm logged for each frame of ``run`` (planned or added)."""
    out = {}
    for f in read_frames(run):
        if bool(f.get("added_by")) == added:
            key = (f["position"], int(f["index"].get("t", 0)), f["channel"])
            out[key] = (f["x_um"], f["y_um"], f["z_um"])
    return out


def test_an_ome_tiff_whose_position_moves_replays_each_frame_at_its_recorded_place(
    tmp_path: Path,
) -> None:
    path = tmp_path / "moving.ome.tif"
    xyz = [(100.0 + 7.5 * t, 200.0 - 4.0 * t, 10.0 + 0.5 * t) for t in range(3)]
    data = np.random.default_rng(0).integers(0, 4000, (3, 32, 32), dtype=np.uint16)
    meta = {"axes": "TYX", "Name": "Pos0", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5,
            "Channel": {"Name": ["DAPI"]},
            "Plane": {"DeltaT": [60.0 * t for t in range(3)],
                      "PositionX": [p[0] for p in xyz], "PositionY": [p[1] for p in xyz],
                      "PositionZ": [p[2] for p in xyz]}}  # fmt: skip
    tifffile.imwrite(path, data, ome=True, metadata=meta)
    with open_dataset(path) as ds:
        recorded = {(f.key.position, f.key.t, f.key.channel): (f.x_um, f.y_um, f.z_um)
                    for f in ds.frames}  # fmt: skip
        assert sorted(recorded.values()) == xyz  # (read as written)
        prof = fit_to_recording(load_profile("replay"), ds)
        channels = map_channels(ds, prof)
        summary = run_replay_scope(ds, prof, replay_sequence(ds, prof, channels),
                                   tmp_path / "replay", channels=channels, speed=None)  # fmt: skip
    assert summary["frames_served"] == 3
    assert _places(tmp_path / "replay") == recorded


@pytest.fixture(scope="module")
def moved_recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """1 position × 2 time points, moved by a live decision off the plan's place, and a
    DAPI close-up of the cell at `CELL` of its frames, aimed from the moved place."""
    prof = load_profile("sim")
    prof = prof.replace(camera=prof.camera.replace(sensor_shape_px=(64, 64)).model_dump())
    seq = demo_sequence(prof, timepoints=2, positions=1, interval_s=1.0)
    p = seq.stage_positions[0]
    assert p.x is not None
    assert p.y is not None
    assert p.name
    name, moved = p.name, (p.x + MOVED[0], p.y + MOVED[1])
    aim = _aim({"x_um": moved[0], "y_um": moved[1], "z_um": p.z, "shape": [64, 64],
                "pixel_size_um": prof.objective.pixel_size_um})  # fmt: skip
    acks: list[DecisionAck] = []

    def on_ready(agent: ScopeAgent) -> None:
        # a recentre decided before the plan's first field: every field is taken there
        acks.append(agent._on_decision(
            Move(run_id=agent.run_id, position=name, x_um=moved[0], y_um=moved[1]), clock_ns()
        ))  # fmt: skip
        acks.append(agent._on_decision(_closeup(agent.run_id, name, aim), clock_ns()))

    out = tmp_path_factory.mktemp("rec") / "run"
    run_simulated(prof, seq, out, on_ready=on_ready)
    assert [a.accepted for a in acks] == [True, True], [a.reason for a in acks]
    planned = _places(out)
    assert {xyz[:2] for xyz in planned.values()} == {moved}  # the live run took them there
    assert list(_places(out, added=True).values()) == [(*aim, p.z)]
    plan = load_plan(out / "plan.yaml", recorded=True).stage_positions[0]
    assert (plan.x, plan.y) == (p.x, p.y)  # the plan the replay follows: not moved
    return out, name, moved


def _aim(header: Mapping[str, Any]) -> tuple[float, float]:
    """Where the worker aims a close-up of the cell at `CELL` of a frame (its header)."""
    px = float(header["pixel_size_um"])
    h = dict(header)
    shape = (int(header["shape"][0]), int(header["shape"][1]))
    obs = Observation(run_id="", seq=0, position="", t=0, sample_time_s=0.0, pixel_size_um=px,
                      shape=shape, stage_um=(header["x_um"], header["y_um"], header["z_um"]),
                      roi_offset_um=roi_offset_um(h, px))  # fmt: skip
    return obs.aim_xy(*CELL)


def _closeup(run_id: str, position: str, aim: tuple[float, float]) -> AddEvents:
    event = useq.MDAEvent(index={"t": 0}, channel={"config": "DAPI"}, x_pos=aim[0],
                          y_pos=aim[1], pos_name=f"{position}~closeup-1")  # fmt: skip
    return AddEvents(run_id=run_id, events=[event])


def _replay(
    rec: Path, out: Path, on_ready: Callable[[ScopeAgent], None] | None = None
) -> dict[str, Any]:
    with open_dataset(rec) as ds:
        prof: HardwareProfile = fit_to_recording(load_profile(rec / "profile.yaml"), ds)
        return run_replay_scope(ds, prof, load_plan(rec / "plan.yaml", recorded=True), out,
                                channels=map_channels(ds, prof), speed=None,
                                on_ready=on_ready)  # fmt: skip


def test_a_recording_moved_live_replays_its_frames_where_they_were_taken(
    moved_recording: Recording, tmp_path: Path
) -> None:
    rec, _, _ = moved_recording
    _replay(rec, tmp_path / "replay")
    assert _places(tmp_path / "replay") == _places(rec)


def test_a_what_if_closeup_aimed_from_a_replayed_frame_is_served_the_recorded_one(
    moved_recording: Recording, tmp_path: Path
) -> None:
    rec, name, _ = moved_recording
    _replay(rec, tmp_path / "first")
    # the worker aims at the cell from the replayed frame's header (t = 0, DAPI)
    (header,) = [f for f in read_frames(tmp_path / "first")
                 if f["index"].get("t", 0) == 0 and f["channel"] == "DAPI"
                 and not f.get("added_by")]  # fmt: skip
    aim = _aim(header)
    acks: list[DecisionAck] = []

    def on_ready(agent: ScopeAgent) -> None:
        acks.append(agent._on_decision(_closeup(agent.run_id, name, aim), clock_ns()))

    summary = _replay(rec, tmp_path / "second", on_ready)
    (ack,) = acks
    assert ack.reason == "what-if: the recording holds 1 of 1 requested frame(s); 1 served"
    assert summary["what_if_served"] == 1
    (taken,) = _places(rec, added=True).values()
    (served,) = _places(tmp_path / "second", added=True).values()
    assert served == taken
    assert served[:2] == pytest.approx(aim)
