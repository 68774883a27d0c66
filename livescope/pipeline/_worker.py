"""The pipeline worker: frames in from the bus, results, overlay and decisions out.

`PipelineWorker` attaches to a running agent (its run folder's ``bus.json``)
and, for each field (the frames of one position at one time point of the
plan), runs one `FrameAnalyzer` pass (virtual stain → segmentation → tracking
→ cell states), then the policies (`livescope.policy`), sends the decisions
that pass the guardrails, publishes the overlay (latest wins) and appends to the
results store beside the raw data::

    <run>/results/
        cells.csv           one row per cell and field: track, centroid, area,
                            intensity (mean of the segmented frame), state probabilities
        ctc/<position>/     maskTTT.tif: track ids while the run goes on (uint16, uint32
                            once they pass 65535); with res_track.txt, a valid CTC
                            result (tracks without gaps) once it ends, never rewritten
        policy.jsonl        every rule firing: decision, verdict, who decided (stage);
                            logged as the field is decided, before policy_state.json
        latency.jsonl       per field: ms per stage (see `livescope.pipeline.LATENCY_STAGES`)
        revisions.jsonl     ids the tracker changed in fields already stored (a division
                            found late): cells.csv and ctc/ take them when it ends
        lineage.jsonl       parent, first and last frame of each track that ended, once
                            (the trackers in state.json hold those of their live tracks)
        policy_state.json   policies, guardrail budgets       } a restarted worker
        state.json          trackers, last field done, counts  } resumes from both
        policy_hung.json    policies whose call has not returned (`POLICY_HANG_S`):
                            a restarted worker runs without them
        worker.json         the worker's summary, written when it stops

Nothing is lost when the worker falls behind or restarts: a field whose frames
did not arrive over the bus (dropped, or sent while the worker was down) is read
back from the recording before a later field of the same position is analysed,
so the tracker sees every time point; such fields are counted as
``dropped_live``. Frames added by decisions (``added_by``) are recorded by the
agent; the worker counts them but does not analyse them unless asked
(``analyse_added``). A field the tracker ignores (a time point it has tracked
already, given again or out of order: a resumed worker whose saved trackers are
ahead of its fields) is stored with track 0 for its cells and counted as
``fields_not_tracked``.

When the engines are slower than the acquisition the worker falls behind and
goes on in order (the tracker needs every time point): its decisions come late,
which it says (``behind_s`` in the summary, `Behind`'s warnings in the log).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import useq
from numpy.typing import NDArray

from livescope.bus import (
    BUS_FILE,
    BusInfo,
    attach,
    collection_deferred,
    fast_thread_switching,
    peak_memory_mb,
)
from livescope.policy import (
    REHEARSAL,
    Policy,
    PolicyEngine,
    Rule,
    Verdict,
    load_policies,
    rehearsal_field,
)
from livescope.record import rewrite_ctc_result
from livescope.schema import (
    HardwareProfile,
    LivescopeError,
    bulk_priority,
    clock_ns,
    load_plan,
    load_profile,
    lower_native_threads,
    lower_thread_priority,
    native_thread_ids,
    plan_events,
    replace_path,
    write_atomic,
)
from livescope.scope import frames_in_plan, position_name
from livescope.tracking import OnlineTracker, TrackerSnapshot

from ._analyzer import FrameAnalyzer, FrameResult
from ._assembly import FieldAssembler, watch_stdin
from ._config import PLAN_FILE, RESULTS_DIR, WorkerConfig
from ._jobs import DecideJob, Field, StoreJob, overlap_ns
from ._observe import observe
from ._recorded import RecordedFields
from ._results import (
    LatencyLog,
    ResultsLock,
    ResultsStore,
    apply_revisions,
    behind_from_log,
    ctc_staging,
    discard_live_masks,
    earlier_results,
    is_ctc_result,
    latency_from_log,
    read_revisions,
    restore_live_masks,
    trim_results,
)
from ._sending import FieldDecisions, Unanswered
from ._supervisor import WORKER_RESTART_ENV

__all__ = ["PipelineWorker"]

SPAN_HORIZON_NS = 60_000_000_000
"""How long before a field's frames the engines' spans are kept, ns (`_busy_since`)."""

logger = logging.getLogger("livescope")

HANDOFF_WAIT_S = 0.002
"""Longest a field's decisions wait for the main thread to start the next field's engines.

That takes ~0.5 ms; when it takes longer, the main thread (a bulk thread, see
`lower_thread_priority`) is waiting for a core, and the decisions waiting for it
gain nothing: in demos, 2-4 ms stalls of the hand-off (20 ms allowed) made the
largest pipeline overheads.
"""

_ENDED_WAIT_S = 5.0
"""How long a worker whose attach failed waits for the run's summary (the agent writes it
after closing the bus: the run ended as the worker attached)."""

BEHIND_WARN_S = 10.0
"""A live field whose analysis starts this long after its last frame was taken is logged
as a warning (then again each time the wait doubles): the engines are slower than the
acquisition, so its decisions come that much late."""


POLICY_HANG_S = 10.0
"""How long one call of a policy's own code (``decide()``, ``state()``, ``restore()``,
``give_back()``) may run before the worker takes the policy as hung: the error is logged,
naming it and the field, and the policy written to ``results/policy_hung.json``. The
call goes on (a worker cannot stop it), holding up every later field's decisions and
results, so the supervisor ends the worker as hung (`WorkerSupervisor.hang_timeout_s`,
300 s by default: longer than this, or the policy is not marked yet; a ``restore()``
that hangs as a resumed worker starts, before it is ready: `start_timeout_s`); the worker
restarted after it disables the policies that file names, as a policy that raised is
disabled, and the run goes on without them. A call that returns after all was only slow:
it is logged and taken off the file. Python policies decide in well under a millisecond
a field: 10 s is no policy's honest work."""

POLICY_HUNG = "policy_hung.json"
"""In ``results/``: the policies taken as hung (`POLICY_HANG_S`), each with why."""

_WATCH_EVERY_S = 1.0
"""How often the policies' watchdog looks at the call in progress (s)."""

MAX_UNSTORED_BYTES = 1 << 29
"""Most bytes of large arrays (frames, labels, virtual stain: `_held_bytes`) the fields
analysed but not yet stored may hold (512 MiB; `PipelineWorker.max_unstored_bytes`): past
it the main thread waits for the store thread before it analyses another field, so the
analysis goes at the storage's pace (a slow or network disk, an antivirus scanning each
file) and the fields wait in the recording, as when the engines are slow. A 512² field of
two channels holds ~3 MB, one of 2048² z-stacks tens of MB; without a bound a store slower
than the analysis for long filled the worker's memory until it died."""

_STORE_WAIT_S = 0.5
"""How long the main thread waits for the store at a time, looking between waits whether
the store or decision thread failed (and hearing Ctrl+C, also on Windows)."""


class Behind:
    """Warns when the analysis falls behind the acquisition.

    That is how long after its last frame was taken each live field's analysis
    started (0 when the engines keep up). The figures (`behind_from_log`) come
    from the latency log, which also holds a restarted worker's fields.
    """

    def __init__(self, warn_s: float = BEHIND_WARN_S) -> None:
        self._warn_s = warn_s

    def note(self, position: str, t: int, behind_s: float) -> None:
        """Take one live field's wait; warn when it passes ``warn_s``, then each time it doubles."""
        if behind_s < self._warn_s:
            return
        self._warn_s = 2 * behind_s
        logger.warning(
            "the analysis is %.0f s behind the acquisition (field %s t=%d): the engines take "
            "longer per field than the plan gives them, so decisions come that late; a "
            "longer interval (a simulated sample: less --time-acceleration), a faster "
            "backend (a GPU) or fewer engines (`livescope worker --stain ''`) would keep up",
            behind_s, position, t,
        )  # fmt: skip


