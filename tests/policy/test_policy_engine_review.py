"""The policy engine, after a review: a Python policy whose ``decide()`` yields without
end is disabled, a Python policy's decision answers the field it was made on (``seq``),
and an ``enter_region`` wholly outside the camera's frame is refused at load."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

import livescope.policy._engine as engine_mod
from livescope.policy import Firing, Observation, PolicyEngine, rules_for_profile
from livescope.schema import ChangeInterval, LivescopeError, StopPosition, load_profile

from .test_policy import observation

PROFILE = load_profile("sim")  # a 512 x 512 px camera
ENGINES = {"nuclei-unet": "ab" * 32}


def field(t: int, tracks: list[int], *, position: str = "p0") -> Observation:
    return observation(t, tracks, position=position, engines=dict(ENGINES))


# ---------------------------------------------------------------- a decide() without end


class _Looping:
    """Yields the same firing again and again (a loop that forgot its ``i += 1``).

    Stops after ``most`` firings, so that an engine that does not stop it ends the test
    (failing it) rather than hanging it. ``spin_s``: how long the policy's own code works
    before each firing (a slow loop).
    """

    def __init__(self, most: int, *, decision: bool = True, spin_s: float = 0.0) -> None:
        self.name = "looping"
        self.most = most
        self.decision = decision
        self.spin_s = spin_s
        self.made = 0

    def decide(self, o: Observation) -> Iterator[Firing]:
        i = 0
        while i < len(o.cells) and self.made < self.most:  # bug: no i += 1
            began = time.monotonic()
            while time.monotonic() - began < self.spin_s:  # (its own slow work)
                pass
            self.made += 1
            d = ChangeInterval(run_id=o.run_id, seq=o.seq, interval_s=30) if self.decision else None
            yield Firing(self.name, "custom", o.position, d)


def test_a_policy_yielding_without_end_is_disabled_at_the_firings_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # before: evaluate went on while the policy yielded (forever: the decision thread hung,
    # a warning logged per firing, the watchdog never firing, the policy never disabled)
    policy = _Looping(100_000)
    eng = PolicyEngine([policy], PROFILE)
    o = field(3, [1, 2])
    cap = engine_mod.firings_cap(o)
    assert cap < policy.most  # (else the test shows nothing)
    with caplog.at_level(logging.ERROR, logger="livescope"):
        verdicts = eng.evaluate(o)
    assert "looping" in eng.disabled
    why = eng.disabled["looping"]
    assert f"more than {cap} firings" in why
    assert "p0 t=3" in why
    assert policy.made == cap + 1  # (stopped at the first past the cap, which goes nowhere)
    assert len(verdicts) == cap
    assert any("'looping'" in r.getMessage() and "disabled" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    # the run goes on: the next field's evaluation passes over it
    assert eng.evaluate(field(4, [1, 2])) == []
    assert policy.made == cap + 1


def test_the_firings_cap_is_well_above_a_firing_per_cell() -> None:
    few, many = field(0, [1]), field(0, list(range(1, 2001)))
    assert engine_mod.firings_cap(few) >= 1000
    assert engine_mod.firings_cap(many) >= 10 * 2000


def test_a_record_only_policy_yielding_without_end_is_disabled_too() -> None:
    # (no guardrail warnings to slow it: the verdict list alone grew without bound)
    policy = _Looping(100_000, decision=False)
    eng = PolicyEngine([policy], PROFILE)
    verdicts = eng.evaluate(field(0, [1]))
    assert "looping" in eng.disabled
    assert len(verdicts) == engine_mod.firings_cap(field(0, [1]))


def test_a_policy_whose_decide_runs_past_the_hang_limit_is_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # each next() returns soon (the worker's watchdog, timing one call, saw none hang);
    # together they run past the limit. Before: all 50 firings made, the policy enabled.
    # (Only the steps after its first firing count: the first is a single call.)
    monkeypatch.setattr(engine_mod, "DECIDE_HANG_S", 0.01, raising=False)
    policy = _Looping(50, decision=False, spin_s=0.02)
    eng = PolicyEngine([policy], PROFILE)
    verdicts = eng.evaluate(field(5, [1]))
    assert "looping" in eng.disabled
    why = eng.disabled["looping"]
    assert "decide() ran" in why
    assert "p0 t=5" in why
    assert "0.01 s" in why
    assert "after its first firing" in why
    assert policy.made == 2  # (its second firing took it past the limit: it goes nowhere)
    assert [v.firing.rule for v in verdicts] == ["looping"]


def test_the_hang_limit_counts_the_policy_s_own_code_not_the_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a slow `on_pass` (the agent's answer awaited) is not the policy's time
    monkeypatch.setattr(engine_mod, "DECIDE_HANG_S", 0.01, raising=False)

    class _Two:
        name = "two"

        def decide(self, o: Observation) -> Iterator[Firing]:
            for k in range(2):
                d = StopPosition(run_id=o.run_id, seq=o.seq, position=f"p{k}")
                yield Firing(self.name, "custom", o.position, d)

    def slow_send(_: object) -> None:
        began = time.monotonic()
        while time.monotonic() - began < 0.02:
            pass

    eng = PolicyEngine([_Two()], PROFILE)
    verdicts = eng.evaluate(field(0, [1]), slow_send)
    assert [v.ok for v in verdicts] == [True, True]
    assert eng.disabled == {}


class _SlowOnce:
    """Slow on its first field only (loads its model: ``slow_s``), then as quick as any.

    ``fires``: whether it returns one firing (a list) or none (``[]``); ``lazy``: a
    generator, whose first step does the slow work.
    """

    def __init__(self, slow_s: float, *, fires: bool = True, lazy: bool = False) -> None:
        self.name = "slow-once"
        self.slow_s = slow_s
        self.fires = fires
        self.lazy = lazy
        self.loaded = False

    def _load(self) -> None:
        if not self.loaded:
            began = time.monotonic()
            while time.monotonic() - began < self.slow_s:  # (its model loading)
                pass
            self.loaded = True

    def _firings(self, o: Observation) -> list[Firing]:
        d = ChangeInterval(run_id=o.run_id, seq=o.seq, interval_s=30)
        return [Firing(self.name, "custom", o.position, d)] if self.fires else []

    def _steps(self, o: Observation) -> Iterator[Firing]:
        self._load()
        yield from self._firings(o)

    def decide(self, o: Observation) -> Iterator[Firing] | list[Firing]:
        if self.lazy:
            return self._steps(o)
        self._load()
        return self._firings(o)


@pytest.mark.parametrize(
    ("fires", "lazy"), [(True, False), (True, True), (False, False), (False, True)],
    ids=["one-firing", "one-firing-generator", "none", "none-generator"],
)  # fmt: skip
def test_a_policy_slow_once_that_returns_is_only_slow(
    monkeypatch: pytest.MonkeyPatch, fires: bool, lazy: bool
) -> None:
    # before: decide() past the limit once (a model loaded on the first field) and one
    # firing returned: disabled for the run, though the worker's watchdog takes a call that
    # returns after all as only slow; the same policy returning [] was kept. The decide()
    # call and its first step are single calls, the watchdog's to judge.
    monkeypatch.setattr(engine_mod, "DECIDE_HANG_S", 0.01, raising=False)
    policy = _SlowOnce(0.05, fires=fires, lazy=lazy)
    eng = PolicyEngine([policy], PROFILE)
    first = eng.evaluate(field(0, [1, 2]))
    assert eng.disabled == {}, f"a policy slow once was disabled: {eng.disabled}"
    assert [v.ok for v in first] == [True] * fires
    # its next field (quick now) is judged as any
    nxt = eng.evaluate(field(1, [1, 2]))
    assert [(v.firing.rule, v.stage) for v in nxt] == [("slow-once", "")] * fires
    assert eng.disabled == {}


# ---------------------------------------------------------------- the frame a decision answers


class _Stops:
    """Stops the field's position, its decision naming frame ``seq`` (None: none)."""

    def __init__(self, name: str, seq: int | None) -> None:
        self.name = name
        self.seq = seq

    def decide(self, o: Observation) -> Iterator[Firing]:
        d = StopPosition(run_id=o.run_id, seq=self.seq, position=o.position)
        yield Firing(self.name, "custom", o.position, d)


