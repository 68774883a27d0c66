"""The worker's state.json over a long run: the lineage of ended tracks goes to lineage.jsonl."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import livescope.pipeline._worker as worker_module
from livescope.pipeline import FrameAnalyzer, PipelineWorker, WorkerConfig
from livescope.schema import LivescopeError
from livescope.tracking import OnlineTracker
from livescope.tracking._objects import ObjectTable

NO_ENGINES = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)


def _churning_frames(frames: int, cells: int = 30, churn: int = 3) -> Any:
    """Yield (t, objects): cells that move a little, ``churn`` lost and as many new a frame."""
    rng = np.random.default_rng(0)
    pos = rng.uniform(20, 480, (cells, 2))
    for t in range(frames):
        pos = np.clip(pos + rng.normal(0, 1.0, pos.shape), 10, 490)
        pos[rng.choice(cells, churn, replace=False)] = rng.uniform(20, 480, (churn, 2))
        ids = np.arange(1, cells + 1, dtype=np.int64)
        yield t, ObjectTable(ids, pos.copy(), np.full(cells, 80.0), None, np.zeros(cells, bool),
                             (500, 500))  # fmt: skip


def test_the_saved_state_stays_bounded_as_tracks_end(tmp_path: Path) -> None:
    # every track the run ever started was in state.json, rewritten whole after every field:
    # 10 MB and 50 ms a field after 10,000 time points of 10 positions of 100 cells
    w = PipelineWorker(tmp_path, NO_ENGINES)
    tracker = OnlineTracker()
    sizes = []
    try:
        for t, objs in _churning_frames(400):
            if t == 200:  # a change of view: a new tracker, its tracks ended, ids and lineage go on
                state = tracker.state()
                tracker = OnlineTracker.from_state({**state, "tracks": {
                    c: [] for c in state["tracks"]}})  # fmt: skip
            tracker.update(objs, t)
            w._tracker_states["p0"] = tracker.snapshot()
            w._decided_done["p0"] = t
            w._save_state(w._snapshot())
            sizes.append((w.results / "state.json").stat().st_size)
    finally:
        w._finish(failed=True)
    assert len(tracker.lineage) > 1000  # (most of them ended)
    assert max(sizes[300:]) < 1.2 * max(sizes[50:100]), (sizes[50:100], sizes[300:])
    # ... and nothing of the lineage is lost: a resumed worker has every track's
    again = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    try:
        resumed = again.analyzer.trackers["p0"]
        assert resumed.state() == tracker.state()
        assert list(resumed.lineage.items()) == list(tracker.lineage.items())
    finally:
        again._finish(failed=True)


# ------------------------------------------------------------------ a run killed and resumed


def _recorded_run(tmp_path: Path, timepoints: int) -> Path:
    """A finished simulated run of two positions, no worker attached."""
    from livescope.schema import load_profile
    from livescope.scope import demo_sequence, run_simulated

    prof = load_profile("sim")
    run = tmp_path / "recorded"
    run_simulated(prof, demo_sequence(prof, timepoints=timepoints, positions=2), run, seed=3)
    return run


def _churning_cells(img: np.ndarray) -> np.ndarray:
    """Six cells that stay and three that appear somewhere new in each frame (by its pixels)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(img.tobytes()).digest()[:8]))
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    labels = np.zeros(img.shape[:2], np.int32)
    kept = [(0.2 + 0.15 * k, 0.3 + 0.08 * k) for k in range(6)]
    new = [tuple(rng.uniform(0.1, 0.9, 2)) for _ in range(3)]
    for k, (fy, fx) in enumerate([*kept, *new], start=1):
        labels[(yy - fy * img.shape[0]) ** 2 + (xx - fx * img.shape[1]) ** 2 < 64] = k
    return labels


def _segmenting(analyzer: FrameAnalyzer) -> FrameAnalyzer:
    seg = SimpleNamespace(segment=lambda img, normalised=False: SimpleNamespace(
        labels=_churning_cells(img)))  # fmt: skip
    analyzer.segmenter_name = "cells"
    analyzer._segmenter = lambda px: seg  # type: ignore[method-assign,assignment,return-value]
    return analyzer


