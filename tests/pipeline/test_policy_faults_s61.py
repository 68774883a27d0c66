"""A policy's faults in a worker: a field lost between its two saved states, a policy
that exits (``SystemExit``) or hangs, and the worker restarted after it."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import livescope.pipeline._worker as worker_mod
from livescope.pipeline import PipelineWorker, WorkerConfig
from livescope.policy import Observation, PolicyEngine
from livescope.schema import LivescopeError, load_profile

NO_ENGINES = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished simulated run of one position ``p0``, 4 time points; copy it to use it."""
    from livescope.scope import demo_sequence, run_simulated

    prof = load_profile("sim")
    run = tmp_path_factory.mktemp("s61") / "run"
    run_simulated(prof, demo_sequence(prof, timepoints=4, positions=1), run, seed=3)
    return run


@pytest.fixture
def run(recorded: Path, tmp_path: Path) -> Path:
    shutil.copytree(recorded, tmp_path / "run")
    return tmp_path / "run"


class Seen:
    """Remembers each field it was shown (its state), as a rule's streak of frames does."""

    def __init__(self, name: str = "seen") -> None:
        self.name = name
        self.seen: dict[str, list[int]] = {}

    def decide(self, obs: Observation) -> list[Any]:
        self.seen.setdefault(obs.position, []).append(obs.t)
        return []

    def state(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.seen.items()}

    def restore(self, state: dict[str, list[int]]) -> None:
        self.seen = {k: list(v) for k, v in state.items()}


class RaiseAt(Seen):
    """Raises ``exc`` on field ``t``."""

    def __init__(self, name: str, exc: BaseException, t: int = 1) -> None:
        super().__init__(name)
        self.exc, self.t = exc, t

    def decide(self, obs: Observation) -> list[Any]:
        super().decide(obs)
        if obs.t == self.t:
            raise self.exc
        return []


class HangAt(Seen):
    """Never returns on field ``t`` (until ``release`` is set, or 60 s: the test's bound)."""

    def __init__(self, name: str = "hang", t: int = 1) -> None:
        super().__init__(name)
        self.t = t
        self.release = threading.Event()

    def decide(self, obs: Observation) -> list[Any]:
        super().decide(obs)
        if obs.t == self.t:
            self.release.wait(60)
        return []


def _disabled(summary: dict[str, Any]) -> dict[str, str]:
    return {d["rule"]: d["error"] for d in summary["policies_disabled"]}


# ------------------------------------------------------------ the two saved states


