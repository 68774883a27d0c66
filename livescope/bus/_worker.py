"""The worker-side API: attach to a running agent, receive frames, send decisions.

Examples
--------
>>> from livescope.bus import attach                      # doctest: +SKIP
>>> from livescope.schema import StopRun                  # doctest: +SKIP
>>> with attach("runs/my-run") as link:                   # doctest: +SKIP
...     while (frame := link.frames.get(timeout=5)) is not None:
...         with frame:                                   # zero-copy view; released after
...             mean = frame.array.mean()
...         if mean > 1000:
...             link.decide(StopRun(run_id=link.run_id, seq=frame.seq, rule="too bright"))

"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from livescope.schema import (
    DECISION_PROTOCOL,
    Decision,
    DecisionAck,
    LivescopeError,
    write_atomic,
)

from ._decisions import DecisionClient
from ._endpoints import BusSecurity, pid_lives
from ._subscriber import FrameSubscriber

__all__ = ["BUS_FILE", "BusInfo", "WorkerLink", "attach", "process_gone", "this_host"]

BUS_FILE = "bus.json"


@dataclass(frozen=True)
class BusInfo:
    """Where a running agent's sockets are (written to ``<run>/bus.json``)."""

    run_id: str
    frames: str
    control: str
    decisions: str
    mode: str
    decision_protocol: int = DECISION_PROTOCOL
    """The agent's `DECISION_PROTOCOL`; 0 when the file states none (an agent from
    before the channel was versioned, whichever way it sent decisions)."""
    pid: int | None = None
    """The agent's process id; None when the file states none (an agent from before
    2026-12, or a `BusInfo` made by hand)."""
    host: str | None = None
    """Where that process id holds: the agent's host name (on Linux with its pid
    namespace, see `this_host`); None as for ``pid``."""

    def with_this_process(self) -> BusInfo:
        """Return a copy naming this process and host as the agent's (what an agent writes)."""
        return dataclasses.replace(self, pid=os.getpid(), host=this_host())

    def agent_gone(self) -> bool:
        """Return whether the agent that wrote this file is gone without ending its run.

        True only for an agent process of this host (`pid`, `host`) that no
        longer runs (killed, crashed): it removes ``bus.json`` as it ends, so
        the file outlived it. False while it runs, and when that cannot be told
        from here: no process named (an older agent) or another host's.
        Cheap (no socket): called about once a second while a worker waits.
        """
        return self.pid is not None and self.host is not None and process_gone(self.pid, self.host)

    def write(self, run_dir: Path) -> Path:
        """Write ``bus.json`` into ``run_dir`` (atomically)."""
        return write_atomic(run_dir / BUS_FILE, json.dumps(self.__dict__, indent=1))

    @classmethod
    def read(cls, run_dir_or_file: str | Path) -> BusInfo:
        """Read ``bus.json`` from a run folder (or the file itself).

        Raises
        ------
        LivescopeError
            if there is none (no agent runs there, or its run has finished), or
            it cannot be read or is no bus file.

        """
        p = Path(run_dir_or_file)
        path = p / BUS_FILE if p.is_dir() else p
        keys = ("run_id", "frames", "control", "decisions", "mode")  # (those without default)
        what = "an agent's bus.json, in its run folder"
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            # (named: the text of a KeyError, "('run_id')", was all it said)
            if not isinstance(data, dict):
                raise LivescopeError(
                    f"{path} is not a livescope bus file: it holds a JSON "
                    f"{type(data).__name__}, not an object (give {what})"
                )
            if missing := [k for k in keys if k not in data]:
                raise LivescopeError(
                    f"{path} is not a livescope bus file: it has no {', '.join(missing)} "
                    f"(give {what})"
                )
            return cls(
                **{k: str(data[k]) for k in keys},
                decision_protocol=int(data.get("decision_protocol", 0)),
                # (an agent from before they were written states neither)
                pid=None if data.get("pid") is None else int(data["pid"]),
                host=None if data.get("host") is None else str(data["host"]),
            )
        except FileNotFoundError:
            if path.name == BUS_FILE and (path.parent / "summary.json").is_file():
                # (the agent removes bus.json as it ends, then writes its summary)
                raise LivescopeError(
                    f"the run in {path.parent} has finished (its summary.json is there): no "
                    "agent sends its frames any more (`livescope worker --analyse` analyses "
                    "what it recorded)"
                ) from None
            raise LivescopeError(f"no {BUS_FILE} in {p}: is an agent running there?") from None
        except OSError as exc:  # (no permission to read it, a folder by that name)
            raise LivescopeError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise LivescopeError(f"{path} is not a livescope bus file ({exc})") from None


def this_host() -> str:
    """Return where this process's id holds: the host name, on Linux with its pid namespace.

    e.g. ``"lab-pc pid:[4026531836]"``: a container's (or WSL's, beside a
    Windows agent of the same host name) process ids are not the host's, and a
    pid looked up in the wrong one would pass a running agent for gone.
    """
    try:
        return f"{socket.gethostname()} {os.readlink('/proc/self/ns/pid')}"
    except OSError:  # (no /proc: Windows, macOS; or no permission to read it)
        return socket.gethostname()


