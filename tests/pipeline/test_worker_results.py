"""The worker's results store across restarts: CTC tracks, track-id masks, rows kept, firings.

Fields go through the worker's own decision and store threads (`PipelineWorker._decide`,
as its main thread hands them over) with label images painted here: no engine runs.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.draw import disk

from livescope.pipeline import FrameResult, PipelineWorker, WorkerConfig
from livescope.pipeline._jobs import DecideJob, Field
from livescope.policy import Firing, Observation
from livescope.record import CtcTrack, read_ctc
from livescope.tracking import OnlineTracker, measure_objects

NO_ENGINES = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)
A, B, C, D, E = (30, 30), (70, 90), (30, 90), (70, 30), (50, 60)


def _paint(*cells: tuple[int, int]) -> np.ndarray:
    lab = np.zeros((96, 128), np.int32)
    for i, (y, x) in enumerate(cells, 1):
        lab[disk((y, x), 6, shape=lab.shape)] = i
    return lab


def _field(tracker: OnlineTracker, position: str, t: int, labels: np.ndarray) -> DecideJob:
    """A field as the main thread hands it to the decision thread (tracked here)."""
    nuclear = np.where(labels > 0, 500, 100).astype(np.uint16)
    objects = measure_objects(labels, nuclear)
    res = FrameResult(
        position, t, labels=labels, tracks=tracker.update(objects, frame=t), objects=objects
    )
    header = {"seq": t, "x_um": 0.0, "y_um": 0.0, "sample_time_s": 60.0 * t}
    fld = Field(position, t, {("DAPI", 0): nuclear}, header, 0, live=False)
    return DecideJob(fld, res, nuclear, 0.5, 0, 0, 0, tracker.snapshot())


def _analysed(w: PipelineWorker, frames: dict[int, np.ndarray], position: str = "p0") -> None:
    """Analyse ``frames`` (t → labels) of ``position`` with the worker's tracker."""
    tracker = w.analyzer.trackers.setdefault(position, OnlineTracker())
    for t, labels in frames.items():
        w._decide(_field(tracker, position, t, labels))


@pytest.mark.parametrize(
    "killed",
    [
        pytest.param(False, id="finished"),
        # after its state was saved, while it removed the live masks it no longer needs
        pytest.param(True, id="killed-removing-live-masks"),
    ],
)
def test_a_worker_resumed_after_finishing_leaves_its_ctc_result_as_it_was(
    tmp_path: Path, killed: bool
) -> None:
    # B is missed at t=2: CTC continues it as a new track whose parent is its first one.
    # A worker resumed after the end (killed before it exited, or `--resume` by hand) read
    # the result's labels as track ids and relabelled them again: the link was lost
    w = PipelineWorker(tmp_path, NO_ENGINES)
    _analysed(w, {0: _paint(A, B, C), 1: _paint(A, B, C), 2: _paint(A, C), 3: _paint(A, B, C)})
    assert w._finish()["ok"] is True
    ctc = tmp_path / "results" / "ctc"
    frames, tracks = read_ctc(ctc / "p0")
    assert tracks == [CtcTrack(1, 0, 3, 0), CtcTrack(2, 0, 1, 0), CtcTrack(3, 0, 3, 0),
                      CtcTrack(4, 3, 3, 2)]  # fmt: skip
    if killed:
        (ctc / ".p0.old").mkdir()
        tifffile.imwrite(ctc / ".p0.old" / "mask003.tif", _paint(A, B, C))
    for _ in range(2):
        summary = PipelineWorker(tmp_path, NO_ENGINES, resume=True)._finish()
        assert summary["ok"] is True
        assert summary["ctc_results_not_written"] == 0
        again, tracks_again = read_ctc(ctc / "p0")
        assert tracks_again == tracks
        assert all(np.array_equal(a, b) for a, b in zip(again, frames, strict=True))
        assert sorted(p.name for p in ctc.iterdir()) == ["p0"]


