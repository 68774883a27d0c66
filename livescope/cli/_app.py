"""The ``livescope`` command line (typer). Every command takes ``--json``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from livescope import __version__

from ._agent import agent, worker
from ._common import JsonOpt, emit, fail, setup_logging, stderr, user_errors
from ._engines import bench_engines, engines_app, eval_app
from ._track import bench_track, eval_track, track

app = typer.Typer(
    name="livescope",
    help="Microscope-side real-time acquisition controller.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
profile_app = typer.Typer(
    help="Hardware profiles: validate rig descriptions.", no_args_is_help=True
)
bench_app = typer.Typer(
    help="Benchmarks (print JSON with ratios measured in one run).", no_args_is_help=True
)
app.add_typer(profile_app, name="profile")
app.add_typer(bench_app, name="bench")
app.command()(agent)
app.command()(worker)
app.add_typer(engines_app, name="engines")
app.add_typer(eval_app, name="eval")
app.command()(track)
eval_app.command("track")(eval_track)
bench_app.command("track")(bench_track)

VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages to stderr.")]


@app.callback()
def _root() -> None:
    """Microscope-side real-time acquisition controller."""


@app.command()
def version(json_out: JsonOpt = False) -> None:
    """Print the livescope version."""
    if json_out:
        emit({"livescope": __version__})
    else:
        typer.echo(__version__)


@app.command()
def demo(
    frames: Annotated[
        int, typer.Option(min=1, help="Time points to acquire (each: every position and channel).")
    ] = 30,
    positions: Annotated[int, typer.Option(min=1, help="Stage positions in the default plan.")] = 3,
    interval_s: Annotated[
        float, typer.Option(min=0, help="Time-lapse interval in sample time, seconds.")
    ] = 120.0,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (new). Default: runs/demo-<date>-<time>.")
    ] = None,
    profile: Annotated[
        str, typer.Option(help="Hardware profile: a shipped name or a YAML path.")
    ] = "sim",
    plan: Annotated[
        Path | None, typer.Option(help="Plan YAML (a useq MDASequence) instead of the default.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Overrides the profile's simulation seed.")
    ] = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Acquire a multi-position, multi-channel time-lapse on the simulated microscope.

    Records every frame (OME-Zarr + a per-frame event log) and the simulation's
    ground truth (Cell Tracking Challenge layout) into the run folder.
    """
    setup_logging(verbose)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from livescope.schema import load_plan, load_profile
    from livescope.scope import demo_sequence, run_simulated

    with user_errors(json_out):
        prof = load_profile(profile)
        if prof.kind != "simulated":
            fail(
                f"profile {prof.name!r} is kind {prof.kind!r}; `livescope demo` runs the "
                "simulated microscope (use a profile with kind: simulated, e.g. 'sim')",
                as_json=json_out,
            )
        if plan is not None:
            sequence = load_plan(plan)
        else:
            sequence = demo_sequence(
                prof, timepoints=frames, positions=positions, interval_s=interval_s
            )
        run_dir = out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=stderr,
            transient=True,
            disable=json_out or not stderr.is_terminal,
        ) as bar:
            task = bar.add_task("acquiring", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            summary = run_simulated(prof, sequence, run_dir, seed=seed, progress=progress)
    if json_out:
        emit(summary)
        return
    _print_demo(summary)


def _print_demo(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="livescope demo", show_header=False)
    for key in ("frames_acquired", "timepoints", "positions", "channels", "duration_s", "fps"):
        value = summary[key]
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    table.add_row("ground-truth tracks", str(summary["truth"].get("tracks", 0)))
    table.add_row("divisions in view", str(summary["truth"].get("divisions", 0)))
    table.add_row("recording", summary["recording"])
    table.add_row("ground truth", summary["ground_truth"])
    stderr.print(table)
    typer.echo(summary["out"])


@profile_app.command("check")
def profile_check(
    files: Annotated[list[Path], typer.Argument(help="Profile YAML files to validate.")],
    json_out: JsonOpt = False,
) -> None:
    """Validate hardware profiles; print every error with its field path.

    Exits 0 when all are valid, 1 when any is invalid.
    """
    from livescope.schema import ProfileError, load_profile

    results = []
    for f in files:
        try:
            prof = load_profile(f)
        except ProfileError as exc:
            results.append({"file": str(f), "valid": False, "problems": exc.problems})
            if not json_out:
                stderr.print(f"[red]✗[/] {f}", highlight=False)
                for p in exc.problems:
                    stderr.print(f"    {p}", highlight=False, markup=False)
        else:
            results.append({"file": str(f), "valid": True, "name": prof.name, "kind": prof.kind})
            if not json_out:
                stderr.print(f"[green]✓[/] {f} ({prof.name}, {prof.kind})", highlight=False)
    ok = all(r["valid"] for r in results)
    if json_out:
        emit({"ok": ok, "results": results})
    if not ok:
        raise typer.Exit(1)


@bench_app.command("bus")
def bench_bus_cmd(
    paced_seconds: Annotated[float, typer.Option(min=0.5, help="Length of the paced run.")] = 5.0,
    json_out: JsonOpt = True,
) -> None:
    """Frame bus throughput and latency: raw pyzmq vs inline vs shared memory, + paced run."""
    setup_logging(False)
    from livescope.bus import bench_bus

    with user_errors(json_out):
        result = bench_bus(paced_seconds=paced_seconds)
    emit(result)


@bench_app.command("engines")
def bench_engines_cmd(
    engine: Annotated[str, typer.Option(help="Segmentation engine.")] = "nuclei-unet",
    stain: Annotated[str, typer.Option(help="Virtual-staining engine ('' to skip).")] = (
        "nuclei-stain"
    ),
    states: Annotated[str, typer.Option(help="Cell-state engine ('' to skip).")] = "cell-state",
    repeats: Annotated[int, typer.Option(min=1, help="Frames per size.")] = 3,
    json_out: JsonOpt = True,
) -> None:
    """Ms per frame per backend at 512², 1024², 2048² for every engine; segmentation vs classical.

    Segmentation shows post-processing apart and the classical Otsu + watershed
    pipeline side by side; the classifier is timed per frame of 100 and 1,000 cells.
    """
    bench_engines(json_out, engine, repeats, stain=stain or None, states=states or None)


@bench_app.command("camera")
def bench_camera_cmd(
    seconds: Annotated[float, typer.Option(min=0.1, help="Seconds per case.")] = 3.0,
    profile: Annotated[str, typer.Option(help="Simulated hardware profile.")] = "sim",
    json_out: JsonOpt = True,
) -> None:
    """Simulated-camera frames per second at 512² and 2048² (targets 100 and 10 fps)."""
    setup_logging(False)
    from livescope.schema import load_profile
    from livescope.scope import bench_camera

    with user_errors(json_out):
        result = bench_camera(load_profile(profile), seconds=seconds)
    emit(result)