def process_gone(pid: int, host: str) -> bool:
    """Return whether process ``pid`` of ``host`` (as `this_host` names it) no longer runs.

    True only for a process of this host found gone (killed, crashed; a zombie);
    False while it runs and when that cannot be told from here (another host's).
    """
    return host == this_host() and not _process_lives(pid)


def _process_lives(pid: int) -> bool:
    """Return whether process ``pid`` of this host runs; when it cannot be told, True."""
    # (an if-else, not code after a return: mypy checks the branch of its platform only)
    if sys.platform == "win32":  # (os.kill there ends the process, whatever the signal)
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenProcess.restype = wintypes.HANDLE
        kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
        kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:  # ERROR_INVALID_PARAMETER: no such process (denied: another user's)
            return bool(ctypes.get_last_error() != 87)
        try:
            code = wintypes.DWORD()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return bool(code.value == 259)  # STILL_ACTIVE (a handle kept open keeps it listed)
        finally:
            kernel32.CloseHandle(handle)
    else:
        if not pid_lives(pid):
            return False
        try:  # (Linux) killed but not yet waited for by its parent: a zombie, gone all the same
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            return True
        return stat.rpartition(")")[2].split()[:1] != ["Z"]


class WorkerLink:
    """A worker's connection to one agent: ``frames`` in, decisions out.

    ``decisions`` is None on a link attached for frames only. Take frames on one
    thread and send decisions on one thread (each socket is used by one).
    """

    def __init__(
        self,
        info: BusInfo,
        *,
        policy: Literal["every", "latest"] = "every",
        maxlen: int = 16,
        security: BusSecurity | None = None,
        decisions: bool = True,
    ) -> None:
        self.info = info
        self.run_id = info.run_id
        self._closed = False
        self.frames = FrameSubscriber(
            info.frames,
            control_endpoint=info.control,
            policy=policy,
            maxlen=maxlen,
            security=security,
            run_id=info.run_id,
        )
        try:
            self.decisions = (
                DecisionClient(info.decisions, security=security) if decisions else None
            )
        except BaseException:  # (the subscriber would hold its ring slots and place forever)
            self.frames.close()
            raise

    def decide(self, decision: Decision, timeout: float = 5.0) -> DecisionAck:
        """Send a decision and wait for the agent's acknowledgement.

        If none comes within ``timeout``, the agent may still apply it: sending
        the same decision again (same ``decision_id``, unchanged) is safe, as it
        is answered with its first acknowledgement and not applied twice.

        Raises
        ------
        LivescopeError
            if no acknowledgement comes within ``timeout`` seconds, the link
            was attached for frames only, or it is closed.
        ValueError
            if ``timeout`` is not a number of seconds >= 0 (``math.inf``: wait
            until answered).

        """
        if self._closed:  # (its socket is gone: zmq would say "not a socket")
            raise LivescopeError(
                f"the link to run {self.run_id} is closed: attach again to send decisions"
            )
        if self.decisions is None:
            raise LivescopeError(
                f"the link to run {self.run_id} was attached for frames only "
                "(attach(..., decisions=False)): it cannot send decisions"
            )
        return self.decisions.send(decision, timeout)

    def close(self) -> None:
        """Detach. Calling it again does nothing.

        Every frame is released, also those taken and still held: the agent may
        overwrite a shared-memory frame's pixels after (copy what must outlive
        the link first).
        """
        self._closed = True
        try:
            self.frames.close()
        finally:  # (the decision socket is closed also when stopping the frames fails)
            if self.decisions is not None:
                self.decisions.close()

    def __enter__(self) -> WorkerLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attach(
    run: str | Path | BusInfo,
    *,
    policy: Literal["every", "latest"] = "every",
    maxlen: int = 16,
    security: BusSecurity | None = None,
    decisions: bool = True,
) -> WorkerLink:
    """Attach a worker to a running agent (its run folder, ``bus.json``, or a `BusInfo`).

    ``decisions=False`` attaches for frames only (a viewer, a counter, a
    recorder of your own): no decision channel is opened, so an agent whose
    decision channel speaks another version is no obstacle (every frame
    header is still checked against the frame protocol).

    Raises
    ------
    LivescopeError
        if there is no agent (or its run has finished, or its process is gone
        without ending it: said so), the agent at
        its addresses answers for another run, or (with ``decisions``) it
        speaks another version of the decision channel (`DECISION_PROTOCOL`:
        agent and worker from different livescope versions).

    """
    info = run if isinstance(run, BusInfo) else BusInfo.read(run)
    if info.agent_gone():  # (else "no answer from the bus control" after a 3 s wait)
        raise LivescopeError(
            f"the agent of run {info.run_id} (process {info.pid}) is gone without ending its "
            f"run (killed or crashed): its {BUS_FILE} is left over and no agent sends its "
            "frames any more (`livescope worker --analyse` analyses what it recorded)"
        )
    if decisions and info.decision_protocol != DECISION_PROTOCOL:
        theirs = (
            f"decision protocol version {info.decision_protocol}"
            if info.decision_protocol
            else "an unversioned decision protocol (an earlier livescope)"
        )
        raise LivescopeError(
            f"the agent of run {info.run_id} speaks {theirs}; this worker speaks version "
            f"{DECISION_PROTOCOL}: run agent and worker from the same livescope version"
        )
    return WorkerLink(info, policy=policy, maxlen=maxlen, security=security, decisions=decisions)
