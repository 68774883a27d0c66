"""The demo run: a multi-position, multi-channel time-lapse on the simulated microscope.

Used by ``livescope demo``; later stages of the pipeline (engines, overlay,
decisions) attach to the same run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import useq

from livescope import __version__
from livescope.record import ZARR_NAME, OmeZarrWriter
from livescope.schema import HardwareProfile, check_plan

from ._acquire import run_acquisition
from ._engine import LivescopeEngine
from ._sim import SimulatedMicroscope
from ._truth import GroundTruthWriter

__all__ = ["demo_sequence", "run_simulated"]


def demo_sequence(
    profile: HardwareProfile,
    *,
    timepoints: int = 30,
    positions: int = 3,
    interval_s: float = 120.0,
) -> useq.MDASequence:
    """Build the default demo plan.

    ``positions`` fields along a diagonal of the stage travel, every channel of
    the profile at its default exposure, ``timepoints`` time points ``interval_s``
    (sample time) apart.
    """
    if timepoints < 1:
        raise ValueError(f"timepoints must be >= 1, got {timepoints}")
    if positions < 1:
        raise ValueError(f"positions must be >= 1, got {positions}")
    xy = profile.stages.xy
    span_x = 0.5 * (xy.x_range_um[1] - xy.x_range_um[0])
    span_y = 0.5 * (xy.y_range_um[1] - xy.y_range_um[0])
    cx = 0.5 * (xy.x_range_um[0] + xy.x_range_um[1])
    cy = 0.5 * (xy.y_range_um[0] + xy.y_range_um[1])
    stage_positions = []
    for i in range(positions):
        f = 0.0 if positions == 1 else (i / (positions - 1) - 0.5)
        stage_positions.append(
            useq.Position(x=cx + f * span_x, y=cy + 0.6 * f * span_y, z=0.0, name=f"p{i}")
        )
    return useq.MDASequence(
        stage_positions=stage_positions,
        channels=[
            useq.Channel(
                config=c.name, group=profile.channels.config_group, exposure=c.default_exposure_ms
            )
            for c in profile.channels.presets
        ],
        time_plan=useq.TIntervalLoops(interval=interval_s, loops=timepoints),
        axis_order="tpcz",
    )


def run_simulated(
    profile: HardwareProfile,
    sequence: useq.MDASequence,
    out_dir: str | Path,
    *,
    seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Acquire ``sequence`` on the simulated microscope, record it and its ground truth.

    Writes ``out_dir/data.ome.zarr``, ``out_dir/frames.jsonl``,
    ``out_dir/ground_truth/`` and ``out_dir/summary.json``; returns the summary.
    ``progress(frames_written, frames_planned)`` is called after each frame.

    Raises
    ------
    PlanError
        if the plan does not fit the profile (nothing is acquired).

    """
    check_plan(sequence, profile)
    out = Path(out_dir)
    started = time.time()
    with SimulatedMicroscope(profile, seed=seed) as sim:
        engine = LivescopeEngine(sim.core, profile, sim=sim)
        z_step = getattr(sequence.z_plan, "step", None) or 1.0
        interval = getattr(sequence.time_plan, "interval", None)
        recorder = OmeZarrWriter(
            out,
            channels=[c.config for c in sequence.channels],
            pixel_size_um=sim.core.getPixelSizeUm(),
            z_step_um=float(z_step),
            interval_s=interval.total_seconds() if interval else 1.0,
            attrs={"profile": profile.name, "seed": sim.seed, "livescope": __version__},
        )
        truth = GroundTruthWriter(sim, out / "ground_truth")
        report = run_acquisition(sim.core, sequence, engine, [recorder, truth], progress)
    summary: dict[str, Any] = {
        "ok": True,
        "frames_acquired": report.frames_acquired,
        "frames_written": report.frames_written,
        "frames_failed": report.frames_failed,
        "positions": report.positions,
        "channels": report.channels,
        "timepoints": report.timepoints,
        "duration_s": round(report.duration_s, 3),
        "fps": round(report.fps, 2),
        "max_queue_depth": report.max_queue_depth,
        "profile": profile.name,
        "seed": sim.seed,
        "out": str(out.resolve()),
        "recording": str((out / ZARR_NAME).resolve()),
        "ground_truth": str((out / "ground_truth").resolve()),
        "truth": truth.summary,
        "started_unix_s": round(started, 3),
        "livescope_version": __version__,
        "plan": json.loads(sequence.model_dump_json(exclude_unset=True)),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary
