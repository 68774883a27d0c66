"""Acquisition plans: a YAML file holding a useq-schema ``MDASequence``.

`check_plan` compares a plan with a hardware profile before anything moves, so a
typo in a channel name or a position outside the stage's travel is reported at
once with the field it concerns, not halfway through a run.
"""

from __future__ import annotations

import math
import sys
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import useq
from pydantic import ValidationError

from ._base import format_validation_error, past_limit, read_yaml, top_level_problem
from ._decision import parent_position
from ._errors import PlanError
from ._plan_keys import (
    _ABSOLUTE,
    _RELATIVE,
    _dropped_keys,
    _ignored_xy,
    _numeric_channels,
    _unknown_keys,
)
from ._positions import position_name
from ._profile import HardwareProfile

__all__ = [
    "PLAN_SECTIONS",
    "check_plan",
    "focus_centred_positions",
    "load_plan",
    "plan_events",
    "plan_sections",
    "planned_light_s",
]

_MAX_REPORTED = 20

PLAN_SECTIONS = ("policies",)
"""livescope's own top-level keys in a plan file, beside the ``MDASequence`` fields:
``policies`` (event-triggered rules, `livescope.policy`). The engines are chosen
by the command (worker options), not by the plan: any other key is an error."""


def load_plan(path: str | Path, *, recorded: bool = False) -> useq.MDASequence:
    """Load a plan file (YAML mapping of ``useq.MDASequence`` fields).

    The file may also hold livescope's own sections (`PLAN_SECTIONS`); they are
    read by `plan_sections`, not here. ``recorded``: a recording's own plan,
    replayed: it ran as useq read it, so what useq reads otherwise than written
    (a z step of 0 over a range, a negative ``below``, a plan part whose axis
    ``axis_order`` leaves out, a channel's acquire_every that useq does not
    apply at a position: `_shape_problems`; a position's x/y under an
    absolute grid: `_ignored_xy`; random points without a seed:
    `_unseeded_points`) is not refused in it.

    Raises
    ------
    PlanError
        listing every problem with its field path.

    """
    data = _read_mapping(path)
    data = {k: v for k, v in data.items() if k not in PLAN_SECTIONS}
    if unknown := _unknown_keys(data) + _numeric_channels(data):
        raise PlanError(str(path), unknown)
    try:
        sequence = useq.MDASequence.model_validate(data)
    except ValidationError as exc:
        raise PlanError(str(path), format_validation_error(exc, data)) from None
    problems = _dropped_keys(data, sequence)
    if not recorded:  # (x/y that useq drops: read from the keys written, the model lost them)
        problems += _ignored_xy(data, sequence)
    if problems := problems or _shape_problems(sequence, as_written=not recorded):
        raise PlanError(str(path), problems)
    if not recorded and (problems := _unseeded_points(sequence)):
        # (a recording's plan is not: its points are in its data, whatever a load draws now)
        raise PlanError(str(path), problems)
    return sequence


def _read_mapping(path: str | Path) -> dict[str, object]:
    data = read_yaml(path, PlanError)
    if not isinstance(data, dict):
        raise PlanError(str(path), [top_level_problem(data)])
    return data


def plan_sections(path: str | Path) -> dict[str, object]:
    """Return livescope's own sections of a plan file (`PLAN_SECTIONS`: ``policies``), as read.

    Raises
    ------
    PlanError
        if the file cannot be read or is not a mapping.

    """
    data = _read_mapping(path)
    return {k: data[k] for k in PLAN_SECTIONS if k in data}


_MAX_PLANES = 100_000
"""Most planes one z plan may give: more is a unit slip (a step in mm or nm), and
expanding it would exhaust memory before anything could be checked."""

MAX_PLAN_EVENTS = 1_000_000
"""Most events one plan may give. A run expands its plan's events when it
starts (`plan_events`: ~2.5 kB and tens of µs each), so more is a run that
takes minutes and gigabytes to start, or a unit slip (a time plan's loops or
duration far too large), which would hang the start: split such a run."""


def _axis_count(plan: Any, count: str) -> int:
    if plan is None:
        return 1
    try:
        return max(1, int(getattr(plan, count)()))
    except (ValueError, ArithmeticError):  # (a grid without its field of view: reported later)
        return 1


def _event_count(sequence: useq.MDASequence) -> int:
    """Return a lower bound on the number of events ``sequence`` gives, without expanding it.

    Each position gives (time points x channels x z planes x grid tiles) events,
    a position's own sequence taking, per axis, the larger of its count and the
    plan's (useq nests it in the plan's axes: its events are at least these).
    """

    def sizes(seq: useq.MDASequence) -> tuple[int, int, int, int]:
        return (_axis_count(seq.time_plan, "num_timepoints"), max(1, len(seq.channels)),
                _axis_count(seq.z_plan, "num_positions"),
                _axis_count(seq.grid_plan, "num_positions"))  # fmt: skip

    top = sizes(sequence)
    total = 0
    for p in sequence.stage_positions or [None]:
        sub = sizes(p.sequence) if p is not None and p.sequence is not None else top
        total += math.prod(max(a, b) for a, b in zip(top, sub, strict=True))
    return total


def _event_count_problem(sequence: useq.MDASequence) -> str | None:
    """Return why ``sequence`` has too many events to expand (`MAX_PLAN_EVENTS`), or None."""
    if (n := _event_count(sequence)) <= MAX_PLAN_EVENTS:
        return None
    t = _axis_count(sequence.time_plan, "num_timepoints")
    return (
        f"the plan gives at least {n:,} events ({t:,} time points; more than "
        f"{MAX_PLAN_EVENTS:,}): a run expands its plan's events when it starts (~2.5 kB each), "
        "so this one would take minutes and gigabytes before the first frame; check the "
        "time_plan's loops, duration and interval (seconds), or split the run"
    )


