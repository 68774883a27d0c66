"""The pipeline worker's results store, beside the raw data, and its overlay.

`ResultsStore` writes ``results/cells.csv``, ``results/ctc/<position>/``,
``policy.jsonl``, ``latency.jsonl`` and ``revisions.jsonl`` (the layout is in the docstring of the
worker's module, ``livescope/pipeline/_worker.py``), and
publishes each field's overlay. The worker's store thread calls it, one
decided field at a time, off the decision path; the decision thread appends
each field's rule firings (`ResultsStore.log_firings`) once its decisions are
answered, before it saves the policies' state, so that a restarted worker
never lacks the firings of a decision that went out.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import errno
import io
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import tifffile
from numpy.typing import NDArray

from livescope.inference import MITOTIC_CLASSES
from livescope.policy import Observation, Verdict
from livescope.record import field_key
from livescope.schema import (
    LivescopeError,
    json_safe,
    read_jsonl_counting,
    replace_path,
    write_atomic,
)
from livescope.tracking import Revision

from ._analyzer import FrameResult
from ._config import RESULTS_DIR
from ._jobs import Field

__all__ = [
    "LatencyLog",
    "ResultsLock",
    "ResultsStore",
    "apply_revisions",
    "behind_from_log",
    "camera_to_start_ms",
    "ctc_staging",
    "discard_live_masks",
    "earlier_results",
    "earlier_run",
    "is_ctc_result",
    "latency_from_log",
    "read_revisions",
    "restore_live_masks",
    "trim_results",
]

logger = logging.getLogger("livescope")

_CELLS_COLUMNS = ("position", "t", "seq", "sample_time_s", "label", "track", "parent", "y", "x",
                 "area", "intensity", "stain", "state", "p_mitosis")  # fmt: skip
"""The fixed columns of ``cells.csv``; a ``p_<class>`` column per cell-state class follows."""


WORKER_LOCK = "worker.lock"
"""In ``results/``: the analysis worker writing there (`ResultsLock`)."""

_RESULTS_FILES = ("state.json", "policy_state.json", "cells.csv", "policy.jsonl", "latency.jsonl")
"""What an analysis leaves in ``results/`` (`earlier_results`); but for the two states, only
with a line (a row of cells.csv): a worker stopped before it stored a field leaves them so."""

_HELD: set[Path] = set()
"""The lock files this process holds (`ResultsLock`): one naming this process that is not
among them is stale (a copy of a running worker's folder), as one of a process gone."""


def earlier_results(results: Path) -> Path | None:
    """Return a file of an earlier analysis in ``results`` (None: none, or no folder).

    A new analysis does not write there: it appended to those files (two analyses'
    cells.csv rows, firings and latencies in one table and log).
    """
    for name in _RESULTS_FILES:
        path = results / name
        try:
            if name.endswith("state.json"):
                path.stat()
                return path
            with path.open("rb") as f:
                if name == "cells.csv":
                    f.readline()  # (its header, written also for a table without a row)
                if f.read(1):
                    return path
        except OSError:  # (none)
            continue
    return None


def earlier_run(run_dir: Path) -> Path | None:
    """Return what an earlier run left in ``run_dir`` besides its recording (None: nothing).

    Its summary, its decision log (a file with lines) or its worker's results: a
    new run's were appended to them (two runs' ids in one file), or its worker
    refused them once the acquisition was going. A ``results`` folder a worker
    made as it waits for this run (no results in it yet), or an empty decision
    log, is not an earlier run's.
    """
    if (run_dir / "summary.json").exists():
        return run_dir / "summary.json"
    log = run_dir / "decisions.jsonl"
    if log.is_file() and log.stat().st_size > 0:  # (a device, e.g. /dev/full: not a log)
        return log
    results = run_dir / RESULTS_DIR
    if (results / "worker.json").exists():
        return results
    return results if earlier_results(results) is not None else None


class ResultsLock:
    """The one analysis worker of a ``results`` folder, for as long as it runs.

    The lock is a file (`WORKER_LOCK`) naming the worker's process, its start
    (`_started`) and host, made only where there is none; it is removed by
    `release`. One whose process is gone (killed, crashed: the file outlived it;
    on Linux also one whose pid another process has since been given) is taken
    over, as a restarted worker does; one of another host, whose process cannot
    be asked about, is not. Workers take it one at a time (`_one_taker`).

    Raises
    ------
    LivescopeError
        if another worker holds the lock, naming the file and its process.

    """

    def __init__(self, results: Path) -> None:
        from livescope.bus import this_host

        self.path = results / WORKER_LOCK
        pid = os.getpid()
        self._mine = json.dumps({"pid": pid, "host": this_host(), "started": _started(pid)})
        with _one_taker(results):
            for _ in range(5):  # (a stale lock taken over by another at the same time: again)
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    self._take_over()
                    continue
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(self._mine)
                _HELD.add(self.path.absolute())
                return
        raise LivescopeError(f"cannot take {self.path}: other workers keep taking it")

    def _holder(self) -> str | None:
        """Return the lock file's text (None: gone); waits briefly for one being written."""
        deadline = time.monotonic() + 1.0
        while True:
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                return None
            except OSError:  # (Windows: being renamed or written)
                text = ""
            if text or time.monotonic() >= deadline:
                return text
            time.sleep(0.02)  # (made, not yet written: its maker writes it at once)

    def _take_over(self) -> None:
        """Remove the lock file if its worker is gone; raise if it runs (or may)."""
        from livescope.bus import process_gone, this_host

        text = self._holder()
        if text is None:
            return  # (given back meanwhile: taken on the next try)
        try:
            holder = json.loads(text)
            pid, host = int(holder["pid"]), str(holder["host"])
            started = holder.get("started")  # (None: not known, or a lock of an older version)
        except (ValueError, KeyError, TypeError):
            pid, host, started = -1, "", None  # (its maker died before it wrote it: stale)
        if pid == os.getpid() and host == this_host():
            held = self.path.absolute() in _HELD  # (another worker of this process)
        else:
            held = pid >= 0 and not process_gone(pid, host)
            if held and started is not None and host == this_host():
                # (its pid given to another process since: the lock's worker is gone)
                held = _started(pid) in (None, started)
        if held:
            where = "" if host == this_host() else f" on {host}"
            raise LivescopeError(
                f"another analysis worker (process {pid}{where}) is writing to "
                f"{self.path.parent}: its lock {self.path} is held; wait for it to end, or "
                "analyse into another run folder (delete the lock only if no worker runs)"
            )
        # aside under a name of its own, so that of two workers taking it over at once only
        # one removes it; one that took a fresh lock (not the stale one) puts it back
        aside = self.path.with_name(f"{WORKER_LOCK}.{os.getpid()}.stale")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        try:
            stale = aside.read_text(encoding="utf-8") == text
        except OSError:
            stale = False
        if stale:
            logger.warning("took over %s: its worker (process %d) is gone", self.path, pid)
        else:
            with contextlib.suppress(OSError):
                os.link(aside, self.path)  # (not over one made meanwhile)
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock file, if it is still this worker's."""
        with contextlib.suppress(OSError):
            if self.path.absolute() in _HELD and self.path.read_text("utf-8") == self._mine:
                self.path.unlink()
        _HELD.discard(self.path.absolute())


def _started(pid: int) -> str | None:
    """Return when process ``pid`` of this host started, as a text to compare (None: not known).

    Linux: the boot's id and the start in clock ticks after boot (``/proc``), so that a
    lock whose pid was given to another process once its worker was gone is found stale.
    Elsewhere (Windows, macOS) None: a lock names its process by pid alone, and one whose
    pid another process has since been given is taken for held (its error says to delete it).
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # (after the name, which may hold spaces)
    return f"{boot} {fields[19]}" if len(fields) > 19 else None


@contextlib.contextmanager
def _one_taker(results: Path) -> Iterator[None]:
    """Hold, while a worker takes the lock of ``results``, a lock the system gives up with it.

    The lock file's check, removal as stale and making again are then one step to the
    other workers: of three taking a stale lock at once, one moved aside the lock another
    had just taken over, and a third made its own before it was put back (both held it).
    POSIX: ``flock`` on the folder; Windows: ``msvcrt.locking`` on a file beside the lock,
    removed after. Where the file system has no such locks (a network share's, maybe),
    nothing is held.

    Raises
    ------
    LivescopeError
        if another worker has been taking the lock for `_TAKING_S`.

    """
    deadline = time.monotonic() + _TAKING_S
    if sys.platform == "win32":
        import msvcrt

        guard = results / f"{WORKER_LOCK}.taking"
        while True:
            try:
                fd = os.open(guard, os.O_CREAT | os.O_RDWR, 0o644)
                break
            except PermissionError:  # (another taker's, being removed: "delete pending")
                if time.monotonic() >= deadline:
                    raise _still_taking(guard) from None
                time.sleep(0.05)
        try:
            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                    locked = True
                except OSError as exc:  # (EACCES: another taker's; else no locks there)
                    locked = False
                    if exc.errno in (errno.EACCES, errno.EDEADLK):
                        if time.monotonic() >= deadline:
                            raise _still_taking(guard) from None
                        time.sleep(0.05)
                        continue
                break
            try:
                yield
            finally:
                if locked:
                    os.lseek(fd, 0, os.SEEK_SET)
                    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):  # (open by another taker: it stays, for it)
                guard.unlink()
    else:
        import fcntl

        fd = os.open(results, os.O_RDONLY)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # (another taker's)
                    if time.monotonic() >= deadline:
                        raise _still_taking(results) from None
                    time.sleep(0.05)
                    continue
                except OSError:  # (no locks there)
                    pass
                break
            yield
        finally:
            os.close(fd)  # (which gives the lock up)


_TAKING_S = 30.0
"""How long a worker waits for another taking the results lock (`_one_taker`), s: one takes it
in a second or two (it waits up to 1 s for a lock file being written)."""


def _still_taking(path: Path) -> LivescopeError:
    return LivescopeError(
        f"another analysis worker has been taking the lock of {path} for {_TAKING_S:g} s: "
        "is it hung? End it, or analyse into another run folder"
    )


class ResultsStore:
    """Append-only results of one worker process (the files stay open until `close`).

    Parameters
    ----------
    results
        The run's ``results`` folder (it exists).
    counts
        The worker's counters; firings and guardrail refusals (decision
        thread) and overlay errors (store thread) are counted into it.
    tail_frames
        How many past centroids of each track the overlay shows.
    class_cols
        Cell-state classes of the table's probability columns (a resumed
        worker's, from its state, or the classifier's; empty: taken from the
        first field with states, or none). A ``cells.csv`` already begun has its
        header's instead.
    states_engine
        The cell-state engine's name, said in the errors about its classes.

    Raises
    ------
    LivescopeError
        if a class's ``p_<class>`` column would be one of the fixed columns
        (a class named ``mitosis`` made two ``p_mitosis`` columns).

    """

    def __init__(
        self,
        results: Path,
        counts: collections.Counter[str],
        *,
        tail_frames: int,
        class_cols: Sequence[str] = (),
        states_engine: str | None = None,
    ) -> None:
        self.results = results
        self.counts = counts
        self.tail_frames = tail_frames
        self.states_engine = states_engine
        self._no_mitotic_said = False
        _check_classes(class_cols, states_engine)
        self._said_no_mitotic(class_cols)
        self.class_cols = list(class_cols)
        self.tails: dict[str, dict[int, collections.deque[tuple[float, float]]]] = {}
        self.masks_written: set[str] = set()
        """Positions this store wrote a track-id mask for (`store`)."""
        self.masks_refused: set[str] = set()
        """Positions whose folder holds a finished CTC result: their masks are not written."""
        self._finished: dict[str, bool] = {}  # position -> its folder is a finished result
        self._unlisted: set[str] = set()  # classes without a column, warned about once
        self.overlay: Any = None
        # (the columns of a table already begun are those its rows must fill, whatever
        # the state says: a resumed worker's rows go under the same header)
        if (head := _cells_header(results / "cells.csv")) is not None:
            self.class_cols = _header_classes(head, self.class_cols)
        self._cells = (results / "cells.csv").open("a", encoding="utf-8", newline="")
        self._cells_writer = csv.writer(self._cells)
        self._policy_log = (results / "policy.jsonl").open("a", encoding="utf-8")
        self._latency_log = (results / "latency.jsonl").open("a", encoding="utf-8")
        self._revisions_log = (results / "revisions.jsonl").open("a", encoding="utf-8")

    def open_overlay(self, run_id: str, run_dir: Path) -> None:
        """Start publishing overlays (once the run's id is known)."""
        from livescope.bus import OverlayPublisher

        self.overlay = OverlayPublisher(run_id, run_dir=run_dir)

    def log_latency(self, fld: Field, ms: dict[str, float]) -> None:
        """Append a field's ms per stage to ``latency.jsonl``.

        Readers count the field as analysed from its ``position`` and ``t``
        (`livescope.record.field_key`): keep them a string and an int.
        """
        self._latency_log.write(json.dumps({
            "position": fld.position, "t": fld.t,
            "seq": int(fld.header.get("seq", -1)), "live": fld.live,
            "t_start_ns": fld.t_start_ns, "t_done_ns": fld.t_done_ns,
            "ms": ms}) + "\n")  # fmt: skip
        self._latency_log.flush()

    def store(self, fld: Field, res: FrameResult, obs: Observation) -> None:
        """Append a decided field's cells and track-id mask (store thread).

        The mask holds the tracker's ids as they are: uint16 while they fit,
        uint32 (uint64) once a position's tracker has handed out more (ids are
        never reused, so a long run gets there; they are never wrapped). The
        CTC result made of them at the end is renumbered compactly into 16 bits.

        The table's header comes with its first cells, its ``p_<class>``
        columns those of the first classified field (or of the table a resumed
        worker appends to); each row's probabilities go under their class's
        column, by name. A class without one is left out (said once in the log).
        """
        h = fld.header
        c = obs.cells
        # (a field without cells, e.g. one without a nuclear frame, has no states: a header
        # written for it would lack the state columns that later rows fill)
        if (len(c) or self.class_cols) and self._cells.tell() == 0:
            if res.states is not None and not self.class_cols:
                _check_classes(res.states.classes, self.states_engine)
                self.class_cols = list(res.states.classes)
            self._write_header()
        probs: dict[int, NDArray[Any]] = {}
        cols = [-1] * len(self.class_cols)  # each state column's index in the probabilities
        if res.states is not None and len(res.states):
            probs = {int(i): res.states.probs[k] for k, i in enumerate(res.states.ids.tolist())}
            classes = list(res.states.classes)
            self._said_no_mitotic(classes)
            cols = [classes.index(k) if k in classes else -1 for k in self.class_cols]
            if unlisted := set(classes) - set(self.class_cols) - self._unlisted:
                self._unlisted |= unlisted
                logger.warning(
                    "cells.csv has no column for the cell state(s) %s (its columns are "
                    "%s): their probabilities are left out of it; its state and "
                    "p_mitosis columns count them", sorted(unlisted), self.class_cols or "none",
                )  # fmt: skip
        for i in range(len(c)):
            p = probs.get(int(c.labels[i]))
            self._cells_writer.writerow(
                [fld.position, fld.t, h.get("seq", -1), round(obs.sample_time_s, 3),
                 int(c.labels[i]), int(c.tracks[i]), int(c.parents[i]), round(float(c.y[i]), 2),
                 round(float(c.x[i]), 2), int(c.area[i]), _r(c.intensity[i]), _r(c.stain[i]),
                 c.state[i], _r(c.p_mitosis[i]),
                 # (NaN, a cell the classifier did not score: blank, as every number here)
                 *(_r(p[j]) if p is not None and j >= 0 else "" for j in cols)]
            )  # fmt: skip
        self._cells.flush()
        if res.labels is not None and res.tracks is not None:
            folder = self.results / "ctc" / fld.position
            if self._finished.setdefault(fld.position, is_ctc_result(folder)):
                # (a worker resumed after the end: these track ids would join the result's
                # CTC labels, and invalidate it; the worker's end says so)
                self.masks_refused.add(fld.position)
                return
            folder.mkdir(parents=True, exist_ok=True)
            ids = res.tracks.track_ids
            top = int(ids.max()) if ids.size else 0
            lut = np.zeros(
                int(res.labels.max()) + 1, np.promote_types(np.uint16, np.min_scalar_type(top))
            )
            lut[res.tracks.labels] = ids
            tifffile.imwrite(folder / f"mask{fld.t:03d}.tif", lut[res.labels], compression="zlib")
            self.masks_written.add(fld.position)
        if res.tracks is not None and res.tracks.revisions:
            # a division found late changed ids in fields already stored: applied to
            # cells.csv and the CTC result when the worker finishes (`apply_revisions`)
            self._revisions_log.write("".join(
                json.dumps({"position": fld.position, "t": fld.t, **dataclasses.asdict(r)}) + "\n"
                for r in res.tracks.revisions))  # fmt: skip
            self._revisions_log.flush()

    def log_firings(
        self, fld: Field, obs: Observation, verdicts: list[Verdict],
        acks: dict[int, tuple[str, bool, str]], given_back: frozenset[int] = frozenset(),
    ) -> None:  # fmt: skip
        """Append a decided field's rule firings to ``policy.jsonl`` and count them.

        Called on the decision thread once the field's decisions are answered
        (or the wait for them ended), before the policies' state that books
        them is saved: one write and a flush (no sync), after the decisions'
        latency was taken. ``given_back``: the firings given back to their
        rules (the agent refused their decision, or the one they shared, as
        stale): logged with ``given_back: true``; the rule may fire on the cell
        again. Nothing is written for a field without firings.
        """
        if not verdicts:
            return
        h = fld.header
        rows = []
        for i, v in enumerate(verdicts):
            f = v.firing
            stage, ok, reason = _outcome(i, verdicts, acks)
            verdict = (
                "recorded" if stage == "record" else "shared" if stage == "shared" and ok
                else "accepted" if ok else "not_sent" if stage == "not_sent" else "rejected"
            )  # fmt: skip
            self.counts[f"firings_{verdict}"] += 1
            if v.stage == "shared" and not ok:
                # its sub-sequence was not carried out, or (no answer yet) may still be
                if stage == "unanswered":
                    self.counts["firings_shared_unanswered"] += 1
                else:
                    self.counts["firings_shared_not_imaged"] += 1
            if stage == "guardrail":
                self.counts["decisions_rejected_guardrail"] += 1
            # (a Python policy's NaN inputs are null, as in its decision: JSON has no NaN)
            rows.append(json.dumps(json_safe({
                "rule": f.rule, "trigger": f.trigger, "position": f.position, "t": fld.t,
                "seq": h.get("seq"), "sample_time_s": obs.sample_time_s, "track": f.track,
                "y": f.y, "x": f.x, "inputs": f.inputs,
                # (a shared firing's decision was never made: the sub-sequence is another's)
                "decision": None if f.decision is None or v.stage == "shared"
                else f.decision.model_dump(mode="json"),
                "verdict": verdict, "stage": stage, "reason": reason, "engines": obs.engines,
                "given_back": i in given_back,
            }), default=str) + "\n")  # fmt: skip
        self._policy_log.write("".join(rows))
        self._policy_log.flush()

    def publish(
        self, fld: Field, res: FrameResult, obs: Observation, verdicts: list[Verdict],
        acks: dict[int, tuple[str, bool, str]],
    ) -> None:  # fmt: skip
        """Publish a decided field on the overlay bus, latest wins (store thread).

        A failure to publish is logged and counted (``overlay_errors``), not raised.
        """
        c = obs.cells
        tails = self.tails.setdefault(fld.position, {})
        for i in range(len(c)):
            tails.setdefault(int(c.tracks[i]), collections.deque(maxlen=self.tail_frames))
            tails[int(c.tracks[i])].append((round(float(c.y[i]), 1), round(float(c.x[i]), 1)))
        alive = {int(t) for t in c.tracks.tolist()}
        for tid in [t for t in tails if t not in alive]:
            del tails[tid]
        if self.overlay is None:
            return
        # (the plane each channel was analysed in: its labels were segmented there)
        arrays: dict[str, NDArray[Any]] = {f"raw:{ch}": a for ch, a in fld.analysed.items()}
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
                 # (a shared firing's cell is imaged while its sub-sequence stands)
                 "accepted": _outcome(i, verdicts, acks)[1],
                 "reason": _outcome(i, verdicts, acks)[2]}
                for i, v in enumerate(verdicts)
            ],
        }  # fmt: skip
        try:
            self.overlay.publish(header, arrays)
        except Exception:
            self.counts["overlay_errors"] += 1
            logger.exception("publishing the overlay failed")

    def close_overlay(self) -> None:
        """Stop publishing overlays (viewers see the run's overlay end)."""
        if self.overlay is not None:
            self.overlay.close()

    def _write_header(self) -> None:
        self._cells_writer.writerow([*_CELLS_COLUMNS, *(f"p_{k}" for k in self.class_cols)])

    def _said_no_mitotic(self, classes: Sequence[str]) -> None:
        """Warn once if a classifier's ``classes`` have no mitotic one: P(mitosis) is 0."""
        if self._no_mitotic_said or not classes or set(classes) & set(MITOTIC_CLASSES):
            return
        self._no_mitotic_said = True
        logger.warning(
            "%s has none of the mitotic classes %s (its classes: %s): P(mitosis), the sum of "
            "their probabilities, is 0 for every cell (cells.csv's p_mitosis, the rules on "
            "mitosis); name its mitotic outputs so in its card",
            _engine(self.states_engine), ", ".join(MITOTIC_CLASSES), ", ".join(classes),
        )  # fmt: skip

    def close(self, *, header: bool = True) -> None:
        """Close the files (after the store thread has stopped and the overlay is closed).

        With ``header``, a table no cell was written to gets its header (pandas
        cannot read an empty file); a worker that had no run to analyse leaves none.

        Raises
        ------
        OSError
            the first file's that could not be written out (the disk full, say),
            once every file is closed.

        """
        first: OSError | None = None
        with contextlib.suppress(OSError):  # (said below, as the file fails to close)
            if header and not self._cells.closed and self._cells.tell() == 0:
                self._write_header()
        for f in (self._cells, self._policy_log, self._latency_log, self._revisions_log):
            try:
                f.close()
            except OSError as exc:  # (closed all the same: the others still are)
                first = first or exc
        if first is not None:
            raise first


