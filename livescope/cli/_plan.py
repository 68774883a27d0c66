"""``livescope plan check``: a plan against a rig, before anything moves."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from ._common import JsonOpt, ProfileOpt, emit, stderr, user_errors

if TYPE_CHECKING:
    import useq

plan_app = typer.Typer(
    help="Acquisition plans: check them against a rig before a run.", no_args_is_help=True
)


def _planes(events: Iterable[useq.MDAEvent]) -> dict[str, list[int]]:
    """Return each channel's planes per field (position, time point), each count found.

    The frames are positions × time points × planes of each channel: a z-stack's
    channels have its planes, one with ``do_stack: false`` one plane, and a position
    with a sequence of its own may have another z plan (then a channel has two counts).
    """
    import useq

    fields: dict[tuple[Any, ...], int] = {}
    for e in events:
        if isinstance(e.action, useq.AcquireImage) and e.channel is not None:
            where = tuple(sorted((k, v) for k, v in e.index.items() if k not in ("c", "z")))
            key = (e.channel.config, *where)
            fields[key] = fields.get(key, 0) + 1
    counts: dict[str, set[int]] = {}
    for (channel, *_), n in fields.items():
        counts.setdefault(channel, set()).add(n)
    return {c: sorted(n) for c, n in counts.items()}


def _channels(names: list[str], planes: dict[str, list[int]]) -> str:
    """Say the channels, with their planes where a channel has a z-stack."""
    if all(planes.get(c, [1]) == [1] for c in names):
        return ", ".join(names)
    said = []
    for c in names:
        n = planes.get(c, [1])
        count = " or ".join(map(str, n))
        said.append(f"{c} ({count} plane{'' if n == [1] else 's'})")
    return ", ".join(said)


def _check_one(path: Path, prof: Any) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """Check one plan file against ``prof``: its problems, else what it asks of the rig.

    Beside it, for people, each channel's planes per field (`_planes`: what makes
    up the frames with a z-stack).
    """
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
        return {"file": str(path), "valid": False, "problems": exc.problems}, {}
    try:  # (its rules, as a run checks them before anything moves)
        rules_for_profile(plan_sections(path).get("policies"), prof, source=str(path))
    except LivescopeError as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        return {"file": str(path), "valid": False, "problems": problems}, {}
    figures = plan_figures(sequence, prof, events=events)
    return {"file": str(path), "valid": True, **figures}, _planes(events)


def _say(r: dict[str, Any], profile: str, planes: dict[str, list[int]]) -> None:
    """Print one plan's result for people (stderr); ``planes``: `_planes`."""
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
        f"point(s), channels {_channels(r['channels'], planes)}",
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
    checked = [_check_one(f, prof) for f in files]
    results = [r for r, _ in checked]
    ok = all(r["valid"] for r in results)
    if json_out:
        emit({"ok": ok, "profile": prof.name, "results": results})
    else:
        for r, planes in checked:
            _say(r, prof.name, planes)
    if not ok:
        raise typer.Exit(1)
