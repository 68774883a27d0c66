"""What a rule does when it fires: its action turned into a decision for the microscope.

`Acquire` is the sub-sequence (a fast time-lapse, a z-stack, added channels) an
``acquire`` rule adds, centred on the cell or the position; `_decision` makes
the ``livescope.schema`` decision of each action in `ACTIONS` (none for
``record``), under the id `firing_id` gives the firing; `_hit_place_um` is
where a hit's cell is, µm, for a rule's cooldown radius. The rules themselves
(``when``, ``do``, cooldowns) are in ``_rules``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import useq

from livescope.schema import (
    AddEvents,
    ChangeInterval,
    Decision,
    Move,
    StopPosition,
    StopRun,
)

from ._observation import Observation
from ._spec import _check_numbers
from ._triggers import Hit

__all__ = ["ACTIONS", "SHARE_MARGIN", "Acquire", "firing_id"]

SHARE_MARGIN = 0.1
"""A cell shares a sub-sequence's field (``share_field``) when it lies this far (a
fraction of the field's height and width) or more inside the field's edges."""


@dataclass(frozen=True)
class Acquire:
    """A useq sub-sequence: a fast time-lapse, a z-stack, added channels, at a place."""

    channels: tuple[str, ...]
    group: str = "Channel"
    loops: int = 1
    interval_s: float = 0.0
    z_planes: int = 1
    z_step_um: float = 1.0
    centre: str = "cell"
    """``cell`` (on the cell that fired; the position when the hit has no cell) or ``position``."""
    exposure_ms: Mapping[str, float] | None = None
    delay_s: float = 0.0
    share_field: bool = False
    """Cells firing in one field that the field of an earlier firing's sub-sequence
    holds (`covers`) get none of their own (see ``_rules``; they still count as
    firings, e.g. towards a rule's ``max_fires``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.share_field, bool):
            raise ValueError(f"acquire.share_field must be true or false, got {self.share_field!r}")
        if not self.channels:
            raise ValueError("acquire.channels must name at least one channel")
        if not all(isinstance(c, str) and c for c in self.channels):
            raise ValueError(f"acquire.channels must be channel names, got {list(self.channels)}")
        if twice := sorted({c for c in self.channels if self.channels.count(c) > 1}):
            # (its second frame has the first's place in the plan: the agent refused every
            # firing, each still counted as fired)
            raise ValueError(
                f"acquire.channels lists {', '.join(map(repr, twice))} more than once "
                f"({list(self.channels)}): a channel is imaged once a plane and time point; "
                "name each once"
            )
        _check_numbers("acquire", {"loops": self.loops, "interval_s": self.interval_s,
                                   "z_planes": self.z_planes, "z_step_um": self.z_step_um,
                                   "delay_s": self.delay_s})  # fmt: skip
        # whole numbers from here on: YAML reads `loops: 4.0` as a float, which passes the
        # check above and was kept, and the rule's first firing (range(4.0)) raised and
        # disabled it for the run
        object.__setattr__(self, "loops", int(self.loops))
        object.__setattr__(self, "z_planes", int(self.z_planes))
        if self.interval_s < 0 or self.delay_s < 0 or self.z_step_um <= 0:
            raise ValueError(
                "acquire.interval_s and acquire.delay_s must be >= 0, acquire.z_step_um > 0"
            )
        if self.exposure_ms is not None:
            if not isinstance(self.exposure_ms, Mapping):
                raise ValueError(
                    f"acquire.exposure_ms maps channel -> ms (e.g. {{DAPI: 100}}), "
                    f"got {self.exposure_ms!r}"
                )
            if extra := sorted(set(self.exposure_ms) - set(self.channels)):
                raise ValueError(f"acquire.exposure_ms names channel(s) not acquired: {extra}")
            _check_numbers("acquire.exposure_ms", self.exposure_ms)
            if any(v <= 0 for v in self.exposure_ms.values()):
                raise ValueError("acquire.exposure_ms values must be > 0")
        if self.loops < 1 or self.z_planes < 1:
            raise ValueError("acquire.loops and acquire.z_planes must be >= 1")
        if self.loops > 1 and self.interval_s <= 0:
            raise ValueError("acquire.interval_s must be > 0 for a time-lapse (loops > 1)")
        if self.centre not in ("cell", "position"):
            raise ValueError(f"acquire.centre must be 'cell' or 'position', got {self.centre!r}")

    def covers(
        self, obs: Observation, at: tuple[float | None, float | None], y: float | None,
        x: float | None,
    ) -> bool:  # fmt: skip
        """Return whether a firing at ``at``'s sub-sequence images a cell at (``y``, ``x``).

        ``at`` and the cell are (row, column) in the same field; the cell must lie
        away from the sub-sequence's edges (`SHARE_MARGIN`). Its frames are the
        camera's, centred on that firing's cell (``centre: cell``) or on the
        position (``centre: position``, where every firing's sub-sequence is the
        same, or a firing without a cell).
        """
        if self.centre == "position":
            return True
        if y is None or x is None:  # (its own would be at the position)
            return at[0] is None or at[1] is None
        h, w = obs.shape
        if at[0] is not None and at[1] is not None:
            cy, cx = at[0], at[1]
        else:  # (the position's stage place is its frame's centre pixel)
            cy, cx = (h - 1) / 2, (w - 1) / 2
        reach = 0.5 - SHARE_MARGIN
        return abs(y - cy) <= reach * h and abs(x - cx) <= reach * w

    def events(self, obs: Observation, hit: Hit, name: str) -> tuple[useq.MDAEvent, ...]:
        """Return the events, named ``name``, centred as asked (stage µm)."""
        if self.centre == "cell" and hit.y is not None and hit.x is not None:
            x, y = obs.aim_xy(hit.y, hit.x)  # (the cell at the centre of its frames)
        else:
            if obs.stage_um is None:
                raise ValueError(f"field {obs.position} t={obs.t} has no stage position")
            x, y = obs.stage_um[0], obs.stage_um[1]
        z0 = obs.stage_um[2] if obs.stage_um is not None else None
        first = []  # the first time point's events, validated; later ones are copies
        for k in range(self.z_planes):
            dz = (k - (self.z_planes - 1) / 2) * self.z_step_um
            z = None if z0 is None else z0 + dz
            for ch in self.channels:
                exp = (self.exposure_ms or {}).get(ch)
                first.append(
                    useq.MDAEvent(
                        index={"t": 0, "z": k},
                        channel={"config": ch, "group": self.group},
                        exposure=exp,
                        x_pos=x,
                        y_pos=y,
                        z_pos=z,
                        pos_name=name,
                        min_start_time=0.0,
                    )
                )
        # a firing's events differ only in t and start time from one time point to the next:
        # copying (no validation) is half the cost of building each, and bursts fire ~10.
        # Each copy gets its own index and metadata (a shallow copy would share them)
        out = list(first)
        for t in range(1, self.loops):
            when = t * float(self.interval_s)
            out += [e.model_copy(update={"index": {**e.index, "t": t}, "min_start_time": when,
                                         "metadata": dict(e.metadata)})
                    for e in first]  # fmt: skip
        return tuple(out)


def firing_id(run_id: str, rule: str, position: str, t: int, k: int) -> str:
    """Return the decision id of rule ``rule``'s ``k``-th firing in field (``position``, ``t``).

    The same firing gets the same id, whatever the order fields are decided
    in: a worker restarted after it sent a decision, but before it saved the
    policies' state that books it, decides that field again and sends the
    decision again, which the agent answers as before and does not apply
    twice (`livescope.bus.DecisionServer`, also when the inputs measured anew
    differ).
    """
    key = "\0".join((run_id, rule, position, str(t), str(k)))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _decision(
    action: str, params: Mapping[str, Any], obs: Observation, hit: Hit, rule: str, n: int,
    acquire: Acquire | None, decision_id: str | None = None,
) -> Decision | None:  # fmt: skip
    common: dict[str, Any] = {
        "run_id": obs.run_id,
        "seq": obs.seq,
        "rule": rule,
        "inputs": {
            "position": obs.position,
            "t": obs.t,
            "track": hit.track,
            **dict(hit.inputs or {}),
        },
        "engines": dict(obs.engines),
    }
    if decision_id is not None:
        common["decision_id"] = decision_id
    if action == "record":
        return None
    if action == "acquire":
        if acquire is None:  # pragma: no cover (a rule that acquires has one)
            raise ValueError("acquire needs its sub-sequence")
        name = f"{obs.position}~{rule}-{n}"
        return AddEvents(events=acquire.events(obs, hit, name), delay_s=acquire.delay_s, **common)
    if action == "recentre":
        if hit.y is None or hit.x is None:
            raise ValueError("recentre needs a trigger that fires on a cell")
        x, y = obs.aim_xy(hit.y, hit.x)  # (the cell at the centre of the position's frames)
        # x/y only: the field's z is its last frame's, a plane of a z-stack, which the
        # move would take for the position's centre (each recentring moved the stack up)
        return Move(position=obs.position, x_um=x, y_um=y, z_um=None, **common)
    if action == "change_interval":
        return ChangeInterval(interval_s=float(params["interval_s"]), **common)
    if action == "stop_position":
        return StopPosition(position=obs.position, **common)
    if action == "stop_run":
        return StopRun(**common)
    raise ValueError(f"unknown action {action!r}")  # pragma: no cover (checked on load)


ACTIONS = ("acquire", "recentre", "change_interval", "stop_position", "stop_run", "record")


def _acquire_spec(params: Mapping[str, Any], group: str) -> dict[str, Any]:
    """`Acquire` keywords from a rule's ``acquire:`` (one channel may be given as a name)."""
    if params.get("group", group) != group:  # (its events would all be refused by the agent)
        raise ValueError(
            f"acquire.group {params['group']!r} is not the rig's channel group {group!r}: "
            "leave it out (a rule's channels are the rig's)"
        )
    spec = {**params, "group": group}
    chans = spec.get("channels", ())
    if isinstance(chans, Mapping):
        raise ValueError(
            f"acquire.channels lists channel names, got a mapping {dict(chans)}; give "
            "exposures as acquire.exposure_ms (e.g. channels: [DAPI], exposure_ms: {DAPI: 50})"
        )
    if chans is not None and not isinstance(chans, str | list | tuple):
        raise ValueError(
            f"acquire.channels must be a channel name or a list of them, got {chans!r}"
        )
    spec["channels"] = (chans,) if isinstance(chans, str) else tuple(chans or ())
    for i, ch in enumerate(spec["channels"]):
        # (YAML reads `channels: [405]` as a number: "must be channel names, got [405]"
        # did not say why; said as the plan's channels say it)
        if isinstance(ch, int | float) and not isinstance(ch, bool):
            raise ValueError(
                f"acquire.channels.{i}: {ch!r} is read as a number, not a channel preset's "
                f"name; write it in quotes: '{ch}'"
            )
    return spec


def _place_um(obs: Observation, y: float, x: float) -> tuple[float, float]:
    """Where a cell is, µm: on the stage, or in the frame where it carried no stage position.

    (In the frame it was in pixels until session 35: a cooldown radius in µm
    then counted pixels.)
    """
    if obs.stage_um:
        return obs.stage_xy(y, x)
    return x * obs.pixel_size_um, y * obs.pixel_size_um


def _hit_place_um(obs: Observation, hit: Hit) -> tuple[float, float] | None:
    """Where ``hit``'s cell is (`_place_um`), or None: no cell, or at no finite place.

    A cell whose centroid (or the field's stage position) is NaN is at an
    unknown place, as a hit without a cell is: within its position every
    firing in the cooldown holds it back (a NaN distance was never within the
    radius: it fired however close it was). Its own firing holds back no
    other: a close-up or recentring on it is refused (`Rule._unaimed`), and
    held back everywhere in the position the others would lose their own.
    """
    if hit.y is None or hit.x is None:
        return None
    x, y = _place_um(obs, hit.y, hit.x)
    return (x, y) if math.isfinite(x) and math.isfinite(y) else None
