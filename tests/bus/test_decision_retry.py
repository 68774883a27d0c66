"""A decision sent again (a retry after its wait ran out) is answered, never applied twice."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from livescope.bus import Answered, DecisionClient, DecisionServer
from livescope.bus import _decisions as decisions_module
from livescope.schema import (
    ChangeInterval,
    Decision,
    DecisionAck,
    LivescopeError,
    StopRun,
)

from .test_decisions import _accept

SHORT_S = 0.2
"""A wait meant to run out (the agent is held until the test lets it go)."""
LONG_S = 30.0
"""A wait meant to be answered: generous, for a slow shared machine."""


@dataclass
class Agent:
    """A stand-in for the agent's handler: applies (counts) each decision, held on request."""

    applied: list[str] = field(default_factory=list)
    answered: list[Answered] = field(default_factory=list)
    go: threading.Event = field(default_factory=threading.Event)
    _handed_on: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.go.set()

    def on_answered(self, answered: list[Answered]) -> None:
        with self._handed_on:
            self.answered.extend(answered)
            self._handed_on.notify_all()

    def wait_handed_on(self, decision_id: str) -> None:
        """Wait until ``decision_id`` is handed on: all answered before it have been too."""
        with self._handed_on:
            assert self._handed_on.wait_for(
                lambda: any(a.decision_id == decision_id for _, _, a in self.answered), LONG_S
            )

    def handle(self, decision: Decision, t_rx: int) -> DecisionAck:
        assert self.go.wait(LONG_S), "the test never let the agent go"
        self.applied.append(decision.decision_id)
        return _accept(decision, t_rx)  # (a change of interval accepted, the rest refused)


@pytest.fixture
def channel() -> Iterator[tuple[Agent, DecisionServer, DecisionClient]]:
    agent = Agent()
    server = DecisionServer(agent.handle, on_answered=agent.on_answered)
    client = DecisionClient(server.endpoint)
    try:
        yield agent, server, client
    finally:
        agent.go.set()
        client.close()
        server.close()


def _flush(agent: Agent, client: DecisionClient) -> None:
    """Send a fresh decision and wait until it is answered and handed on.

    Every answer sent before it has been read by the client then, and every
    part answered before it handed on.
    """
    marker = ChangeInterval(run_id="r", interval_s=1.0)
    assert client.send(marker, timeout=LONG_S).decision_id == marker.decision_id
    agent.wait_handed_on(marker.decision_id)


@pytest.mark.parametrize(
    "decision",
    [
        pytest.param(ChangeInterval(run_id="r", interval_s=60.0), id="accepted"),
        pytest.param(StopRun(run_id="r"), id="refused"),
    ],
)
def test_a_decision_sent_again_is_answered_as_before_and_not_applied_again(
    channel: tuple[Agent, DecisionServer, DecisionClient], decision: Decision
) -> None:
    agent, server, client = channel
    first = client.send(decision, timeout=LONG_S)
    again = client.send(decision, timeout=LONG_S)
    assert again == first  # the stored acknowledgement, its times included
    _flush(agent, client)
    assert agent.applied.count(decision.decision_id) == 1
    assert server.repeated == 1
    # handed on (e.g. to the decision log) once, at its first answer
    assert [d.decision_id for _, d, _ in agent.answered if d is not None].count(
        decision.decision_id
    ) == 1
    assert client.late_answers == 0


def test_a_retry_after_the_wait_ran_out_takes_the_first_answer_and_is_applied_once(
    channel: tuple[Agent, DecisionServer, DecisionClient],
) -> None:
    agent, server, client = channel
    late: list[DecisionAck] = []
    client.on_late = late.append
    decision = ChangeInterval(run_id="r", interval_s=60.0)
    agent.go.clear()  # the agent is busy: the first wait runs out
    with pytest.raises(LivescopeError, match="no acknowledgement"):
        client.send(decision, timeout=SHORT_S)
    agent.go.set()
    ack = client.send(decision, timeout=LONG_S)  # the retry
    assert ack.accepted
    assert ack.decision_id == decision.decision_id
    _flush(agent, client)  # the retry's own answer (the stored one) has come by now
    assert agent.applied.count(decision.decision_id) == 1
    assert server.repeated == 1
    # the answer was taken by the retry: not late, and not kept for a wait that never comes
    assert client.late_answers == 0
    assert late == []
    assert client._pending == {}


