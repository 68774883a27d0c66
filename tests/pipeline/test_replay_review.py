"""Replay: a speed that cannot pace is refused, and the gate survives a restarted worker.

Found by an independent review (reproducers were under /tmp/review_replay/).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.pipeline import run_replay
from livescope.record import open_dataset
from livescope.schema import LivescopeError, load_profile, write_atomic
from livescope.scope import ReplayGate, map_channels, replay_sequence, run_replay_scope


def _ctc(root: Path, frames: int = 3) -> Path:
    root.mkdir(parents=True)
    for t in range(frames):
        tifffile.imwrite(root / f"t{t:03d}.tif", np.full((32, 32), t, np.uint16))
    return root


@pytest.mark.parametrize(
    "speed",
    [
        pytest.param(0.0, id="zero (divided by it mid-run)"),
        pytest.param(-1.0, id="negative (ran unpaced)"),
        pytest.param(math.nan, id="nan (ran unpaced)"),
        pytest.param(math.inf, id="inf"),
    ],
)
def test_a_replay_speed_that_cannot_pace_is_refused_before_anything_runs(
    tmp_path: Path, speed: float
) -> None:
    seq = _ctc(tmp_path / "01")
    prof = load_profile("replay")
    out = tmp_path / "out"
    with open_dataset(seq) as ds:
        ch = map_channels(ds, prof)
        with pytest.raises(LivescopeError, match=r"speed must be a number > 0 .*got"):
            run_replay_scope(ds, prof, replay_sequence(ds, prof, ch), out, channels=ch,
                             speed=speed)  # fmt: skip
    assert not out.exists()


def test_run_replay_refuses_an_infinite_speed(tmp_path: Path) -> None:
    seq = _ctc(tmp_path / "01")
    with pytest.raises(LivescopeError, match=r"replay speed must be a number > 0 .*got"):
        run_replay(seq, tmp_path / "out", speed=math.inf)
    assert not (tmp_path / "out").exists()


def _rec(p: str, t: int, ms: dict[str, float]) -> str:
    return json.dumps({"position": p, "t": t, "live": True, "ms": ms}) + "\n"


def test_the_gate_follows_a_latency_log_a_restarted_worker_trimmed(tmp_path: Path) -> None:
    """`trim_results` rewrites the log without a half-stored field: read it from its start."""
    log = tmp_path / "results" / "latency.jsonl"
    log.parent.mkdir()
    log.write_text(_rec("p0", 0, {"seg": 11.25}) + _rec("p0", 1, {"seg": 12.5}))
    gate = ReplayGate(tmp_path, timeout_s=2.0)
    assert gate.wait_for([("p0", 0), ("p0", 1)])
    # killed after logging (p0, 1), before saving its state: the new worker trims it off,
    # analyses it again (a shorter record) and goes on
    write_atomic(log, _rec("p0", 0, {"seg": 11.25}))
    with log.open("a") as fh:
        fh.write(_rec("p0", 1, {"seg": 9.5}) + _rec("p0", 2, {"seg": 10.0}))
    assert gate.wait_for([("p0", 2)])
    assert gate.timeouts == 0


def test_the_gate_keeps_reading_a_log_that_only_grows(tmp_path: Path) -> None:
    log = tmp_path / "results" / "latency.jsonl"
    log.parent.mkdir()
    gate = ReplayGate(tmp_path, timeout_s=2.0)
    with log.open("a") as fh:
        fh.write(_rec("p0", 0, {}) + '{"position": "p0", "t"')  # (a line half written)
        fh.flush()
        assert gate.wait_for([("p0", 0)])
        fh.write(": 1}\n")
    assert gate.wait_for([("p0", 1)])
    assert gate.done == {("p0", 0), ("p0", 1)}
