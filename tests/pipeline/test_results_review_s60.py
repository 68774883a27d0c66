"""A worker killed before its first state save; the CTC result's labels mapped back to tracks.

Fields go through the worker's own decision and store threads with label images painted
here, as in `tests.pipeline.test_worker_results`: no engine runs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.pipeline import PipelineWorker
from livescope.record import read_ctc, rewrite_ctc_result
from livescope.schema import LivescopeError
from tests.pipeline.test_worker_results import NO_ENGINES, A, B, C, _analysed, _paint

HEADER = "position,t,seq,sample_time_s,label,track\n"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _killed_before_saving(res: Path) -> None:
    """What a worker killed while storing its first field left: its rows, no state at all."""
    res.mkdir(parents=True)
    # (its second row cut short by the kill)
    (res / "cells.csv").write_text(HEADER + "p0,0,0,0,1,1\np0,0,0,0,2,2\np0,0,0,")
    (res / "latency.jsonl").write_text(json.dumps({"position": "p0", "t": 0, "ms": {}}) + "\n")
    (res / "policy.jsonl").write_text(json.dumps({"position": "p0", "t": 0}) + "\n")
    (res / "revisions.jsonl").write_text(
        json.dumps({"position": "p0", "t": 0, "old": 2, "new": 3, "first": 0, "last": 0}) + "\n"
    )


def test_a_resume_with_no_saved_state_drops_the_rows_the_killed_worker_stored(
    tmp_path: Path,
) -> None:
    # killed after storing its first field's rows, before any state.json or
    # policy_state.json: the rows stayed and the field was analysed and appended again
    res = tmp_path / "results"
    _killed_before_saving(res)
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    try:
        assert w.done == {}
        assert _rows(res / "cells.csv") == []
        for name in ("latency.jsonl", "policy.jsonl", "revisions.jsonl"):
            assert (res / name).read_text() == "", name
    finally:
        w._finish(failed=True)


def test_a_fresh_start_leaves_the_results_it_finds_as_they_were(tmp_path: Path) -> None:
    res = tmp_path / "results"
    _killed_before_saving(res)
    before = {p.name: p.read_bytes() for p in res.iterdir()}
    # (refused since session 63, naming what to do: a second analysis appended its rows to
    # the first's)
    with pytest.raises(LivescopeError, match="already holds an analysis"):
        PipelineWorker(tmp_path, NO_ENGINES)
    assert {p.name: p.read_bytes() for p in res.iterdir()} == before


def test_a_field_stored_before_the_first_state_save_is_in_the_results_once(
    tmp_path: Path,
) -> None:
    res = tmp_path / "results"
    w = PipelineWorker(tmp_path, NO_ENGINES)
    _analysed(w, {0: _paint(A, B)})
    w._finish(failed=True)  # (no state saved: as killed once the field was stored)
    for name in ("state.json", "policy_state.json"):
        (res / name).unlink(missing_ok=True)
    assert [r["t"] for r in _rows(res / "cells.csv")] == ["0", "0"]
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    _analysed(w, {0: _paint(A, B), 1: _paint(A, B)})  # (the field is analysed again)
    assert w._finish()["ok"] is True
    assert (res / "cells.csv").read_text().count("position,") == 1  # one header
    assert [(r["t"], r["track"]) for r in _rows(res / "cells.csv")] == [
        ("0", "1"), ("0", "2"), ("1", "1"), ("1", "2"),
    ]  # fmt: skip
    lines = (res / "latency.jsonl").read_text().splitlines()
    assert [json.loads(x)["t"] for x in lines] == [0, 1]


def _labels(folder: Path) -> dict[int, dict[str, int]]:
    return {int(r["label"]): {k: int(v) for k, v in r.items()} for r in _rows(folder)}


def test_the_ctc_result_has_a_table_of_its_labels_track_ids(tmp_path: Path) -> None:
    # CTC renumbers the tracks (by first frame; B, missed at t=2, goes on as a new track):
    # nothing mapped its labels back to cells.csv's track ids
    w = PipelineWorker(tmp_path, NO_ENGINES)
    frames = {0: _paint(A, B), 1: _paint(C, A, B), 2: _paint(C, A), 3: _paint(C, A, B)}
    _analysed(w, frames)
    assert w._finish()["ok"] is True
    res = tmp_path / "results"
    folder = res / "ctc" / "p0"
    masks, tracks = read_ctc(folder)  # (still a valid CTC result: the table is ignored)
    table = _labels(folder / "labels.csv")
    assert (folder / "labels.csv").read_text().startswith("label,track,begin,end\n")
    assert [(t.label, t.begin, t.end) for t in tracks] == [
        (r["label"], r["begin"], r["end"]) for r in table.values()
    ]
    moved = 0
    for row in _rows(res / "cells.csv"):
        t, track = int(row["t"]), int(row["track"])
        label = int(masks[t][round(float(row["y"])), round(float(row["x"]))])
        assert table[label]["track"] == track, row
        assert table[label]["begin"] <= t <= table[label]["end"]
        moved += label != track
    assert moved  # (a table of labels equal to the ids would show nothing)


def test_rewrite_ctc_result_writes_the_table_of_its_labels_when_asked(tmp_path: Path) -> None:
    # ids 9 (missed at t=1) and 4 (a daughter of 9 from t=2): labels by first frame
    live = tmp_path / "live"
    live.mkdir()
    for t, ids in enumerate([[9], [4], [9, 4]]):
        frame = np.zeros((8, 8), np.uint16)
        for k, i in enumerate(ids):
            frame[k, 0] = i
        tifffile.imwrite(live / f"mask{t:03d}.tif", frame)
    tracks = rewrite_ctc_result(live, {4: 9}, out=tmp_path / "res", labels_csv=tmp_path / "l.csv")
    assert [(t.label, t.begin, t.end) for t in tracks] == [(1, 0, 0), (2, 1, 2), (3, 2, 2)]
    assert (tmp_path / "l.csv").read_text() == "label,track,begin,end\n1,9,0,0\n2,4,1,2\n3,9,2,2\n"
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == [
        "mask000.tif", "mask001.tif", "mask002.tif", "res_track.txt",
    ]  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    assert rewrite_ctc_result(empty, {}, labels_csv=empty / "labels.csv") == []
    assert (empty / "labels.csv").read_text() == "label,track,begin,end\n"
