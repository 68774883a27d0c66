"""A replay's frames carry the recorded frames' place on their camera's sensor, not the
replay camera's.

The replay camera's "sensor" is the recorded frame: its ROI offset, worked out against
the profile's sensor, was stamped on every replayed frame (a 128² recording replayed on
`sim` got (-192, -192) px, ~125 µm of aim), the recorded one never read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from livescope.pipeline._replay import fit_to_recording
from livescope.record import open_dataset
from livescope.schema import HardwareProfile, load_plan, load_profile
from livescope.scope import (
    ScopeAgent,
    SimulatedMicroscope,
    demo_sequence,
    map_channels,
    run_replay_scope,
    run_simulated,
)


def _offsets(run: Path) -> set[tuple[float, ...]]:
    lines = (run / "frames.jsonl").read_text(encoding="utf-8").splitlines()
    return {tuple(json.loads(s).get("roi_offset_px") or ()) for s in lines if s.strip()}


def _replayed(rec: Path, profile: HardwareProfile, out: Path) -> set[tuple[float, ...]]:
    ds = open_dataset(rec)
    try:
        prof = fit_to_recording(profile, ds)
        run_replay_scope(ds, prof, load_plan(rec / "plan.yaml", recorded=True), out,
                         channels=map_channels(ds, prof), speed=None)  # fmt: skip
    finally:
        ds.close()
    return _offsets(out)


@pytest.mark.parametrize("profile", ["own", "replay"])
def test_a_recording_of_an_off_centre_roi_replays_with_its_offset(
    tmp_path: Path, profile: str
) -> None:
    with SimulatedMicroscope("sim", seed=3) as sim:
        sim.core.setROI(300, 40, 200, 120)
        seq = demo_sequence(sim.profile, timepoints=2, positions=1, interval_s=60.0)
        rec = tmp_path / "rec"
        ScopeAgent(sim.core, sim.profile, seq, rec, sim=sim, bus="off").run()
    assert _offsets(rec) == {(144.0, -156.0)}
    prof = load_profile(rec / "profile.yaml" if profile == "own" else "replay")
    assert _replayed(rec, prof, tmp_path / "out") == {(144.0, -156.0)}


def test_a_recording_of_a_smaller_camera_replays_centred(
    tmp_path: Path, sim_profile: HardwareProfile, caplog: pytest.LogCaptureFixture
) -> None:
    small = sim_profile.replace(camera=sim_profile.camera.replace(sensor_shape_px=(128, 128))
                                .model_dump())  # fmt: skip
    rec = tmp_path / "rec"
    run_simulated(small, demo_sequence(small, timepoints=2, positions=1, interval_s=1.0), rec)
    assert _offsets(rec) == {(0.0, 0.0)}
    with caplog.at_level(logging.INFO, "livescope"):
        assert _replayed(rec, sim_profile, tmp_path / "out") == {(0.0, 0.0)}
    # (the replay camera's own "ROI", the recorded frame, is no ROI: said of no frame)
    assert not [r for r in caplog.records if "camera ROI" in r.getMessage()]


def test_a_recording_that_logged_no_offset_replays_without_one(
    tmp_path: Path, sim_profile: HardwareProfile
) -> None:
    rec = tmp_path / "rec"
    run_simulated(sim_profile, demo_sequence(sim_profile, timepoints=2, positions=1), rec)
    log = rec / "frames.jsonl"
    lines = [json.loads(s) for s in log.read_text(encoding="utf-8").splitlines() if s.strip()]
    for line in lines:  # (as a recording made before session 62)
        line.pop("roi_offset_px", None)
    log.write_text("".join(json.dumps(s) + "\n" for s in lines), encoding="utf-8")
    assert _replayed(rec, sim_profile, tmp_path / "out") == {()}
