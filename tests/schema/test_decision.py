"""Decisions on the wire: every kind parses back to itself; non-finite numbers are refused."""

from __future__ import annotations

import json
import re

import pytest
import useq
from pydantic import TypeAdapter

from livescope.schema import (
    AddEvents,
    ChangeInterval,
    Decision,
    Move,
    StopPosition,
    StopRun,
    parse_decision,
    place_name,
)

_EVENTS = tuple(
    useq.MDAEvent(index={"t": t, "c": c}, channel={"config": name}, pos_name="p0~closeup",
                  x_pos=-546.107, y_pos=-552.08, z_pos=0.0, min_start_time=30.0 * t,
                  metadata={"cell": 7})
    for t in range(4) for c, name in enumerate(("Phase", "DAPI"))
)  # fmt: skip


@pytest.mark.parametrize(
    "decision",
    [
        pytest.param(
            AddEvents(
                run_id="r",
                seq=7,
                rule="mitosis",
                inputs={"p": 0.99},
                engines={"nuclei-unet": "ab" * 32},
                events=_EVENTS,
                delay_s=1.5,
            ),
            id="add_events",
        ),
        pytest.param(Move(run_id="r", position="p0", x_um=1.5, y_um=-2.0, z_um=None), id="move"),
        pytest.param(ChangeInterval(run_id="r", interval_s=45.0), id="change_interval"),
        pytest.param(StopPosition(run_id="r", position="p1"), id="stop_position"),
        pytest.param(StopRun(run_id="r", rule="enough"), id="stop_run"),
    ],
)
def test_a_decision_parses_back_to_itself(decision: Decision) -> None:
    raw = decision.model_dump_json().encode()
    back = parse_decision(raw)
    assert back == decision
    assert type(back) is type(decision)
    # parse_decision's one-pass shortcut gives what parsing, then validating, gives
    assert back == TypeAdapter(Decision).validate_python(json.loads(raw))


def _add(**event: object) -> bytes:
    ev = {"index": {"t": 3, "p": 0}, "channel": "DAPI", **event}
    # Python's json writes NaN and Infinity as JavaScript does: what a careless sender sends
    return json.dumps({"type": "add_events", "run_id": "r", "events": [ev]}).encode()


def _surrogate_inputs() -> bytes:
    event = {"index": {"t": 3}, "channel": "DAPI"}
    data = {"type": "add_events", "run_id": "r", "events": [event], "inputs": {"c": ["\udc00"]}}
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(
            _add(min_start_time=float("nan")),
            "event 0 {'t': 3, 'p': 0}: min_start_time must be finite, got nan",
            id="event-due-at-nan",
        ),
        pytest.param(
            _add(min_start_time=float("inf")),
            "min_start_time must be finite, got inf",
            id="event-due-never",
        ),
        pytest.param(_add(x_pos=float("-inf")), "x_pos must be finite", id="event-x"),
        pytest.param(_add(z_pos=float("nan")), "z_pos must be finite", id="event-z"),
        pytest.param(
            b'{"type": "add_events", "run_id": "r", "delay_s": Infinity, "events": '
            b'[{"index": {"t": 3}}]}',
            "delay_s: Input should be a finite number",
            id="delay",
        ),
        pytest.param(
            b'{"type": "change_interval", "run_id": "r", "interval_s": Infinity}',
            "interval_s: Input should be a finite number",
            id="interval-infinite",
        ),
        pytest.param(
            b'{"type": "move", "run_id": "r", "position": "p0", "x_um": 0, "y_um": NaN}',
            "y_um: Input should be a finite number",
            id="move-nan",
        ),
        pytest.param(
            b'{"type": "teleport", "run_id": "r"}',
            "unknown decision type 'teleport'",
            id="unknown-type",
        ),
        pytest.param(b"[1, 2]", "decision must be a JSON object, got list", id="not-an-object"),
        # a lone surrogate (JSON escapes one; it is not text): accepted, it then failed in
        # the decision log and the recording's metadata
        pytest.param(_add(pos_name="A\ud800"), "lone UTF-16 surrogate", id="name-surrogate"),
        pytest.param(_surrogate_inputs(), "lone UTF-16 surrogate", id="inputs-surrogate"),
        pytest.param(b"\xff{", "decision is not JSON", id="not-json"),
    ],
)
def test_bad_decisions_are_refused_naming_the_problem(raw: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_decision(raw)


def test_a_surrogate_pair_is_a_character_and_parses() -> None:
    d = parse_decision(_add(pos_name="A\U0001f600"))  # (json.dumps escapes it as a pair)
    assert isinstance(d, AddEvents)
    assert d.events[0].pos_name == "A\U0001f600"


@pytest.mark.parametrize(
    ("x", "y", "name"),
    [
        pytest.param(150.2, -20.0, "xy+150-20", id="rounded"),
        pytest.param(0.0, 2000.0, "xy+0+2000", id="signs"),
        pytest.param(-0.4, 0.6, "xy+0+1", id="near-zero"),
    ],
)
def test_an_added_place_is_named_by_its_coordinates(x: float, y: float, name: str) -> None:
    assert place_name(x, y) == name
