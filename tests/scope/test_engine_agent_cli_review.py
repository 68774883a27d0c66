"""`livescope agent` and the acquisition engine (review): nonsense refused, failures said."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import useq
from typer.testing import CliRunner

from livescope.cli._app import app
from livescope.record import read_frames
from livescope.schema import HardwareProfile
from livescope.scope import ScopeAgent, SimulatedMicroscope

_PLAN = """\
channels: [{config: Phase, exposure: 20}]
time_plan: {interval: 1, loops: 2}
"""


def _agent(tmp_path: Path, *options: str) -> tuple[int, str, str]:
    """Run ``livescope agent --plan PLAN OPTIONS --json`` in-process: (exit, stdout, stderr)."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(_PLAN, encoding="utf-8")
    args = ["agent", "--plan", str(plan), *options, "--json"]
    res = CliRunner().invoke(app, args)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


@pytest.mark.parametrize(
    ("options", "says"),
    [
        # each was taken for "not given": the plan and profile were reported as the
        # folder ".", the run got another id, the bus a default endpoint
        pytest.param(["--plan", ""], "--plan", id="plan"),
        pytest.param(["--profile", ""], "--profile", id="profile"),
        pytest.param(["--run-id", ""], "--run-id", id="run-id"),
        pytest.param(["--frames-endpoint", ""], "--frames-endpoint", id="endpoint"),
        # ignored: a worker sent to the endpoint waited in vain; a real rig's run
        # took no seed
        pytest.param(
            ["--bus", "off", "--decisions-endpoint", "tcp://127.0.0.1:5999"],
            "--decisions-endpoint: --bus off opens no bus",
            id="endpoint-without-bus",
        ),
        pytest.param(["--time-acceleration", "inf"], "--time-acceleration", id="acceleration"),
        pytest.param(
            ["--profile", "widefield-2048-scmos", "--seed", "3"],
            "--seed applies to simulated profiles only",
            id="seed-on-a-real-rig",
        ),
    ],
)
def test_the_agent_refuses_an_option_it_would_ignore(
    tmp_path: Path, options: list[str], says: str
) -> None:
    out = tmp_path / "run"
    code, stdout, stderr = _agent(tmp_path, "--out", str(out), *options)
    assert code == 2, stdout + stderr
    # (a usage error is said by click on stderr; `python -m livescope` prints it as JSON too)
    error = json.loads(stdout)["error"] if stdout else stderr
    assert says in error
    assert not out.exists()  # refused before anything was made


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_an_agent_run_that_did_not_end_as_planned_exits_non_zero(tmp_path: Path) -> None:
    # the decision log on a device that takes nothing (a full disk): the run's summary
    # said ok: false, yet the agent exited 0 (a script went on as if all were well) and,
    # without --json, printed the counts without the error
    out = tmp_path / "run"
    out.mkdir()
    (out / "decisions.jsonl").symlink_to("/dev/full")
    code, stdout, stderr = _agent(tmp_path, "--out", str(out), "--bus", "off")
    summary = json.loads(stdout)
    assert summary["ok"] is False
    assert summary["decision_log_errors"] >= 1
    assert code == 1, stderr
    assert f"the run did not end as planned: {summary['error']}" in stderr


def test_a_burst_at_a_position_without_z_records_the_focus(
    sim_profile: HardwareProfile, tmp_path: Path
) -> None:
    # a hardware-timed burst at a position with x and y only: its frames were recorded
    # without a z (pymmcore-plus reads no stage for a burst), the same plan's snaps with
    # the focus drive's
    def frames(interval_s: float) -> list[tuple[bool, float, float, float | None]]:
        seq = useq.MDASequence(
            stage_positions=[useq.Position(x=100.0, y=50.0)],
            channels=[useq.Channel(config="DAPI", exposure=10.0)],
            time_plan=useq.TIntervalLoops(interval=interval_s, loops=3),
        )
        run = tmp_path / f"every-{interval_s}"
        with SimulatedMicroscope(sim_profile) as sim:
            sim.core.setZPosition(7.0)
            sim.core.waitForSystem()
            ScopeAgent(sim.core, sim.profile, seq, run, sim=sim, bus="off").run()
        logged = read_frames(run)
        return [(f["hardware_triggered"], f["x_um"], f["y_um"], f["z_um"]) for f in logged]

    assert frames(0) == [(True, 100.0, 50.0, 7.0)] * 3  # one burst
    assert frames(1) == [(False, 100.0, 50.0, 7.0)] * 3  # three snaps


def test_a_burst_without_positions_keeps_the_z_of_its_plan(
    sim_profile: HardwareProfile, tmp_path: Path
) -> None:
    # the stage position read once for a burst without x/y: what the plan sets (its z)
    # is each frame's own, what it does not (x, y) is where the stage is
    seq = useq.MDASequence(
        channels=[useq.Channel(config="DAPI", exposure=10.0)],
        z_plan=useq.ZAbsolutePositions(absolute=[3.0]),
        time_plan=useq.TIntervalLoops(interval=0, loops=3),
    )
    with SimulatedMicroscope(sim_profile) as sim:
        sim.core.setXYPosition(150.0, -80.0)
        sim.core.waitForSystem()
        ScopeAgent(sim.core, sim.profile, seq, tmp_path / "run", sim=sim, bus="off").run()
    got = [(f["hardware_triggered"], f["x_um"], f["y_um"], f["z_um"])
           for f in read_frames(tmp_path / "run")]  # fmt: skip
    assert got == [(True, 150.0, -80.0, 3.0)] * 3


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose agent has ended (two frames, no bus)."""
    folder = tmp_path_factory.mktemp("finished")
    code, stdout, stderr = _agent(folder, "--out", str(folder / "run"), "--bus", "off")
    assert code == 0, stdout + stderr
    return folder / "run"


@pytest.mark.parametrize(
    ("options", "says"),
    [
        # taken for the folder "." (the worker ran, its plan no file), or an infinite
        # nucleus size; --resume without --analyse was ignored
        pytest.param(["--analyse", "--plan", ""], "--plan", id="plan"),
        pytest.param(["--analyse", "--profile", ""], "--profile", id="profile"),
        pytest.param(
            ["--analyse", "--nucleus-diameter-um", "inf"], "--nucleus-diameter-um", id="diameter"
        ),
        pytest.param(["--resume"], "--resume is for the analysis worker", id="resume"),
    ],
)
def test_the_worker_refuses_an_option_it_would_misread(
    finished_run: Path, options: list[str], says: str
) -> None:
    engines = ["--seg", "", "--stain", "", "--states", ""]  # (quick, were one to run)
    res = CliRunner().invoke(app, ["worker", str(finished_run), *options, *engines, "--json"])
    assert res.exit_code == 2, res.stdout + res.stderr
    error = json.loads(res.stdout)["error"] if res.stdout else res.stderr
    assert says in error
    assert not (finished_run / "results").exists()  # nothing analysed


def test_the_agent_refuses_a_folder_holding_another_runs_frame_log(tmp_path: Path) -> None:
    # its store removed to run again there: the new run's frames were appended to the
    # old run's log (read back as one run's, the old lines with the new pixels)
    out = tmp_path / "run"
    out.mkdir()
    (out / "frames.jsonl").write_text('{"seq": 0}\n', encoding="utf-8")
    code, stdout, stderr = _agent(tmp_path, "--out", str(out))
    assert code == 2, stdout + stderr
    assert "frames.jsonl already exists" in json.loads(stdout)["error"]
    assert sorted(p.name for p in out.iterdir()) == ["frames.jsonl"]
