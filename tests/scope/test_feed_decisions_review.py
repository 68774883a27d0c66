"""The decision channel and the event feed, reviewed: each test a bug found and fixed."""

from __future__ import annotations

import useq
import zmq

from livescope.bus import BusSecurity, DecisionClient, DecisionServer
from livescope.bus import _decisions as decisions_module
from livescope.schema import (
    AddEvents,
    ChangeInterval,
    Decision,
    DecisionAck,
    clock_ns,
)
from livescope.scope import EventFeed, LivescopeEngine, SimulatedMicroscope

LONG_S = 30.0
"""A wait meant to be answered: generous, for a slow shared machine."""


class _Agent:
    """A stand-in for the agent's handler: accepts and counts every decision."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    def handle(self, decision: Decision, t_rx: int) -> DecisionAck:
        self.applied.append(decision.decision_id)
        return DecisionAck(
            decision_id=decision.decision_id, run_id=decision.run_id, type=decision.type,
            accepted=True, t_received_ns=t_rx, t_acked_ns=clock_ns(),
        )  # fmt: skip


# ------------------------------------------------------------ the decision channel


def _huge_add_events() -> AddEvents:
    """A valid decision whose JSON is over the 4 MiB a message may hold."""
    note = "x" * 1000
    events = [
        useq.MDAEvent(index={"t": i}, pos_name="A", channel={"config": "DAPI"},
                      metadata={"note": note})
        for i in range(5000)
    ]  # fmt: skip
    decision = AddEvents(run_id="r", events=events)
    assert len(decision.model_dump_json()) > decisions_module._MAX_MESSAGE
    return decision


def test_a_decision_too_large_for_the_channel_is_refused_with_a_reason_and_never_sent() -> None:
    # ZeroMQ dropped the worker's connection on the oversized message (MAXMSGSIZE): no
    # answer came, only "no acknowledgement within 5 s" (a retry did the same), and the
    # answers to the decisions sent before it on that connection were lost with it
    agent = _Agent()
    server = DecisionServer(agent.handle)
    client = DecisionClient(server.endpoint)
    try:
        before = ChangeInterval(run_id="r", interval_s=5.0)
        huge = _huge_add_events()
        client.post(before)
        client.post(huge)
        after = ChangeInterval(run_id="r", interval_s=6.0)
        assert client.send(after, timeout=LONG_S).accepted
        got = client.collect([before.decision_id, huge.decision_id], timeout=0)
        first, refused = got
        assert isinstance(first, DecisionAck), first
        assert first.accepted
        assert isinstance(refused, DecisionAck), refused
        assert not refused.accepted
        assert refused.decision_id == huge.decision_id
        assert "bytes" in refused.reason
        assert "over the" in refused.reason
        # sent alone or with others: refused the same, the others answered by the agent
        assert not client.send(huge, timeout=LONG_S).accepted
        other = ChangeInterval(run_id="r", interval_s=7.0)
        many = client.send_many([huge, other], timeout=LONG_S)
        assert [isinstance(a, DecisionAck) and a.accepted for a in many] == [False, True]
        assert huge.decision_id not in agent.applied
    finally:
        client.close()
        server.close()


def test_a_decision_just_under_the_limit_is_refused_where_curve_would_push_it_over() -> None:
    # CURVE frames a part with 33 bytes more, which the server's limit counts: a decision
    # within those of 4 MiB was sent, and the connection dropped, unanswered
    server_public, server_secret = zmq.curve_keypair()
    agent = _Agent()
    server = DecisionServer(
        agent.handle, endpoint="tcp://127.0.0.1:*",
        security=BusSecurity(server_public, server_secret),
    )  # fmt: skip
    client = DecisionClient(server.endpoint, security=BusSecurity(server_public))
    try:
        bare = ChangeInterval(run_id="r", interval_s=5.0, inputs={"pad": ""})
        pad = decisions_module._MAX_MESSAGE - 20 - len(bare.model_dump_json())
        near = bare.model_copy(update={"inputs": {"pad": "x" * pad}})
        assert len(near.model_dump_json()) == decisions_module._MAX_MESSAGE - 20
        client.post(near)
        marker = ChangeInterval(run_id="r", interval_s=6.0)
        assert client.send(marker, timeout=LONG_S).accepted
        (refused,) = client.collect([near.decision_id], timeout=0)
        assert isinstance(refused, DecisionAck), refused
        assert not refused.accepted
        assert near.decision_id not in agent.applied
    finally:
        client.close()
        server.close()


def test_a_malformed_part_whose_id_is_not_unicode_does_not_leave_its_message_unanswered() -> None:
    # the refusal echoed the part's decision_id, a lone surrogate ("\ud800") that JSON
    # allows but UTF-8 cannot encode: the reply could not be written, and the message's
    # every part, a valid decision applied beside it too, went unanswered
    agent = _Agent()
    server = DecisionServer(agent.handle)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    try:
        bad = b'{"type": "stop_run", "run_id": "\\ud800", "decision_id": "\\udfff"}'
        good = ChangeInterval(run_id="r", interval_s=5.0)
        sock.send_multipart([bad, good.model_dump_json().encode()])
        marker = ChangeInterval(run_id="r", interval_s=6.0)
        sock.send(marker.model_dump_json().encode())
        assert sock.poll(int(LONG_S * 1000))
        # the first reply is the first message's (replies come in order)
        acks = [DecisionAck.model_validate_json(p) for p in sock.recv_multipart()]
        assert len(acks) == 2, acks
        assert not acks[0].accepted
        assert "invalid decision" in acks[0].reason
        assert acks[1].accepted
        assert acks[1].decision_id == good.decision_id
    finally:
        sock.close(0)
        ctx.term()
        server.close()


def test_a_decision_whose_handler_fails_is_refused_stamped_and_naming_its_frame() -> None:
    # the refusal made for a handler's error had no answer time (0, before its receipt:
    # a negative latency in the decision log) and lost the frame it answered (seq)
    def broken(decision: Decision, t_rx: int) -> DecisionAck:
        raise RuntimeError("boom")

    server = DecisionServer(broken)
    client = DecisionClient(server.endpoint)
    try:
        ack = client.send(ChangeInterval(run_id="r", interval_s=5.0, seq=7), timeout=LONG_S)
        assert not ack.accepted
        assert ack.reason == "internal error: boom"
        assert ack.seq == 7
        assert 0 < ack.t_received_ns <= ack.t_acked_ns
        assert server.rejected == 1
    finally:
        client.close()
        server.close()


# ------------------------------------------------------------ the event feed


def _grid_stack() -> useq.MDASequence:
    """A position imaged as two grid tiles, each a z-stack around the position's z (10 µm)."""
    grid = useq.GridRowsColumns(rows=1, columns=2, fov_width=300, fov_height=300)
    return useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=10, name="A",
                                       sequence=useq.MDASequence(grid_plan=grid))],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        z_plan=useq.ZRangeAround(range=4, step=2),
        time_plan=useq.TIntervalLoops(interval=60, loops=2),
    )  # fmt: skip


