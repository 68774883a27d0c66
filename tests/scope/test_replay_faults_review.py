"""Replay faults that ended the replay, or stretched it out, instead of being passed over.

Found by an independent review: a ``latency.jsonl`` line that is JSON but not a
field's record raised TypeError out of the gate; a hung worker cost the gate its
whole timeout at every later time point; a recorded frame that could not be read
(a damaged chunk) ended the whole replay.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from livescope.record import ZARR_NAME, open_dataset
from livescope.schema import LivescopeError, load_plan, load_profile
from livescope.scope import (
    ReplayEngine,
    ReplayGate,
    ReplayMicroscope,
    ReplaySource,
    demo_sequence,
    frames_in_plan,
    map_channels,
    run_replay_scope,
    run_simulated,
)
from livescope.scope._fanout import position_name
from tests.scope.test_replay_gate_truth_review import _Worker


def _rec(p: str, t: int) -> str:
    return json.dumps({"position": p, "t": t, "live": True}) + "\n"


def _log(run: Path) -> Path:
    log = run / "results" / "latency.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    return log


# ------------------------------------------------------------ damaged log lines


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("null", id="null"),
        pytest.param("[1]", id="a list"),
        pytest.param("3", id="a number"),
        pytest.param('"p0"', id="a string"),
        pytest.param('{"position": "p0", "t": null}', id="t null"),
        pytest.param('{"position": "p0", "t": [1]}', id="t a list"),
        pytest.param('{"position": "p0", "t": 1e999}', id="t too large"),
        pytest.param('{"position": ["p0"], "t": 1}', id="position a list"),
        pytest.param('{"position": "p0", "t"', id="cut short"),
    ],
)
def test_a_damaged_latency_line_is_passed_over_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, line: str
) -> None:
    log = _log(tmp_path)
    log.write_text(_rec("p0", 0) + line + "\n" + line + "\n" + _rec("p0", 1))
    gate = ReplayGate(tmp_path, timeout_s=2.0)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        assert gate.wait_for([("p0", 0), ("p0", 1)])
    assert gate.done == {("p0", 0), ("p0", 1)}
    assert gate.timeouts == 0
    said = [r.getMessage() for r in caplog.records if "not a field's record" in r.getMessage()]
    assert len(said) == 1
    assert str(log) in said[0]


# ------------------------------------------------------------ a hung worker


def test_after_a_timeout_the_gate_waits_again_only_once_the_worker_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = _log(tmp_path)
    log.write_text(_rec("p0", 0))
    gate = ReplayGate(tmp_path, timeout_s=0.05)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        assert not gate.wait_for([("p0", 1)])  # (the worker hangs on p0 t = 1)
        for t in range(2, 7):  # it made no progress since: not waited for again
            assert not gate.wait_for([("p0", t - 1)])
    assert (gate.timeouts, gate.skipped) == (1, 5)
    assert gate.waited_s >= gate.timeout_s  # (the one wait that timed out)
    ungated = [r for r in caplog.records if "ungated" in r.getMessage()]
    assert len(ungated) == 1
    # the worker analyses a field again: the gate holds the replay again
    with log.open("a") as fh:
        fh.write(_rec("p0", 1))
    assert gate.wait_for([("p0", 1)])
    assert not gate.wait_for([("p0", 2)])
    assert (gate.timeouts, gate.skipped) == (2, 5)


# ------------------------------------------------------------ unreadable frames


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 positions × 4 time points 1 s apart, phase + DAPI, 64² (one chunk file a frame)."""
    prof = load_profile("sim")
    prof = prof.replace(camera=prof.camera.replace(sensor_shape_px=(64, 64)).model_dump())
    out = tmp_path_factory.mktemp("rec") / "run"
    run_simulated(prof, demo_sequence(prof, timepoints=4, positions=2, interval_s=1.0), out)
    return out


def _damaged(recording: Path, to: Path, position: str, t: int, channel: str) -> Path:
    """Copy ``recording`` to ``to`` with the chunk of one frame cut short (a damaged file)."""
    shutil.copytree(recording, to)
    store = to / ZARR_NAME
    for meta in store.glob("*/zarr.json"):
        attrs = json.loads(meta.read_text())["attributes"]
        if attrs.get("livescope", {}).get("position") == position:
            c = [ch["label"] for ch in attrs["ome"]["omero"]["channels"]].index(channel)
            chunk = meta.parent / "0" / "c" / str(t) / str(c) / "0" / "0" / "0"
            chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
            return to
    raise AssertionError(f"no position {position} in {store}")