def ctc_staging(folder: Path) -> tuple[Path, Path]:
    """Return where a position's CTC result is staged, and where its live masks wait.

    The result is written to ``results/ctc/.<position>.new`` before it is
    swapped in; the live track-id masks wait in ``.<position>.live`` meanwhile.
    A folder ``results/ctc/<position>`` holding ``res_track.txt`` is a CTC
    result swapped in (the live masks never have one): see `is_ctc_result`.
    """
    return folder.with_name(f".{folder.name}.new"), folder.with_name(f".{folder.name}.live")


def is_ctc_result(folder: Path) -> bool:
    """Whether ``results/ctc/<position>`` holds a finished CTC result, not live track ids.

    Its ``res_track.txt`` is written last into the staged result, which is then
    swapped in whole: the live masks never have one.
    """
    return (folder / "res_track.txt").is_file()


def discard_live_masks(live: Path) -> None:
    """Remove a position's live masks once its CTC result and the state are saved.

    Renamed first (``.<position>.old``, which `restore_live_masks` removes):
    a worker killed while they are being removed must not take the rest of
    them for masks to restore over the result.
    """
    old = live.with_name(f"{live.name[: -len('.live')]}.old")
    shutil.rmtree(old, ignore_errors=True)
    try:
        replace_path(live, old)
    except OSError as exc:  # (Windows: a file in it held open by another program)
        logger.warning("%s could not be removed (%s); it is removed when the worker next "
                       "starts on this run", live, exc)  # fmt: skip
        return
    shutil.rmtree(old, ignore_errors=True)


