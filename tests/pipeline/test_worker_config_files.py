"""A worker config file that cannot be used is an error naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livescope.pipeline import run_replay
from livescope.record import DatasetError
from livescope.schema import LivescopeError, load_profile
from livescope.scope import demo_sequence, run_simulated

from ..conftest import run_cli


def test_a_recordings_damaged_worker_config_is_named_by_its_replay(tmp_path: Path) -> None:
    # (one written by hand, or by another version with other settings): the error said what
    # was wrong, not in which file, and a cluster retried it as a failure of the worker
    prof = load_profile("sim").with_square_sensor(64)
    rec = tmp_path / "rec"
    run_simulated(prof, demo_sequence(prof, timepoints=1, positions=1), rec, seed=1)
    saved = rec / "results" / "worker-config.json"
    saved.parent.mkdir(exist_ok=True)
    saved.write_text(json.dumps({"maxlen": "256"}), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"worker-config\.json: worker config: maxlen must be"):
        run_replay(rec, tmp_path / "out")
    assert not (tmp_path / "out" / "source.json").exists()  # (refused before it ran)


def test_a_worker_config_of_the_wrong_type_is_a_clear_error_naming_the_file(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"overlay": "false"}), encoding="utf-8")
    res = run_cli("worker", str(tmp_path / "run"), "--config", str(cfg), "--json")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    error = json.loads(res.stdout)["error"]
    assert error.startswith(f"cannot read worker config {cfg}: worker config: overlay must be")


def test_a_replay_at_full_speed_never_leaves_a_stain_out_to_catch_up(tmp_path: Path) -> None:
    # whether the next time point was queued when a field's analysis began is the host's
    # timing: a stain left out to catch up made two replays of one recording differ (a
    # cell's stain blank in one, and the formats' replays compared unequal, now and then)
    prof = load_profile("sim").with_square_sensor(64)
    rec = tmp_path / "rec"
    run_simulated(prof, demo_sequence(prof, timepoints=2, positions=1), rec, seed=1)
    summary = run_replay(rec, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results" / "worker-config.json").read_text())
    assert saved["skip_stain_when_behind"] is False
    assert summary["stains_skipped_behind"] == 0
    assert summary["deterministic"] is True


@pytest.mark.parametrize("timeout", [float("nan"), 0.0, -1.0, float("inf")])
def test_a_gate_timeout_that_never_times_out_is_refused_before_anything_runs(
    tmp_path: Path, timeout: float
) -> None:
    # (nan: `now > t0 + nan` is never true, and a hung worker hung the replay for good)
    with pytest.raises(LivescopeError, match="gate_timeout_s must be a number of seconds > 0"):
        run_replay(tmp_path / "no-dataset-needed", tmp_path / "out", gate_timeout_s=timeout)
    assert not (tmp_path / "out").exists()
    res = run_cli("replay", str(tmp_path / "x"), "--gate-timeout-s", "nan", "--json")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "--gate-timeout-s" in json.loads(res.stdout)["error"]
