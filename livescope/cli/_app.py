"""The ``livescope`` command line (typer). Every command takes ``--json``."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from livescope import __version__

from ._agent import agent, check_engine_task, worker
from ._common import (
    BenchJsonOpt,
    JsonOpt,
    PortOpt,
    ProfileOpt,
    SeedOpt,
    ThreadsOpt,
    VerboseOpt,
    _at_most_the_cores,
    accelerated,
    emit,
    exit_unless_as_planned,
    fail,
    finite,
    given,
    given_path,
    progress_bar,
    refuse_replay_profile,
    refuse_unknown_backend,
    setup_logging,
    shared_closeups,
    stderr,
    user_errors,
)
from ._engines import bench_engines, engines_app, eval_app
from ._plan import plan_app
from ._replay import replay
from ._track import bench_track, eval_track, track
from ._view import view

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
app.add_typer(plan_app, name="plan")
app.add_typer(bench_app, name="bench")
app.command()(agent)
app.command()(worker)
app.command()(view)
app.command()(replay)
app.add_typer(engines_app, name="engines")
app.add_typer(eval_app, name="eval")
app.command()(track)
eval_app.command("track")(eval_track)
bench_app.command("track")(bench_track)

BackendOpt = Annotated[
    str,
    typer.Option(
        help="How the agent acquires: mda (pymmcore-plus) or pycromanager (a running "
        "Micro-Manager; pycromanager's Python backend on a simulated profile)."
    ),
]
SimProfileOpt = Annotated[str, typer.Option(callback=given, help="Simulated hardware profile.")]
"""``--profile`` of the benchmarks that run the simulated microscope."""


def _print_version(value: bool) -> None:
    """Print the livescope version and exit, as ``livescope version`` (``--version``)."""
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the livescope version and exit.",
        ),
    ] = False,
) -> None:
    """Microscope-side real-time acquisition controller."""


@app.command()
def version(json_out: JsonOpt = False) -> None:
    """Print the livescope version."""
    if json_out:
        emit({"livescope": __version__})
    else:
        typer.echo(__version__)


ANALYSIS_ACCELERATION = 40.0
"""Sample seconds per wall second of a simulated run with the pipeline worker in the loop
(`demo`, `run`): fast enough for a short demo, slow enough that the engines keep up on a
2-core CPU whose Python reference (``machine.cpu_reference_ms``) is under ~40 ms (at the sim
profile's own 600x most decisions would come after the run ended). On a slower PC the
analysis falls behind; the summary's ``analysis_pace`` says the pace it kept."""


def _finite_at_least_0(value: float | None) -> float | None:
    """Refuse a negative or non-finite float option (a callback; ``min=0`` called NaN negative).

    Raises
    ------
    typer.BadParameter
        a usage error (exit 2) that names the option.

    """
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise typer.BadParameter(f"must be a finite number >= 0, not {value:g}")
    return value


@app.command()
def demo(
    frames: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Time points to acquire (each: every position and channel); default 30. "
            "Not with --plan.",
            show_default=False,
        ),
    ] = None,
    positions: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Stage positions; default 3 (at most as many fields as fit along the "
            "stage's diagonal: 5 on 'sim'). Not with --plan.",
            show_default=False,
        ),
    ] = None,
    interval_s: Annotated[
        float | None,
        typer.Option(
            callback=_finite_at_least_0,
            help="Time-lapse interval in sample time, seconds; default 120. Not with --plan.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            parser=given_path,
            help="Run folder (new, or one without a recording or an earlier run's results). "
            "Default: runs/demo-<date>-<time>.",
        ),
    ] = None,
    profile: ProfileOpt = "sim",
    plan: Annotated[
        Path | None,
        typer.Option(
            parser=given_path, help="Plan YAML (a useq MDASequence, optionally with policies:)."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Overrides the profile's simulation seed.")
    ] = None,
    analysis: Annotated[
        bool,
        typer.Option(
            help="Run the pipeline worker, policies and report (--no-analysis: record only)."
        ),
    ] = True,
    time_acceleration: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            callback=finite,
            help="Sample seconds per wall second (default: 40 with analysis, so the CPU "
            "engines keep up on most 2-core PCs: a slower PC's summary says the pace they "
            "kept; the profile's without).",
        ),
    ] = None,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run the simulated microscope through the whole system and write a report.

    Acquires a multi-position time-lapse (phase contrast + nuclear stain) of
    dividing cells; records every frame with its ground truth; the pipeline
    worker (its own process, restarted if it dies) segments, tracks, stains
    and classifies every field; a rule images each cell entering mitosis with a
    fast time-lapse centred on it; the triggers are scored against the
    simulation's true mitoses; RUN/report.html shows it all.
    """
    setup_logging(verbose)

    from livescope.schema import check_plan, load_plan, load_profile, plan_sections
    from livescope.scope import demo_sequence

    with user_errors(json_out):
        prof = load_profile(profile)
        if prof.kind != "simulated" or prof.simulation is None:
            fail(
                f"profile {prof.name!r} is kind {prof.kind!r}; `livescope demo` runs the "
                "simulated microscope (use a profile with kind: simulated, e.g. 'sim')",
                as_json=json_out,
            )
        accel = time_acceleration or (ANALYSIS_ACCELERATION if analysis else None)
        prof = accelerated(prof, accel, as_json=json_out)
        policies: list[Any] | None = None
        # the built-in plan's shape as given (what is not keeps demo_sequence's default)
        shape: dict[str, Any] = {"timepoints": frames, "positions": positions,
                                 "interval_s": interval_s}  # fmt: skip
        given = {k: v for k, v in shape.items() if v is not None}
        if plan is not None:
            if given:
                options = {"timepoints": "--frames", "positions": "--positions",
                           "interval_s": "--interval-s"}  # fmt: skip
                fail(
                    f"{' and '.join(options[k] for k in given)} shape the built-in demo plan; "
                    "with --plan the plan "
                    f"gives them ({plan}: time_plan, stage_positions): leave "
                    f"{'them' if len(given) > 1 else 'it'} out",
                    as_json=json_out,
                )
            sequence = load_plan(plan)
            check_plan(sequence, prof, str(plan))  # (named by its file in the message)
            policies = plan_sections(plan).get("policies")  # type: ignore[assignment]
        else:
            sequence = demo_sequence(prof, **given)
        run_dir = out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
        if analysis and plan is None:
            from livescope.pipeline import DEMO_POLICIES

            policies = DEMO_POLICIES
        summary = _acquire_and_report(
            prof, sequence, run_dir, policies=policies, analysis=analysis, seed=seed,
            threads=threads, json_out=json_out, plan_file=plan,
        )  # fmt: skip
    _print_run(summary, "livescope demo", json_out)


def _print_run(summary: dict[str, Any], title: str, json_out: bool) -> None:
    """Print a run's summary (JSON, or the table); exit 2 if a Ctrl+C stopped it.

    Exit 1 if it ended otherwise than planned (``ok`` false: e.g. decisions
    not logged), as `livescope agent` does.
    """
    if json_out:
        emit(summary)
    else:
        _print_demo(summary, title)
    exit_unless_as_planned(summary)


def _acquire_and_report(
    prof: Any, sequence: Any, run_dir: Path, *, policies: list[Any] | None, analysis: bool,
    seed: int | None, threads: int | None, json_out: bool, plan_file: Path | None = None,
    backend: str = "mda", port: int = 4827,
) -> dict[str, Any]:  # fmt: skip
    """Acquire (with the supervised worker when ``analysis``), then write the report."""
    if analysis:  # a bad rule is reported now, not by a worker that cannot start
        from livescope.policy import rules_for_profile
        from livescope.schema import plan_events, position_name

        rules_for_profile(policies, prof, positions=map(position_name, plan_events(sequence)))
    from livescope.scope import interrupted_summary, run_simulated

    with progress_bar("acquiring", json_out=json_out) as (bar, task):

        def progress(done: int, total: int) -> None:
            extra = max(0, done - total)
            label = f"acquiring (+{extra} added by decisions)" if extra else "acquiring"
            bar.update(task, completed=min(done, total), total=total, description=label)

        if analysis:
            from livescope.pipeline import run_adaptive

            summary = run_adaptive(
                prof, sequence, run_dir, policies=policies, seed=seed, threads=threads,
                progress=progress, plan_file=plan_file, backend=backend, port=port,
            )  # fmt: skip
        else:
            started = time.time()
            try:
                summary = run_simulated(
                    prof, sequence, run_dir, seed=seed, progress=progress, backend=backend
                )
            except KeyboardInterrupt:  # Ctrl+C: what was recorded is reported
                summary = interrupted_summary(run_dir, since=started)
        bar.update(task, description="writing the report")
        from livescope.schema import write_atomic
        from livescope.view import write_report

        summary["report"] = str(write_report(run_dir).resolve())
        write_atomic(run_dir / "summary.json", json.dumps(summary, indent=1))
    return summary


@app.command("run")
def run_cmd(
    plan: Annotated[
        Path,
        typer.Argument(parser=given_path, help="Plan YAML: a useq MDASequence, with policies:."),
    ],
    profile: ProfileOpt = "sim",
    out: Annotated[
        Path | None,
        typer.Option(
            parser=given_path,
            help="Run folder (new, or one without a recording or an earlier run's results). "
            "Default: runs/run-<date>-<time>.",
        ),
    ] = None,
    seed: SeedOpt = None,
    time_acceleration: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            callback=finite,
            help="Simulated profiles: sample seconds per wall second (default: 40, as in "
            "the demo).",
        ),
    ] = None,
    threads: ThreadsOpt = None,
    backend: BackendOpt = "mda",
    port: PortOpt = 4827,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run a plan with the pipeline worker and its policies in the loop; write the report.

    The agent records every frame and streams it; the worker (its own process,
    restarted if it dies) analyses every field and sends the decisions of the
    plan's policies that pass the profile's guardrails. A simulated profile runs
    on the simulated microscope (and scores mitosis triggers against its truth);
    a micromanager profile drives the rig through its Micro-Manager config, or
    with --backend pycromanager a running Micro-Manager application (its server
    on --port; on a simulated profile, pycromanager's Python backend).
    """
    setup_logging(verbose)
    from livescope.schema import check_plan, load_plan, load_profile, plan_sections

    with user_errors(json_out):
        refuse_unknown_backend(backend, as_json=json_out)
        prof = load_profile(profile)
        if time_acceleration is None and prof.simulation is not None:
            time_acceleration = ANALYSIS_ACCELERATION  # (the profile's own, 600x, outruns them)
        prof = accelerated(prof, time_acceleration, as_json=json_out)
        refuse_replay_profile(prof, "run", as_json=json_out)
        if seed is not None and prof.kind != "simulated":  # (a real rig's run ignored it)
            fail("--seed applies to simulated profiles only", as_json=json_out)
        sequence = load_plan(plan)
        check_plan(sequence, prof, str(plan))
        policies = plan_sections(plan).get("policies")
        run_dir = out or Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
        summary = _acquire_and_report(
            prof, sequence, run_dir, policies=policies, analysis=True,  # type: ignore[arg-type]
            seed=seed, threads=threads, json_out=json_out, plan_file=plan, backend=backend,
            port=port,
        )  # fmt: skip
    _print_run(summary, "livescope run", json_out)


