"""What the policies keep over a long run (days, many positions), saved after every field:
bounded, and the verdicts the same as when everything was kept."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import useq

from livescope.policy import Guardrails, Observation, Rule
from livescope.policy import _guardrails as guardrails_module
from livescope.policy._triggers import FORGET_AFTER_T
from livescope.schema import AddEvents, Decision, Move, load_profile

from .test_policy import observation

PROFILE = load_profile("sim")

# ---------------------------------------------------------------- guardrails: moves

_COLS, _ROWS, _SPACING = 12, 8, 400.0  # 96 positions 400 um apart (the field: 332.8 um)
_RIG = PROFILE.replace(
    stages={**PROFILE.stages.model_dump(),
            "xy": {**PROFILE.stages.xy.model_dump(), "x_range_um": (-1e4, 1e4),
                   "y_range_um": (-1e4, 1e4)}},
    light_dose={**PROFILE.light_dose.model_dump(), "max_fluorescence_s_per_position": 3.0,
                "max_extra_frames_per_run": 10**6},
)  # fmt: skip
_PLAN = useq.MDASequence(
    stage_positions=[
        useq.Position(x=_SPACING * (i % _COLS), y=_SPACING * (i // _COLS), name=f"p{i:02d}")
        for i in range(_COLS * _ROWS)
    ],
    channels=["DAPI"],  # 50 ms
    time_plan={"interval": 60, "loops": 10},  # 0.5 s of each position's 3 s
)


def _following_policy(rounds: int, seed: int = 7) -> list[Decision]:
    """A cell-following policy's decisions: every position recentred on its cell each field.

    Mostly a few µm from its plan place; now and then over a neighbour's field (a
    cell wandering off: each lights the other), back again, and close-ups at the
    position (they follow it), which fill the light budgets as the run goes on.
    """
    rng = random.Random(seed)
    out: list[Decision] = []
    for r in range(rounds):
        for i in range(_COLS * _ROWS):
            name, x0, y0 = f"p{i:02d}", _SPACING * (i % _COLS), _SPACING * (i // _COLS)
            dx = rng.choice((-300.0, 300.0)) if rng.random() < 0.08 else rng.uniform(-60, 60)
            out.append(Move(run_id="r1", position=name, x_um=x0 + dx,
                            y_um=y0 + rng.uniform(-60, 60)))  # fmt: skip
            if rng.random() < 0.05:
                ev = useq.MDAEvent(index={"t": r}, pos_name=name, channel="DAPI", exposure=100)
                out.append(AddEvents(run_id="r1", events=(ev,)))
    return out


def _run_guardrails(decisions: list[Decision], seed: int = 11) -> tuple[Guardrails, list[Any]]:
    """Check and book each decision as the worker and agent do; refuse some, now or later.

    Returns the guardrails and each decision's verdict (the check's reason, or
    whether it was refused after it was booked), with the light booked after it.
    """
    rng = random.Random(seed)
    g = Guardrails(_RIG, _PLAN)
    late: list[tuple[int, Decision, float]] = []  # (refused after decision n, it, booked at)
    trace: list[Any] = []
    for n, d in enumerate(decisions):
        now = 60.0 * n / 96
        reason = g.check(d, now, rate=0)
        refused = ""
        if reason is None:
            g.commit(d, now)
            if (u := rng.random()) < 0.03:  # the agent refuses it at once
                g.release(d, now)
                refused = "now"
            elif u < 0.06:  # its answer comes later (up to two fields' decisions)
                late.append((n + rng.randint(1, 200), d, now))
                refused = "later"
        for item in [x for x in late if x[0] <= n]:  # (in the order they come)
            late.remove(item)
            g.release(item[1], item[2])
        trace.append((reason, refused, round(sum(g.dose_s.values()), 9)))
    return g, trace


def test_a_cell_following_policy_keeps_a_bounded_record_of_its_moves() -> None:
    # one move per position per field, 96 positions: the moves kept (and saved after
    # every field) grew by one per decision, for the whole run
    decisions = _following_policy(rounds=60)
    moves = sum(isinstance(d, Move) for d in decisions)
    assert moves > guardrails_module._UNDO_KEPT  # (past what a refusal can give back)
    g, trace = _run_guardrails(decisions)
    assert sum(r is None for r, _, _ in trace) > guardrails_module._UNDO_KEPT
    saved = g.state()
    # the state says where each moved position is, not each move it made
    assert len(saved["moves"]) == _COLS * _ROWS
    assert all(len(v) == 1 for v in saved["moves"].values())
    assert len(json.dumps(saved["moves"])) < 100 * _COLS * _ROWS
    # in memory: the moves a refusal can still give back, and where each goes back to
    assert sum(map(len, g._moves.values())) <= guardrails_module._UNDO_KEPT + _COLS * _ROWS
    # a restarted worker carries on from where each position is
    again = Guardrails(_RIG, _PLAN)
    again.restore(json.loads(json.dumps(saved)))
    assert again._centres == g._centres


def test_bounding_the_moves_kept_changes_no_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    # the same decisions and refusals (each within the last _UNDO_KEPT decisions, as the
    # worker's and the agent's are) with every booking and move kept, as before they
    # were bounded: the same verdicts, the same light booked after each, the same places
    decisions = _following_policy(rounds=60)
    with monkeypatch.context() as m:
        m.setattr(guardrails_module, "_UNDO_KEPT", 10**9)
        kept, expected = _run_guardrails(decisions)
    assert sum(map(len, kept._moves.values())) > guardrails_module._UNDO_KEPT + _COLS * _ROWS
    g, trace = _run_guardrails(decisions)
    assert trace == expected
    # (the scenario reaches every verdict: passed, refused by a budget, given back)
    assert {r is None for r, _, _ in trace} == {True, False}
    assert {f for _, f, _ in trace} == {"", "now", "later"}
    assert any(r and "moving" in r for r, _, _ in trace)
    state, want = g.state(), kept.state()
    assert {k: v for k, v in state.items() if k != "moves"} == {
        k: v for k, v in want.items() if k != "moves"
    }
    assert g._centres == kept._centres
    assert {k: v[-1] for k, v in state["moves"].items()} == {
        k: v[-1] for k, v in want["moves"].items()
    }


# ---------------------------------------------------------------- rules: cells given back

_LIFE = 12  # fields a track lives (then it is lost: its cell died or left)


def _fields(n: int, position: str = "p0") -> list[Observation]:
    """``n`` fields of 8 cells each: a cell lives `_LIFE` fields, in mitosis for 3 of them."""
    out = []
    for t in range(n):
        # 8 cells, born in turn: track k lives from (k - 8) * _LIFE // 8 for _LIFE fields
        near = range(max(1, t * 8 // _LIFE - 4), t * 8 // _LIFE + 10)  # (the others: not alive)
        born = {k: (k - 8) * _LIFE // 8 for k in near}
        tracks = [k for k, b in born.items() if 0 <= t - b < _LIFE]
        ages = [t - born[k] for k in tracks]
        lost = [k for k, b in born.items() if t - b == _LIFE and t > 0]
        p_mit = [0.9 if 4 <= a < 7 else 0.1 for a in ages]
        out.append(observation(t, tracks, p_mit=p_mit, lost=tuple(lost), position=position))
    return out


def _rules() -> list[Rule]:
    return [
        Rule("mitosis", {"mitosis": {"frames": 1}}, {"change_interval": {"interval_s": 60}}),
        Rule("lost", {"track_lost": {}}, {"change_interval": {"interval_s": 60}}),
    ]


def test_cells_given_back_are_forgotten_once_their_tracks_are_gone() -> None:
    # every firing refused as stale and given back (an analysis far behind): the cells
    # given back once were kept for the whole run (~1,300 a rule here, ~14 kB of JSON),
    # in the state saved after every field
    rules, fields = _rules(), _fields(2000)
    for o in fields:
        for rule in rules:
            for f in rule.decide(o):
                assert f.decision is not None
                rule.give_back(f.decision.decision_id)
    last = fields[-FORGET_AFTER_T - 2 :]
    seen = {f"p0/{k}" for o in last for k in o.cells.tracks}
    lost = {f"p0/{k}" for o in last for k in o.lost}
    for rule, recent in zip(rules, (seen, lost), strict=True):
        assert rule.given_back > 1000  # (counted still)
        # only tracks seen lately (a lost one: until it was lost) are remembered
        assert rule.given_back_cells <= recent
        assert len(rule.given_back_cells) < FORGET_AFTER_T
        assert len(json.dumps(rule.state())) < 4000


@pytest.mark.parametrize("restart_at", [None, 700], ids=["one-run", "restarted"])
def test_forgetting_gone_cells_changes_no_verdict(restart_at: int | None) -> None:
    # half the firings refused as stale, some twice: a cell is given back once (its
    # second is not), whenever its second comes; what is expected is worked out here,
    # keeping every cell ever given back
    rng = random.Random(3)
    rules, ever = _rules(), [set[str](), set[str]()]
    fired = [0, 0]
    answers: list[tuple[int, str, bool]] = []
    for o in _fields(1500):
        if o.t == restart_at:  # a worker restarted from the saved state
            saved = [json.loads(json.dumps(r.state())) for r in rules]
            rules = _rules()
            for r, s in zip(rules, saved, strict=True):
                r.restore(s)
        for i, rule in enumerate(rules):
            firings = list(rule.decide(o))
            fired[i] += len(firings)
            for f in firings:
                assert f.decision is not None
                if rng.random() < 0.5:
                    continue
                cell = f"p0/{f.track}"
                got = rule.give_back(f.decision.decision_id)
                assert got == (cell not in ever[i]), (o.t, rule.name, cell)
                ever[i].add(cell)
                answers.append((o.t, cell, got))
    # a lasting mitosis given back fires again on the next field: its second refusal
    # counts (a cell given back is never given back again)
    assert any(not got for _, _, got in answers)
    assert sum(got for _, _, got in answers) > 300
    for i, rule in enumerate(rules):
        assert rule.given_back == len(ever[i])
        assert rule.fires == fired[i]
