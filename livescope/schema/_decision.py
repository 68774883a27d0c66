"""Decisions (worker → agent) and their acknowledgements (agent → worker).

A decision is a union tagged by ``type``; each names the run and the frame
(sequence number) it answers, the rule that made it and, from the inference
issues on, the engines (model sha256) whose results it used. The agent answers
every message with a `DecisionAck`: accepted, or rejected with the reason.

How decisions travel is versioned (`DECISION_PROTOCOL`): the agent states its
version in the run's ``bus.json`` and a worker refuses to attach to an agent of
another version, instead of waiting for answers that never come.
"""

from __future__ import annotations

import math
import uuid
from typing import Annotated, Any, Literal

import useq
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticSerializationError

from ._base import format_validation_error, json_object

__all__ = [
    "DECISION_PROTOCOL",
    "AddEvents",
    "ChangeInterval",
    "Decision",
    "DecisionAck",
    "Move",
    "StopPosition",
    "StopRun",
    "parent_position",
    "parse_decision",
    "place_name",
]

DECISION_PROTOCOL = 2
"""Version of the decision channel. 2 (2026-11-29): a message holds one or more
decisions, one JSON part each, answered in one reply with one `DecisionAck` per
part, in order. 1 (earlier, never written down): one decision per message."""


class _DecisionBase(BaseModel):
    # NaN and infinity are refused in every number the agent acts on (an infinite
    # interval would hold the run forever; NaN passes no comparison a check could
    # make); ``inputs`` (what a rule saw) is a record and may hold NaN
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    decision_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=64)
    run_id: str = Field(min_length=1, max_length=128, description="Run this decision is for.")
    seq: int | None = Field(default=None, ge=0, description="Frame sequence number it answers.")
    rule: str = Field(default="", max_length=256, description="Policy rule that made it.")
    inputs: dict[str, Any] = Field(default_factory=dict, description="What the rule saw.")
    engines: dict[str, str] = Field(
        default_factory=dict, description="Engine name → model sha256 used."
    )


class AddEvents(_DecisionBase):
    """Acquire more frames: useq events, each with its true index.

    Events without a stage position take their position's (by ``p`` index or
    ``pos_name``). Their ``min_start_time`` counts from the moment the agent
    applies the decision plus ``delay_s`` (plan seconds).
    """

    type: Literal["add_events"] = "add_events"
    events: tuple[useq.MDAEvent, ...] = Field(min_length=1, max_length=10000)
    delay_s: float = Field(default=0.0, ge=0)

    @field_validator("events")
    @classmethod
    def _finite_numbers(cls, events: tuple[useq.MDAEvent, ...]) -> tuple[useq.MDAEvent, ...]:
        # useq takes NaN and infinity: an event due at NaN seconds, or never, must not be queued
        for i, ev in enumerate(events):
            for name in _EVENT_NUMBERS:
                value = getattr(ev, name)
                if value is not None and not math.isfinite(value):
                    raise ValueError(
                        f"event {i} {dict(ev.index)}: {name} must be finite, got {value}"
                    )
        return events


_EVENT_NUMBERS = ("min_start_time", "exposure", "x_pos", "y_pos", "z_pos")
"""The numbers of a useq event the agent schedules and checks by (seconds, ms, µm)."""


def place_name(x_um: float, y_um: float) -> str:
    """Name the position of an added event that gives only its stage x/y, µm: ``xy+120-340``.

    Such an event (no ``pos_name``, no plan index ``p``) images a place of its
    own: the agent records its frames under this name (whole µm), so events at
    one place share a name. (The guardrails book its light by where it lands,
    not by this name: see `livescope.policy.Guardrails`.)
    """
    return f"xy{round(x_um):+d}{round(y_um):+d}"


def parent_position(name: str) -> str:
    """Return the position a sub-sequence position belongs to (``p0~rule-3`` → ``p0``).

    A rule's added events image a patch of their parent's sample: they book
    their light to it, and stopping the parent stops them.
    """
    return name.split("~", 1)[0]


class Move(_DecisionBase):
    """Move (recentre) a position: its later events image at the new coordinates, µm."""

    type: Literal["move"] = "move"
    position: str = Field(min_length=1)
    x_um: float
    y_um: float
    z_um: float | None = None


class ChangeInterval(_DecisionBase):
    """Change the time-lapse interval of the time points still to come, seconds."""

    type: Literal["change_interval"] = "change_interval"
    interval_s: PositiveFloat


class StopPosition(_DecisionBase):
    """Acquire nothing more at one position (a plan position or a place added events image).

    Stopping a position stops its sub-sequences (``name~rule-3``) too; events
    added later that name it, give its plan index, or belong to one of its
    sub-sequences are refused, and so are events imaged at x/y of their own (a
    place of its own, or another position's close-up) centred in its field or
    in a field of its sub-sequences.
    """

    type: Literal["stop_position"] = "stop_position"
    position: str = Field(min_length=1)


class StopRun(_DecisionBase):
    """End the run after the event being acquired."""

    type: Literal["stop_run"] = "stop_run"


Decision = Annotated[
    AddEvents | Move | ChangeInterval | StopPosition | StopRun, Field(discriminator="type")
]
_ADAPTER: TypeAdapter[Decision] = TypeAdapter(Decision)


class DecisionAck(BaseModel):
    """The agent's answer to one decision message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision_id: str
    run_id: str
    type: str
    accepted: bool
    reason: str = ""
    seq: int | None = None
    events_added: int = 0
    t_received_ns: int = 0
    t_acked_ns: int = 0


def parse_decision(raw: bytes) -> Decision:
    """Parse and validate one decision message (JSON).

    Raises
    ------
    ValueError
        with a reason naming the problem (unknown type, bad field, not JSON, text
        that is not Unicode: a lone surrogate, which JSON can escape).

    """
    try:  # the usual case in one pass of pydantic's own JSON parser (half the time)
        return _ADAPTER.validate_json(raw)  # (which refuses a lone surrogate)
    except ValidationError:
        pass  # parsed again below, for a reason that names what is wrong
    data = json_object(raw, "decision")
    kinds = ("add_events", "move", "change_interval", "stop_position", "stop_run")
    if data.get("type") not in kinds:
        raise ValueError(
            f"unknown decision type {data.get('type')!r:.80}; known: {', '.join(kinds)}"
        )
    try:
        decision = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ValueError(
            "invalid decision: " + "; ".join(format_validation_error(exc, data))
        ) from None
    _check_text(decision)
    return decision


def _check_text(decision: Decision) -> None:
    """Refuse a decision holding a lone surrogate (in an event's or inputs' text).

    Python's JSON parser takes one (pydantic's refuses it), and pydantic lets it
    into an event's name or the inputs: the decision was accepted, then could
    not be written to the decision log or the recording's metadata.
    """
    try:
        _ADAPTER.dump_json(decision)
    except PydanticSerializationError:
        raise ValueError(
            "invalid decision: its text holds a lone UTF-16 surrogate (\\ud800-\\udfff "
            "escaped alone), which is not Unicode text"
        ) from None