def _trigger_scores(summary: dict[str, Any]) -> str:
    """Return the table's trigger precision / recall, or why there is none."""
    ev = summary.get("evaluation") or {}
    if why := ev.get("note") or ev.get("error"):
        return f"not scored: {why}"
    precision, recall = summary.get("trigger_precision"), summary.get("trigger_recall")
    if precision is None and recall is None and "triggers" not in ev:  # (scored ones list them)
        return "not scored: no ground truth"
    return (
        f"{'– (no trigger)' if precision is None else precision} / "
        f"{'– (no mitosis in view twice)' if recall is None else recall}"
    )


def _print_demo(summary: dict[str, Any], title: str = "livescope demo") -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column()
    # (folded, not cut short with "…": a path, the report's above all, is what a user copies)
    table.add_column(overflow="fold")

    def add_row(key: str, value: str) -> None:  # (escaped: a path may hold "[...]")
        table.add_row(key, escape(value))

    for key in ("frames_acquired", "timepoints", "positions", "channels", "duration_s", "fps"):
        if (value := summary.get(key)) is not None:  # (a micromanager run has no timepoints)
            add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    if (truth := summary.get("truth")) is not None:  # (simulated runs only)
        add_row("ground-truth tracks", str(truth.get("tracks", 0)))
        # (completed in view, both daughters seen: not the mitoses recall is over, which
        # counts those begun before the run or not divided by its end too)
        mitoses = (summary.get("evaluation") or {}).get("mitoses_observable")
        add_row(
            "divisions completed in view",
            str(truth.get("divisions", 0))
            + (
                f" ({mitoses} mitoses seen in view at 2+ time points, incl. begun before "
                "the run or not divided by its end)"
                if mitoses is not None
                else ""
            ),
        )
    if "frames_analysed" in summary:
        d = summary["decisions"]
        add_row("frames analysed", str(summary["frames_analysed"]))
        if runtimes := summary.get("engine_runtimes"):
            add_row(
                "engines run on",
                "; ".join(f"{k}: {r['backend']} on {r['device']} ({r['precision']})"
                          for k, r in runtimes.items()),
            )  # fmt: skip
        not_sent = (
            f", {d['not_sent']} not sent (made after the run ended)" if d.get("not_sent") else ""
        )
        shared = f", {text}" if (text := shared_closeups(d)) else ""
        if d.get("unanswered"):
            shared += f", {d['unanswered']} never answered"
        if d.get("answered_late"):
            shared += f"; {d['answered_late']} answered late"
        add_row(
            "decisions", f"{d['accepted']} accepted, {d['rejected']} rejected{not_sent}{shared}"
        )
        add_row("trigger precision / recall", _trigger_scores(summary))
        if (delay := summary["mitosis_to_trigger_s"]) is not None:
            add_row("mitosis → trigger (median)", f"{delay} s")
        if (imaged := summary.get("trigger_recall_imaged")) is not None:
            # (the acquisition's figures: a trigger whose close-up took a frame)
            closeup = summary.get("mitosis_to_closeup_s")
            add_row(
                "mitoses imaged by a close-up (recall)",
                str(imaged) + (f", {closeup} s from onset (median)" if closeup is not None else ""),
            )
        if tracking := summary.get("tracking"):
            add_row(
                "tracks vs ground truth (TRA)",
                ", ".join(f"{p}: {sc['tra']}" if "tra" in sc else f"{p}: not scored"
                          for p, sc in tracking.items()),
            )  # fmt: skip
        over = summary["latency_ms"].get("overhead", {})
        add_row("pipeline overhead p50 / p99", f"{over.get('p50')} / {over.get('p99')} ms")
        if (behind := summary.get("analysis_behind_s")) and behind.get("max", 0) >= 1:
            skipped = summary.get("stains_skipped_behind")
            add_row(
                "analysis behind the acquisition",
                f"up to {behind['max']:.1f} s, {behind['last']:.1f} s at the end (the engines "
                "were slower than the acquisition: decisions came that late)"
                + (f"; {skipped} overlay stain(s) skipped to catch up" if skipped else ""),
            )
        if pace := summary.get("analysis_pace"):
            add_row(
                "pace the analysis kept",
                f"about {pace:g} sample s per wall s, the acquisition "
                f"{summary.get('time_acceleration'):g} (a lower --time-acceleration keeps up, "
                "and takes longer)",
            )
        if pc := summary.get("machine"):
            add_row(
                "machine",
                f"{pc['cpu']}, {pc['logical_cpus'] or '?'} logical CPUs; Python reference "
                f"{pc['cpu_reference_ms']} ms",
            )
        if (stalls := summary.get("machine_stalls")) and "error" in stalls:
            add_row("machine stalls > 2 ms", f"not measured: {stalls['error']}")
        elif stalls:
            add_row(
                "machine stalls > 2 ms",
                f"{stalls['over_2ms_per_s']}/s, longest {stalls['max_ms']} ms; in "
                f"{stalls['slow_fields_in_a_stall']} of {stalls['slow_fields']} slow fields"
                # (the fast fields' share beside it: a stall in as many of them says the
                # stalls do not make the slow ones)
                + (
                    f", {stalls['fast_fields_in_a_stall']} of {stalls['fast_fields']} fast"
                    if stalls.get("fast_fields") is not None
                    else ""
                ),
            )
        if mem := summary.get("peak_memory_mb"):
            add_row("peak memory (this process / worker)",
                    f"{mem.get('run')} / {mem.get('worker')} MB")  # fmt: skip
        dropped = f"{summary['dropped_analysis_frames']} / {summary['dropped_recorded_frames']}"
        add_row("dropped (analysis / recorded)", dropped)
    add_row("recording", summary["recording"])
    add_row("report", summary["report"])
    stderr.print(table)
    typer.echo(summary["out"])


