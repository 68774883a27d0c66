"""The keys a plan file gives, against the models useq reads them into.

useq ignores a key it does not know and, where a field takes one of several
models (time, z and grid plans, a plate plan's well points), the member that
validates drops the keys it lacks: `load_plan` refuses both, naming the key,
before a run does something other than written; so too a position's x/y,
which useq drops under an absolute grid (`_ignored_xy`).
"""

from __future__ import annotations

import typing
from typing import Any

import useq
from pydantic import BaseModel, ValidationError

from ._base import format_validation_error
from ._profile import HardwareProfile


def _fields(model: type[BaseModel]) -> set[str]:
    names = set(model.model_fields)
    names |= {f.alias for f in model.model_fields.values() if f.alias}
    return names


_PROFILE_KEYS = (
    frozenset(HardwareProfile.model_fields) - _fields(useq.MDASequence) - {"name", "description"}
)
"""The hardware profile's sections (``guardrails``, ``light_dose``, ``camera``, ...): in a
plan they are no plan's keys, and the error says where they go instead."""


def _union_members(field: str, model: type[BaseModel] = useq.MDASequence) -> list[type[BaseModel]]:
    """Return the models a union field of ``model`` may hold (e.g. time plans)."""
    out: list[type[BaseModel]] = []
    stack = [model.model_fields[field].annotation]
    while stack:
        a = stack.pop()
        if isinstance(a, type) and issubclass(a, BaseModel):
            out.append(a)
        else:
            stack.extend(typing.get_args(a))
    return out


def _unknown_keys(data: dict[str, object], prefix: str = "") -> list[str]:
    """Keys useq would silently ignore (a misspelt field must not be dropped quietly).

    A position's own ``sequence`` is looked through too (``prefix``: where it is):
    useq drops a misspelt key there as silently as at the top.
    """
    problems = [
        # (not "copy sim.yaml": a rig's copy of the simulator's profile would run simulated)
        f"{prefix}{k}: set in the hardware profile, not the plan: edit `{k}:` in your rig's "
        "profile, the file given as `--profile FILE` (a shipped one: copy it first)"
        if k in _PROFILE_KEYS
        else f"{prefix}{k}: unknown field (not part of useq.MDASequence; check its spelling)"
        for k in data
        if k not in _fields(useq.MDASequence)
    ]
    for key in ("time_plan", "z_plan", "grid_plan", "autofocus_plan"):  # a key no member takes
        plan = data.get(key)
        if isinstance(plan, dict):
            known = set().union(*(_fields(m) for m in _union_members(key)))
            problems += [
                f"{prefix}{key}.{k}: unknown field (takes {', '.join(sorted(known))})"
                for k in plan
                if k not in known
            ]
    for key, model in (("channels", useq.Channel), ("stage_positions", useq.Position)):
        items = data.get(key)
        if not isinstance(items, list):
            continue
        known = _fields(model)
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            problems += [
                f"{prefix}{key}.{i}.{k}: unknown field (check its spelling)"
                for k in item
                if k not in known
            ]
            if key == "stage_positions" and isinstance(sub := item.get("sequence"), dict):
                problems += _unknown_keys(sub, f"{prefix}{key}.{i}.sequence.")
    return problems


def _numeric_channels(data: dict[str, object], prefix: str = "") -> list[str]:
    """Channels named by a number: YAML reads ``405`` as an int, and useq refuses it.

    useq says only "Invalid Channel argument" (or, for ``config: 405``, that it
    wants a string); a position's own ``sequence`` is looked through too.
    """
    problems = []
    items = data.get("channels")
    for i, item in enumerate(items if isinstance(items, list) else []):
        where, value = f"{prefix}channels.{i}", item
        if isinstance(item, dict):
            where, value = f"{where}.config", item.get("config")
        if isinstance(value, int | float) and not isinstance(value, bool):
            problems.append(
                f"{where}: {value!r} is read as a number, not a channel preset's name; write "
                f"it in quotes: '{value}'"
            )
    positions = data.get("stage_positions")
    for i, pos in enumerate(positions if isinstance(positions, list) else []):
        if isinstance(pos, dict) and isinstance(sub := pos.get("sequence"), dict):
            problems += _numeric_channels(sub, f"{prefix}stage_positions.{i}.sequence.")
    return problems


