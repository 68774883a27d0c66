"""Second review of the demo's orchestration: what a failed start leaves, and what is scored.

`run_simulated` and `run_adaptive` run here for real where they fail before the
first frame (a second or two); the scoring case stands in for the acquisition
and the worker, as in ``test_demo_review``, with a made-up run whose firings
are known.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import useq
import yaml

from livescope.pipeline import _demo
from livescope.schema import LivescopeError, load_profile
from livescope.scope import demo_sequence, run_simulated
from tests.pipeline.test_demo_review import _Supervisor
from tests.pipeline.test_trigger_scoring import made_up_run

PROFILE = load_profile("sim")


@pytest.mark.parametrize(
    ("endpoints", "recorded", "says"),
    [
        pytest.param({"frames": "bogus://x"}, False, "not a ZeroMQ endpoint", id="bad-endpoint"),
        pytest.param(None, True, "already exists", id="recorded-folder"),
    ],
)
def test_an_agent_that_cannot_be_made_leaves_no_folder_behind(
    tmp_path: Path, endpoints: dict[str, str] | None, recorded: bool, says: str
) -> None:
    # the ground truth's writer made out/ground_truth (and out) before the agent, which
    # refuses before it writes anything, was made: an empty folder was left in the
    # user's recording, or a run folder made for a run that never began
    out = tmp_path / "new" / "run"
    if recorded:
        (out / "data.ome.zarr").mkdir(parents=True)
    seq = demo_sequence(PROFILE, timepoints=1, positions=1)
    with pytest.raises(LivescopeError, match=says):
        run_simulated(PROFILE, seq, out, bus="inline", endpoints=endpoints)
    if recorded:
        assert sorted(p.name for p in out.iterdir()) == ["data.ome.zarr"]
    else:
        assert not (tmp_path / "new").exists()


def test_a_worker_not_ready_in_time_is_said_to_be_so(tmp_path: Path) -> None:
    # a worker still loading its engines has no error line: the message said only "did
    # not start (see worker.log)", whose last line is no error either
    seq = demo_sequence(PROFILE, timepoints=1, positions=1)
    with pytest.raises(LivescopeError, match=r"did not start: not ready within 0\.01 s") as exc:
        _demo.run_adaptive(
            PROFILE, seq, tmp_path / "run", ready_timeout_s=0.01, watch_stalls=False, threads=1
        )
    assert "worker.log" in str(exc.value)


def _policy(name: str) -> dict[str, Any]:
    return {"name": name, "when": {"mitosis": {"p_min": 0.5, "frames": 2}},
            "do": {"acquire": {"channels": ["DAPI"], "loops": 2, "interval_s": 30}}}  # fmt: skip


def test_the_rules_scored_are_those_of_the_plan_the_worker_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with a plan file, the worker runs its rules (plan_file is copied to plan.yaml
    # "instead" of the policies given): scored by the policies given, the plan's
    # mitosis rule's one right trigger was left out (precision None, recall 0)
    def acquire(profile: Any, sequence: Any, out: Path, **kw: Any) -> dict[str, Any]:
        kw["on_ready"](None)
        worker_rules = yaml.safe_load((out / "plan.yaml").read_text(encoding="utf-8"))
        made_up_run(out, [(2, 15.0, 15.0)], rule=worker_rules["policies"][0]["name"])
        return {"frames_acquired": 4, "frames_written": 4, "decisions_accepted": 0,
                "decisions_rejected": 0, "duration_s": 1.0}  # fmt: skip

    monkeypatch.setattr(_demo, "run_simulated", acquire)
    monkeypatch.setattr(_demo, "WorkerSupervisor", _Supervisor)
    monkeypatch.setattr(_demo, "machine_info", lambda: {"cpu": "test"})
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"time_plan": {"interval": 120, "loops": 4},
                                    "policies": [_policy("closeup")]}))  # fmt: skip
    seq = useq.MDASequence(time_plan={"interval": 120, "loops": 4})
    s = _demo.run_adaptive(
        PROFILE, seq, tmp_path / "run", policies=[_policy("other")], plan_file=plan,
        watch_stalls=False,
    )  # fmt: skip
    assert s["evaluation"]["triggers_fired"] == 1
    assert (s["trigger_precision"], s["trigger_recall"]) == (1.0, 1.0)