def _shape_problems(sequence: useq.MDASequence, *, as_written: bool = True) -> list[str]:
    """Return the problems of z, grid and time plans that cannot be expanded into events.

    useq takes them, then fails (or fills memory) when the plan is expanded,
    or gives other planes, tiles or time points than written: a z step or
    range that is NaN or infinite, a z step so small that the stack has
    millions of planes, a negative step, range or top below bottom (a stack
    of no planes), a step of 0 over a range (one plane, at its bottom), a
    negative above or below (useq takes its size), a grid's field of view of 0
    or less (tiles 1 µm apart) or overlap of 100 % or more (every tile on one
    spot), a time plan of no phases (one time point), an interval of 0 with a
    duration (as many time points as fit in it: no number), a plan part
    (time, positions, grid, channels, z) whose letter ``axis_order`` leaves
    out (useq drops it), an absolute grid (``GridFromEdges``) over several
    positions (each images the same tiles), a channel's acquire_every or
    ``do_stack: false`` that useq does not apply at a position with a
    sequence of its own (`_sub_channel_problems`). The plan's own and each
    position's sequence are looked at. ``as_written`` False (a recording's
    plan, replayed: it ran as useq read it): only what cannot be expanded is
    refused, not what useq reads otherwise than written.
    """
    problems: list[str] = []
    for prefix, seq in _subs(sequence):
        if as_written:
            problems += _dropped_axis_problems(prefix, seq)
        zp, where = seq.z_plan, f"{prefix}z_plan"
        if zp is not None:
            bad = [
                f"{where}.{name}: {value} µm is not a finite number"
                for name, value in zp.model_dump().items()
                for v in (value if isinstance(value, list | tuple) else [value])
                if isinstance(v, float) and not math.isfinite(v)
            ]
            step = getattr(zp, "step", None)
            if bad:
                problems += list(dict.fromkeys(bad))
            elif step is not None and step < 0:
                problems.append(
                    f"{where}.step: {step:g} µm gives no planes; give a step > 0 (go_up: false "
                    "images the stack from the top down)"
                )
            elif as_written and (wrong := _z_range_problems(zp, where)):
                problems += wrong
            elif (n := zp.num_positions()) > _MAX_PLANES:
                problems.append(
                    f"{where}: {n} planes (more than {_MAX_PLANES}); z_plan numbers are µm "
                    "(a step in mm or nm?)"
                )
        if as_written:
            problems += _grid_shape_problems(f"{prefix}grid_plan", seq.grid_plan)
        tp = seq.time_plan
        if as_written and isinstance(tp, useq.MultiPhaseTimePlan) and not tp.phases:
            problems.append(
                f"{prefix}time_plan: no phases (an empty list) gives one time point; give its "
                "phases (each an interval with loops or a duration, in seconds), or leave "
                "time_plan out for one time point"
            )
        for k, phase in enumerate(getattr(tp, "phases", None) or ([tp] if tp else [])):
            if isinstance(phase, useq.TIntervalDuration) and not phase.interval.total_seconds():
                tag = f".phases.{k}" if isinstance(tp, useq.MultiPhaseTimePlan) else ""
                problems.append(
                    f"{prefix}time_plan{tag}.interval: 0 with a duration gives no number of time "
                    "points; give loops (as fast as the rig can) or an interval > 0"
                )
    if as_written and isinstance(sequence.stage_positions, useq.WellPlatePlan):
        problems += _grid_shape_problems(
            "stage_positions.well_points_plan", sequence.stage_positions.well_points_plan
        )
    if as_written:
        problems += _absolute_grid_problems(sequence)
        problems += _sub_channel_problems(sequence)
    if not problems and (why := _event_count_problem(sequence)) is not None:
        problems.append(why)
    return problems


def _subs(sequence: useq.MDASequence) -> list[tuple[str, useq.MDASequence]]:
    """Return the plan's own sequence and each position's, with the path to each (a prefix)."""
    return [("", sequence)] + [
        (f"stage_positions.{i}.sequence.", p.sequence)
        for i, p in enumerate(sequence.stage_positions)
        if p.sequence is not None
    ]


_AXIS_PARTS = (("t", "time_plan"), ("p", "stage_positions"), ("g", "grid_plan"),
               ("c", "channels"), ("z", "z_plan"))  # fmt: skip
"""Each axis letter of ``axis_order`` and the plan part useq iterates for it."""


def _dropped_axis_problems(prefix: str, seq: useq.MDASequence) -> list[str]:
    """Return the plan parts given whose letter ``seq``'s ``axis_order`` leaves out.

    useq expands only the axes ``axis_order`` names: ``tpcz`` gives no grid
    tiles, ``tc`` no positions (each frame where the stage happens to be, never
    checked against its travel). A position's sequence iterates its own parts
    in its own ``axis_order`` (``tpgcz`` unless it gives one), not the plan's.
    """
    order = "".join(str(getattr(a, "value", a)) for a in seq.axis_order)
    whose = "the position's" if prefix else "the plan's"
    return [
        f"{prefix}axis_order: {order!r} leaves out {letter!r}, so useq would drop {whose} "
        f"{part} (it expands only the axes axis_order names); add {letter!r} to "
        f"{prefix}axis_order (e.g. 'tpgcz')"
        for letter, part in _AXIS_PARTS
        if letter not in order and getattr(seq, part)  # (as useq's iter_axis: a part given)
    ]


def _sub_channel_problems(sequence: useq.MDASequence) -> list[str]:
    """Return the channels' acquire_every and do_stack that useq drops at a position's sequence.

    useq skips a channel's time points (``acquire_every``) and planes (``do_stack:
    false``) against the time and z plans of the sequence that holds the channel
    only: the plan's channels, imaged in a position's own time plan or z plan,
    are taken at each of its time points or planes; a position's own channels,
    without a time plan (or z plan) of its own, at each of the plan's. And the
    plan's first channel's acquire_every decides at which of the plan's time
    points a position with channels of its own is imaged at all.
    """
    problems: list[str] = []
    times = _axis_count(sequence.time_plan, "num_timepoints")
    for i, p in enumerate(sequence.stage_positions):
        sub = p.sequence
        if sub is None or not (sub.time_plan or sub.z_plan or sub.grid_plan or sub.channels):
            continue  # (no axes of its own: useq images it with the plan's)
        at = f"stage_positions.{i}" + (f" ({p.name})" if p.name else "")
        own = f"stage_positions.{i}.sequence"
        if sub.channels:
            first = sequence.channels[0] if sequence.channels else None
            if first is not None and first.acquire_every > 1 and times > 1:
                problems.append(
                    f"channels.0.acquire_every: {first.acquire_every} (channel {first.config!r}) "
                    f"decides when {at} is imaged at all: useq images the position's own "
                    f"channels at 1 time point in {first.acquire_every} of the plan only; list "
                    "a channel without acquire_every first in the plan's channels"
                )
            for k, ch in enumerate(sub.channels):
                if ch.acquire_every > 1 and sub.time_plan is None:
                    problems.append(
                        f"{own}.channels.{k}.acquire_every: {ch.acquire_every} (channel "
                        f"{ch.config!r}) is not applied at {at}: useq counts it only against "
                        f"a time_plan in {own}, which has none, so the channel would be taken "
                        f"at every time point; move the time plan into {own}, or leave out "
                        "acquire_every"
                    )
                if not ch.do_stack and sub.z_plan is None and sequence.z_plan is not None:
                    problems.append(
                        f"{own}.channels.{k}.do_stack: false (channel {ch.config!r}) is not "
                        f"applied at {at}: useq takes one plane only of a z_plan in {own}, "
                        "which has none, so the channel would be taken at every plane of the "
                        f"plan's z_plan; give {own} its own z_plan"
                    )
            continue  # (the plan's channels are not imaged here: the position's own are)
        for k, ch in enumerate(sequence.channels):
            if ch.acquire_every > 1 and sub.time_plan is not None:
                problems.append(
                    f"channels.{k}.acquire_every: {ch.acquire_every} (channel {ch.config!r}) "
                    f"is not applied at {at}, which has a time_plan of its own: useq counts "
                    "it against the plan's time points only, so the channel would be taken at "
                    f"every time point of the position's own; give {own} its own channels, "
                    "with acquire_every there, or leave out the position's own time_plan"
                )
            if not ch.do_stack and sub.z_plan is not None:
                problems.append(
                    f"channels.{k}.do_stack: false (channel {ch.config!r}) is not applied at "
                    f"{at}, which has a z_plan of its own: useq takes the middle plane only of "
                    "the plan's z_plan, so the channel would be taken at every plane of the "
                    "position's own (or at none, where the plan has a z_plan too); give "
                    f"{own} its own channels, with do_stack: false there, or leave out the "
                    "position's own z_plan"
                )
    return problems


