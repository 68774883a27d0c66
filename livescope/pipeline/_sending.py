"""A field's decisions on their way to the agent (the worker's decision thread)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from livescope.bus import BUS_FILE, WorkerLink
from livescope.policy import Observation, PolicyEngine, Verdict
from livescope.schema import LivescopeError, clock_ns

__all__ = ["send_verdicts"]


def send_verdicts(
    verdicts: list[Verdict],
    obs: Observation,
    *,
    link: WorkerLink | None,
    run_dir: Path,
    policy: PolicyEngine,
    counts: collections.Counter[str],
    timeout_s: float,
) -> tuple[list[tuple[int, int, Any]], dict[int, tuple[str, bool, str]]]:
    """Send the decisions that passed the guardrails, all at once, over ``link``.

    Returns (t_sent, t_enqueued, ack) of each accepted one, and the agent's
    (stage, ok, reason) by verdict index.

    A decision the agent refuses, or one not sent because the run has
    ended, gives its guardrail budget back; one without an answer keeps it
    booked (the agent may still have taken it). ``link`` None, or no
    ``bus.json`` in ``run_dir``: the run has ended. Counts go into ``counts``.
    """
    out: list[tuple[int, int, Any]] = []
    acks: dict[int, tuple[str, bool, str]] = {}
    todo = [i for i, v in enumerate(verdicts) if v.ok and v.firing.decision is not None]
    if not todo:
        return out, acks
    now = obs.sample_time_s
    if link is None or not (run_dir / BUS_FILE).exists():
        for i in todo:
            acks[i] = ("agent", False, "the run has ended (what-if: not sent)")
            policy.refused(verdicts[i], now)
            counts["decisions_not_sent"] += 1
        return out, acks
    client = link.decisions
    if client is None:  # pragma: no cover (the worker attaches with its decision channel)
        raise LivescopeError("the worker is attached for frames only")
    t_sent = clock_ns()
    decisions = [d for i in todo if (d := verdicts[i].firing.decision) is not None]
    replies = client.send_many(decisions, timeout=timeout_s)
    t_back = clock_ns()
    for i, ack in zip(todo, replies, strict=True):
        if isinstance(ack, LivescopeError):
            acks[i] = ("agent", False, f"no answer from the agent ({ack}); booked")
            counts["decisions_unanswered"] += 1
            continue
        acks[i] = ("agent", ack.accepted, ack.reason)
        if ack.accepted:
            counts["decisions_accepted"] += 1
            out.append((t_sent, ack.t_acked_ns or t_back, ack))
        else:
            policy.refused(verdicts[i], now)
            counts["decisions_rejected_agent"] += 1
    return out, acks
