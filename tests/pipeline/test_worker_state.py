"""The worker's bookkeeping without a run: fields of a plan, resuming after a kill."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from livescope.inference import EngineError, find_engine
from livescope.pipeline import PipelineWorker, WorkerConfig
from livescope.schema import LivescopeError

from ..conftest import run_cli

NO_ENGINES = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)


def _recorded_run(tmp_path: Path, timepoints: int) -> Path:
    """A finished simulated run of one position (Phase + DAPI), no worker attached."""
    from livescope.schema import load_profile
    from livescope.scope import demo_sequence, run_simulated

    prof = load_profile("sim")
    run = tmp_path / "run"
    run_simulated(prof, demo_sequence(prof, timepoints=timepoints, positions=1), run, seed=3)
    return run


def _saved_state(
    res: Path, done: dict[str, int], decided: dict[str, int] | None = None,
    extra_frames: int = 0, sent_at: tuple[float, ...] = (),
) -> None:  # fmt: skip
    """The state a killed worker left in ``res``: state.json, and policy_state.json if
    ``decided`` is given (its guardrails' frames and decision times booked)."""
    res.mkdir(parents=True, exist_ok=True)
    (res / "state.json").write_text(json.dumps(
        {"version": 1, "run_id": "r", "done": done, "counts": {}, "trackers": {},
         "class_cols": []}
    ))  # fmt: skip
    if decided is not None:
        (res / "policy_state.json").write_text(
            json.dumps(
                {
                    "version": 1,
                    "decided": decided,
                    "policy": {
                        "policies": {},
                        "disabled": {},
                        "guardrails": {
                            "dose_s": {},
                            "dose_ch_s": {},
                            "extra_frames": extra_frames,
                            "sent_at": list(sent_at),
                        },
                    },
                }
            )
        )


def test_fields_of_a_plan_that_skips_channels(tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text(
        "stage_positions: [{x: 0, y: 0, name: A}]\n"
        "channels: [{config: Phase}, {config: DAPI, acquire_every: 3}]\n"
        "time_plan: {interval: 60, loops: 4}\n"
    )
    w = PipelineWorker(tmp_path, NO_ENGINES)
    try:
        assert dict(w.expected) == {("A", 0): 2, ("A", 1): 1, ("A", 2): 1, ("A", 3): 2}
    finally:
        w._finish()


def test_a_resumed_worker_drops_what_the_killed_one_half_stored(tmp_path: Path) -> None:
    res = tmp_path / "results"
    # (a close-up's fields, analysed with analyse_added, are keyed by their own name)
    _saved_state(res, {"p0": 4}, {"p0": 5, "p0~r-1": 0}, extra_frames=8, sent_at=(1.0,))
    header = "position,t,seq,sample_time_s,label,track\n"
    rows = "".join(f"p0,{t},{t},0,1,1\n" for t in range(6))
    (res / "cells.csv").write_text(header + rows)
    (res / "latency.jsonl").write_text(
        "".join(json.dumps({"position": "p0", "t": t, "ms": {}}) + "\n" for t in range(6))
    )
    (res / "policy.jsonl").write_text(
        "".join(json.dumps({"position": p, "t": t}) + "\n"
                for p, t in [*(("p0", t) for t in range(6)), ("p0~r-1", 0), ("p0~r-1", 1)])
    )  # fmt: skip
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    try:
        assert w.done == {"p0": 4}
        assert w.decided == {"p0": 5, "p0~r-1": 0}
        assert w.policy.guardrails.extra_frames == 8  # the decisions already sent stay booked
        assert (res / "cells.csv").read_text() == header + "".join(
            f"p0,{t},{t},0,1,1\n" for t in range(5)
        )
        assert [json.loads(x)["t"] for x in (res / "latency.jsonl").read_text().splitlines()] == [
            0,
            1,
            2,
            3,
            4,
        ]
        assert [(r["position"], r["t"]) for r in map(json.loads, (res / "policy.jsonl")
                .read_text().splitlines())] == [  # t 5 was decided; p0~r-1's t 1 was not
            *(("p0", t) for t in range(6)), ("p0~r-1", 0)
        ]  # fmt: skip
    finally:
        w._finish(failed=True)


def test_a_worker_with_no_agent_and_no_recording_says_so(tmp_path: Path) -> None:
    w = PipelineWorker(tmp_path / "nosuchrun" / "run", NO_ENGINES)
    with pytest.raises(LivescopeError, match=r"no agent in .*nosuchrun.run: no bus.json appeared "
                       r"within 0.2 s and the folder holds no run"):  # fmt: skip
        w.run(attach_timeout_s=0.2)
    # a wrong path is left as it was found: nothing made there, no worker.json
    assert list(tmp_path.iterdir()) == []
    assert [t.name for t in threading.enumerate() if t.name.startswith("livescope-")] == []


def test_a_worker_refused_in_an_existing_folder_keeps_what_was_there(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "cells.csv").write_text("earlier\n")
    w = PipelineWorker(tmp_path, NO_ENGINES)
    with pytest.raises(LivescopeError, match="no agent in"):
        w.run(attach_timeout_s=0.1)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "notes.txt", "results", "results/cells.csv"
    ]  # fmt: skip
    assert (tmp_path / "results" / "cells.csv").read_text() == "earlier\n"


def test_worker_cli_on_a_finished_run_says_so_at_once(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")  # a run that has ended: no bus.json
    res = run_cli("worker", str(tmp_path), "--idle-s", "1")  # counting frames only
    assert res.returncode != 0
    assert "has finished: there are no frames to count" in res.stderr
    assert "waiting" not in res.stderr  # (it does not wait 30 s for an agent first)


def test_worker_cli_with_no_agent_fails_after_one_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import livescope.cli._agent as cli_agent
    from livescope.cli._app import app

    monkeypatch.setattr(cli_agent, "ATTACH_WAIT_S", 0.3)
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["worker", str(run), "--analyse", "--json"])
    assert res.exit_code == 2
    assert "no agent in" in res.output
    # no worker made with the shipped profile and no plan, to wait a second time (it
    # waited 60 s, and an agent starting in the second half was analysed without its
    # policies)
    assert "no profile.yaml" not in res.output
    assert not run.exists()


def test_worker_cli_refuses_a_run_folder_under_a_file_at_once(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("")
    run = tmp_path / "notes.txt" / "run"  # no agent can ever make it
    res = run_cli("worker", str(run), "--analyse", "--json")
    assert res.returncode == 2
    assert json.loads(res.stdout)["error"] == (
        f"{run}: {tmp_path / 'notes.txt'} is a file, so no agent can start a run there"
    )
    assert "waiting" not in res.stderr


def test_worker_cli_says_it_waits_for_an_agent(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    (run / "results" / "state.json").write_text("not json")  # stops it at once, once it has said
    res = run_cli("worker", str(run), "--analyse", "--resume", "--json")
    assert res.returncode != 0
    assert f"waiting up to 30 s for an agent to start in {run}" in res.stderr.replace("\n", "")
    assert json.loads(res.stdout)["error"].startswith("cannot read worker state")


def test_an_older_policy_state_never_replaces_a_newer_one(tmp_path: Path) -> None:
    w = PipelineWorker(tmp_path, NO_ENGINES)
    try:
        w._write_policy_state(2, '{"newer": true}')  # written at once when a decision went out
        w._write_policy_state(1, '{"older": true}')  # the store thread, one field behind
        text = (tmp_path / "results" / "policy_state.json").read_text()
        assert json.loads(text) == {"newer": True}
    finally:
        w._finish(failed=True)


def test_busy_wait_counts_the_engines_on_earlier_fields_from_the_camera_on() -> None:
    """A frame that reached the worker late while the engines were busy anyway cost nothing.

    Spans (ns) the engines spent on earlier fields: 0-100 and 150-300. A field whose last
    frame was taken at 50 and analysed from 200 waited 50 + 50 ns behind them.
    """
    from livescope.pipeline._jobs import overlap_ns

    spans = [(0, 100), (150, 300)]
    assert overlap_ns(spans, 50, 200) == 100
    assert overlap_ns(spans, 100, 150) == 0
    assert overlap_ns(spans, 120, 400) == 150
    assert overlap_ns([], 0, 10) == 0


def test_a_changed_model_stops_the_worker_before_its_first_field(tmp_path: Path) -> None:
    # the segmentation engine is first loaded (its model checked) by the warm-up in run()
    engine = tmp_path / "engine"
    shutil.copytree(find_engine("nuclei-unet"), engine)
    with (engine / "model.onnx").open("ab") as f:
        f.write(b"x")
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text("{}")  # the run has ended: nothing to wait for
    cfg = WorkerConfig(segmenter=str(engine), stain=None, states=None, overlay=False)
    w = PipelineWorker(run, cfg)
    with pytest.raises(EngineError, match=r"nuclei-unet: model\.onnx has sha256"):
        w.run(attach_timeout_s=1)
    summary = json.loads((run / "results" / "worker.json").read_text())
    assert summary["ok"] is False
    assert summary.get("fields_analysed", 0) == 0
    assert not (run / "results" / "ready").exists()
    assert [t.name for t in threading.enumerate() if t.name.startswith("livescope-")] == []


def test_the_summary_holds_every_count_even_at_zero(tmp_path: Path) -> None:
    import re

    from livescope.pipeline._worker import WORKER_COUNTS

    summary = PipelineWorker(tmp_path, NO_ENGINES)._finish()
    assert {k: summary[k] for k in WORKER_COUNTS} == dict.fromkeys(WORKER_COUNTS, 0)
    # every count the worker keeps is one of them (a new count is added to the list)
    src = "".join(p.read_text() for p in Path(__file__).parents[2].glob("livescope/pipeline/*.py"))
    assert set(re.findall(r'counts\["(\w+)"\]', src)) <= set(WORKER_COUNTS)


def _worker_with_a_rule(run: Path) -> PipelineWorker:
    (run / "plan.yaml").write_text(
        "stage_positions: [{x: 0, y: 0, name: A}]\n"
        "channels: [{config: Phase}]\ntime_plan: {interval: 60, loops: 4}\n"
        "policies:\n  - {name: closeup, when: {mitosis: {frames: 1}},"
        " do: {acquire: {channels: [Phase], loops: 2, interval_s: 30}}}\n"
    )
    return PipelineWorker(run, NO_ENGINES)


def test_the_store_is_held_off_while_any_handed_field_is_undecided(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = _worker_with_a_rule(tmp_path)
    go = threading.Event()
    decided: list[int] = []

    def decide(job: object) -> None:  # the second field's decisions fail
        go.wait(5)
        decided.append(len(decided))
        if len(decided) == 2:
            raise RuntimeError("a policy bug")

    monkeypatch.setattr(w, "_decide", decide)
    try:
        for t in range(3):  # as _analyse_field hands fields on
            with w._deciding_lock:
                w._deciding += 1
                w._decide_free.clear()
            w._decide_q.put(SimpleNamespace(fld=SimpleNamespace(position="A", t=t)))  # type: ignore[arg-type]
        assert not w._decide_free.wait(0.1)  # three handed on, none decided: held off
        go.set()
        assert w._decide_free.wait(5)  # all three done, the failed one included
        assert decided == [0, 1]  # the worker is failing: the third is not decided
        assert w._deciding == 0
        assert isinstance(w._decide_error, RuntimeError)
    finally:
        w._finish(failed=True)


def test_a_failed_rehearsal_is_not_the_runs_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = _worker_with_a_rule(tmp_path)
    calls: list[object] = []

    def broken(obs: object) -> int:
        calls.append(obs)
        raise RuntimeError("rehearsal bug")

    monkeypatch.setattr(w.policy, "rehearse", broken)
    try:
        w._rehearse_decisions()  # logged, not raised
        assert len(calls) == 1
    finally:
        w._finish(failed=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")
def test_the_engines_own_thread_pools_compute_as_bulk_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime's intra-op pool (a session of 2 threads) joins the idle class with the engines.

    The pool starts when the engines load and warm up, at the worker's normal
    priority, and its threads inherit it: they would compute beside the
    acquisition at the agent's priority for the whole run.
    """
    from livescope.schema import native_thread_ids

    monkeypatch.setenv("LIVESCOPE_THREADS", "2")
    monkeypatch.delenv("LIVESCOPE_BULK_PRIORITY", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text("{}")  # the run has ended: nothing to wait for
    before = native_thread_ids()
    cfg = WorkerConfig(segmenter="nuclei-unet", stain=None, states="cell-state", overlay=False,
                       engine_nice=5)  # fmt: skip
    w = PipelineWorker(run, cfg)
    seen: dict[int, int] = {}

    def look() -> None:  # after the warm-up, while the engines are open
        ours = {t.native_id for t in threading.enumerate()}
        for tid in native_thread_ids() - before - ours:
            seen[tid] = os.sched_getscheduler(tid)

    monkeypatch.setattr(w, "_catch_up_all", look)
    w.run(attach_timeout_s=1)
    assert seen, "no engine pool thread started (a session of 2 threads has one)"
    assert set(seen.values()) == {os.SCHED_IDLE}
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the caller keeps its class


def test_a_store_error_on_the_last_field_fails_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a full disk while the run's last field is stored: the worker must not exit as if
    # every field's results were written (its summary said ok: false, its exit code 0)
    run = _recorded_run(tmp_path, timepoints=2)
    w = PipelineWorker(run, NO_ENGINES)
    real_store = w.store.store
    stored: list[int] = []

    def store(fld, *args, **kwargs):  # type: ignore[no-untyped-def]
        if fld.t == 1:
            raise OSError(28, "No space left on device")
        stored.append(fld.t)
        return real_store(fld, *args, **kwargs)

    monkeypatch.setattr(w.store, "store", store)
    with pytest.raises(LivescopeError, match=r"storing results failed: .*No space left"):
        w.run(attach_timeout_s=0.1)
    assert stored == [0]
    assert json.loads((run / "results" / "worker.json").read_text())["ok"] is False


def test_a_resumed_worker_drops_lines_the_killed_one_cut_short(tmp_path: Path) -> None:
    # killed (or the disk full) mid-write: each restart crashed on the torn line
    res = tmp_path / "results"
    _saved_state(res, {"p0": 1}, {"p0": 1})
    header = "position,t,seq,sample_time_s,label,track\n"
    (res / "cells.csv").write_text(header + "p0,0,0,0,1,1\np0,1,1,0,1,1\np0,1")  # (of p0,12)
    lines = [json.dumps({"position": "p0", "t": t, "ms": {}}) + "\n" for t in range(2)]
    (res / "latency.jsonl").write_text("".join(lines) + '{"position": "p0", "t": 2, "m')
    (res / "policy.jsonl").write_text('{"position": "p0", "t": 0}\n{"posi')
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    try:
        assert (res / "cells.csv").read_text() == header + "p0,0,0,0,1,1\np0,1,1,0,1,1\n"
        assert [json.loads(x)["t"] for x in (res / "latency.jsonl").read_text().splitlines()] == [
            0, 1,
        ]  # fmt: skip
        assert [json.loads(x) for x in (res / "policy.jsonl").read_text().splitlines()] == [
            {"position": "p0", "t": 0}
        ]
    finally:
        w._finish(failed=True)


def test_recorded_fields_with_unreadable_frames_are_counted(tmp_path: Path) -> None:
    # a field none of whose frames can be read was skipped with only a warning per frame;
    # one read in part was analysed as if whole
    run = _recorded_run(tmp_path, timepoints=2)
    chunks = run / "data.ome.zarr" / "0" / "0" / "c"  # (t, c, z, y, x)
    (chunks / "0" / "1" / "0" / "0" / "0").write_bytes(b"\x00" * 64)  # t=0: DAPI
    for c in ("0", "1"):  # t=1: both channels
        (chunks / "1" / c / "0" / "0" / "0").write_bytes(b"\x00" * 64)
    summary = PipelineWorker(run, NO_ENGINES).run(attach_timeout_s=0.1)
    assert summary["ok"] is True
    assert summary["fields_analysed"] == 1
    assert summary["fields_incomplete"] == 1
    assert summary["fields_unreadable"] == 1


def test_a_worker_killed_while_rewriting_its_tracks_resumes_from_the_live_masks(
    tmp_path: Path,
) -> None:
    # killed after the CTC result was swapped in, before its state was saved: the
    # resumed worker must not read relabelled masks as track ids
    res = tmp_path / "results"
    ctc = res / "ctc"
    for name, text in (("p0", "relabelled"), (".p0.live", "live"), (".p1.new", "half")):
        (ctc / name).mkdir(parents=True)
        (ctc / name / "mask000.tif").write_text(text)
    _saved_state(res, {"p0": 0})
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    try:
        assert sorted(p.name for p in ctc.iterdir()) == ["p0"]
        assert (ctc / "p0" / "mask000.tif").read_text() == "live"
    finally:
        w._finish(failed=True)


def test_each_fields_saved_state_holds_the_counts_its_storing_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the state saved after a field was taken when it was decided, before the store
    # thread counted what storing it added (then its rule firings; now, since those are
    # counted as they are logged on the decision thread, its overlay errors): a restart
    # from it lost them
    run = _recorded_run(tmp_path, timepoints=3)
    w = PipelineWorker(run, NO_ENGINES)
    real_store, real_save = w.store.store, w._save_state
    saved: list[int] = []

    def store(*args, **kwargs):  # type: ignore[no-untyped-def]
        w.counts["overlay_errors"] += 1  # as a field whose overlay could not be published
        return real_store(*args, **kwargs)

    def save(state=None, **kw):  # type: ignore[no-untyped-def]
        if state is not None:  # (each field's; the run's end saves its own)
            saved.append(state["counts"].get("overlay_errors", 0))
        real_save(state, **kw)

    monkeypatch.setattr(w.store, "store", store)
    monkeypatch.setattr(w, "_save_state", save)
    w.run(attach_timeout_s=0.1)
    assert saved == [1, 2, 3]


def test_a_ctc_result_that_cannot_be_written_is_counted_and_the_live_ids_kept(
    tmp_path: Path,
) -> None:
    # a damaged live mask (or a file held open on Windows) used to fail the finished run
    from livescope.tracking import OnlineTracker

    w = PipelineWorker(tmp_path, NO_ENGINES)
    w.analyzer.trackers["p0"] = OnlineTracker()
    folder = tmp_path / "results" / "ctc" / "p0"
    folder.mkdir(parents=True)
    (folder / "mask000.tif").write_bytes(b"II*\x00" + b"\x00" * 12)  # a TIFF cut short
    summary = w._finish()
    assert summary["ctc_results_not_written"] == 1
    assert sorted(p.name for p in folder.parent.iterdir()) == ["p0"]  # nothing staged left
    assert sorted(p.name for p in folder.iterdir()) == ["mask000.tif"]  # the live ids


def test_a_field_whose_last_frame_the_bus_lost_waits_for_the_recorder(tmp_path: Path) -> None:
    # t=0's DAPI frame (seq 1) was lost on the bus and the recorder has not logged it yet;
    # the next field's first frame (seq 2) came: the log is behind until it reaches seq 1
    # (before, the wait was bounded by the last frame received, seq 0, already logged)
    import dataclasses

    import numpy as np

    from livescope.pipeline._jobs import Field

    run = _recorded_run(tmp_path, timepoints=2)
    log = run / "frames.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0])  # the recorder has logged seq 0 only
    (run / "summary.json").rename(run / "summary.later")  # the run goes on
    phase = np.zeros((8, 8), np.uint16)
    fld = Field("p0", 0, {("Phase", 0): phase}, json.loads(lines[0]), 0, next_seq=2)
    w = PipelineWorker(run, dataclasses.replace(NO_ENGINES, recording_wait_s=0.2))
    catch_up = threading.Timer(1.0, lambda: log.write_text("".join(lines)))
    catch_up.start()
    try:
        w._complete(fld)
    finally:
        catch_up.cancel()
        w._finish(failed=True)
    assert set(fld.frames) == {("Phase", 0), ("DAPI", 0)}
    assert w.counts["frames_completed_from_recording"] == 1
    assert w.counts["fields_incomplete"] == 0


def test_a_z_stack_field_completed_from_the_recording_is_placed_at_its_middle(
    tmp_path: Path,
) -> None:
    # the bus brought one plane; the others are read from the recording, with their z
    import numpy as np
    import useq

    from livescope.pipeline._jobs import Field
    from livescope.schema import load_profile
    from livescope.scope import demo_sequence, run_simulated

    prof = load_profile("sim")
    run = tmp_path / "run"
    seq = demo_sequence(prof, timepoints=1, positions=1)
    seq = seq.model_copy(update={"z_plan": useq.ZRangeAround(range=4.0, step=2.0)})
    run_simulated(prof, seq, run, seed=3)
    frames = [json.loads(line) for line in (run / "frames.jsonl").read_text().splitlines()]
    zs = sorted({f["z_um"] for f in frames})
    assert len(zs) == 3  # three planes, 2 µm apart
    first = frames[0]
    fld = Field("p0", 0, {(first["channel"], 0): np.zeros((8, 8), np.uint16)}, first, 0)
    fld.note(first)
    w = PipelineWorker(run, NO_ENGINES)
    try:
        w._complete(fld)
    finally:
        w._finish(failed=True)
    assert len(fld.frames) == len(frames)
    assert sorted(fld.z_um.values()) == zs
    assert fld.z_centre_um() == zs[1]


def test_the_worker_says_when_its_analysis_falls_behind(caplog: pytest.LogCaptureFixture) -> None:
    from livescope.pipeline._worker import Behind

    behind = Behind(warn_s=10)
    with caplog.at_level("WARNING", logger="livescope"):
        for t, wait_s in enumerate([0.2, 4.0, 12.0, 15.0, 19.0, 25.0, 3.0]):
            behind.note("p0", t, wait_s)
    warned = [r.getMessage() for r in caplog.records if "behind the acquisition" in r.getMessage()]
    # at 10 s, then only once the wait has doubled (24 s): not a line per field
    assert len(warned) == 2, warned
    assert "12 s behind the acquisition (field p0 t=2)" in warned[0]
    assert "25 s behind the acquisition (field p0 t=5)" in warned[1]


def test_a_run_that_ends_as_the_worker_attaches_is_analysed_from_its_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bus.json was there when the worker looked, then the agent ended (it removes bus.json,
    # closes the bus, then writes summary.json): attaching failed, and the worker with it,
    # the whole recording left unanalysed
    from livescope.bus import BUS_FILE, BusInfo
    from livescope.pipeline import _worker

    run = _recorded_run(tmp_path, timepoints=2)
    BusInfo(run_id="r", frames="tcp://127.0.0.1:1", control="tcp://127.0.0.1:1",
            decisions="tcp://127.0.0.1:1", mode="inline").write(run)  # fmt: skip
    (run / "summary.json").rename(run / "summary.later")
    real_attach = _worker.attach

    def attach_as_the_run_ends(*args: object, **kwargs: object) -> object:
        (run / BUS_FILE).unlink()
        threading.Timer(0.3, (run / "summary.later").rename, [run / "summary.json"]).start()
        return real_attach(*args, **kwargs)

    monkeypatch.setattr(_worker, "attach", attach_as_the_run_ends)
    summary = PipelineWorker(run, NO_ENGINES).run(attach_timeout_s=1)
    assert summary["fields_analysed"] == 2


def test_a_worker_on_a_finished_run_names_its_run(tmp_path: Path) -> None:
    # a worker that analysed a run after it ended (no bus to learn the id from) wrote
    # "run_id": "" into its summary, its policy log's observations and its state
    run = _recorded_run(tmp_path, timepoints=1)
    summary = PipelineWorker(run, NO_ENGINES).run(attach_timeout_s=1)
    recorded = json.loads((run / "summary.json").read_text())["run_id"]
    assert recorded
    assert summary["run_id"] == recorded


def test_a_field_binned_by_channel_is_analysed_at_its_segmented_frames_pixel_size(
    tmp_path: Path,
) -> None:
    # a preset may bin its channel (a dim fluorescence at 2x2): the field's pixel size was
    # its last frame's (the phase's, half the DAPI's), which scaled the segmentation and
    # placed the DAPI cells on the stage by half their distance
    import numpy as np

    from livescope.pipeline._jobs import Field

    run = _recorded_run(tmp_path, timepoints=1)
    dapi = {"seq": 0, "position": "p0", "channel": "DAPI", "index": {"t": 0}, "pixel_size_um": 1.3}
    phase = {**dapi, "seq": 1, "channel": "Phase", "pixel_size_um": 0.65}
    frames = {("DAPI", 0): np.zeros((8, 8), np.uint16), ("Phase", 0): np.zeros((16, 16), np.uint16)}
    fld = Field("p0", 0, frames, phase, 0)
    fld.note(dapi)
    fld.note(phase)
    w = PipelineWorker(run, NO_ENGINES)
    try:
        w._analyse_field(fld)
        job = w._decide_q.get_nowait()
    finally:
        w._finish(failed=True)
    assert job.pixel_size_um == 1.3
    assert fld.pixel_size_um("Phase") == 0.65
    assert fld.pixel_size_um("Brightfield") == 0.65  # (a channel without one: the header's)


def test_a_live_field_analysed_already_is_not_completed_from_the_recording(
    tmp_path: Path,
) -> None:
    # its lost frames were read back from disk for nothing (waiting for the recorder), then
    # counted as received and already analysed: the received frames' counts did not add up
    import numpy as np

    from livescope.pipeline._jobs import Field

    run = _recorded_run(tmp_path, timepoints=1)
    first = json.loads((run / "frames.jsonl").read_text().splitlines()[0])
    fld = Field("p0", 0, {(first["channel"], 0): np.zeros((8, 8), np.uint16)}, first, 0)
    w = PipelineWorker(run, NO_ENGINES)
    w.done["p0"] = 0  # (analysed from the recording while its frames were on their way)
    try:
        w._process(fld)
    finally:
        w._finish(failed=True)
    assert w.counts["frames_already_analysed"] == 1
    assert w.counts["frames_completed_from_recording"] == 0
    assert len(fld.frames) == 1