def test_fields_added_to_a_finished_ctc_result_leave_it_as_it_was_and_say_so(
    tmp_path: Path,
) -> None:
    # (a worker resumed on a finished run finds no new field; were one recorded since,
    # its track ids could not be told from the earlier fields' CTC labels)
    w = PipelineWorker(tmp_path, NO_ENGINES)
    _analysed(w, {0: _paint(A, B), 1: _paint(A, B)})
    w._finish()
    folder = tmp_path / "results" / "ctc" / "p0"
    tracks = (folder / "res_track.txt").read_text()
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    _analysed(w, {2: _paint(A, B)})
    summary = w._finish()
    assert summary["ctc_results_not_written"] == 1
    assert (folder / "res_track.txt").read_text() == tracks
    # nor were the new field's track ids written beside its CTC labels (py-ctcmetrics then
    # found the result invalid: a label in a mask but not in res_track.txt)
    assert not (folder / "mask002.tif").exists()


def test_track_ids_past_16_bits_are_kept_in_the_live_masks(tmp_path: Path) -> None:
    # ids are never reused: a long run's tracker hands out ids past 65535, which the
    # live masks wrapped (65537 became 1, track 1's id, which the CTC result then joined)
    w = PipelineWorker(tmp_path, NO_ENGINES)
    _analysed(w, {0: _paint(A)})
    early = w.analyzer.trackers["p0"]
    w.analyzer.trackers["p0"] = OnlineTracker.from_state({**early.state(), "next_id": 65534})
    _analysed(w, {t: _paint(B, C, D, E) for t in (10, 11, 12)})
    w._drain_store()
    folder = tmp_path / "results" / "ctc" / "p0"
    first, late = (tifffile.imread(folder / f"mask{t:03d}.tif") for t in (0, 12))
    assert first.dtype == np.uint16  # (as before while the ids fit)
    assert sorted(set(np.unique(late).tolist()) - {0}) == [65534, 65535, 65536, 65537]
    with (tmp_path / "results" / "cells.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["t"] == "12"]
    for r in rows:  # each cell's mask value is its track id
        assert late[round(float(r["y"])), round(float(r["x"]))] == int(r["track"])
    summary = w._finish()
    assert summary["ok"] is True
    _, tracks = read_ctc(folder)
    # the CTC result is renumbered compactly (16 bits), and no track took another's lineage
    assert tracks == [CtcTrack(1, 0, 0, 0), *(CtcTrack(k, 10, 12, 0) for k in (2, 3, 4, 5))]


def _saved_state(res: Path, done: dict[str, int], decided: dict[str, int]) -> None:
    """The state a killed worker left in ``res`` (no trackers, no policies)."""
    res.mkdir(parents=True, exist_ok=True)
    (res / "state.json").write_text(json.dumps(
        {"version": 1, "run_id": "r", "done": done, "counts": {}, "trackers": {},
         "class_cols": []}
    ))  # fmt: skip
    (res / "policy_state.json").write_text(json.dumps(
        {"version": 1, "decided": decided, "policy": {
            "policies": {}, "disabled": {},
            "guardrails": {"dose_s": {}, "dose_ch_s": {}, "extra_frames": 0, "sent_at": []}}}
    ))  # fmt: skip


@pytest.mark.parametrize(
    ("position", "done"),
    [
        # csv.writer quotes these in cells.csv: the rows were split by hand at every ","
        pytest.param("A1, site 2", {}, id="comma"),
        pytest.param('dish "B"', {}, id="quotes"),
        # a plan position may hold "~": everything after it was cut off
        pytest.param("well~A1", {}, id="tilde"),
        # a close-up's fields (analysed with analyse_added) are keyed by their own name,
        # not by their parent position's
        pytest.param("p0~mitosis-1", {"p0": 5}, id="close-up"),
    ],
)
def test_a_resumed_worker_keeps_the_rows_of_every_position_name(
    tmp_path: Path, position: str, done: dict[str, int]
) -> None:
    res = tmp_path / "results"
    _saved_state(res, {**done, position: 2}, {**done, position: 2})
    buf = io.StringIO(newline="")
    table = csv.writer(buf)  # (as `ResultsStore` writes it)
    table.writerow(["position", "t", "seq", "sample_time_s", "label", "track"])
    table.writerows([[position, t, t, 0.0, 1, 1] for t in range(4)])
    (res / "cells.csv").write_bytes(buf.getvalue().encode())
    for name in ("latency.jsonl", "policy.jsonl"):
        (res / name).write_text(
            "".join(json.dumps({"position": position, "t": t, "ms": {}}) + "\n" for t in range(4))
        )
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    try:
        with (res / "cells.csv").open(newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0][:2] == ["position", "t"]
        assert [(r[0], int(r[1])) for r in rows[1:]] == [(position, t) for t in range(3)]
        for name in ("latency.jsonl", "policy.jsonl"):
            recs = [json.loads(x) for x in (res / name).read_text().splitlines()]
            assert [(r["position"], r["t"]) for r in recs] == [(position, t) for t in range(3)]
    finally:
        w._finish(failed=True)


class EveryField:
    """A Python policy that records every field it sees (so a field decided twice shows)."""

    name = "every"

    def decide(self, obs: Observation) -> list[Firing]:
        return [Firing(self.name, "field", obs.position, None, inputs={"cells": len(obs.cells)})]


def test_a_decided_fields_firings_are_logged_before_its_results_are_stored(
    tmp_path: Path,
) -> None:
    # the policies' state (the field decided) was saved at once, its firings only when the
    # store thread stored the field: a worker that died in between lost them for good
    res = tmp_path / "results"
    (res / "ctc" / "p0" / "mask001.tif").mkdir(parents=True)  # t=1 cannot be stored
    w = PipelineWorker(tmp_path, NO_ENGINES, policies=[EveryField()])
    _analysed(w, {t: _paint(A, B) for t in range(3)})
    assert w._finish()["ok"] is False  # (the store failed on t=1: no state saved after t=0)
    assert json.loads((res / "state.json").read_text())["done"] == {"p0": 0}
    assert json.loads((res / "policy_state.json").read_text())["decided"] == {"p0": 2}

    def fired() -> list[tuple[str, int, str]]:
        lines = (res / "policy.jsonl").read_text().splitlines()
        return [(r["rule"], r["t"], r["verdict"]) for r in map(json.loads, lines)]

    assert fired() == [("every", t, "recorded") for t in range(3)]
    # restarted: t=1 and 2 are analysed and stored again, not decided again (nor logged twice)
    (res / "ctc" / "p0" / "mask001.tif").rmdir()
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True, policies=[EveryField()])
    _analysed(w, {t: _paint(A, B) for t in (1, 2, 3)})
    summary = w._finish()
    assert summary["ok"] is True
    assert fired() == [("every", t, "recorded") for t in range(4)]
    assert summary["firings_recorded"] == 4  # (t=1's and 2's counted once, never stored before)
    assert json.loads((res / "policy_state.json").read_text())["decided"] == {"p0": 3}
    with (res / "cells.csv").open(newline="") as f:
        assert [int(r["t"]) for r in csv.DictReader(f)] == [0, 0, 1, 1, 2, 2, 3, 3]