def _dropped_keys(
    data: dict[str, object], sequence: useq.MDASequence, prefix: str = ""
) -> list[str]:
    """Return the keys written that the model useq chose for them lacks: it drops them.

    A union field (time, z and grid plans, a time plan's phases, a plate plan's
    well points) takes the member that validates: a grid with one bad value
    (``mode: snake``) is read as one field (`useq.RelativePosition`, which needs
    only ``fov_width`` and ``fov_height``), a time plan with interval, loops and
    duration as interval and duration. Compared after validation, with the
    member the keys suggest validated again for useq's own word on the bad value.
    """
    problems: list[str] = []
    written: object
    for key in ("time_plan", "z_plan", "grid_plan", "autofocus_plan"):
        written, model = data.get(key), getattr(sequence, key)
        if isinstance(written, list) and isinstance(model, useq.MultiPhaseTimePlan):
            written = {"phases": written}  # (useq takes a list as the phases)
        if not isinstance(written, dict) or not isinstance(model, BaseModel):
            continue
        problems += _dropped(written, model, f"{prefix}{key}", _union_members(key))
        phases = written.get("phases")
        if isinstance(model, useq.MultiPhaseTimePlan) and isinstance(phases, list):
            members = _union_members("phases", useq.MultiPhaseTimePlan)
            for k, (w, phase) in enumerate(zip(phases, model.phases, strict=False)):
                if isinstance(w, dict):
                    problems += _dropped(w, phase, f"{prefix}{key}.phases.{k}", members)
    written, positions = data.get("stage_positions"), sequence.stage_positions
    where = f"{prefix}stage_positions"
    if isinstance(written, dict) and isinstance(positions, useq.WellPlatePlan):
        problems += _dropped(written, positions, where, [useq.WellPlatePlan])
        if isinstance(plate := written.get("plate"), dict):
            problems += _dropped(plate, positions.plate, f"{where}.plate", [useq.WellPlate])
        if isinstance(points := written.get("well_points_plan"), dict):
            members = _union_members("well_points_plan", useq.WellPlatePlan)
            problems += _dropped(
                points, positions.well_points_plan, f"{where}.well_points_plan", members
            )
    elif isinstance(written, list) and isinstance(positions, tuple):
        for i, (w, pos) in enumerate(zip(written, positions, strict=False)):
            if (
                isinstance(w, dict)
                and isinstance(sub := w.get("sequence"), dict)
                and pos.sequence is not None
            ):
                problems += _dropped_keys(sub, pos.sequence, f"{where}.{i}.sequence.")
    return problems


# how an absolute grid, and what to give instead, are said (here and by `_plan`)
_ABSOLUTE = "a GridFromEdges (top, left, bottom and right are stage coordinates)"
_RELATIVE = "a relative grid (rows and columns, or width and height)"


def _ignored_xy(data: dict[str, object], sequence: useq.MDASequence) -> list[str]:
    """Return the positions whose x/y useq drops: an absolute grid's tiles are imaged instead.

    Under the plan's ``GridFromEdges`` useq clears every position's x/y (with a
    warning on stderr only), so all image the same tiles; under a position's
    own, its x/y go unused. Read from the keys written: the model has lost them.
    """
    written, positions = data.get("stage_positions"), sequence.stage_positions
    if not isinstance(written, list) or not isinstance(positions, tuple):
        return []  # (a well plate's positions are its wells': no x/y written)
    top = sequence.grid_plan is not None and not sequence.grid_plan.is_relative
    under_top, problems = [], []
    for i, (w, pos) in enumerate(zip(written, positions, strict=False)):
        if not isinstance(w, dict) or (w.get("x") is None and w.get("y") is None):
            continue
        name = f"stage_positions.{i}" + (f" ({pos.name})" if pos.name else "")
        own = pos.sequence.grid_plan if pos.sequence is not None else None
        if own:
            if not own.is_relative:
                problems.append(
                    f"{name}: x/y are ignored under its sequence.grid_plan, {_ABSOLUTE}, which "
                    f"images its own tiles, not around the position; leave out the position's "
                    f"x/y, or give {_RELATIVE} around it"
                )
        elif top:
            under_top.append(name)
    if not under_top:
        return problems
    # (useq's own grid for a position with a grid of its own; the plan's for the others)
    shared = sum(1 for p in positions if p.sequence is None or not p.sequence.grid_plan)
    said = f"{', '.join(under_top)}: x/y are ignored under grid_plan, {_ABSOLUTE}, "
    if shared > 1:
        said += (
            "so every position would image the same tiles; give one position without x/y, "
            f"or {_RELATIVE} around each position"
        )
    else:
        said += (
            "which images its own tiles, not around the position; leave out the position's "
            f"x/y, or give {_RELATIVE} around it"
        )
    return [said, *problems]


def _dropped(
    written: dict[Any, object], model: BaseModel, where: str, members: list[type[BaseModel]]
) -> list[str]:
    """Return the keys of ``written`` that ``model`` (the member useq chose) lacks, said why."""
    chosen = type(model)
    dropped = [k for k in written if k not in _fields(chosen)]
    if not dropped:
        return []
    kept = ", ".join(str(k) for k in written if k not in dropped)
    read_as = (
        f"useq would read {where} as a {chosen.__name__} ("
        + ("one field, no grid; " if chosen is useq.RelativePosition else "")
        + (f"it takes {kept})" if kept else "taking none of its keys)")
    )
    # the member the keys written suggest (one that takes them all): its own word on a bad value
    for member in (m for m in members if m is not chosen and set(written) <= _fields(m)):
        try:
            member.model_validate(written)
        except ValidationError as exc:
            lost = ", ".join(map(str, dropped))
            return [
                f"{where}.{line}; as written, {read_as} and drop {lost}"
                for line in format_validation_error(exc, written)
            ]
    problems = []
    for k in dropped:
        takers = [m.__name__ for m in members if k in _fields(m)]
        if not takers:
            known = sorted(set().union(*(_fields(m) for m in members)))
            problems.append(f"{where}.{k}: unknown field (takes {', '.join(known)})")
            continue
        problems.append(
            f"{where}.{k}: {', '.join(map(str, written))} do not go together: {read_as} and "
            f"drop {k} (a field of {' or '.join(takers)}); give the keys of one of these only"
        )
    return problems