def _say_if_summary_unreadable(run: Path) -> None:
    """Warn on stderr when the run's summary.json is there but unreadable.

    The report is written all the same, without what the summary says (its
    problems list says why); the command exits 0, and nothing on the terminal
    told that the summary had been left out.
    """
    path = run / "summary.json"
    if not path.is_file():  # (a run killed before it ended: its report says so)
        return
    try:
        # (as the report reads it: a damaged UTF-8 byte is no reason to leave it out)
        summary = json.loads(path.read_bytes().decode("utf-8", errors="replace"))
    except OSError as exc:
        why = f"cannot be read ({exc.strerror or exc})"
    except (ValueError, RecursionError) as exc:
        why = f"is not valid JSON ({exc})"
    else:
        if isinstance(summary, dict):
            return
        why = "does not hold a JSON object"
    stderr.print(
        f"warning: {path} {why}: the report leaves out what the summary says",
        highlight=False, markup=False,
    )  # fmt: skip


@app.command()
def report(
    run: Annotated[
        Path,
        typer.Argument(
            parser=given_path, metavar="RUN", help="Run folder (a demo, run, agent or replay)."
        ),
    ],
    json_out: JsonOpt = False,
) -> None:
    """Write (again) a run's self-contained HTML report, RUN/report.html."""
    setup_logging(False)
    from livescope.view import write_report

    with user_errors(json_out):
        path = write_report(run).resolve()  # (a path that is no run folder: said so)
    _say_if_summary_unreadable(run)
    if json_out:
        emit({"ok": True, "report": str(path)})
    else:
        typer.echo(str(path))


