"""Two more readers of a run's files pass over a damaged line, or say which file is damaged.

One damaged line of ``decisions.jsonl`` (a half line glued to the next, bytes of a full
disk, an editor's) raised as a run ended, and its summary was lost; a ``state.json``
without its ``done`` or ``trackers``, or with a value of another kind, failed each
restart with a bare KeyError or TypeError naming no file, which the supervisor took for
a crash and retried until it gave up.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from livescope.pipeline import PipelineWorker
from livescope.pipeline._demo import _decision_executed_ms
from livescope.record import FRAMES_FILE, DecisionLog, read_frames
from livescope.schema import DecisionAck, LivescopeError
from tests.conftest import run_cli
from tests.pipeline.conftest import said_damaged
from tests.pipeline.test_damaged_logs_more import (
    NO_ENGINES,
    NOT_AN_OBJECT,
    _insert,
    _stopped_worker,
)
from tests.pipeline.test_worker_results import EveryField

# ------------------------------------------------------------------ decisions.jsonl


def _ack(decision_id: str, t_acked_ns: int, *, accepted: bool = True) -> dict[str, Any]:
    ack = DecisionAck(decision_id=decision_id, run_id="r", type="add_events",
                      accepted=accepted, t_acked_ns=t_acked_ns)  # fmt: skip
    return {"ack": ack.model_dump(mode="json")}


def _run(run: Path) -> None:
    """Decisions d1 and d2 accepted (d3 refused); their added frames 2 and 5 ms later."""
    log = DecisionLog(run)
    try:
        log.append(_ack("d1", 10**9))
        log.append(_ack("d2", 2 * 10**9))
        log.append(_ack("d3", 3 * 10**9, accepted=False))
    finally:
        log.close()
    frames = [
        {"position": "p0", "t": 0, "t_camera_ns": 5 * 10**8},
        {"position": "p0~d1", "t": 0, "t_camera_ns": 10**9 + 2 * 10**6, "added_by": "d1"},
        {"position": "p0~d1", "t": 1, "t_camera_ns": 10**9 + 9 * 10**6, "added_by": "d1"},
        {"position": "p0~d2", "t": 0, "t_camera_ns": 2 * 10**9 + 5 * 10**6, "added_by": "d2"},
    ]
    (run / FRAMES_FILE).write_text("".join(json.dumps(f) + "\n" for f in frames))


def _answer(**change: Any) -> bytes:
    """An accepted answer to decision d9 (no frame of it), with ``change`` to its ack."""
    rec = _ack("d9", 4 * 10**9)
    rec["ack"].update(change)
    return json.dumps(rec).encode()


@pytest.mark.parametrize(
    "damaged",
    [
        *NOT_AN_OBJECT,
        pytest.param(b'{"decision": {"decision_id": "d9"}}', id="no-ack"),
        pytest.param(b'{"ack": [true]}', id="ack-a-list"),
        pytest.param(_answer(accepted="yes"), id="accepted-a-string"),
        pytest.param(_answer(decision_id=None), id="no-decision-id"),
        pytest.param(_answer(decision_id=["d9"]), id="decision-id-a-list"),
        pytest.param(_answer(t_acked_ns="soon"), id="t-acked-a-string"),
        pytest.param(_answer(t_acked_ns=None), id="t-acked-null"),
    ],
)
def test_the_decisions_execution_latency_leaves_out_a_damaged_line(
    tmp_path: Path, damaged: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # (a LivescopeError, KeyError, TypeError or ValueError raised as the run ended, and
    # its summary was lost)
    clean, run = tmp_path / "clean", tmp_path / "run"
    _run(clean)
    _run(run)
    _insert(run / "decisions.jsonl", damaged, at=1)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        got = _decision_executed_ms(run, read_frames(run))
    assert got == [2.0, 5.0]
    assert got == _decision_executed_ms(clean, read_frames(clean))
    said = said_damaged(caplog, "decisions.jsonl")
    assert len(said) == 1, said
    assert "1 damaged line(s) left out of the decisions' execution latency" in said[0]


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param({"position": "p0~d2", "t": 9, "added_by": "d2"}, id="no-camera-time"),
        pytest.param(
            {"position": "p0~d2", "t": 9, "added_by": "d2", "t_camera_ns": "later"},
            id="camera-time-a-string",
        ),
        pytest.param(
            {"position": "p0~d2", "t": 9, "added_by": ["d2"], "t_camera_ns": 1},
            id="added-by-a-list",
        ),
    ],
)
def test_the_decisions_execution_latency_leaves_out_a_damaged_added_frame(
    tmp_path: Path, frame: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # (a KeyError, ValueError or TypeError raised as the run ended: its summary was lost)
    _run(tmp_path)
    _insert(tmp_path / FRAMES_FILE, json.dumps(frame).encode(), at=1)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        got = _decision_executed_ms(tmp_path, read_frames(tmp_path))
    assert got == [2.0, 5.0]
    said = said_damaged(caplog, FRAMES_FILE)
    assert len(said) == 1, said
    assert "1 damaged added frame(s) left out" in said[0]


def test_a_refused_decision_and_a_planned_frame_are_no_damage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _run(tmp_path)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        assert _decision_executed_ms(tmp_path, read_frames(tmp_path)) == [2.0, 5.0]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# ------------------------------------------------------------------ state.json


def _state_edit(change: str) -> Any:
    def edit(text: str) -> str:
        state = json.loads(text)
        if change == "no-done":
            del state["done"]
        elif change == "no-trackers":
            del state["trackers"]
        elif change == "done-a-list":
            state["done"] = [["p0", 1]]
        elif change == "time-point-a-word":
            state["done"] = {"p0": "one"}
        elif change == "time-point-null":
            state["done"] = {"p0": None}
        elif change == "count-a-word":
            state["counts"] = {"fields_analysed": "many"}
        elif change == "trackers-a-list":
            state["trackers"] = [state["trackers"]["p0"]]
        return json.dumps(state)

    return edit


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda text: "[]", id="json-array"),
        *(
            pytest.param(_state_edit(change), id=change)
            for change in (
                "no-done",
                "no-trackers",
                "done-a-list",
                "time-point-a-word",
                "time-point-null",
                "count-a-word",
                "trackers-a-list",
            )
        ),
    ],
)
def test_a_damaged_worker_state_is_an_error_naming_it(tmp_path: Path, damage: Any) -> None:
    # a bare KeyError, TypeError or AttributeError named no file: the supervisor took it for
    # a crash and restarted the worker into the same error until it gave up
    _stopped_worker(tmp_path)
    path = tmp_path / "results" / "state.json"
    path.write_text(damage(path.read_text()))
    with pytest.raises(LivescopeError, match="cannot read worker state") as exc:
        PipelineWorker(tmp_path, NO_ENGINES, resume=True, policies=[EveryField()])
    assert str(path) in str(exc.value)
    assert "delete it to analyse the run's fields afresh" in str(exc.value)


def test_a_tracker_state_refused_names_the_file_and_position(tmp_path: Path) -> None:
    # (`OnlineTracker.from_state`'s refusal named neither the file nor the position)
    _stopped_worker(tmp_path)
    path = tmp_path / "results" / "state.json"
    state = json.loads(path.read_text())
    state["trackers"]["p0"]["next_id"] = 0
    path.write_text(json.dumps(state))
    with pytest.raises(LivescopeError, match="next_id 0") as exc:
        PipelineWorker(tmp_path, NO_ENGINES, resume=True, policies=[EveryField()])
    assert f"cannot read worker state {path}: position p0's tracker state" in str(exc.value)
    assert "delete it to analyse the run's fields afresh" in str(exc.value)


def test_the_worker_refuses_to_resume_from_a_damaged_worker_state(tmp_path: Path) -> None:
    # (exit status 2 before it is ready: the supervisor's "refused to run", not retried;
    # it exited 1 with a traceback)
    _stopped_worker(tmp_path)
    path = tmp_path / "results" / "state.json"
    path.write_text(_state_edit("no-done")(path.read_text()))
    res = run_cli("worker", str(tmp_path), "--analyse", "--resume", "--json")
    assert res.returncode == 2, res.stderr
    assert json.loads(res.stdout)["error"].startswith(f"cannot read worker state {path}: no 'done'")


def test_a_worker_state_deleted_as_the_error_says_analyses_the_fields_afresh(
    tmp_path: Path,
) -> None:
    # (the refusal's advice: without state.json the worker resumes, its fields analysed
    # again and those decided not decided again)
    _stopped_worker(tmp_path)
    (tmp_path / "results" / "state.json").unlink()
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True, policies=[EveryField()])
    try:
        assert (w.resumed, w.done, w.decided) == (True, {}, {"p0": 1})
    finally:
        w._finish(failed=True)
