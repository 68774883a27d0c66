"""Start the pipeline worker as its own process and restart it when it dies or hangs.

``livescope run`` / ``livescope demo`` start the agent in their own process and
the worker beside it (``python -m livescope worker RUN --config FILE``); the
supervisor watches the worker and, if it exits with an error, is killed, or
hangs (it stores no field for `WorkerSupervisor.hang_timeout_s` while recorded
frames wait for it, or, once the run has ended, makes no progress in its end for
`WorkerSupervisor.end_timeout_s`), starts it again with ``--resume``:
the new worker restores the trackers, policies and guardrails from
``results/state.json`` and reads the fields it missed back from the recording,
so tracks keep their ids and no field goes unanalysed. The recording never
depends on the worker.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from livescope.record import FRAMES_FILE
from livescope.schema import WORKER_NICE, LivescopeError, start_daemon, write_atomic
from livescope.scope import WORKER_FAILED

from ._config import RESULTS_DIR, WorkerConfig
from ._results import _stage_ms

__all__ = [
    "WORKER_FAILED", "WORKER_REFUSED", "WORKER_RESTART_ENV", "WORKER_RUNTIME_FAILED",
    "WorkerSupervisor",
]  # fmt: skip

WORKER_REFUSED = 2
"""Exit status of a worker that refused its input or config (the CLI's user-error
status): it is not restarted, since it would refuse again. Only before it was
ready: the worker fails a run with the same status when its deciding or storing
thread failed (``deciding failed: ...``), and such a worker is restarted."""

WORKER_RUNTIME_FAILED = 75
"""Exit status of a worker whose engines' runtime failed (a GPU out of memory, a driver
error: ``BackendRunError``), not its input or config (sysexits' EX_TEMPFAIL). A restarted
worker that fails so as it starts (the GPU not yet freed by the worker it replaces) is
restarted after `WorkerSupervisor.restart_delay_s`, as one that crashed; it was taken for a
refusal (`WORKER_REFUSED`), and the rest of the run went unanalysed. The run's first
worker that fails so before it is ready is not restarted: its engines have not run in
this run, and a broken model fails each restart the same way."""

WORKER_RESTART_ENV = "LIVESCOPE_WORKER_RESTART"
"""The environment variable that tells each worker the supervisor starts which restart of
the run it is (0: the first worker), which it records as its ``restarts``: counted by the
worker from the state it resumes from, a restarted worker killed before it stored a field
saved none, and the next one counted one restart fewer than the supervisor's."""

logger = logging.getLogger("livescope")

_NOT_ERRORS = re.compile(r"(DEBUG|INFO|WARNING) \S+: ")
"""A line the worker's logging wrote below ERROR (``setup_logging``'s format)."""

_HELD_OPEN = re.compile(r"(?:.*?\[Errno \S+\] )?(?P<path>.+?) is open in another program")
"""A worker's error that a results file it rewrites as it resumes is held open (the
results store's message, after the exception's name and errno): a spreadsheet showing
``cells.csv`` locks it on Windows."""


class WorkerSupervisor:
    """Runs and supervises one worker process for a run folder.

    Parameters
    ----------
    run_dir
        The run folder (the agent writes ``bus.json`` there).
    config
        The worker's configuration (written to ``results/worker-config.json``).
    max_restarts
        Restarts in a row allowed before the supervisor gives up (the run goes on,
        unanalysed): a worker that analysed a field before it failed starts the
        count again (over a run of days, a rare crash each day stopped the analysis
        for good once the run's total reached it).
    threads
        Threads each engine may use in the worker (None: the runtime's default).
    lower_priority
        Run the worker at a lower CPU priority than the agent (nice +5; below
        normal on Windows), so that on a busy machine the acquisition and the
        frames' way out are never the ones kept waiting.

    """

    stop_grace_s = 10.0
    """How long `stop` waits for a worker it told to end before it kills it (also one
    taken as hung)."""

    hang_timeout_s = 300.0
    """How long a ready worker may store no field (``results/latency.jsonl``) while frames
    newer than the newest field it stored are recorded (``frames.jsonl``) before it is
    taken as hung (a deadlocked engine, a GPU driver stuck): it is ended as `stop` ends
    it and restarted like a worker that exited. A worker with nothing to analyse is never
    hung while the run goes on (once it has ended: `end_timeout_s`). Generous: engines on a
    slow CPU take seconds a field, and a field of a long z-stack is stored only once its
    last plane is taken and analysed. The least a ready worker is allowed:
    `hang_field_multiple` times the slowest of its recent fields, where longer."""

    end_timeout_s = 300.0
    """As `hang_timeout_s`, once the run has ended (`wait`) and every recorded field is
    stored: how long a ready worker that has not finished may make no progress in its end
    (closing the bus, the decisions' drain, the CTC rewrite: what it writes then,
    `_end_marks`) before it is taken as hung, ended and restarted (a restarted worker
    finishes an ended run in seconds). Such a worker was never taken as hung, with no frame
    waiting for it: `wait` ended it after its timeout and the run failed, every field
    analysed but no CTC result or ``worker.json`` written. Not `hang_timeout_s`: the end's
    silent stretches (the CTC rewrite's first pass reads each mask of a position and writes
    nothing) have nothing to do with a field's time. Less than `wait`'s timeout (600 s), or
    the run fails first."""

    hang_field_multiple = 5.0
    """A ready worker is allowed at least this many times the slowest of the last
    `_RECENT_FIELDS` fields stored in this run (their own stages' ms in
    ``results/latency.jsonl``) before it is taken as hung: a large tiled field on a slow
    CPU may take minutes, and such a worker was taken as hung and restarted, over and
    over, after `hang_timeout_s`. Recent fields only: one that took long for a reason that
    does not recur (the PC slept mid-field, a debugger paused it) raised the allowance for
    the rest of the run, and a real hang was found only hours later."""

    start_timeout_s = 900.0
    """As `hang_timeout_s`, for a worker not yet ready (``results/ready``): it loads its
    engines, building a TensorRT plan not cached yet (minutes each, on a rig's GPU), and a
    restarted one restores its state, rewriting results files that grow all run."""

    restart_delay_s = 1.0
    """How long the supervisor waits before the first restart, doubled for each one
    in a row after it (at most 30 s): a restarted worker that fails as it starts (a GPU not
    yet free, a driver error: `WORKER_RUNTIME_FAILED`) is not started again at once, over
    and over, beside the acquisition. The fields it misses meanwhile are read back from the
    recording."""

    def __init__(
        self,
        run_dir: str | Path,
        config: WorkerConfig,
        *,
        max_restarts: int = 5,
        threads: int | None = None,
        lower_priority: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.results = self.run_dir / RESULTS_DIR
        self.results.mkdir(parents=True, exist_ok=True)
        self.config_path = self.results / "worker-config.json"
        config = dataclasses.replace(config, watch_parent=True)  # it stops if we die
        if lower_priority and sys.platform.startswith("linux"):
            # per thread: its engine and store threads yield to the acquisition and decisions
            config = dataclasses.replace(config, engine_nice=WORKER_NICE)
        self.config_path.write_text(config.to_json(), encoding="utf-8")
        self.max_restarts = max_restarts
        self.threads = threads
        self.lower_priority = lower_priority
        self.restarts = 0
        self.hangs = 0
        """Workers taken as hung (`hang_timeout_s`) and ended; each is restarted (in `restarts`)."""
        self.exits: list[int] = []
        self.error = ""
        """The worker's last error line once the supervisor gave up on it."""
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watched: threading.Event | None = None  # (set when the watching thread ends)
        self._handled: subprocess.Popen[bytes] | None = None  # the last exit the watcher took
        self._log = (self.results / "worker.log").open("ab")
        self._log_from = 0  # where the current worker's output begins in worker.log
        self._ready_at_launch: str | None = None  # results/ready as the current worker found it
        self._resumed = False  # the current worker is a restarted one (--resume)
        self._stored_at_launch = 0  # results/latency.jsonl's size as it found it
        self._in_row = 0  # restarts since a worker last analysed a field
        self._backlog = _Backlog(self.run_dir, self.results, analyse_added=config.analyse_added)
        self._progress_at = 0.0  # when the current worker last made progress (monotonic s)
        self._waiting_since: float | None = None  # since when frames wait for it (monotonic s)
        self._ready_seen: str | None = None  # results/ready as last seen
        self._checked_at = 0.0  # the last look for a hang (monotonic s)
        self._hung_proc: subprocess.Popen[bytes] | None = None  # the last worker taken as hung
        self._hang_error = ""
        self._gave_up = False
        self._ended = False  # wait() began: the run ended, a worker running has its end to do
        self._end_seen: tuple[object, ...] | None = None  # `_end_marks` as last seen

    @property
    def gave_up(self) -> bool:
        """True once the supervisor has given up on the worker (``results/worker.failed``).

        It starts no worker again in this run: one that refused its input or config,
        failed as its engines first ran, or failed `max_restarts` times in a row. Until
        then a worker that exited with an error is restarted (after `restart_delay_s`).
        """
        return self._gave_up

    def _command(self, resume: bool) -> list[str]:
        """Return the worker's command line."""
        cmd = [sys.executable, "-m", "livescope", "worker", str(self.run_dir), "--config",
               str(self.config_path), "--json"]  # fmt: skip
        if resume:
            cmd.append("--resume")
        return cmd

    def _spawn(self, resume: bool) -> subprocess.Popen[bytes]:
        cmd = self._command(resume)
        # its errors in worker.log as UTF-8, which `_last_error` reads (Windows would
        # write them in the console's code page: "µm" came back as "�m")
        env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
        env[WORKER_RESTART_ENV] = str(self.restarts)  # (its own count may fall short)
        if self.threads is not None:
            env["LIVESCOPE_THREADS"] = str(self.threads)
        # a Ctrl+C in the terminal goes to the run, not to the worker as well (which
        # exited "interrupted" and was taken for a worker that refused to run): it is
        # started in a process group (Windows) or session (POSIX) of its own; the run
        # stops it, and its stdin pipe closing stops it if the run dies
        flags = 0
        if os.name == "nt":
            flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
            if self.lower_priority:
                flags |= getattr(subprocess, "BELOW_NORMAL_PRIORITY_CLASS", 0)
        # its stdin is a pipe we hold: it closes when this process dies, and the worker stops
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log, env=env,
            creationflags=flags, start_new_session=os.name != "nt",
        )  # fmt: skip
        if sys.platform == "win32" or sys.platform.startswith("linux"):
            pass  # (its priority class above; Linux lowers its bulk threads only)
        elif self.lower_priority:  # (macOS and other POSIX systems: the whole process)
            try:  # at once, before the worker starts its threads (they inherit it)
                nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICE)
                os.setpriority(os.PRIO_PROCESS, proc.pid, nice)
            except OSError:
                logger.warning("could not lower the worker's priority; it runs at normal")
        return proc

    def _launch(self, resume: bool) -> subprocess.Popen[bytes]:
        """Start a worker (lock held), its output in worker.log from here on."""
        # (its errors are its own: an earlier worker's are not taken for this one's)
        self._log.flush()
        self._log_from = os.fstat(self._log.fileno()).st_size
        self._ready_at_launch = self._ready_seen = self._ready()
        self._stored_at_launch = max(0, _size(self._progress_log))  # (an empty log: no field)
        self._progress_at = time.monotonic()  # (its start-up allowance counts from here)
        self._resumed = resume
        return self._spawn(resume)

    def _ready(self) -> str | None:
        """Return ``results/ready`` (the time a worker became ready; None: not there)."""
        try:
            return (self.results / "ready").read_text(encoding="utf-8")
        except OSError:
            return None

    def start(self) -> None:
        """Start the worker and the thread that watches it."""
        with self._lock:
            self.proc = self._launch(resume=False)
        self._watched = start_daemon(self._watch, "livescope-supervisor")

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                proc = self.proc
            if proc is None:
                return
            code = proc.poll()
            if code is None:
                if proc is not self._hung_proc and self._hung(proc):
                    self._end_hung(proc)  # (its exit is taken below, as any other)
                    continue
                self._stop.wait(0.1)
                continue
            if proc.stdin is not None:
                proc.stdin.close()
            if self._stop.is_set():  # stop() takes this exit (ended by it, or just before)
                return
            self._handled = proc
            if code != 0:  # before the exit is seen: whoever sees it can say why
                self.error = self._hang_error if proc is self._hung_proc else self._why(code)
            self.exits.append(code)
            if code == 0:
                return  # finished: the run ended and every field was analysed
            # its input or config is wrong: a restart cannot help. A worker that had become
            # ready (it wrote results/ready anew) accepted them: its status 2 is a failure
            # of the run ("deciding failed", "storing results failed"), which a restart
            # from its saved state can get past; it was taken for a refusal, and the rest
            # of a long run went unanalysed after one failed field
            never_ready = self._ready() == self._ready_at_launch
            if code == WORKER_REFUSED and never_ready:
                logger.error("the worker refused to run: %s (see %s)",
                             self.error or f"exit status {code}", self._log_path)  # fmt: skip
                self._give_up()
                return
            # its engines' runtime failed as it started: a restarted one (the GPU not yet
            # freed by the worker it replaces) is restarted below, the run's first is not
            if code == WORKER_RUNTIME_FAILED and never_ready and not self._resumed:
                logger.error("the worker's engines failed before it was ready: %s; not "
                             "restarted, as they have not yet run in this run (see %s)",
                             self.error or f"exit status {code}", self._log_path)  # fmt: skip
                self._give_up()
                return
            if _size(self._progress_log) > self._stored_at_launch:
                self._in_row = 0  # it analysed fields: not a worker that cannot run
            if self._in_row >= self.max_restarts:
                if held := _HELD_OPEN.match(self.error):
                    # (its own line says "close it": no worker is started again to see it closed)
                    self.error = self._held_open_error(held["path"])
                    logger.error("%s (see %s)", self.error, self._log_path)
                else:
                    logger.error("worker exited with %s%s; %d restarts in a row used, giving "
                                 "up (see %s)", _status(code),
                                 f" ({self.error})" if self.error else "",
                                 self._in_row, self._log_path)  # fmt: skip
                self._give_up()
                return
            self.restarts += 1
            self._in_row += 1
            delay = min(30.0, self.restart_delay_s * 2 ** (self._in_row - 1))
            logger.warning("worker exited with %s%s; restarting it (%d) in %g s", _status(code),
                           f" ({self.error})" if self.error else "", self.restarts,
                           delay)  # fmt: skip
            if self._stop.wait(delay):  # (stop() came meanwhile: it takes this exit)
                return
            with self._lock:
                if self._stop.is_set():  # (stop() came meanwhile)
                    return
                try:
                    self.proc = self._launch(resume=True)
                except OSError as exc:  # (e.g. no memory left to start it: as a last exit)
                    self.restarts -= 1
                    self._in_row -= 1
                    self.error = f"the worker could not be started again: {exc}"
                    logger.error("%s; giving up", self.error)
                    self._give_up()
                    return

    def _hung(self, proc: subprocess.Popen[bytes]) -> bool:
        """Return True if the running worker ``proc`` is to be taken as hung (watching thread).

        It is when it made no progress (stored no field, became ready or was
        started) for `hang_timeout_s` (or `hang_field_multiple` times the slowest of
        its recent fields, where longer; `start_timeout_s` before it is ready) while frames
        newer than the newest field stored were recorded for it all along; or, once the
        run has ended (`wait`) with every field stored, wrote nothing of its end
        (`_end_marks`) either, for `end_timeout_s`.
        """
        now = time.monotonic()
        allowed = self.hang_timeout_s
        if now - self._checked_at < min(1.0, allowed / 10):
            return False  # (minutes matter, not a tenth of a second: the logs read less)
        self._checked_at = now
        stored, waiting = self._backlog.read()
        ready = self._ready()
        if stored or ready != self._ready_seen:
            self._progress_at, self._ready_seen = now, ready
        ending = self._ended  # (set by wait(): a bool, read here as it was last set)
        if ending and (marks := self._end_marks()) != self._end_seen:
            self._progress_at, self._end_seen = now, marks
        if not waiting and not ending:
            self._waiting_since = None
            return False
        if self._waiting_since is None:
            self._waiting_since = now
        if ready == self._ready_at_launch:
            allowed = self.start_timeout_s
        elif not waiting:  # (the run ended, every field stored: the worker's end)
            allowed = self.end_timeout_s
        else:  # (fields this slow are no hang: never less than the configured allowance)
            allowed = max(allowed, self.hang_field_multiple * self._backlog.slowest_ms / 1000)
        idle = now - max(self._progress_at, self._waiting_since)
        if idle < allowed:
            return False
        self.hangs += 1
        ready_or_not = "" if ready != self._ready_at_launch else " (it never became ready)"
        if waiting:
            what = f"analysed no field for {idle:.0f} s while recorded frames waited"
        else:
            what = f"made no progress for {idle:.0f} s in its end, every field stored,"
            what += " after the run had ended"
        self._hang_error = f"hung: it {what}{ready_or_not}"
        logger.error("the worker (process %d) %s%s: it is taken as hung and ended (see %s)",
                     proc.pid, what + (" for it" if waiting else ""), ready_or_not,
                     self._log_path)  # fmt: skip
        return True

    def _end_marks(self) -> tuple[object, ...]:
        """Return what a worker writes as it ends, after its last field: its progress then.

        ``state.json`` (saved once it finished), ``cells.csv`` (rewritten with the
        tracker's late revisions), ``worker.json``, and each folder of ``results/ctc``
        (a CTC result is written a mask at a time into a staging folder, then swapped
        in): a long run's rewrite takes minutes, and is no hang. Its first pass reads
        a position's masks and writes nothing: one of more than `end_timeout_s` is taken
        for a hang. Called by the watching thread and by `wait`.
        """
        marks: list[object] = [
            _stamp(self.results / name) for name in ("state.json", "cells.csv", "worker.json")
        ]
        ctc = self.results / "ctc"
        marks.append(_stamp(ctc))
        with contextlib.suppress(OSError), os.scandir(ctc) as entries:
            marks += sorted((e.name, _stamp(Path(e.path))) for e in entries)
        return tuple(marks)

    def _end_hung(self, proc: subprocess.Popen[bytes]) -> None:
        """End the hung worker ``proc`` as `stop` ends one (watching thread); not waiting for it.

        One that does not end when killed (stuck in its GPU driver) is restarted
        once it has ended: a new worker would not get the GPU before that.
        """
        self._hung_proc = proc
        proc.terminate()
        deadline = time.monotonic() + self.stop_grace_s
        while proc.poll() is None and time.monotonic() < deadline:
            if self._stop.wait(0.05):
                return  # (stop() ends it)
        if proc.poll() is None:
            logger.warning(
                "the hung worker did not end within %g s of being told to; killing it",
                self.stop_grace_s,
            )
            proc.kill()

    @property
    def _progress_log(self) -> Path:
        """``results/latency.jsonl``: a line per field the worker stored."""
        return self.results / "latency.jsonl"

    @property
    def _log_path(self) -> Path:
        return self.results / "worker.log"

    def _why(self, code: int) -> str:
        """Say why the current worker exited with ``code`` (not 0): what ended it, its error."""
        # (a signal is the reason, whatever it printed before: the OOM killer's SIGKILL was
        # reported as the last warning the worker had logged, e.g. a slow field)
        return ": ".join(part for part in (_ended_by(code), self._last_error()) if part)

    def _last_error(self) -> str:
        """Return the current worker's own last error line in worker.log ('' if none).

        Its logged warnings and notes (``WARNING livescope: ...``) are not errors: a
        worker that printed nothing else (killed, or a crash in native code) has none.
        """
        if not self._log.closed:
            self._log.flush()
        try:
            with (self.results / "worker.log").open("rb") as fh:
                fh.seek(self._log_from)
                lines = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        rows = [ln.strip() for ln in lines.splitlines() if ln.strip()]
        rows = [ln for ln in rows if not _NOT_ERRORS.match(ln)]
        errors = [ln[len("error:") :].strip() for ln in rows if ln.lower().startswith("error:")]
        return (errors or rows or [""])[-1]

    def _held_open_error(self, path: str) -> str:
        """Say that the worker was given up because ``path`` was held open, and what to do.

        Called by the watching thread as it gives up on a worker whose last error was
        `_HELD_OPEN`: no worker is started again in this run, so the worker's own
        "close it" is not enough; the fields left are analysed by a worker started by
        hand on the ended run, which resumes as a restarted one does.
        """
        return (
            f"the worker was given up after {self._in_row} restarts in a row: {path} was held "
            "open by another program (a spreadsheet?) or not writable, and a resumed worker "
            "must rewrite it; the rest of the run goes unanalysed. Close it and, once the run "
            f"has ended, analyse the rest with `livescope worker {self.run_dir} --config "
            f"{self.config_path} --resume` (then `livescope report {self.run_dir}`)"
        )

    def _give_up(self) -> None:
        """Leave ``results/worker.failed`` (the replay's gate stops waiting on it)."""
        self._gave_up = True  # (first: the file may not be written, a full disk)
        write_atomic(
            self.results / WORKER_FAILED, self.error or f"exit codes {_statuses(self.exits)}"
        )

    def stop(self) -> None:
        """Stop watching and terminate the worker (e.g. when the run could not start).

        A worker that had failed on its own before this (its exit not yet seen by the
        watching thread) is not taken for one this stopped: its exit code is kept and
        its error line logged and kept in ``error``.

        A KeyboardInterrupt (a second Ctrl+C) while it waits for the worker to end
        kills the worker and closes ``worker.log`` before it is raised.

        The worker is ended at once, with no chance to clean up, on every platform:
        `~subprocess.Popen.terminate` is SIGTERM on POSIX, which the worker does not
        catch, and TerminateProcess on Windows (its exit status is then 1). There is
        no gentler stop (its stdin closing ends it only between frames, and as a
        failure). Nothing a restart needs is lost: the worker replaces
        ``results/state.json`` whole after each field it stores; the field it was
        analysing is not stored. `stop_grace_s` is for a worker that does not end
        then (stuck in its GPU driver), which is killed.
        """
        self._stop.set()
        with self._lock:
            proc = self.proc
            ended_itself = proc is not None and proc.poll() is not None
            if proc is not None and not ended_itself:
                proc.terminate()
        try:
            if self._watched is not None:
                self._watched.wait(5)  # (after it, the watcher neither takes an exit nor restarts)
            if proc is not None:
                try:
                    proc.wait(self.stop_grace_s)
                except subprocess.TimeoutExpired:  # (stuck, or SIGTERM ignored: the error is ours)
                    logger.warning(
                        "the worker did not end within %g s of being told to; killing it",
                        self.stop_grace_s,
                    )
                    proc.kill()
                    proc.wait(10)
        except BaseException:
            # (a Ctrl+C in the wait: the worker, in a session of its own, did not get it, and
            # was left running after the run, holding the GPU)
            if proc is not None:
                proc.kill()
                if proc.stdin is not None:
                    proc.stdin.close()
            self._log.close()
            raise
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            if proc is not self._handled:  # an exit the watcher did not take
                self._handled = proc
                self.exits.append(proc.returncode)
                if ended_itself and proc.returncode != 0:
                    hung = proc is self._hung_proc  # (taken as hung; stop() came as it ended)
                    self.error = self._hang_error if hung else self._why(proc.returncode)
                    why = self.error or f"see {self._log_path}"
                    logger.error("the worker had exited with %s before it was stopped: %s",
                                 _status(proc.returncode), why)  # fmt: skip
        self._log.close()

    def kill(self) -> None:
        """Kill the current worker process (fault injection; the supervisor restarts it)."""
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()

    def wait(self, timeout_s: float = 600.0) -> dict[str, Any]:
        """Wait for the worker to finish the run (after the agent ended); return its summary.

        A worker still analysing the fields it fell behind on (it catches up on
        the recording) is waited for as long as it stores a field at least every
        ``timeout_s`` (``results/latency.jsonl`` grows), or `hang_field_multiple`
        times the slowest of the last fields stored in this run (s; as the hang check
        allows it), where longer, or
        `start_timeout_s` while it is not ready (a worker restarted after the run
        loads its engines again, and may build TensorRT plans); until
        session 53 it was terminated ``timeout_s`` after the run, however far it had
        got. A worker that hangs meanwhile is restarted by the watching thread
        (`hang_timeout_s`), also one stuck in its end once it stored every field
        (`end_timeout_s`); one restarted, one becoming ready, and what it writes as it
        ends (`_end_marks`: the CTC result, ``state.json``, ``worker.json``) count as
        progress too.

        Raises
        ------
        LivescopeError
            if it does not finish, storing no field for that long (it is then
            terminated).

        """
        progress = self._progress_log
        self._ended = True  # (the watching thread now takes a worker stuck in its end as hung)
        # (a restarted worker has its start-up, up to start_timeout_s, before its first field)
        seen, said = (_size(progress), self._ready(), self.proc, self._end_marks()), False
        t0 = progress_at = time.monotonic()
        while self._watched is not None and not self._watched.is_set():
            now = time.monotonic()
            state = (_size(progress), self._ready(), self.proc, self._end_marks())
            if state != seen:
                seen, progress_at = state, now
            # as the hang check allows it (a big tiled field on a slow CPU takes minutes: such
            # a worker was terminated after timeout_s while still working); slowest_ms is the
            # watching thread's, a float it replaces, read here as it was last set
            allowed = max(timeout_s, self.hang_field_multiple * self._backlog.slowest_ms / 1000)
            if not seen[1]:  # (not ready: loading its engines, building TensorRT plans)
                allowed = max(allowed, self.start_timeout_s)
            if now - progress_at > allowed:
                # ended as stop() ends it: reaped, its exit taken as ours, not as a failure
                self.stop()
                raise LivescopeError(
                    f"the worker did not finish: it stored no field for {allowed:g} s "
                    f"after the run (log: {self.results / 'worker.log'})"
                )
            if not said and now - t0 > 10.0:
                said = True
                logger.info("waiting for the worker to analyse the fields it has not yet")
            self._watched.wait(0.2)
        self._log.close()
        path = self.results / "worker.json"
        summary: dict[str, Any] = {}
        if path.is_file():
            summary = json.loads(path.read_text(encoding="utf-8"))
        summary["supervisor"] = {"restarts": self.restarts, "exit_codes": self.exits}
        if self.hangs:  # (workers taken as hung, ended and restarted: in restarts too)
            summary["supervisor"]["hangs"] = self.hangs
        if not self.exits or self.exits[-1] != 0:
            raise LivescopeError(
                f"the worker failed (exit codes {_statuses(self.exits)}"
                + (f": {self.error}" if self.error else "")
                + f"); see {self.results / 'worker.log'}"
            )
        if summary.get("ok") is False:  # (a worker that failed exits with an error: not this one)
            raise LivescopeError(
                f"the worker ended but says its results are incomplete; see "
                f"{self.results / 'worker.log'}"
            )
        return summary


