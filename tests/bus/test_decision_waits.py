"""The decision channel's waits: any timeout a caller may give, and bursts that go on."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

import pytest

from livescope.bus import Answered, DecisionClient, DecisionServer
from livescope.bus import _decisions as decisions_module
from livescope.schema import ChangeInterval, Decision, DecisionAck, clock_ns

LONG_S = 30.0
"""A wait meant to be answered: generous, for a slow shared machine."""


def accept(decision: Decision, t_rx: int) -> DecisionAck:
    return DecisionAck(
        decision_id=decision.decision_id, run_id=decision.run_id, type=decision.type,
        accepted=True, reason="", t_received_ns=t_rx, t_acked_ns=clock_ns(),
    )  # fmt: skip


@pytest.fixture
def channel() -> Iterator[tuple[DecisionServer, DecisionClient]]:
    server = DecisionServer(accept)
    client = DecisionClient(server.endpoint)
    try:
        yield server, client
    finally:
        client.close()
        server.close()


def test_an_infinite_timeout_waits_for_the_answer(
    channel: tuple[DecisionServer, DecisionClient],
) -> None:
    # (an OverflowError: infinity has no milliseconds)
    _, client = channel
    d = ChangeInterval(run_id="r", interval_s=5.0)
    assert client.send(d, timeout=math.inf).decision_id == d.decision_id
    e = ChangeInterval(run_id="r", interval_s=6.0)
    (ack,) = client.send_many([e], timeout=math.inf)
    assert isinstance(ack, DecisionAck)
    assert ack.decision_id == e.decision_id


@pytest.mark.parametrize("timeout", [math.nan, -1.0])
def test_a_timeout_that_is_no_wait_is_refused_before_sending(
    channel: tuple[DecisionServer, DecisionClient], timeout: float
) -> None:
    # NaN raised a ValueError from int() after the decision had been sent
    server, client = channel
    with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
        client.send(ChangeInterval(run_id="r", interval_s=5.0), timeout=timeout)
    with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
        client.send_many([ChangeInterval(run_id="r", interval_s=5.0)], timeout=timeout)
    client.send(ChangeInterval(run_id="r", interval_s=7.0), timeout=LONG_S)
    assert server.received == 1  # only the last


def test_a_decision_resent_without_pause_does_not_hold_the_answered_ones_back() -> None:
    # repeats are not handed on again, so they never ended the burst: the decisions
    # answered before them waited (unlogged, unqueued) for as long as they came
    handed_on = threading.Event()
    received_then: list[int] = []
    server: DecisionServer

    def on_answered(answered: list[Answered]) -> None:
        if not handed_on.is_set():
            received_then.append(server.received)
            handed_on.set()

    server = DecisionServer(accept, on_answered=on_answered)
    client = DecisionClient(server.endpoint)
    try:
        d = ChangeInterval(run_id="r", interval_s=5.0)
        repeats = 20 * decisions_module._BURST_MAX
        for _ in range(repeats + 1):  # (sent far faster than the burst's 1 ms gap)
            client.post(d)
        assert handed_on.wait(LONG_S)
        assert received_then[0] <= decisions_module._BURST_MAX
        assert client.collect([d.decision_id], LONG_S)[0].decision_id == d.decision_id
    finally:
        client.close()
        server.close()