WORKER_COUNTS = (
    "added_frames_received", "cells", "cells_revised", "cells_revisions_not_applied",
    "ctc_results_not_written", "decisions_accepted",
    "decisions_accepted_late", "decisions_answered_late", "decisions_not_sent",
    "decisions_refused_late", "decisions_rejected_agent", "decisions_rejected_guardrail",
    "decisions_unanswered",
    "dropped_live", "fields_analysed", "fields_incomplete", "fields_left_to_recording",
    "fields_missing", "fields_not_tracked",
    "fields_unreadable", "firings_given_back", "firings_recorded", "firings_shared_not_imaged",
    "firings_shared_unanswered", "frames_already_analysed", "frames_analysed",
    "frames_completed_from_recording", "frames_dropped_live", "frames_overwritten",
    "frames_received", "overlay_errors", "restarts", "stains_skipped_behind",
)  # fmt: skip
"""The counts a worker's summary always holds (``results/worker.json``), 0 when nothing
happened."""


STORE_COUNTS = ("overlay_errors",)
"""Counts only the store thread adds to (prefixes), for the field it stores."""

MAIN_COUNTS = (
    "dropped_live", "fields_analysed", "fields_incomplete", "fields_missing",
    "fields_not_tracked", "fields_unreadable", "frames_analysed",
    "frames_completed_from_recording", "frames_dropped_live",
)  # fmt: skip
"""Counts only the main thread adds to, as it analyses fields: each field's state saves them
as of that field (`DecideJob.counts`), since a worker resumed from it analyses the fields
after it again."""

CTC_LABELS = "labels.csv"
"""Beside each position's finished CTC result (``results/ctc/<position>/``): the track id
(cells.csv's ``track``) and frames of each of its labels, which CTC numbers afresh (see
`livescope.record.rewrite_ctc_result`)."""

DECISION_COUNTS = ("firings_", "decisions_")
"""Counts only the decision thread adds to (prefixes; and the worker's end, after it):
saved with the policies' state too, as of the last field decided (see `_restore`)."""