def _analyse(run: Path, *, resume: bool = False) -> dict[str, Any]:
    w = PipelineWorker(run, NO_ENGINES, resume=resume)
    _segmenting(w.analyzer)
    return w.run(attach_timeout_s=0.1)


def _outputs(run: Path) -> dict[str, bytes]:
    """cells.csv and the CTC results (res_track.txt, labels.csv, masks), as bytes."""
    res = run / "results"
    files = [res / "cells.csv", *sorted((res / "ctc").rglob("*"))]
    return {str(p.relative_to(res)): p.read_bytes() for p in files if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """The recorded run, and the outputs of a worker that analysed it without a stop."""
    recorded = _recorded_run(tmp_path_factory.mktemp("state_growth"), timepoints=10)
    ref = recorded.with_name("ref")
    shutil.copytree(recorded, ref)
    summary = _analyse(ref)
    assert summary["ok"]
    assert summary["fields_analysed"] == 20
    tracks = (ref / "results" / "ctc" / "p0" / "res_track.txt").read_text().splitlines()
    assert len(tracks) > 20  # (tracks that ended: their lineage went to lineage.jsonl)
    return recorded, _outputs(ref)


def _killed_between_lineage_and_state(
    recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A copy of the run whose worker stopped after a lineage append, before the state write."""
    run = tmp_path / "run"
    shutil.copytree(recorded, run)
    appended = [0]
    real_append = PipelineWorker._append_lineage
    real_write = worker_module.write_atomic

    def append(self: PipelineWorker, data: bytes) -> None:
        real_append(self, data)
        appended[0] += 1

    def write_atomic(path: Any, data: Any) -> Path:
        if Path(path).name == "state.json" and appended[0] == 4:
            raise OSError("killed here")  # (nothing of it written, as by a kill)
        return real_write(path, data)

    with monkeypatch.context() as m:
        m.setattr(PipelineWorker, "_append_lineage", append)
        m.setattr(worker_module, "write_atomic", write_atomic)
        with pytest.raises(LivescopeError, match="storing results failed: killed here"):
            _analyse(run)
    res = run / "results"
    state = json.loads((res / "state.json").read_text())
    assert sum(t + 1 for t in state["done"].values()) < 20  # (killed before the run's end)
    counted = state["lineage_bytes"]
    assert (res / "lineage.jsonl").stat().st_size > counted  # rows the state does not count
    return run


def test_a_worker_killed_between_the_lineage_and_the_state_resumes_to_the_same_results(
    reference: tuple[Path, dict[str, bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded, outputs = reference
    run = _killed_between_lineage_and_state(recorded, tmp_path, monkeypatch)
    summary = _analyse(run, resume=True)
    assert summary["ok"]
    assert summary["restarts"] == 1
    assert _outputs(run) == outputs


def test_a_state_saved_with_every_tracks_lineage_resumes(
    reference: tuple[Path, dict[str, bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a state.json of a worker before lineage.jsonl: its trackers hold every track's lineage
    recorded, outputs = reference
    run = _killed_between_lineage_and_state(recorded, tmp_path, monkeypatch)
    res = run / "results"
    state = json.loads((res / "state.json").read_text())
    counted = (res / "lineage.jsonl").read_bytes()[: state.pop("lineage_bytes")]
    for line in counted.decode().splitlines():
        rec = json.loads(line)
        tracker = state["trackers"][rec["position"]]
        for i, key in enumerate(("parents", "first_frame", "last_frame"), start=1):
            rows = {**dict(zip(*tracker[key], strict=True)), **{r[0]: r[i] for r in rec["tracks"]}}
            tracker[key] = [sorted(rows), [rows[k] for k in sorted(rows)]]
    (res / "state.json").write_text(json.dumps(state))
    (res / "lineage.jsonl").unlink()
    summary = _analyse(run, resume=True)
    assert summary["ok"]
    assert summary["restarts"] == 1
    assert _outputs(run) == outputs
    # its ended tracks' lineage is in lineage.jsonl now, and out of the state
    state = json.loads((res / "state.json").read_text())
    live = set(state["trackers"]["p0"]["tracks"]["id"])
    assert set(state["trackers"]["p0"]["parents"][0]) == live
    assert (res / "lineage.jsonl").stat().st_size == state["lineage_bytes"] > 0
