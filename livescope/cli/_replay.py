"""``livescope replay``: recorded datasets through the unchanged pipeline."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ._common import (
    EXIT_USER_ERROR,
    JsonOpt,
    emit,
    exit_unless_as_planned,
    fail,
    finite,
    given,
    given_or_none,
    given_path,
    progress_bar,
    setup_logging,
    shared_closeups,
    stderr,
    user_errors,
)

__all__ = ["parse_channel_map", "parse_speed", "replay", "replay_task"]


def parse_speed(text: str) -> float | None:
    """``realtime`` → 1, ``max`` → None (as fast as the pipeline goes), else a factor > 0.

    Raises
    ------
    ValueError
        naming the accepted values.

    """
    t = text.strip().lower()
    if t == "max":
        return None
    if t == "realtime":
        return 1.0
    try:
        value = float(t.rstrip("x"))
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"--speed {text!r}: use realtime, max or a factor > 0 (e.g. 10)")
    return value


def parse_channel_map(items: list[str]) -> dict[str, str]:
    """``["GFP=Fluo", ...]`` → ``{"GFP": "Fluo"}``; a clear error for anything else."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, target = item.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise ValueError(f"--channel-map {item!r}: write DATASET_CHANNEL=PROFILE_CHANNEL")
        name, target = name.strip(), target.strip()
        if out.get(name, target) != target:  # (the last one was kept, without a word)
            raise ValueError(
                f"--channel-map maps {name!r} twice, to {out[name]!r} and to {target!r}: give one"
            )
        out[name] = target
    return out


def replay(
    datasets: Annotated[
        list[Path],
        typer.Argument(
            parser=given_path,
            help="Recorded dataset(s): a livescope run folder, an NDTiff dataset, an OME-TIFF "
            "file, an OME-Zarr store or a folder of tNNN.tif frames (Cell Tracking Challenge).",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            parser=given_path, help="Output folder (new). Default: runs/replay-<date>-<time>."
        ),
    ] = None,
    plan: Annotated[
        Path | None,
        typer.Option(
            parser=given_path, help="Plan YAML whose policies: run (default: the recording's own)."
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            callback=given_or_none,
            help="Hardware profile (default: the recording's, else 'replay').",
        ),
    ] = None,
    speed: Annotated[
        str,
        typer.Option(help="realtime, max (as fast as the engines go; reproducible) or a factor."),
    ] = "max",
    channel_map: Annotated[
        list[str] | None,
        typer.Option(help="DATASET_CHANNEL=PROFILE_CHANNEL (repeatable), e.g. GFP=Fluo."),
    ] = None,
    channel: Annotated[
        str, typer.Option(callback=given, help="Channel of a CTC folder (it does not name one).")
    ] = "Fluo",
    interval_s: Annotated[
        float,
        typer.Option(
            min=1e-6,
            callback=finite,
            help="Seconds between time points, where the dataset lacks times.",
        ),
    ] = 1.0,
    pixel_size: Annotated[
        float | None,
        typer.Option(
            min=1e-6,
            callback=finite,
            help="Pixel size in µm; replaces the dataset's own, if it has one.",
        ),
    ] = None,
    nucleus_diameter_um: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            callback=finite,  # (inf: refused by the worker, once started, into --out)
            help="Nuclei's diameter in µm, for segmentation (with the pixel size).",
        ),
    ] = None,
    gate_timeout_s: Annotated[
        float,
        typer.Option(
            min=0.1,
            callback=finite,  # (nan: never timed out, a hung worker hung the replay)
            help="At max speed: longest wait for the worker per time point.",
        ),
    ] = 60.0,
    cluster: Annotated[
        str | None,
        typer.Option(
            callback=given_or_none,
            help="Dask scheduler address (tcp://host:8786) to spread the datasets over.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Several datasets without --cluster: local Dask worker processes (default 2).",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="CPU threads per engine in the worker (default: half the cores; with "
            "several datasets or --cluster: 1 per task).",
        ),
    ] = None,
    json_out: JsonOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    """Replay a recorded dataset through the pipeline: results, report and what-if decisions.

    The recorded frames are served by a replay camera on a Micro-Manager core,
    so the agent, the bus, the engines and the policies run as in a live run.
    Decisions are checked and logged as what-if (decisions.jsonl) but never
    change which recorded frames are served. Writes OUT/results/, OUT/report.html
    and OUT/summary.json.

    Several datasets (or --cluster) run as one task each on a Dask cluster (a
    local one of --workers processes unless --cluster names a scheduler), each
    into OUT/<dataset name>/; a failed task is retried twice, then reported
    (exit 1).
    """
    setup_logging(verbose)
    try:
        factor = parse_speed(speed)
        mapping = parse_channel_map(channel_map or [])
    except ValueError as exc:
        fail(str(exc), as_json=json_out)
    if workers is not None and cluster is not None:  # (it would be ignored)
        fail(
            "--workers sets the processes of a local cluster; the scheduler given by "
            "--cluster runs the replays on its own workers",
            as_json=json_out,
        )
    if cluster is None and threads is not None and threads > (cores := os.cpu_count() or 1):
        # (--threads 100000 started a worker of ~32,000 threads: every later thread start on
        # the PC failed; a cluster's workers are other machines, their cores their own)
        fail(f"--threads {threads} is more than this PC's {cores} cores", as_json=json_out)
    if cluster is None and workers is not None and workers > (cores := os.cpu_count() or 1):
        # (each local worker process replays a dataset with its own agent and engines:
        # --workers 1000 started a thousand, the PC out of memory before any finished)
        fail(
            f"--workers {workers} is more than this PC's {cores} cores (each replays a "
            "dataset with its own engines)",
            as_json=json_out,
        )
    with user_errors(json_out):  # (a path the system refuses to look at: named)
        problems = _dataset_problems(datasets)
    if problems:  # (before a cluster starts: one missing of several failed as the last task)
        fail(
            problems[0]
            if len(problems) == 1
            else f"{len(problems)} of the {len(datasets)} datasets cannot be replayed "
            "(nothing was replayed):\n  - " + "\n  - ".join(problems),
            as_json=json_out,
            problems=problems,
        )
    run_dir = out or Path("runs") / time.strftime("replay-%Y%m%d-%H%M%S")
    if len(datasets) > 1 or cluster is not None:
        with user_errors(json_out):  # once here, not as a failure of every task
            _check_replay_options(plan, profile)
        options = {"plan": plan.resolve() if plan else None,
                   "profile": _profile_for_workers(profile),
                   "speed": factor, "channel_map": mapping, "channel": channel,
                   "interval_s": interval_s, "pixel_size_um": pixel_size,
                   "gate_timeout_s": gate_timeout_s,
                   "nucleus_diameter_um": nucleus_diameter_um}  # fmt: skip
        _replay_cluster(datasets, run_dir, cluster, workers or 2, threads or 1, options, json_out)
        return
    with user_errors(json_out):
        summary = _replay_one(
            datasets[0], run_dir, plan=plan, profile=profile, speed=factor, channel_map=mapping,
            channel=channel, interval_s=interval_s, pixel_size_um=pixel_size, threads=threads,
            nucleus_diameter_um=nucleus_diameter_um,
            gate_timeout_s=gate_timeout_s, json_out=json_out,
        )  # fmt: skip
    _print_replay(summary, json_out)


