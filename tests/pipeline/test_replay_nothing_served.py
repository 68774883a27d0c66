"""``livescope replay`` that replayed nothing, or could not start, said so once.

Found by an independent review: a recording none of whose frames could be read
was "replayed 0 frame(s)", ``ok`` and exit 0 (a script went on as if it had
worked); several datasets, one missing, started a Dask cluster and replayed the
others before the missing one failed as a task (said twice, exit 1, 13 s in);
each unreadable frame's error was printed twice (warned, then in the summary's
warning).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from livescope.record import ZARR_NAME
from livescope.schema import load_profile
from livescope.scope import demo_sequence, run_simulated

from ..conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 positions × 4 time points 1 s apart, phase + DAPI, 64² (one chunk file a frame)."""
    prof = load_profile("sim")
    prof = prof.replace(camera=prof.camera.replace(sensor_shape_px=(64, 64)).model_dump())
    out = tmp_path_factory.mktemp("rec") / "run"
    run_simulated(prof, demo_sequence(prof, timepoints=4, positions=2, interval_s=1.0), out)
    return out


def _chunks(run: Path) -> list[Path]:
    """The chunk file of each recorded frame (``<position>/0/c/<t>/<c>/0/0/0``)."""
    return sorted(p for p in (run / ZARR_NAME).glob("*/0/c/*/*/0/0/0") if p.is_file())


def _cut_short(chunk: Path) -> None:
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])


def test_a_replay_that_could_read_no_frame_is_not_ok(recording: Path, tmp_path: Path) -> None:
    data = shutil.copytree(recording, tmp_path / "rec")
    for c in (data / ZARR_NAME).glob("*/0/c"):  # (a copy of the run folder that did not finish)
        shutil.rmtree(c)
    res = run_cli("replay", str(data), "--out", str(tmp_path / "r"), "--json")
    assert res.returncode == 1, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert summary["frames_served"] == 0
    assert len(summary["frames_unreadable"]) == 16
    assert summary["ok"] is False
    first = summary["frames_unreadable"][0]["error"]
    assert "no frame could be served; 16 recorded frame(s) cannot be read" in summary["error"]
    assert first in summary["error"]
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["ok"] is False
    assert "the replay did not end as planned" in res.stderr


def test_unreadable_frames_are_said_once_and_not_one_by_one_past_ten(
    recording: Path, tmp_path: Path
) -> None:
    # every frame after t = 0 cut short: 12 of 16; those of t = 0 are replayed (documented:
    # a frame that cannot be read is skipped and the replay goes on)
    data = shutil.copytree(recording, tmp_path / "rec")
    damaged = [c for c in _chunks(data) if c.parent.parent.parent.parent.name != "0"]
    assert len(damaged) == 12
    for c in damaged:
        _cut_short(c)
    res = run_cli("replay", str(data), "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert (summary["ok"], summary["frames_served"]) == (True, 4)
    errors = [f["error"] for f in summary["frames_unreadable"]]
    assert len(errors) == 12
    said = [res.stderr.count(e) for e in errors]
    assert said[:10] == [1] * 10, res.stderr  # (the summary's warning repeated the first)
    assert said[10:] == [0, 0], res.stderr  # (10 are said one by one; all are listed)
    assert "12 recorded frame(s) cannot be read" in res.stderr


def test_missing_datasets_are_named_before_any_is_replayed(recording: Path, tmp_path: Path) -> None:
    # (a local cluster started and the recording was replayed; then a failed task, exit 1)
    a, b = tmp_path / "nosuch", tmp_path / "notes.txt"
    b.write_text("not a dataset")
    res = run_cli("replay", str(recording), str(a), str(b), "--out", str(tmp_path / "r"),
                  timeout=60)  # fmt: skip
    assert res.returncode == 2, res.stderr[-3000:]
    assert "2 of the 3 datasets cannot be replayed" in res.stderr
    assert f"{a}: no such file or folder" in res.stderr
    assert f"{b}: a file" in res.stderr
    assert res.stderr.count(str(a)) == 1
    assert not (tmp_path / "r").exists()


def test_a_failed_task_is_said_once(recording: Path, tmp_path: Path) -> None:
    # (logged as it failed, then listed again)
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_cli("replay", str(recording), str(empty), "--out", str(tmp_path / "r"),
                  "--workers", "1", "--threads", "1")  # fmt: skip
    assert res.returncode == 1, res.stderr[-3000:]
    assert f"failed: {empty}: DatasetError: {empty}: not a dataset" in res.stderr
    assert res.stderr.count(f"{empty}: not a dataset") == 1, res.stderr
