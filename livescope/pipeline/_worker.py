"""The pipeline worker: frames in from the bus, results, overlay and decisions out.

`PipelineWorker` attaches to a running agent (its run folder's ``bus.json``)
and, for each field (the frames of one position at one time point of the
plan), runs one `FrameAnalyzer` pass (virtual stain → segmentation → tracking
→ cell states), then the policies (`livescope.policy`), sends the decisions
that pass the guardrails, publishes the overlay (latest wins) and appends to the
results store beside the raw data::

    <run>/results/
        cells.csv           one row per cell and field: track, centroid, area,
                            intensities, state probabilities
        ctc/<position>/     maskTTT.tif + res_track.txt: track ids while the run goes on,
                            a valid CTC result (tracks without gaps) once it ends
        policy.jsonl        every rule firing: decision, guardrail or agent verdict
        latency.jsonl       per field: ms per stage (see `LATENCY_STAGES`)
        state.json          trackers, policies, guardrails (a restarted worker resumes)
        worker.json         the worker's summary, written when it stops

Nothing is lost when the worker falls behind or restarts: a field whose frames
did not arrive over the bus (dropped, or sent while the worker was down) is read
back from the recording before a later field of the same position is analysed,
so the tracker sees every time point; such fields are counted as
``dropped_live``. Frames added by decisions (``added_by``) are recorded by the
agent; the worker counts them but does not analyse them unless asked
(``analyse_added``).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import gc
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import useq
from numpy.typing import NDArray

from livescope.bus import BUS_FILE, attach, collection_deferred, fast_thread_switching
from livescope.policy import Cells, Observation, Policy, PolicyEngine, Verdict, load_policies
from livescope.record import RecordingReader, read_frames, rewrite_ctc_result
from livescope.schema import (
    HardwareProfile,
    LivescopeError,
    bulk_priority,
    load_plan,
    load_profile,
    lower_thread_priority,
    write_atomic,
)
from livescope.scope import frames_in_plan
from livescope.tracking import OnlineTracker, measure_objects

from ._analyzer import FrameAnalyzer, FrameResult

__all__ = ["LATENCY_STAGES", "PLAN_FILE", "RESULTS_DIR", "PipelineWorker", "WorkerConfig"]

logger = logging.getLogger("livescope")

RESULTS_DIR = "results"
HANDOFF_WAIT_S = 0.002
"""Longest a field's decisions wait for the main thread to start the next field's engines.

