"""``livescope agent`` and ``livescope worker``: the two halves of a run, as processes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import JsonOpt, emit, fail, setup_logging, stderr, user_errors


def agent(
    plan: Annotated[Path, typer.Option(help="Plan YAML (a useq MDASequence).")],
    profile: Annotated[
        str, typer.Option(help="Hardware profile: a shipped name or a YAML path.")
    ] = "sim",
    out: Annotated[
        Path | None, typer.Option(help="Run folder (new). Default: runs/agent-<date>-<time>.")
    ] = None,
    bus: Annotated[
        str, typer.Option(help="Frame bus: inline, shm (shared memory) or off.")
    ] = "shm",
    frames_endpoint: Annotated[str | None, typer.Option(help="Bind frames here.")] = None,
    control_endpoint: Annotated[str | None, typer.Option(help="Bind bus control here.")] = None,
    decisions_endpoint: Annotated[str | None, typer.Option(help="Bind decisions here.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: generated).")] = None,
    seed: Annotated[int | None, typer.Option(help="Simulation seed (simulated profiles).")] = None,
    time_acceleration: Annotated[
        float | None,
        typer.Option(min=0.001, help="Simulated profiles: sample seconds per wall second."),
    ] = None,
    json_out: JsonOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a plan: record every frame, stream it on the bus, apply decisions from workers.

    The bus endpoints are written to RUN/bus.json for workers to attach.
    """
    setup_logging(verbose)
    from livescope.schema import check_plan, load_plan, load_profile
    from livescope.scope import run_simulated

    with user_errors(json_out):
        if bus not in ("inline", "shm", "off"):
            fail(f"--bus must be inline, shm or off, not {bus!r}", as_json=json_out)
        prof = load_profile(profile)
        if time_acceleration is not None:
            if prof.simulation is None:
                fail("--time-acceleration applies to simulated profiles only", as_json=json_out)
            sim = prof.simulation.replace(time_acceleration=time_acceleration)
            prof = prof.replace(simulation=sim.model_dump())
        sequence = load_plan(plan)
        check_plan(sequence, prof, str(plan))
        run_dir = out or Path("runs") / time.strftime("agent-%Y%m%d-%H%M%S")
        endpoints = {
            k: v
            for k, v in (
                ("frames", frames_endpoint),
                ("control", control_endpoint),
                ("decisions", decisions_endpoint),
            )
            if v
        }

        def ready(a: Any) -> None:
            stderr.print(f"agent running {a.run_id}: bus {bus}, attach with {run_dir}/bus.json")

        if prof.kind == "simulated":
            summary = run_simulated(
                prof,
                sequence,
                run_dir,
                seed=seed,
                bus=bus,  # type: ignore[arg-type]
                endpoints=endpoints,
                run_id=run_id,
                on_ready=ready,
            )
        else:
            summary = _run_micromanager(prof, sequence, run_dir, bus, endpoints, run_id, ready)
    if json_out:
        emit(summary)
    else:
        stderr.print(
            f"{summary['frames_acquired']} frames acquired, {summary['frames_written']} recorded, "
            f"{summary['decisions_accepted']} decisions accepted, "
            f"{summary['decisions_rejected']} rejected"
        )
        typer.echo(summary["out"])


def _run_micromanager(
    prof: Any, sequence: Any, run_dir: Path, bus: str, endpoints: dict[str, str],
    run_id: str | None, ready: Any,
) -> dict[str, Any]:  # fmt: skip
    """Drive a real rig through pymmcore-plus (needs Micro-Manager's device adapters)."""
    from pymmcore_plus import CMMCorePlus

    from livescope.schema import LivescopeError
    from livescope.scope import ScopeAgent

    cfg = prof.micromanager_config
    if cfg is None or not Path(cfg).is_file():
        raise LivescopeError(f"Micro-Manager config {cfg} (micromanager_config) not found")
    core = CMMCorePlus()
    core.loadSystemConfiguration(str(cfg))
    a = ScopeAgent(core, prof, sequence, run_dir, run_id=run_id, bus=bus, endpoints=endpoints)  # type: ignore[arg-type]
    ready(a)
    return a.run()