def _absolute_grid_problems(sequence: useq.MDASequence) -> list[str]:
    """Return why the plan's absolute grid would image one spot for several positions.

    useq places a ``GridFromEdges``'s tiles where its edges say, whatever the
    position (it drops their x/y: `_plan_keys._ignored_xy` refuses x/y written),
    so each position images the same tiles; a position whose own sequence has
    a grid takes that one instead.
    """
    grid = sequence.grid_plan
    if grid is None or grid.is_relative:
        return []
    under = [
        f"stage_positions.{i}" + (f" ({p.name})" if p.name else "")
        for i, p in enumerate(sequence.stage_positions)
        if p.sequence is None or not p.sequence.grid_plan
    ]
    if len(under) < 2:
        return []
    shown = ", ".join(under[:5]) + (f" and {len(under) - 5} more" if len(under) > 5 else "")
    fix = (
        "give the plate's well_points_plan instead (a grid in each well)"
        if isinstance(sequence.stage_positions, useq.WellPlatePlan)
        else f"give one position without x/y, or {_RELATIVE} around each position"
    )
    return [
        f"grid_plan: {_ABSOLUTE} gives every position the same tiles, and the plan has "
        f"{len(under)} ({shown}); {fix}"
    ]


def _unseeded_points(sequence: useq.MDASequence) -> list[str]:
    """Return the random-points grids without a ``random_seed`` (useq draws anew at each load).

    The plan check, the run (which reads the plan again) and its copy of the
    plan would each get other points: those checked are not those imaged.
    """
    grids = [(f"{prefix}grid_plan", seq.grid_plan) for prefix, seq in _subs(sequence)]
    if isinstance(sequence.stage_positions, useq.WellPlatePlan):
        grids.append(
            ("stage_positions.well_points_plan", sequence.stage_positions.well_points_plan)
        )
    return [
        f"{where}: random points without random_seed are drawn anew each time the plan is "
        "read, so the run (and its copy of the plan) would image other points than were "
        "checked; add `random_seed: <n>` (any whole number) to it"
        for where, grid in grids
        if isinstance(grid, useq.RandomPoints) and grid.random_seed is None
    ]


def _z_range_problems(zp: Any, where: str) -> list[str]:
    """Return why a z plan with a finite step >= 0 gives no stack, or another than written.

    A negative range or top below bottom gives no planes; a negative above or
    below is taken as its size (-3 is 3, not 3 the other way); a step of 0
    over a range gives one plane, at the range's bottom, off the position's z.
    """
    problems = [
        f"{where}.{name}: {value:g} µm "
        + ("gives no planes; give a range >= 0 µm" if name == "range" else
           f"is taken as {abs(value):g} µm {name} the position's z; give a distance >= 0 µm")
        + " (go_up: false images the stack from the top down)"
        for name in ("range", "above", "below")
        if (value := getattr(zp, name, None)) is not None and value < 0
    ]  # fmt: skip
    if isinstance(zp, useq.ZTopBottom) and zp.top < zp.bottom and _no_planes(zp):
        # (less than half a step below bottom useq gives one plane, at bottom: not refused)
        problems.append(
            f"{where}: top {zp.top:.15g} µm is below bottom {zp.bottom:.15g} µm, which gives no "
            "planes; "
            "swap them (go_up: false images the stack from the top down)"
        )
    if problems or getattr(zp, "step", None) != 0:
        return problems
    if isinstance(zp, useq.ZTopBottom):
        span, at = zp.top - zp.bottom, f"at its bottom (z = {zp.bottom:g} µm)"
    elif isinstance(zp, useq.ZAboveBelow):
        span, at = zp.above + zp.below, f"{zp.below:g} µm below the position's z"
    else:  # (ZRangeAround)
        span, at = zp.range, f"{zp.range / 2:g} µm below the position's z"
    if span:
        problems.append(
            f"{where}.step: 0 µm over a {abs(span):g} µm range gives one plane, {at}, not a "
            "stack; give a step > 0 (one plane: range 0)"
        )
    return problems


def _no_planes(zp: Any) -> bool:
    """Whether useq gives z plan ``zp`` no planes (a step of 0 is taken as giving some)."""
    try:
        # (the planes useq gives, not its count: top 0.5-1 step below bottom counts 1 and
        # gives none, the frame then taken at the position's own z; top 0, bottom 5, -4)
        return not list(zp)
    except (ValueError, ArithmeticError):  # (a step of 0: said apart, `_z_range_problems`)
        return False


def _grid_shape_problems(where: str, grid: Any) -> list[str]:
    """Return why a grid's tiles would not be one field of view apart (``where``: its path).

    A field of view of 0 is taken as 1 µm (tiles 1 µm apart, as without one:
    a missing one is refused by `check_plan`, with the profile's), a negative
    one mirrors the grid; an overlap of 100 % or more leaves no step between
    tiles (a division by zero, or every tile on one spot).
    """
    problems = [
        f"{where}.{name}: {value:g} µm; give the field of view (µm, > 0): useq places the "
        "tiles 1 µm apart at 0, and mirrors the grid below it"
        for name in ("fov_width", "fov_height")
        if (value := getattr(grid, name, None)) is not None and not value > 0
    ]
    overlap = getattr(grid, "overlap", None)
    if overlap is not None and any(not o < 100 for o in overlap):
        shown = " x ".join(f"{o:g}" for o in overlap)
        problems.append(
            f"{where}.overlap: {shown} % leaves no step between tiles (every tile on one spot); "
            "give an overlap < 100 (percent of the field of view)"
        )
    return problems


def _outside(value: float, lo_hi: tuple[float, float]) -> bool:
    return not lo_hi[0] <= value <= lo_hi[1]