def _print_replay(summary: dict[str, Any], json_out: bool) -> None:
    """Print a replay's summary; exit 2 if a Ctrl+C stopped it, 1 if it did not end as planned.

    ``ok`` false (e.g. decisions not logged) exited 0, as `livescope run` and
    `livescope agent` no longer do: a script went on as if all were well.
    """
    if json_out:
        emit(summary)
    else:
        _print_replay_text(summary)
    exit_unless_as_planned(summary, "replay")


def _print_replay_text(summary: dict[str, Any]) -> None:
    """Say what a replay did, for people (stderr), and its folder on stdout."""
    for w in summary.get("warnings", []):
        stderr.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    d = summary["decisions"]
    over = summary.get("replay_overhead") or {}
    stderr.print(
        f"replayed {summary['frames_served']} frame(s) of {summary['dataset']} "
        f"({summary['format']}); analysed {summary['frames_analysed']}; "
        f"{d['what_if']} what-if decision(s)"
        + (f", {d['not_sent']} not sent (made after the last frame)" if d.get("not_sent") else "")
        + (f"; {text}" if (text := shared_closeups(d)) else "")
        + (
            f"; the worker waited for the replay {over['share']:.0%} of its "
            f"{over['analysis_wall_s']:g} s"
            if over
            else ""
        ),
        highlight=False,
        markup=False,
    )
    stderr.print(f"report: {summary['report']}", highlight=False, markup=False)
    typer.echo(summary["out"])


def _dataset_problems(datasets: list[Path]) -> list[str]:
    """Say why each path of ``datasets`` cannot be a dataset ([] when each can be one).

    Only what a path is, not what it holds: that is for `livescope.record.open_dataset`
    to judge, in the replay (or task) of that dataset. Called before any cluster
    starts or any dataset is replayed: a missing one of several was replayed as a
    task that failed, after the others had been (13 s in for two datasets).

    Raises
    ------
    OSError
        if the system refuses to look at a path (e.g. no permission on its folder).

    """
    from livescope.record import OME_TIFF_SUFFIXES  # (here: the replay imports it anyway)

    problems: list[str] = []
    for d in datasets:
        if not d.exists():  # (a link to nothing too)
            problems.append(f"{d}: no such file or folder")
        elif d.is_file() and d.suffix.lower() not in OME_TIFF_SUFFIXES:
            problems.append(
                f"{d}: a file, and the only dataset livescope replays that is one file is an "
                f"OME-TIFF ({', '.join(OME_TIFF_SUFFIXES)})"
            )
        elif not d.is_file() and not d.is_dir():
            problems.append(f"{d}: neither a file nor a folder")
    return problems


