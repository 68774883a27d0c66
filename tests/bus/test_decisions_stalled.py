"""The decision channel when one side stops: a worker never hangs, an answer is never lost unsaid.

An agent that reads no decisions lets a worker queue 1000 of them (ZeroMQ's
queue); the next is refused at once by `post`, or within its ``timeout`` by
`send`, not left waiting for good. A server closed while it handles a decision
names that decision as unanswered, and its thread ends quietly.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from livescope.bus import DecisionClient, DecisionServer, _decisions
from livescope.schema import (
    ChangeInterval,
    Decision,
    DecisionAck,
    LivescopeError,
    StopRun,
    clock_ns,
)

POSTS = 1200
"""Decisions posted to an agent that reads none: more than ZeroMQ queues (1000)."""
NOT_READ = re.compile(
    r"^not sent: no room to queue it for the agent, \d+ decisions sent are unanswered"
)

_stuck: list[DecisionClient] = []
"""Clients whose sender never came back (the bug): not closed, which would hang too."""


def _accept(decision: Decision, t_rx: int) -> DecisionAck:
    return DecisionAck(
        decision_id=decision.decision_id, run_id=decision.run_id, type=decision.type,
        accepted=True, reason="", t_received_ns=t_rx, t_acked_ns=clock_ns(),
    )  # fmt: skip


@pytest.fixture
def unread_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[DecisionClient]:
    """A client of an agent that has gone (it reads no decisions); posts wait 0.3 s for room."""
    monkeypatch.setattr(_decisions, "_POST_ROOM_S", 0.3)
    server = DecisionServer(_accept)
    server.close()
    client = DecisionClient(server.endpoint)
    yield client
    if client not in _stuck:
        client.close()


def _in_thread(client: DecisionClient, work: Callable[[], object], within_s: float) -> list[object]:
    """Run ``work`` on a thread; fail (leaving ``client`` open) if it has not returned in time."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(work()), daemon=True)
    thread.start()
    thread.join(within_s)
    if thread.is_alive():
        _stuck.append(client)
        pytest.fail(f"the decision client still waits after {within_s} s: it hangs")
    return out


def _post_all(client: DecisionClient) -> list[Decision]:
    decisions: list[Decision] = [StopRun(run_id="r", seq=i, rule="x") for i in range(POSTS)]
    for d in decisions:
        client.post(d)
    return decisions


def test_posting_to_an_agent_that_reads_nothing_refuses_at_once_when_the_queue_is_full(
    unread_client: DecisionClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="livescope")
    (decisions,) = _in_thread(unread_client, lambda: _post_all(unread_client), within_s=10.0)
    assert isinstance(decisions, list)
    replies = unread_client.collect([d.decision_id for d in decisions], timeout=0.2)
    # the ones queued wait (unanswered); each after them is refused here, none lost unsaid
    queued = sum(isinstance(r, LivescopeError) for r in replies)
    assert 0 < queued < POSTS
    assert all(isinstance(r, LivescopeError) for r in replies[:queued])
    refused = [r for r in replies[queued:] if isinstance(r, DecisionAck) and not r.accepted]
    assert [r.decision_id for r in refused] == [d.decision_id for d in decisions[queued:]]
    assert all(NOT_READ.match(r.reason) for r in refused)
    assert f"agent, {queued} decisions sent are unanswered" in refused[0].reason
    said = {r.getMessage().split()[1] for r in caplog.records if "no room to queue" in r.message}
    assert said == {d.decision_id for d in decisions[queued:]}


def test_send_to_an_agent_that_reads_nothing_ends_within_its_timeout(
    unread_client: DecisionClient,
) -> None:
    _in_thread(unread_client, lambda: _post_all(unread_client), within_s=10.0)
    late = ChangeInterval(run_id="r", interval_s=5.0)
    t0 = time.monotonic()
    (ack,) = _in_thread(unread_client, lambda: unread_client.send(late, timeout=0.3), 5.0)
    took = time.monotonic() - t0
    assert 0.25 < took < 2.0  # waited for room for its timeout, no longer
    assert isinstance(ack, DecisionAck)
    assert (ack.decision_id, ack.accepted) == (late.decision_id, False)
    assert NOT_READ.match(ack.reason)

    many: list[Decision] = [StopRun(run_id="r", seq=POSTS + i) for i in range(2)]
    (replies,) = _in_thread(unread_client, lambda: unread_client.send_many(many, 0.2), 5.0)
    assert isinstance(replies, list)
    assert [(r.decision_id, r.accepted) for r in replies] == [(d.decision_id, False) for d in many]
    assert all(NOT_READ.match(r.reason) for r in replies)


def test_a_send_waiting_for_room_goes_once_the_agent_reads_again(
    unread_client: DecisionClient,
) -> None:
    _in_thread(unread_client, lambda: _post_all(unread_client), within_s=10.0)
    endpoint = unread_client.endpoint
    back: list[DecisionServer] = []
    # the agent comes back on the same endpoint while the send waits for room
    restart = threading.Timer(0.3, lambda: back.append(DecisionServer(_accept, endpoint=endpoint)))
    restart.start()
    try:
        decision = ChangeInterval(run_id="r", interval_s=5.0)
        (ack,) = _in_thread(unread_client, lambda: unread_client.send(decision, 20.0), 25.0)
        assert isinstance(ack, DecisionAck)
        assert (ack.decision_id, ack.accepted) == (decision.decision_id, True)
    finally:
        restart.join()
        for server in back:
            server.close()


def test_closing_the_server_under_a_slow_handler_names_the_decision_unanswered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_decisions, "_CLOSE_WAIT_S", 0.2)
    crashed: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", crashed.append)
    caplog.set_level(logging.DEBUG, logger="livescope")
    handling = threading.Event()
    logged: list[str] = []

    def slow(decision: Decision, t_rx: int) -> DecisionAck:
        handling.set()
        time.sleep(0.8)  # still at it when close stops waiting
        return _accept(decision, t_rx)

    server = DecisionServer(
        slow, on_answered=lambda a: logged.extend(d.decision_id for _, d, _ in a if d)
    )
    client = DecisionClient(server.endpoint)
    try:
        decision = StopRun(run_id="r", rule="x")
        client.post(decision)
        assert handling.wait(10.0)
        t0 = time.monotonic()
        server.close()
        assert time.monotonic() - t0 < 5.0  # (returns once the handler has)
        time.sleep(0.2)  # (a crash of the server thread would be reported by now)
    finally:
        client.close()
        server.close()
    assert not crashed
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not problems, [r.getMessage() for r in problems]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(decision.decision_id in m and "unanswered" in m and "closed" in m for m in warned)
    assert logged == [decision.decision_id]  # handled (applied): still in the decision log


def test_a_burst_of_posts_to_an_agent_reading_them_is_all_sent() -> None:
    """Posts beyond what ZeroMQ queues, to an agent reading each in 0.5 ms: none refused.

    (a post that found the queue full was refused at once, told the agent read none)
    """
    handled = 0

    def slow(decision: Decision, t_rx: int) -> DecisionAck:
        nonlocal handled
        handled += 1
        time.sleep(0.0005)
        return _accept(decision, t_rx)

    server = DecisionServer(slow)
    client = DecisionClient(server.endpoint)
    try:
        decisions = [StopRun(run_id="r", seq=i, rule="x") for i in range(4000)]
        for d in decisions:
            client.post(d)
        replies = client.collect([d.decision_id for d in decisions], timeout=30.0)
        assert [isinstance(r, DecisionAck) and r.accepted for r in replies] == [True] * 4000
        assert handled == 4000
    finally:
        client.close()
        server.close()