def _axis_order_problems(sequence: useq.MDASequence) -> list[str]:
    """Return the problems of an axis order that splits the agent's or the worker's units.

    The agent acquires time point by time point across positions (its queue
    hands events over by when they are due), so ``ptc`` (each position's whole
    time-lapse, then the next) would be interleaved, not run as written. The
    worker analyses a field once its frames are in: ``tcpz`` (each channel
    across the positions, then the next) would split every field.
    """
    order = "".join(str(getattr(a, "value", a)) for a in sequence.axis_order)
    sizes = sequence.sizes
    problems = []
    places = [a for a in order if a in "pg" and sizes.get(a, 0) > 1]
    inner = [a for a in order if a in "cz" and sizes.get(a, 0) > 1]
    if places and inner and order.index(inner[0]) < order.index(places[-1]):
        # (the worker analyses a field, one position at one time point, once its frames are
        # in: interleaved, each was analysed with its first channel or plane only, the rest
        # dropped as already analysed)
        across = "position" if places[-1] == "p" else "grid tile"
        problems.append(
            f"axis_order: {order!r} images each {'channel' if inner[0] == 'c' else 'z plane'} "
            f"across the {across}s before the next, but the worker analyses one {across} "
            f"at a time, all its channels and planes together; put {'/'.join(places)} before "
            "c and z (e.g. 'tpgcz')"
        )
    if "t" not in order or sizes.get("t", 0) < 2:
        return problems
    before = [a for a in order[: order.index("t")] if a in "pg" and sizes.get(a, 0) > 1]
    if not before:
        return problems
    return [
        *problems,
        f"axis_order: {order!r} images each {'position' if 'p' in before else 'grid tile'}'s "
        "time points before the next, but the agent acquires time point by time point "
        "across positions; put t first (e.g. 'tpgcz')",
    ]


def _time_and_grid_problems(
    sequence: useq.MDASequence, profile: HardwareProfile, without_fov: list[str]
) -> list[str]:
    """Return the problems of negative time steps and of grids without a field of view.

    The plan's own time plan and each position's are looked at.

    ``without_fov``: where those grids are (`_grids_without_fov`, which `check_plan`
    also looks at before the plan is expanded).
    """
    problems = []
    for prefix, seq in _subs(sequence):  # (a position's own: its events came due backwards)
        tp = seq.time_plan
        phases = getattr(tp, "phases", None) or ([tp] if tp is not None else [])
        for k, phase in enumerate(phases):
            where = f"{prefix}time_plan" + (f".phases.{k}" if len(phases) > 1 else "")
            for name in ("interval", "duration"):
                if name not in phase.model_fields_set:
                    continue  # (derived, e.g. a loops plan's duration: its interval is named)
                step = getattr(phase, name, None)
                if step is not None and step.total_seconds() < 0:
                    problems.append(
                        f"{where}.{name}: {step.total_seconds():g} s; time only runs forward "
                        "(give a value >= 0)"
                    )
    h, w = profile.field_of_view_um
    problems += [
        f"{where}: give fov_width and fov_height (µm): without them useq places the "
        f"tiles 1 µm apart; this profile's field of view is {w:g} x {h:g} µm"
        for where in without_fov
    ]
    return problems


def _grids_without_fov(sequence: useq.MDASequence) -> list[str]:
    """Return where the plan's grids lack a field of view (useq tiles them 1 µm apart).

    Random points are no tiles (their field of view is optional); a well plate's
    points in each well are.
    """
    grids = [("grid_plan", sequence.grid_plan)] + [
        (f"stage_positions.{i}.sequence.grid_plan", p.sequence.grid_plan)
        for i, p in enumerate(sequence.stage_positions)
        if p.sequence is not None and p.sequence.grid_plan is not None
    ]
    if isinstance(sequence.stage_positions, useq.WellPlatePlan):
        grids.append(
            ("stage_positions.well_points_plan", sequence.stage_positions.well_points_plan)
        )
    return [
        where
        for where, grid in grids
        if grid is not None
        and not isinstance(grid, useq.RandomPoints)
        and hasattr(grid, "fov_width")
        and (grid.fov_width is None or grid.fov_height is None)
    ]


_IN_USE = "in use"
"""How a plan not read from a file is named in its `PlanError` ("acquisition plan in use")."""

_EXPANDED: weakref.WeakKeyDictionary[useq.MDASequence, tuple[useq.MDAEvent, ...]] = (
    weakref.WeakKeyDictionary()
)


def plan_events(sequence: useq.MDASequence) -> tuple[useq.MDAEvent, ...]:
    """Return the events of ``sequence``, expanded once per plan.

    Expanding a plan costs ~40 µs per event (about a second for 20,000), and
    a run's start needs them in several places (the command's plan check, the
    agent's check, its event queue and the guardrails' books): the events are
    kept for as long as the plan object lives (plans are frozen, so they
    cannot change), and the same plan given again costs nothing.

    Raises
    ------
    PlanError
        if the plan gives more than `MAX_PLAN_EVENTS` events (it is not expanded).

    """
    events = _EXPANDED.get(sequence)
    if events is None:
        if (why := _event_count_problem(sequence)) is not None:
            raise PlanError(_IN_USE, [why])
        events = _EXPANDED[sequence] = tuple(sequence)
    return events


def focus_centred_positions(sequence: useq.MDASequence) -> list[int]:
    """Return the positions whose relative z plan needs the focus drive's z (plan indices).

    useq counts a relative z plan (``ZRangeAround``, ``ZAboveBelow``,
    ``ZRelativePositions``) from each position's z; a position without one (or
    a plan without positions: index 0) is centred, as in Micro-Manager, on
    where the focus drive is when the run starts (the agent fills it in).
    """

    def relative(zp: Any) -> bool:
        return zp is not None and bool(getattr(zp, "is_relative", False))

    if not sequence.stage_positions:
        return [0] if relative(sequence.z_plan) else []
    out = []
    for i, p in enumerate(sequence.stage_positions):
        sub = p.sequence
        zp = sub.z_plan if sub is not None and sub.z_plan is not None else sequence.z_plan
        if p.z is None and relative(zp):
            out.append(i)
    return out


def planned_light_s(
    events: Iterable[useq.MDAEvent], profile: HardwareProfile, *, received: bool = False
) -> dict[tuple[str, str], float]:
    """Return the seconds of fluorescence a plan's own events give each (position, channel).

    An event's light goes to the plan position it images (a sub-sequence's or
    a grid tile's to its position), at its exposure, else its channel's default;
    other channels give none. The guardrails book it before any decision adds
    more. ``received``: what the sample under each position's field gets where
    it gets most, its own frames' and those of the plan fields overlapping it
    there (`_light_by_field`), which the plan check holds to the light-dose
    budget; the same as without it where no two plan fields overlap.
    """
    if received:
        return {k: sum(by.values()) for k, by in _light_by_field(events, profile)[1].items()}
    fluo_ms = {
        c.name: c.default_exposure_ms for c in profile.channels.presets if c.kind == "fluorescence"
    }
    light: dict[tuple[str, str], float] = {}
    for event in events:
        if not isinstance(event.action, useq.AcquireImage):
            continue  # (an autofocus event before an image: no fluorescence of its own)
        config = event.channel.config if event.channel is not None else ""
        if config in fluo_ms:
            ms = fluo_ms[config] if event.exposure is None else float(event.exposure)
            key = (parent_position(position_name(event)), config)
            light[key] = light.get(key, 0.0) + ms / 1000.0
    return light


_EDGE_UM = 1e-6
"""How far two fields of view may reach into each other and still only share an edge, µm:
a grid's tiles at 0 % overlap are one field apart but for a float's rounding (1e-13 µm
either way), and tiles that just touch light no sample twice."""

