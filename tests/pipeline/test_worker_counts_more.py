"""More of what a worker and a run's summary count: fields not tracked, a damaged frame log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq
from skimage.draw import disk

from livescope.pipeline import PipelineWorker, WorkerConfig, _demo
from livescope.pipeline._jobs import Field
from livescope.tracking import OnlineTracker, measure_objects
from tests.pipeline.test_demo_review import _Supervisor
from tests.pipeline.test_trigger_scoring import PROFILE, made_up_run


class _WorkerNotTracking(_Supervisor):
    """A stand-in worker whose summary says it stored two fields the tracker ignored."""

    def wait(self) -> dict[str, Any]:
        return {**super().wait(), "fields_not_tracked": 2}


def _nuclei(shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A DAPI frame of three bright nuclei (12 µm across at 0.65 µm per pixel)."""
    frame = np.full(shape, 100, np.uint16)
    for yx in ((30, 30), (70, 90), (30, 90)):
        frame[disk(yx, 9, shape=shape)] = 1500
    return frame


def test_a_field_the_tracker_ignores_is_counted(tmp_path: Path) -> None:
    # the worker skips a field it analysed already, so a time point reaches the tracker
    # twice only when the trackers it resumes are ahead of its fields (a state.json
    # edited, or put together from two saves); the tracker then ignores the field and
    # its cells are stored with track 0, which only the log said
    nuclear = _nuclei()
    tracker = OnlineTracker()
    for t in range(3):
        tracker.update(measure_objects(np.zeros(nuclear.shape, np.int32)), frame=t)
    res = tmp_path / "results"
    res.mkdir()
    (res / "state.json").write_text(json.dumps(
        {"version": 1, "run_id": "r", "done": {"p0": 0}, "counts": {},
         "trackers": {"p0": tracker.snapshot().state()}, "class_cols": []}
    ))  # fmt: skip
    cfg = WorkerConfig(segmenter="nuclei-unet", stain=None, states=None, overlay=False,
                       backend="onnxruntime")  # fmt: skip
    w = PipelineWorker(tmp_path, cfg, resume=True)
    try:
        header = {"seq": 2, "position": "p0", "channel": "DAPI", "pixel_size_um": 0.65,
                  "x_um": 0.0, "y_um": 0.0, "sample_time_s": 60.0}  # fmt: skip
        w._process(Field("p0", 1, {("DAPI", 0): nuclear}, header, 0, live=False))
        w._drain_decisions()
        w._drain_store()
    finally:
        summary = w._finish()
    assert summary["ok"] is True
    assert summary["fields_analysed"] == 1
    assert summary["cells"] == 3  # (stored, with track 0)
    assert summary["fields_not_tracked"] == 1


@pytest.mark.parametrize(
    "damaged",
    [
        pytest.param(False, id="whole-log"),
        # t=2's line cut short (the disk full), t=3's written after it once space was freed
        pytest.param(True, id="line-cut-short-then-written-after"),
    ],
)
def test_a_damaged_frame_log_is_said_in_the_run_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damaged: bool
) -> None:
    # `read_frames` raises on a complete line that is no JSON object: the run's summary
    # (summary.json) was lost with it, the worker's counts and scores included
    def acquire(profile: Any, sequence: Any, out: Path, **kw: Any) -> dict[str, Any]:
        kw["on_ready"](None)
        made_up_run(out, [(2, 15.0, 15.0)])
        if damaged:
            lines = (out / "frames.jsonl").read_text().splitlines(keepends=True)
            lines[2] = lines[2][:20]
            (out / "frames.jsonl").write_text("".join(lines))
        return {"frames_acquired": 4, "frames_written": 4, "decisions_accepted": 0,
                "decisions_rejected": 0, "duration_s": 1.0}  # fmt: skip

    monkeypatch.setattr(_demo, "run_simulated", acquire)
    monkeypatch.setattr(_demo, "WorkerSupervisor", _WorkerNotTracking)
    monkeypatch.setattr(_demo, "machine_info", lambda: {"cpu": "test"})
    seq = useq.MDASequence(time_plan={"interval": 120, "loops": 4})
    s = _demo.run_adaptive(PROFILE, seq, tmp_path / "run", watch_stalls=False)
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == s
    # the worker's figures are there either way, the fields it could not track among them
    assert s["analysis_gaps"]["fields_not_tracked"] == 2
    if damaged:
        assert s["frame_log_error"].startswith("LivescopeError: ")
        assert "frames.jsonl, line 3: not a JSON frame record" in s["frame_log_error"]
        assert (s["frames_planned_recorded"], s["frames_added"]) == (None, None)
    else:
        assert s["frame_log_error"] is None
        assert (s["frames_planned_recorded"], s["frames_added"]) == (4, 0)