class _Backlog:
    """Whether recorded frames wait for the worker: frames newer than the newest field it stored.

    Compared by the agent's frame numbers (``seq``), not by when the lines were
    written: the recorder may log a field's frames after the worker, which had them
    from the bus, stored the field. A field's stored ``seq`` is the frame that completed
    it; a frame of that same field logged after it (one the bus lost) is not waiting.
    Frames decisions added are left out unless the worker analyses them
    (``analyse_added``). Each `read` parses only the lines appended since the last.
    """

    def __init__(self, run_dir: Path, results: Path, *, analyse_added: bool) -> None:
        self.analyse_added = analyse_added
        self._frames = _Appended(run_dir / FRAMES_FILE)
        self._stored = _Appended(results / "latency.jsonl")
        self.newest_frame: tuple[int, tuple[str, int]] | None = None
        """The newest frame recorded for the worker: (seq, (position, t))."""
        self.newest_stored: tuple[int, tuple[str, int]] | None = None
        """The newest field the worker stored: (seq, (position, t))."""
        self._recent_ms: collections.deque[float] = collections.deque(maxlen=_RECENT_FIELDS)
        """What each of the last `_RECENT_FIELDS` stored fields took the worker, ms."""
        self.slowest_ms = 0.0
        """The longest one of the last `_RECENT_FIELDS` stored fields took the worker itself
        (`_FIELD_WORK_STAGES`), ms: of any worker of the run (one restarted runs the same
        engines on the same fields). A float replaced once per `read`, so that another
        thread may read it."""

    def read(self) -> tuple[bool, bool]:
        """Return (fields were stored since the last read, frames wait for the worker)."""
        anew, lines = self._stored.read()
        if anew:  # (a restarted worker rewrote the log: fields it redoes are gone from it)
            self.newest_stored = None
        # (OverflowError too: a damaged line's Infinity or 1e999 is no int, and one raised
        # here ended the watching thread, and with it the worker's restarts and hang checks)
        # (not emptied when a restarted worker rewrote the log: its fields read again are
        # the same fields, the last of them still the most recent)
        recent = self._recent_ms
        for rec in _records(lines):
            with contextlib.suppress(KeyError, TypeError, ValueError, OverflowError):
                seq = int(rec["seq"])
                if self.newest_stored is None or seq > self.newest_stored[0]:
                    self.newest_stored = (seq, (str(rec["position"]), int(rec["t"])))
            # a line the latency figures take as damaged is passed over here too
            if (ms := _stage_ms(rec)) is not None:
                took = sum(ms.get(k, 0.0) for k in _FIELD_WORK_STAGES)
                if math.isfinite(took):  # (finite values may sum to infinity)
                    recent.append(took)
        if lines:
            self.slowest_ms = max(recent, default=0.0)
        anew_frames, frame_lines = self._frames.read()
        if anew_frames:  # (another run's log now)
            self.newest_frame = None
        for rec in _records(frame_lines):
            if rec.get("added_by") and not self.analyse_added:
                continue  # (the worker leaves it to the recording)
            with contextlib.suppress(
                KeyError, TypeError, ValueError, AttributeError, OverflowError
            ):
                seq = int(rec["seq"])
                if self.newest_frame is None or seq > self.newest_frame[0]:
                    self.newest_frame = (seq, (str(rec["position"]), int(rec["index"].get("t", 0))))
        frame, stored = self.newest_frame, self.newest_stored
        waiting = frame is not None and (
            stored is None or (frame[0] > stored[0] and frame[1] != stored[1])
        )
        return anew or bool(lines), waiting


