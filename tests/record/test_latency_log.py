"""The rule for a field's record in ``results/latency.jsonl`` (`field_key`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livescope.record import field_key
from livescope.scope import ReplayGate
from livescope.view._report_data import load_run


@pytest.mark.parametrize(
    ("rec", "key"),
    [
        pytest.param({"position": "p0", "t": 3, "ms": {"segment": 1.5}}, ("p0", 3), id="good"),
        pytest.param({"position": "", "t": 0}, ("", 0), id="empty position name"),
        pytest.param({"position": "p0", "t": True}, None, id="t a bool"),
        pytest.param({"position": "p0", "t": 1.0}, None, id="t a float"),
        pytest.param({"position": "p0", "t": None}, None, id="t null"),
        pytest.param({"position": "p0", "t": [1]}, None, id="t a list"),
        pytest.param({"position": "p0"}, None, id="t missing"),
        pytest.param({"t": 1}, None, id="position missing"),
        pytest.param({"position": 0, "t": 1}, None, id="position a number"),
        pytest.param({"position": ["p0"], "t": 1}, None, id="position a list"),
        pytest.param(["p0", 1], None, id="a list"),
        pytest.param("p0", None, id="a string"),
        pytest.param(None, None, id="null"),
    ],
)
def test_a_record_names_a_field_only_with_a_string_position_and_an_int_t(
    rec: object, key: tuple[str, int] | None
) -> None:
    assert field_key(rec) == key


def test_the_replay_gate_and_the_report_keep_the_same_fields(tmp_path: Path) -> None:
    # (each kept a copy of the rule; a line one counted and the other did not made
    # the report's analysed fields differ from those the replay waited for)
    good = [("p0", 0), ("p1", 0), ("p0", 1)]
    damaged = [
        {"position": "p0", "t": True},
        {"position": "p0", "t": 2.0},
        {"position": 7, "t": 2},
        {"t": 2},
        ["p0", 2],
    ]
    lines = [{"position": p, "t": t, "ms": {}} for p, t in good] + damaged
    results = tmp_path / "results"
    results.mkdir()
    (results / "latency.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (tmp_path / "frames.jsonl").write_text("")

    gate = ReplayGate(tmp_path, timeout_s=5.0)
    assert gate.wait_for(good)  # (returns once read: every good field is in the log)
    run = load_run(tmp_path)
    assert run.latency is not None
    reported = {(r["position"], r["t"]) for r in run.latency}
    assert reported == gate.done == set(good)
    # the report says what it left out: the lines that are JSON objects but name no field
    assert any("latency.jsonl: 4 line(s)" in p for p in run.problems)


def test_the_replay_gate_passes_over_a_line_nested_too_deep(tmp_path: Path) -> None:
    # (a damaged line of thousands of "[" raised RecursionError in the gate's reader)
    results = tmp_path / "results"
    results.mkdir()
    good = json.dumps({"position": "p0", "t": 0, "ms": {}})
    (results / "latency.jsonl").write_text("[" * 100_000 + "\n" + good + "\n")
    gate = ReplayGate(tmp_path, timeout_s=5.0)
    assert gate.wait_for([("p0", 0)])
    assert gate.done == {("p0", 0)}
