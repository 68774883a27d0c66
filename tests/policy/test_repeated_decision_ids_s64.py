"""One decision_id given twice for a field: booked and sent once; repeats refused by the client.

A Python policy may yield one firing twice, or two firings whose decisions carry
the same ``decision_id`` (`firing_id` with the same ``k``). Both passed the
guardrails: the light, frames and rate were booked twice for what the agent
applies once (a refusal gave back only one of the two), both were counted
accepted, and the decision client, asked for the one answer twice, could wait
its whole timeout for a second answer filed over the first.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from livescope.bus import BusInfo, DecisionClient, DecisionServer, FramePublisher, attach
from livescope.pipeline._sending import FieldDecisions
from livescope.policy import Cells, Firing, Observation, PolicyEngine, Rule, firing_id
from livescope.schema import ChangeInterval, Decision, DecisionAck, clock_ns, load_profile

PROFILE = load_profile("sim")
CLOSEUP = {"acquire": {"channels": ["DAPI"], "loops": 2, "interval_s": 30}}
LONG_S = 30.0  # a wait meant to be answered (a slow shared machine)


def _obs() -> Observation:
    return Observation(
        run_id="r1", seq=0, position="p0", t=0, sample_time_s=0.0, pixel_size_um=0.65,
        shape=(512, 512), stage_um=(0.0, 0.0, 0.0),
        cells=Cells(
            labels=np.array([1]), tracks=np.array([1]), parents=np.zeros(1, int),
            age=np.zeros(1, int), y=np.array([100.0]), x=np.array([256.0]),
            area=np.array([200.0]), intensity=np.array([500.0]), stain=np.array([np.nan]),
            p_mitosis=np.array([0.9]), state=("prophase",),
        ),
        divisions=(), lost=(), engines={},
    )  # fmt: skip


class _Twice:
    """A Python policy yielding each of a declared rule's firings twice (its bug)."""

    def __init__(self, name: str = "twice") -> None:
        self.name = name
        self._rule = Rule(name, {"mitosis": {"frames": 1}}, CLOSEUP)

    def decide(self, obs: Observation) -> Iterator[Firing]:
        for f in self._rule.decide(obs):
            yield f
            yield f


class _FixedId:
    """A Python policy whose one firing's decision carries the id ``k = 0`` of rule ``of``."""

    def __init__(self, name: str, of: str, interval_s: float) -> None:
        self.name, self._of, self._interval_s = name, of, interval_s

    def decide(self, obs: Observation) -> Iterator[Firing]:
        did = firing_id(obs.run_id, self._of, obs.position, obs.t, 0)
        d = ChangeInterval(run_id=obs.run_id, interval_s=self._interval_s, decision_id=did)
        yield Firing(self.name, "fixed", obs.position, d)


def test_a_firing_yielded_twice_is_booked_and_handed_on_once() -> None:
    engine = PolicyEngine([_Twice()], PROFILE)
    passed: list[Decision] = []
    verdicts = engine.evaluate(_obs(), on_pass=passed.append)
    assert len(verdicts) == 2
    first, second = verdicts
    assert first.ok
    assert first.firing.decision is not None
    did = first.firing.decision.decision_id
    assert [d.decision_id for d in passed] == [did]
    assert not second.ok
    assert second.stage == "guardrail"
    assert did in second.reason
    assert "'twice'" in second.reason
    # one close-up's frames and one place in the rate, not two
    assert engine.guardrails.extra_frames == 2
    assert len(engine.guardrails.sent_at) == 1
    assert engine.disabled == {}  # (refused, not disabled: its other firings go on)


