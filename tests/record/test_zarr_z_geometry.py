"""Each position's z scale (and its sign) and z origin come from the z its frames were taken at.

A top-down stack (z index 0 the top plane) was recorded with a positive z scale: every
NGFF reader showed it upside down. And every position had the plan's z step, whatever
its own sub-sequence's or close-up's was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq
import zarr

from livescope.record import OmeZarrWriter, open_dataset, read_frames
from livescope.schema import FrameInfo
from livescope.scope import ScopeAgent, SimulatedMicroscope


def _transforms(run: Path) -> dict[str, list[dict[str, Any]]]:
    """Return each position's level-0 coordinate transformations, by position name."""
    root = zarr.open_group(run / "data.ome.zarr", mode="r")
    found = {}
    for key in root.group_keys():
        attrs = root[key].attrs.asdict()
        found[attrs["livescope"]["position"]] = attrs["ome"]["multiscales"][0]["datasets"][0][
            "coordinateTransformations"
        ]
    return found


def _z_of_planes(transforms: list[dict[str, Any]], n: int) -> list[float]:
    """Return the NGFF z (µm) of planes 0..n-1 under ``transforms`` (scale, then translation)."""
    scale = transforms[0]["scale"][2]
    shift = transforms[1]["translation"][2] if len(transforms) > 1 else 0.0
    return [k * scale + shift for k in range(n)]


def _logged_z(run: Path, position: str) -> dict[int, float]:
    """Return the logged z (µm) of each z index of ``position``'s frames."""
    return {
        int(f["index"].get("z", 0)): float(f["z_um"])  # type: ignore[arg-type]
        for f in read_frames(run)
        if f["position"] == position
    }


def _check_valid(run: Path) -> None:
    yaozarrs = pytest.importorskip("yaozarrs")
    yaozarrs.validate_zarr_store(run / "data.ome.zarr")


def test_a_top_down_stack_is_recorded_with_a_negative_z_scale_not_mirrored(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=42.0, name="A")],
        channels=[useq.Channel(config="DAPI", exposure=5.0)],
        z_plan=useq.ZRangeAround(range=4, step=2, go_up=False),
    )
    ScopeAgent(sim.core, sim.profile, seq, tmp_path, sim=sim, bus="off").run()
    logged = _logged_z(tmp_path, "A")
    assert logged == {0: 44.0, 1: 42.0, 2: 40.0}  # (index 0 the top plane)
    transforms = _transforms(tmp_path)["A"]
    assert transforms[0]["scale"][2] == -2.0
    assert _z_of_planes(transforms, 3) == [logged[k] for k in range(3)]
    _check_valid(tmp_path)
    # livescope's own reader opens it as before
    assert len(open_dataset(tmp_path / "data.ome.zarr").frames) == 3


def test_each_position_has_the_z_step_of_its_own_sub_sequence(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    seq = useq.MDASequence(
        channels=[useq.Channel(config="DAPI", exposure=5.0)],
        stage_positions=[
            useq.Position(x=0, y=0, z=10.0, name="A",
                          sequence=useq.MDASequence(z_plan=useq.ZRangeAround(range=1, step=0.5))),
            useq.Position(x=100, y=0, z=10.0, name="B",
                          sequence=useq.MDASequence(z_plan=useq.ZRangeAround(range=10, step=5))),
        ],
    )  # fmt: skip
    ScopeAgent(sim.core, sim.profile, seq, tmp_path, sim=sim, bus="off").run()
    transforms = _transforms(tmp_path)
    assert {name: t[0]["scale"][2] for name, t in transforms.items()} == {"A": 0.5, "B": 5.0}
    for name in ("A", "B"):
        logged = _logged_z(tmp_path, name)
        assert _z_of_planes(transforms[name], 3) == [logged[k] for k in range(3)]
    _check_valid(tmp_path)


def _info(seq: int, z: int, z_um: float | None, pos: str = "p0") -> FrameInfo:
    return FrameInfo(
        seq=seq, index={"t": 0, "p": 0, "z": z}, position=pos, channel="BF", x_um=0.0,
        y_um=0.0, z_um=z_um, exposure_ms=10.0, pixel_size_um=0.65, sample_time_s=0.0,
        runner_time_ms=0.0, shape=(8, 8), dtype="uint16", event={},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("z_um", "plan_step", "transforms"),
    [
        pytest.param([2.0, 0.0, -2.0], 2.0,
                     [{"type": "scale", "scale": [1.0, 1.0, -2.0, 0.5, 0.5]},
                      {"type": "translation", "translation": [0.0, 0.0, 2.0, 0.0, 0.0]}],
                     id="relative-positions-top-down"),
        pytest.param([10.0, 10.5, 11.0], 1.0,
                     [{"type": "scale", "scale": [1.0, 1.0, 0.5, 0.5, 0.5]},
                      {"type": "translation", "translation": [0.0, 0.0, 10.0, 0.0, 0.0]}],
                     id="a-close-ups-own-step"),
        pytest.param([40.0, 41.0, 45.0], 2.5,
                     [{"type": "scale", "scale": [1.0, 1.0, 2.5, 0.5, 0.5]},
                      {"type": "translation", "translation": [0.0, 0.0, 40.0, 0.0, 0.0]}],
                     id="uneven-the-mean-step"),
        pytest.param([7.0], 3.0, [{"type": "scale", "scale": [1.0, 1.0, 3.0, 0.5, 0.5]}],
                     id="one-plane-the-plans-step"),
        pytest.param([None, None], 3.0, [{"type": "scale", "scale": [1.0, 1.0, 3.0, 0.5, 0.5]}],
                     id="no-logged-z-the-plans-step"),
        pytest.param([5.0, 5.0], 3.0, [{"type": "scale", "scale": [1.0, 1.0, 3.0, 0.5, 0.5]}],
                     id="z-unchanged-the-plans-step"),
    ],
)  # fmt: skip
def test_the_z_scale_and_origin_are_those_of_the_logged_z(
    tmp_path: Path,
    z_um: list[float | None],
    plan_step: float,
    transforms: list[dict[str, Any]],
) -> None:
    with OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=0.5, z_step_um=plan_step) as w:
        for z, at in enumerate(z_um):
            w.write(np.zeros((8, 8), np.uint16), _info(z, z, at))
    assert _transforms(tmp_path)["p0"] == transforms
    _check_valid(tmp_path)


@pytest.mark.parametrize(
    ("z_plan", "step"),
    [
        pytest.param(useq.ZRangeAround(range=4, step=1, go_up=False), -1.0, id="range-top-down"),
        pytest.param(useq.ZRangeAround(range=4, step=1), 1.0, id="range-bottom-up"),
        pytest.param(useq.ZTopBottom(top=4, bottom=0, step=2, go_up=False), -2.0, id="top-bottom"),
        pytest.param(useq.ZAbsolutePositions(absolute=[10, 8, 6]), -2.0, id="absolute-top-down"),
        pytest.param(useq.ZRelativePositions(relative=[2, 0, -2]), -2.0, id="relative-top-down"),
        pytest.param(useq.ZRelativePositions(relative=[-2, 0, 2]), 2.0, id="relative-bottom-up"),
    ],
)
def test_the_planned_z_scale_a_run_starts_with_is_signed(z_plan: useq.ZPlan, step: float) -> None:
    # (what the recording holds until it is closed: a run killed keeps it)
    from livescope.scope._agent_rig import _z_step_um

    assert _z_step_um(useq.MDASequence(z_plan=z_plan)) == step