def test_a_decision_whose_retries_all_ran_out_is_late_once_and_leaves_no_answer_behind(
    channel: tuple[Agent, DecisionServer, DecisionClient],
) -> None:
    agent, server, client = channel
    late: list[DecisionAck] = []
    client.on_late = late.append
    decision = ChangeInterval(run_id="r", interval_s=60.0)
    agent.go.clear()
    for _ in range(2):
        with pytest.raises(LivescopeError, match="no acknowledgement"):
            client.send(decision, timeout=SHORT_S)
    agent.go.set()
    _flush(agent, client)  # both answers (the first and the stored one) are read by now
    assert agent.applied.count(decision.decision_id) == 1
    assert server.repeated == 1
    # one decision, one late answer (a refusal's budget is given back once, not twice)
    assert client.late_answers == 1
    assert [a.decision_id for a in late] == [decision.decision_id]
    assert client._pending == {}


def test_decisions_sent_again_in_a_batch_are_answered_in_order_and_applied_once(
    channel: tuple[Agent, DecisionServer, DecisionClient],
) -> None:
    agent, server, client = channel
    retried: list[Decision] = [
        ChangeInterval(run_id="r", interval_s=60.0),
        StopRun(run_id="r"),
    ]
    agent.go.clear()
    gave_up = client.send_many(retried, timeout=SHORT_S)
    assert all(isinstance(a, LivescopeError) for a in gave_up)
    agent.go.set()
    new = ChangeInterval(run_id="r", interval_s=90.0)
    acks = client.send_many([retried[0], new, retried[1]], timeout=LONG_S)
    assert [a.decision_id for a in acks if isinstance(a, DecisionAck)] == [
        retried[0].decision_id, new.decision_id, retried[1].decision_id,
    ]  # fmt: skip
    assert [a.accepted for a in acks if isinstance(a, DecisionAck)] == [True, True, False]
    _flush(agent, client)
    assert sorted(agent.applied[:3]) == sorted(d.decision_id for d in [*retried, new])
    assert server.repeated == 2
    handed_on = [d.decision_id for _, d, _ in agent.answered if d is not None]
    assert sorted(handed_on[:3]) == sorted(d.decision_id for d in [*retried, new])
    assert client.late_answers == 0
    assert client._pending == {}


def test_a_decision_that_reuses_an_answered_decision_id_is_refused(
    channel: tuple[Agent, DecisionServer, DecisionClient],
) -> None:
    agent, server, client = channel
    first = ChangeInterval(run_id="r", interval_s=60.0)
    assert client.send(first, timeout=LONG_S).accepted
    changed = first.model_copy(update={"interval_s": 5.0})  # (keeps the decision_id)
    ack = client.send(changed, timeout=LONG_S)
    assert not ack.accepted
    assert "used before by another decision" in ack.reason
    _flush(agent, client)
    assert agent.applied.count(first.decision_id) == 1
    assert server.repeated == 0
    assert server.rejected == 1
    # handed on as a part that was not a valid decision (logged, counted refused)
    assert [(d, a.accepted) for _, d, a in agent.answered if a.decision_id == first.decision_id][
        1:
    ] == [(None, False)]


def test_the_server_forgets_the_least_recently_seen_decisions_beyond_its_bound(
    channel: tuple[Agent, DecisionServer, DecisionClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, server, client = channel
    monkeypatch.setattr(decisions_module, "_ANSWERED_MAX", 3)
    d1, d2, d3, d4 = (ChangeInterval(run_id="r", interval_s=10.0 + i) for i in range(4))
    for d in (d1, d2, d3, d1, d4):  # d1 seen again: d2 is now the least recently seen
        client.send(d, timeout=LONG_S)
    client.send(d1, timeout=LONG_S)
    client.send(d2, timeout=LONG_S)
    assert agent.applied == [d.decision_id for d in (d1, d2, d3, d4, d2)]
    assert server.repeated == 2


def test_a_rules_decision_sent_again_with_other_inputs_is_answered_as_first(
    channel: tuple[Agent, DecisionServer, DecisionClient],
) -> None:
    # a worker restarted before it booked a decision decides that field again: the rule's
    # decision has the same id (livescope.policy.firing_id), but its inputs were measured
    # anew; refused as a reused id, the worker logged an applied close-up as rejected
    agent, server, client = channel
    first = ChangeInterval(run_id="r", interval_s=60.0, rule="slow-down", inputs={"p": 0.91})
    assert client.send(first, timeout=LONG_S).accepted
    again = first.model_copy(update={"inputs": {"p": 0.9100001}})
    ack = client.send(again, timeout=LONG_S)
    assert ack.accepted
    assert ack.reason == "sent again with other inputs: answered as first"
    other_rule = first.model_copy(update={"rule": "another"})
    refused = client.send(other_rule, timeout=LONG_S)
    assert not refused.accepted
    assert "used before by another decision" in refused.reason
    _flush(agent, client)
    assert agent.applied.count(first.decision_id) == 1
    assert server.repeated == 1