_Booked = dict[str, float]
"""Seconds of fluorescence at a field's hottest point, by the field whose frames give them."""


def _light_by_field(
    events: Iterable[useq.MDAEvent], profile: HardwareProfile
) -> tuple[dict[str, _Booked], dict[tuple[str, str], _Booked]]:
    """Return the fluorescence the hottest point of each plan field's field of view gets.

    (per field over all its channels, per (field, channel)); each {field whose
    frames light that point: s}, the field itself first where it has any. A
    field is a plan position or grid tile (as `planned_light_s` names them),
    centred where its first event with an x/y is; its own frames light all of
    it. Another field's frame lights the camera's field of view
    (`HardwareProfile.field_of_view_um`) centred on its x/y, where that
    overlaps this field's (sharing only an edge, `_EDGE_UM`, is no overlap; a
    frame without x/y lights its own field only). The hottest point is found
    exactly: the overlapping frames' edges cut the field into cells, each lit
    alike throughout, and the one whose frames give most wins. A 3x3 grid at
    90 % overlap images one patch nine times: its centre gets the light of
    all nine; at 10 % overlap no point is imaged more than four times (where
    four tiles' corners meet). Per field and per channel apart (the hottest
    point of one channel need not be another's); without overlap, each
    field's own light, summed as `planned_light_s` sums it.
    """
    fluo_ms = {
        c.name: c.default_exposure_ms for c in profile.channels.presets if c.kind == "fluorescence"
    }
    h, w = profile.field_of_view_um
    centres: dict[str, tuple[float, float]] = {}
    own: dict[tuple[str, str], float] = {}  # (field, channel) -> its own frames' s
    places: dict[tuple[float, float], dict[tuple[str, str], float]] = {}  # frame x/y -> s
    for event in events:
        key = parent_position(position_name(event))
        x, y = event.x_pos, event.y_pos
        at = None if x is None or y is None or not math.isfinite(x + y) else (float(x), float(y))
        if at is not None:
            centres.setdefault(key, at)
        if not isinstance(event.action, useq.AcquireImage):
            continue  # (an autofocus event before an image: no fluorescence of its own)
        config = event.channel.config if event.channel is not None else ""
        if config not in fluo_ms:
            continue
        s = (fluo_ms[config] if event.exposure is None else float(event.exposure)) / 1000.0
        own[(key, config)] = own.get((key, config), 0.0) + s
        if at is not None:
            lit = places.setdefault(at, {})
            lit[(key, config)] = lit.get((key, config), 0.0) + s
    order = {k: i for i, k in enumerate(dict.fromkeys([*(k for k, _ in own), *centres]))}
    squares: dict[tuple[int, int], list[tuple[float, float]]] = {}  # field-sized -> places
    for px, py in places:
        squares.setdefault((math.floor(px / w), math.floor(py / h)), []).append((px, py))

    by_key: dict[str, dict[str, float]] = {}  # field -> channel -> its own frames' s
    for (k, ch), s in own.items():
        by_key.setdefault(k, {})[ch] = s
    per_field: dict[str, _Booked] = {}
    per_channel: dict[tuple[str, str], _Booked] = {(k, ch): {k: s} for (k, ch), s in own.items()}
    for key in order:
        mine = by_key.get(key, {})
        if key not in centres:  # (no x/y: nothing else is known to light it)
            if mine:
                per_field[key] = {key: sum(mine.values())}
            continue
        cx, cy = centres[key]
        i, j = math.floor(cx / w), math.floor(cy / h)
        near = [
            (px, py, {src: s for src, s in places[(px, py)].items() if src[0] != key})
            for di in (-1, 0, 1)
            for dj in (-1, 0, 1)
            for px, py in squares.get((i + di, j + dj), ())
            if abs(px - cx) < w - _EDGE_UM and abs(py - cy) < h - _EDGE_UM
        ]
        near = [n for n in near if n[2]]
        if not near:  # (summed as `planned_light_s` and the budget sum: no float drift)
            if mine:
                per_field[key] = {key: sum(mine.values())}
            continue
        xs, ys = np.array([n[0] for n in near]), np.array([n[1] for n in near])
        mx = _cell_middles(cx - w / 2, cx + w / 2, xs - w / 2, xs + w / 2)
        my = _cell_middles(cy - h / 2, cy + h / 2, ys - h / 2, ys + h / 2)
        # (frame, cell): whether the frame lights that cell (x and y cells crossed, flat)
        covers = (np.abs(mx[None, :] - xs[:, None]) < w / 2)[:, :, None] & (
            np.abs(my[None, :] - ys[:, None]) < h / 2
        )[:, None, :]
        covers = covers.reshape(len(near), -1)
        channels = list(dict.fromkeys([*mine, *(ch for n in near for _, ch in n[2])]))
        per_field[key] = _hottest(key, mine, near, covers, channels, order)
        for ch in channels:
            per_channel[(key, ch)] = _hottest(key, mine, near, covers, [ch], order)
    return per_field, per_channel


def _hottest(
    key: str,
    mine: dict[str, float],
    near: list[tuple[float, float, dict[tuple[str, str], float]]],
    covers: np.ndarray,
    chs: list[str],
    order: dict[str, int],
) -> _Booked:
    """Return what field ``key``'s hottest cell gets of channels ``chs``, by field.

    ``mine``: its own frames' light per channel, alike in every cell; ``near``:
    the other fields' frames overlapping it, (x, y, {(field, channel): s});
    ``covers``: (frame, cell) whether that frame lights that cell; ``order``:
    the fields' order in the plan, which the result keeps.
    """
    got = np.array([sum(s for (_, ch), s in lit.items() if ch in chs) for _, _, lit in near])
    best = int(np.argmax(got @ covers))
    booked: _Booked = {}
    if any(ch in mine for ch in chs):
        booked[key] = sum(mine[ch] for ch in chs if ch in mine)
    for (_, _, lit), there in zip(near, covers[:, best], strict=True):
        for (src, ch), s in lit.items():
            if there and ch in chs:
                booked[src] = booked.get(src, 0.0) + s
    return dict(sorted(booked.items(), key=lambda kv: order.get(kv[0], len(order))))