def test_an_unreadable_frame_is_skipped_listed_and_said(
    recording: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _damaged(recording, tmp_path / "rec", "p1", 1, "DAPI")
    prof = load_profile("sim")
    with caplog.at_level(logging.WARNING, logger="livescope"), open_dataset(data) as ds:
        summary = run_replay_scope(
            ds, prof, load_plan(data / "plan.yaml"), tmp_path / "r",
            channels=map_channels(ds, prof), speed=None,
        )  # fmt: skip
    assert summary["frames_served"] == summary["frames_written"] == 15
    assert summary["frames_not_recorded"] == 0
    [lost] = summary["frames_unreadable"]
    assert "position='p1', t=1, channel='DAPI'" in lost["frame"]
    assert "damaged" in lost["error"]
    assert any("1 recorded frame(s) cannot be read" in w for w in summary["warnings"])
    said = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert any(str(data) in m and "damaged" in m for m in said)
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["frames_unreadable"] == [lost]


@pytest.mark.parametrize(
    ("slow", "timeouts"),
    [
        pytest.param(set(), 0, id="never waited for before the worker can have it"),
        # (at t = 3, and by the drain: the worker analysed other fields in between)
        pytest.param({("p1", 1)}, 2, id="waited for once the worker has it"),
    ],
)
def test_a_field_with_an_unreadable_frame_is_gated_as_one_lacking_it(
    recording: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    slow: set,
    timeouts: int,
) -> None:
    # (p1, 1) lacks its DAPI frame: the worker analyses it once (p0, 2)'s first frame
    # arrives; counted as served in part, it was never waited for (the replay ran
    # ahead of the worker there), waited for too soon, the gate held back that frame
    data = _damaged(recording, tmp_path / "rec", "p1", 1, "DAPI")
    prof = load_profile("sim")
    plan = load_plan(data / "plan.yaml")
    expected = frames_in_plan(plan)
    worker = _Worker(tmp_path / "run", expected, slow)
    gate = ReplayGate(tmp_path / "run", timeout_s=0.05)
    with caplog.at_level(logging.WARNING, logger="livescope"), open_dataset(data) as ds:
        source = ReplaySource(ds, map_channels(ds, prof))
        with ReplayMicroscope(prof, source) as scope:
            engine = ReplayEngine(scope.core, prof, source, gate=gate, expected=expected)
            for event in engine.event_iterator(plan):
                engine.setup_event(event)  # (the gate waits here, before the frame is served)
                worker.frame((position_name(event), int(event.index.get("t", 0))))
            engine.drain()
            worker.end()
    assert len(source.unreadable) == 1
    assert gate.timeouts == timeouts
    if timeouts:
        assert any("('p1', 1)" in r.getMessage() for r in caplog.records)


def test_a_replay_whose_worker_never_answers_times_out_once(
    recording: Path, tmp_path: Path
) -> None:
    # no worker at all (nothing writes latency.jsonl): one timeout (t = 2 waits for
    # t = 0), then t = 3 and the drain go on at once (each waited the whole timeout)
    prof = load_profile("sim")
    with open_dataset(recording) as ds:
        summary = run_replay_scope(
            ds, prof, load_plan(recording / "plan.yaml"), tmp_path / "r",
            channels=map_channels(ds, prof), speed=None, gate=True, gate_timeout_s=0.05,
        )  # fmt: skip
    assert summary["frames_served"] == 16
    assert summary["gate_timeouts"] == 1
    assert summary["gate_waits_skipped"] == 2


@pytest.mark.parametrize("timeout", [float("nan"), 0.0, float("inf")])
def test_a_gate_timeout_that_never_times_out_is_refused_by_the_scope_replay_too(
    recording: Path, tmp_path: Path, timeout: float
) -> None:
    # (only `run_replay` checked it: the scope's replay gated by nan waited for ever)
    prof = load_profile("sim")
    with open_dataset(recording) as ds, pytest.raises(LivescopeError, match="gate_timeout_s"):
        run_replay_scope(
            ds, prof, load_plan(recording / "plan.yaml"), tmp_path / "r",
            channels=map_channels(ds, prof), gate=True, gate_timeout_s=timeout,
        )  # fmt: skip
    assert not (tmp_path / "r").exists()