def test_a_python_policy_s_decision_without_seq_answers_the_field_s_frame() -> None:
    # before: sent naming no frame, so the agent skipped `max_decision_age_s` for it
    handed_on = []
    (v,) = PolicyEngine([_Stops("mine", None)], PROFILE).evaluate(field(7, [1]), handed_on.append)
    assert v.ok
    assert v.firing.decision is not None
    assert v.firing.decision.seq == 7
    assert handed_on == [v.firing.decision]


def test_a_python_policy_s_decision_answering_an_earlier_frame_keeps_it() -> None:
    (v,) = PolicyEngine([_Stops("mine", 2)], PROFILE).evaluate(field(7, [1]))
    assert v.ok
    assert v.firing.decision is not None
    assert v.firing.decision.seq == 2


def test_a_python_policy_s_decision_answering_a_later_frame_disables_it() -> None:
    # a frame it has not seen: the agent would take the decision for fresher than it is
    eng = PolicyEngine([_Stops("mine", 9)], PROFILE)
    assert eng.evaluate(field(7, [1])) == []
    why = eng.disabled["mine"]
    assert "seq=9" in why
    assert "seq 7" in why


# ---------------------------------------------------------------- enter_region off the frame


def _region_rule(region: list[float]) -> list[dict[str, object]]:
    return [{"name": "r", "when": {"enter_region": {"region": region}}, "do": {"record": None}}]


@pytest.mark.parametrize(
    "region",
    [[600, 600, 700, 700], [0, 512, 100, 600], [-100, -100, 0, 0], [512, 0, 600, 100]],
)
def test_an_enter_region_wholly_outside_the_frame_is_refused(region: list[float]) -> None:
    # before: loaded, and never fired
    with pytest.raises(LivescopeError) as err:
        rules_for_profile(_region_rule(region), PROFILE)
    text = str(err.value)
    assert "policies.0 (r)" in text
    assert "512 x 512 px" in text
    assert "pixels" in text


@pytest.mark.parametrize("region", [[500, 500, 600, 600], [-10, -10, 1, 1], [0, 0, 512, 512]])
def test_an_enter_region_overlapping_the_frame_is_kept(region: list[float]) -> None:
    (rule,) = rules_for_profile(_region_rule(region), PROFILE)
    assert rule.name == "r"


def test_an_enter_region_off_a_replay_profile_s_placeholder_camera_is_only_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # (a replay's frames are the recording's: its profile's camera may be a placeholder)
    replay = load_profile("replay")
    h, w = replay.camera.sensor_shape_px
    with caplog.at_level(logging.WARNING, logger="livescope"):
        (rule,) = rules_for_profile(_region_rule([h + 10, w + 10, h + 20, w + 20]), replay)
    assert rule.name == "r"
    assert any("enter_region" in r.getMessage() for r in caplog.records)