def _cell_middles(lo: float, hi: float, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Return the middles of the cells frames spanning ``starts``-``ends`` cut ``lo``-``hi`` into.

    Edges closer than `_EDGE_UM` to the one before are one edge: a sliver that
    thin is where fields share an edge, lit by neither twice.
    """
    edges = np.unique(np.clip(np.concatenate(([lo, hi], starts, ends)), lo, hi))
    edges = edges[np.concatenate(([True], np.diff(edges) > _EDGE_UM))]
    return np.asarray((edges[:-1] + edges[1:]) / 2)


def check_plan(
    sequence: useq.MDASequence,
    profile: HardwareProfile,
    source: str = _IN_USE,
    *,
    events: Sequence[useq.MDAEvent] | None = None,
    light_budget: bool = True,
    autofocus_device: bool | None = None,
    recorded: bool = False,
) -> None:
    """Check that every event of ``sequence`` can run on the rig of ``profile``.

    Checks channel group and preset names (each channel given once; at least
    one), exposures against each preset's limits and the light-dose budget
    (each frame's exposure, and each position's fluorescence over the plan: what
    the hottest point of its field of view gets, its own frames' and those of
    the plan fields whose field of view overlaps it there),
    time steps (none negative, in a position's own time plan either; at least
    one frame), grids (their field of view given), and every
    stage position (including grid and z-plan offsets) against the profile's
    stage travel. ``events``: the sequence's events
    if the caller has them already (expanding a plan costs ~40 µs per event).
    ``light_budget=False`` leaves out the positions' fluorescence over the
    plan (a replay: that light was given when the data were recorded);
    ``recorded``: a recording's own plan, replayed (see `load_plan`).
    Refused too, as a run's start would refuse them: a channel's z_offset
    that useq does not apply (no z plan beside it), a relative z plan centred
    on the focus wider than the whole z travel, and autofocus events where
    the rig has no autofocus device (``autofocus_device``: whether it has
    one; None: a simulated microscope has none, other rigs are checked when
    the run starts).

    Raises
    ------
    PlanError
        listing each problem once (the first 20), naming the event index and value.

    """
    # (nothing more can be checked: no events; ``recorded``: as `load_plan`'s)
    if problems := _shape_problems(sequence, as_written=not recorded):
        raise PlanError(source, problems)
    chans = profile.channels
    known = ", ".join(c.name for c in chans.presets)
    if not sequence.channels:
        problems.append(f"channels: the plan has no channels; give at least one of: {known}")
    # the plan's channels, and those a position's own sequence gives instead
    for prefix, channels in [("", sequence.channels)] + [
        (f"stage_positions.{i}.sequence.", p.sequence.channels)
        for i, p in enumerate(sequence.stage_positions)
        if p.sequence is not None
    ]:
        problems += _channel_problems(prefix, channels, profile)
    without_fov = _grids_without_fov(sequence)
    problems += _time_and_grid_problems(sequence, profile, without_fov)
    if events is None and without_fov:
        # (not expanded: at 1 µm tiles a 300 µm square grid is 90,000 events, 41 s to expand)
        raise PlanError(source, problems)
    problems += _axis_order_problems(sequence)
    problems += _z_offset_problems(sequence)
    xy, z = profile.stages.xy, profile.stages.z
    seen: set[str] = set()
    named: dict[str, int] = {}  # position name -> the plan index of its first event
    folded: dict[str, str] = {}  # `folder_key` -> the name
    planned = plan_events(sequence) if events is None else events
    places: set[tuple[str, int, str, int]] = set()  # (position, t, channel, z) planned
    twice: set[str] = set()  # positions with an event planned twice
    # positions whose relative z plan counts from the focus drive's z when the run starts
    # (the agent fills it in and checks the planes then): not from z = 0 here
    from_focus = set(focus_centred_positions(sequence))
    problems += _focus_stack_problems(sequence, from_focus, profile)
    if autofocus_device is False or (autofocus_device is None and profile.kind == "simulated"):
        problems += _autofocus_problems(planned, profile)
    for event in planned:
        idx = dict(event.index)
        key, p = position_name(event), int(idx.get("p", 0))
        image = isinstance(event.action, useq.AcquireImage)  # (not an autofocus before it)
        place = (key, int(idx.get("t", 0)), event.channel.config if event.channel else "",
                 int(idx.get("z", 0)))  # fmt: skip
        if image:
            if place in places and key not in twice:
                twice.add(key)
                problems.append(
                    f"stage_positions.{p} ({key}): t={place[1]}, channel {place[2]!r}, "
                    f"z={place[3]} is planned twice (e.g. a position's own time_plan inside "
                    "the plan's): its frames would overwrite each other in the recording; "
                    "give the time plan once"
                )
            places.add(place)
        if key not in named:
            if (why := folder_name_problem(key)) is not None:
                problems.append(
                    f"stage_positions.{p}: position name {key!r} {why}; a position's results "
                    "are kept in a folder of its name (results/ctc/<name>): rename the position"
                )
            elif "~" in key:
                problems.append(
                    f"stage_positions.{p}: position name {key!r} contains '~', which names "
                    "the places decisions add to a position (<position>~<rule>-<n>: their "
                    "light is booked to it, and stopping it stops them): rename the position"
                )
            elif (other := folded.setdefault(folder_key(key), key)) != key:
                problems.append(
                    f"stage_positions.{p}: position names {other!r} and {key!r} name one "
                    "folder here (this system's file names ignore case): rename one of them"
                )
        if (q := named.setdefault(key, p)) != p and (msg := _same_name(key, q, p)) not in seen:
            seen.add(msg)
            problems.append(msg)
        z_pos = None if p in from_focus else event.z_pos
        checks = (
            ("x", event.x_pos, xy.x_range_um, "stages.xy.x_range_um"),
            ("y", event.y_pos, xy.y_range_um, "stages.xy.y_range_um"),
            ("z", z_pos, z.z_range_um, "stages.z.z_range_um"),
        )
        for axis, value, lo_hi, field in checks:
            if value is None or not _outside(value, lo_hi):
                continue
            name = event.pos_name or f"p={idx.get('p', 0)}"
            msg = (
                f"stage_positions ({name}): {axis} = {value:g} µm is outside the stage travel "
                f"[{lo_hi[0]:g}, {lo_hi[1]:g}] µm ({field})"
            )
            if msg not in seen:
                seen.add(msg)
                problems.append(msg)
        if len(problems) >= _MAX_REPORTED:
            break
    if not any(isinstance(e.action, useq.AcquireImage) for e in planned):
        problems.append(_no_frames(sequence))
    if light_budget:  # (what each field's hottest point gets: its own and overlapping frames)
        received = _light_by_field(planned, profile)
        light = {k: sum(by.values()) for k, by in received[1].items()}
        problems += _dose_problems(light, profile, received)
    if problems:
        raise PlanError(source, problems[:_MAX_REPORTED])


def _no_frames(sequence: useq.MDASequence) -> str:
    """Return why ``sequence`` expands to no frames (a run of nothing, said "valid")."""
    why = []
    for prefix, seq in _subs(sequence):
        try:
            if seq.time_plan is not None and seq.time_plan.num_timepoints() < 1:
                why.append(f"{prefix}time_plan gives no time points")
        except (ValueError, ArithmeticError):  # (an interval of 0: `_shape_problems`)
            continue
    return "the plan gives no frames: " + (
        "; ".join(why) if why else "check its channels, time_plan and axis_order"
    )


def _z_offset_problems(sequence: useq.MDASequence) -> list[str]:
    """Return the channels whose z_offset useq would not apply.

    useq shifts a channel by its z_offset only in the planes of a z plan of
    the sequence that holds the channel: the plan's, or a position's own
    sequence's. Without one (or at a position whose own z plan replaces the
    plan's) the channel is imaged without its offset, and nothing is said.
    """
    problems = []
    subs = [("", sequence)] + [
        (f"stage_positions.{i}.sequence.", p.sequence)
        for i, p in enumerate(sequence.stage_positions)
        if p.sequence is not None
    ]
    for prefix, seq in subs:
        if seq.z_plan is not None:
            continue
        problems += [
            f"{prefix}channels.{i}.z_offset: {ch.z_offset:g} µm, but useq shifts a channel by "
            "its z_offset only within a z-stack (a z_plan beside its channels), and "
            f"{'this sequence' if prefix else 'the plan'} has none: channel {ch.config!r} would "
            "be imaged without its offset (at the planes of any z-stack around it, else at the "
            "position's z); give a z_plan there (one plane: z_plan: {relative: [0]}), or put "
            "the offset in the positions' z"
            for i, ch in enumerate(seq.channels)
            if ch.z_offset
        ]
    if sequence.z_plan is not None and any(ch.z_offset for ch in sequence.channels):
        problems += [
            f"stage_positions.{i}.sequence.z_plan: the plan's channels' z_offset is not applied "
            "in a position's own z plan (useq shifts them only in the plan's z-stack); give "
            "this position's sequence its own channels, with their z_offset"
            for i, p in enumerate(sequence.stage_positions)
            if p.sequence is not None and p.sequence.z_plan is not None and not p.sequence.channels
        ]
    return problems


def _focus_stack_problems(
    sequence: useq.MDASequence, from_focus: set[int], profile: HardwareProfile
) -> list[str]:
    """Return the relative z plans centred on the focus that are wider than the z travel.

    Their planes are checked when the run starts (`focus_centred_positions`),
    but one wider than the whole travel is outside it wherever the focus is.
    """
    lo, hi = profile.stages.z.z_range_um
    problems: list[str] = []
    for i in sorted(from_focus):
        sub = sequence.stage_positions[i].sequence if sequence.stage_positions else None
        where, zp = "z_plan", sequence.z_plan
        if sub is not None and sub.z_plan is not None:
            where, zp = f"stage_positions.{i}.sequence.z_plan", sub.z_plan
        planes = list(zp.positions()) if zp is not None else []
        if planes and (span := max(planes) - min(planes)) > hi - lo:
            msg = (
                f"{where}: its planes span {span:g} µm, more than the whole stage travel "
                f"[{lo:g}, {hi:g}] µm (stages.z.z_range_um): wherever the focus is when the "
                "run starts, some are outside it; give a smaller range"
            )
            if msg not in problems:
                problems.append(msg)
    return problems


def _autofocus_problems(events: Iterable[useq.MDAEvent], profile: HardwareProfile) -> list[str]:
    """Return why a rig without an autofocus device cannot run the plan's autofocus events."""
    af = next((e for e in events if isinstance(e.action, useq.HardwareAutofocus)), None)
    if af is None:
        return []
    index = ", ".join(f"{k}={v}" for k, v in af.index.items())
    rig = (
        "the simulated microscope (profile kind: simulated)"
        if profile.kind == "simulated"
        else "the rig"
    )
    return [
        f"autofocus_plan: the plan has autofocus events (e.g. event {index}, from an "
        f"autofocus_plan) but {rig} has no autofocus device; give the plan no autofocus_plan"
    ]


def _channel_problems(
    prefix: str, channels: Sequence[useq.Channel], profile: HardwareProfile
) -> list[str]:
    """Each channel's group, preset and exposure against the rig (``prefix``: where they are)."""
    problems: list[str] = []
    chans = profile.channels
    first: dict[str, int] = {}
    for i, ch in enumerate(channels):
        where = f"{prefix}channels.{i}"
        if (j := first.setdefault(ch.config, i)) != i:
            problems.append(
                f"{where}.config: channel {ch.config!r} is already {prefix}channels.{j}; a "
                "recording keeps one c index per channel, so its frames would overwrite the "
                "other's (give each channel once)"
            )
        if ch.group != chans.config_group:
            problems.append(
                f"{where}.group: config group {ch.group!r} is not the profile's channel group "
                f"{chans.config_group!r}"
            )
            continue
        try:
            preset = chans.get(ch.config)
        except KeyError as exc:
            problems.append(f"{where}.config: {exc.args[0]}")
            continue
        if ch.exposure is not None and _outside(
            ch.exposure, (preset.exposure_min_ms, preset.exposure_max_ms)
        ):
            problems.append(
                f"{where}.exposure: {ch.exposure} ms is outside channel {preset.name!r} "
                f"limits [{preset.exposure_min_ms}, {preset.exposure_max_ms}] ms"
            )
        # a channel that gives no exposure runs at its preset's default (held to the cap
        # too: it went over it unnoticed)
        limit = profile.light_dose.max_exposure_ms_per_frame
        exposure = preset.default_exposure_ms if ch.exposure is None else ch.exposure
        if preset.kind == "fluorescence" and exposure > limit:
            given = "" if ch.exposure is not None else f" (channel {preset.name!r}'s default)"
            problems.append(
                f"{where}.exposure: {exposure} ms{given} exceeds the light-dose budget "
                f"(light_dose.max_exposure_ms_per_frame = {limit} ms)"
            )

    return problems


CASE_BLIND = sys.platform in ("win32", "darwin")
"""Whether file names here ignore case (Windows; macOS's default disks): ``A1`` and
``a1`` are one folder."""

_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{d}{i}" for d in ("COM", "LPT") for i in [*"0123456789", "¹", "²", "³"]]
)
"""The names Windows keeps for devices (Microsoft's "Naming Files, Paths, and Namespaces"),
upper case: COM and LPT take 0 and the superscripts ¹ ² ³ too, and the console's
CONIN$ and CONOUT$ are among them (a folder so named cannot be made)."""


