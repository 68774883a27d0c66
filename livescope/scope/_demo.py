"""Runs on the simulated microscope: the demo plan, recorded with its ground truth."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path, PureWindowsPath
from typing import Any, Literal

import useq

from livescope.schema import (
    HardwareProfile,
    LivescopeError,
    check_output_folder,
    check_plan,
    write_atomic,
)

from ._agent import ScopeAgent, interrupted_summary, ready_or_close
from ._sim import SimulatedMicroscope
from ._truth import GroundTruthWriter

__all__ = [
    "BACKENDS",
    "check_micromanager_config",
    "demo_sequence",
    "run_micromanager",
    "run_simulated",
]

BACKENDS = ("mda", "pycromanager")
"""How the agent acquires: pymmcore-plus's MDA runner, or a pycromanager ``Acquisition``
(its Python backend on the simulated microscope; a running Micro-Manager on a rig)."""


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise LivescopeError(f"unknown acquisition backend {backend!r}; use mda or pycromanager")


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

    Raises
    ------
    ValueError
        if ``timepoints`` or ``positions`` is below 1.
    LivescopeError
        if more positions are asked for than fit along that diagonal without
        their fields overlapping (a plan file places any number).

    """
    if timepoints < 1:
        raise ValueError(f"timepoints must be >= 1, got {timepoints}")
    if positions < 1:
        raise ValueError(f"positions must be >= 1, got {positions}")
    xy = profile.stages.xy
    span_x = 0.5 * (xy.x_range_um[1] - xy.x_range_um[0])
    span_y = 0.5 * (xy.y_range_um[1] - xy.y_range_um[0])
    fov_h, fov_w = profile.field_of_view_um
    fit = 1 + int(max(span_x / fov_w, 0.6 * span_y / fov_h))  # steps of at least one field
    if positions > fit:
        raise LivescopeError(
            f"{positions} positions do not fit along the stage's diagonal (profile "
            f"{profile.name!r}) without their fields overlapping: at most {fit}; for more, "
            "place them in a plan file (stage_positions) and give it with --plan"
        )
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
    bus: Literal["inline", "shm", "off"] = "off",
    endpoints: dict[str, str] | None = None,
    run_id: str | None = None,
    on_ready: Callable[[ScopeAgent], None] | None = None,
    backend: str = "mda",
) -> dict[str, Any]:
    """Acquire ``sequence`` on the simulated microscope, record it and its ground truth.

    Writes ``out_dir/data.ome.zarr``, ``frames.jsonl``, ``decisions.jsonl``,
    ``plan.yaml``, ``profile.yaml``, ``ground_truth/`` and ``summary.json`` (and
    ``bus.json`` while a bus runs); returns the summary.
    ``progress(frames_written, frames_planned)`` is called after each frame (on
    the recording's writer thread); ``on_ready(agent)`` once the agent is listening.
    ``backend="pycromanager"`` acquires through pycromanager's Python backend on
    the simulated core instead of pymmcore-plus's MDA runner.

    Raises
    ------
    PlanError
        if the plan does not fit the profile (nothing is acquired).
    LivescopeError
        if ``out_dir`` cannot be a run folder or holds a recording, or the agent
        cannot be made (e.g. an endpoint in use): the folders made for the
        ground truth are taken away again.

    """
    check_plan(sequence, profile)
    _check_backend(backend)
    out = Path(out_dir)
    check_output_folder(out)
    started = time.time()
    # the folders the ground truth's writer makes before the agent checks anything: taken
    # away again if the agent cannot be made (an endpoint in use, a recorded folder), as
    # the agent leaves the run folder as it found it
    truth_dir = out / "ground_truth"
    made = [d for d in (*reversed(truth_dir.absolute().parents), truth_dir.absolute())
            if not d.exists()]  # fmt: skip
    with SimulatedMicroscope(profile, seed=seed) as sim:
        truth = GroundTruthWriter(sim, truth_dir)
        agent_cls: Any = ScopeAgent
        try:
            if backend == "pycromanager":
                from ._pycromanager import PycromanagerAgent as agent_cls
            agent = agent_cls(
                sim.core,
                profile,
                sequence,
                out,
                sim=sim,
                run_id=run_id,
                bus=bus,
                endpoints=endpoints,
                extra_sinks=[truth],
            )
        except BaseException:
            _remove_empty(made)
            raise
        if on_ready is not None:
            ready_or_close(agent, on_ready)
        planned = agent.planned_events
        stopped: KeyboardInterrupt | None = None
        try:
            summary: dict[str, Any] = agent.run(
                None if progress is None else (lambda n: progress(n, planned))
            )
        except KeyboardInterrupt as exc:  # (Ctrl+C: completed as below, then raised again)
            summary, stopped = interrupted_summary(out, since=started), exc
    summary.update(
        {
            "timepoints": sequence.sizes.get("t", 1) or 1,
            "seed": sim.seed,
            "ground_truth": str(truth_dir.resolve()),
            "truth": truth.summary,
        }
    )
    import json

    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    if stopped is not None:
        raise stopped
    return summary


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (outermost first) that hold nothing, innermost first."""
    for folder in reversed(folders):
        try:
            folder.rmdir()  # only if empty: anything else there stays
        except OSError:
            break


def check_micromanager_config(profile: HardwareProfile, backend: str = "mda") -> None:
    """Raise `LivescopeError` if acquiring on ``profile`` needs a config file that is missing.

    The mda backend loads the profile's ``micromanager_config``; checked before
    a run folder is made, so that a wrong path leaves nothing behind. A profile
    file's relative path was made absolute against its folder when loaded; one
    made in code is looked for in the current folder, and named in full.
    """
    _check_backend(backend)
    if backend == "mda" and profile.kind != "simulated":
        cfg = profile.micromanager_config
        if cfg is None or not Path(cfg).is_file():
            # (a Windows drive path is relative to Linux's pathlib: shown as written)
            shown = cfg if cfg is None or PureWindowsPath(str(cfg)).anchor else cfg.absolute()
            raise LivescopeError(f"Micro-Manager config {shown} (micromanager_config) not found")


def run_micromanager(
    profile: HardwareProfile,
    sequence: useq.MDASequence,
    out_dir: str | Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    bus: Literal["inline", "shm", "off"] = "shm",
    endpoints: dict[str, str] | None = None,
    run_id: str | None = None,
    on_ready: Callable[[ScopeAgent], None] | None = None,
    backend: str = "mda",
    port: int = 4827,
) -> dict[str, Any]:
    """Acquire ``sequence`` on a real rig; otherwise as `run_simulated` (no ground truth).

    ``backend="mda"``: pymmcore-plus loads the profile's Micro-Manager config
    (needs Micro-Manager's device adapters on this PC). ``backend="pycromanager"``:
    a running Micro-Manager application acquires, over pycromanager's bridge on
    ``port`` (enable Tools → Options → "Run server on port 4827" there; its own
    configuration is used).

    Raises
    ------
    LivescopeError
        if the profile's Micro-Manager config file is missing (mda backend).

    """
    _check_backend(backend)
    if backend == "pycromanager":
        from ._pycromanager import PycromanagerAgent

        pm_agent = PycromanagerAgent(
            None, profile, sequence, out_dir, backend="java", port=port, run_id=run_id,
            bus=bus, endpoints=endpoints,
        )  # fmt: skip
        if on_ready is not None:
            ready_or_close(pm_agent, on_ready)
        planned = pm_agent.planned_events
        return pm_agent.run(None if progress is None else (lambda n: progress(n, planned)))
    from pymmcore_plus import CMMCorePlus

    check_micromanager_config(profile, backend)
    cfg = profile.micromanager_config
    core = CMMCorePlus()
    try:
        core.loadSystemConfiguration(str(cfg))
    except (OSError, RuntimeError) as exc:  # (Micro-Manager names the device, not the file)
        raise LivescopeError(
            f"Micro-Manager could not load the configuration {cfg} ({exc}); check it in "
            "Micro-Manager's Hardware Configuration Wizard, and that its device adapters "
            "are installed: `mmcore list` shows the Micro-Manager installations "
            "pymmcore-plus finds, `mmcore use PATH` points it at yours (its device "
            "interface version must match pymmcore's)"
        ) from exc
    agent = ScopeAgent(
        core, profile, sequence, out_dir, run_id=run_id, bus=bus, endpoints=endpoints
    )
    if on_ready is not None:
        ready_or_close(agent, on_ready)
    planned = agent.planned_events
    return agent.run(None if progress is None else (lambda n: progress(n, planned)))