def worker(
    run: Annotated[Path, typer.Argument(help="Run folder of a running agent (or its bus.json).")],
    policy: Annotated[str, typer.Option(help="Delivery: every (queue) or latest.")] = "every",
    maxlen: Annotated[int, typer.Option(min=1, help="Queue length for 'every'.")] = 16,
    idle_s: Annotated[float, typer.Option(help="Stop after this long without frames.")] = 5.0,
    analyse: Annotated[
        bool, typer.Option(help="Run the engines: labels, tracks, virtual stain, cell states.")
    ] = False,
    profile: Annotated[
        str, typer.Option(help="Hardware profile (which channels are label-free).")
    ] = "sim",
    seg: Annotated[str, typer.Option(help="Segmentation engine.")] = "nuclei-unet",
    stain: Annotated[str, typer.Option(help="Virtual-staining engine ('' for none).")] = (
        "nuclei-stain"
    ),
    states: Annotated[str, typer.Option(help="Cell-state engine ('' for none).")] = "cell-state",
    nucleus_diameter_um: Annotated[
        float | None, typer.Option(help="Typical nucleus diameter (default: the profile's).")
    ] = None,
    backend: Annotated[str | None, typer.Option(help="Engine backend (default: best).")] = None,
    cells_out: Annotated[
        Path | None, typer.Option(help="With --analyse: write one JSON line per cell and frame.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Attach to a running agent and receive its frames; with --analyse, run the engines.

    Frames of one position and time point (its channels) are analysed together
    in one pass when the next field's first frame arrives (or the run ends): a
    label-free frame gives a virtual stain, the nuclear signal (the real stain,
    else the virtual one) gives labels, tracks and cell states.
    """
    setup_logging(False)
    from livescope.bus import attach

    with user_errors(json_out):
        if policy not in ("every", "latest"):
            fail(f"--policy must be every or latest, not {policy!r}", as_json=json_out)
        analysis = (
            _Analysis(profile, seg, stain, states, nucleus_diameter_um, backend, cells_out)
            if analyse
            else None
        )
        deadline = time.monotonic() + 30  # an agent starting now has time to appear
        while not (run / "bus.json").exists() and not run.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        try:
            with attach(run, policy=policy, maxlen=maxlen) as link:  # type: ignore[arg-type]
                while (frame := link.frames.get(timeout=idle_s)) is not None:
                    if analysis is not None:
                        analysis.add(frame.header, frame.array)
                    frame.release()
                stats = link.frames.stats()
            result = {"ok": True, "run_id": link.run_id, **stats}
            if analysis is not None:
                analysis.flush()
                result["analysis"] = analysis.summary()
        finally:
            if analysis is not None:
                analysis.close()
    if json_out:
        emit(result)
    else:
        stderr.print(json.dumps(result, indent=1))


class _Analysis:
    """Groups bus frames by (position, t) and runs a `FrameAnalyzer` on each group."""

    def __init__(
        self,
        profile: str,
        seg: str,
        stain: str,
        states: str,
        nucleus_diameter_um: float | None,
        backend: str | None,
        cells_out: Path | None,
    ) -> None:
        from livescope.pipeline import FrameAnalyzer
        from livescope.schema import load_profile

        prof = load_profile(profile)
        self.kinds = {c.name: c.kind for c in prof.channels.presets}
        sim = prof.simulation
        if nucleus_diameter_um is None and sim is not None:
            nucleus_diameter_um = 2 * sim.nucleus_radius_um
        self.analyzer = FrameAnalyzer(
            segmenter=seg or None,
            stain=stain or None,
            states=states or None,
            backend=backend,
            nucleus_diameter_um=nucleus_diameter_um,
        )
        self.key: tuple[str, int] | None = None
        self.group: dict[str, Any] = {}
        self.pixel_size_um: float | None = None
        self.cells_out = cells_out.open("w", encoding="utf-8") if cells_out else None
        self.fields = 0
        self.cells = 0
        self.divisions = 0
        self.mitotic = 0
        self.sources: dict[str, int] = {}
        self.ms: dict[str, list[float]] = {}

    def add(self, header: Any, array: Any) -> None:
        import numpy as np

        key = (str(header["position"]), int(header["index"].get("t", 0)))
        if self.key is not None and key != self.key:
            self.flush()
        self.key = key
        kind = self.kinds.get(str(header["channel"]), "fluorescence")  # unknown: nuclear stain
        slot = "label_free" if kind == "label_free" else "fluorescence"
        self.group[slot] = np.array(array, copy=True)
        self.pixel_size_um = float(header["pixel_size_um"]) or None

    def flush(self) -> None:
        if self.key is None or not self.group:
            return
        position, t = self.key
        res = self.analyzer.analyse(
            fluorescence=self.group.get("fluorescence"),
            label_free=self.group.get("label_free"),
            position=position,
            pixel_size_um=self.pixel_size_um,
        )
        self.group = {}
        self.fields += 1
        for stage, ms in res.ms.items():
            self.ms.setdefault(stage, []).append(ms)
        self.sources[res.nuclear_source or "none"] = (
            self.sources.get(res.nuclear_source or "none", 0) + 1
        )
        rows = res.cell_table()
        self.cells += len(rows)
        self.mitotic += sum(r.get("p_mitosis", 0) >= 0.5 for r in rows)
        if res.tracks is not None:
            self.divisions += len(res.tracks.divisions)
        if self.cells_out is not None:
            for r in rows:
                self.cells_out.write(json.dumps({"position": position, "t": t, **r}) + "\n")

    def summary(self) -> dict[str, Any]:
        import numpy as np

        return {
            "fields": self.fields,
            "cells": self.cells,
            "mitotic_cells": self.mitotic,
            "divisions": self.divisions,
            "nuclear_source": self.sources,
            "ms_p50": {k: round(float(np.median(v)), 1) for k, v in self.ms.items()},
        }

    def close(self) -> None:
        self.analyzer.close()
        if self.cells_out is not None:
            self.cells_out.close()
