"""``livescope plan check``: a plan against a rig before anything moves (`plan_figures`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import useq

from livescope.schema import check_plan, load_profile, plan_figures

from ..conftest import run_cli

TWO_PLACES = """\
time_plan: {{interval: {interval}, loops: {loops}}}
stage_positions:
  - {{x: 0, y: 0, name: A}}
  - {{x: 1000, y: 0, name: B}}
channels:
  - {{config: Phase, exposure: 50}}
  - {{config: DAPI, exposure: {dapi_ms}}}
"""


def _text(interval: float, dapi_ms: float = 100, loops: int = 4) -> str:
    return TWO_PLACES.format(interval=interval, dapi_ms=dapi_ms, loops=loops)


def _plan(interval: float, dapi_ms: float = 100, loops: int = 4) -> useq.MDASequence:
    import yaml

    return useq.MDASequence(**yaml.safe_load(_text(interval, dapi_ms, loops)))


def test_a_time_point_takes_its_exposures_readouts_and_moves() -> None:
    prof = load_profile("sim")
    seq = _plan(interval=60)
    check_plan(seq, prof)
    f = plan_figures(seq, prof)
    readout = 1 / prof.camera.max_fps
    move = 1000 / prof.stages.xy.max_speed_um_s
    frames = 2 * (0.050 + 0.100) + 4 * readout
    # a later time point: back to A, A's frames, over to B, B's frames
    assert f["time_point_s"] == pytest.approx(frames + 2 * move, abs=1e-3)
    assert f["time_point"] >= 1
    assert (f["frames"], f["time_points"]) == (16, 4)
    assert (f["positions"], f["channels"]) == (["A", "B"], ["Phase", "DAPI"])
    assert f["planned_duration_s"] == 180
    assert f["estimated_duration_s"] == pytest.approx(180 + frames + 2 * move, abs=1e-3)
    assert f["shortest_interval_s"] == 60
    assert f["late_s"] == 0
    assert f["fluorescence_s"] == {"A": pytest.approx(0.4), "B": pytest.approx(0.4)}
    h, w = prof.camera.sensor_shape_px
    assert f["recording_gb"] == pytest.approx(16 * h * w * 2 / 1e9, abs=1e-3)
    assert f["warnings"] == []


def test_time_points_longer_than_the_interval_are_a_warning_with_how_late() -> None:
    prof = load_profile("sim")
    seq = _plan(interval=0.1)
    f = plan_figures(seq, prof)
    span = f["time_point_s"]  # (a later one: it moves back to A first)
    move = 1000 / prof.stages.xy.max_speed_um_s
    assert span > 0.1
    # each later time point starts later by what the one before ran over (the first has
    # no move back)
    assert f["late_s"] == pytest.approx(3 * (span - 0.1) - move, abs=1e-3)
    (warning,) = f["warnings"]
    assert warning.startswith(f"time points start late, one by at least {f['late_s']:.1f} s")
    assert "the shortest interval is 0.1 s" in warning


def test_a_position_whose_plan_spends_most_of_its_light_is_a_warning() -> None:
    prof = load_profile("sim")
    budget = prof.light_dose.max_fluorescence_s_per_position
    dapi_ms = min(prof.channels.get("DAPI").exposure_max_ms,
                  prof.light_dose.max_exposure_ms_per_frame)  # fmt: skip
    loops = math.ceil(0.9 * budget / (dapi_ms / 1000))  # (90 % of the budget)
    seq = _plan(interval=600, dapi_ms=dapi_ms, loops=loops)
    check_plan(seq, prof)  # (it fits)
    f = plan_figures(seq, prof)
    spent = loops * dapi_ms / 1000
    assert f["fluorescence_s"]["A"] == pytest.approx(spent)
    warned = [w for w in f["warnings"] if w.startswith("position A gets")]
    assert len(warned) == 1
    assert f"{100 * spent / budget:.0f}% of light_dose.max_fluorescence_s_per_position" in warned[0]
    assert f"decisions may add at most {budget - spent:.1f} s there" in warned[0]
    assert plan_figures(_plan(interval=600, dapi_ms=dapi_ms, loops=2), prof)["warnings"] == []


def test_a_plan_without_a_time_plan_is_one_time_point() -> None:
    prof = load_profile("sim")
    seq = useq.MDASequence(channels=["Phase"], stage_positions=[(0, 0)])
    f = plan_figures(seq, prof)
    assert (f["frames"], f["time_points"], f["planned_duration_s"]) == (1, 1, 0.0)
    assert f["shortest_interval_s"] is None
    exposure_s = prof.channels.get("Phase").default_exposure_ms / 1000
    assert f["time_point_s"] == pytest.approx(exposure_s + 1 / prof.camera.max_fps, abs=1e-3)


def test_the_command_checks_each_plan_and_exits_1_when_one_does_not_fit(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(_text(60))
    bad_channel = tmp_path / "bad.yaml"
    bad_channel.write_text("time_plan: {interval: 60, loops: 2}\nchannels: [{config: Nope}]\n")
    bad_rule = tmp_path / "rule.yaml"
    bad_rule.write_text(
        _text(60) + "policies:\n  - name: closeup\n    when: {mitosis: {p_min: 0.5}}\n"
        "    do: {acquire: {channels: [GFP], loops: 2, interval_s: 30}}\n"
    )
    res = run_cli("plan", "check", str(good), str(bad_channel), str(bad_rule), "--json")
    assert res.returncode == 1, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["ok"] is False
    assert out["profile"] == "sim"
    first, second, third = out["results"]
    assert first["valid"] is True
    assert first["frames"] == 16
    assert second["valid"] is False
    assert any("unknown channel 'Nope'" in p for p in second["problems"])
    assert third["valid"] is False
    assert any("GFP" in p for p in third["problems"])
    alone = run_cli("plan", "check", str(good))
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert "16 frame(s): 2 position(s) × 4 time point(s), channels Phase, DAPI" in alone.stderr


def test_a_profile_that_cannot_be_read_is_a_user_error(tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(_text(60))
    res = run_cli("plan", "check", str(plan), "--profile", "no-such-rig", "--json")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "no-such-rig" in json.loads(res.stdout)["error"]


def test_an_agent_warns_at_its_start_of_time_points_that_will_start_late(
    sim, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from livescope.scope import ScopeAgent

    seq = _plan(interval=0.1)
    with caplog.at_level("WARNING", logger="livescope"):
        ScopeAgent(sim.core, sim.profile, seq, tmp_path / "late", bus="off").close()
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("plan: ")]
    assert warned == [f"plan: {w}" for w in plan_figures(seq, sim.profile)["warnings"]]
    assert len(warned) == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="livescope"):
        ScopeAgent(sim.core, sim.profile, _plan(interval=60), tmp_path / "fine", bus="off").close()
    assert not [r for r in caplog.records if r.getMessage().startswith("plan: ")]
