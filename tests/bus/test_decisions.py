"""The decision channel: decisions sent together or one by one, each answered, in order."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import zmq

from livescope.bus import (
    BUS_FILE,
    Answered,
    BusInfo,
    DecisionClient,
    DecisionServer,
    FramePublisher,
    attach,
)
from livescope.schema import (
    DECISION_PROTOCOL,
    ChangeInterval,
    Decision,
    DecisionAck,
    LivescopeError,
    StopRun,
    clock_ns,
)

LONG_S = 30.0
"""A wait meant to be answered: generous, for a slow shared machine (session 51, run
beside another test run on a 2-core machine: an answer took over 5 s)."""


def _accept(decision: Decision, t_rx: int) -> DecisionAck:
    return DecisionAck(
        decision_id=decision.decision_id, run_id=decision.run_id, type=decision.type,
        accepted=isinstance(decision, ChangeInterval), reason="", t_received_ns=t_rx,
        t_acked_ns=clock_ns(),
    )  # fmt: skip


def test_decisions_sent_together_are_answered_in_one_reply_in_order() -> None:
    batches: list[list[Answered]] = []
    handed_on: list[int] = []
    logged = threading.Event()

    def record(answered: list[Answered]) -> None:
        handed_on.append(clock_ns())
        batches.append(answered)
        logged.set()

    server = DecisionServer(_accept, on_answered=record)
    client = DecisionClient(server.endpoint)
    try:
        sent: list[Decision] = [
            ChangeInterval(run_id="r", interval_s=5.0),
            StopRun(run_id="r"),
            ChangeInterval(run_id="r", interval_s=9.0),
        ]
        acks = client.send_many(sent, timeout=LONG_S)
        assert [a.decision_id for a in acks if isinstance(a, DecisionAck)] == [
            d.decision_id for d in sent
        ]
        assert [a.accepted for a in acks if isinstance(a, DecisionAck)] == [True, False, True]
        assert logged.wait(LONG_S)
        # one message: one batch, every part answered, and every answer stamped before the
        # batch was handed on (the log is written after the reply, off the decisions' way)
        assert len(batches) == 1
        assert [d.decision_id for _, d, _ in batches[0] if d is not None] == [
            d.decision_id for d in sent
        ]
        (t_rx,) = {ack.t_received_ns for _, _, ack in batches[0]}
        assert all(t_rx <= ack.t_acked_ns <= handed_on[0] for _, _, ack in batches[0])
        assert server.received == 3
        assert server.rejected == 1
    finally:
        client.close()
        server.close()


def test_a_malformed_part_is_refused_and_the_others_still_answered() -> None:
    batches: list[list[Answered]] = []
    done = threading.Event()
    server = DecisionServer(
        _accept, on_answered=lambda answered: (batches.append(answered), done.set())
    )
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    try:
        good = ChangeInterval(run_id="r", interval_s=5.0)
        sock.send_multipart([b"not json", good.model_dump_json().encode()])
        assert sock.poll(5000)
        acks = [DecisionAck.model_validate_json(p) for p in sock.recv_multipart()]
        assert [a.accepted for a in acks] == [False, True]
        assert "JSON" in acks[0].reason
        assert acks[1].decision_id == good.decision_id
        assert done.wait(LONG_S)
        (bad_raw, bad, _), (_, ok, _) = batches[0]
        assert (bad_raw, bad) == (b"not json", None)
        assert ok is not None
        assert ok.decision_id == good.decision_id
    finally:
        sock.close(0)
        ctx.term()
        server.close()


def test_decisions_posted_one_by_one_are_answered_each_and_logged_as_one_burst() -> None:
    batches: list[list[Answered]] = []
    logged = threading.Event()
    release = threading.Event()

    def slow_first(decision: Decision, t_rx: int) -> DecisionAck:
        release.wait(5)  # the others are all waiting on the socket by the time it is answered
        return _accept(decision, t_rx)

    server = DecisionServer(
        slow_first, on_answered=lambda answered: (batches.append(answered), logged.set())
    )
    client = DecisionClient(server.endpoint)
    try:
        posted: list[Decision] = [ChangeInterval(run_id="r", interval_s=5.0 + i) for i in range(5)]
        for d in posted:
            client.post(d)  # returns at once: nothing is answered before `release`
        time.sleep(0.2)
        release.set()
        assert logged.wait(LONG_S)
        # collected after they arrived: a zero wait still reads them, in the order asked for
        wanted = [d.decision_id for d in reversed(posted)]
        acks = client.collect(wanted, timeout=0)
        assert [a.decision_id for a in acks if isinstance(a, DecisionAck)] == wanted
        # each message is answered on its own (its own receipt time), the log once for the burst
        assert len(batches) == 1
        assert [d.decision_id for _, d, _ in batches[0] if d is not None] == [
            d.decision_id for d in posted
        ]
        assert len({ack.t_received_ns for _, _, ack in batches[0]}) == 5
        (missing,) = client.collect(["never-posted"], timeout=0.2)
        assert isinstance(missing, LivescopeError)
        assert "no acknowledgement" in str(missing)
    finally:
        client.close()
        server.close()


def test_an_answer_that_comes_after_its_wait_ran_out_is_counted_and_dropped() -> None:
    release = threading.Event()

    def slow(decision: Decision, t_rx: int) -> DecisionAck:
        if isinstance(decision, StopRun):
            release.wait(5)
        return _accept(decision, t_rx)

    server = DecisionServer(slow)
    client = DecisionClient(server.endpoint)
    try:
        late = StopRun(run_id="r")
        client.post(late)
        (gave_up,) = client.collect([late.decision_id], timeout=0.1)
        assert isinstance(gave_up, LivescopeError)
        release.set()
        # the next decision's answer comes after the late one: the late one is not kept
        # for a wait that will never come (it was, for the life of the client)
        on_time = ChangeInterval(run_id="r", interval_s=5.0)
        assert client.send(on_time, timeout=LONG_S).decision_id == on_time.decision_id
        assert client.late_answers == 1
        (again,) = client.collect([late.decision_id], timeout=0.1)
        assert isinstance(again, LivescopeError)
        # one that comes when nobody is reading is counted by `drain` (the worker's last
        # look before its summary)
        release.clear()
        later = StopRun(run_id="r")
        client.post(later)
        (gave_up,) = client.collect([later.decision_id], timeout=0.1)
        assert isinstance(gave_up, LivescopeError)
        release.set()
        deadline = time.monotonic() + 5
        while client.late_answers < 2 and time.monotonic() < deadline:
            client.drain()
            time.sleep(0.01)
        assert client.late_answers == 2
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize(
    ("stated", "expected"),
    [
        pytest.param(None, "speaks an unversioned decision protocol", id="before-versions"),
        pytest.param(
            DECISION_PROTOCOL + 1, f"decision protocol version {DECISION_PROTOCOL + 1};", id="newer"
        ),
    ],
)
def test_a_worker_refuses_an_agent_of_another_decision_protocol(
    tmp_path: Path, stated: int | None, expected: str
) -> None:
    server = DecisionServer(_accept)
    try:
        info = {"run_id": "r1", "frames": "tcp://127.0.0.1:1", "control": "tcp://127.0.0.1:2",
                "decisions": server.endpoint, "mode": "inline"}  # fmt: skip
        if stated is not None:
            info["decision_protocol"] = stated
        (tmp_path / BUS_FILE).write_text(json.dumps(info), encoding="utf-8")
        with pytest.raises(LivescopeError, match="run agent and worker from the same") as err:
            attach(tmp_path)
        assert expected in str(err.value)
        assert f"this worker speaks version {DECISION_PROTOCOL}" in str(err.value)
        # a consumer of frames only (a viewer, a counter) needs no decision channel
        pub = FramePublisher("r1")
        try:
            info["frames"], info["control"] = pub.endpoint, pub.control_endpoint
            (tmp_path / BUS_FILE).write_text(json.dumps(info), encoding="utf-8")
            with attach(tmp_path, decisions=False) as frames_only:
                assert frames_only.decisions is None
                with pytest.raises(LivescopeError, match="attached for frames only"):
                    frames_only.decide(StopRun(run_id="r1"))
        finally:
            pub.close()
        # the agent's own file states its version, and a worker of that version attaches
        written = BusInfo("r1", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", server.endpoint,
                          "inline")  # fmt: skip
        written.write(tmp_path)
        assert json.loads((tmp_path / BUS_FILE).read_text())["decision_protocol"] == (
            DECISION_PROTOCOL
        )
        assert BusInfo.read(tmp_path) == written
    finally:
        server.close()


def test_a_refused_decision_s_oversized_id_is_not_echoed() -> None:
    # a malformed decision's ids were copied into its refusal whatever their size: a
    # 1 MB decision_id came back in the answer and into the log (valid ids: <= 64)
    server = DecisionServer(_accept)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    try:
        good = json.loads(ChangeInterval(run_id="r", interval_s=5.0).model_dump_json())
        sock.send_multipart([
            json.dumps({**good, "decision_id": "x" * 1_000_000}).encode(),
            json.dumps({**good, "decision_id": "d1", "interval_s": "soon"}).encode(),
        ])  # fmt: skip
        assert sock.poll(5000)
        big, small = [DecisionAck.model_validate_json(p) for p in sock.recv_multipart()]
        assert [big.accepted, small.accepted] == [False, False]
        assert big.decision_id == ""
        assert "decision_id" in big.reason
        assert len(big.reason) < 2000
        assert (small.decision_id, small.run_id) == ("d1", "r")  # (a valid id still echoed)
    finally:
        sock.close(0)
        ctx.term()
        server.close()
