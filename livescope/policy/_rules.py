"""Declarative rules: a trigger over results, an action, a cooldown.

A plan file declares them under ``policies:``; each becomes a `Rule`, which is
one implementation of the `Policy` protocol (Python policies are another)::

    policies:
      - name: mitosis-closeup
        when: {mitosis: {p_min: 0.5, frames: 2}}
        do:
          acquire: {channels: [Phase, DAPI], loops: 4, interval_s: 45, centre: cell}
        cooldown_s: 1800          # not again within this long ...
        cooldown_radius_um: 25    # ... this close to where it fired (0: anywhere)

A hit held back by a cooldown fires once the cooldown is over if its condition
still holds (the cell is still in mitosis, ...); a division or lost track is dropped.
A firing whose decision the microscope refused as stale (the frame it answers
was too old: ``guardrails.max_decision_age_s``) is given back (`Rule.give_back`),
once per cell: no cooldown, not counted towards ``max_fires``, so a lasting
condition fires again on a fresher field. Any other refusal counts as a firing.

Triggers (``when``): ``mitosis`` (a track's P(mitosis) at or above ``p_min``
for ``frames`` frames in a row, once per track; a daughter of a fired track is
that mitosis until it is seen out of it and not in it again for
``rearm_after_s``, then its own next mitosis counts),
``division`` (the tracker saw one cell become two), ``cell_count``
(``above`` / ``below``, with ``hysteresis``), ``enter_region`` (a track
enters a rectangle ``[y0, x0, y1, x1]`` in pixels; the cells already inside
on the first field seen at a position entered nothing), ``feature`` (a cell's
``intensity`` / ``stain`` / ``area`` / ``p_mitosis`` rises to ``above``;
re-armed when it falls below ``rearm_below``), ``track_lost`` (once per track). For
``enter_region`` and ``feature`` a division is no crossing: a daughter is born
with her mother's state (inside the rectangle; above, until she falls below
``rearm_below``), so she fires only once she has left it and enters it again;
a daughter of a mother not in that state (or never seen, or held back by the
cooldown) fires as any other cell does.

Actions (``do``): ``acquire`` (a useq sub-sequence at the position or centred on
the cell: ``channels``, ``loops`` × ``interval_s`` (a fast time-lapse),
``z_planes`` × ``z_step_um`` (a z-stack), ``exposure_ms`` per channel;
``share_field: true``: cells firing in one field that lie in the central part
(`SHARE_MARGIN`) of a sub-sequence the rule made there, which the guardrails
passed, are imaged by it and get none of their own),
``recentre`` (move the position onto the cell), ``change_interval``
(``interval_s``), ``stop_position``, ``stop_run``, ``record`` (log only).
Sub-sequences get their own position name (``<position>~<rule>-<n>``), so their
frames never collide with the plan's. The actions' code (`Acquire`, the
decisions) is in ``_actions``, the checks of a rule's settings in ``_spec``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from livescope.schema import LivescopeError, folder_key, folder_name_problem

from ._actions import (
    ACTIONS,
    SHARE_MARGIN,
    Acquire,
    _acquire_spec,
    _decision,
    _hit_place_um,
    firing_id,
)
from ._observation import Firing, Observation
from ._spec import _check_numbers, _settings_problem, _unknown_settings
from ._triggers import TRIGGERS, Hit, _LastSeen, cell_key

__all__ = [
    "ACTIONS",
    "SHARE_MARGIN",
    "TRIGGERS",
    "Acquire",
    "Hit",
    "Policy",
    "Rule",
    "rules_from_spec",
]


@runtime_checkable
class Policy(Protocol):
    """Anything that turns an observation into firings (rules, or your own Python class).

    ``decide`` must be pure in the observation and the policy's own state (no
    I/O, no clocks: use ``obs.sample_time_s``); an exception disables the policy
    for the rest of the run (logged) and the run goes on, as does a firing that
    is not a `Firing` of the policy's own ``name`` with JSON-writable ``inputs``,
    or whose decision names another rule (see `PolicyEngine.evaluate`; a
    decision's empty ``rule`` and ``engines`` are filled in, and a ``seq`` left out
    is the field's frame, ``obs.seq``; one naming a later frame disables the
    policy). Optional ``state()``
    / ``restore(state)`` (JSON-serialisable) let a restarted worker resume it
    (one that raises, or a state that is not JSON, disables the policy too),
    and an optional ``give_back(decision_id) -> bool`` takes back a firing whose
    decision the microscope refused as stale (`STALE_REFUSAL`), returning True
    when it did (see `PolicyEngine.give_back`).

    Give each decision the id `firing_id` makes of the field and the firing's
    place in it (``decision_id=firing_id(obs.run_id, self.name, obs.position,
    obs.t, k)``): a worker restarted after a decision went out, but before the
    policies' state booked it, decides the field again and sends the decision
    again, which the agent then answers as before without applying it twice. A
    decision made without one gets a random id, new each time: the agent takes
    it for another decision.
    """

    name: str

    def decide(self, obs: Observation) -> Iterable[Firing]:
        """Return the firings for one analysed field."""
        ...


_BOOKED_MAX = 4096  # a rule's last firings that `Rule.give_back` can take back
_ACTION_PARAMS: dict[str, frozenset[str]] = {
    "recentre": frozenset(),
    "change_interval": frozenset({"interval_s"}),
    "stop_position": frozenset(),
    "stop_run": frozenset(),
    "record": frozenset(),
}
"""Parameters each action other than ``acquire`` takes."""
_ACTS_ON = {
    "recentre": "it moves the position whose field fired onto the cell",
    "change_interval": "it re-times the time points still to come, at every position",
    "stop_position": "it stops the position whose field fired",
    "stop_run": "it ends the run",
    "record": "it only logs the firing",
}
"""What each action other than ``acquire`` acts on (why it takes no position: its errors)."""
_AIMED = frozenset({"acquire", "recentre"})
"""Actions whose decision needs the field's stage position (to place a close-up or a move)."""


