"""Review of the demo's orchestration and scoring: the figures a run's summary gives.

`run_adaptive` runs here with its acquisition and its worker replaced by stand-ins
that write what the real ones leave in a run folder (frames, ground truth, the
worker's firings and summary), so each figure can be checked on a made-up run in
well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import useq

from livescope.pipeline import _demo, evaluate_triggers, flag_divisions_ctc
from livescope.record import CtcTrack, write_ctc
from livescope.schema import LivescopeError, load_profile
from tests.pipeline.test_trigger_scoring import made_up_run

PROFILE = load_profile("sim")  # mitosis 1800 s: anaphase (daughters) 540 s


class _Supervisor:
    """Stands in for `WorkerSupervisor`: ready at once, the worker's summary at the end."""

    def __init__(self, out: Path, cfg: Any, threads: int) -> None:
        self.out = out
        self.exits: list[int] = []
        self.error: str | None = None
        self.restarts = 0
        self.stopped = False

    def start(self) -> None:
        (self.out / "results").mkdir(exist_ok=True)
        (self.out / "results" / "ready").touch()

    def wait(self) -> dict[str, Any]:
        self.exits.append(0)
        return {"supervisor": {"restarts": 0, "exit_codes": [0]}}

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float, float]]:
    """Replace the acquisition and the worker; returns the firings the 'worker' makes."""
    firings: list[tuple[int, float, float]] = [(2, 15.0, 15.0)]

    def acquire(profile: Any, sequence: Any, out: Path, **kw: Any) -> dict[str, Any]:
        kw["on_ready"](None)
        made_up_run(out, firings, rule=str(yaml_rule_name(out)))
        return {"frames_acquired": 4, "frames_written": 4, "decisions_accepted": 0,
                "decisions_rejected": 0, "duration_s": 1.0}  # fmt: skip

    monkeypatch.setattr(_demo, "run_simulated", acquire)
    monkeypatch.setattr(_demo, "WorkerSupervisor", _Supervisor)
    monkeypatch.setattr(_demo, "machine_info", lambda: {"cpu": "test"})
    return firings


def yaml_rule_name(out: Path) -> Any:
    """The first rule's name as the worker reads it from the run's plan.yaml (YAML types)."""
    import yaml

    plan = yaml.safe_load((out / "plan.yaml").read_text(encoding="utf-8"))
    return plan["policies"][0]["name"]


SEQ = useq.MDASequence(time_plan={"interval": 120, "loops": 4})


def _policy(name: Any) -> dict[str, Any]:
    return {"name": name, "when": {"mitosis": {"p_min": 0.5, "frames": 2}},
            "do": {"acquire": {"channels": ["DAPI"], "loops": 2, "interval_s": 30}}}  # fmt: skip


def test_stand_in_run_scores_its_trigger(fake_run: list, tmp_path: Path) -> None:
    # (the harness itself: one right trigger on the one observable mitosis)
    s = _demo.run_adaptive(
        PROFILE, SEQ, tmp_path / "run", policies=[_policy("closeup")], watch_stalls=False
    )
    assert (s["trigger_precision"], s["trigger_recall"]) == (1.0, 1.0)
    assert s["mitosis_to_trigger_s"] == 240 - 100


def test_a_rule_named_by_a_number_has_its_triggers_scored(fake_run: list, tmp_path: Path) -> None:
    # `name: 7` in a plan is the int 7 in its policies; the worker logs the rule as "7":
    # its triggers were left out (precision None, recall 0: 'missed every mitosis')
    s = _demo.run_adaptive(PROFILE, SEQ, tmp_path / "run", policies=[_policy(7)],
                           watch_stalls=False)  # fmt: skip
    assert s["evaluation"]["triggers_fired"] == 1
    assert (s["trigger_precision"], s["trigger_recall"]) == (1.0, 1.0)


class _DeadMonitor:
    """A stall probe that cannot start (e.g. no Python interpreter to run it with)."""

    def start(self) -> _DeadMonitor:
        raise LivescopeError("the stall probe ended without answering")


