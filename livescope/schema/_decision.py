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
from pydantic_core import PydanticSerializationError, from_json

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


_MAX_EVENTS = 10000
"""The most events one `AddEvents` holds."""


class AddEvents(_DecisionBase):
    """Acquire more frames: useq events, each with its true index.

    Events without a stage position take their position's (by ``p`` index or
    ``pos_name``). Their ``min_start_time`` counts from the moment the agent
    applies the decision plus ``delay_s`` (plan seconds). `parse_decision`
    refuses an event naming a field useq's events do not have.
    """

    type: Literal["add_events"] = "add_events"
    # (at least one: checked once the events are valid, lest an invalid event read as
    # "at least 1 item, not 0" beside its own error)
    events: tuple[useq.MDAEvent, ...] = Field(max_length=_MAX_EVENTS)
    delay_s: float = Field(default=0.0, ge=0)

    @field_validator("events")
    @classmethod
    def _finite_numbers(cls, events: tuple[useq.MDAEvent, ...]) -> tuple[useq.MDAEvent, ...]:
        if not events:
            raise ValueError("an add_events decision needs at least one event")
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
_EVENT_FIELDS = tuple(useq.MDAEvent.model_fields)
_CHANNEL_FIELDS = tuple(useq.MDAEvent(channel="c").model_dump()["channel"])
"""An added event's channel's fields (useq's event channel: ``config``, ``group``)."""
_EVENT_FIELD_SET, _CHANNEL_FIELD_SET = frozenset(_EVENT_FIELDS), frozenset(_CHANNEL_FIELDS)


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


_FAST_MAX_BYTES = 3 * _MAX_EVENTS
"""The longest message parsed in one pass: shorter, it holds at most `_MAX_EVENTS` ``{}``."""


def parse_decision(raw: bytes) -> Decision:
    """Parse and validate one decision message (JSON).

    Raises
    ------
    ValueError
        with a reason naming the problem (unknown type, bad field, an event's
        field useq does not have, more than 10000 events, not JSON, text that is
        not Unicode: a lone surrogate, which JSON can escape).

    """
    # (a message too short to hold more events than a decision adds: pydantic validates
    # every event before counting them, and a 4 MB message of 280,000 held the decision
    # thread for seconds; a longer one is counted first, below)
    if len(raw) <= _FAST_MAX_BYTES:
        try:  # the usual case in one pass of pydantic's own JSON parser (half the time)
            decision = _ADAPTER.validate_json(raw)  # (which refuses a lone surrogate)
        except ValidationError:
            pass  # parsed again below, for a reason that names what is wrong
        else:
            if isinstance(decision, AddEvents):
                # (read again for its events' keys: a validator run before useq's
                # would have pydantic validate every event from Python, not JSON, and
                # cost more than this second read)
                _check_event_fields(from_json(raw)["events"])
            return decision
    data = json_object(raw, "decision")
    kinds = ("add_events", "move", "change_interval", "stop_position", "stop_run")
    if data.get("type") not in kinds:
        raise ValueError(
            f"unknown decision type {data.get('type')!r:.80}; known: {', '.join(kinds)}"
        )
    if data["type"] == "add_events" and isinstance(events := data.get("events"), list):
        if len(events) > _MAX_EVENTS:
            raise ValueError(
                f"invalid decision: add_events.events: {len(events)} events; a decision "
                f"adds at most {_MAX_EVENTS} (split them over several decisions)"
            )
        _check_event_fields(events)
    try:
        decision = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ValueError(
            "invalid decision: " + "; ".join(format_validation_error(exc, data))
        ) from None
    _check_text(decision)
    return decision


def _check_event_fields(events: list[Any]) -> None:
    """Refuse an event (as sent: a mapping) naming a field useq does not have.

    useq drops unknown fields: an event giving ``x_um`` or ``exposure_ms`` (the
    names livescope's own files use) was imaged at its position's place, or at
    the channel's default exposure, as if they had not been given.
    """
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            continue  # (what pydantic refuses with its own reason)
        # (a subset test first: every decision's events pass here, on the decision thread)
        if not ev.keys() <= _EVENT_FIELD_SET:
            unknown = sorted(str(k) for k in ev if k not in _EVENT_FIELD_SET)
            raise ValueError(
                f"invalid decision: add_events.events.{i}: unknown field(s) "
                f"{', '.join(unknown)}; an event's fields are {', '.join(_EVENT_FIELDS)}"
            )
        channel = ev.get("channel")
        if isinstance(channel, dict) and not channel.keys() <= _CHANNEL_FIELD_SET:
            unknown = sorted(str(k) for k in channel if k not in _CHANNEL_FIELD_SET)
            raise ValueError(
                f"invalid decision: add_events.events.{i}: unknown channel field(s) "
                f"{', '.join(unknown)}; an event's channel has {', '.join(_CHANNEL_FIELDS)} "
                "(exposure is the event's own field)"
            )


def _check_text(decision: Decision) -> None:
    """Refuse a decision that cannot be written as JSON: a lone surrogate, deep nesting.

    Python's JSON parser takes a lone surrogate and nesting deeper than pydantic
    writes (pydantic's parser refuses both), and pydantic lets them into an
    event's name, metadata or the inputs: the decision was accepted, then could
    not be written to the decision log or the recording's metadata.
    """
    try:
        _ADAPTER.dump_json(decision)
    except PydanticSerializationError as exc:
        if "surrogate" not in str(exc):
            # (inputs or an event's metadata nested some 250 deep: JSON reads them, pydantic
            # cannot write them; that was reported as a surrogate)
            raise ValueError(
                f"invalid decision: it cannot be written to the decision log ({exc}: "
                "are its inputs or an event's metadata nested too deeply?)"
            ) from None
        raise ValueError(
            "invalid decision: its text holds a lone UTF-16 surrogate (\\ud800-\\udfff "
            "escaped alone), which is not Unicode text"
        ) from None