def restore_live_masks(results: Path, *, finished: bool = False) -> None:
    """Undo a CTC rewrite that a killed worker had not finished (before its state was saved).

    A position whose live masks are still kept aside gets them back (the
    rewritten result goes: it is written again at the end); a half-written
    result is removed, and so are live masks being discarded after the state
    was saved (`discard_live_masks`). ``finished``: the state was saved at the
    worker's end, after the results were swapped in: live masks left are stale
    (a file held open when they were to go), and are removed.
    """
    ctc = results / "ctc"
    if not ctc.is_dir():
        return
    for live in ctc.glob(".*.live") if finished else ():
        shutil.rmtree(live, ignore_errors=True)
    for live in ctc.glob(".*.live"):
        folder = live.with_name(live.name[1 : -len(".live")])
        if folder.exists():
            shutil.rmtree(folder)
        replace_path(live, folder)
        logger.info("%s: the live track masks are restored (a rewrite was cut short)", folder)
    for staged in (*ctc.glob(".*.new"), *ctc.glob(".*.old")):
        shutil.rmtree(staged, ignore_errors=True)


def trim_results(results: Path, done: dict[str, int], decided: dict[str, int]) -> None:
    """Remove results of a field the killed worker had half stored (it is analysed again).

    Rows of cells.csv and latency.jsonl after ``done`` (position → last stored
    t) go, and policy.jsonl's after ``decided``. Rows are keyed by their field's
    position exactly as ``done`` and ``decided`` are: a close-up's fields
    (``<position>~<rule>-<n>``, analysed with ``analyse_added``) by their own
    name, and a plan position may itself hold ``~``, ``,`` or quotes. Call
    before a `ResultsStore` opens the files.

    A damaged line of the logs (no JSON object, or one that names no field by
    `livescope.record.field_key`'s rule: a line a killed worker left half
    written and the next one appended to, bytes of a full disk, an editor's)
    is dropped, their number said once per file: one raised here and failed
    every restart, until the supervisor gave up on the run's analysis.
    """
    cells = results / "cells.csv"
    if cells.is_file():
        _trim_cells(cells, done)
    for name, upto in (("latency.jsonl", done), ("policy.jsonl", decided),
                       ("revisions.jsonl", done)):  # fmt: skip
        path = results / name
        if path.is_file():
            recs, damaged = read_jsonl_counting(path)
            lines = []
            for rec in recs:
                if (key := field_key(rec)) is None:
                    damaged += 1
                elif _kept(*key, upto):
                    lines.append(json.dumps(rec) + "\n")
            if damaged:
                logger.warning(
                    "%s: %d damaged line(s) dropped while trimming (no JSON object that "
                    "names a field's position and time point)", path, damaged,
                )  # fmt: skip
            _rewrite(path, "".join(lines))