def test_a_stall_monitor_that_cannot_start_does_not_fail_the_run(
    fake_run: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the docstring: a monitor that failed is said in machine_stalls, the run stands
    monkeypatch.setattr(_demo, "StallMonitor", _DeadMonitor)
    s = _demo.run_adaptive(PROFILE, SEQ, tmp_path / "run", policies=[_policy("closeup")])
    assert "without answering" in s["machine_stalls"]["error"]
    assert s["trigger_precision"] == 1.0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["machine_stalls"]


@pytest.mark.parametrize(
    ("y", "x"),
    [
        pytest.param(-20.0, 15.0, id="far-above-the-frame"),  # (a slice end that wrapped)
        pytest.param(6.0, 6.0, id="window-corner-5.7px-away"),  # (beyond radius 4)
    ],
)
def test_a_trigger_away_from_every_cell_is_on_no_cell(tmp_path: Path, y: float, x: float) -> None:
    ev = evaluate_triggers(made_up_run(tmp_path, [(2, y, x)]), PROFILE)
    assert ev["triggers"][0]["cell_id"] == 0
    assert ev["precision"] == 0.0


class _Classifier:
    """Stands in for `CellStateEngine`: P(mitosis) 0.9 for the cells named, else 0.1."""

    def __init__(self, mitotic: set[int]) -> None:
        self.mitotic = mitotic

    def classify(self, image: Any, labels: Any, pixel_size_um: Any = None) -> Any:
        ids = np.unique(labels[labels > 0])

        class _Res:
            pass

        res = _Res()
        res.ids = ids  # type: ignore[attr-defined]
        res.p_mitosis = np.array(  # type: ignore[attr-defined]
            [0.9 if int(i) in self.mitotic else 0.1 for i in ids], np.float32
        )
        return res


def test_a_track_continued_after_a_gap_is_no_division(tmp_path: Path) -> None:
    # CTC: an object missed for a frame goes on as a new track whose parent is its
    # track before the gap (one child); a division is a parent with two daughters
    frames = []
    for t in range(7):
        m = np.zeros((32, 32), np.uint16)
        if t <= 1:
            m[2:6, 2:6] = 1  # object 1, missed at t = 2, back as track 2 from t = 3
        elif t >= 3:
            m[2:6, 2:6] = 2
        if t <= 3:
            m[20:26, 20:26] = 3  # divides into 4 and 5 at t = 4
        else:
            m[18:21, 20:26] = 4
            m[25:28, 20:26] = 5
        frames.append(m)
    tracks = [CtcTrack(1, 0, 1, 0), CtcTrack(2, 3, 6, 1), CtcTrack(3, 0, 3, 0),
              CtcTrack(4, 4, 6, 3), CtcTrack(5, 4, 6, 3)]  # fmt: skip
    write_ctc(tmp_path / "gt", frames, tracks, kind="gt")
    (tmp_path / "img").mkdir()
    for t in range(7):
        tifffile.imwrite(tmp_path / "img" / f"t{t:03d}.tif", np.zeros((32, 32), np.uint16))
    out = flag_divisions_ctc(
        _Classifier({3}),
        tmp_path / "img",
        tmp_path / "gt",
        frames_before=2,  # type: ignore[arg-type]
    )
    assert [d["mother"] for d in out["per_division"]] == [3]
    assert (out["divisions"], out["flagged"]) == (1, 1)
    # object 1's last frames and track 2's first ones are ordinary cell-frames: all
    # (2 + 4 + 4 + 2 * 3) but mother 3's last two and each daughter's first two
    assert out["other_cell_frames"] == 2 + 4 + 4 + 2 * 3 - (2 + 2 * 2)


def test_a_plan_file_s_mitosis_rule_that_never_fired_missed_the_mitosis(
    fake_run: list, tmp_path: Path
) -> None:
    # run_adaptive(plan_file=...) without policies=: the worker runs the plan's rules,
    # so a mitosis rule that never fired missed the mitosis (recall 0), and the summary
    # must not say the plan has no mitosis rule
    import yaml

    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"time_plan": {"interval": 120, "loops": 4},
                                    "policies": [_policy("closeup")]}))  # fmt: skip
    fake_run.clear()
    s = _demo.run_adaptive(PROFILE, SEQ, tmp_path / "run", plan_file=plan, watch_stalls=False)
    assert s["evaluation"]["note"] is None
    assert s["trigger_recall"] == 0.0


def test_each_nucleus_size_gets_a_segmenter_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fields at one pixel size but of samples with different nuclei: the segmenter is
    # rescaled to each field's nucleus size (it was kept per pixel size: the first's)
    from livescope.pipeline import _scoring, score_stain_simulated
    from livescope.scope import CellState, SimulatedView

    made: list[float] = []

    class _Segmenter:
        def __init__(self, name: str, *, backend: Any, object_diameter_px: float) -> None:
            made.append(round(object_diameter_px, 3))

        def segment(self, image: Any, normalised: bool = False) -> Any:
            class _Found:
                labels = np.zeros(image.shape, np.uint32)

            return _Found()

        def close(self) -> None:
            pass

    class _Stain:
        class card:  # (the engine's attribute)
            target_normalisation = None

        backend = "test"

        def predict(self, image: Any, pixel_size_um: float) -> Any:
            class _Res:
                ms = 1.0

            r = _Res()
            r.image = image.astype(np.float32)  # type: ignore[attr-defined]
            return r

    monkeypatch.setattr(_scoring, "SegmentationEngine", _Segmenter)
    rng = np.random.default_rng(0)
    labels = np.zeros((32, 32), np.uint32)
    labels[8:16, 8:16] = 1
    views = [
        SimulatedView(
            rng.random((32, 32)),
            rng.random((32, 32)),
            labels,
            {1: (CellState.INTERPHASE, 0.5)},
            0.5,
            radius,
        )
        for radius in (4.0, 8.0)
    ]
    score_stain_simulated(_Stain(), views, segmenter="nuclei")  # type: ignore[arg-type]
    assert made == [16.0, 32.0]
