"""A field's decisions on their way to the agent (the worker's decision thread)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from livescope.bus import BUS_FILE, WorkerLink
from livescope.policy import STALE_REFUSAL, Observation, PolicyEngine, Verdict
from livescope.schema import Decision, DecisionAck, LivescopeError, clock_ns

__all__ = ["FieldDecisions", "Unanswered"]

_HELD_MAX = 4096  # unanswered decisions remembered (an agent that stopped answering)


class Unanswered:
    """Decisions the agent did not answer in time: their budget stays booked until it does.

    `answered` is the decision client's ``on_late``: a late refusal gives the
    budget back (``decisions_refused_late``); a late acceptance keeps it
    (``decisions_accepted_late``). Both leave ``decisions_unanswered`` as it
    was (it says what happened in time); the answered ones are those counts'
    sum. The
    policies and this run on the worker's decision thread (late answers are
    read while a later field's answers are collected), or after it has
    stopped (the worker's last `drain`).
    """

    def __init__(self, policy: PolicyEngine, counts: collections.Counter[str]) -> None:
        self._policy = policy
        self._counts = counts
        self._held: dict[str, tuple[Verdict, float]] = {}  # decision_id → (verdict, booked at s)
        # late answers read before their decision was held: one whose wait ran out is
        # answered while the same `collect` still waits for the field's other decisions
        self._early: dict[str, DecisionAck] = {}

    def hold(self, decision_id: str, verdict: Verdict, now_s: float) -> None:
        """Remember a decision whose answer did not come (its budget is booked at ``now_s``)."""
        self._held[decision_id] = (verdict, now_s)
        if len(self._held) > _HELD_MAX:
            del self._held[next(iter(self._held))]
        if (ack := self._early.pop(decision_id, None)) is not None:
            self.answered(ack)

    def answered(self, ack: DecisionAck) -> None:
        """Take a late answer: count it; a refused decision's budget is given back."""
        held = self._held.pop(ack.decision_id, None)
        if held is None:  # not held yet (see `hold`), or forgotten: over `_HELD_MAX` held
            self._early[ack.decision_id] = ack
            if len(self._early) > _HELD_MAX:
                del self._early[next(iter(self._early))]
            return
        if ack.accepted:
            self._counts["decisions_accepted_late"] += 1
            return
        # (one refused as stale is not given back to its rule: its field is logged, and
        # the rule has moved on to later fields since; see `FieldDecisions.finish`)
        self._policy.refused(*held)
        self._counts["decisions_refused_late"] += 1


class FieldDecisions:
    """Post a field's decisions to the agent as the policies pass them, then collect the answers.

    `post` is `PolicyEngine.evaluate`'s ``on_pass``: each decision leaves as
    soon as the guardrails book it, so that the agent checks and queues it
    while the policies make the next (a burst of close-ups at a time point's
    first field takes the longer of the two halves, not their sum). `finish`
    collects the agent's answers once the policies are done.

    ``link`` None, or no ``bus.json`` in ``run_dir`` when the first decision
    is made: the run has ended, and nothing is sent (what-if).
    """

    def __init__(self, link: WorkerLink | None, run_dir: Path) -> None:
        self._link = link
        self._run_dir = run_dir
        self._sending: bool | None = None  # found out at the first decision
        self._posted: dict[str, int] = {}  # decision_id → when it was sent (clock_ns)
        self.posting_ms = 0.0
        """Time spent serialising and sending (inside the policies' time), ms."""
        self.given_back: set[int] = set()
        """Verdict indices of the firings `finish` gave back to their rules (refused as stale)."""

    def post(self, decision: Decision) -> None:
        """Send one decision that passed the guardrails (no waiting for its answer).

        Raises
        ------
        LivescopeError
            if the worker is attached for frames only (no decision channel).

        """
        if self._sending is None:
            self._sending = self._link is not None and (self._run_dir / BUS_FILE).exists()
        if not self._sending or self._link is None:
            return
        client = self._link.decisions
        if client is None:  # pragma: no cover (the worker attaches with its decision channel)
            raise LivescopeError("the worker is attached for frames only")
        t_sent = clock_ns()
        client.post(decision)
        self._posted[decision.decision_id] = t_sent
        self.posting_ms += (clock_ns() - t_sent) / 1e6

    @property
    def posted(self) -> int:
        """Decisions sent so far."""
        return len(self._posted)

    def finish(
        self,
        verdicts: list[Verdict],
        obs: Observation,
        *,
        policy: PolicyEngine,
        counts: collections.Counter[str],
        timeout_s: float,
        unanswered: Unanswered | None = None,
    ) -> tuple[list[tuple[int, int, Any]], dict[int, tuple[str, bool, str]]]:
        """Collect the answers to the posted decisions (waiting up to ``timeout_s``).

        Returns (t_sent, t_enqueued, ack) of each accepted one, and the agent's
        (stage, ok, reason) by verdict index: stage ``agent``, ``unanswered``
        for one it did not answer in time, or ``not_sent`` once the run has ended.

        A decision the agent refuses, or one not sent because the run has
        ended, gives its guardrail budget back; one without an answer keeps it
        booked (the agent may still take it) and goes to ``unanswered``, which
        gives it back if a refusal comes later. A decision refused as stale
        (`STALE_REFUSAL`) in time gives its firing, and those shared with it,
        back to their rules (`PolicyEngine.give_back`; their indices:
        ``given_back``); one refused so after the wait does not (the field has
        been logged, and the rules have judged later fields since). Counts go
        into ``counts``.
        """
        out: list[tuple[int, int, Any]] = []
        acks: dict[int, tuple[str, bool, str]] = {}
        todo = [
            (i, d) for i, v in enumerate(verdicts) if v.ok and (d := v.firing.decision) is not None
        ]
        if not todo:
            return out, acks
        now = obs.sample_time_s
        if not self._sending or self._link is None or self._link.decisions is None:
            for i, _ in todo:
                acks[i] = ("not_sent", False, "the run has ended (what-if: not sent)")
                policy.refused(verdicts[i], now)
                counts["decisions_not_sent"] += 1
            return out, acks
        missing = [d.decision_id for _, d in todo if d.decision_id not in self._posted]
        if missing:  # pragma: no cover (every passing decision goes through `post`)
            raise LivescopeError(f"decision(s) {missing} passed but were never posted")
        replies = self._link.decisions.collect([d.decision_id for _, d in todo], timeout_s)
        t_back = clock_ns()
        for (i, d), ack in zip(todo, replies, strict=True):
            if isinstance(ack, LivescopeError):
                acks[i] = ("unanswered", False, f"no answer from the agent ({ack}); booked")
                counts["decisions_unanswered"] += 1
                if unanswered is not None:
                    unanswered.hold(d.decision_id, verdicts[i], now)
                continue
            acks[i] = ("agent", ack.accepted, ack.reason)
            if ack.accepted:
                counts["decisions_accepted"] += 1
                out.append((self._posted[d.decision_id], ack.t_acked_ns or t_back, ack))
            else:
                policy.refused(verdicts[i], now)
                counts["decisions_rejected_agent"] += 1
                if ack.reason.startswith(STALE_REFUSAL):  # may fire again on a fresher field
                    back = policy.give_back(verdicts, i)
                    self.given_back.update(back)
                    counts["firings_given_back"] += len(back)
        return out, acks
