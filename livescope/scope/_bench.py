"""Benchmark of the simulated camera (``livescope bench camera``)."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from livescope.schema import HardwareProfile

from ._sim import SimulatedMicroscope

__all__ = ["CAMERA_TARGETS_FPS", "bench_camera"]

CAMERA_TARGETS_FPS = {512: 100.0, 2048: 10.0}
"""Targets (frames per second on one core) by sensor side length."""


def bench_camera(
    profile: HardwareProfile,
    sizes: tuple[int, ...] = (512, 2048),
    seconds: float = 3.0,
    channels: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Measure simulated-camera frames per second through the real core path.

    For each sensor size and channel, the camera is set to that sensor size, and
    ``snapImage`` + ``getImage`` run for about ``seconds`` after a warm-up (in
    this process, on this thread: one core). Each result carries its ratio to the
    target in `CAMERA_TARGETS_FPS`, measured in the same run.
    """
    if profile.simulation is None:
        raise ValueError(f"profile {profile.name!r} is not a simulated profile")
    chans = channels or tuple(c.name for c in profile.channels.presets)
    results: list[dict[str, Any]] = []
    for size in sizes:
        cam = profile.camera.replace(sensor_shape_px=(size, size))
        prof = profile.replace(camera=cam.model_dump())
        with SimulatedMicroscope(prof) as sim:
            core = sim.core
            core.setShutterOpen(True)
            for ch in chans:
                preset = prof.channels.get(ch)
                core.setConfig(prof.channels.config_group, ch)
                core.setExposure(preset.default_exposure_ms)
                sim.set_time(600.0)
                core.snapImage()
                core.getImage()  # warm-up
                n = 0
                t0 = time.perf_counter()
                while (elapsed := time.perf_counter() - t0) < seconds or n < 3:
                    core.snapImage()
                    core.getImage()
                    n += 1
                fps = n / elapsed
                target = CAMERA_TARGETS_FPS.get(size)
                results.append(
                    {
                        "shape": [size, size],
                        "channel": ch,
                        "kind": preset.kind,
                        "exposure_ms": preset.default_exposure_ms,
                        "frames": n,
                        "fps": round(fps, 2),
                        "ms_per_frame": round(1000 * elapsed / n, 3),
                        "target_fps": target,
                        "ratio_to_target": round(fps / target, 3) if target else None,
                        "meets_target": bool(target is None or fps >= target),
                    }
                )
    return {
        "bench": "camera",
        "profile": profile.name,
        "results": results,
        "all_targets_met": all(r["meets_target"] for r in results),
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads_used": 1,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
