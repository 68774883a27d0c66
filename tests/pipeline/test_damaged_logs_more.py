"""More readers of the worker's files pass over a damaged line, or say which file is damaged.

A worker killed mid-write leaves a half line that the next one appends to; a full disk
leaves NUL bytes; an editor leaves anything. One such line in ``latency.jsonl`` raised as
a run ended (its summary lost), one in ``policy.jsonl`` lost the run's trigger scores, and
a damaged ``policy_state.json`` failed each restart with a bare error naming no file.
"""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from livescope.bus import StallMonitor
from livescope.pipeline import PipelineWorker, WorkerConfig, evaluate_triggers
from livescope.pipeline._demo import SLOW_FIELD_MS, _slow_fields
from livescope.pipeline._jobs import Field
from livescope.pipeline._results import ResultsStore
from livescope.schema import LivescopeError
from tests.conftest import run_cli
from tests.pipeline.conftest import said_damaged
from tests.pipeline.test_trigger_scoring import PROFILE, made_up_run
from tests.pipeline.test_worker_results import A, B, EveryField, _analysed, _paint

NO_ENGINES = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)

# lines that are no JSON object, whatever log they are in
NOT_AN_OBJECT = [
    pytest.param(b'{"position": "p0", "t": 1, "m{"position": "p0", "t": 1}', id="half-line-glued"),
    pytest.param(b'{"position": "p\xe9", "t": 1}', id="not-utf8"),
    pytest.param(b"\x00" * 24, id="nul-bytes-of-a-full-disk"),
    pytest.param(b"[1, 2]", id="json-array"),
]


def _insert(path: Path, line: bytes, at: int) -> None:
    """Put ``line`` before the ``at``-th line of ``path``."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(at, line + b"\n")
    path.write_bytes(b"".join(lines))


# ------------------------------------------------------------------ slow fields


def _latency_log(run: Path) -> None:
    """Three live fields, by the worker's store: t=0 and t=2 slow, a stall over t=2's."""
    res = run / "results"
    res.mkdir(parents=True)
    store = ResultsStore(res, collections.Counter(), tail_frames=3)
    try:
        for t, overhead in enumerate((SLOW_FIELD_MS * 2, SLOW_FIELD_MS / 2, SLOW_FIELD_MS * 4)):
            start = 10**9 * (t + 1)
            fld = Field("p0", t, {}, {"seq": t}, start - 10**6, live=True, t_start_ns=start,
                        t_done_ns=start + 50 * 10**6)  # fmt: skip
            ms = {"engines": 1.0, "camera_to_received": 3.0, "queue_wait": 1.0,
                  "end_to_end": 50.0, "overhead": overhead}  # fmt: skip
            store.log_latency(fld, ms)
    finally:
        store.close()


def _monitor() -> StallMonitor:
    """A monitor that saw one 20 ms stall, ending 10 ms into t=2's analysis."""
    mon = StallMonitor()
    mon.stalls = [(3 * 10**9 + 10 * 10**6, 20 * 10**6)]  # (woke at, late by), as `stop` keeps
    return mon


def _slow(**ms: Any) -> bytes:
    """A live field's line whose overhead passed `SLOW_FIELD_MS`, with ``ms`` changed."""
    rec: dict[str, Any] = {
        "position": "p0", "t": 9, "seq": 9, "live": True, "t_start_ns": 5 * 10**9,
        "ms": {"camera_to_received": 3.0, "queue_wait": 1.0, "end_to_end": 50.0,
               "overhead": SLOW_FIELD_MS * 3},
    }  # fmt: skip
    for k, v in ms.items():
        if k == "t_start_ns":
            rec[k] = v
        elif v is ...:
            del rec["ms"][k]
        else:
            rec["ms"][k] = v
    return json.dumps(rec).encode()


