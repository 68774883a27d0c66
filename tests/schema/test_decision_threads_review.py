"""Cases found by the review of decisions and thread priorities: each failed before its fix
(the tests named "still" guard what the fixes keep)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import useq

from livescope.schema import AddEvents, parse_decision


def _add_events(events: Any, **more: Any) -> bytes:
    return json.dumps({"type": "add_events", "run_id": "r", "events": events, **more}).encode()


_EVENT = {"index": {"t": 3, "p": 0}, "channel": "DAPI"}


def test_an_invalid_event_is_not_also_reported_as_no_events() -> None:
    """One event with a bad exposure read "...; events: Tuple should have at least 1 item
    after validation, not 0": the sender sent one event, and was told of none."""
    with pytest.raises(ValueError, match=r"events\.0\.exposure") as err:
        parse_decision(_add_events([{**_EVENT, "exposure": -1}]))
    assert "not 0" not in str(err.value)
    assert "at least 1" not in str(err.value)


@pytest.mark.parametrize(
    "events",
    [pytest.param([], id="json-list"), pytest.param((), id="python-tuple")],
)
def test_a_decision_adding_no_events_is_still_refused(events: Any) -> None:
    with pytest.raises(ValueError, match=r"add_events\.events: .*at least one event"):
        parse_decision(_add_events(list(events)))
    with pytest.raises(ValueError, match="at least one event"):
        AddEvents(run_id="r", events=events)


def test_too_many_events_are_refused_by_their_count_before_any_is_read() -> None:
    """A 4 MB message of ~280,000 tiny events was validated whole (seconds on the decision
    thread) before its count was refused; none of 10,001 events is read now."""
    too_many = r"add_events\.events: .*10001 events.*at most 10000"
    with pytest.raises(ValueError, match=too_many) as err:
        parse_decision(_add_events([5] * 10_001))  # (each event invalid: none was looked at)
    assert "valid dictionary" not in str(err.value)
    assert "events.0" not in str(err.value)
    assert len(parse_decision(_add_events([_EVENT] * 10_000)).events) == 10_000  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("event", "field"),
    [
        # livescope's own names (Move's x_um, profiles' exposure_ms): useq dropped them, and
        # the event was imaged at its position's place, at the channel's default exposure
        pytest.param({**_EVENT, "x_um": 120.0, "y_um": -40.0}, "field(s) x_um, y_um", id="x_um"),
        pytest.param({**_EVENT, "exposure_ms": 500}, "field(s) exposure_ms", id="exposure_ms"),
        pytest.param({**_EVENT, "xpos": 1.0}, "field(s) xpos", id="typo"),
        pytest.param(
            {**_EVENT, "channel": {"config": "DAPI", "exposure": 500}},
            "channel field(s) exposure",
            id="channel-exposure",
        ),
    ],
)
@pytest.mark.parametrize("before", [1, 1000], ids=["one-pass", "long-message"])
def test_an_event_field_useq_does_not_have_is_refused_by_name(
    event: dict[str, Any], field: str, before: int
) -> None:
    unknown = rf"add_events\.events\.{before}: .*unknown " + re.escape(field)
    with pytest.raises(ValueError, match=unknown):
        parse_decision(_add_events([_EVENT] * before + [event]))


def test_events_useq_writes_still_parse_back_to_themselves() -> None:
    seq = useq.MDASequence(
        channels=["DAPI", {"config": "Phase", "group": "Channel", "exposure": 20}],
        time_plan={"interval": 1, "loops": 2},
        stage_positions=[(1.0, 2.0, 3.0)],
        z_plan={"range": 2, "step": 1},
    )
    decision = AddEvents(run_id="r", events=tuple(seq), delay_s=2.0)
    assert parse_decision(decision.model_dump_json().encode()) == decision


def test_deeply_nested_inputs_are_not_reported_as_a_lone_surrogate() -> None:
    """Inputs nested 300 deep (Python's JSON reads them, pydantic cannot write them) were
    refused as holding "a lone UTF-16 surrogate": they hold none."""
    deep = {"type": "stop_run", "run_id": "r", "inputs": {"a": json.loads("[" * 300 + "]" * 300)}}
    with pytest.raises(ValueError, match=re.escape("cannot be written")) as err:
        parse_decision(json.dumps(deep).encode())
    assert "surrogate" not in str(err.value)
    assert "nested" in str(err.value)