@profile_app.command("check")
def profile_check(
    # (`given`, not `given_path`: the text as given tells a path from a shipped name)
    files: Annotated[
        list[str], typer.Argument(parser=given, help="Profile YAML files to validate.")
    ],
    json_out: JsonOpt = False,
) -> None:
    """Validate hardware profiles; print every error with its field path.

    Exits 0 when all are valid, 1 when any is invalid.
    """
    from livescope.schema import ProfileError, load_profile

    results = []
    for text in files:
        f = Path(text)
        try:
            # a path given as one (./rig, rig/) is a file, never a shipped profile's name:
            # as a Path, ./somefolder lost its ./ and was looked up as a shipped profile
            prof = load_profile(f if text == f.name else f.absolute())
        except ProfileError as exc:
            results.append({"file": str(f), "valid": False, "problems": exc.problems})
            if not json_out:
                stderr.print(f"[red]✗[/] {escape(str(f))}", highlight=False)
                for p in exc.problems:
                    stderr.print(f"    {p}", highlight=False, markup=False)
        else:
            results.append({"file": str(f), "valid": True, "name": prof.name, "kind": prof.kind})
            if not json_out:
                stderr.print(
                    f"[green]✓[/] {escape(f'{f} ({prof.name}, {prof.kind})')}", highlight=False
                )
    ok = all(r["valid"] for r in results)
    if json_out:
        emit({"ok": ok, "results": results})
    if not ok:
        raise typer.Exit(1)