def test_a_grid_tiles_z_is_its_positions_not_its_first_planes(sim: SimulatedMicroscope) -> None:
    # a tile took the first plane of its stack (8 µm) for its z: a move to z = 30 µm put
    # the stack's bottom there (planes 30-34, a plain position's 28-32), and an added event
    # without z was imaged at the bottom plane
    feed = EventFeed(_grid_stack(), LivescopeEngine(sim.core, sim.profile, sim=sim), 1e6)
    x, y, z = feed.position_plan("A_g1")
    assert z == 10.0
    assert x is not None
    assert y is not None
    feed.move("A_g1", x + 5.0, y, 30.0)
    planes = sorted({e.z_pos or 0.0 for e in feed if e.index.get("g") == 1})
    assert planes == [28.0, 30.0, 32.0]


def test_a_decision_that_cannot_be_written_as_json_is_refused_not_raised() -> None:
    # a Python policy's decision naming a position with a lone surrogate: the send raised
    # pydantic's serialisation error on the worker's decision thread
    agent = _Agent()
    server = DecisionServer(agent.handle)
    client = DecisionClient(server.endpoint)
    try:
        bad = AddEvents(run_id="r", events=[useq.MDAEvent(
            index={"t": 1}, pos_name="A\ud800", channel={"config": "DAPI"})])  # fmt: skip
        ack = client.send(bad, timeout=LONG_S)
        assert not ack.accepted
        assert ack.reason.startswith("not sent: the decision cannot be written as JSON")
        assert client.send(ChangeInterval(run_id="r", interval_s=5.0), timeout=LONG_S).accepted
        assert bad.decision_id not in agent.applied
    finally:
        client.close()
        server.close()
