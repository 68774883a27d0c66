"""``livescope plan check``: a plan against a rig, before anything moves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ._common import JsonOpt, ProfileOpt, emit, stderr, user_errors

plan_app = typer.Typer(
    help="Acquisition plans: check them against a rig before a run.", no_args_is_help=True
)


def _check_one(path: Path, prof: Any) -> dict[str, Any]:
    """Check one plan file against ``prof``: its problems, else what it asks of the rig."""
    from livescope.policy import rules_for_profile
    from livescope.schema import (
        ConfigError,
        LivescopeError,
        check_plan,
        load_plan,
        plan_events,
        plan_figures,
        plan_sections,
    )

    try:
        sequence = load_plan(path)
        events = plan_events(sequence)
        check_plan(sequence, prof, str(path), events=events)
    except ConfigError as exc:
        return {"file": str(path), "valid": False, "problems": exc.problems}
    try:  # (its rules, as a run checks them before anything moves)
        rules_for_profile(plan_sections(path).get("policies"), prof, source=str(path))
    except LivescopeError as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        return {"file": str(path), "valid": False, "problems": problems}
    return {"file": str(path), "valid": True, **plan_figures(sequence, prof, events=events)}


def _say(r: dict[str, Any], profile: str) -> None:
    """Print one plan's result for people (stderr)."""
    name = escape(r["file"])
    if not r["valid"]:
        stderr.print(f"[red]✗[/] {name}", highlight=False)
        for p in r["problems"]:
            stderr.print(f"    {p}", highlight=False, markup=False)
        return
    interval = r["shortest_interval_s"]
    most = max(r["fluorescence_s"].values(), default=0.0)
    lines = [
        f"{r['frames']} frame(s): {len(r['positions'])} position(s) × {r['time_points']} time "
        f"point(s), channels {', '.join(r['channels'])}",
        f"planned {r['planned_duration_s']:g} s; at least {r['estimated_duration_s']:g} s on "
        f"this rig (a time point ≥ {r['time_point_s']:g} s"
        + (f", interval {interval:g} s)" if interval is not None else ")"),
        f"recording ≈ {r['recording_gb']:g} GB (full frames); fluorescence at most "
        f"{most:g} s of {r['fluorescence_budget_s']:g} s per position",
    ]
    stderr.print(f"[green]✓[/] {name} ({escape(profile)})", highlight=False)
    for line in lines:
        stderr.print(f"    {line}", highlight=False, markup=False)
    for w in r["warnings"]:
        stderr.print(f"    [yellow]warning:[/] {escape(w)}", highlight=False)


@plan_app.command("check")
def plan_check(
    files: Annotated[list[Path], typer.Argument(help="Plan YAML files to check.")],
    profile: ProfileOpt = "sim",
    json_out: JsonOpt = False,
) -> None:
    """Check plans against a rig: every problem, else what each asks of it.

    A plan that fits lists its frames, how long it takes at least on this rig
    (exposures, camera readout, stage moves) against its interval, the disk its
    recording needs and the light each position gets, with warnings (time
    points that will start late, a light budget nearly spent by the plan).
    Exits 0 when all fit, 1 when any does not (2: the profile cannot be read).
    """
    from livescope.schema import load_profile

    with user_errors(json_out):
        prof = load_profile(profile)
    results = [_check_one(f, prof) for f in files]
    ok = all(r["valid"] for r in results)
    if json_out:
        emit({"ok": ok, "profile": prof.name, "results": results})
    else:
        for r in results:
            _say(r, prof.name)
    if not ok:
        raise typer.Exit(1)
