"""The results store's files as users load them: cells.csv columns, blanks, a full disk.

Fields go through the worker's own decision and store threads (`PipelineWorker._decide`)
with label images painted here and cell-state probabilities given here: no engine runs.
"""

from __future__ import annotations

import collections
import csv
import os
from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from livescope.inference import CellStates
from livescope.pipeline import FrameResult, PipelineWorker, WorkerConfig
from livescope.pipeline._jobs import DecideJob, Field
from livescope.pipeline._observe import observe
from livescope.pipeline._results import ResultsStore, apply_revisions
from livescope.tracking import OnlineTracker, Revision, measure_objects

NO_ENGINES = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)
A, B = (30, 30), (70, 90)


def _paint(*cells: tuple[int, int]) -> np.ndarray:
    lab = np.zeros((96, 128), np.int32)
    for i, (y, x) in enumerate(cells, 1):
        lab[disk((y, x), 6, shape=lab.shape)] = i
    return lab


def _job(
    tracker: OnlineTracker,
    t: int,
    labels: np.ndarray | None,
    classes: tuple[str, ...] = (),
    probs: list[list[float]] | None = None,
) -> DecideJob:
    """A field of ``p0`` as the main thread hands it on; ``labels`` None: nothing segmented."""
    painted = _paint(A, B) if labels is None else labels
    nuclear = np.where(painted > 0, 500, 100).astype(np.uint16)
    res = FrameResult("p0", t)
    if labels is not None:
        objects = measure_objects(labels, nuclear)
        res = FrameResult(
            "p0", t, labels=labels, tracks=tracker.update(objects, frame=t), objects=objects
        )
        if classes:
            ids = np.unique(labels)[1:].astype(np.int64)
            res.states = CellStates(ids, np.array(probs, np.float32), classes, 0.0)
    header = {"seq": t, "x_um": 0.0, "y_um": 0.0, "sample_time_s": 60.0 * t}
    fld = Field("p0", t, {("DAPI", 0): nuclear}, header, 0, live=False)
    return DecideJob(fld, res, nuclear, 0.5, 0, 0, 0, tracker.snapshot())


def _table(res: Path) -> tuple[list[str], list[dict[str, str]]]:
    """cells.csv's header and rows, each row checked to have the header's columns."""
    with (res / "cells.csv").open(encoding="utf-8", newline="") as f:
        head, *rows = csv.reader(f)
    assert [len(r) for r in rows] == [len(head)] * len(rows)
    return head, [dict(zip(head, r, strict=True)) for r in rows]


def test_state_columns_are_in_the_header_when_the_first_field_had_no_cells(
    tmp_path: Path,
) -> None:
    # the header was written for the first field stored, before any field had states: its
    # rows then had two more fields than the header (pandas took the first columns as the
    # index, shifting every column's values under another's name)
    w = PipelineWorker(tmp_path, NO_ENGINES)
    tracker = w.analyzer.trackers.setdefault("p0", OnlineTracker())
    w._decide(_job(tracker, 0, None))  # (no nuclear frame: nothing segmented, no states)
    w._decide(_job(tracker, 1, _paint(A, B), ("interphase", "prophase"), [[0.2, 0.8]] * 2))
    w._finish()
    head, rows = _table(tmp_path / "results")
    assert head[-2:] == ["p_interphase", "p_prophase"]
    assert [r["p_prophase"] for r in rows] == ["0.8", "0.8"]


def test_a_resumed_workers_probabilities_go_under_their_own_class(tmp_path: Path) -> None:
    # a worker resumed with a classifier listing its classes in another order (or one more)
    # wrote its probabilities by position: under the other class's name, or past the header
    w = PipelineWorker(tmp_path, NO_ENGINES)
    tracker = w.analyzer.trackers.setdefault("p0", OnlineTracker())
    w._decide(_job(tracker, 0, _paint(A, B), ("interphase", "prophase"), [[0.9, 0.1]] * 2))
    w._finish(failed=True)  # (killed: the state saved as the field was stored is resumed)
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    tracker = w.analyzer.trackers.setdefault("p0", OnlineTracker())
    w._decide(
        _job(
            tracker, 1, _paint(A, B), ("prophase", "anaphase", "interphase"), [[0.3, 0.1, 0.6]] * 2
        )
    )
    w._finish()
    head, rows = _table(tmp_path / "results")
    assert head[-2:] == ["p_interphase", "p_prophase"]
    got = [(r["t"], r["p_interphase"], r["p_prophase"]) for r in rows]
    assert got == [("0", "0.9", "0.1")] * 2 + [("1", "0.6", "0.3")] * 2