def _profile_for_workers(profile: str | None) -> str | None:
    """Return ``--profile`` as a cluster's workers can load it: a file's absolute path.

    Paths are made absolute because the workers do not run in this folder. A
    shipped name stays a name even where a folder of that name is here (an
    earlier ``--out replay``): `load_profile` takes a bare name for a file only,
    so the folder's absolute path made every task fail on "a folder, not a YAML
    file" after the check here had passed.
    """
    if profile is not None and Path(profile).is_file():
        return str(Path(profile).resolve())
    return profile


def _check_replay_options(plan: Path | None, profile: str | None) -> None:
    """Refuse a bad ``--profile`` or ``--plan`` (its policies) before any dataset is replayed.

    Each task would fail the same way (see `livescope.pipeline.run_replay`,
    which checks them again per dataset, against the profile each runs on).
    """
    from livescope.pipeline import replay_policies
    from livescope.policy import rules_for_profile, rules_from_spec
    from livescope.schema import load_profile

    prof = load_profile(profile) if profile is not None else None
    if plan is None:
        return
    policies = replay_policies(plan)
    if prof is not None:
        rules_for_profile(policies, prof, source=str(plan))
    else:  # (each dataset's own profile is known only to its task: the rules' form here)
        rules_from_spec(policies, source=str(plan))


def _replay_cluster(
    datasets: list[Path], run_dir: Path, cluster: str | None, workers: int, threads: int,
    options: dict[str, Any], json_out: bool,
) -> None:  # fmt: skip
    from livescope.pipeline import replay_many

    # for people, each failed task is listed below, with its error: replay_many's log of
    # it as it failed said each twice (with --json, the list is on stdout, the log on stderr)
    listed = _LoggedBy(replay_many.__name__, logging.ERROR)
    log = logging.getLogger("livescope")
    if not json_out:
        log.addFilter(listed)
    try:
        with user_errors(json_out):
            summary = replay_many(
                datasets, run_dir, cluster=cluster, workers=workers, threads=threads,
                task=replay_task, options=options,
                progress=None if json_out else lambda n, total: stderr.print(
                    f"{n}/{total} replays finished", highlight=False),
            )  # fmt: skip
    finally:
        log.removeFilter(listed)
    if json_out:
        emit(summary)
    else:
        for d in summary["done"]:
            stderr.print(f"done: {d['dataset']} → {d['report']}", highlight=False, markup=False)
            for w in d.get("warnings", []):
                stderr.print(f"  [yellow]warning:[/] {escape(w)}", highlight=False)
        for f in summary["failed"]:
            failed = escape(f"{f['dataset']}: {f['error']}")
            stderr.print(f"[red]failed:[/] {failed}", highlight=False)
        typer.echo(summary["out"])
    if summary.get("interrupted"):  # (exit 2, as a run a Ctrl+C stopped)
        stderr.print("interrupted: the replays not finished were cancelled", highlight=False)
        raise typer.Exit(EXIT_USER_ERROR)
    if not summary["ok"]:
        raise typer.Exit(1)


class _LoggedBy(logging.Filter):
    """Drops the records of ``level`` or above that the function ``func`` logs."""

    def __init__(self, func: str, level: int) -> None:
        super().__init__()
        self.func = func
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for a record to drop (called on the thread that logs it)."""
        return not (record.funcName == self.func and record.levelno >= self.level)


def _write_report(out: Path, summary: dict[str, Any]) -> None:
    from livescope.schema import write_atomic
    from livescope.view import write_report

    summary["report"] = str(write_report(out).resolve())
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))


def replay_task(spec: Any) -> dict[str, Any]:
    """One dataset of ``livescope replay --cluster``: replay it, then write its report."""
    from livescope.pipeline import run_replay_task

    return run_replay_task(spec, finish=_write_report)


def _replay_one(dataset: Path, run_dir: Path, *, json_out: bool, **kwargs: Any) -> dict[str, Any]:
    from livescope.pipeline import run_replay

    with progress_bar("replaying", json_out=json_out) as (bar, task):

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=min(done, total), total=total)

        summary = run_replay(dataset, run_dir, progress=progress, **kwargs)
        bar.update(task, description="writing the report")
        _write_report(run_dir, summary)
    return summary