def _late_division() -> dict[int, np.ndarray]:
    """A mother (50, 60) that splits at t=5; its second daughter is first seen at t=7."""

    def paint(*cells: tuple[int, int, int]) -> np.ndarray:
        lab = np.zeros((96, 128), np.int32)
        for i, (y, x, r) in enumerate(cells, 1):
            lab[disk((y, x), r, shape=lab.shape)] = i
        return lab

    other = (20, 20, 6)
    return {
        **{t: paint((50, 60, 9), other) for t in range(5)},
        **{t: paint((50, 54, 6), other) for t in (5, 6)},
        **{t: paint((50, 54, 6), (50, 70, 6), other) for t in (7, 8)},
    }


def _cells(res: Path) -> dict[tuple[int, int], tuple[int, int]]:
    """(t, x) → (track, parent) of every row of cells.csv."""
    with (res / "cells.csv").open(newline="") as f:
        return {(int(r["t"]), round(float(r["x"]))): (int(r["track"]), int(r["parent"]))
                for r in csv.DictReader(f)}  # fmt: skip


@pytest.mark.parametrize("restarted", [False, True], ids=["one-worker", "restarted-after-t7"])
def test_a_division_found_late_is_applied_to_the_cells_and_the_ctc_result(
    tmp_path: Path, restarted: bool
) -> None:
    # at t=7 the tracker finds the split at t=5 and says the mother's rows of t=5 and 6
    # were her first daughter's: the worker stored them as the mother's and left them so
    # (cells.csv: the mother lived to t=6; CTC result: the division two frames late)
    res = tmp_path / "results"
    frames = _late_division()
    w = PipelineWorker(tmp_path, NO_ENGINES)
    _analysed(w, {t: frames[t] for t in range(8 if restarted else 9)})
    if restarted:  # killed after t=7 was stored: its revision is read back from the log
        w._drain_store()
        w._finish(failed=True)
        w = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
        _analysed(w, {8: frames[8]})
    summary = w._finish()
    assert summary["ok"] is True
    assert summary["cells_revised"] == 2
    cells = _cells(res)
    assert [cells[(t, 60)] for t in range(5)] == [(1, 0)] * 5  # the mother
    assert [cells[(t, 54)] for t in range(5, 9)] == [(3, 1)] * 4  # her first daughter
    assert [cells[(t, 70)] for t in (7, 8)] == [(4, 1)] * 2  # the one seen late
    _, tracks = read_ctc(res / "ctc" / "p0")
    assert sorted((t.begin, t.end, t.parent) for t in tracks if not t.parent) == [
        (0, 4, 0),
        (0, 8, 0),
    ]
    (mother,) = (t for t in tracks if (t.begin, t.end, t.parent) == (0, 4, 0))
    daughters = sorted((t.begin, t.end, t.parent) for t in tracks if t.parent)
    assert daughters == [(5, 8, mother.label), (7, 8, mother.label)]
    # a worker resumed after the end applies them again: nothing changes
    before = (res / "cells.csv").read_bytes()
    assert PipelineWorker(tmp_path, NO_ENGINES, resume=True)._finish()["cells_revised"] == 0
    assert (res / "cells.csv").read_bytes() == before


