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

import json
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
from ._endpoints import BusSecurity
from ._subscriber import FrameSubscriber

__all__ = ["BUS_FILE", "BusInfo", "WorkerLink", "attach"]

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
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                **{k: str(data[k]) for k in ("run_id", "frames", "control", "decisions", "mode")},
                decision_protocol=int(data.get("decision_protocol", 0)),
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
        if there is no agent (or its run has finished: said so), the agent at
        its addresses answers for another run, or (with ``decisions``) it
        speaks another version of the decision channel (`DECISION_PROTOCOL`:
        agent and worker from different livescope versions).

    """
    info = run if isinstance(run, BusInfo) else BusInfo.read(run)
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