def test_another_policys_decision_id_is_refused_naming_that_policy() -> None:
    # both decisions named "first"'s k = 0 firing: the second, though another change,
    # would be answered by the agent as the first (never applied)
    engine = PolicyEngine(
        [_FixedId("first", "first", 600.0), _FixedId("second", "first", 900.0)], PROFILE
    )
    passed: list[Decision] = []
    verdicts = engine.evaluate(_obs(), on_pass=passed.append)
    assert [v.ok for v in verdicts] == [True, False]
    did = firing_id("r1", "first", "p0", 0, 0)
    assert did in verdicts[1].reason
    assert "'first'" in verdicts[1].reason
    assert len(passed) == 1
    assert len(engine.guardrails.sent_at) == 1


def test_an_id_whose_first_firing_the_guardrails_refused_may_pass_once() -> None:
    # the first of two changes is refused (shorter than guardrails.min_interval_s): it was
    # never booked nor sent, so the second, with the same id, is judged on its own
    short = PROFILE.guardrails.min_interval_s / 2
    engine = PolicyEngine(
        [_FixedId("first", "first", short), _FixedId("second", "first", 900.0)], PROFILE
    )
    verdicts = engine.evaluate(_obs(), on_pass=lambda d: None)
    assert [v.ok for v in verdicts] == [False, True]
    assert "min_interval_s" in verdicts[0].reason


def _refuse(decision: Decision, t_rx: int) -> DecisionAck:
    return DecisionAck(
        decision_id=decision.decision_id, run_id=decision.run_id, type=decision.type,
        accepted=False, reason="taken", t_received_ns=t_rx, t_acked_ns=clock_ns(),
    )  # fmt: skip


def test_the_worker_sends_a_repeated_firing_once_and_a_refusal_gives_all_back(
    tmp_path: Path,
) -> None:
    server = DecisionServer(_refuse)
    pub = FramePublisher("r1")
    try:
        BusInfo("r1", pub.endpoint, pub.control_endpoint, server.endpoint, "inline").write(tmp_path)
        with attach(tmp_path) as link:
            engine = PolicyEngine([_Twice()], PROFILE)
            outgoing = FieldDecisions(link, tmp_path)
            verdicts = engine.evaluate(_obs(), on_pass=outgoing.post)
            counts: collections.Counter[str] = collections.Counter()
            _, acks = outgoing.finish(
                verdicts, _obs(), policy=engine, counts=counts, timeout_s=LONG_S
            )
    finally:
        pub.close()
        server.close()
    assert server.received == 1  # (was 2: the agent answered the second as a repeat)
    assert counts == {"decisions_rejected_agent": 1}
    assert acks == {0: ("agent", False, "taken")}
    assert engine.guardrails.extra_frames == 0  # (was 2: the second booking never came back)
    assert engine.guardrails.sent_at == []


def test_send_many_refuses_a_repeated_id_and_sends_nothing() -> None:
    server = DecisionServer(_refuse)
    client = DecisionClient(server.endpoint)
    try:
        d = ChangeInterval(run_id="r", interval_s=600.0)
        with pytest.raises(ValueError, match=d.decision_id):
            client.send_many([d, ChangeInterval(run_id="r", interval_s=900.0), d], timeout=1.0)
        other = ChangeInterval(run_id="r", interval_s=700.0)
        assert client.send(other, timeout=LONG_S).decision_id == other.decision_id
        # (answered in order: a message of the refused call would have come before it)
        assert server.received == 1
    finally:
        client.close()
        server.close()


def test_collect_refuses_a_repeated_id_and_the_answer_stays_for_one_wait() -> None:
    server = DecisionServer(_refuse)
    client = DecisionClient(server.endpoint)
    try:
        d = ChangeInterval(run_id="r", interval_s=600.0)
        client.post(d)
        with pytest.raises(ValueError, match=d.decision_id):
            client.collect([d.decision_id, d.decision_id], timeout=1.0)
        (ack,) = client.collect([d.decision_id], timeout=LONG_S)
        assert isinstance(ack, DecisionAck)
        assert ack.decision_id == d.decision_id
        assert client._given_up == {}
    finally:
        client.close()
        server.close()