_MAX_FOLDER_NAME = 255 - 6
"""Most bytes of a position's folder name in UTF-8: a folder name's 255 (ext4, APFS: 255
bytes; NTFS 255 UTF-16 units, more for most scripts: the bytes are held to so that a run
folder moves between them) less the 6 the worker's staging folders add (``.<name>.live``,
``.<name>.new``, ``.<name>.old``: `livescope.pipeline.ctc_staging`). A name of 250 bytes
was accepted, and its CTC result never written."""


def folder_name_problem(name: str, *, windows: bool | None = None) -> str | None:
    r"""Return why ``name`` cannot name a folder of its own (None if it can).

    Everywhere: empty, ``.``, ``..``, a leading ``.`` (hidden; the worker's own
    staging folders are named so), longer than 249 bytes (UTF-8: 255 less the
    6 the worker's staging folders ``.<name>.live`` add), a ``/`` (a
    folder inside another, or outside the run) or a control character. On Windows (``windows`` None:
    where this runs) also ``<>:"\|?*``, a trailing space or dot (Windows drops
    them: two names, one folder) and device names (``CON``, ``NUL``, ``COM1``,
    ``COM¹``, ``CONIN$`` ...: `_WINDOWS_DEVICES`), in any case, with or without
    an extension.
    """
    if windows is None:
        windows = sys.platform == "win32"
    if name in ("", ".", ".."):
        return "is not a folder name"
    if name.startswith("."):
        return "starts with a dot (hidden, and the worker's own staging folders start so)"
    if surrogates := sorted({c for c in name if "\ud800" <= c <= "\udfff"}):
        # (YAML's and JSON's "\ud83d\ude00" escapes: half characters, which no file name
        # can be written in, nor UTF-8 encode)
        shown = ", ".join(ascii(c) for c in surrogates)
        return f"holds escaped half characters ({shown}); write the character itself"
    if (size := len(name.encode("utf-8"))) > _MAX_FOLDER_NAME:
        # (nor does a frame's header carry it: every frame of it was refused on the bus)
        return (
            f"is {size} bytes long, more than a position's folder name may be "
            f"({_MAX_FOLDER_NAME}: the worker stages its results in folders of the name and "
            "6 bytes more, .<name>.live)"
        )
    bad = sorted({c for c in name if _not_in_folder_names(c, windows)})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        return (
            f"contains {shown}, which {'Windows does' if windows else 'folder names do'} not allow"
        )
    if windows and name[-1] in " .":
        return "ends in a space or a dot, which Windows drops from folder names"
    if windows and name.split(".")[0].strip().upper() in _WINDOWS_DEVICES:
        return "is a device name on Windows, not a folder name"
    return None