@bench_app.command("bus")
def bench_bus_cmd(
    paced_seconds: Annotated[
        float,
        typer.Option(min=0.5, max=3600, callback=finite, help="Length of the paced run (s)."),
    ] = 5.0,
    json_out: BenchJsonOpt = True,
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
    json_out: BenchJsonOpt = True,
) -> None:
    """Ms per frame per backend at 512², 1024², 2048² for every engine; segmentation vs classical.

    Segmentation shows post-processing apart and the classical Otsu + watershed
    pipeline side by side; the classifier is timed per frame of 100 and 1,000 cells.
    A backend that cannot run here is listed with why; one that fails to build or
    run an engine is listed with its error, the others are still timed, and the
    command exits 1 (``ok`` false).
    """
    with user_errors(json_out):  # each engine's task now, not once the others have run
        for name, role, option in ((engine, "seg", "--engine"), (stain, "stain", "--stain"),
                                   (states, "states", "--states")):  # fmt: skip
            if name:
                check_engine_task(name, role, option)
    bench_engines(json_out, engine, repeats, stain=stain or None, states=states or None)


@bench_app.command("camera")
def bench_camera_cmd(
    seconds: Annotated[
        float, typer.Option(min=0.1, callback=finite, help="Seconds per case.")
    ] = 3.0,
    profile: SimProfileOpt = "sim",
    json_out: BenchJsonOpt = True,
) -> None:
    """Simulated-camera frames per second at 512² and 2048² (targets 100 and 10 fps)."""
    setup_logging(False)
    from livescope.schema import load_profile
    from livescope.scope import bench_camera

    with user_errors(json_out):
        result = bench_camera(load_profile(profile), seconds=seconds)
    emit(result)