class _Appended:
    """The whole lines appended to a log since the last `read` (all, once it was replaced)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._id: tuple[int, int] | None = None  # the file read: (device, inode)
        self._offset = 0

    def read(self) -> tuple[bool, list[bytes]]:
        """Return (read from its start again: replaced or cut, the lines appended since)."""
        try:
            st = self.path.stat()
        except OSError:
            return False, []
        anew = (st.st_dev, st.st_ino) != self._id or st.st_size < self._offset
        if not anew and st.st_size == self._offset:
            # (opened only when it changed: on Windows a file another process has open
            # cannot be replaced, and a restarted worker replaces latency.jsonl)
            return False, []
        try:
            with self.path.open("rb") as f:
                st = os.fstat(f.fileno())  # (the file opened: it may have been replaced since)
                if anew or (st.st_dev, st.st_ino) != self._id or st.st_size < self._offset:
                    anew, self._id, self._offset = True, (st.st_dev, st.st_ino), 0
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return False, []
        whole = data[: data.rfind(b"\n") + 1]  # (a line being written waits for the next read)
        self._offset += len(whole)
        return anew, whole.splitlines()


def _records(lines: list[bytes]) -> list[dict[str, Any]]:
    """Return the JSON objects among ``lines`` (a damaged line is passed over)."""
    out = []
    for raw in lines:
        try:
            rec = json.loads(raw)
        except (ValueError, RecursionError):  # (RecursionError: a line of thousands of "[")
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Return ``path``'s (inode, size, modification time in ns); None: not there.

    A folder's changes as files are made in it or renamed into it.
    """
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _size(path: Path) -> int:
    """Size of ``path`` in bytes (-1: not there)."""
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _ended_by(code: int) -> str:
    """Name what ended a process that exited with ``code``; '' for a status it chose.

    A negative status is the POSIX signal that killed it. One above 0xFFFF is a
    Windows NTSTATUS (a crash in native code reads 3221225477, which says nothing
    until written 0xC0000005): given in hex, with its meaning where it is a known
    one; the value says it, on any platform (POSIX statuses are 0-255).
    """
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code <= 0xFFFF:
        return ""
    name = _NTSTATUS.get(code)
    return f"ended by {_status(code)}" + (f" {name}" if name else "")


