"""A field's decisions posted to the agent as they pass, answered, refused or never sent."""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import numpy as np

from livescope.bus import BusInfo, DecisionServer, FramePublisher, attach
from livescope.pipeline._demo import analysis_gaps, answered_late, never_answered
from livescope.pipeline._sending import FieldDecisions, Unanswered
from livescope.policy import STALE_REFUSAL, Cells, Observation, PolicyEngine, Rule
from livescope.schema import AddEvents, Decision, DecisionAck, clock_ns, load_profile

PROFILE = load_profile("sim")
CLOSEUP = {"acquire": {"channels": ["DAPI"], "loops": 2, "interval_s": 30}}


def _obs(n: int) -> Observation:
    return Observation(
        run_id="r1", seq=0, position="p0", t=0, sample_time_s=0.0, pixel_size_um=0.65,
        shape=(512, 512), stage_um=(0.0, 0.0, 0.0),
        cells=Cells(
            labels=np.arange(1, n + 1), tracks=np.arange(1, n + 1), parents=np.zeros(n, int),
            age=np.zeros(n, int), y=100.0 + 40 * np.arange(n), x=np.full(n, 256.0),
            area=np.full(n, 200.0), intensity=np.full(n, 500.0), stain=np.full(n, np.nan),
            p_mitosis=np.full(n, 0.9), state=("prophase",) * n,
        ),
        divisions=(), lost=(), engines={},
    )  # fmt: skip


def _every_other(decision: Decision, t_rx: int) -> DecisionAck:
    assert isinstance(decision, AddEvents)
    refused = decision.events[0].pos_name == "p0~closeup-1"
    return DecisionAck(
        decision_id=decision.decision_id, run_id=decision.run_id, type=decision.type,
        accepted=not refused, reason="taken" if refused else "", t_received_ns=t_rx,
        t_acked_ns=clock_ns(),
    )  # fmt: skip


def test_posted_decisions_are_answered_and_a_refused_one_gives_its_budget_back(
    tmp_path: Path,
) -> None:
    server = DecisionServer(_every_other)
    pub = FramePublisher("r1")
    try:
        BusInfo("r1", pub.endpoint, pub.control_endpoint, server.endpoint, "inline").write(tmp_path)
        with attach(tmp_path) as link:
            engine = PolicyEngine([Rule("closeup", {"mitosis": {"frames": 1}}, CLOSEUP)], PROFILE)
            outgoing = FieldDecisions(link, tmp_path)
            verdicts = engine.evaluate(_obs(3), on_pass=outgoing.post)
            assert outgoing.posted == 3
            assert engine.guardrails.extra_frames == 3 * 2
            counts: collections.Counter[str] = collections.Counter()
            sent, acks = outgoing.finish(
                verdicts, _obs(3), policy=engine, counts=counts, timeout_s=5
            )
    finally:
        pub.close()
        server.close()
    assert [acks[i][1] for i in range(3)] == [True, False, True]
    assert acks[1] == ("agent", False, "taken")
    assert counts == {"decisions_accepted": 2, "decisions_rejected_agent": 1}
    assert engine.guardrails.extra_frames == 2 * 2  # the refused close-up's frames came back
    # each accepted one: posted before its answer was stamped
    assert len(sent) == 2
    assert all(t_sent <= t_acked for t_sent, t_acked, _ in sent)


def test_nothing_is_sent_once_the_run_has_ended_and_every_budget_comes_back(
    tmp_path: Path,
) -> None:
    engine = PolicyEngine([Rule("closeup", {"mitosis": {"frames": 1}}, CLOSEUP)], PROFILE)
    outgoing = FieldDecisions(None, tmp_path)  # a what-if replay: no agent
    verdicts = engine.evaluate(_obs(2), on_pass=outgoing.post)
    counts: collections.Counter[str] = collections.Counter()
    sent, acks = outgoing.finish(verdicts, _obs(2), policy=engine, counts=counts, timeout_s=5)
    assert (sent, outgoing.posted) == ([], 0)
    assert set(acks.values()) == {("not_sent", False, "the run has ended (what-if: not sent)")}
    assert counts == {"decisions_not_sent": 2}
    assert engine.guardrails.extra_frames == 0


