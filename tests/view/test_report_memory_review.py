"""The run report's memory grows slowly with a run's length.

A 72-hour plate run logs some 250,000 frames and 25 million cells: the report kept every
frame log line whole (about 4 kB each, most of it the unused ``event``) and every row of
cells.csv as an object (about 330 B, 770 B at the peak of reading), gigabytes in all.
Memory is measured with tracemalloc, in bytes per frame or row, never time.
"""

from __future__ import annotations

import json
import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from livescope.view._report_data import FRAME_FIELDS, RunData, load_run

from .test_report_robustness import make_run

T = TypeVar("T")


def _peak_bytes(fn: Callable[[], T]) -> tuple[T, int]:
    """Return what ``fn`` returns and the most memory it had allocated at once (bytes)."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - before
    finally:
        if not tracing:
            tracemalloc.stop()


def _recorder_lines(run: Path) -> int:
    """Give each frame log line the fields the recorder writes (``event`` among them)."""
    lines = []
    for line in (run / "frames.jsonl").read_text(encoding="utf-8").splitlines():
        f = json.loads(line)
        idx, pos, st = f["index"], f["position"], f["sample_time_s"]
        f.update(x_um=-700.0, y_um=-420.0, z_um=0.0, exposure_ms=50.0, pixel_size_um=0.65,
                 runner_time_ms=1000 * st + 10.247946993331425, t_camera_ns=77792091316216,
                 hardware_triggered=False, added_by=None, adler32=1377742527,
                 shape=[512, 512], dtype="uint16")  # fmt: skip
        f["event"] = {"index": idx, "channel": {"config": f["channel"], "group": "Channel"},
                      "exposure": 50.0, "min_start_time": st, "pos_name": pos, "x_pos": -700.0,
                      "y_pos": -420.0, "z_pos": 0.0, "metadata": {"sample_time_s": st}}  # fmt: skip
        lines.append(json.dumps(f) + "\n")
    (run / "frames.jsonl").write_text("".join(lines), encoding="utf-8")
    return len(lines)


def test_frame_log_lines_keep_only_what_the_report_reads(tmp_path: Path) -> None:
    # 2,000 frames and no results/: the frame log is all that is read
    run = make_run(tmp_path / "run", positions=("p0", "p1"), timepoints=1000, cells=1)
    shutil.rmtree(run / "results")
    n = _recorder_lines(run)
    data, peak = _peak_bytes(lambda: load_run(run))
    assert isinstance(data, RunData)
    assert len(data.frames) == n == 2000
    assert data.frames[3] == {"seq": 3, "position": "p1", "channel": "DAPI",
                              "index": {"t": 1, "z": 0}, "sample_time_s": 60.0,
                              "added_by": None}  # fmt: skip
    assert set().union(*data.frames) <= set(FRAME_FIELDS)
    # (was some 4,700 B a frame, the whole file's text read first; about 500 B now)
    assert peak / n < 1500, f"{peak / n:.0f} B a frame"


def test_cell_rows_are_held_in_columns(tmp_path: Path) -> None:
    # 12,000 cell rows in 40 fields: the cell table is most of what is read
    run = make_run(tmp_path / "run", positions=("p0", "p1"), timepoints=20, cells=300)
    data, peak = _peak_bytes(lambda: load_run(run))
    assert isinstance(data, RunData)
    assert data.cells is not None
    n = len(data.cells)
    assert n == 2 * 20 * 300
    rows = list(data.cells)
    assert (rows[0].position, rows[0].t, rows[0].track, rows[-1].track) == ("p0", 0, 1, 300)
    assert {r.state for r in rows} == {"interphase"}
    # (was some 640 B a row, the whole file's text and an object a row; about 60 B now)
    assert peak / n < 150, f"{peak / n:.0f} B a row"
