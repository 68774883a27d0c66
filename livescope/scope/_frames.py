"""Simulated frames with their ground truth, for engines, benchmarks and training."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import HardwareProfile, load_profile

from ._sim import SimulatedMicroscope

__all__ = ["simulated_frames"]


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
    benchmarks); with it, time, stage position, focus, exposure and objective
    vary at random from ``seed`` (training data).
    """
    prof = profile or load_profile("sim")
    if size is not None:
        prof = prof.replace(camera=prof.camera.replace(sensor_shape_px=(size, size)).model_dump())
    if prof.simulation is None:
        raise ValueError(f"profile {prof.name!r} is not a simulated profile")
    span = 0.5 * min(prof.simulation.sample_size_um) - 100.0
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
                x, y = (float(v) for v in rng.uniform(-span, span, 2))
                core.setXYPosition(x, y)
                core.setPosition(float(rng.normal(0, 3)))
                core.setExposure(float(rng.uniform(10, 200)))
            else:
                if objective is not None:
                    core.setConfig("Objective", objective)
                sim.set_time(1200.0 + 600.0 * k)
                core.setXYPosition(min(-400.0 + 400.0 * k, span), min(100.0 * k, span))
                core.setExposure(exposure_ms)
            core.snapImage()
            out.append((np.asarray(core.getImage()).copy(), sim.ground_truth().labels))
    return out
