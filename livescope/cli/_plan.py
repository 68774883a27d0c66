"""``livescope plan check``: a plan against a rig, before anything moves."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import typer
from rich.markup import escape

from ._common import JsonOpt, ProfileOpt, emit, stderr, user_errors

if TYPE_CHECKING:
    import useq

plan_app = typer.Typer(
    help="Acquisition plans: check them against a rig before a run.", no_args_is_help=True
)


class _Taken(NamedTuple):
    """Where a plan takes one channel (`_planes`)."""

    planes: list[int]
    """Its planes per field (position, time point), each count found."""
    time_points: list[int]
    """The time points (``t``) it is taken at."""
    positions: list[str]
    """The positions it is taken at (`position_name`: a grid's tiles apart)."""


def _planes(events: Iterable[useq.MDAEvent]) -> dict[str, _Taken]:
    """Return each channel's planes per field (position, time point), and where it is taken.

    The frames are positions × time points × planes of each channel: a z-stack's
    channels have its planes, one with ``do_stack: false`` one plane, and a position
    with a sequence of its own may have another z plan (then a channel has two counts),
    or channels of its own (then a channel is taken at some positions only); a channel
    with ``acquire_every`` is taken at every n-th time point only.
    """
    import useq

    from livescope.schema import position_name

    fields: dict[tuple[Any, ...], int] = {}
    where: dict[str, tuple[set[int], dict[str, None]]] = {}
    for e in events:
        if isinstance(e.action, useq.AcquireImage) and e.channel is not None:
            at = tuple(sorted((k, v) for k, v in e.index.items() if k not in ("c", "z")))
            key = (e.channel.config, *at)
            fields[key] = fields.get(key, 0) + 1
            ts, positions = where.setdefault(e.channel.config, (set(), {}))
            ts.add(int(e.index.get("t", 0)))
            positions[position_name(e)] = None  # (in the plan's order)
    counts: dict[str, set[int]] = {}
    for (channel, *_), n in fields.items():
        counts.setdefault(channel, set()).add(n)
    return {c: _Taken(sorted(n), sorted(where[c][0]), list(where[c][1])) for c, n in counts.items()}


def _ordinal(n: int) -> str:
    """Say ``n`` as an ordinal (2nd, 3rd, 11th)."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _channels(names: list[str], planes: dict[str, _Taken]) -> str:
    """Say the channels, with their planes where a channel has a z-stack.

    A channel taken at fewer time points or positions than the plan's says so (every
    n-th time point, the positions it is taken at), so that the factors said multiply
    to the frames.
    """
    taken = [planes[c] for c in names if c in planes]
    all_t = sorted({t for x in taken for t in x.time_points})
    all_p = list(dict.fromkeys(p for x in taken for p in x.positions))
    stacks = any(x.planes != [1] for x in taken)
    said = []
    for c in names:
        notes = []
        x = planes.get(c)
        n = x.planes if x is not None else [1]
        if stacks:
            notes.append(f"{' or '.join(map(str, n))} plane{'' if n == [1] else 's'}")
        if x is not None and x.time_points != all_t:
            every = x.time_points[1] - x.time_points[0] if len(x.time_points) > 1 else 0
            # (useq's acquire_every: the time points t with t % n == 0)
            if every > 1 and x.time_points == [t for t in all_t if t % every == 0]:
                notes.append(f"every {_ordinal(every)} time point")
            else:
                notes.append(f"{len(x.time_points)} of {len(all_t)} time points")
        if x is not None and len(x.positions) < len(all_p):
            if len(x.positions) <= 3:
                notes.append(f"positions {', '.join(x.positions)} only")
            else:
                notes.append(f"{len(x.positions)} of {len(all_p)} positions")
        said.append(f"{c} ({'; '.join(notes)})" if notes else c)
    return ", ".join(said)


def _check_one(path: Path, prof: Any) -> tuple[dict[str, Any], dict[str, _Taken]]:
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
        position_name,
    )

    try:
        sequence = load_plan(path)
        events = plan_events(sequence)
        check_plan(sequence, prof, str(path), events=events)
    except ConfigError as exc:
        return {"file": str(path), "valid": False, "problems": exc.problems}, {}
    try:  # (its rules, as a run checks them before anything moves)
        rules_for_profile(
            plan_sections(path).get("policies"),
            prof,
            source=str(path),
            positions=map(position_name, events),
        )
    except LivescopeError as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        return {"file": str(path), "valid": False, "problems": problems}, {}
    figures = plan_figures(sequence, prof, events=events)
    return {"file": str(path), "valid": True, **figures}, _planes(events)


def _say(r: dict[str, Any], profile: str, planes: dict[str, _Taken]) -> None:
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