def _thread_name(tid: int) -> str:
    """Return a thread's kernel name (Linux), or "" when it cannot be read."""
    try:
        return Path(f"/proc/self/task/{tid}/comm").read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def no_agent_error(run_dir: Path, waited_s: float) -> LivescopeError:
    """Return the error of a worker whose folder showed no agent's run within ``waited_s``."""
    return LivescopeError(
        f"no agent in {run_dir}: no {BUS_FILE} appeared within {waited_s:g} s and the "
        "folder holds no run (summary.json) or recording (frames.jsonl); start the agent "
        "first (`livescope agent`), or check the run folder's path"
    )


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
            # (the plan the agent ran, checked there: one a recording replays included)
            self.sequence = load_plan(plan_path, recorded=True)
            rules = load_policies(
                plan_path, self.profile, positions=map(position_name, plan_events(self.sequence))
            )
        self.kinds = {c.name: c.kind for c in self.profile.channels.presets}
        self._no_pixel_size_said = False
        # which fluorescence channel is segmented: one whose target is nuclei first, then
        # one with no stated target (or not in the profile); never one showing something else
        self.nuclear_rank = {
            c.name: 0 if c.target == "nuclei" else 1 if c.target is None else None
            for c in self.profile.channels.presets
        }
        # frames each field of the plan has (channels acquired every Nth time point and
        # z-stacks skipped for a channel make them differ from field to field)
        # the plan expanded once (~50 µs per event) for these counts, the guardrails' books and
        # the rehearsal's field
        planned = list(plan_events(self.sequence)) if self.sequence is not None else None
        self._first_event = planned[0] if planned else None
        self.expected = frames_in_plan(planned) if planned is not None else {}
        nz = len(list(self.sequence.z_plan)) if self.sequence and self.sequence.z_plan else 1
        self.default_expected = max(1, len(self.kinds)) * max(1, nz)
        self.mid_z = max(1, nz) // 2
        diameter = cfg.nucleus_diameter_um
        if diameter is None and self.profile.simulation is not None:
            diameter = 2 * self.profile.simulation.nucleus_radius_um
        before = native_thread_ids()  # (the engines' own thread pools: see `_lower_pools`)
        self.analyzer = FrameAnalyzer(
            segmenter=cfg.segmenter,
            stain=cfg.stain,
            states=cfg.states,
            backend=cfg.backend,
            nucleus_diameter_um=diameter,
        )
        self._lower_pools(before)
        self.engines = self.analyzer.engine_hashes()
        self.warm_up_s: float | None = None  # set by `run`
        self.behind = Behind()
        self.policy = PolicyEngine([*rules, *policies], self.profile, planned)
        # the virtual stain feeds the decisions: segmented (no fluorescence), or a rule's
        # `feature: stain`, or a Python policy (which may read any feature)
        self._stain_decides = any(
            not isinstance(p, Rule) or getattr(p.trigger, "feature", None) == "stain"
            for p in self.policy.policies
        )
        self.results = self.run_dir / RESULTS_DIR
        # the folders this worker makes, outermost first: a worker refused for a wrong path
        # takes them away again (`_abandon`)
        self._made = [d for d in (*reversed(self.results.parents), self.results)
                      if not d.exists()]  # fmt: skip
        self.results.mkdir(parents=True, exist_ok=True)
        # the one worker writing there (two appended to the same files), until it ends
        self._lock = ResultsLock(self.results)
        self.done: dict[str, int] = {}  # position -> last analysed (and stored) t
        self.decided: dict[str, int] = {}  # position -> last t whose decisions were sent
        self.counts: collections.Counter[str] = collections.Counter()
        self._unanswered = Unanswered(self.policy, self.counts)
        self._skip_lock = threading.Lock()
        """Held to count ``frames_already_analysed``: the only count two threads (the
        field-assembling and the main one) add to."""
        self.run_id = ""
        self._engine_spans: collections.deque[tuple[int, int]] = collections.deque()
        """When the engines ran on each field (begin, end; ns), back to `SPAN_HORIZON_NS`
        before the newest field's frames (`_busy_since`)."""
        self.recorded = RecordedFields(
            self.run_dir, self.expected, self.default_expected, analyse_added=cfg.analyse_added
        )
        self.resumed = False
        # a policy's call that does not return is found by a watchdog (`POLICY_HANG_S`),
        # from here on: a policy's restore() runs below
        self._hung: dict[str, str] = {}  # policy name -> why (as in results/policy_hung.json)
        self._field_in_hand: tuple[str, int] | None = None  # (set by the decision thread)
        self._watch_stop = threading.Event()
        self._watcher = threading.Thread(
            target=self._watch_policies, name="livescope-policy-watch", daemon=True
        )
        self._watcher.start()
        # lineage.jsonl's length as counted by the state.json saved last, and the tracker
        # snapshots (each position's) whose ended tracks it holds (`_save_state`)
        self._lineage_bytes = 0
        self._lineage_saved: dict[str, TrackerSnapshot] = {}
        try:
            if not resume and (found := earlier_results(self.results)) is not None:
                raise LivescopeError(
                    f"{self.results} already holds an analysis ({found.name}); a new one "
                    "would be appended to it: resume that one (`livescope worker --resume`), "
                    "or analyse into another run folder"
                )
            if resume:
                class_cols = self._restore()
            else:
                class_cols = []
                with contextlib.suppress(OSError):  # (a former analysis's: not this one's)
                    (self.results / POLICY_HUNG).unlink(missing_ok=True)
            if not class_cols and self.analyzer.states is not None:
                # (the table's columns from the start: its first field may have no cells)
                class_cols = list(self.analyzer.states.classes)
            self.store = ResultsStore(
                self.results, self.counts, tail_frames=cfg.tail_frames, class_cols=class_cols,
                states_engine=cfg.states,  # (named where its classes cannot be cells.csv columns)
            )  # fmt: skip
        except BaseException:
            self._stop_watch()  # (no worker: nothing to watch)
            self._lock.release()
            raise
        self._take_restart_number()
        self.link: Any = None
        self._agent_gone = threading.Event()
        """Set once the agent's process is found gone without ending its run (`_live`):
        decisions are sent no more (none would be answered)."""
        self._parent_gone = threading.Event()
        if cfg.watch_parent:
            threading.Thread(
                target=watch_stdin, args=(self._parent_gone,), name="livescope-parent", daemon=True
            ).start()
        # trackers and fields as of the last field whose decisions were made (what a
        # restarted worker resumes from), kept by the decision thread
        self._tracker_states: dict[str, TrackerSnapshot | None] = {
            p: tr.snapshot() for p, tr in self.analyzer.trackers.items()
        }
        self._decided_done: dict[str, int] = dict(self.done)
        # each position's view (pixel size, frame shape) as of its tracker's state above: a
        # resumed tracker without it linked the cells of a new objective or binning
        self._decided_views = dict(self.analyzer.views)
        # each position's tracker state as JSON, made once per snapshot: a field changes
        # one position's tracker, and every position's was made again for each field's
        # state.json (96 positions: ~1-2 s a field after 10,000 fields, measured here)
        self._tracker_json: dict[str, tuple[TrackerSnapshot, str]] = {}
        self._policy_gen = self._policy_gen_written = 0
        self._policy_lock = threading.Lock()
        self._store_q: queue.Queue[StoreJob | None] = queue.Queue()
        self.max_unstored_bytes = MAX_UNSTORED_BYTES
        """The bound on the fields analysed but not yet stored (see `MAX_UNSTORED_BYTES`)."""
        # bytes each of them holds (by id of its Field), from the moment the main thread
        # hands it to the decision thread until it is stored (or dropped by a failure)
        self._unstored: dict[int, int] = {}
        self._unstored_bytes = 0
        self._unstored_cv = threading.Condition()
        self._unstored_said = False
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
        self._decide_q: queue.Queue[DecideJob | None] = queue.Queue()
        # clear from the moment a field is handed to the decision thread until every field
        # handed to it is decided: the store thread, woken as the main thread goes free,
        # must not start a step just as a field's decisions begin
        self._decide_free = threading.Event()
        self._decide_free.set()
        self._deciding = 0  # fields handed to the decision thread, not yet decided
        self._deciding_lock = threading.Lock()
        # clear while the main thread moves on to a field whose frames are already here:
        # the decision thread starts once the engines run (or after HANDOFF_WAIT_S), so
        # the two do not fight over the GIL and the CPU while the next field is prepared
        self._handoff = threading.Event()
        self._handoff.set()
        self._fields: queue.Queue[Field | Exception | None] = queue.Queue()
        """Fields put together from the bus, for the main thread (a live run's assembler's)."""
        self._decide_error: BaseException | None = None
        self._decide_thread = threading.Thread(
            target=self._decide_loop, name="livescope-decide", daemon=True
        )
        self._decide_thread.start()

    # ------------------------------------------------------------ state

    def _state_path(self) -> Path:
        return self.results / "state.json"

    def _lineage_path(self) -> Path:
        return self.results / "lineage.jsonl"

    def _save_state(self, state: dict[str, Any] | None = None, *, finished: bool = False) -> None:
        """Trackers and the last analysed field of each position (after a field is stored).

        Each tracker goes with its view (`FrameAnalyzer.views`: the pixel size and
        frame shape its tracks are in): a resumed worker whose next field is of
        another objective, binning or ROI ends the tracks, as one never stopped.

        ``finished``: saved at the worker's end, once the CTC results are swapped in
        (live masks left then are stale: `restore_live_masks`).

        The lineage of the tracks that ended since the last save (their rows never
        change again) is appended to ``lineage.jsonl`` first, and the state counts
        its bytes (``lineage_bytes``): a worker killed in between resumes with those
        rows cut off (`_restore`), as the state it resumes from still has them in
        its trackers. In the state each tracker holds its live tracks' lineage only:
        with every track the run ever started it grew with the run, rewritten whole
        after every field (10 MB, 50 ms a field after 10,000 time points of 10
        positions of 100 cells, 3 lost and 3 new each).
        """
        state = dict(state if state is not None else self._snapshot())
        if finished:
            state["finished"] = True
        # the trackers' snapshots become JSON here, on the store thread, off the decisions' way;
        # only those taken since the last save (the others' JSON is kept from then)
        trackers: list[str] = []
        ended: list[str] = []  # (lines of lineage.jsonl)
        made_now: dict[str, tuple[TrackerSnapshot, str]] = {}
        for pos, snap in state.pop("trackers").items():
            made = self._tracker_json.get(pos)
            if made is None or made[0] is not snap:
                if rows := snap.ended_since(self._lineage_saved.get(pos)):
                    ended.append(json.dumps({"position": pos, "tracks": rows}) + "\n")
                made = made_now[pos] = (snap, json.dumps(snap.state(ended=False)))
            trackers.append(f"{json.dumps(pos)}: {made[1]}")
        if ended:
            self._append_lineage("".join(ended).encode("utf-8"))
        for pos, made in made_now.items():  # (only once their ended rows are written)
            self._tracker_json[pos] = made
            self._lineage_saved[pos] = made[0]
        state["lineage_bytes"] = self._lineage_bytes
        state["class_cols"] = self.store.class_cols
        text = json.dumps(state)  # (an object with keys: ends in "}")
        write_atomic(self._state_path(), f'{text[:-1]}, "trackers": {{{", ".join(trackers)}}}}}')

    def _append_lineage(self, data: bytes) -> None:
        """Write ``data`` to ``lineage.jsonl`` after the bytes the last state counts.

        (Written there, not appended: whatever a worker before this one left after
        them, rows a state never counted, goes.)
        """
        path = self._lineage_path()
        with path.open("r+b" if self._lineage_bytes else "wb") as f:
            f.seek(self._lineage_bytes)
            f.write(data)
            f.truncate()
        self._lineage_bytes += len(data)

    def _read_lineage(self, upto: int) -> dict[str, list[list[int]]]:
        """Return the first ``upto`` bytes of ``lineage.jsonl``: each position's ended tracks.

        Raises OSError or ValueError (or KeyError, TypeError) where it is missing,
        shorter, or damaged (`_restore` refuses the state that counts them).
        """
        ended: dict[str, list[list[int]]] = {}
        if upto < 0:
            raise ValueError(f"lineage_bytes {upto} is not a length")
        if upto == 0:
            return ended
        path = self._lineage_path()
        with path.open("rb") as f:
            data = f.read(upto)
        if len(data) < upto:
            raise ValueError(f"{path} holds {len(data)} bytes, not the {upto} the state counts")
        for n, line in enumerate(data.split(b"\n"), start=1):
            if not line and n > data.count(b"\n"):  # (after the last line's end)
                break
            try:
                rec = json.loads(line.decode("utf-8"))
                ended.setdefault(str(rec["position"]), []).extend(rec["tracks"])
            except (ValueError, KeyError, TypeError) as exc:  # (named: the error says state.json)
                what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
                raise ValueError(f"{path} line {n} is damaged ({what})") from exc
        return ended

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
        results neither sends it twice nor forgets the light and frames it booked;
        with the decisions' counts, which the trackers' state (saved once the
        field is stored) may not have yet (decision thread).
        """
        counts = dict(self.counts)  # (one copy: other threads add keys meanwhile)
        return {
            "version": 1,
            "decided": dict(self.decided),
            "policy": self.policy.state(),
            "counts": {k: v for k, v in counts.items() if k.startswith(DECISION_COUNTS)},
        }

    def _restore(self) -> list[str]:
        """Resume from the state a killed worker saved; return the cells table's state columns."""
        self._disable_hung()  # (before the policies' restore(): one may be what hung)
        path = self._state_path()
        state: dict[str, Any] = {}
        class_cols: list[str] = []
        if not path.is_file():
            # (killed before its first field was stored: the fields are analysed afresh,
            # but those it decided are not decided again, below)
            logger.warning("no %s to resume from; the fields are analysed afresh", path)
        else:
            # (a damaged file is the worker's refusal, naming it, which the supervisor does
            # not retry; a bare KeyError or TypeError was retried until it gave up)
            redo = "damaged or edited; restore it, or delete it to analyse the run's fields afresh"
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
                run_id = state.get("run_id", "")
                done = {str(k): int(v) for k, v in state["done"].items()}
                counts = {str(k): int(v) for k, v in state.get("counts", {}).items()}
                # (a state saved before lineage.jsonl was: its trackers hold every track's)
                lineage_bytes = int(state.get("lineage_bytes", 0))
                ended = self._read_lineage(lineage_bytes)
                trackers: dict[str, OnlineTracker] = {}
                for pos, st in state["trackers"].items():
                    try:
                        trackers[str(pos)] = OnlineTracker.from_state(st, ended.pop(pos, ()))
                    except LivescopeError as exc:  # (a tracker state it refuses)
                        raise LivescopeError(
                            f"cannot read worker state {path}: position {pos}'s {exc} ({redo})"
                        ) from exc
                if ended:
                    raise ValueError(
                        f"{self._lineage_path()} holds tracks of position {next(iter(ended))!r}, "
                        "which the state has no tracker of"
                    )
                # (a state saved before views were: as then, the first field's is taken)
                views = {
                    str(pos): (None if px is None else float(px), tuple(int(n) for n in shape))
                    for pos, (px, shape) in state.get("views", {}).items()
                }
                class_cols = list(state.get("class_cols", []))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                # (ValueError: not UTF-8, not JSON, or a count or time point that is no
                # number; the others: a part missing or of another kind, e.g. no "done")
                what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
                raise LivescopeError(f"cannot read worker state {path}: {what} ({redo})") from exc
            self.run_id = run_id
            self.done = done
            for pos, t in self.done.items():  # (the log's entries of those are not kept)
                self.recorded.forget(pos, t)
            self.counts.update(counts)
            self.analyzer.trackers.update(trackers)
            self.analyzer.views.update(views)
            self._lineage_bytes = lineage_bytes
            if "lineage_bytes" in state:  # (else every ended track's row is written once)
                self._lineage_saved = {p: tr.snapshot() for p, tr in trackers.items()}
        # rows appended after those the state counts: their tracks are in its trackers
        lineage = self._lineage_path()
        if lineage.is_file() and lineage.stat().st_size > self._lineage_bytes:
            with lineage.open("r+b") as f:
                f.truncate(self._lineage_bytes)
        ppath = self.results / "policy_state.json"
        if ppath.is_file():
            # (as state.json's: a damaged file is the worker's refusal, naming it, which the
            # supervisor does not retry; a bare KeyError was retried until it gave up)
            try:
                pstate = json.loads(ppath.read_text(encoding="utf-8"))
                self.policy.restore(pstate["policy"])
                self.decided = {str(k): int(v) for k, v in pstate["decided"].items()}
                # the decisions of fields decided but not stored (not decided again: `_decide`)
                for k, v in pstate.get("counts", {}).items():
                    self.counts[k] = max(self.counts[k], int(v))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                # (ValueError: not UTF-8, not JSON, or a count that is no number; the others:
                # a part missing or of another kind, e.g. no "decided", or a list for it)
                what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
                raise LivescopeError(
                    f"cannot read the policies' state {ppath}: {what} (damaged or edited; "
                    "the run's decisions cannot be resumed without it: restore it, or "
                    "analyse the run again into an empty results folder)"
                ) from exc
        if not state and not ppath.is_file():
            # (nothing was done, but the killed worker may have stored its first field's rows
            # before it could save a state: they go, as the field is analysed again)
            trim_results(self.results, self.done, self.decided)
            return []
        self.counts["restarts"] += 1
        restore_live_masks(self.results, finished=bool(state.get("finished")))
        trim_results(self.results, self.done, self.decided)
        self.resumed = True
        logger.info("worker resumed: %s", dict(self.done))
        return class_cols

    def _take_restart_number(self) -> None:
        """Count the restarts as the supervisor that started it does (`WORKER_RESTART_ENV`).

        Counted from the state resumed from alone, one fell short for each restarted worker
        killed before it stored a field (it saved no state): ``restarts`` said 1 where the
        supervisor had restarted the worker twice. A worker started by hand keeps its own
        count (one more than the state it resumed from).
        """
        given = os.environ.get(WORKER_RESTART_ENV)
        if given is None:
            return
        try:
            number = int(given)
            if number < 0:
                raise ValueError(given)
        except ValueError:
            logger.warning("%s=%r is not a restart number; the worker counts its restarts "
                           "itself", WORKER_RESTART_ENV, given)  # fmt: skip
            return
        self.counts["restarts"] = number

    def _busy_since(self, since: int, until: int, *, prune: bool = True) -> int:
        """Return how long the engines ran on earlier fields between ``since`` and ``until`` (ns).

        Every span back to ``since`` counts: with the last 32 alone, a field queued
        behind more than 32 (a worker ~40 s behind in a 150-time-point demo) had
        the rest of its wait taken for pipeline overhead (seconds of it). Spans
        ended `SPAN_HORIZON_NS` before ``since`` are dropped: fields come in the
        order their frames were taken, give or take that; ``prune`` False for a
        field whose ``since`` is not its frames' time (one read back from the
        recording: its read time, now, would drop spans the live field after it
        still waited behind).
        """
        spans = self._engine_spans
        busy = overlap_ns(spans, since, until)
        horizon = since - SPAN_HORIZON_NS
        while prune and spans and spans[0][1] < horizon:
            spans.popleft()
        return busy

    # ------------------------------------------------------------ hung policies

    def _disable_hung(self) -> None:
        """Disable the policies a worker before this one took as hung (`POLICY_HUNG`)."""
        path = self.results / POLICY_HUNG
        if not path.is_file():
            return
        try:
            hung = json.loads(path.read_text(encoding="utf-8"))["policies"]
            hung = {str(name): str(why) for name, why in hung.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # (never the worker's refusal: at worst the policy hangs again, as before)
            logger.error("cannot read %s (%s): the policies it names as hung are not "
                         "disabled; delete it if it was edited", path, exc)  # fmt: skip
            return
        self._hung = hung  # (kept in the file as long as the run goes on)
        for name, why in hung.items():
            self.policy.disable(name, why)

    def _watch_policies(self) -> None:
        """Take a policy whose call runs past `POLICY_HANG_S` as hung (its own daemon thread).

        Reads only what the engine notes of each call (`PolicyEngine.calling`):
        nothing is written on the decisions' way. The call, still running, is
        logged as an error and written to `POLICY_HUNG` once; if it returns
        after all (also when the watch stops), it is taken off the file again.
        """
        marked: tuple[str, str, float] | None = None  # the call taken as hung, while it runs
        stopped = False
        while not stopped:
            stopped = self._watch_stop.wait(_WATCH_EVERY_S)
            note = self.policy.calling
            try:
                if marked is not None and note is not marked:
                    late, marked = marked, None
                    self._unmark_hung(late)
                if stopped or note is None or note is marked:
                    continue
                if time.monotonic() - note[2] < POLICY_HANG_S:
                    continue
                field = self._field_in_hand
                if self.policy.calling is note:  # (still that call: the field is its own)
                    marked = note
                    self._mark_hung(note, field)
            except Exception:  # a full disk, say: logged, and the watch goes on
                logger.exception("the policies' watchdog could not write %s",
                                 self.results / POLICY_HUNG)  # fmt: skip

    def _stop_watch(self) -> None:
        """End the policies' watchdog (a slow call's mark taken off first: its last look)."""
        self._watch_stop.set()
        self._watcher.join()

    def _mark_hung(self, note: tuple[str, str, float], field: tuple[str, int] | None) -> None:
        """Log policy call ``note`` (of ``field``, None: at start) as hung; name it in the file."""
        name, call, since = note
        where = f"on field {field[0]} t={field[1]}" if field is not None else "at start"
        path = self.results / POLICY_HUNG
        logger.error(
            "policy %r has been in its %s %s for %.0f s and is taken as hung: it holds up the "
            "decisions and results of every later field; a worker restarted after this one "
            "(the supervisor ends it as hung) runs without it (%s)",
            name, call, where, time.monotonic() - since, path,
        )  # fmt: skip
        self._hung[name] = (
            f"hung: its {call} {where} had not returned after {POLICY_HANG_S:g} s when the "
            "worker was ended (the worker was restarted without it)"
        )
        write_atomic(path, json.dumps({"version": 1, "policies": self._hung}))

    def _unmark_hung(self, note: tuple[str, str, float]) -> None:
        """Take policy call ``note``, marked hung, off the file: it returned (slow, not hung)."""
        name, call, since = note
        path = self.results / POLICY_HUNG
        logger.warning("policy %r's %s returned after %.0f s: slow, not hung (taken off %s)",
                       name, call, time.monotonic() - since, path)  # fmt: skip
        self._hung.pop(name, None)
        if self._hung:
            write_atomic(path, json.dumps({"version": 1, "policies": self._hung}))
        else:
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------ running

    def run(self, *, attach_timeout_s: float = 30.0) -> dict[str, Any]:
        """Analyse until the agent has finished and every recorded field is analysed.

        Returns the worker's summary (also written to ``results/worker.json``).

        Raises
        ------
        LivescopeError
            if no agent appears within ``attach_timeout_s`` (no ``bus.json``) and
            the folder holds no run or recording to analyse either (a wrong path).

        """
        deadline = time.monotonic() + attach_timeout_s
        bus = self.run_dir / BUS_FILE
        while not bus.exists() and time.monotonic() < deadline:
            if (self.run_dir / "summary.json").exists():
                break  # the run has already ended: analyse what was recorded
            time.sleep(0.05)
        if not any((self.run_dir / f).exists() for f in (BUS_FILE, "summary.json", "frames.jsonl")):
            self._abandon()
            raise no_agent_error(self.run_dir, attach_timeout_s)
        with fast_thread_switching():
            try:
                # the engines' first calls (allocation, kernels, CUDA graphs) before the first
                # field, at the camera's full frame and the default objective's pixel size;
                # the segmentation engine is loaded (and its model checked) here
                cam = self.profile.camera.sensor_shape_px
                px = self.profile.objective.pixel_size_um
                before = native_thread_ids()
                self.warm_up_s = round(self.analyzer.warm_up((cam[0], cam[1]), px), 3)
                self._lower_pools(before)
                # and the decisions' path (the run's first decisions come in its busiest field)
                self._rehearse_decisions()
                gc.collect()
                gc.freeze()  # engines and config are loaded: later collections skip them
                if not (bus.exists() and self._live()):
                    self.run_id = self.run_id or self._recorded_run_id()
                    (self.results / "ready").write_text(str(time.time()), encoding="utf-8")
                self._catch_up_all()
                self._drain_decisions()
                if self._decide_error is not None:
                    raise LivescopeError(f"deciding failed: {self._decide_error}")
                # the last fields' results are written before the run counts as analysed:
                # a store error there (a full disk) fails the worker as on any other field
                self._drain_store()
                if self._store_error is not None:
                    raise LivescopeError(f"storing results failed: {self._store_error}")
            except BaseException:
                self._finish(failed=True)  # no state saved: the field in hand is redone
                raise
            return self._finish()

    def _recorded_run_id(self) -> str:
        """Return the run id of the ended run's ``summary.json`` ('' if it has none)."""
        try:
            summary = json.loads((self.run_dir / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # (a run cut short has no summary)
            return ""
        run_id = summary.get("run_id") if isinstance(summary, dict) else None
        return run_id if isinstance(run_id, str) else ""

    def _lower_pools(self, before: set[int]) -> None:
        """Lower the threads the engines started since ``before`` (Linux) as bulk threads.

        ONNX Runtime starts its intra-op pool with a session of more than one
        thread (``LIVESCOPE_THREADS``; `livescope demo` gives the engines half
        the cores, and without it ONNX Runtime takes them all), torch its CPU
        pool at the first call; each inherits the priority of the thread that
        loaded or warmed up the engine, this one, still at the agent's. Every
        thread the engines started that Python does not list is lowered (the
        worker's own are lowered, or not, by their own code), except the CUDA
        driver's (named ``cuda...``: its event and callback threads, left as
        they were until measured on a GPU).
        """
        ours = {t.native_id for t in threading.enumerate()}
        pools = native_thread_ids() - before - ours
        if pools := {tid for tid in pools if not _thread_name(tid).startswith("cuda")}:
            n = lower_native_threads(self.config.engine_nice, sorted(pools))
            logger.debug("lowered %d of the engines' %d pool thread(s)", n, len(pools))

    def _rehearse_decisions(self) -> None:
        """Each declared rule's decision built, checked and serialised once, off the record."""
        try:  # never fatal: at worst the first decisions run cold
            if self._first_event is not None:
                self.policy.rehearse(rehearsal_field(self._first_event, self.profile, REHEARSAL))
        except Exception as exc:  # noqa: BLE001
            logger.debug("rehearsing the decisions failed: %s", exc)

    def _live(self) -> bool:
        """Analyse fields as the agent sends them; False if the run ended before attaching.

        Also False when the agent's process is gone without ending its run
        (killed or crashed before the worker attached: its ``bus.json`` left over).
        """
        info: BusInfo | None = None
        try:
            info = BusInfo.read(self.run_dir)
            self.link = attach(info, policy="every", maxlen=self.config.maxlen)
        except LivescopeError as exc:
            if info is not None and info.agent_gone():  # (also killed while being attached to)
                # nothing will remove its bus.json or write its summary: what it recorded
                # is analysed, as for a run that ended (waiting would be for ever)
                logger.warning(
                    "the agent of run %s (process %d) is gone without ending its run (killed "
                    "or crashed; its %s is left over): analysing what it recorded",
                    info.run_id, info.pid, self.run_dir / BUS_FILE,
                )  # fmt: skip
                self._agent_gone.set()
                self.run_id = self.run_id or info.run_id  # (there is no summary to say it)
                return False
            # the agent ends by removing bus.json, closing the bus, then writing
            # summary.json: a run that ended just as the worker attached is analysed
            # from its recording (an agent gone without a summary is a failure)
            deadline = time.monotonic() + _ENDED_WAIT_S
            while time.monotonic() < deadline and not (self.run_dir / BUS_FILE).exists():
                if (self.run_dir / "summary.json").exists():
                    logger.info("the run ended as the worker attached (%s): analysing its "
                                "recording", exc)  # fmt: skip
                    return False
                time.sleep(0.05)
            raise
        self.run_id = self.link.run_id
        if self.link.decisions is not None:  # a late refusal gives its budget back
            self.link.decisions.on_late = self._unanswered.answered
        if self.config.overlay:
            self.store.open_overlay(self.run_id, self.run_dir)
        # frames are put together into fields on a thread of their own, also while the
        # engines run (see `FieldAssembler`)
        assembler = FieldAssembler(
            self.link, self.run_dir, self.config, self.recorded,
            self.done, self.counts, self._skip_lock, self._parent_gone, agent=self.link.info,
        )  # fmt: skip
        self._agent_gone = assembler.agent_gone
        self._fields = fields = assembler.fields
        assembler.start()
        try:
            # after every other thread has started (a thread inherits its creator's priority)
            lower_thread_priority(self.config.engine_nice)
            (self.results / "ready").write_text(str(time.time()), encoding="utf-8")
            while True:
                if fields.empty():
                    self._handoff.set()  # nothing to move on to: the decisions go now
                item = _take(fields)
                if not isinstance(item, Field):
                    # the end of the run (or an error): the last field's decisions go now,
                    # not after the recording has been read for fields the bus lost
                    self._handoff.set()
                    if item is None:
                        break
                    raise item
                self._process(item)
        finally:
            assembler.stop()
        return True

    # ------------------------------------------------------------ catching up

    def _catch_up(self, position: str, before_t: int | None, seq: int | None = None) -> None:
        """Analyse recorded fields of ``position`` newer than the last analysed one.

        ``before_t``: the live field at hand (its frame ``seq``), which they come before.
        """
        last = self.done.get(position, -1)
        if before_t is not None and before_t <= last + 1:
            return
        want = []
        if before_t is not None:  # the plan's fields in between (none for an unknown plan)
            want = [(position, t) for t in range(last + 1, before_t) if (position, t) in
                    self.expected]  # fmt: skip
        fields = self.recorded.logged_until(want, self.config.recording_wait_s, until_seq=seq)
        ts = sorted(t for (p, t) in fields if p == position and t > last and
                    (before_t is None or t < before_t))  # fmt: skip
        # (before they are analysed: `fields` is the log reader's own, and each field analysed
        # is dropped from it (`RecordedFields.forget`); looked for after, every field read
        # back was counted in fields_missing, "neither received nor recorded")
        missing = [k for k in want if k not in fields]
        for t in ts:
            self._process_recorded(position, t, fields[(position, t)])
        if missing:
            self.counts["fields_missing"] += len(missing)
            logger.warning("fields %s were neither received nor recorded: not analysed", missing)

    def _complete(self, fld: Field) -> None:
        """Fill a live field's missing frames (lost on the bus) from the recording."""
        key = (fld.position, fld.t)
        # the log holds every frame of the field once it reaches the frame before the next
        # field's first (its lost frames may come after the last one received)
        last = int(fld.header.get("seq", -1)) if fld.next_seq is None else fld.next_seq - 1
        fields = self.recorded.logged_until([key], self.config.recording_wait_s, until_seq=last)
        added = self.recorded.read_into(fields.get(key, []), fld.frames)
        for info in fields.get(key, []):
            fld.note(info)
        self.counts["frames_completed_from_recording"] += added
        if len(fld.frames) < self.recorded.count(key):
            self.counts["fields_incomplete"] += 1

    def _catch_up_all(self) -> None:
        fields = self.recorded.logged()
        for position in sorted({p for p, _ in fields}):
            self._catch_up(position, None)

    def _process_recorded(self, position: str, t: int, infos: list[dict[str, Any]]) -> None:
        frames: dict[tuple[str, int], NDArray[Any]] = {}
        self.recorded.read_into(infos, frames)
        if not frames:  # every frame unreadable (each named in the log): counted, not analysed
            self.counts["fields_unreadable"] += 1
            return
        if len(frames) < max(len(infos), self.expected.get((position, t), 0)):
            self.counts["fields_incomplete"] += 1  # unreadable frames, or never logged
        last = infos[-1]
        header = {**last, "t_camera_ns": int(last.get("t_camera_ns", 0))}
        self.counts["dropped_live"] += 1
        self.counts["frames_dropped_live"] += len(frames)
        fld = Field(position, t, frames, header, clock_ns(), live=False)
        for info in infos:
            fld.note(info)
        self._process(fld)

    # ------------------------------------------------------------ one field

    def _process(self, fld: Field) -> None:
        if fld.live:
            # fields the bus lost come from the recording
            self._catch_up(fld.position, fld.t, int(fld.header.get("seq", -1)))
        if fld.position in self.done and fld.t <= self.done[fld.position]:
            if fld.live:  # analysed from the recording while its frames were on their way
                with self._skip_lock:  # (the frames received: none read back for nothing)
                    self.counts["frames_already_analysed"] += len(fld.frames)
            self._handoff.set()
            return
        if fld.live and len(fld.frames) < self.recorded.count((fld.position, fld.t)):
            self._complete(fld)
        self._main_free.clear()
        try:
            self._analyse_field(fld)
        finally:
            self._main_free.set()

    def _analyse_field(self, fld: Field) -> None:
        if self._decide_error is not None:
            raise LivescopeError(f"deciding failed: {self._decide_error}")
        t_start = clock_ns()
        h = fld.header
        chans = fld.analysed = {}
        for (ch, _z), arr in sorted(fld.frames.items(), key=lambda kv: abs(kv[0][1] - self.mid_z)):
            chans.setdefault(ch, arr)  # the plane nearest the middle of a z-stack
        nuclear = [(rank, c) for c in chans if self.kinds.get(c) != "label_free"
                   if (rank := self.nuclear_rank.get(c, 1)) is not None]  # fmt: skip
        fluo = chans[min(nuclear)[1]] if nuclear else None
        free_ch = next((c for c in chans if self.kinds.get(c) == "label_free"), None)
        free = chans[free_ch] if free_ch is not None else None
        # the segmented frame's (the fluorescence, else the label-free one it is stained
        # from): another channel's, binned otherwise, scaled the engines and placed the
        # cells on the stage by twice or half the distance
        px = fld.pixel_size_um(min(nuclear)[1] if nuclear else free_ch)
        stain = fld.t % max(1, self.config.stain_every) == 0
        if (
            stain and fluo is not None and free is not None and self.analyzer.stain is not None
            and self.config.skip_stain_when_behind and not self._stain_decides
            and self._later_waiting(fld)
        ):  # fmt: skip
            stain = False  # (the overlay's only: the fluorescence is what is segmented)
            fld.stain_skipped = True  # (counted when decided: the state saved is as of then)
        # the engines busy with earlier fields since this field's last frame was taken: it
        # waits for them however fast its frames travel, so that is not the pipeline's cost
        t_cam = int(h.get("t_camera_ns") or 0)
        # (t_camera_ns is the agent's clock: used only where it can be this host's one)
        live_cam = fld.live and 0 < t_cam <= fld.t_received_ns
        since = t_cam if live_cam else fld.t_received_ns
        busy = self._busy_since(since, t_start, prune=live_cam)
        if live_cam:
            self.behind.note(fld.position, fld.t, (t_start - t_cam) / 1e9)
        t_a0 = clock_ns()
        self._handoff.set()
        self._main_free.set()  # the engines release the GIL: the store thread may work
        try:
            res = self.analyzer.analyse(
                fluorescence=fluo,
                label_free=free,
                position=fld.position,
                pixel_size_um=px,
                frame=fld.t,
                stain=stain,
            )
        finally:
            self._main_free.clear()
        t_analysed = clock_ns()  # fmt: skip
        self._engine_spans.append((t_a0, t_analysed))
        tracker = self.analyzer.trackers.get(fld.position)
        self.done[fld.position] = fld.t
        self.recorded.forget(fld.position, fld.t)  # (never read back again)
        self.counts["fields_analysed"] += 1
        self.counts["frames_analysed"] += len(fld.frames)
        if res.tracks is not None and res.tracks.ignored:
            # (its cells are stored with track 0; the analyzer's warning names the field)
            self.counts["fields_not_tracked"] += 1
        if fld.live and not self._fields.empty():
            self._handoff.clear()  # the next field is here: it goes first
        with self._deciding_lock:  # (before the main thread goes free: see _decide_free)
            self._deciding += 1
            self._decide_free.clear()
        size = _held_bytes(fld, res)  # (a few µs)
        with self._unstored_cv:
            self._unstored[id(fld)] = size
            self._unstored_bytes += size
        self._decide_q.put(
            DecideJob(fld, res, fluo, px, t_start, t_analysed, busy,
                       tracker.snapshot() if tracker is not None else None,
                       {k: self.counts[k] for k in MAIN_COUNTS})
        )  # fmt: skip
        if self._store_error is not None:
            raise LivescopeError(f"storing results failed: {self._store_error}")
        # (after the hand-off: this field's decisions never wait for the store)
        self._wait_for_store(size)

    def _wait_for_store(self, size: int) -> None:
        """Wait until the fields not yet stored leave room for another of ``size`` bytes.

        Main thread, after a field is handed to the decision thread: the next
        field's analysis waits for the store (`MAX_UNSTORED_BYTES`). Never while
        nothing is left to store (a field larger than the bound goes alone).

        Raises
        ------
        LivescopeError
            if the store or decision thread failed (or ended) meanwhile.

        """
        with self._unstored_cv:
            if not self._store_full(size):
                return
        # the decisions of the fields handed on go now, and the store thread may work
        self._handoff.set()
        self._main_free.set()
        if not self._unstored_said:
            self._unstored_said = True
            logger.warning(
                "the results are stored slower than the fields are analysed: %.0f MB of "
                "fields wait to be stored in %s (the bound, MAX_UNSTORED_BYTES: %.0f MB); the "
                "analysis waits for the store from here on, so the fields wait in the "
                "recording (none is lost); a faster local disk for the run folder, or one "
                "an antivirus does not scan, keeps up",
                self._unstored_bytes / 1e6, self.results, self.max_unstored_bytes / 1e6,
            )  # fmt: skip
        with self._unstored_cv:
            while self._store_full(size):
                if self._store_error is not None:
                    raise LivescopeError(f"storing results failed: {self._store_error}")
                if self._decide_error is not None:
                    raise LivescopeError(f"deciding failed: {self._decide_error}")
                if not self._store_thread.is_alive() or not self._decide_thread.is_alive():
                    # (a BaseException ended it: nothing will store the fields waiting)
                    raise LivescopeError(
                        "storing results failed: the store or decision thread ended with "
                        f"{self._unstored_bytes / 1e6:.0f} MB of fields not stored (see the "
                        "log for its error)"
                    )
                self._unstored_cv.wait(_STORE_WAIT_S)

    def _store_full(self, size: int) -> bool:
        """Whether the fields not yet stored leave no room for one of ``size`` bytes (lock held)."""
        return self._unstored_bytes > 0 and self._unstored_bytes + size > self.max_unstored_bytes

    def _stored(self, fld: Field) -> None:
        """Take ``fld`` off the fields not yet stored (stored, or dropped by a failure)."""
        with self._unstored_cv:
            self._unstored_bytes -= self._unstored.pop(id(fld), 0)
            self._unstored_cv.notify_all()

    def _later_waiting(self, fld: Field) -> bool:
        """Whether a later time point of ``fld``'s position is already queued (live fields)."""
        if not fld.live:
            return False
        with self._fields.mutex:  # (a look at the queue: the assembler adds to it meanwhile)
            return any(
                isinstance(f, Field) and f.position == fld.position and f.t > fld.t
                for f in self._fields.queue
            )

    def _decide_loop(self) -> None:
        while (job := self._decide_q.get()) is not None:
            try:
                if self._decide_error is not None:
                    self._stored(job.fld)  # (never stored: not waited for)
                    continue  # the worker is failing; nothing more is decided
                self._handoff.wait(HANDOFF_WAIT_S)
                self._decide(job)
            except BaseException as exc:  # (a policy's KeyboardInterrupt too: the worker stops)
                self._stored(job.fld)  # (never stored: not waited for)
                # (one a policy raised, that the engine does not take as its bug: named)
                who, self.policy.calling = self.policy.calling, None  # (not hung: it ended)
                if who is not None:
                    exc = LivescopeError(
                        f"policy {who[0]!r}: its {who[1]} raised {type(exc).__name__}: {exc}"
                    )
                logger.exception("deciding field %s t=%d failed%s", job.fld.position, job.fld.t,
                                 f": {exc}" if who is not None else "")  # fmt: skip
                self._decide_error = exc
            finally:
                with self._deciding_lock:
                    self._deciding -= 1
                    if self._deciding == 0:
                        self._decide_free.set()

    def _drain_decisions(self) -> None:
        """Wait until every analysed field's decisions are made (and handed to the store)."""
        self._handoff.set()
        if self._decide_thread.is_alive():
            self._decide_q.put(None)
            self._decide_thread.join()

    def _geometry_px(self, job: DecideJob) -> float:
        """Return the µm per pixel the policies place close-ups and measure distances by.

        The frame's, else the profile's objective's (a frame from a publisher of
        one's own may carry none; taken for 1 µm, a close-up or recentring moved
        the stage by pixels), said once.
        """
        if job.pixel_size_um:
            return float(job.pixel_size_um)
        px = float(self.profile.objective.pixel_size_um)
        if not self._no_pixel_size_said:
            self._no_pixel_size_said = True
            logger.warning(
                "frames carry no pixel size: the policies place close-ups and measure "
                "distances by the profile's objective (%s, %g µm per pixel)",
                self.profile.objective.name, px,
            )  # fmt: skip
        return px

    def _decide(self, job: DecideJob) -> None:
        """Run a field's policies, send its decisions, hand it to the store thread.

        A field the worker before a restart decided but had not stored is
        analysed again for its results, not decided again: its decisions went
        out, their firings are in ``policy.jsonl`` and the policies' state
        restored is as of after them.
        """
        fld, res = job.fld, job.res
        t_handoff = clock_ns()
        self._field_in_hand = (fld.position, fld.t)  # (the policies' watchdog names it)
        decided_before = fld.t <= self.decided.get(fld.position, -1)
        # no garbage collection (up to 2 ms) until answered: ~1-2 ms, at most the
        # decision timeout when the agent does not answer
        with collection_deferred():
            t0 = time.perf_counter()
            obs = observe(
                fld, res, nuclear_frame=job.nuclear, pixel_size_um=self._geometry_px(job),
                run_id=self.run_id,
                engines=self.analyzer.engines_used(res, stain_decides=self._stain_decides),
                tracker=job.tracker_state, orientation=self.profile.camera.orientation,
            )  # fmt: skip
            ms_prepare = 1000 * (time.perf_counter() - t0)
            t0 = time.perf_counter()
            # each sent as it passes; none to an agent found gone (no answer would come)
            link = None if self._agent_gone.is_set() else self.link
            outgoing = FieldDecisions(link, self.run_dir)
            verdicts: list[Verdict] = []
            if not decided_before:
                verdicts = self.policy.evaluate(obs, on_pass=outgoing.post)
            ms_policy = 1000 * (time.perf_counter() - t0)
            sent, acks = outgoing.finish(
                verdicts, obs, policy=self.policy, counts=self.counts,
                timeout_s=self.config.decision_timeout_s, unanswered=self._unanswered,
            )  # fmt: skip
        t_decided = clock_ns()  # every decision answered (or timed out)
        given_back = frozenset(outgoing.given_back)
        # the firings are logged (and counted) before the policies' state that books them
        # is saved: a worker killed in between drops them when restarted (and decides the
        # field again), one killed after keeps them (and does not): never lost, never twice
        self.store.log_firings(fld, obs, verdicts, acks, given_back)
        if not decided_before:  # (never back: the killed worker may have decided later ones)
            self.decided[fld.position] = fld.t
        self._policy_gen += 1  # snapshot now: the policies change with the next field
        policy_state = (self._policy_gen, json.dumps(self._policy_snapshot()))
        if verdicts:  # a decision went out: its budget and cooldown are saved before anything
            self._write_policy_state(*policy_state)
        ms = job.latency_ms(
            prepare=ms_prepare, policy=ms_policy, posting=outgoing.posting_ms,
            posted=outgoing.posted, sent=sent, t_handoff_ns=t_handoff, t_decided_ns=t_decided,
        )  # fmt: skip
        fld.t_start_ns, fld.t_done_ns = job.t_start_ns, t_decided
        self.counts["cells"] += len(obs.cells)
        self.counts["stains_skipped_behind"] += fld.stain_skipped
        self._decided_done[fld.position] = fld.t
        self._tracker_states[fld.position] = job.tracker_state
        if res.view is not None:
            self._decided_views[fld.position] = res.view
        # results, overlay and state are written by the store thread, off the decision path
        state = self._snapshot(job.counts)
        job_done = StoreJob(fld, res, obs, verdicts, acks, ms, state, policy_state)
        self._store_q.put(job_done)

    def _snapshot(self, main_counts: dict[str, int] | None = None) -> dict[str, Any]:
        """Return the state as of the last decided field, for the store thread to save.

        ``main_counts``: the main thread's counts as of that field (`DecideJob.counts`),
        not as they are now (a field or two on); None: as they are (the worker's end).
        """
        counts = dict(self.counts)  # (one copy: other threads add keys meanwhile)
        if main_counts is not None:
            counts.update(main_counts)
        return {
            "version": 1,
            "run_id": self.run_id,
            "done": dict(self._decided_done),
            "counts": counts,
            "trackers": {p: st for p, st in self._tracker_states.items() if st is not None},
            "views": dict(self._decided_views),
        }

    def _store_loop(self) -> None:
        lower_thread_priority(self.config.engine_nice)  # bulk work, like the engines
        while (job := self._store_q.get()) is not None:
            if self._store_error is not None:
                self._stored(job.fld)  # (never stored: not waited for)
                continue  # the worker is failing; state is not saved past the error
            try:
                ms = 0.0
                steps = (
                    functools.partial(self.store.store, job.fld, job.res, job.obs),
                    functools.partial(self.store.publish, job.fld, job.res, job.obs,
                                      job.verdicts, job.acks),
                )  # fmt: skip
                for step in steps:
                    self._main_free.wait(0.05)  # never longer: results must not lag behind
                    self._decide_free.wait(0.05)
                    t0 = time.perf_counter()
                    step()
                    ms += 1000 * (time.perf_counter() - t0)
                job.ms["store"] = round(ms, 3)
                self._main_free.wait(0.05)
                self._decide_free.wait(0.05)
                self.store.log_latency(job.fld, job.ms)
                # the counts only this thread keeps, as of this field (the state was taken
                # when the field was decided, before it was published)
                counts = dict(self.counts)  # (one copy: other threads add keys meanwhile)
                job.state["counts"].update(
                    {k: v for k, v in counts.items() if k.startswith(STORE_COUNTS)}
                )
                # the policies' state first: a worker killed (or a write failing) in between
                # resumes with the field decided but not done, and analyses it again without
                # deciding it again (`_decide`); the other way round it was done but never
                # decided, and no policy ever saw it (a rule's streak of frames broken)
                self._write_policy_state(*job.policy_state)
                self._save_state(job.state)
            except Exception as exc:
                logger.exception("storing field %s t=%d failed", job.fld.position, job.fld.t)
                self._store_error = exc
            finally:
                self._stored(job.fld)

    def _drain_store(self) -> None:
        """Wait until every field handed to the store thread is written."""
        if self._store_thread.is_alive():
            self._store_q.put(None)
            self._store_thread.join()

    def _abandon(self) -> None:
        """Stop without a run to analyse: close, and leave the folder as it was found.

        The results files opened at start-up are removed while still empty, and
        the folders this worker made while they hold nothing else; no
        ``worker.json`` is written (there was no run).
        """
        self._drain_decisions()
        self._drain_store()
        self._stop_watch()
        self.analyzer.close()
        self.store.close(header=False)  # (the files are removed below while empty)
        for name in ("cells.csv", "policy.jsonl", "latency.jsonl", "revisions.jsonl"):
            path = self.results / name
            if path.is_file() and path.stat().st_size == 0:
                path.unlink()
        self._lock.release()
        for folder in reversed(self._made):
            try:
                folder.rmdir()  # only if empty: anything else there stays
            except OSError:
                break

    def _finish(self, *, failed: bool = False) -> dict[str, Any]:
        """Close everything; write ``worker.json`` (and, unless ``failed``, the CTC tracks).

        After a failure no state is saved: a restarted worker redoes the field
        that was in hand from the last state saved.
        """
        self._drain_decisions()
        self._drain_store()
        self._stop_watch()  # (only now: a hung policy holds up the decisions' drain)
        failed = failed or self._store_error is not None or self._decide_error is not None
        stats: dict[str, Any] = {}
        if self.link is not None:
            stats = self.link.frames.stats()
            if (client := self.link.decisions) is not None:
                client.drain()  # answered after the worker stopped waiting
                if client.late_answers:
                    self.counts["decisions_answered_late"] += client.late_answers
            self.link.close()
        self.store.close_overlay()
        live_kept: list[Path] = []
        revisions = read_revisions(self.results) if not failed else {}
        if not failed:  # the live track-id masks become a valid CTC result (tracks without gaps)
            for pos, tracker in self.analyzer.trackers.items():
                folder = self.results / "ctc" / pos
                if is_ctc_result(folder):  # a worker before a restart had finished it
                    if pos not in self.store.masks_refused:
                        continue  # its labels are no track ids: rewriting them scrambles it
                    # (fields of a finished position, analysed after a restart: their
                    # masks were not written beside the result's CTC labels, `store`)
                    self.counts["ctc_results_not_written"] += 1
                    logger.error("%s: fields analysed after this CTC result was finished are "
                                 "not in it (their cells are in cells.csv)", folder)  # fmt: skip
                    continue
                folder.mkdir(parents=True, exist_ok=True)
                # written beside them, then swapped in; the live masks are kept until the
                # state below is saved: a worker killed before that resumes from them
                # (`restore_live_masks`), not from masks already relabelled
                staged, live = ctc_staging(folder)
                shutil.rmtree(staged, ignore_errors=True)
                shutil.rmtree(live, ignore_errors=True)  # (a run's end killed before it went)
                try:
                    # (with the table of its CTC labels' track ids: CTC renumbers them)
                    rewrite_ctc_result(
                        folder, tracker.lineage, out=staged, revisions=revisions.get(pos, ()),
                        labels_csv=staged / CTC_LABELS,
                    )  # fmt: skip
                    replace_path(folder, live)  # (retried: a file in it held open)
                except Exception:  # a file held open by another program, a damaged mask...
                    shutil.rmtree(staged, ignore_errors=True)
                    self.counts["ctc_results_not_written"] += 1
                    logger.exception("%s: the CTC result could not be written; the folder "
                                     "keeps the live track ids", folder)  # fmt: skip
                    continue
                replace_path(staged, folder)  # (a new name: nothing should hold it open)
                live_kept.append(live)
        runtimes = self.analyzer.engine_runtimes()  # those loaded (by the warm-up, or fields)
        self.analyzer.close()
        self.store.close()
        if revisions:  # (ids as the tracker knows them now, as in the CTC result)
            try:
                self.counts["cells_revised"] = apply_revisions(self.results, revisions)
            except Exception:  # a file held open by another program, the disk full...
                self.counts["cells_revisions_not_applied"] += 1
                logger.exception("%s: the tracker's late revisions (revisions.jsonl) could "
                                 "not be applied", self.results / "cells.csv")  # fmt: skip
        counts = {**dict.fromkeys(WORKER_COUNTS, 0), **self.counts}
        # from the latency log: every field, also those of a worker that was restarted (read
        # once for both figures: a run of days holds hundreds of thousands of lines)
        latency = LatencyLog.read(self.results / "latency.jsonl")
        summary: dict[str, Any] = {
            "ok": not failed,
            "run_id": self.run_id,
            "resumed": self.resumed,
            # every count, 0 included: a key a user looks for is there whatever happened
            **{k: int(v) for k, v in sorted(counts.items())},
            "latency_ms": latency_from_log(latency),
            "policies_disabled": [{"rule": k, "error": v} for k, v in self.policy.disabled.items()],
            "guardrails": self.policy.guardrails.usage(),
            "engines": self.engines,
            "engine_runtimes": runtimes,
            "warm_up_s": self.warm_up_s,  # the engines' first calls, before the first field
            "behind_s": behind_from_log(latency),  # (as latency_ms)
            "peak_memory_mb": peak_memory_mb(),  # this process's (a restarted worker: its own)
            "bus": {k: stats[k] for k in ("received", "delivered", "drops", "dropped_queue",
                                           "dropped_upstream", "dropped_at_end", "max_depth",
                                           "latency")
                    if k in stats},  # this worker process's connection only
        }  # fmt: skip
        if not failed:
            self._save_state(finished=True)
            for live in live_kept:
                discard_live_masks(live)
        write_atomic(self.results / "worker.json", json.dumps(summary, indent=1))
        self._lock.release()
        return summary


def _held_bytes(fld: Field, res: FrameResult) -> int:
    """Return the bytes of the large arrays a field and its result hold, each counted once.

    Its frames, the planes the engines ran on, the labels and the virtual stain (a
    few µs: the per-cell tables, a few kB, are left out; a generic walk over
    every attribute took 0.1-0.2 ms of the main thread, on the decisions' way).
    """
    held: dict[int, int] = {}
    for a in (*fld.frames.values(), *fld.analysed.values(), res.labels, res.stain):
        if a is None:
            continue
        base = a
        while isinstance(base.base, np.ndarray):  # (a view: its base's memory)
            base = base.base
        held[id(base)] = int(base.nbytes)
    return sum(held.values())


def _take(fields: queue.Queue[Any]) -> Any:
    """Return the next item of ``fields``, waiting as long as it takes, Ctrl+C heard meanwhile.

    (On Windows, Python before 3.14 cannot interrupt a wait without a timeout: a
    Ctrl+C to ``livescope worker`` waited for the next field, minutes in a slow
    time-lapse. A wait of half a second at a time wakes as soon as an item comes.)
    """
    while True:
        try:
            return fields.get(timeout=0.5)
        except queue.Empty:
            continue