That takes ~0.5 ms; when it takes longer, the main thread (a bulk thread, see
`lower_thread_priority`) is waiting for a core, and the decisions waiting for it
gain nothing: in demos, 2-4 ms stalls of the hand-off (20 ms allowed) made the
largest pipeline overheads.
"""
PLAN_FILE = "plan.yaml"
LATENCY_STAGES = (
    "camera_to_received",  # camera → agent → bus → worker's receiver thread
    "queue_wait",  # received → analysis starts (grouping + waiting behind earlier fields)
    "busy_wait",  # camera → analysis starts, the part the engines spent on earlier fields
    "stain", "segment", "track", "states",  # engines
    "engines",  # their sum
    "analyse_other",  # the analysis pass outside its engines (frame checks, bookkeeping)
    "handoff",  # analysed → the decision thread starts on it (it may let the next field go first)
    "prepare",  # per-cell measurements for the policies
    "policy",  # policies + guardrails
    "decision_enqueued",  # decision sent → the agent queued its events (ack)
    "decision_executed",  # the agent queued it → first frame it added was acquired
    "end_to_end",  # camera → the agent queued the decisions (→ policies done, when none fired)
    "overhead",  # end_to_end − engines − busy_wait: what the pipeline itself costs
    "store",  # results store + overlay (after the decisions; off the decision path)
)  # fmt: skip


@dataclass(frozen=True)
class WorkerConfig:
    """What the worker runs (JSON round trip: `to_json` / `from_json`)."""

    profile: str = "sim"
    segmenter: str | None = "nuclei-unet"
    stain: str | None = "nuclei-stain"
    states: str | None = "cell-state"
    backend: str | None = None
    nucleus_diameter_um: float | None = None
    plan: str | None = None
    """Plan file with ``policies:`` (default: the run folder's plan.yaml)."""
    stain_every: int = 1
    """Virtual stain of every Nth time point of a field that also has a fluorescence
    frame (fields with only a label-free frame always get it: it is what is segmented)."""
    analyse_added: bool = False
    maxlen: int = 256
    idle_s: float | None = None
    """Give up when no frame arrived for this long while the agent's bus is there
    (None: wait as long as the run goes on)."""
    watch_parent: bool = False
    """Stop when stdin closes (the supervisor holds a pipe to it: it died if it closes)."""
    tail_frames: int = 10
    overlay: bool = True
    decision_timeout_s: float = 2.0
    recording_wait_s: float = 2.0
    """How long to wait for the recorder to log a frame the bus did not deliver."""
    engine_nice: int = 0
    """Lower the engine and store threads' priority by this (Linux, per thread): the
    worker's receiving and decision threads, and the acquisition, go first."""

    def to_json(self) -> str:
        """Serialise (for the supervisor to hand to a worker process)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        """Read a config written by `to_json` (unknown keys are an error)."""
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(data) - known):
            raise LivescopeError(f"worker config: unknown key(s) {unknown}")
        return cls(**data)


@dataclass
class _StoreJob:
    fld: _Field
    res: FrameResult
    obs: Observation
    verdicts: list[Verdict]
    acks: dict[int, tuple[str, bool, str]]
    ms: dict[str, float]
    state: dict[str, Any]
    policy_state: tuple[int, str]
    """(generation, JSON) of the policies' state once this field was decided."""


@dataclass
class _DecideJob:
    """A field whose engines have run, for the decision thread."""

    fld: _Field
    res: FrameResult
    nuclear: NDArray[Any] | None
    pixel_size_um: float | None
    t_start_ns: int
    t_analysed_ns: int
    busy_ns: int
    """Time the engines spent on earlier fields while this one waited."""
    tracker_state: dict[str, Any]
    """Its position's tracker right after this field (the next field may change it)."""


@dataclass
class _Field:
    position: str
    t: int
    frames: dict[tuple[str, int], NDArray[Any]]
    header: dict[str, Any]
    """Header of the frame that completed the field (latest arrival)."""
    t_received_ns: int
    live: bool = True
    t_start_ns: int = 0
    """When its analysis began and when its decisions were answered (monotonic ns)."""
    t_done_ns: int = 0


def _overlap_ns(spans: Iterable[tuple[int, int]], start: int, end: int) -> int:
    """Return how much of the ``(begin, end)`` spans (ns) lies between ``start`` and ``end``."""
    return sum(max(0, min(b, end) - max(a, start)) for a, b in spans)


def _pct(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    p50, p99 = (round(float(np.percentile(a, q)), 3) for q in (50, 99))
    return {"p50": p50, "p99": p99, "n": int(a.size)}


class PipelineWorker:
    """Analyse a running run's fields; see the module.

    Parameters
    ----------
    run_dir
        The agent's run folder.
    config
        Engines, policies and limits.
    resume
        Continue from ``results/state.json`` (a restarted worker).
    policies
        Python policies added to the plan's declared rules.

    """

    def __init__(
        self,
        run_dir: str | Path,
        config: WorkerConfig | None = None,
        *,
        resume: bool = False,
        policies: Sequence[Policy] = (),
    ) -> None:
        self.run_dir = Path(run_dir)
        self.config = cfg = config or WorkerConfig()
        if cfg.engine_nice > 0:
            bulk_priority()  # a wrong LIVESCOPE_BULK_PRIORITY stops the worker here
        self.profile: HardwareProfile = load_profile(cfg.profile)
        plan_path = Path(cfg.plan) if cfg.plan else self.run_dir / PLAN_FILE
        self.sequence: useq.MDASequence | None = None
        rules: list[Policy] = []
        if plan_path.is_file():
            self.sequence = load_plan(plan_path)
            rules = load_policies(plan_path, self.profile)
        self.kinds = {c.name: c.kind for c in self.profile.channels.presets}
        # which fluorescence channel is segmented: one whose target is nuclei first, then
        # one with no stated target (or not in the profile); never one showing something else
        self.nuclear_rank = {
            c.name: 0 if c.target == "nuclei" else 1 if c.target is None else None
            for c in self.profile.channels.presets
        }
        # frames each field of the plan has (channels acquired every Nth time point and
        # z-stacks skipped for a channel make them differ from field to field)
        self.expected = frames_in_plan(self.sequence) if self.sequence is not None else {}
        nz = len(list(self.sequence.z_plan)) if self.sequence and self.sequence.z_plan else 1
        self.default_expected = max(1, len(self.kinds)) * max(1, nz)
        self.mid_z = max(1, nz) // 2
        diameter = cfg.nucleus_diameter_um
        if diameter is None and self.profile.simulation is not None:
            diameter = 2 * self.profile.simulation.nucleus_radius_um
        self.analyzer = FrameAnalyzer(
            segmenter=cfg.segmenter,
            stain=cfg.stain,
            states=cfg.states,
            backend=cfg.backend,
            nucleus_diameter_um=diameter,
        )
        self.engines = self.analyzer.engine_hashes()
        self.policy = PolicyEngine([*rules, *policies], self.profile, self.sequence)
        self.results = self.run_dir / RESULTS_DIR
        self.results.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, int] = {}  # position -> last analysed (and stored) t
        self.decided: dict[str, int] = {}  # position -> last t whose decisions were sent
        self.counts: collections.Counter[str] = collections.Counter()
        self._skip_lock = threading.Lock()
        """Held to count ``frames_already_analysed``: the only count two threads (the
        field-assembling and the main one) add to."""
        self.tails: dict[str, dict[int, collections.deque[tuple[float, float]]]] = {}
        self.run_id = ""
        self._engine_spans: collections.deque[tuple[int, int]] = collections.deque(maxlen=32)
        self._reader: RecordingReader | None = None
        self._class_cols: list[str] = []
        self.resumed = False
        if resume:
            self._restore()
        self._cells = (self.results / "cells.csv").open("a", encoding="utf-8", newline="")
        self._cells_writer = csv.writer(self._cells)
        self._policy_log = (self.results / "policy.jsonl").open("a", encoding="utf-8")
        self._latency_log = (self.results / "latency.jsonl").open("a", encoding="utf-8")
        self.link: Any = None
        self.overlay: Any = None
        self._parent_gone = threading.Event()
        if cfg.watch_parent:
            threading.Thread(
                target=self._watch_parent, name="livescope-parent", daemon=True
            ).start()
        # trackers and fields as of the last field whose decisions were made (what a
        # restarted worker resumes from), kept by the decision thread
        self._tracker_states: dict[str, dict[str, Any]] = {
            p: tr.state() for p, tr in self.analyzer.trackers.items()
        }
        self._decided_done: dict[str, int] = dict(self.done)
        self._policy_gen = self._policy_gen_written = 0
        self._policy_lock = threading.Lock()
        self._store_q: queue.Queue[_StoreJob | None] = queue.Queue()
        # set while the main thread is in the engines (which release the GIL) or waits for
        # frames: the store thread does its Python-heavy work then, not while the main
        # thread prepares a field or hands it on (nor while the decision thread works)
        self._main_free = threading.Event()
        self._main_free.set()
        self._store_error: BaseException | None = None
        self._store_thread = threading.Thread(target=self._store_loop, name="livescope-store",
                                              daemon=True)  # fmt: skip
        self._store_thread.start()
        # a field's policies and decisions run on their own thread while the engines start
        # on the next field: a field never waits for another's decisions
        self._decide_q: queue.Queue[_DecideJob | None] = queue.Queue()
        self._decide_free = threading.Event()  # clear while a field's decisions are made
        self._decide_free.set()
        # clear while the main thread moves on to a field whose frames are already here:
        # the decision thread starts once the engines run (or after HANDOFF_WAIT_S), so
        # the two do not fight over the GIL and the CPU while the next field is prepared
        self._handoff = threading.Event()
        self._handoff.set()
        self._fields: queue.Queue[_Field | Exception | None] = queue.Queue()
        """Fields put together from the bus, for the main thread (a live run)."""
        self._decide_error: BaseException | None = None
        self._decide_thread = threading.Thread(
            target=self._decide_loop, name="livescope-decide", daemon=True
        )
        self._decide_thread.start()

    # ------------------------------------------------------------ state

    def _state_path(self) -> Path:
        return self.results / "state.json"

    def _save_state(self, state: dict[str, Any] | None = None) -> None:
        """Trackers and the last analysed field of each position (after a field is stored)."""
        state = dict(state if state is not None else self._snapshot())
        state["class_cols"] = self._class_cols
        write_atomic(self._state_path(), json.dumps(state))

    def _write_policy_state(self, generation: int, text: str) -> None:
        """Write the policies' state unless a newer one is already on disk.

        The main thread writes it at once when a decision went out; the store
        thread writes each field's as it stores it, possibly later: the older
        must never replace the newer.
        """
        with self._policy_lock:
            if generation <= self._policy_gen_written:
                return
            write_atomic(self.results / "policy_state.json", text)
            self._policy_gen_written = generation

    def _policy_snapshot(self) -> dict[str, Any]:
        """Return the policies' and guardrails' state as of the field just decided.

        Written apart from the trackers' (at once when a decision went out) so
        that a worker killed between sending a decision and storing the field's
        results neither sends it twice nor forgets the light and frames it booked.
        """
        return {"version": 1, "decided": dict(self.decided), "policy": self.policy.state()}

    def _restore(self) -> None:
        path = self._state_path()
        if not path.is_file():
            logger.warning("no %s to resume from; starting afresh", path)
            return
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LivescopeError(f"cannot read worker state {path}: {exc}") from exc
        self.run_id = state.get("run_id", "")
        self.done = {str(k): int(v) for k, v in state["done"].items()}
        self.counts.update(state.get("counts", {}))
        self.counts["restarts"] += 1
        for pos, st in state["trackers"].items():
            self.analyzer.trackers[pos] = OnlineTracker.from_state(st)
        ppath = self.results / "policy_state.json"
        if ppath.is_file():
            pstate = json.loads(ppath.read_text(encoding="utf-8"))
            self.policy.restore(pstate["policy"])
            self.decided = {str(k): int(v) for k, v in pstate["decided"].items()}
        self._class_cols = list(state.get("class_cols", []))
        self._drop_rows_after_restart()
        self.resumed = True
        logger.info("worker resumed: %s", dict(self.done))

    def _drop_rows_after_restart(self) -> None:
        """Remove results of a field the killed worker had half stored (it is analysed again)."""

        def keep(pos: str, t: int, upto: dict[str, int]) -> bool:
            return t <= upto.get(pos, -1)

        cells = self.results / "cells.csv"
        if cells.is_file():
            lines = cells.read_text(encoding="utf-8").splitlines(keepends=True)
            rows = [ln for ln in lines[1:] if keep(ln.split(",", 2)[0], int(ln.split(",", 2)[1]),
                                                   self.done)]  # fmt: skip
            write_atomic(cells, "".join(lines[:1] + rows) if rows else "")
        for name, upto in (("latency.jsonl", self.done), ("policy.jsonl", self.decided)):
            path = self.results / name
            if path.is_file():
                out = []
                for ln in path.read_text(encoding="utf-8").splitlines(keepends=True):
                    rec = json.loads(ln)
                    if keep(str(rec["position"]).split("~")[0], int(rec["t"]), upto):
                        out.append(ln)
                write_atomic(path, "".join(out))

    # ------------------------------------------------------------ running

    def run(self, *, attach_timeout_s: float = 30.0) -> dict[str, Any]:
        """Analyse until the agent has finished and every recorded field is analysed.

        Returns the worker's summary (also written to ``results/worker.json``).
        """
        deadline = time.monotonic() + attach_timeout_s
        bus = self.run_dir / BUS_FILE
        while not bus.exists() and time.monotonic() < deadline:
            if (self.run_dir / "summary.json").exists():
                break  # the run has already ended: analyse what was recorded
            time.sleep(0.05)
        gc.collect()
        gc.freeze()  # engines and config are loaded: later collections skip them
        with fast_thread_switching():
            try:
                if bus.exists():
                    self._live()
                else:
                    (self.results / "ready").write_text(str(time.time()), encoding="utf-8")
                self._catch_up_all()
                self._drain_decisions()
                if self._decide_error is not None:
                    raise LivescopeError(f"deciding failed: {self._decide_error}")
            except BaseException:
                self._finish(failed=True)  # no state saved: the field in hand is redone
                raise
            return self._finish()

    def _live(self) -> None:
        self.link = attach(self.run_dir, policy="every", maxlen=self.config.maxlen)
        self.run_id = self.link.run_id
        if self.config.overlay:
            self._open_overlay()
        # frames are taken off the bus and put together into fields on a thread of their
        # own, also while the engines run: a field is ready the moment the one before is
        # analysed, and its decisions wait for no copying (see `_assemble`)
        fields = self._fields
        stop = threading.Event()
        assembler = threading.Thread(target=self._assemble, args=(stop,),
                                     name="livescope-fields", daemon=True)  # fmt: skip
        assembler.start()
        try:
            # after every other thread has started (a thread inherits its creator's priority)
            lower_thread_priority(self.config.engine_nice)
            (self.results / "ready").write_text(str(time.time()), encoding="utf-8")
            while True:
                if fields.empty():
                    self._handoff.set()  # nothing to move on to: the decisions go now
                item = fields.get()
                if not isinstance(item, _Field):
                    # the end of the run (or an error): the last field's decisions go now,
                    # not after the recording has been read for fields the bus lost
                    self._handoff.set()
                    if item is None:
                        break
                    raise item
                self._process(item)
        finally:
            stop.set()
            assembler.join(timeout=5)

    def _assemble(self, stop: threading.Event) -> None:
        """Take frames off the bus and queue each field once its frames are in (own thread).

        The queue (``_fields``) ends with None when the agent has finished, or with
        the exception that stopped this thread.
        """
        fields = self._fields
        if self.link is None:  # pragma: no cover (attached before)
            fields.put(LivescopeError("the worker is not attached to a run"))
            return
        bus = self.run_dir / BUS_FILE
        pending: _Field | None = None
        last_frame = time.monotonic()
        try:
            while not stop.is_set():
                frame = self.link.frames.get(timeout=0.1)
                if frame is None:
                    if not bus.exists():
                        break  # the agent has finished; the queue is drained
                    idle = self.config.idle_s
                    if idle is not None and time.monotonic() - last_frame > idle:
                        logger.warning("no frame for %.0f s; the worker stops", idle)
                        break
                    if self._orphaned():
                        raise LivescopeError("the supervising process is gone; the worker stops")
                    continue
                last_frame = time.monotonic()
                try:
                    h = frame.header
                    self.counts["frames_received"] += 1
                    if h.get("added_by") and not self.config.analyse_added:
                        self.counts["added_frames_received"] += 1
                        continue
                    key = (str(h["position"]), int(h["index"].get("t", 0)))
                    if key[0] in self.done and key[1] <= self.done[key[0]]:
                        with self._skip_lock:
                            self.counts["frames_already_analysed"] += 1
                        continue
                    if pending is not None and (pending.position, pending.t) != key:
                        fields.put(pending)  # incomplete: its other frames never came
                        pending = None
                    if pending is None:
                        pending = _Field(key[0], key[1], {}, dict(h), frame.t_received_ns)
                    z = int(h["index"].get("z", 0))
                    pending.frames[(str(h["channel"]), z)] = np.array(frame.array, copy=True)
                    pending.header, pending.t_received_ns = dict(h), frame.t_received_ns
                finally:
                    frame.release()
                if len(pending.frames) >= self._expected((pending.position, pending.t)):
                    fields.put(pending)
                    pending = None
            if pending is not None:
                fields.put(pending)
            fields.put(None)
        except Exception as exc:  # noqa: BLE001 (handed to the main thread, which raises it)
            fields.put(exc)

    def _orphaned(self) -> bool:
        """Return True if the supervising process has died (its pipe to our stdin closed)."""
        return self._parent_gone.is_set()

    def _watch_parent(self) -> None:
        try:  # the raw descriptor: a buffered read would block interpreter shutdown
            fd = sys.stdin.fileno()
            while os.read(fd, 1024):
                pass
        except (OSError, ValueError):
            pass
        self._parent_gone.set()

    # ------------------------------------------------------------ catching up

    def _recorded_fields(self) -> dict[tuple[str, int], list[dict[str, Any]]]:
        out: dict[tuple[str, int], list[dict[str, Any]]] = collections.defaultdict(list)
        if not (self.run_dir / "frames.jsonl").exists():
            return out
        for info in read_frames(self.run_dir):
            if info.get("added_by") and not self.config.analyse_added:
                continue
            key = (str(info["position"]), int(info["index"].get("t", 0)))
            out[key].append(dict(info))
        return out

    def _recorded_until(
        self, want: list[tuple[str, int]], wait_s: float
    ) -> dict[tuple[str, int], list[dict[str, Any]]]:
        """Read the frame log, waiting (up to ``wait_s``) until it has every frame of ``want``.

        The recorder and the bus are separate threads: a frame may reach the
        worker before its line reaches the log.
        """
        deadline = time.monotonic() + wait_s
        while True:
            fields = self._recorded_fields()
            short = [k for k in want if len(fields.get(k, ())) < self._expected(k)]
            if not short or time.monotonic() > deadline:
                return fields
            time.sleep(0.02)

    def _expected(self, key: tuple[str, int]) -> int:
        return self.expected.get(key) or self.default_expected

    def _catch_up(self, position: str, before_t: int | None) -> None:
        """Analyse recorded fields of ``position`` newer than the last analysed one."""
        last = self.done.get(position, -1)
        if before_t is not None and before_t <= last + 1:
            return
        want = []
        if before_t is not None:  # the plan's fields in between (none for an unknown plan)
            want = [(position, t) for t in range(last + 1, before_t) if (position, t) in
                    self.expected]  # fmt: skip
        fields = self._recorded_until(want, self.config.recording_wait_s)
        ts = sorted(t for (p, t) in fields if p == position and t > last and
                    (before_t is None or t < before_t))  # fmt: skip
        for t in ts:
            self._process_recorded(position, t, fields[(position, t)])
        if missing := [k for k in want if k not in fields]:
            self.counts["fields_missing"] += len(missing)
            logger.warning("fields %s were neither received nor recorded: not analysed", missing)

    def _complete(self, fld: _Field) -> None:
        """Fill a live field's missing frames (lost on the bus) from the recording."""
        key = (fld.position, fld.t)
        fields = self._recorded_until([key], self.config.recording_wait_s)
        added = self._read_recorded(fields.get(key, []), fld.frames)
        self.counts["frames_completed_from_recording"] += added
        if len(fld.frames) < self._expected(key):
            self.counts["fields_incomplete"] += 1

    def _catch_up_all(self) -> None:
        fields = self._recorded_fields()
        for position in sorted({p for p, _ in fields}):
            self._catch_up(position, None)

    def _read_recorded(
        self, infos: list[dict[str, Any]], frames: dict[tuple[str, int], NDArray[Any]]
    ) -> int:
        """Read the recorded frames ``infos`` into ``frames`` (those not there yet); how many."""
        n = 0
        for info in infos:
            fz = (str(info["channel"]), int(info["index"].get("z", 0)))
            if fz in frames:
                continue
            if self._reader is None:
                self._reader = RecordingReader(self.run_dir)
            try:
                frames[fz] = self._reader.read(info)  # type: ignore[arg-type]
                n += 1
            except LivescopeError as exc:
                logger.warning("frame %s: %s", info.get("seq"), exc)
        return n

    def _process_recorded(self, position: str, t: int, infos: list[dict[str, Any]]) -> None:
        frames: dict[tuple[str, int], NDArray[Any]] = {}
        self._read_recorded(infos, frames)
        if not frames:
            return
        last = infos[-1]
        header = {**last, "t_camera_ns": int(last.get("t_camera_ns", 0))}
        self.counts["dropped_live"] += 1
        self.counts["frames_dropped_live"] += len(frames)
        self._process(_Field(position, t, frames, header, time.monotonic_ns(), live=False))

    # ------------------------------------------------------------ one field

    def _process(self, fld: _Field) -> None:
        if fld.live:
            self._catch_up(fld.position, fld.t)  # fields the bus lost come from the recording
            if len(fld.frames) < self._expected((fld.position, fld.t)):
                self._complete(fld)
        if fld.position in self.done and fld.t <= self.done[fld.position]:
            if fld.live:  # analysed from the recording while its frames were on their way
                with self._skip_lock:
                    self.counts["frames_already_analysed"] += len(fld.frames)
            self._handoff.set()
            return
        self._main_free.clear()
        try:
            self._analyse_field(fld)
        finally:
            self._main_free.set()

    def _analyse_field(self, fld: _Field) -> None:
        if self._decide_error is not None:
            raise LivescopeError(f"deciding failed: {self._decide_error}")
        t_start = time.monotonic_ns()
        h = fld.header
        chans: dict[str, NDArray[Any]] = {}
        for (ch, _z), arr in sorted(fld.frames.items(), key=lambda kv: abs(kv[0][1] - self.mid_z)):
            chans.setdefault(ch, arr)  # the plane nearest the middle of a z-stack
        nuclear = [(rank, c) for c in chans if self.kinds.get(c) != "label_free"
                   if (rank := self.nuclear_rank.get(c, 1)) is not None]  # fmt: skip
        fluo = chans[min(nuclear)[1]] if nuclear else None
        free = next((a for c, a in chans.items() if self.kinds.get(c) == "label_free"), None)
        px = float(h.get("pixel_size_um") or 0.0) or None
        # the engines busy with earlier fields since this field's last frame was taken: it
        # waits for them however fast its frames travel, so that is not the pipeline's cost
        t_cam = int(h.get("t_camera_ns") or 0)
        # (t_camera_ns is the agent's clock: used only where it can be this host's one)
        live_cam = fld.live and 0 < t_cam <= fld.t_received_ns
        since = t_cam if live_cam else fld.t_received_ns
        busy = _overlap_ns(self._engine_spans, since, t_start)
        t_a0 = time.monotonic_ns()
        self._handoff.set()
        self._main_free.set()  # the engines release the GIL: the store thread may work
        try:
            res = self.analyzer.analyse(
                fluorescence=fluo,
                label_free=free,
                position=fld.position,
                pixel_size_um=px,
                frame=fld.t,
                stain=fld.t % max(1, self.config.stain_every) == 0,
            )
        finally:
            self._main_free.clear()
        t_analysed = time.monotonic_ns()  # fmt: skip
        self._engine_spans.append((t_a0, t_analysed))
        tracker = self.analyzer.trackers.get(fld.position)
        self.done[fld.position] = fld.t
        self.counts["fields_analysed"] += 1
        self.counts["frames_analysed"] += len(fld.frames)
        if fld.live and not self._fields.empty():
            self._handoff.clear()  # the next field is here: it goes first
        self._decide_q.put(
            _DecideJob(fld, res, fluo, px, t_start, t_analysed, busy,
                       tracker.state() if tracker is not None else {})
        )  # fmt: skip
        if self._store_error is not None:
            raise LivescopeError(f"storing results failed: {self._store_error}")

    def _decide_loop(self) -> None:
        while (job := self._decide_q.get()) is not None:
            if self._decide_error is not None:
                continue  # the worker is failing; nothing more is decided
            self._handoff.wait(HANDOFF_WAIT_S)
            self._decide_free.clear()
            try:
                self._decide(job)
            except Exception as exc:
                logger.exception("deciding field %s t=%d failed", job.fld.position, job.fld.t)
                self._decide_error = exc
            finally:
                self._decide_free.set()

    def _drain_decisions(self) -> None:
        """Wait until every analysed field's decisions are made (and handed to the store)."""
        self._handoff.set()
        if self._decide_thread.is_alive():
            self._decide_q.put(None)
            self._decide_thread.join()

    def _decide(self, job: _DecideJob) -> None:
        """Run a field's policies, send its decisions, hand it to the store thread."""
        fld, res = job.fld, job.res
        h = fld.header
        t_handoff = time.monotonic_ns()
        # no garbage collection (up to 2 ms) until answered: ~1-2 ms, at most the
        # decision timeout when the agent does not answer
        with collection_deferred():
            t0 = time.perf_counter()
            obs = self._observation(fld, res, job.nuclear, job.pixel_size_um)
            ms_prepare = 1000 * (time.perf_counter() - t0)
            t0 = time.perf_counter()
            verdicts = self.policy.evaluate(obs)
            ms_policy = 1000 * (time.perf_counter() - t0)
            sent, acks = self._send(verdicts, obs)
        t_decided = time.monotonic_ns()  # every decision answered (or timed out)
        self.decided[fld.position] = fld.t
        self._policy_gen += 1  # snapshot now: the policies change with the next field
        policy_state = (self._policy_gen, json.dumps(self._policy_snapshot()))
        if verdicts:  # a decision went out: its budget and cooldown are saved before anything
            self._write_policy_state(*policy_state)
        ms: dict[str, float] = {k: round(v, 3) for k, v in res.ms.items()}
        engines_ms = sum(res.ms.values())
        ms["engines"] = round(engines_ms, 3)
        ms["policy"] = round(ms_policy, 3)
        ms["prepare"] = round(ms_prepare, 3)
        ms["analyse_other"] = round((job.t_analysed_ns - job.t_start_ns) / 1e6 - engines_ms, 3)
        ms["handoff"] = round((t_handoff - job.t_analysed_ns) / 1e6, 3)
        if fld.live:
            t_cam = int(h["t_camera_ns"])
            # a decision is enqueued when the agent stamps its answer (t_acked_ns, the
            # agent's clock, as t_camera_ns is); the answer's way back is not its latency.
            # Refused or unanswered ones end when their answer came (or the wait ended).
            t_end = max((a for _, a, _ in sent), default=t_decided)
            e2e = (t_end - t_cam) / 1e6
            ms.update(
                camera_to_received=round((fld.t_received_ns - t_cam) / 1e6, 3),
                queue_wait=round((job.t_start_ns - fld.t_received_ns) / 1e6, 3),
                busy_wait=round(job.busy_ns / 1e6, 3),
                end_to_end=round(e2e, 3),
                overhead=round(e2e - engines_ms - job.busy_ns / 1e6, 3),
            )
            if sent:
                ms["decision_enqueued"] = round(
                    float(np.median([(a - s) / 1e6 for s, a, _ in sent])), 3
                )
        fld.t_start_ns, fld.t_done_ns = job.t_start_ns, t_decided
        self.counts["cells"] += len(obs.cells)
        self._decided_done[fld.position] = fld.t
        self._tracker_states[fld.position] = job.tracker_state
        # results, overlay and state are written by the store thread, off the decision path
        self._store_q.put(
            _StoreJob(fld, res, obs, verdicts, acks, ms, self._snapshot(), policy_state)
        )

    def _snapshot(self) -> dict[str, Any]:
        """Return the state as of the last decided field, for the store thread to save."""
        return {
            "version": 1,
            "run_id": self.run_id,
            "done": dict(self._decided_done),
            "counts": dict(self.counts),
            "trackers": {p: st for p, st in self._tracker_states.items() if st},
        }

    def _store_loop(self) -> None:
        lower_thread_priority(self.config.engine_nice)  # bulk work, like the engines
        while (job := self._store_q.get()) is not None:
            if self._store_error is not None:
                continue  # the worker is failing; state is not saved past the error
            try:
                ms = 0.0
                for step in (self._store, self._publish):
                    self._main_free.wait(0.05)  # never longer: results must not lag behind
                    self._decide_free.wait(0.05)
                    t0 = time.perf_counter()
                    step(job.fld, job.res, job.obs, job.verdicts, job.acks)
                    ms += 1000 * (time.perf_counter() - t0)
                job.ms["store"] = round(ms, 3)
                self._main_free.wait(0.05)
                self._decide_free.wait(0.05)
                self._latency_log.write(json.dumps({
                    "position": job.fld.position, "t": job.fld.t,
                    "seq": int(job.fld.header.get("seq", -1)), "live": job.fld.live,
                    "t_start_ns": job.fld.t_start_ns, "t_done_ns": job.fld.t_done_ns,
                    "ms": job.ms}) + "\n")  # fmt: skip
                self._latency_log.flush()
                self._save_state(job.state)
                self._write_policy_state(*job.policy_state)
            except Exception as exc:
                logger.exception("storing field %s t=%d failed", job.fld.position, job.fld.t)
                self._store_error = exc

    def _drain_store(self) -> None:
        """Wait until every field handed to the store thread is written."""
        if self._store_thread.is_alive():
            self._store_q.put(None)
            self._store_thread.join()

    def _observation(
        self, fld: _Field, res: FrameResult, nuclear_frame: NDArray[Any] | None, px: float | None
    ) -> Observation:
        h = fld.header
        shape = tuple(int(s) for s in next(iter(fld.frames.values())).shape[-2:])
        stage = None
        if h.get("x_um") is not None and h.get("y_um") is not None:
            stage = (float(h["x_um"]), float(h["y_um"]),
                     None if h.get("z_um") is None else float(h["z_um"]))  # fmt: skip
        sample_t = h.get("sample_time_s")
        common: dict[str, Any] = {
            "run_id": self.run_id or str(h.get("run_id", "")),
            "seq": int(h.get("seq", 0)),
            "position": fld.position,
            "t": fld.t,
            "sample_time_s": float(sample_t) if sample_t is not None else float(fld.t),
            "pixel_size_um": px or 1.0,
            "shape": (shape[0], shape[1]),
            "stage_um": stage,
            "engines": self.analyzer.engines_used(res),  # those that ran for this field
        }
        if res.labels is None or res.tracks is None:
            return Observation(**common)
        nuclear = nuclear_frame if nuclear_frame is not None else res.stain
        objs = res.objects if res.objects is not None else measure_objects(res.labels, nuclear)
        rows = np.searchsorted(objs.labels, res.tracks.labels)  # objs.labels ascend
        n = int(rows.size)
        tracks = res.tracks.track_ids.astype(np.int64)
        tracker = self.analyzer.trackers[fld.position]
        lineage, spans = tracker.lineage, tracker.spans()
        parents = np.array([lineage.get(int(t), 0) for t in tracks.tolist()], np.int64)
        age = np.array([fld.t - spans.get(int(t), (fld.t, fld.t))[0] for t in tracks.tolist()],
                       np.int64)  # fmt: skip
        stain = np.full(n, np.nan)
        if res.stain is not None and n:
            flat = res.labels.ravel()
            fg = np.flatnonzero(flat)
            sums = np.bincount(
                flat[fg], weights=res.stain.ravel()[fg], minlength=int(flat.max()) + 1
            )
            lab = objs.labels[rows]
            stain = sums[lab] / np.maximum(objs.areas[rows], 1)
        p_mit = np.full(n, np.nan)
        state: tuple[str, ...] = ("",) * n
        if res.states is not None and len(res.states):
            by_label = {int(i): k for k, i in enumerate(res.states.ids.tolist())}
            pm = res.states.p_mitosis
            best = np.argmax(res.states.probs, axis=1)
            ks = [by_label.get(int(lab)) for lab in res.tracks.labels.tolist()]
            p_mit = np.array([np.nan if k is None else float(pm[k]) for k in ks])
            state = tuple("" if k is None else res.states.classes[int(best[k])] for k in ks)
        intens = objs.intensities[rows] if objs.intensities is not None else np.full(n, np.nan)
        cells = Cells(
            labels=res.tracks.labels.astype(np.int64),
            tracks=tracks,
            parents=parents,
            age=age,
            y=objs.centroids[rows, 0] if n else np.zeros(0),
            x=objs.centroids[rows, 1] if n else np.zeros(0),
            area=objs.areas[rows] if n else np.zeros(0),
            intensity=np.asarray(intens, np.float64),
            stain=np.asarray(stain, np.float64),
            p_mitosis=p_mit,
            state=state,
        )
        divisions = tuple((d.parent, d.daughters) for d in res.tracks.divisions)
        return Observation(**common, cells=cells, divisions=divisions, lost=res.tracks.lost)

    def _send(
        self, verdicts: list[Verdict], obs: Observation
    ) -> tuple[list[tuple[int, int, Any]], dict[int, tuple[str, bool, str]]]:
        """Send the decisions that passed (all at once).

        Returns (t_sent, t_enqueued, ack) of each accepted one, and the agent's
        (stage, ok, reason) by verdict index.

        A decision the agent refuses, or one not sent because the run has
        ended, gives its guardrail budget back; one without an answer keeps it
        booked (the agent may still have taken it).
        """
        out: list[tuple[int, int, Any]] = []
        acks: dict[int, tuple[str, bool, str]] = {}
        todo = [i for i, v in enumerate(verdicts) if v.ok and v.firing.decision is not None]
        if not todo:
            return out, acks
        now = obs.sample_time_s
        if self.link is None or not (self.run_dir / BUS_FILE).exists():
            for i in todo:
                acks[i] = ("agent", False, "the run has ended (what-if: not sent)")
                self.policy.refused(verdicts[i], now)
                self.counts["decisions_not_sent"] += 1
            return out, acks
        client = self.link.decisions
        if client is None:  # pragma: no cover (the worker attaches with its decision channel)
            raise LivescopeError("the worker is attached for frames only")
        t_sent = time.monotonic_ns()
        decisions = [d for i in todo if (d := verdicts[i].firing.decision) is not None]
        replies = client.send_many(decisions, timeout=self.config.decision_timeout_s)
        t_back = time.monotonic_ns()
        for i, ack in zip(todo, replies, strict=True):
            if isinstance(ack, LivescopeError):
                acks[i] = ("agent", False, f"no answer from the agent ({ack}); booked")
                self.counts["decisions_unanswered"] += 1
                continue
            acks[i] = ("agent", ack.accepted, ack.reason)
            if ack.accepted:
                self.counts["decisions_accepted"] += 1
                out.append((t_sent, ack.t_acked_ns or t_back, ack))
            else:
                self.policy.refused(verdicts[i], now)
                self.counts["decisions_rejected_agent"] += 1
        return out, acks

    # ------------------------------------------------------------ outputs

    def _store(
        self, fld: _Field, res: FrameResult, obs: Observation, verdicts: list[Verdict],
        acks: dict[int, tuple[str, bool, str]],
    ) -> None:  # fmt: skip
        h = fld.header
        c = obs.cells
        if res.states is not None and not self._class_cols:
            self._class_cols = list(res.states.classes)
        if self._cells.tell() == 0:
            self._cells_writer.writerow(
                ["position", "t", "seq", "sample_time_s", "label", "track", "parent", "y", "x",
                 "area", "intensity", "state", "p_mitosis", *(f"p_{k}" for k in self._class_cols)]
            )  # fmt: skip
        probs: dict[int, NDArray[Any]] = {}
        if res.states is not None and len(res.states):
            probs = {int(i): res.states.probs[k] for k, i in enumerate(res.states.ids.tolist())}
        for i in range(len(c)):
            p = probs.get(int(c.labels[i]))
            self._cells_writer.writerow(
                [fld.position, fld.t, h.get("seq", -1), round(obs.sample_time_s, 3),
                 int(c.labels[i]), int(c.tracks[i]), int(c.parents[i]), round(float(c.y[i]), 2),
                 round(float(c.x[i]), 2), int(c.area[i]), _r(c.intensity[i]), c.state[i],
                 _r(c.p_mitosis[i]),
                 *([round(float(v), 4) for v in p] if p is not None else
                   [""] * len(self._class_cols))]
            )  # fmt: skip
        self._cells.flush()
        if res.labels is not None and res.tracks is not None:
            folder = self.results / "ctc" / fld.position
            folder.mkdir(parents=True, exist_ok=True)
            lut = np.zeros(int(res.labels.max()) + 1, np.uint16)
            lut[res.tracks.labels] = res.tracks.track_ids
            tifffile.imwrite(folder / f"mask{fld.t:03d}.tif", lut[res.labels], compression="zlib")
        for i, v in enumerate(verdicts):
            f = v.firing
            stage, ok, reason = v.stage, v.ok, v.reason
            if i in acks:
                stage, ok, reason = acks[i]
            verdict = "recorded" if v.stage == "record" else "accepted" if ok else "rejected"
            self.counts[f"firings_{verdict}"] += 1
            if stage == "guardrail":
                self.counts["decisions_rejected_guardrail"] += 1
            self._policy_log.write(json.dumps({
                "rule": f.rule, "trigger": f.trigger, "position": f.position, "t": fld.t,
                "seq": h.get("seq"), "sample_time_s": obs.sample_time_s, "track": f.track,
                "y": f.y, "x": f.x, "inputs": f.inputs,
                "decision": None if f.decision is None else f.decision.model_dump(mode="json"),
                "verdict": verdict, "stage": stage, "reason": reason, "engines": obs.engines,
            }, default=str) + "\n")  # fmt: skip
        self._policy_log.flush()

    def _open_overlay(self) -> None:
        from livescope.bus import OverlayPublisher

        self.overlay = OverlayPublisher(self.run_id, run_dir=self.run_dir)

    def _publish(
        self, fld: _Field, res: FrameResult, obs: Observation, verdicts: list[Verdict],
        acks: dict[int, tuple[str, bool, str]],
    ) -> None:  # fmt: skip
        c = obs.cells
        tails = self.tails.setdefault(fld.position, {})
        for i in range(len(c)):
            tails.setdefault(int(c.tracks[i]), collections.deque(maxlen=self.config.tail_frames))
            tails[int(c.tracks[i])].append((round(float(c.y[i]), 1), round(float(c.x[i]), 1)))
        alive = {int(t) for t in c.tracks.tolist()}
        for tid in [t for t in tails if t not in alive]:
            del tails[tid]
        if self.overlay is None:
            return
        arrays: dict[str, NDArray[Any]] = {f"raw:{ch}": a for (ch, _), a in fld.frames.items()}
        if res.labels is not None:
            arrays["labels"] = res.labels.astype(np.int32, copy=False)
        if res.stain is not None:
            arrays["stain"] = res.stain.astype(np.float16)
        header = {
            "seq": int(fld.header.get("seq", 0)),
            "position": fld.position,
            "t": fld.t,
            "sample_time_s": obs.sample_time_s,
            "cells": [
                {"label": int(c.labels[i]), "track": int(c.tracks[i]), "y": float(c.y[i]),
                 "x": float(c.x[i]), "state": c.state[i] or None,
                 "p_mitosis": None if not np.isfinite(c.p_mitosis[i]) else float(c.p_mitosis[i])}
                for i in range(len(c))
            ],
            "tails": {str(t): [list(p) for p in d] for t, d in tails.items()},
            "decisions": [
                {"rule": v.firing.rule, "y": v.firing.y, "x": v.firing.x,
                 "accepted": bool(acks.get(i, ("", v.ok, ""))[1]),
                 "reason": str(acks.get(i, ("", v.ok, v.reason))[2])}
                for i, v in enumerate(verdicts)
            ],
        }  # fmt: skip
        try:
            self.overlay.publish(header, arrays)
        except Exception:
            self.counts["overlay_errors"] += 1
            logger.exception("publishing the overlay failed")

    def _finish(self, *, failed: bool = False) -> dict[str, Any]:
        """Close everything; write ``worker.json`` (and, unless ``failed``, the CTC tracks).

        After a failure no state is saved: a restarted worker redoes the field
        that was in hand from the last state saved.
        """
        self._drain_decisions()
        self._drain_store()
        failed = failed or self._store_error is not None or self._decide_error is not None
        stats: dict[str, Any] = {}
        if self.link is not None:
            stats = self.link.frames.stats()
            self.link.close()
        if self.overlay is not None:
            self.overlay.close()
        if not failed:  # the live track-id masks become a valid CTC result (tracks without gaps)
            for pos, tracker in self.analyzer.trackers.items():
                folder = self.results / "ctc" / pos
                folder.mkdir(parents=True, exist_ok=True)
                rewrite_ctc_result(folder, tracker.lineage)
        self.analyzer.close()
        for f in (self._cells, self._policy_log, self._latency_log):
            f.close()
        summary: dict[str, Any] = {
            "ok": not failed,
            "run_id": self.run_id,
            "resumed": self.resumed,
            **{k: int(v) for k, v in sorted(self.counts.items())},
            # from the latency log: every field, also those of a worker that was restarted
            "latency_ms": _latency_from_log(self.results / "latency.jsonl"),
            "policies_disabled": [{"rule": k, "error": v} for k, v in self.policy.disabled.items()],
            "guardrails": self.policy.guardrails.usage(),
            "engines": self.engines,
            "bus": {k: stats[k] for k in ("received", "delivered", "drops", "dropped_queue",
                                           "dropped_upstream", "max_depth", "latency")
                    if k in stats},  # this worker process's connection only
        }  # fmt: skip
        if not failed:
            self._save_state()
        write_atomic(self.results / "worker.json", json.dumps(summary, indent=1))
        return summary


def _latency_from_log(path: Path) -> dict[str, dict[str, float]]:
    """p50/p99 per stage over every field in ``latency.jsonl``."""
    values: dict[str, list[float]] = collections.defaultdict(list)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            for k, v in json.loads(line)["ms"].items():
                values[k].append(float(v))
    return {k: _pct(v) for k, v in values.items()}


def _r(v: float) -> float | str:
    return "" if not np.isfinite(v) else round(float(v), 4)