def _status(code: int) -> str:
    """Write exit status ``code`` as `_ended_by` names it: a Windows NTSTATUS in hex.

    Wherever a status is shown (log lines, errors, ``worker.failed``): a Windows user
    read 3221225477 in one place and 0xC0000005 in the next. POSIX statuses and
    signals (-9) are written as they are.
    """
    return f"0x{code:08X}" if code > 0xFFFF else str(code)


def _statuses(codes: list[int]) -> str:
    """Write exit statuses as a list, each as `_status` writes it (``[1, 0xC0000005]``)."""
    return "[" + ", ".join(_status(code) for code in codes) + "]"


_NTSTATUS = {
    0xC0000005: "STATUS_ACCESS_VIOLATION, a crash in native code",
    0xC000001D: "STATUS_ILLEGAL_INSTRUCTION, code built for a newer CPU",
    0xC00000FD: "STATUS_STACK_OVERFLOW, a crash in native code",
    0xC0000135: "STATUS_DLL_NOT_FOUND, a DLL it needs was not found",
    0xC000013A: "STATUS_CONTROL_C_EXIT, a Ctrl+C or its console closed",
    0xC0000374: "STATUS_HEAP_CORRUPTION, a crash in native code",
    0xC0000409: "STATUS_STACK_BUFFER_OVERRUN, a crash in native code or an abort()",
}
"""Windows exit statuses (NTSTATUS) a crashed or ended worker leaves, and what they mean."""

_FIELD_WORK_STAGES = ("engines", "analyse_other", "handoff", "prepare", "policy", "post", "store")
"""The stages of a field's latency record the worker spends on the field itself, from
its analysis start to its results stored (`livescope.pipeline.LATENCY_STAGES`; not the
waits behind earlier fields, nor the way from the camera)."""

_RECENT_FIELDS = 256
"""How many of the last stored fields the hang allowance follows (`hang_field_multiple`).

A slow field that recurs must stay among them until it comes again, or the worker is taken
as hung in it each time: a big tiled position comes once a time point, after every other
position and its close-ups (a 96-well plate at two sites is 192 fields a time point). A
field that does not recur (the PC slept mid-field) lifts the allowance for these many
fields only: minutes to hours of a run of days, not all of it."""
