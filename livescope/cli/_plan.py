"""``livescope plan check``: a plan against a rig, before anything moves."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import typer
from rich.markup import escape

from ._common import JsonOpt, ProfileOpt, emit, given_path, stderr, user_errors

if TYPE_CHECKING:
    import useq

plan_app = typer.Typer(
    help="Acquisition plans: check them against a rig before a run.", no_args_is_help=True
)


class _Taken(NamedTuple):
    """Where a plan takes one channel (`_frames`)."""

    planes: dict[str, list[int]]
    """Its planes per field (position, time point) at each position it is taken at
    (`position_name`: a grid's tiles apart; in the plan's order), each count found."""
    time_points: list[int]
    """The time points (``t``) it is taken at."""

    @property
    def positions(self) -> list[str]:
        """The positions it is taken at, in the plan's order."""
        return list(self.planes)


class _Frames(NamedTuple):
    """What a plan's frames are made of (`_frames`)."""

    channels: dict[str, _Taken]
    """Where each channel is taken, and its planes."""
    time_points: dict[str, list[int]]
    """The time points (``t``) imaged at each position, in the plan's order."""


def _frames(events: Iterable[useq.MDAEvent]) -> _Frames:
    """Return each position's time points, each channel's planes per field, and where it is taken.

    The frames are positions × time points × planes of each channel: a z-stack's
    channels have its planes, one with ``do_stack: false`` one plane, and a position
    with a sequence of its own may have another z plan (then a channel has other
    planes there), its own time plan (other time points), or channels of its own
    (then a channel is taken at some positions only); a channel with
    ``acquire_every`` is taken at every n-th time point only.
    """
    import useq

    from livescope.schema import position_name

    fields: dict[tuple[Any, ...], int] = {}
    where: dict[str, set[int]] = {}
    at_position: dict[str, set[int]] = {}
    for e in events:
        if not isinstance(e.action, useq.AcquireImage):
            continue
        t = int(e.index.get("t", 0))
        pos = position_name(e)
        at_position.setdefault(pos, set()).add(t)  # (in the plan's order)
        if e.channel is not None:
            at = tuple(sorted((k, v) for k, v in e.index.items() if k not in ("c", "z")))
            key = (e.channel.config, pos, *at)
            fields[key] = fields.get(key, 0) + 1
            where.setdefault(e.channel.config, set()).add(t)
    counts: dict[str, dict[str, set[int]]] = {}
    for (channel, pos, *_), n in fields.items():
        counts.setdefault(channel, {}).setdefault(pos, set()).add(n)
    return _Frames(
        {
            c: _Taken({p: sorted(n) for p, n in at.items()}, sorted(where[c]))
            for c, at in counts.items()
        },
        {p: sorted(ts) for p, ts in at_position.items()},
    )