def test_an_unscored_cells_probabilities_are_blank_as_every_missing_number(
    tmp_path: Path,
) -> None:
    # NaN probabilities (the classifier did not score the cell) were written "nan", while
    # every other missing number (intensity, stain, p_mitosis) is left blank
    w = PipelineWorker(tmp_path, NO_ENGINES)
    tracker = w.analyzer.trackers.setdefault("p0", OnlineTracker())
    nan = float("nan")
    w._decide(_job(tracker, 0, _paint(A, B), ("interphase", "prophase"), [[0.2, 0.8], [nan, nan]]))
    w._finish()
    _, rows = _table(tmp_path / "results")
    cells = {r["label"]: r for r in rows}
    assert (cells["1"]["p_interphase"], cells["1"]["p_prophase"]) == ("0.2", "0.8")
    assert (cells["2"]["p_interphase"], cells["2"]["p_prophase"]) == ("", "")
    assert cells["2"]["stain"] == cells["2"]["p_mitosis"] == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_is_raised_and_every_file_is_still_closed(tmp_path: Path) -> None:
    # closing stopped at the first file that could not be written out: the others stayed
    # open (and their handles with them, in a worker that goes on to the next run)
    (tmp_path / "cells.csv").symlink_to("/dev/full")
    store = ResultsStore(tmp_path, collections.Counter(), tail_frames=3)
    job = _job(OnlineTracker(), 0, _paint(A, B))
    obs = observe(
        job.fld, job.res, nuclear_frame=job.nuclear, pixel_size_um=0.5, run_id="r",
        engines={}, tracker=job.tracker_state,
    )  # fmt: skip
    with pytest.raises(OSError, match="No space left"):
        store.store(job.fld, job.res, obs)
    with pytest.raises(OSError, match="No space left"):
        store.close()
    files = (store._cells, store._policy_log, store._latency_log, store._revisions_log)
    assert all(f.closed for f in files)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_revisions_cut_short_by_a_full_disk_leave_no_half_copy(tmp_path: Path) -> None:
    # the copy being written beside cells.csv stayed, half written, on the full disk
    w = PipelineWorker(tmp_path, NO_ENGINES)
    tracker = w.analyzer.trackers.setdefault("p0", OnlineTracker())
    for t in range(3):
        w._decide(_job(tracker, t, _paint(A, B)))
    w._finish()
    res = tmp_path / "results"
    before = (res / "cells.csv").read_bytes()
    tmp = res / ".cells.csv.revised"
    tmp.symlink_to("/dev/full")  # (where the copy is written: as if the disk were full)
    with pytest.raises(OSError, match="No space left"):
        apply_revisions(res, {"p0": [Revision(old=2, new=3, first=1, last=2)]})
    assert not tmp.is_symlink()
    assert (res / "cells.csv").read_bytes() == before


def test_a_run_without_cells_leaves_a_table_with_its_header(tmp_path: Path) -> None:
    # (with the header written with the first cells, a run of none left an empty file,
    # which pandas cannot read)
    w = PipelineWorker(tmp_path, NO_ENGINES)
    tracker = w.analyzer.trackers.setdefault("p0", OnlineTracker())
    w._decide(_job(tracker, 0, None))
    w._finish()
    head, rows = _table(tmp_path / "results")
    assert head[:3] == ["position", "t", "seq"]
    assert rows == []


def test_a_worker_with_a_classifier_has_its_state_columns_from_the_first_field(
    tmp_path: Path,
) -> None:
    # (its classes are known before its first field, which may have no cells)
    cfg = WorkerConfig(segmenter="nuclei-unet", stain=None, states="cell-state", overlay=False)
    w = PipelineWorker(tmp_path, cfg)
    assert w.analyzer.states is not None
    classes = list(w.analyzer.states.classes)
    tracker = w.analyzer.trackers.setdefault("p0", OnlineTracker())
    w._decide(_job(tracker, 0, None))  # (no nuclear frame: nothing segmented)
    w._finish()
    head, rows = _table(tmp_path / "results")
    assert head[14:] == [f"p_{k}" for k in classes]
    assert rows == []


def test_a_table_another_program_holds_says_so_as_a_resumed_worker_trims_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (Windows: a spreadsheet that has cells.csv open locks it; the refusal named only a
    # temporary file, "[WinError 5] Access is denied")
    from livescope.pipeline import _results

    res = tmp_path / "results"
    res.mkdir()
    (res / "cells.csv").write_text("position,t\np0,0\np0,1\n", encoding="utf-8")

    def locked(path: Path, data: object) -> None:
        raise PermissionError(13, "Access is denied", str(path) + ".tmp")

    monkeypatch.setattr(_results, "write_atomic", locked)
    with pytest.raises(PermissionError, match=r"cells\.csv is open in another program") as got:
        _results.trim_results(res, {"p0": 0}, {"p0": 0})
    assert got.value.errno == 13  # (still an OSError: the supervisor restarts the worker)