def _trim_cells(cells: Path, done: dict[str, int]) -> None:
    """Rewrite ``cells.csv`` with only the rows of fields up to ``done`` (see `trim_results`).

    Read row by row, the rows kept written as UTF-8 to a buffer: read whole, as
    rows of strings, a long run's table took ~1 kB of memory a row at a restart
    (1.3 GB for a million rows), now about twice the file's size.
    """
    out = io.BytesIO()
    with cells.open("rb") as src:
        # (a row without its newline was being written when the worker was killed: its
        # field was not stored, so it goes with the field's other rows; cut as bytes, as
        # it may end inside a character)
        end = _after_last_newline(src)
        src.seek(0)

        def lines() -> Iterator[str]:
            left = end
            for raw in src:
                if left <= 0:
                    return
                yield raw[:left].decode("utf-8")
                left -= len(raw)

        reader = csv.reader(lines())
        head = next(reader, None)
        text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        writer = csv.writer(text)  # (as `ResultsStore` writes them)
        for row in reader:
            key = _cells_key(row, cells) if row else None
            if key is not None and _kept(*key, done):
                if head is not None:  # (a table left with no row: no header either)
                    writer.writerow(head)
                    head = None
                writer.writerow(row)
        text.detach()
    _rewrite(cells, out.getbuffer())