def _ordinal(n: int) -> str:
    """Say ``n`` as an ordinal (2nd, 3rd, 11th)."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _names(positions: list[str]) -> str:
    """Say some positions: ``a``, ``a and b``, ``a, b and c``, else how many."""
    if len(positions) > 3:
        return f"{len(positions)} positions"
    return " and ".join(filter(None, (", ".join(positions[:-1]), positions[-1])))


def _by_position(counts: dict[str, list[int]], unit: str) -> str:
    """Say counts of ``unit`` per position: ``5 planes`` where all agree, else where each is.

    Positions with the same counts go together: ``10 time points at fast, 1 at slow``
    (a position with two counts: ``1 or 5 planes``).
    """
    groups: dict[tuple[int, ...], list[str]] = {}
    for pos, n in counts.items():
        groups.setdefault(tuple(n), []).append(pos)
    said: list[str] = []
    for group, where in groups.items():
        amount = " or ".join(map(str, group))
        if not said:
            amount += f" {unit}{'' if group == (1,) else 's'}"
        said.append(amount if len(groups) == 1 else f"{amount} at {_names(where)}")
    return ", ".join(said)


def _fields(frames: _Frames) -> str:
    """Say the positions and their time points, apart where positions differ in them."""
    counts = {p: [len(ts)] for p, ts in frames.time_points.items()}
    if len({n[0] for n in counts.values()}) <= 1:
        t = next(iter(counts.values()), [1])[0]
        return f"{len(counts)} position(s) × {t} time point(s)"
    return f"{len(counts)} position(s) ({_by_position(counts, 'time point')})"


def _channels(names: list[str], frames: _Frames) -> str:
    """Say the channels, with their planes where a channel has a z-stack.

    A channel taken at fewer time points or positions than the plan's says so (every
    n-th time point of the positions it is taken at, the positions it is taken at),
    and a channel with other planes at some positions says where: so that the
    factors said (with `_fields`'s time points per position) multiply to the frames.
    """
    taken = [frames.channels[c] for c in names if c in frames.channels]
    all_p = list(dict.fromkeys(p for x in taken for p in x.positions))
    stacks = any(n != [1] for x in taken for n in x.planes.values())
    said = []
    for c in names:
        notes = []
        x = frames.channels.get(c)
        if stacks:
            notes.append(_by_position(x.planes if x is not None else {"": [1]}, "plane"))
        if x is not None:
            # (the time points of the positions it is taken at: a position's own time plan
            # may have more than the others)
            its_t = sorted({t for p in x.positions for t in frames.time_points.get(p, [])})
            if x.time_points != its_t:
                every = x.time_points[1] - x.time_points[0] if len(x.time_points) > 1 else 0
                # (useq's acquire_every: the time points t with t % n == 0)
                if every > 1 and x.time_points == [t for t in its_t if t % every == 0]:
                    notes.append(f"every {_ordinal(every)} time point")
                else:
                    notes.append(f"{len(x.time_points)} of {len(its_t)} time points")
        if x is not None and len(x.positions) < len(all_p):
            if len(x.positions) <= 3:
                notes.append(f"positions {', '.join(x.positions)} only")
            else:
                notes.append(f"{len(x.positions)} of {len(all_p)} positions")
        said.append(f"{c} ({'; '.join(notes)})" if notes else c)
    return ", ".join(said)


def _check_one(path: Path, prof: Any) -> tuple[dict[str, Any], _Frames]:
    """Check one plan file against ``prof``: its problems, else what it asks of the rig.

    What it asks has each position's time points too (``time_points_per_position``:
    a position's own time plan may have more or fewer than the plan's). Beside it,
    for people, what its frames are made of (`_frames`).
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
        return {"file": str(path), "valid": False, "problems": exc.problems}, _NONE
    try:  # (its rules, as a run checks them before anything moves)
        rules_for_profile(
            plan_sections(path).get("policies"),
            prof,
            source=str(path),
            positions=map(position_name, events),
        )
    except LivescopeError as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        return {"file": str(path), "valid": False, "problems": problems}, _NONE
    figures = plan_figures(sequence, prof, events=events)
    frames = _frames(events)
    result: dict[str, Any] = {"file": str(path), "valid": True}
    for key, value in figures.items():
        result[key] = value
        if key == "time_points":  # (beside it: its count is the plan's, of all positions)
            result["time_points_per_position"] = {
                p: len(ts) for p, ts in frames.time_points.items()
            }
    return result, frames


_NONE = _Frames({}, {})
"""What a plan that does not fit is said to be made of (nothing: its problems are said)."""


def _say(r: dict[str, Any], profile: str, frames: _Frames) -> None:
    """Print one plan's result for people (stderr); ``frames``: `_frames`."""
    name = escape(r["file"])
    if not r["valid"]:
        stderr.print(f"[red]✗[/] {name}", highlight=False)
        for p in r["problems"]:
            stderr.print(f"    {p}", highlight=False, markup=False)
        return
    interval = r["shortest_interval_s"]
    most = max(r["fluorescence_s"].values(), default=0.0)
    lines = [
        f"{r['frames']} frame(s): {_fields(frames)}, channels {_channels(r['channels'], frames)}",
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
    files: Annotated[
        list[Path], typer.Argument(parser=given_path, help="Plan YAML files to check.")
    ],
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
        for r, frames in checked:
            _say(r, prof.name, frames)
    if not ok:
        raise typer.Exit(1)