@pytest.mark.parametrize(
    "damaged",
    [
        *NOT_AN_OBJECT,
        pytest.param(b'{"position": "p0", "t": 9, "live": true, "ms": null}', id="ms-null"),
        pytest.param(_slow(overhead="slow"), id="overhead-a-string"),
        pytest.param(_slow(overhead=None), id="overhead-null"),
        pytest.param(_slow(end_to_end=...), id="no-end-to-end"),
        pytest.param(_slow(camera_to_received=...), id="no-camera-to-received"),
        pytest.param(_slow(t_start_ns="5e9"), id="t-start-a-string"),
        pytest.param(_slow(t_start_ns=True), id="t-start-a-bool"),
    ],
)
def test_the_slow_fields_leave_out_a_damaged_line(
    tmp_path: Path, damaged: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # (a ValueError, KeyError, TypeError or AttributeError raised as the run ended, and
    # its summary was lost; a line that was no JSON lost the machine stalls)
    clean, run = tmp_path / "clean", tmp_path / "run"
    _latency_log(clean)
    _latency_log(run)
    _insert(run / "results" / "latency.jsonl", damaged, at=1)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        got = _slow_fields(run, _monitor())
    assert got == {"slow_fields": 2, "slow_fields_in_a_stall": 1}
    assert got == _slow_fields(clean, _monitor())
    said = said_damaged(caplog, "latency.jsonl")
    assert len(said) == 1, said
    assert "1 damaged line(s) left out of the slow fields" in said[0]


# ------------------------------------------------------------------ trigger scores


def _firing(**change: Any) -> bytes:
    """A mitosis firing of rule "m" on the mitotic cell at t=3, with ``change``."""
    rec = {"rule": "m", "trigger": "mitosis", "position": "p0", "t": 3, "y": 15, "x": 15,
           "sample_time_s": 360.0, "verdict": "accepted", "given_back": False}  # fmt: skip
    rec.update(change)
    return json.dumps(rec).encode()


@pytest.mark.parametrize(
    "damaged",
    [
        *NOT_AN_OBJECT,
        pytest.param(_firing(position=None), id="no-position"),
        pytest.param(_firing(t=True), id="t-is-a-bool"),
        pytest.param(_firing(t=3.0), id="t-is-a-float"),
        pytest.param(_firing(t="3"), id="t-is-a-string"),
        pytest.param(_firing(sample_time_s="later"), id="sample-time-a-string"),
        pytest.param(_firing(y="15"), id="y-a-string"),
        pytest.param(_firing(x=float("nan")), id="x-nan"),
        pytest.param(_firing(y=True), id="y-a-bool"),
        pytest.param(_firing(x=10**400), id="x-no-float-holds"),
    ],
)
def test_the_trigger_scores_leave_out_a_damaged_line(
    tmp_path: Path, damaged: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # (a LivescopeError, KeyError or ValueError lost the run's trigger scores; a bool or
    # float time point was scored as a trigger at that field)
    run = made_up_run(tmp_path, [(2, 15, 15), (3, 45, 45)])
    want = evaluate_triggers(run, PROFILE)
    assert (want["triggers_fired"], want["precision"]) == (2, 0.5)
    _insert(run / "results" / "policy.jsonl", damaged, at=1)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        got = evaluate_triggers(run, PROFILE)
    assert got == want
    said = said_damaged(caplog, "policy.jsonl")
    assert len(said) == 1, said
    assert "1 damaged line(s) left out of the trigger scores" in said[0]


def test_a_firing_not_scored_is_not_counted_damaged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # (another rule's firings, and those on no cell, are no damage)
    run = made_up_run(tmp_path, [(2, 15, 15)])
    _insert(run / "results" / "policy.jsonl", _firing(rule="other", t=True), at=1)
    _insert(run / "results" / "policy.jsonl", _firing(y=None, x=None), at=1)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        got = evaluate_triggers(run, PROFILE, rules=["m"])
    assert got["triggers_fired"] == 2
    assert [tr["cell_id"] for tr in got["triggers"]] == [1, 0]
    assert said_damaged(caplog, "policy.jsonl") == []


# ------------------------------------------------------------------ policy_state.json


def _stopped_worker(run: Path) -> Path:
    """A worker that decided and stored t=0 and t=1 (one firing each); its policy_state.json."""
    w = PipelineWorker(run, NO_ENGINES, policies=[EveryField()])
    _analysed(w, {t: _paint(A, B) for t in range(2)})
    assert w._finish()["ok"] is True
    path = run / "results" / "policy_state.json"
    assert json.loads(path.read_text())["decided"] == {"p0": 1}
    return path


def _edited(change: str) -> Any:
    def edit(text: str) -> str:
        state = json.loads(text)
        if change == "no-decided":
            del state["decided"]
        elif change == "decided-a-list":
            state["decided"] = [["p0", 1]]
        elif change == "no-guardrails":
            del state["policy"]["guardrails"]
        elif change == "count-a-word":
            state["counts"] = {"decisions_sent": "many"}
        return json.dumps(state)

    return edit


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda text: text[: len(text) // 2], id="cut-in-half"),
        pytest.param(lambda text: "\x00" * len(text), id="nul-bytes-of-a-full-disk"),
        pytest.param(lambda text: "[]", id="json-array"),
        *(
            pytest.param(_edited(change), id=change)
            for change in ("no-decided", "decided-a-list", "no-guardrails", "count-a-word")
        ),
    ],
)
def test_a_damaged_policy_state_is_an_error_naming_it(tmp_path: Path, damage: Any) -> None:
    # a bare JSONDecodeError or KeyError, named no file: the supervisor took it for a crash
    # and restarted the worker into the same error until it gave up
    path = _stopped_worker(tmp_path)
    path.write_text(damage(path.read_text()))
    with pytest.raises(LivescopeError, match="cannot read the policies' state") as exc:
        PipelineWorker(tmp_path, NO_ENGINES, resume=True, policies=[EveryField()])
    assert str(path) in str(exc.value)
    assert "analyse the run again into an empty results folder" in str(exc.value)


def test_the_worker_refuses_to_resume_from_a_damaged_policy_state(tmp_path: Path) -> None:
    # (exit status 2 before it is ready: the supervisor's "refused to run", not retried;
    # it exited 1 with a traceback)
    path = _stopped_worker(tmp_path)
    path.write_text(path.read_text()[:10])
    res = run_cli("worker", str(tmp_path), "--analyse", "--resume", "--json")
    assert res.returncode == 2, res.stderr
    assert json.loads(res.stdout)["error"].startswith(f"cannot read the policies' state {path}:")