def _after_last_newline(f: BinaryIO) -> int:
    """Return the offset just after the last newline of the open file ``f`` (0: none)."""
    end = f.seek(0, 2)
    while end > 0:
        start = max(0, end - 65536)
        f.seek(start)
        block = f.read(end - start)
        if (i := block.rfind(b"\n")) >= 0:
            return start + i + 1
        end = start
    return 0


def _kept(pos: str, t: int, upto: dict[str, int]) -> bool:
    """Whether field (``pos``, ``t``) is at or before ``upto``'s last of its position."""
    return t <= upto.get(pos, -1)


def _rewrite(path: Path, data: str | bytes | memoryview) -> None:
    """`write_atomic`, its refusal on Windows said with what to do.

    (a spreadsheet that has ``cells.csv`` open locks it: "[WinError 5] Access is
    denied" named a temporary file; the supervisor restarts the worker a few times,
    and one restarted after the file was closed resumes: no more is promised, as the
    supervisor may give up first and says so)
    """
    try:
        write_atomic(path, data)
    except PermissionError as exc:
        raise PermissionError(
            exc.errno,
            f"{path} is open in another program (a spreadsheet?) or not writable: "
            f"close it; the worker cannot resume until it can rewrite it "
            f"({exc.strerror or exc})",
        ) from exc