@bench_app.command("record")
def bench_record_cmd(
    frames: Annotated[int, typer.Option(min=2, help="Frames per channel and size.")] = 20,
    profile: SimProfileOpt = "sim",
    json_out: BenchJsonOpt = True,
) -> None:
    """Measure recorder CPU ms and frames/s at 512² and 2048² per codec, side by side."""
    setup_logging(False)
    from livescope.schema import load_profile
    from livescope.scope import bench_record

    with user_errors(json_out):
        result = bench_record(load_profile(profile), frames=frames)
    emit(result)


@bench_app.command("jitter")
def bench_jitter_cmd(
    seconds: Annotated[
        float, typer.Option(min=0.5, callback=finite, help="Seconds per round (4 rounds).")
    ] = 10.0,
    period_ms: Annotated[
        float, typer.Option(min=0.05, max=100, help="How long the probe sleeps each time.")
    ] = 1.0,
    busy: Annotated[
        int | None,
        typer.Option(
            min=1,
            callback=_at_most_the_cores,  # (--busy 100000: a load average past 100)
            help="Busy processes in the loaded rounds, at most the cores (default: one per core).",
        ),
    ] = None,
    turns: Annotated[int, typer.Option(min=1, help="How many times each round runs.")] = 4,
    json_out: BenchJsonOpt = True,
) -> None:
    """How late this machine wakes a thread, idle and beside busy processes (the latency floor)."""
    setup_logging(False)
    from livescope.bus import bench_jitter

    with user_errors(json_out):
        result = bench_jitter(seconds=seconds, period_ms=period_ms, busy=busy, turns=turns)
    emit(result)


@bench_app.command("pacing")
def bench_pacing_cmd(
    frames: Annotated[int, typer.Option(min=10, help="Time points in the plan.")] = 50,
    interval_ms: Annotated[
        float,
        # (no min here: bench_pacing's refusal names the exposure that sets it)
        typer.Option(callback=finite, help="The plan's interval, ms (at least 2 exposures: 40)."),
    ] = 100.0,
    worker_sleep_ms: Annotated[
        float,
        typer.Option(min=1, callback=finite, help="The slow worker's sleep after each frame, ms."),
    ] = 300.0,
    json_out: BenchJsonOpt = True,
) -> None:
    """Acquisition intervals with no worker vs a worker slower than the camera (target: 10 %).

    Runs `livescope agent` in real time twice (about 2 x frames x interval);
    run it on an otherwise idle machine.
    """
    setup_logging(False)
    from ._pacing_bench import bench_pacing

    with user_errors(json_out):
        result = bench_pacing(
            frames=frames, interval_ms=interval_ms, worker_sleep_ms=worker_sleep_ms
        )
    emit(result)


@bench_app.command("replay-cluster")
def bench_replay_cluster_cmd(
    datasets: Annotated[
        int,
        typer.Option(min=2, help="Recorded datasets to replay (2 or more: 1 keeps a worker idle)."),
    ] = 8,
    timepoints: Annotated[int, typer.Option(min=2, help="Time points per dataset.")] = 12,
    size: Annotated[
        int, typer.Option(min=64, max=4096, help="Frame size (pixels, square; 64 to 4096).")
    ] = 512,
    keep: Annotated[
        Path | None,
        typer.Option(
            parser=given_path,
            help="Keep the datasets and replays in this folder. A dataset kept there by an "
            "earlier run is replayed again if it was recorded with the same --size and "
            "--timepoints, and recorded again if not.",
        ),
    ] = None,
    json_out: BenchJsonOpt = True,
) -> None:
    """Replay throughput on a local Dask cluster of 2 worker processes vs 1 (target ≥ 1.6x).

    Engines run one thread per task. Run it on an otherwise idle machine: the
    ratio measures how well replays share the cores.
    """
    setup_logging(False)
    from livescope.pipeline import bench_replay_cluster

    with user_errors(json_out):
        result = bench_replay_cluster(
            datasets=datasets, timepoints=timepoints, size=size, keep=keep
        )
    emit(result)
