"""Simulated frames with their ground truth, for engines, benchmarks and training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import HardwareProfile, load_profile

from ._sample import CellState
from ._sim import SimulatedMicroscope

__all__ = ["SimulatedView", "simulated_frames", "simulated_views"]


def _reach(
    prof: HardwareProfile, sample_size_um: tuple[float, float]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(x, y) bounds, µm, of the stage positions to draw: inside the sample and the travel.

    A profile whose stage travels less than the sample's half-width would otherwise be
    sent beyond its travel (`StageLimitError`).
    """
    span = max(0.5 * min(sample_size_um) - 100.0, 0.0)
    xy = prof.stages.xy
    lo = np.maximum([-span, -span], [xy.x_range_um[0], xy.y_range_um[0]])
    hi = np.minimum([span, span], [xy.x_range_um[1], xy.y_range_um[1]])
    if (lo > hi).any():
        raise ValueError(
            f"profile {prof.name!r}: the stage travel (stages.xy) does not reach within "
            f"{span:g} µm of the sample's centre; widen it or the simulated sample"
        )
    return lo, hi


def simulated_frames(
    n: int = 1,
    *,
    size: int | None = None,
    profile: HardwareProfile | None = None,
    seed: int = 0,
    channel: str = "DAPI",
    objective: str | None = "20x",
    exposure_ms: float = 50.0,
    randomize: bool = False,
) -> list[tuple[NDArray[Any], NDArray[np.uint32]]]:
    """Snap ``n`` frames on the simulated microscope; return (image, cell-id labels) pairs.

    Frames are size × size (default: the profile's camera). Without
    ``randomize`` they are taken at fixed times and positions (reproducible
    benchmarks); with it, time, stage position, focus and exposure vary at random
    from ``seed`` and the objective cycles through the profile's (training data).
    Positions stay within both the sample and the stage travel, focus within the
    Z travel.
    """
    prof = profile or load_profile("sim")
    if size is not None:
        prof = prof.with_square_sensor(size)
    if prof.simulation is None:
        raise ValueError(f"profile {prof.name!r} is not a simulated profile")
    lo, hi = _reach(prof, prof.simulation.sample_size_um)
    z_lo, z_hi = prof.stages.z.z_range_um
    rng = np.random.default_rng(seed)
    objectives = [o.name for o in prof.objectives]
    out = []
    with SimulatedMicroscope(prof, seed=seed) as sim:
        core = sim.core
        core.setConfig(prof.channels.config_group, channel)
        core.setShutterOpen(True)
        for k in range(n):
            if randomize:
                core.setConfig("Objective", objectives[k % len(objectives)])
                sim.set_time(float(rng.uniform(0, 7200)))
                x, y = (float(v) for v in rng.uniform(lo, hi))
                core.setXYPosition(x, y)
                core.setPosition(float(np.clip(rng.normal(0, 3), z_lo, z_hi)))
                core.setExposure(float(rng.uniform(10, 200)))
            else:
                if objective is not None:
                    core.setConfig("Objective", objective)
                sim.set_time(1200.0 + 600.0 * k)
                x, y = np.clip((-400.0 + 400.0 * k, 100.0 * k), lo, hi).tolist()
                core.setXYPosition(x, y)
                core.setExposure(exposure_ms)
            core.snapImage()
            out.append((np.asarray(core.getImage()).copy(), sim.ground_truth().labels))
    return out


@dataclass(frozen=True)
class SimulatedView:
    """One field seen in the label-free and the nuclear channel at the same instant.

    ``states`` maps each cell id in ``labels`` to its `CellState` and its
    progress (0..1) through that state; ``nucleus_radius_um`` is the sample's
    typical nucleus radius (its profile's).
    """

    phase: NDArray[Any]
    fluorescence: NDArray[Any]
    labels: NDArray[np.uint32]
    states: dict[int, tuple[CellState, float]]
    pixel_um: float
    nucleus_radius_um: float


def simulated_views(
    n: int,
    *,
    seed: int = 0,
    size: int | None = None,
    objectives: tuple[str, ...] = ("10x", "20x", "40x"),
    focus_sd_um: float = 2.0,
    profile: HardwareProfile | None = None,
) -> list[SimulatedView]:
    """``n`` random fields (time, position, focus, exposures, objective) from ``seed``.

    Each field is snapped in the profile's first label-free channel and in its
    first fluorescence channel at the same sample time: virtual-staining pairs
    and labelled cells for the cell-state classifier, with their ground truth.
    """
    prof = profile or load_profile("sim")
    if size is not None:
        prof = prof.with_square_sensor(size)
    if prof.simulation is None:
        raise ValueError(f"profile {prof.name!r} is not a simulated profile")
    kinds = {c.kind: c.name for c in reversed(prof.channels.presets)}
    if "label_free" not in kinds or "fluorescence" not in kinds:
        raise ValueError(f"profile {prof.name!r} needs a label-free and a fluorescence channel")
    lo, hi = _reach(prof, prof.simulation.sample_size_um)
    z_lo, z_hi = prof.stages.z.z_range_um
    rng = np.random.default_rng([seed, 0x71E3])
    out = []
    with SimulatedMicroscope(prof, seed=seed) as sim:
        core = sim.core
        group = prof.channels.config_group
        core.setShutterOpen(True)
        for k in range(n):
            core.setConfig("Objective", objectives[k % len(objectives)])
            t = float(rng.uniform(0, 7200))
            core.setXYPosition(*(float(v) for v in rng.uniform(lo, hi)))
            core.setPosition(float(np.clip(rng.normal(0, focus_sd_um), z_lo, z_hi)))
            frames = []
            for name, exposure in (
                (kinds["label_free"], (5, 60)),
                (kinds["fluorescence"], (10, 200)),
            ):
                core.setConfig(group, name)
                core.setExposure(float(rng.uniform(*exposure)))
                sim.set_time(t)
                core.snapImage()
                frames.append(np.asarray(core.getImage()).copy())
            truth = sim.ground_truth(t)
            state = sim.sample.state_at(t)
            where = {int(i): j for j, i in enumerate(state.ids.tolist())}
            states = {
                cid: (CellState(int(state.state[where[cid]])), float(state.progress[where[cid]]))
                for cid in truth.cell_ids
            }
            out.append(
                SimulatedView(
                    frames[0],
                    frames[1],
                    truth.labels,
                    states,
                    truth.pixel_um,
                    prof.simulation.nucleus_radius_um,
                )
            )
    return out