def read_revisions(results: Path) -> dict[str, list[Revision]]:
    """Return each position's track-id revisions (``revisions.jsonl``), in the order made.

    A damaged line (no JSON object, no field's position and time point, or ids
    and time points that are no integers) is left out, their number said: one
    raised as the worker ended, and its summary was lost.
    """
    out: dict[str, list[Revision]] = {}
    path = results / "revisions.jsonl"
    recs, damaged = read_jsonl_counting(path)
    for rec in recs:
        key = field_key(rec)
        ids = [v for k in ("old", "new", "first", "last")
               if isinstance(v := rec.get(k), int) and not isinstance(v, bool)]  # fmt: skip
        if key is None or len(ids) < 4:
            damaged += 1
            continue
        out.setdefault(key[0], []).append(Revision(*ids))
    if damaged:
        logger.warning("%s: %d damaged line(s) left out; their track-id revisions are not "
                       "applied to cells.csv or the CTC result", path, damaged)  # fmt: skip
    return out


def apply_revisions(results: Path, revisions: dict[str, list[Revision]]) -> int:
    """Apply the tracker's late revisions to ``cells.csv``; return how many rows changed.

    A division found a few fields after it happened gives the daughter the
    mother's rows since the split (`livescope.tracking.Revision`): their
    ``track`` becomes the daughter's and their ``parent`` the mother. Rows are
    streamed to a file beside it, which then replaces it; applying the same
    revisions again changes nothing (call once the store is closed).
    """
    cells = results / "cells.csv"
    if not revisions or not cells.is_file():
        return 0
    tmp = cells.with_name(f".{cells.name}.revised")
    changed = 0
    with cells.open(encoding="utf-8", newline="") as src:
        reader = csv.reader(src)
        head = next(reader, None)
        if head is None:
            return 0
        needed = ("position", "t", "track", "parent")
        if missing := [k for k in needed if k not in head]:
            raise LivescopeError(f"{cells}: no column {', '.join(missing)}; revisions not applied")
        col = {k: head.index(k) for k in needed}
        try:
            with tmp.open("w", encoding="utf-8", newline="") as dst:
                writer = csv.writer(dst)
                writer.writerow(head)
                for row in reader:
                    revs = revisions.get(row[col["position"]]) if len(row) == len(head) else None
                    if revs:
                        try:
                            t, track = int(row[col["t"]]), int(row[col["track"]])
                        except ValueError:
                            revs = None  # (a damaged row: written as it is)
                    for r in revs or ():
                        if r.first <= t <= r.last and track == r.old:
                            track = r.new
                            row[col["track"]], row[col["parent"]] = str(r.new), str(r.old)
                            changed += 1
                    writer.writerow(row)
        except BaseException:
            # (the disk full, say: a half copy of a long run's table must not be left
            # to fill it further; cells.csv is as it was)
            tmp.unlink(missing_ok=True)
            raise
    replace_path(tmp, cells)
    return changed


