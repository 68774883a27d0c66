"""The recording's z scale follows a plan of z positions (it was 1 µm whatever they were)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import useq
import zarr

from livescope.record import read_frames
from livescope.scope import ScopeAgent, SimulatedMicroscope


def _z_scale(run: Path) -> float:
    attrs = zarr.open_group(run / "data.ome.zarr", mode="r")["0"].attrs.asdict()
    scale = attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    return float(scale["scale"][2])


@pytest.mark.parametrize(
    ("z_plan", "step", "uneven"),
    [
        pytest.param(useq.ZAbsolutePositions(absolute=[40.0, 42.5, 45.0]), 2.5, False, id="abs"),
        pytest.param(useq.ZRelativePositions(relative=[-3.0, 0.0, 3.0]), 3.0, False, id="rel"),
        pytest.param(useq.ZRangeAround(range=4, step=2), 2.0, False, id="range"),
        pytest.param(useq.ZAbsolutePositions(absolute=[40.0, 41.0, 45.0]), 2.5, True, id="uneven"),
    ],
)
def test_the_recordings_z_scale_is_the_plans_spacing(
    sim: SimulatedMicroscope,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    z_plan: useq.ZPlan,
    step: float,
    uneven: bool,
) -> None:
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=42.0, name="A")],
        channels=[useq.Channel(config="DAPI", exposure=5.0)],
        z_plan=z_plan,
    )
    with caplog.at_level(logging.WARNING, logger="livescope"):
        ScopeAgent(sim.core, sim.profile, seq, tmp_path, sim=sim, bus="off").run()
    assert len(read_frames(tmp_path)) == 3
    assert _z_scale(tmp_path) == pytest.approx(step)
    said = [r.getMessage() for r in caplog.records if "not evenly spaced" in r.getMessage()]
    assert bool(said) is uneven


def test_only_the_channels_imaged_are_shown_active(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # every preset of the rig has its place on the c axis; those never imaged were marked
    # active and opened as blank layers in napari
    seq = useq.MDASequence(channels=[useq.Channel(config="DAPI", exposure=5.0)])
    ScopeAgent(sim.core, sim.profile, seq, tmp_path, sim=sim, bus="off").run()
    attrs = zarr.open_group(tmp_path / "data.ome.zarr", mode="r")["0"].attrs.asdict()
    channels = attrs["ome"]["omero"]["channels"]
    assert len(channels) > 1  # (the rig's other presets)
    assert {c["label"]: c["active"] for c in channels} == {
        c["label"]: c["label"] == "DAPI" for c in channels
    }
