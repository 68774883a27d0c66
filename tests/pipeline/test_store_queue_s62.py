"""A store slower than the analysis: the fields not yet stored stay bounded, none is lost."""

from __future__ import annotations

import csv
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import livescope.pipeline._worker as worker_module
from livescope.pipeline import PipelineWorker
from livescope.schema import LivescopeError

from .test_state_growth_s61 import NO_ENGINES, _recorded_run, _segmenting

TIMEPOINTS = 10
FIELDS = 2 * TIMEPOINTS  # (two positions)
BOUND = 8_000_000
"""The test's bound (bytes): ~2 MB a field (two 512² uint16 frames, int32 labels)."""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _recorded_run(tmp_path_factory.mktemp("store_queue"), timepoints=TIMEPOINTS)


def _bytes(job: Any) -> int:
    """The frames and labels of a queued job's field (arrays the worker counts too)."""
    arrays = {id(a): a for a in job.fld.frames.values()}
    if job.res.labels is not None:
        arrays[id(job.res.labels)] = job.res.labels
    return sum(a.nbytes for a in arrays.values())


class _SlowStore:
    """A store whose writes wait on ``gate``, opened when the analysis first waits for it.

    (Or once every field is analysed: a worker that never waits, as before the
    bound, ends too.) Records, as each field's analysis starts, the fields
    handed on and not yet stored that the queues (and the blocked store) hold.
    """

    def __init__(self, w: PipelineWorker, monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
        self.w, self.fail = w, fail
        self.gate = threading.Event()
        self.in_store: Any = None
        self.analysed = 0
        self.unstored: list[tuple[int, int]] = []  # (fields, bytes) as each analysis started
        real_store = w.store.store
        real_analyse = w.analyzer.analyse

        def store(fld: Any, res: Any, obs: Any) -> None:
            self.in_store = type("Job", (), {"fld": fld, "res": res})
            assert self.gate.wait(60), "never released"
            if self.fail:
                raise OSError("disk gone")
            real_store(fld, res, obs)
            self.in_store = None

        def analyse(**kw: Any) -> Any:
            jobs = []
            for q in (self.w._decide_q, self.w._store_q):
                with q.mutex:
                    jobs += [j for j in q.queue if j is not None]
            if self.in_store is not None:
                jobs.append(self.in_store)
            self.unstored.append((len(jobs), sum(_bytes(j) for j in jobs)))
            self.analysed += 1
            if self.analysed == FIELDS:
                self.gate.set()
            return real_analyse(**kw)

        monkeypatch.setattr(w.store, "store", store)
        monkeypatch.setattr(w.analyzer, "analyse", analyse)

    def emit(self, record: logging.LogRecord) -> None:
        if "MAX_UNSTORED_BYTES" in record.getMessage():
            self.gate.set()


def _run_slow(
    run: Path, monkeypatch: pytest.MonkeyPatch, *, fail: bool = False
) -> tuple[_SlowStore, dict[str, Any] | BaseException, list[str]]:
    """Run a worker over ``run`` with its store held up; return it, its result and warnings."""
    w = PipelineWorker(run, NO_ENGINES)
    _segmenting(w.analyzer)
    w.max_unstored_bytes = BOUND
    slow = _SlowStore(w, monkeypatch, fail)
    warnings: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())
            slow.emit(record)

    handler = Handler()
    log = logging.getLogger("livescope")
    log.addHandler(handler)
    out: list[dict[str, Any] | BaseException] = []

    def target() -> None:
        try:
            out.append(w.run(attach_timeout_s=0.1))
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    try:
        thread.start()
        thread.join(120)
    finally:
        slow.gate.set()  # (a worker that hung: let it end)
        log.removeHandler(handler)
    assert not thread.is_alive(), "the worker hung"
    return slow, out[0], warnings


def test_a_slow_store_holds_the_analysis_back_and_every_field_is_stored(
    recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    shutil.copytree(recorded, run)
    slow, summary, warnings = _run_slow(run, monkeypatch)
    assert isinstance(summary, dict), summary
    # the fields handed on and not stored never held more than the bound (the queues grew
    # with every field analysed while the store was held up: 19 fields, ~40 MB)
    assert slow.analysed == FIELDS
    most = max(slow.unstored, key=lambda u: u[1])
    assert most[1] <= BOUND, (most, slow.unstored)
    # said once, naming the results folder and the bound
    said = [m for m in warnings if "MAX_UNSTORED_BYTES" in m]
    assert len(said) == 1, warnings
    assert str(run / "results") in said[0]
    assert f"{BOUND / 1e6:.0f} MB" in said[0]
    # ... and none is lost: every field stored, its cells in cells.csv, its latency logged
    assert summary["ok"]
    assert summary["fields_analysed"] == FIELDS
    res = run / "results"
    with (res / "cells.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["position"], int(r["t"])) for r in rows} == {
        (p, t) for p in ("p0", "p1") for t in range(TIMEPOINTS)
    }
    assert len((res / "latency.jsonl").read_text().splitlines()) == FIELDS
    for pos in ("p0", "p1"):
        masks = sorted((res / "ctc" / pos).glob("mask*.tif"))
        assert len(masks) == TIMEPOINTS, masks


def test_a_store_failing_while_the_analysis_waits_fails_the_worker(
    recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    shutil.copytree(recorded, run)
    slow, error, _ = _run_slow(run, monkeypatch, fail=True)
    assert isinstance(error, LivescopeError), error
    assert "storing results failed: disk gone" in str(error)
    assert slow.analysed < FIELDS  # (it stopped, as on any store failure)
    summary = (run / "results" / "worker.json").read_text()
    assert '"ok": false' in summary


def test_held_bytes_counts_each_array_once() -> None:
    frame = np.zeros((512, 512), np.uint16)
    labels = np.zeros((512, 512), np.int32)
    fld = worker_module.Field("p0", 0, {("DAPI", 0): frame}, {}, 0)
    fld.analysed["DAPI"] = frame[:]  # (a view of the frame: its memory once)
    res = worker_module.FrameResult("p0", 0, labels=labels)
    assert worker_module._held_bytes(fld, res) == frame.nbytes + labels.nbytes
    res.stain = np.zeros((512, 512), np.float32)
    assert worker_module._held_bytes(fld, res) == frame.nbytes + labels.nbytes + 512 * 512 * 4