def _cells_header(path: Path) -> list[str] | None:
    """Return the header of a ``cells.csv`` already begun; None if it holds no whole line."""
    if not path.is_file():
        return None
    with path.open(encoding="utf-8", newline="") as f:
        line = f.readline(1 << 20)  # (a header is a few hundred bytes: not a damaged file's all)
    if not line.endswith("\n"):
        return None
    return next(csv.reader([line]), None)


def _check_classes(classes: Sequence[str], engine: str | None) -> None:
    """Refuse cell-state classes whose ``p_<class>`` column is a fixed one of cells.csv.

    A class named ``mitosis`` gave the table two ``p_mitosis`` columns: readers
    (csv.DictReader, pandas, the report) took the class's probability for P(mitosis).

    Raises
    ------
    LivescopeError
        naming the engine, the class and the column.

    """
    if clash := [k for k in classes if f"p_{k}" in _CELLS_COLUMNS]:
        raise LivescopeError(
            f"{_engine(engine)} has a class named {clash[0]!r}: its probability column "
            f"p_{clash[0]} would be a second one of that name in cells.csv, which has its own "
            f"(P(mitosis), the sum of {', '.join(MITOTIC_CLASSES)}); rename the class in the "
            "engine's card"
        )


def _engine(name: str | None) -> str:
    """Name a cell-state engine in a message: ``cell-state engine 'x'``."""
    return f"cell-state engine {name!r}" if name else "the cell-state engine"


def _header_classes(head: list[str], default: list[str]) -> list[str]:
    """Return the cell-state classes of a cells.csv header (``p_<class>`` after ``p_mitosis``)."""
    if "p_mitosis" not in head:
        return default  # (not a table this store wrote)
    return [k[2:] for k in head[head.index("p_mitosis") + 1 :] if k.startswith("p_")]


def _cells_key(row: list[str], path: Path) -> tuple[str, int] | None:
    """Return a cells.csv row's (position, t); None, with a warning, for a damaged row."""
    try:
        return row[0], int(row[1])
    except (IndexError, ValueError):
        logger.warning("%s: a damaged row is dropped: %r", path, row)
        return None


