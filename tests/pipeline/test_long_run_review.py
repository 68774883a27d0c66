"""Long runs, after an independent review: what the worker and the policies keep per field
must not grow with the run (a 72-hour plate is 10,000s of fields, 100,000s of frames)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livescope.pipeline import PipelineWorker, WorkerConfig
from livescope.policy import PolicyEngine, _triggers
from livescope.tracking import OnlineTracker, TrackerSnapshot
from livescope.tracking._objects import ObjectTable

from ..policy.test_triggers_review import engine, field

# (read so: before the horizon existed these tests failed on what was kept, not on an import)
FORGET_AFTER_T: int = getattr(_triggers, "FORGET_AFTER_T", 100)
NO_ENGINES = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)

# each a rule whose trigger remembers cells; a cell meets it on every field it is seen
RULES = {
    "mitosis": ({"name": "r", "when": {"mitosis": {"frames": 2}}, "do": {"record": {}}}, "fired"),
    "feature": (
        {
            "name": "r",
            "when": {"feature": {"feature": "p_mitosis", "above": 0.8}},
            "do": {"record": {}},
        },
        "high",
    ),
    "enter_region": (
        {"name": "r", "when": {"enter_region": {"region": [0, 0, 512, 512]}}, "do": {"record": {}}},
        "inside",
    ),
}


def _remembered(eng: PolicyEngine, key: str) -> list[str]:
    return list(eng.state()["policies"]["r"]["trigger"][key])


def _lost_cells(eng: PolicyEngine, fields: int, *, start: int = 0) -> None:
    """Each field: one cell (track t + 1), in mitosis, seen on 2 fields, then lost for good."""
    for t in range(start, start + fields):
        tracks = [t, t + 1] if t else [1]
        eng.evaluate(field(t, tracks, [0.9] * len(tracks), [0] * len(tracks)))


@pytest.mark.parametrize("kind", list(RULES))
def test_a_trigger_forgets_cells_whose_tracks_ended_without_dividing(kind: str) -> None:
    # a track that ends without dividing (the cell died or left the field, a tracking
    # break) is in no field's divisions: what the trigger remembered of it was kept for
    # the whole run, in the policies' state written after every field
    rule, key = RULES[kind]
    eng = engine(rule)
    n = FORGET_AFTER_T + 60
    _lost_cells(eng, n)
    kept = _remembered(eng, key)
    assert kept, "the cells of the last fields are remembered"
    assert "p0/1" not in kept  # lost on field 2, 60 fields longer ago than the horizon
    assert len(kept) <= FORGET_AFTER_T + 2  # (not one per field of the run: n)
    # and through a restart, as a restarted worker gets it
    again = engine(rule)
    again.restore(json.loads(json.dumps(eng.state())))
    _lost_cells(again, FORGET_AFTER_T + 40, start=n)
    assert len(_remembered(again, key)) <= FORGET_AFTER_T + 2


@pytest.mark.parametrize("kind", list(RULES))
def test_cells_of_a_restored_state_are_forgotten_once_gone_after_the_restart(
    kind: str,
) -> None:
    rule, key = RULES[kind]
    eng = engine(rule)
    _lost_cells(eng, 30)
    state = json.loads(json.dumps(eng.state()))
    again = engine(rule)
    again.restore(state)
    assert "p0/1" in _remembered(again, key)
    _lost_cells(again, FORGET_AFTER_T + 5, start=30)
    assert "p0/1" not in _remembered(again, key)


def test_a_cell_back_after_a_gap_is_still_remembered() -> None:
    # the tracker closes gaps of a few fields: a mitosis fired on does not fire again
    eng = engine(RULES["mitosis"][0])
    fired = [v.firing.track for t in range(3) for v in eng.evaluate(field(t, [1], [0.9], [0]))]
    for t in range(3, 8):  # (other cells only)
        eng.evaluate(field(t, [2], [0.1], [0]))
    fired += [v.firing.track for v in eng.evaluate(field(8, [1, 2], [0.9, 0.1], [0, 0]))]
    assert fired == [1]


def _snapshot(seed: int) -> TrackerSnapshot:
    rng = np.random.default_rng(seed)
    tracker = OnlineTracker()
    for t in range(3):
        centroids = rng.uniform(20, 480, (20, 2))
        tracker.update(ObjectTable(np.arange(1, 21), centroids, np.full(20, 80.0),
                                   shape=(512, 512)), t)  # fmt: skip
    return tracker.snapshot()


def test_each_fields_state_makes_only_the_changed_trackers_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a field changes its own position's tracker; every position's was made into JSON
    # again for each field's state.json (96 positions: 1-2 s a field after 10,000)
    w = PipelineWorker(tmp_path, NO_ENGINES)
    try:
        snaps = {f"p{i}": _snapshot(i) for i in range(4)}
        made: list[int] = []
        real = TrackerSnapshot.state

        def state(self: TrackerSnapshot, **kw: Any) -> dict[str, Any]:
            made.append(id(self))
            return real(self, **kw)

        monkeypatch.setattr(TrackerSnapshot, "state", state)
        w._tracker_states.update(snaps)
        w._decided_done.update(dict.fromkeys(snaps, 2))
        w._save_state(w._snapshot())
        assert len(made) == 4
        snaps["p2"] = w._tracker_states["p2"] = _snapshot(10)  # p2's next field
        w._save_state(w._snapshot())
        assert made[4:] == [id(snaps["p2"])]
        saved = json.loads((w.results / "state.json").read_text())
        assert saved["trackers"] == {p: real(s) for p, s in snaps.items()}
        assert saved["done"] == dict.fromkeys(snaps, 2)
        assert "class_cols" in saved
    finally:
        w._finish(failed=True)
    monkeypatch.undo()
    again = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    try:
        assert again.analyzer.trackers["p2"].state() == real(snaps["p2"])
    finally:
        again._finish(failed=True)


def test_the_frame_log_of_fields_analysed_is_not_kept(tmp_path: Path) -> None:
    # once a lost frame had the worker read the log, every frame's entry (~4 kB parsed)
    # was kept for the rest of the run: ~1 GB for a 72-hour plate's 250,000 frames
    from livescope.schema import load_profile
    from livescope.scope import demo_sequence, run_simulated

    prof = load_profile("sim")
    run = tmp_path / "run"
    run_simulated(prof, demo_sequence(prof, timepoints=3, positions=2), run, seed=3)
    w = PipelineWorker(run, NO_ENGINES)
    summary = w.run(attach_timeout_s=0.1)
    assert summary["fields_analysed"] == 6
    assert dict(w.recorded.logged()) == {}
    # lines of analysed fields read later (the recorder behind the bus) are not kept
    with (run / "frames.jsonl").open("a", encoding="utf-8") as f:
        line = (run / "frames.jsonl").read_text(encoding="utf-8").splitlines()[0]
        f.write(line + "\n")
    assert dict(w.recorded.logged()) == {}


def test_the_recorder_does_not_keep_a_folder_per_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each frame has its own chunk folder: remembering every one made was ~1 MB a
    # position of a 72-hour time-lapse in the agent (96 MB for a 96-well plate)
    from livescope.record import OmeZarrWriter, _zarr, read_frames
    from livescope.schema import FrameInfo

    monkeypatch.setattr(_zarr, "_DIRS_KEPT", 8, raising=False)
    n = 30
    with OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=0.65) as w:
        for t in range(n):
            info = FrameInfo(
                seq=t, index={"t": t, "p": 0}, position="p0", channel="BF", x_um=0.0,
                y_um=0.0, z_um=0.0, exposure_ms=10.0, pixel_size_um=0.65,
                sample_time_s=float(t), runner_time_ms=0.0, shape=(2, 2), dtype="uint16",
                event={},
            )  # fmt: skip
            w.write(np.full((2, 2), t, np.uint16), info)
        assert 0 < len(w._series["p0"]._dirs) <= 8
    assert [f["seq"] for f in read_frames(tmp_path)] == list(range(n))


def test_a_restarted_worker_trims_a_long_runs_cells_table_row_by_row(tmp_path: Path) -> None:
    # the table was read whole, as rows of strings: ~1 kB of memory a row at a restart
    # (1.3 GB for a million rows; 3 GB after 10,000 fields of 300 cells)
    import csv
    import tracemalloc

    from livescope.pipeline._results import trim_results

    head = ["position", "t", "track", "state", "p_mitosis"]
    rows = [[f"p{i % 2}", str(i // 2), str(i % 7 + 1), "intérphase", "0.05"] for i in range(20000)]
    res = tmp_path / "results"
    res.mkdir()
    with (res / "cells.csv").open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([head, *rows])
    with (res / "cells.csv").open("ab") as f:  # cut short inside a character: not stored
        f.write("p0,9999,1,int\u00e9".encode()[:-1])
    size = (res / "cells.csv").stat().st_size
    done = {"p0": 9998, "p1": 9990}
    tracemalloc.start()
    try:
        trim_results(res, done, {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    with (res / "cells.csv").open(encoding="utf-8", newline="") as f:
        got = list(csv.reader(f))
    assert got == [head, *(r for r in rows if int(r[1]) <= done[r[0]])]
    assert peak < 2 * size  # (the rows kept, ~250 kB of buffers; read whole: ~20 times)
    assert [p.name for p in res.iterdir()] == ["cells.csv"]  # (no file left beside it)


def test_a_cells_table_left_with_no_row_is_emptied(tmp_path: Path) -> None:
    from livescope.pipeline._results import trim_results

    res = tmp_path / "results"
    res.mkdir()
    (res / "cells.csv").write_text("position,t\r\np0,3\r\n", encoding="utf-8")
    trim_results(res, {"p0": 2}, {})
    assert (res / "cells.csv").read_text(encoding="utf-8") == ""