def test_a_worker_killed_before_its_first_field_was_stored_does_not_log_firings_twice(
    tmp_path: Path,
) -> None:
    # without state.json the restarted worker ignored policy_state.json: every field it had
    # decided was decided, and logged, again
    res = tmp_path / "results"
    (res / "ctc" / "p0" / "mask000.tif").mkdir(parents=True)  # t=0 cannot be stored
    w = PipelineWorker(tmp_path, NO_ENGINES, policies=[EveryField()])
    _analysed(w, {t: _paint(A, B) for t in range(2)})
    assert w._finish()["ok"] is False
    assert not (res / "state.json").exists()
    (res / "ctc" / "p0" / "mask000.tif").rmdir()
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True, policies=[EveryField()])
    _analysed(w, {t: _paint(A, B) for t in range(3)})
    summary = w._finish()
    assert summary["ok"] is True
    assert summary["restarts"] == 1
    lines = (res / "policy.jsonl").read_text().splitlines()
    assert [json.loads(x)["t"] for x in lines] == [0, 1, 2]
    with (res / "cells.csv").open(newline="") as f:
        assert [int(r["t"]) for r in csv.DictReader(f)] == [0, 0, 1, 1, 2, 2]


def test_live_masks_held_open_at_the_end_neither_fail_the_run_nor_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (Windows: a viewer holds a file of the live masks) the error escaped the worker's
    # end: no worker.json after a good run, and a restart restored them over the result
    import livescope.pipeline._results as results_module

    def held(src: Path, dst: Path) -> None:
        raise PermissionError(13, "being used by another process", str(src))

    w = PipelineWorker(tmp_path, NO_ENGINES)
    _analysed(w, {0: _paint(A, B), 1: _paint(A, B)})
    with monkeypatch.context() as m:
        m.setattr(results_module, "replace_path", held)
        assert w._finish()["ok"] is True
    ctc = tmp_path / "results" / "ctc"
    assert (tmp_path / "results" / "worker.json").is_file()
    assert sorted(p.name for p in ctc.iterdir()) == [".p0.live", "p0"]
    tracks = (ctc / "p0" / "res_track.txt").read_text()
    PipelineWorker(tmp_path, NO_ENGINES, resume=True)._finish()
    assert sorted(p.name for p in ctc.iterdir()) == ["p0"]
    assert (ctc / "p0" / "res_track.txt").read_text() == tracks


def test_a_row_cut_inside_a_character_does_not_stop_the_resume(tmp_path: Path) -> None:
    res = tmp_path / "results"
    _saved_state(res, {"Bühne 1": 0}, {"Bühne 1": 0})
    whole = "position,t,seq,sample_time_s,label,track\nBühne 1,0,0,0.0,1,1\n"
    (res / "cells.csv").write_bytes((whole + "Bühne 1,1,1,0.0,1,1\n").encode()[:-19])  # (in the ü)
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    try:
        assert (res / "cells.csv").read_text(encoding="utf-8") == whole
    finally:
        w._finish(failed=True)