def _not_in_folder_names(c: str, windows: bool) -> bool:
    """Whether character ``c`` may not be in a folder name (see `folder_name_problem`)."""
    return c == "/" or ord(c) < 32 or (windows and c in '<>:"\\|?*')


def safe_folder_name(name: str) -> str:
    """Return ``name`` made a folder name here, as near as can be (check the result again).

    Each character a folder name may not hold becomes ``_``; a name longer than
    a position's folder name may be is cut to it (whole characters); a leading
    dot and a trailing space or dot go; a name still refused (a device name on
    Windows, or nothing left) gets a trailing ``_``. Names without a problem
    come back as they are.
    """
    if folder_name_problem(name) is None:
        return name
    windows = sys.platform == "win32"
    new = "".join("_" if _not_in_folder_names(c, windows) else c for c in name)
    new = _cut_to(new, _MAX_FOLDER_NAME).lstrip(".").rstrip(" .")
    if folder_name_problem(new) is None:
        return new
    # (room for the "_": a name cut to the limit went past it, and was still refused)
    return _cut_to(new, _MAX_FOLDER_NAME - 1) + "_"


def _cut_to(name: str, size: int) -> str:
    """Return ``name`` without its last characters beyond ``size`` bytes in UTF-8."""
    while len(name.encode("utf-8", "surrogatepass")) > size:
        name = name[:-1]
    return name


def folder_key(name: str) -> str:
    """Return ``name`` as this system compares folder names (case ignored where `CASE_BLIND`)."""
    return name.casefold() if CASE_BLIND else name


def _same_name(key: str, first: int, again: int) -> str:
    return (
        f"stage_positions.{again}: position name {key!r} is also stage_positions.{first}'s "
        "(an unnamed position is called p<index>); a recording keeps one series per name, so "
        "their frames would overwrite each other's (give each position a name of its own)"
    )


def _dose_problems(
    light: dict[tuple[str, str], float],
    profile: HardwareProfile,
    received: tuple[dict[str, _Booked], dict[tuple[str, str], _Booked]] | None = None,
) -> list[str]:
    """Positions (and channels) whose planned fluorescence alone passes the light-dose budget.

    ``light``: per (position, channel), the seconds of fluorescence its field
    gets. ``received``: per position and per (position, channel), what the
    hottest point of its field of view gets, by the field whose frames give
    them (`_light_by_field`): a position is held to that (over all its
    channels: one channel's hottest point need not be another's), and where
    other fields' add to its own, the message says which. Without it, each
    position's own light, summed over its channels.
    """
    if received is None:
        dose: dict[str, _Booked] = {}
        for (key, _), s in light.items():
            books = dose.setdefault(key, {key: 0.0})
            books[key] += s
        booked = {k: {k[0]: s} for k, s in light.items()}
    else:
        dose, booked = received
    budget = profile.light_dose
    fix = (
        "(shorter exposures, fluorescence at fewer time points, or a larger budget in the profile)"
    )
    # (a field others overlap: less overlap is a way out too)
    fix_shared = (
        "(shorter exposures, fluorescence at fewer time points, less overlap between these "
        "fields, or a larger budget in the profile)"
    )
    channels: dict[str, list[str]] = {}
    for key, ch in light:
        channels.setdefault(key, []).append(ch)

    def sources(key: str, booked: dict[str, float], chs: list[str]) -> tuple[str, str, str]:
        """Return what a message adds where fields overlap ``key``'s: channels, why, fix."""
        others = {src: s for src, s in booked.items() if src != key}
        if not others:
            return "", "", fix
        shown = [f"{src} {_seconds(s)} s" for src, s in list(others.items())[:_MAX_SOURCES]]
        if len(others) > _MAX_SOURCES:
            shown.append(f"and {len(others) - _MAX_SOURCES} more")
        why = (
            f" at the hottest point of its field of view ({_seconds(booked.get(key, 0.0))} s "
            f"from its own frames, {_seconds(sum(others.values()))} s from those of the plan "
            f"fields whose field of view overlaps it there: {', '.join(shown)})"
        )
        return f" ({', '.join(chs)})", why, fix_shared

    # (one decimal, or more where one puts it at the limit: 1.04 s said "1.0 s" for 1 s)
    most = budget.max_fluorescence_s_per_position
    out = [
        f"light dose: position {key} gets {past_limit(s, most, 1)} s of fluorescence{chs} from "
        f"the plan alone{why}; light_dose.max_fluorescence_s_per_position = {most:g}"
        f" s {fixed}"
        for key, by in dose.items()
        if (s := sum(by.values())) > budget.max_fluorescence_s_per_position + 1e-9
        for chs, why, fixed in [sources(key, by, channels.get(key, []))]
    ]
    if (limit := budget.max_fluorescence_s_per_channel) is not None:
        out += [
            f"light dose: position {key}, channel {ch} gets {past_limit(s, limit, 1)} s of "
            f"fluorescence from the plan alone{why}; "
            f"light_dose.max_fluorescence_s_per_channel = {limit:g} s {fixed}"
            for (key, ch), s in light.items()
            if s > limit + 1e-9
            for _, why, fixed in [sources(key, booked.get((key, ch), {key: s}), [ch])]
        ]
    return out


_MAX_SOURCES = 8
"""Most overlapping fields a light-dose refusal names (a 3x3 grid's tile: the other 8)."""


def _seconds(s: float) -> str:
    """Return ``s`` seconds as a refusal shows a part of a field's light (one decimal)."""
    return f"{s:.1f}" if s >= 0.05 or s == 0 else f"{s:.2g}"