def _pct(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    p50, p99 = (round(float(np.percentile(a, q)), 3) for q in (50, 99))
    return {"p50": p50, "p99": p99, "n": int(a.size)}


def _stage_ms(rec: dict[str, Any]) -> dict[str, float] | None:
    """Return a ``latency.jsonl`` record's ms per stage; None for a damaged line.

    Damaged: no ``ms``, an ``ms`` that is no JSON object, or a value in it that
    is no finite number (a bool is none; NaN would make every percentile NaN).
    """
    ms = rec.get("ms")
    if not isinstance(ms, dict):
        return None
    out: dict[str, float] = {}
    for k, v in ms.items():
        if (f := finite_number(v)) is None:
            return None
        out[k] = f
    return out


def finite_number(v: object) -> float | None:
    """Return a decoded JSON value as a float if it is a finite number, else None.

    None for a bool (JSON's ``true`` is no number), NaN, infinity and an integer of
    hundreds of digits that no float holds (a damaged log line's).
    """
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


@dataclasses.dataclass(frozen=True)
class LatencyLog:
    """A run's ``latency.jsonl``, read once for every figure taken from it as the run ends.

    A run of days holds hundreds of thousands of lines: `latency_from_log`,
    `behind_from_log` (and the demo's slow fields) take this instead of the
    file's path so that it is read and parsed once.

    Attributes
    ----------
    path
        The file (said in the warnings about its damaged lines).
    records
        Its lines that are JSON objects, in order (a damaged ``ms`` included:
        each figure leaves it out, `_stage_ms`, and says so).
    damaged
        How many of its lines are no JSON object (`livescope.schema.read_jsonl_counting`).

    """

    path: Path
    records: list[dict[str, Any]]
    damaged: int

    @classmethod
    def read(cls, path: Path) -> LatencyLog:
        """Read ``path`` (a missing file holds no field); raises `OSError` if it cannot be read."""
        records, damaged = read_jsonl_counting(path)
        return cls(path, records, damaged)


def latency_from_log(log: Path | LatencyLog) -> dict[str, dict[str, float]]:
    """p50/p99 per stage over every field in ``latency.jsonl``.

    Called as the worker ends, for its summary. A damaged line
    (`livescope.schema.read_jsonl_counting`, `_stage_ms`) is left out, their
    number said: one raised, and the summary was lost. ``log``: its path, or
    the log as read once (`LatencyLog`).
    """
    if not isinstance(log, LatencyLog):
        log = LatencyLog.read(log)
    values: dict[str, list[float]] = collections.defaultdict(list)
    damaged = log.damaged
    for rec in log.records:
        if (ms := _stage_ms(rec)) is None:
            damaged += 1
            continue
        for k, v in ms.items():
            values[k].append(v)
    if damaged:
        logger.warning("%s: %d damaged line(s) left out of the latency figures",
                       log.path, damaged)  # fmt: skip
    return {k: _pct(v) for k, v in values.items()}


def camera_to_start_ms(ms: dict[str, Any]) -> float:
    """Return a live field's last-frame camera time → analysis start, ms (its latency record)."""
    return float(ms["camera_to_received"]) + float(ms["queue_wait"])


def behind_from_log(log: Path | LatencyLog) -> dict[str, float]:
    """How long after its last frame each live field's analysis started: the most, the last, s.

    From ``latency.jsonl`` (every worker process of the run, a restarted one's
    too): each live field's way to the worker plus its wait there (0 when the
    engines keep up with the acquisition). The camera's stamps are the agent's
    clock: with the agent on another PC, as for every latency figure, only as
    good as the two clocks' agreement; a field whose camera time was left out
    (that clock ahead of ours) is left out here too. So is a damaged line (as
    in `latency_from_log`), their number said. ``log``: its path, or the log
    as read once (`LatencyLog`).
    """
    if not isinstance(log, LatencyLog):
        log = LatencyLog.read(log)
    waits: list[float] = []
    damaged = log.damaged
    for rec in log.records:
        if (ms := _stage_ms(rec)) is None:
            damaged += 1
        elif rec.get("live") and {"camera_to_received", "queue_wait"} <= ms.keys():
            waits.append(camera_to_start_ms(ms) / 1000)
    if damaged:
        logger.warning("%s: %d damaged line(s) left out of how far behind the worker was",
                       log.path, damaged)  # fmt: skip
    return {"max": round(max(waits, default=0.0), 3), "last": round(waits[-1] if waits else 0.0, 3)}


def _r(v: float) -> float | str:
    return "" if not np.isfinite(v) else round(float(v), 4)


def _outcome(
    i: int, verdicts: list[Verdict], acks: dict[int, tuple[str, bool, str]]
) -> tuple[str, bool, str]:
    """Return the field's ``i``-th firing's (stage, carried out, reason), answer included.

    A shared one stands while the sub-sequence that images its cell does; when
    that one was refused or not sent (stage ``shared``) or not answered in
    time (stage ``unanswered``), its reason ends with that one's (``its fate: ...``).
    """
    v = verdicts[i]
    if v.stage == "shared" and v.by is not None:
        by = verdicts[v.by]
        fate, ok, why = acks.get(v.by, (by.stage, by.ok, by.reason))
        if ok:
            return ("shared", True, v.reason)
        # (one not answered in time may still be carried out: said as such)
        return (
            "unanswered" if fate == "unanswered" else "shared",
            False,
            f"{v.reason}; its fate: {why}",
        )
    return acks.get(i, (v.stage, v.ok, v.reason))