def _only_one(what: str, key: str, given: Mapping[str, Any]) -> str:
    """Say that a rule's ``key`` (``when``, ``do``) names more than one ``what``."""
    return (
        f"a rule takes exactly one {what} in '{key}' (got {len(given)}: "
        f"{', '.join(map(str, given))}); declare a rule for each"
    )


_Cooling = tuple[str, float, float | None, float | None, bool]
"""A firing in its cooldown: position, sample time, x, y µm (`_place_um`), on the stage."""


class Rule:
    """A declared rule: ``when`` trigger, ``do`` action, cooldown in time and space.

    Parameters
    ----------
    name
        Rule name (recorded with every decision it makes).
    when
        ``{trigger kind: {parameters}}``.
    do
        ``{action kind: {parameters}}``.
    cooldown_s
        After firing, the rule does not fire again within this many seconds of
        run time (at the same position) ...
    cooldown_radius_um
        ... closer than this to where it fired (0: anywhere in the position).
        Where both fields carry their stage position, a firing at another
        position this close on the stage holds it back too (the same cell,
        where the fields overlap: a grid's tiles). A cell at no known place (a
        NaN centroid) is held back by every firing at its position, and so is
        a cell whose field and the firing's differ in carrying a stage position
        (a place on the stage and one in the frame are no distance apart).
        A hit held back by the cooldown is not used up: a condition that lasts
        (a cell still in mitosis, still in the region, a feature or count still
        past its threshold) fires on the first field after the cooldown; a
        division or a lost track held back is dropped.
    max_fires
        At most this many firings over the run (None: no limit).
    channel_group
        The rig's channel config group (for ``acquire``).
    channels
        The rig's channel names: ``acquire`` may name only these (None: unchecked).

    """

    def __init__(
        self,
        name: str,
        when: Mapping[str, Any],
        do: Mapping[str, Any],
        *,
        cooldown_s: float = 0.0,
        cooldown_radius_um: float = 0.0,
        max_fires: int | None = None,
        channel_group: str = "Channel",
        channels: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name or "~" in name:
            raise ValueError(f"rule name must be non-empty text without '~', got {name!r}")
        self.name = name
        if len(when) > 1:
            raise ValueError(f"rule {name!r}: {_only_one('trigger', 'when', when)}")
        if len(when) != 1 or next(iter(when)) not in TRIGGERS:
            raise ValueError(
                f"rule {name!r}: 'when' must be one of {', '.join(TRIGGERS)}, got {dict(when)}"
            )
        kind, params = next(iter(when.items()))
        if params is not None and not isinstance(params, Mapping):
            raise ValueError(f"rule {name!r}: trigger {kind} takes a mapping, got {params!r}")
        if misspelt := _unknown_settings(TRIGGERS[kind], params):
            # (before the numbers: a misspelt `feture: area` is no number, and was called one)
            raise ValueError(f"rule {name!r}: trigger {kind}: {misspelt}")
        _check_numbers(f"rule {name!r}: {kind}", dict(params or {}), skip=("feature", "region"))
        try:
            self.trigger = TRIGGERS[kind](**dict(params or {}))
        except TypeError as exc:
            raise ValueError(
                f"rule {name!r}: trigger {kind}: {_settings_problem(TRIGGERS[kind], params, exc)}"
            ) from None
        if len(do) > 1:
            raise ValueError(f"rule {name!r}: {_only_one('action', 'do', do)}")
        if len(do) != 1 or next(iter(do)) not in ACTIONS:
            raise ValueError(
                f"rule {name!r}: 'do' must be one of {', '.join(ACTIONS)}, got {dict(do)}"
            )
        self.action, params = next(iter(do.items()))
        if params is not None and not isinstance(params, Mapping):
            raise ValueError(f"rule {name!r}: {self.action} takes a mapping, got {params!r}")
        self.params = dict(params or {})
        self.acquire: Acquire | None = None
        """The sub-sequence an ``acquire`` rule adds (checked once, here)."""
        if self.action == "acquire":
            if (why := folder_name_problem(f"p~{name}-0")) is not None:
                # (as a plan position's name: the worker keeps results in results/ctc/<position>)
                raise ValueError(
                    f"rule name {name!r} {why}; it names the positions of its close-ups "
                    "(<position>~<rule>-<n>), whose results are kept in folders of those names"
                )
            spec = _acquire_spec(self.params, channel_group)
            try:
                self.acquire = acq = Acquire(**spec)
            except TypeError as exc:
                raise ValueError(
                    f"rule {name!r}: acquire: {_settings_problem(Acquire, spec, exc)}"
                ) from None
            if channels is not None and (unknown := [c for c in acq.channels if c not in channels]):
                raise ValueError(
                    f"rule {name!r}: acquire.channels {unknown} are not channels of the rig "
                    f"(its profile has {list(channels)})"
                )
        else:
            if unknown := sorted(set(self.params) - _ACTION_PARAMS[self.action]):
                takes = sorted(_ACTION_PARAMS[self.action]) or "nothing"
                raise ValueError(
                    f"rule {name!r}: {self.action} takes {takes}, not {unknown} "
                    f"({_ACTS_ON[self.action]})"
                )
            _check_numbers(f"rule {name!r}: {self.action}", self.params)
        if self.action == "change_interval" and not self.params.get("interval_s", 0) > 0:
            raise ValueError(f"rule {name!r}: change_interval needs interval_s > 0")
        if self.action == "recentre" and kind in ("cell_count", "track_lost"):
            raise ValueError(
                f"rule {name!r}: recentre needs a trigger that fires on a cell in view, not {kind}"
            )
        if max_fires is not None:
            _check_numbers(f"rule {name!r}", {"max_fires": max_fires})
            if max_fires < 1:
                raise ValueError(f"rule {name!r}: max_fires must be >= 1, got {max_fires}")
            max_fires = int(max_fires)
        cooldowns = {"cooldown_s": cooldown_s, "cooldown_radius_um": cooldown_radius_um}
        _check_numbers(f"rule {name!r}", cooldowns)
        if cooldown_s < 0 or cooldown_radius_um < 0:
            raise ValueError(f"rule {name!r}: cooldowns must be >= 0")
        if cooldown_radius_um > 0 and cooldown_s == 0:
            raise ValueError(
                f"rule {name!r}: cooldown_radius_um limits the cooldown to a distance, and "
                "has no effect without cooldown_s (how long the rule rests after firing)"
            )
        self.cooldown_s = float(cooldown_s)
        self.cooldown_radius_um = float(cooldown_radius_um)
        self.max_fires = max_fires
        self.fires = 0
        """Firings so far (also numbering the close-ups' positions: never counts down)."""
        self.given_back_cells: set[str] = set()
        """``position/track`` of the cells given back once (never twice; `give_back`;
        ``position/`` for a hit without a cell, a count's, until its trigger re-arms).
        A cell's track gone for good (not seen for `FORGET_AFTER_T` time points of its
        position) is forgotten: no firing on it can come again (kept, they grew with
        every cell given back over a run, in the state written after every field)."""
        self._given_back_n = 0  # (cells forgotten still count: `given_back`)
        self._given_back_seen = _LastSeen()  # when each of them was last seen
        self.recent: list[_Cooling] = []
        """(position, time, x, y µm, on the stage) of firings still in their cooldown."""
        self._booked: dict[str, tuple[str, Hit, _Cooling | None]]
        self._booked = {}
        """Recent firings by decision id: position, hit and cooldown entry (`give_back`)."""

    @property
    def given_back(self) -> int:
        """Firings given back (`give_back`, one per cell): not counted towards ``max_fires``."""
        return self._given_back_n

    def _cooling(self, obs: Observation, hit: Hit) -> bool:
        now = obs.sample_time_s
        self.recent = [r for r in self.recent if now - r[1] < self.cooldown_s]
        place = _hit_place_um(obs, hit)
        for pos, _, rx, ry, on_stage in self.recent:
            here = pos == obs.position
            if rx is not None and ry is not None and not math.isfinite(rx + ry):
                continue  # (a cell at no finite place, saved before they were left out)
            if (
                place is None
                or rx is None
                or ry is None
                or self.cooldown_radius_um <= 0
                or on_stage != bool(obs.stage_um)
            ):
                # (no distance to tell: anywhere in the position; nor between a place on
                # the stage and one in the frame, where one field carried its stage
                # position and the other did not: the same cell was thousands of µm away)
                if here:
                    return True
                continue
            if not here and not (on_stage and obs.stage_um):
                # another position's firing holds it back only near on the stage, as where
                # fields overlap (a grid's tiles): it is the same cell
                continue
            if math.hypot(place[0] - rx, place[1] - ry) < self.cooldown_radius_um:
                return True
        return False

    def _unaimed(self, obs: Observation, hit: Hit) -> str:
        """Return why a close-up or recentring on ``hit`` has no place to go (``""``: it has).

        The field's frame carried no stage position; or a close-up's z-stack
        (``z_planes`` > 1) has no stage z to centre on; or the place is no finite
        number (a cell whose centroid is NaN, a stage position that is); or a
        recentring's hit has no cell place (a division whose daughters are not
        among the field's cells). Other actions need no place.
        """
        if self.action not in _AIMED:
            return ""
        where = f"field {obs.position} t={obs.t}"
        if obs.stage_um is None:
            return f"{where} has no stage position"
        if self.acquire is not None and self.acquire.z_planes > 1 and obs.stage_um[2] is None:
            # (its planes would have no z of their own: all taken at the one focus the
            # microscope is at, the same plane N times, booking N times the light)
            return (
                f"{where}: a z-stack ({self.acquire.z_planes} planes) needs the field's "
                "stage z; the frame has none"
            )
        track = "" if hit.track is None else f" (track {hit.track})"
        z = obs.stage_um[2] if self.action == "acquire" else None  # (a move keeps its z)
        place, what = (obs.stage_um[0], obs.stage_um[1]), "the field's centre"
        if hit.y is not None and hit.x is not None:
            if self.action == "recentre" or (self.acquire and self.acquire.centre == "cell"):
                place = obs.aim_xy(hit.y, hit.x)
                what = f"the cell{track} at row {hit.y:g}, column {hit.x:g}"
        elif self.action == "recentre":
            kind = self.trigger.kind
            return f"{where}: recentre needs the cell's place; its {kind} hit{track} has none"
        if not all(math.isfinite(v) for v in (*place, 0.0 if z is None else z)):
            return (
                f"{where}: {what} is at no finite stage place (x, y, z = {place[0]:g}, "
                f"{place[1]:g}, {'-' if z is None else format(z, 'g')} µm)"
            )
        return ""

    def decide(self, obs: Observation) -> Iterator[Firing]:
        """Check the trigger; turn each hit outside its cooldown into a firing.

        Firings come one at a time (a generator): the caller may send each
        decision before the next is made. A close-up or recentring with no
        place to go (`_unaimed`: a field whose frame carried no stage position,
        a z-stack in one whose frame carried no stage z, a cell whose centroid
        is NaN) has no decision (`Firing.unmade` says why;
        the engine refuses it): it counts as a refused firing does, and the
        rule goes on. A field nothing was segmented in (`Observation.segmented`)
        is passed over: its cells are unknown (``cell_count`` fired on it as on
        a field of none, a run of mitosis fields ended there).
        """
        if not obs.segmented:
            return
        if self.given_back_cells:
            # (before the hits: a cell gone that long is in none of them)
            gone = self._given_back_seen.ended(obs, self.given_back_cells)
            self.given_back_cells.difference_update(gone)
        hits = self.trigger.check(obs)
        if self.given_back_cells and self.trigger.rearmed(obs.position):
            # (a hit without a cell, a count, is keyed by its position alone: its crossing
            # is over, and the next one is another, given back as this one was)
            self.given_back_cells.discard(cell_key(obs.position, None))
        k = 0  # this field's firings so far
        for hit in hits:
            if self.max_fires is not None and self.fires - self.given_back >= self.max_fires:
                # not used up: a firing given back frees its place (`give_back`)
                self.trigger.release(obs.position, hit)
                continue
            if self.cooldown_s > 0 and self._cooling(obs, hit):
                self.trigger.release(obs.position, hit)  # it fires once the cooldown is over
                continue
            decision = None
            # nothing to aim at: this firing is refused (and counts, as a refused one
            # does), not the rule disabled: later fields may carry their stage position
            if not (unmade := self._unaimed(obs, hit)):
                decision = _decision(
                    self.action, self.params, obs, hit, self.name, self.fires, self.acquire,
                    decision_id=firing_id(obs.run_id, self.name, obs.position, obs.t, k),
                )  # fmt: skip
            self.fires += 1
            k += 1
            entry = None
            place = _hit_place_um(obs, hit)
            if self.cooldown_s > 0 and (place is not None or hit.y is None or hit.x is None):
                # (a cell at no finite place holds back no other: `_hit_place_um`)
                sx, sy = place or (None, None)
                entry = (obs.position, obs.sample_time_s, sx, sy, bool(obs.stage_um))
                self.recent.append(entry)
            if decision is not None:
                self._booked[decision.decision_id] = (obs.position, hit, entry)
                if len(self._booked) > _BOOKED_MAX:
                    del self._booked[next(iter(self._booked))]
            yield Firing(
                self.name,
                self.trigger.kind,
                obs.position,
                decision,
                hit.track,
                hit.y,
                hit.x,
                dict(hit.inputs or {}),
                unmade,
            )

    def give_back(self, decision_id: str) -> bool:
        """Take back the firing that made ``decision_id``: as if the rule had not fired.

        For a decision the microscope refused as stale (the frame it answers
        was too old: ``guardrails.max_decision_age_s``): a lasting condition
        (a cell still in mitosis, in a region, past a threshold) may fire again
        on a fresher field, outside the cooldown this firing began and not
        counted towards ``max_fires``; an event (a division, a lost track) is
        gone. Once per cell: while the analysis stays that far behind, its
        next firing is refused too, and a cell refused as stale again counts
        as fired (so a rule does not fire on it on every field; the cell is
        remembered until its track has been gone for `FORGET_AFTER_T` time
        points of its position, when no firing on it can come). Returns False
        when not given back: a decision this rule does not remember (not its
        own, older than its last `_BOOKED_MAX` firings, made before a worker
        restart, or given back already), or its cell's second (for a hit
        without a cell, a count's: its crossing's second; the trigger's re-arming
        ends a crossing).
        """
        booked = self._booked.pop(decision_id, None)
        if booked is None:
            return False
        position, hit, entry = booked
        cell = cell_key(position, hit.track)
        if cell in self.given_back_cells:
            return False
        self.given_back_cells.add(cell)
        self._given_back_n += 1
        if hit.track is not None:
            # seen (as far as forgetting goes) on its position's next field: a division's
            # parent or a lost track is in no field of its own any more
            self._given_back_seen.note(position, hit.track)
        if entry is not None and entry in self.recent:
            self.recent.remove(entry)
        self.trigger.release(position, hit)
        return True

    def state(self) -> dict[str, Any]:
        """Everything needed to resume the rule after a worker restart."""
        return {
            "fires": self.fires, "given_back": self._given_back_n,
            "given_back_cells": sorted(self.given_back_cells), "recent": self.recent,
            "trigger": self.trigger.state(),
        }  # fmt: skip

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from `state`."""
        self.fires = int(state.get("fires", 0))
        self.given_back_cells = {str(c) for c in state.get("given_back_cells", [])}
        # (saved without the count: each cell given back was kept)
        self._given_back_n = int(state.get("given_back", len(self.given_back_cells)))
        self._given_back_seen.restore(self.given_back_cells)
        # (saved before session 50 without the last: taken as frame coordinates, the
        # cooldown as it was then, within the position)
        self.recent = [(str(r[0]), float(r[1]), r[2], r[3], bool(r[4]) if len(r) > 4 else False)
                       for r in state.get("recent", [])]  # fmt: skip
        self.trigger.restore(state.get("trigger", {}))


def _python_policy(item: dict[str, Any], where: str) -> Policy:
    """Return a policy written in Python: ``{name, python: "module:factory", args: {...}}``."""
    if unknown := sorted(set(item) - {"name", "python", "args"}):
        raise LivescopeError(f"{where}: unknown field(s) {unknown} for a Python policy")
    name, target, args = item.get("name"), item["python"], item.get("args") or {}
    if not isinstance(name, str) or not name or not isinstance(args, dict):
        raise LivescopeError(f"{where}: a Python policy needs a name and args as a mapping")
    module_name, _, attr = str(target).partition(":")
    if not module_name or not attr:
        raise LivescopeError(
            f"{where} ({name}): python must be 'package.module:factory' (got {target!r})"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise LivescopeError(
            f"{where} ({name}): cannot import {target!r}: {exc} (the module must be installed "
            "or on PYTHONPATH; the plan's folder is not searched)"
        ) from None
    try:
        policy = factory(name=name, **args)
    except Exception as exc:  # noqa: BLE001 (the user's code: report what it raised)
        raise LivescopeError(f"{where} ({name}): {target}(...) raised {exc!r}") from None
    if not isinstance(policy, Policy) or policy.name != name:
        raise LivescopeError(
            f"{where} ({name}): {target} must return a policy (a decide() method and "
            f"name == {name!r})"
        )
    return policy


def rules_from_spec(
    spec: object,
    *,
    channel_group: str = "Channel",
    source: str = "plan",
    channels: Sequence[str] | None = None,
) -> list[Policy]:
    """Build the policies of a plan's ``policies:`` list.

    Each entry is a declared rule (``name``, ``when``, ``do``, cooldowns) or a
    Python policy (``name``, ``python: "package.module:factory"``, ``args``):
    ``factory(name=..., **args)`` must return a `Policy`.

    Raises
    ------
    LivescopeError
        naming the rule (by index and name) and what is wrong with it.

    """
    if spec is None:
        return []
    if not isinstance(spec, list):
        raise LivescopeError(
            f"{source}: policies must be a list of rules, got {type(spec).__name__}"
        )
    rules: list[Policy] = []
    known = {"name", "when", "do", "cooldown_s", "cooldown_radius_um", "max_fires"}
    for i, item in enumerate(spec):
        where = f"{source}: policies.{i}"
        if not isinstance(item, dict):
            raise LivescopeError(f"{where}: a rule is a mapping with name, when, do")
        name = item.get("name")
        if isinstance(name, int) and not isinstance(name, bool):
            name = str(name)  # (`name: 7`, YAML's int 7: the rule "7", as the run logs it)
        if name is not None and not isinstance(name, str):
            # (a list or mapping was taken as its text: a rule named "['a']")
            raise LivescopeError(
                f"{where}: name must be text, got {name!r} (a {type(name).__name__}); write "
                "it in quotes, e.g. name: 'mitosis-closeup'"
            )
        if name is None or not name.strip():  # (YAML's `name:`)
            raise LivescopeError(f"{where}: name is required")
        if "python" in item:
            rules.append(_python_policy({**item, "name": name}, where))
            continue
        if unknown := sorted(set(item) - known):
            raise LivescopeError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
        for req in ("when", "do"):
            if req not in item:
                raise LivescopeError(f"{where}: missing {req!r}")
        if not isinstance(item["when"], dict) or not isinstance(item["do"], dict):
            raise LivescopeError(f"{where}: 'when' and 'do' must be mappings")
        try:
            if "max_fires" in item and item["max_fires"] is None:  # (YAML's empty `max_fires:`)
                raise ValueError(
                    f"rule {name!r}.max_fires must be a number, got nothing (leave it "
                    "out for no limit)"
                )
            rules.append(
                Rule(
                    name,
                    item["when"],
                    item["do"],
                    cooldown_s=item.get("cooldown_s", 0.0),
                    cooldown_radius_um=item.get("cooldown_radius_um", 0.0),
                    max_fires=item.get("max_fires"),
                    channel_group=channel_group,
                    channels=channels,
                )
            )
        except (ValueError, TypeError) as exc:
            raise LivescopeError(f"{where} ({name}): {exc}") from None
    names = [r.name for r in rules]
    if dups := sorted({n for n in names if names.count(n) > 1}):
        raise LivescopeError(f"{source}: rule names must be unique; repeated: {dups}")
    # an acquire rule's name names its close-ups' folders (results/ctc/<position>~<rule>-<n>):
    # where case is ignored (Windows, macOS) two named but for case shared them, and one's
    # masks overwrote the other's
    folded: dict[str, str] = {}  # `folder_key` -> the rule's name
    for i, r in enumerate(rules):
        if not isinstance(r, Rule) or r.acquire is None:
            continue
        if (other := folded.setdefault(folder_key(r.name), r.name)) != r.name:
            raise LivescopeError(
                f"{source}: policies.{i}: rule names {other!r} and {r.name!r} name one "
                "folder here (this system's file names ignore case), which their "
                "close-ups' results (results/ctc/<position>~<rule>-<n>) would share: "
                "rename one of them"
            )
    return rules