def test_a_field_whose_policy_state_was_not_saved_is_decided_when_resumed(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the store thread saves each field's state.json and policy_state.json; a write of the
    # second failing (or a kill between the two) must not leave the field done but never
    # decided: no policy would ever see it
    write = PipelineWorker._write_policy_state
    failed: list[int] = []

    def failing(self: PipelineWorker, generation: int, text: str) -> None:
        if not failed and json.loads(text)["decided"].get("p0") == 2:
            failed.append(2)
            raise OSError("disk full (the test's)")
        write(self, generation, text)

    monkeypatch.setattr(PipelineWorker, "_write_policy_state", failing)
    with pytest.raises(LivescopeError, match="storing results failed: disk full"):
        PipelineWorker(run, NO_ENGINES, policies=[Seen()]).run(attach_timeout_s=0.1)
    assert failed
    monkeypatch.undo()
    seen = Seen()
    summary = PipelineWorker(run, NO_ENGINES, resume=True, policies=[seen]).run(
        attach_timeout_s=0.1
    )
    assert summary["ok"]
    assert seen.seen == {"p0": [0, 1, 2, 3]}  # (t=2 was lost: [0, 1, 3])


def test_a_field_decided_but_not_saved_as_done_is_not_decided_again(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the policies' state saved, state.json not: the field is analysed again, not decided
    save = PipelineWorker._save_state
    failed: list[int] = []

    def failing(
        self: PipelineWorker, state: dict[str, Any] | None = None, *, finished: bool = False
    ) -> None:
        if not failed and state is not None and state["done"].get("p0") == 2:
            failed.append(2)
            raise OSError("disk full (the test's)")
        save(self, state, finished=finished)

    monkeypatch.setattr(PipelineWorker, "_save_state", failing)
    with pytest.raises(LivescopeError, match="storing results failed"):
        PipelineWorker(run, NO_ENGINES, policies=[Seen()]).run(attach_timeout_s=0.1)
    monkeypatch.undo()
    assert json.loads((run / "results" / "policy_state.json").read_text())["decided"] == {"p0": 2}
    seen = Seen()
    w = PipelineWorker(run, NO_ENGINES, resume=True, policies=[seen])
    assert w.done == {"p0": 1}
    summary = w.run(attach_timeout_s=0.1)
    assert summary["ok"]
    assert seen.seen == {"p0": [0, 1, 2, 3]}  # once each


# ------------------------------------------------------------ a policy that exits


def test_a_policy_that_raises_system_exit_is_disabled_and_the_run_goes_on(
    run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Seen()
    policies = [RaiseAt("quits", SystemExit("policy bug")), seen]
    with caplog.at_level(logging.ERROR, logger="livescope"):
        summary = PipelineWorker(run, NO_ENGINES, policies=policies).run(attach_timeout_s=0.1)
    assert summary["ok"]
    assert _disabled(summary) == {"quits": "SystemExit: policy bug"}
    assert seen.seen == {"p0": [0, 1, 2, 3]}  # the other policy went on
    assert policies[0].seen == {"p0": [0, 1]}  # (not called once disabled)
    assert any("'quits'" in r.getMessage() and "disabled" in r.getMessage()
               for r in caplog.records)  # fmt: skip


@pytest.mark.parametrize("call", ["state", "restore", "give_back"])
def test_system_exit_in_a_policys_other_calls_disables_it(call: str) -> None:
    class Quits(Seen):
        def _quit(self, *_: object) -> Any:
            raise SystemExit(f"{call} bug")

    policy = Quits("quits")
    setattr(policy, call, policy._quit)
    engine = PolicyEngine([policy, Seen()], load_profile("sim"))
    if call == "state":
        assert "quits" not in engine.state()["policies"]
    elif call == "restore":
        saved = PolicyEngine([Seen("quits"), Seen()], load_profile("sim")).state()
        engine.restore(saved)
    else:
        from livescope.policy import Firing, Verdict
        from livescope.schema import StopRun

        f = Firing(rule="quits", trigger="t", position="p0", decision=StopRun(run_id="r"))
        assert engine.give_back([Verdict(f, True)], 0) == []
    assert engine.disabled == {"quits": f"SystemExit in {call}{'()' * (call != 'give_back')}: "
                               f"{call} bug"}  # fmt: skip
    assert engine.calling is None


def test_a_keyboard_interrupt_a_policy_raises_on_the_decision_thread_disables_it(
    run: Path,
) -> None:
    # (no Ctrl+C reaches the decision thread: the policy raised it itself; it failed the
    # worker at every restart)
    seen = Seen()
    policies = [RaiseAt("ctrl-c", KeyboardInterrupt("pressed")), seen]
    summary = PipelineWorker(run, NO_ENGINES, policies=policies).run(attach_timeout_s=0.1)
    assert summary["ok"]
    assert _disabled(summary) == {"ctrl-c": "KeyboardInterrupt: pressed"}
    assert seen.seen == {"p0": [0, 1, 2, 3]}


def test_a_ctrl_c_during_a_policy_on_the_main_thread_is_not_the_policys_bug() -> None:
    # (evaluated on the main thread, e.g. by a script: a Ctrl+C there is the user's)
    from livescope.policy import Firing, Verdict
    from livescope.schema import StopRun

    class Pressed(Seen):
        def give_back(self, _: str) -> bool:
            raise KeyboardInterrupt("pressed")

    engine = PolicyEngine([Pressed("ctrl-c")], load_profile("sim"))
    f = Firing(rule="ctrl-c", trigger="t", position="p0", decision=StopRun(run_id="r"))
    with pytest.raises(KeyboardInterrupt):
        engine.give_back([Verdict(f, True)], 0)
    assert engine.disabled == {}


# ------------------------------------------------------------ a policy that hangs


def _wait_for(what: str, ok: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s"
        time.sleep(0.02)


def test_a_hung_policy_is_named_and_the_restarted_worker_runs_without_it(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(worker_mod, "POLICY_HANG_S", 0.3)
    monkeypatch.setattr(worker_mod, "_WATCH_EVERY_S", 0.02)
    marker = run / "results" / "policy_hung.json"
    hang = HangAt()
    w = PipelineWorker(run, NO_ENGINES, policies=[hang, Seen()])
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(w.run(attach_timeout_s=0.1)))
    caplog.set_level(logging.WARNING, logger="livescope")
    thread.start()
    try:
        _wait_for("the hung policy named in policy_hung.json", marker.is_file)
        # the run as a worker ended as hung (the supervisor's hang check) leaves it
        _wait_for("field t=0 stored", lambda: json.loads(
            (run / "results" / "state.json").read_text())["done"] == {"p0": 0})  # fmt: skip
        shutil.copytree(run, tmp_path / "killed")
    finally:
        hang.release.set()  # (it was only slow after all)
        thread.join(30)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("policy 'hang' has been in its decide() on field p0 t=1" in m for m in said), said
    hung = json.loads((tmp_path / "killed" / "results" / "policy_hung.json").read_text())
    assert list(hung["policies"]) == ["hang"]
    # it returned after all: slow, not hung, and the mark is taken off
    assert out["ok"]
    assert _disabled(out) == {}
    assert not marker.exists()
    assert any("'hang''s decide() returned after" in r.getMessage() for r in caplog.records)

    again, seen = HangAt(), Seen()
    summary = PipelineWorker(tmp_path / "killed", NO_ENGINES, resume=True,
                             policies=[again, seen]).run(attach_timeout_s=0.1)  # fmt: skip
    assert summary["ok"]
    assert again.seen == {}  # disabled from the start: never called again
    assert seen.seen == {"p0": [0, 1, 2, 3]}  # the run went on
    error = _disabled(summary)["hang"]
    assert "decide() on field p0 t=1 had not returned after 0.3 s" in error
    # disabled as a policy that raised is: saved with the policies' state
    state = json.loads((tmp_path / "killed" / "results" / "policy_state.json").read_text())
    assert state["policy"]["disabled"] == {"hang": error}


def test_only_a_resumed_worker_disables_the_policies_marked_hung(tmp_path: Path) -> None:
    res = tmp_path / "results"
    res.mkdir()
    marker = res / "policy_hung.json"
    marker.write_text(json.dumps({"version": 1, "policies": {"hang": "hung: why"}}))
    w = PipelineWorker(tmp_path, NO_ENGINES, resume=True, policies=[Seen("hang"), Seen()])
    try:
        assert w.policy.disabled == {"hang": "hung: why"}
    finally:
        w._finish(failed=True)
    # a fresh analysis of the run (not resumed): the former one's mark goes
    w = PipelineWorker(tmp_path, NO_ENGINES, policies=[Seen("hang"), Seen()])
    try:
        assert w.policy.disabled == {}
        assert not marker.exists()
    finally:
        w._finish(failed=True)