def test_a_refusal_that_comes_after_the_wait_gives_the_budget_back(tmp_path: Path) -> None:
    release = threading.Event()

    def slow(decision: Decision, t_rx: int) -> DecisionAck:
        release.wait(5)
        return _every_other(decision, t_rx)

    server = DecisionServer(slow)
    pub = FramePublisher("r1")
    try:
        BusInfo("r1", pub.endpoint, pub.control_endpoint, server.endpoint, "inline").write(tmp_path)
        with attach(tmp_path) as link:
            engine = PolicyEngine([Rule("closeup", {"mitosis": {"frames": 1}}, CLOSEUP)], PROFILE)
            counts: collections.Counter[str] = collections.Counter()
            held = Unanswered(engine, counts)
            link.decisions.on_late = held.answered
            outgoing = FieldDecisions(link, tmp_path)
            verdicts = engine.evaluate(_obs(3), on_pass=outgoing.post)
            sent, acks = outgoing.finish(
                verdicts, _obs(3), policy=engine, counts=counts, timeout_s=0.05, unanswered=held
            )
            assert sent == []
            assert {a[:2] for a in acks.values()} == {("unanswered", False)}
            assert counts == {"decisions_unanswered": 3}
            assert engine.guardrails.extra_frames == 3 * 2  # kept: the agent may take them
            release.set()
            deadline = time.monotonic() + 5
            while link.decisions.late_answers < 3 and time.monotonic() < deadline:
                link.decisions.drain()
                time.sleep(0.01)
    finally:
        pub.close()
        server.close()
    assert counts["decisions_refused_late"] == 1
    assert counts["decisions_accepted_late"] == 2  # (what the agent's own counts hold too)
    assert counts["decisions_unanswered"] == 3  # (in time: none)
    # the run's summary: answered late, so none left unanswered (nor counted twice)
    assert answered_late(dict(counts)) == 3
    assert never_answered(dict(counts)) == 0
    assert analysis_gaps(dict(counts))["decisions_unanswered"] == 0
    assert engine.guardrails.extra_frames == 2 * 2  # the late refusal's frames came back


def test_a_late_answer_read_before_its_decision_is_held_still_counts() -> None:
    # one `collect` for a field's decisions: the first one's wait ran out, and its answer
    # came while the others were still awaited, before the worker held it as unanswered
    engine = PolicyEngine([Rule("closeup", {"mitosis": {"frames": 1}}, CLOSEUP)], PROFILE)
    verdicts = engine.evaluate(_obs(2))
    assert engine.guardrails.extra_frames == 2 * 2
    counts: collections.Counter[str] = collections.Counter()
    held = Unanswered(engine, counts)
    ids = [v.firing.decision.decision_id for v in verdicts if v.firing.decision is not None]
    for did, ok in zip(ids, (True, False), strict=True):
        held.answered(DecisionAck(
            decision_id=did, run_id="r1", type="add_events", accepted=ok,
            reason="" if ok else "taken", t_received_ns=0, t_acked_ns=0,
        ))  # fmt: skip
    assert counts == {}  # not held yet: nothing to count
    for did, v in zip(ids, verdicts, strict=True):
        held.hold(did, v, 0.0)
    assert counts == {"decisions_accepted_late": 1, "decisions_refused_late": 1}
    assert engine.guardrails.extra_frames == 1 * 2  # the refused one's frames came back


def test_a_decision_refused_as_stale_gives_its_firing_back_to_its_rule(tmp_path: Path) -> None:
    # (the agent's max_decision_age_s): the cell may fire again on a fresher field, while
    # a refusal for any other reason counts as a firing (its cooldown, max_fires)
    def stale_first(decision: Decision, t_rx: int) -> DecisionAck:
        assert isinstance(decision, AddEvents)
        name = decision.events[0].pos_name
        reason = {"p0~closeup-0": f"{STALE_REFUSAL}it answers frame 0, taken 400.0 s ago; "
                                  "guardrails.max_decision_age_s = 300 s",
                  "p0~closeup-1": "taken"}.get(name, "")  # fmt: skip
        return DecisionAck(
            decision_id=decision.decision_id, run_id=decision.run_id, type=decision.type,
            accepted=not reason, reason=reason, t_received_ns=t_rx, t_acked_ns=clock_ns(),
        )  # fmt: skip

    server = DecisionServer(stale_first)
    pub = FramePublisher("r1")
    rule = Rule(
        "closeup", {"mitosis": {"frames": 1}}, CLOSEUP, cooldown_s=600, cooldown_radius_um=20
    )
    engine = PolicyEngine([rule], PROFILE)
    counts: collections.Counter[str] = collections.Counter()
    try:
        BusInfo("r1", pub.endpoint, pub.control_endpoint, server.endpoint, "inline").write(tmp_path)
        with attach(tmp_path) as link:
            outgoing = FieldDecisions(link, tmp_path)
            verdicts = engine.evaluate(_obs(3), on_pass=outgoing.post)
            outgoing.finish(verdicts, _obs(3), policy=engine, counts=counts, timeout_s=5)
    finally:
        pub.close()
        server.close()
    assert counts == {
        "decisions_accepted": 1, "decisions_rejected_agent": 2, "firings_given_back": 1
    }  # fmt: skip
    assert (rule.fires, rule.given_back) == (3, 1)
    assert len(rule.recent) == 2  # the stale one's cooldown is gone
    # the next field: the stale one's cell fires again, the refused one's does not (and a
    # new cell does)
    verdicts = engine.evaluate(_obs(4))
    assert [v.firing.track for v in verdicts] == [1, 4]
    decision = verdicts[1].firing.decision
    assert decision is not None
    held = Unanswered(engine, counts)
    held.hold(decision.decision_id, verdicts[1], 0.0)
    held.answered(DecisionAck(
        decision_id=decision.decision_id, run_id="r1", type="add_events", accepted=False,
        reason=f"{STALE_REFUSAL}it answers frame 0", t_received_ns=0, t_acked_ns=0,
    ))  # fmt: skip
    # (refused after the wait: counted, its budget back, but not given back to its rule,
    # whose field has been logged since)
    assert counts["decisions_refused_late"] == 1
    assert counts["firings_given_back"] == 1
    assert rule.given_back == 1
