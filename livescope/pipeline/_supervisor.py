"""Start the pipeline worker as its own process and restart it when it dies.

``livescope run`` / ``livescope demo`` start the agent in their own process and
the worker beside it (``python -m livescope worker RUN --config FILE``); the
supervisor watches the worker and, if it exits with an error or is killed
while the run goes on, starts it again with ``--resume``: the new worker
restores the trackers, policies and guardrails from ``results/state.json`` and
reads the fields it missed back from the recording, so tracks keep their ids
and no field goes unanalysed. The recording never depends on the worker.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from livescope.schema import WORKER_NICE, LivescopeError, start_daemon, write_atomic
from livescope.scope import WORKER_FAILED

from ._config import RESULTS_DIR, WorkerConfig

__all__ = ["WORKER_FAILED", "WORKER_REFUSED", "WorkerSupervisor"]

WORKER_REFUSED = 2
"""Exit status of a worker that refused its input or config (the CLI's user-error
status): it is not restarted, since it would refuse again. Only before it was
ready: the worker fails a run with the same status when its deciding or storing
thread failed (``deciding failed: ...``), and such a worker is restarted."""

logger = logging.getLogger("livescope")

_NOT_ERRORS = re.compile(r"(DEBUG|INFO|WARNING) \S+: ")
"""A line the worker's logging wrote below ERROR (``setup_logging``'s format)."""


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
    """How long `stop` waits for a worker it told to end before it kills it."""

    restart_delay_s = 1.0
    """How long the supervisor waits before the first restart, doubled for each one
    in a row after it (at most 30 s): a worker that fails as it starts (a GPU not yet free, a
    driver error) is not started again at once, over and over, beside the acquisition.
    The fields it misses meanwhile are read back from the recording."""

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
        self._stored_at_launch = 0  # results/latency.jsonl's size as it found it
        self._in_row = 0  # restarts since a worker last analysed a field

    def _spawn(self, resume: bool) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "livescope", "worker", str(self.run_dir), "--config",
               str(self.config_path), "--json"]  # fmt: skip
        if resume:
            cmd.append("--resume")
        # its errors in worker.log as UTF-8, which `_last_error` reads (Windows would
        # write them in the console's code page: "µm" came back as "�m")
        env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
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
        self._ready_at_launch = self._ready()
        self._stored_at_launch = self._stored()
        return self._spawn(resume)

    def _ready(self) -> str | None:
        """Return ``results/ready`` (the time a worker became ready; None: not there)."""
        try:
            return (self.results / "ready").read_text(encoding="utf-8")
        except OSError:
            return None

    def _stored(self) -> int:
        """Return the size of ``results/latency.jsonl`` (a line per field the worker stored)."""
        try:
            return (self.results / "latency.jsonl").stat().st_size
        except OSError:
            return 0

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
                self._stop.wait(0.1)
                continue
            if proc.stdin is not None:
                proc.stdin.close()
            if self._stop.is_set():  # stop() takes this exit (ended by it, or just before)
                return
            self._handled = proc
            if code != 0:  # before the exit is seen: whoever sees it can say why
                self.error = self._why(code)
            self.exits.append(code)
            if code == 0:
                return  # finished: the run ended and every field was analysed
            # its input or config is wrong: a restart cannot help. A worker that had become
            # ready (it wrote results/ready anew) accepted them: its status 2 is a failure
            # of the run ("deciding failed", "storing results failed"), which a restart
            # from its saved state can get past; it was taken for a refusal, and the rest
            # of a long run went unanalysed after one failed field
            if code == WORKER_REFUSED and self._ready() == self._ready_at_launch:
                logger.error("the worker refused to run: %s (see %s)",
                             self.error or f"exit status {code}", self._log_path)  # fmt: skip
                self._give_up()
                return
            if self._stored() > self._stored_at_launch:
                self._in_row = 0  # it analysed fields: not a worker that cannot run
            if self._in_row >= self.max_restarts:
                logger.error("worker exited with %s%s; %d restarts in a row used, giving up "
                             "(see %s)", code, f" ({self.error})" if self.error else "",
                             self._in_row, self._log_path)  # fmt: skip
                self._give_up()
                return
            self.restarts += 1
            self._in_row += 1
            delay = min(30.0, self.restart_delay_s * 2 ** (self._in_row - 1))
            logger.warning("worker exited with %s%s; restarting it (%d) in %g s", code,
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

    @property
    def _log_path(self) -> Path:
        return self.results / "worker.log"

    def _why(self, code: int) -> str:
        """Say why the current worker exited with ``code`` (not 0): its signal, its error."""
        # (a signal is the reason, whatever it printed before: the OOM killer's SIGKILL was
        # reported as the last warning the worker had logged, e.g. a slow field)
        return ": ".join(part for part in (_killed_by(code), self._last_error()) if part)

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

    def _give_up(self) -> None:
        """Leave ``results/worker.failed`` (the replay's gate stops waiting on it)."""
        write_atomic(self.results / WORKER_FAILED, self.error or f"exit codes {self.exits}")

    def stop(self) -> None:
        """Stop watching and terminate the worker (e.g. when the run could not start).

        A worker that had failed on its own before this (its exit not yet seen by the
        watching thread) is not taken for one this stopped: its exit code is kept and
        its error line logged and kept in ``error``.
        """
        self._stop.set()
        with self._lock:
            proc = self.proc
            ended_itself = proc is not None and proc.poll() is not None
            if proc is not None and not ended_itself:
                proc.terminate()
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
            if proc.stdin is not None:
                proc.stdin.close()
            if proc is not self._handled:  # an exit the watcher did not take
                self._handled = proc
                self.exits.append(proc.returncode)
                if ended_itself and proc.returncode != 0:
                    self.error = self._why(proc.returncode)
                    why = self.error or f"see {self._log_path}"
                    logger.error("the worker had exited with %s before it was stopped: %s",
                                 proc.returncode, why)  # fmt: skip
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
        ``timeout_s`` (``results/latency.jsonl`` grows); until session 53 it was
        terminated ``timeout_s`` after the run, however far it had got.

        Raises
        ------
        LivescopeError
            if it does not finish, storing no field for ``timeout_s`` (it is then
            terminated).

        """
        progress = self.results / "latency.jsonl"
        stored, said = _size(progress), False
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        while self._watched is not None and not self._watched.is_set():
            now = time.monotonic()
            if (size := _size(progress)) != stored:
                stored, deadline = size, now + timeout_s
            if now > deadline:
                # ended as stop() ends it: reaped, its exit taken as ours, not as a failure
                self.stop()
                raise LivescopeError(
                    f"the worker did not finish: it stored no field for {timeout_s:g} s "
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
        if not self.exits or self.exits[-1] != 0:
            raise LivescopeError(
                f"the worker failed (exit codes {self.exits}"
                + (f": {self.error}" if self.error else "")
                + f"); see {self.results / 'worker.log'}"
            )
        if summary.get("ok") is False:  # (a worker that failed exits with an error: not this one)
            raise LivescopeError(
                f"the worker ended but says its results are incomplete; see "
                f"{self.results / 'worker.log'}"
            )
        return summary


def _size(path: Path) -> int:
    """Size of ``path`` in bytes (-1: not there)."""
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _killed_by(code: int) -> str:
    """Name the signal that ended a POSIX process (a negative exit status); '' otherwise."""
    if code >= 0:
        return ""
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"
