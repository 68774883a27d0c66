"""Names that are one folder on Windows or macOS, or that no staging folder fits; files
saved by Windows tools; a file being replaced there.

Two ``acquire`` rules named but for case were accepted: on Windows and macOS their
close-ups (``<position>~<rule>-<n>``) shared one results folder, one's masks overwrote
the other's and its CTC result was skipped. A position name of 250-255 bytes passed,
but the worker's staging folders ``.<name>.live`` could not be made: its CTC result was
never written. A worker config saved "UTF-8 with BOM" was refused. The viewer's first
read of ``overlay.json`` gave up at once on the PermissionError Windows raises while
the worker replaces it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import useq
import yaml

import livescope.schema._plan as plan_module
from livescope.bus import OVERLAY_FILE, OVERLAY_VERSION
from livescope.bus._overlay import _resolve
from livescope.pipeline import WorkerConfig, run_replay
from livescope.pipeline._results import ctc_staging
from livescope.policy import rules_from_spec
from livescope.record import DatasetError
from livescope.schema import (
    AddEvents,
    DecisionAck,
    HardwareProfile,
    LivescopeError,
    PlanError,
    check_plan,
    clock_ns,
    load_profile,
)
from livescope.schema._plan import folder_name_problem
from livescope.scope import ScopeAgent, SimulatedMicroscope, demo_sequence, run_simulated

from ..conftest import run_cli

EXAMPLE = Path(__file__).parents[2] / "examples" / "mitosis-closeups.yaml"

# ------------------------------------------------ rule names that are one folder but for case


def _closeup_rules(*names: str) -> list[dict[str, Any]]:
    """The example's close-up rule, once under each name."""
    (rule,) = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["policies"]
    return [{**rule, "name": name} for name in names]


def test_acquire_rules_named_but_for_case_are_refused_where_case_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (their close-ups p0~mitosis-closeup-0 and p0~Mitosis-closeup-0: one results folder)
    spec = _closeup_rules("mitosis-closeup", "Mitosis-closeup")
    monkeypatch.setattr(plan_module, "CASE_BLIND", True)  # Windows, macOS
    with pytest.raises(LivescopeError) as err:
        rules_from_spec(spec, source="plan.yaml")
    said = str(err.value)
    assert said.startswith("plan.yaml: policies.1: rule names 'mitosis-closeup' and ")
    assert "'Mitosis-closeup'" in said
    assert "rename one of them" in said
    monkeypatch.setattr(plan_module, "CASE_BLIND", False)  # Linux: two folders
    assert [r.name for r in rules_from_spec(spec)] == ["mitosis-closeup", "Mitosis-closeup"]


def test_rules_named_alike_are_still_refused_as_repeated() -> None:
    with pytest.raises(LivescopeError, match=r"repeated: \['a'\]"):
        rules_from_spec(_closeup_rules("a", "a"))


# ------------------------------------------------ an added place named as one added before


@pytest.fixture
def agent(sim: SimulatedMicroscope, tmp_path: Path) -> Iterator[ScopeAgent]:
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, name="A")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=60, loops=3),
    )
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path / "run", sim=sim, bus="off")
    yield agent
    agent.feed.stop()
    agent.close()


def _add_at(agent: ScopeAgent, *names: str, t: int = 1) -> DecisionAck:
    """Send one decision adding a frame at x/y of its own filed under each of ``names``."""
    events = [
        useq.MDAEvent(index={"t": t}, channel={"config": "DAPI"}, pos_name=n, x_pos=10.0, y_pos=0.0)
        for n in names
    ]
    return agent._on_decision(
        AddEvents(run_id=agent.run_id, delay_s=600, events=events), clock_ns()
    )


def test_an_added_place_named_as_one_added_before_but_for_case_is_refused_where_case_is_ignored(
    agent: ScopeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_module, "CASE_BLIND", True)  # Windows, macOS
    assert _add_at(agent, "A~mitosis-closeup-0").accepted
    ack = _add_at(agent, "A~Mitosis-closeup-0")
    assert not ack.accepted
    assert "'A~Mitosis-closeup-0'" in ack.reason
    assert "added place 'A~mitosis-closeup-0'" in ack.reason
    assert _add_at(agent, "A~mitosis-closeup-0", t=2).accepted  # (the same place again)
    monkeypatch.setattr(plan_module, "CASE_BLIND", False)  # Linux: two folders
    assert _add_at(agent, "A~Mitosis-closeup-0").accepted


def test_two_places_named_but_for_case_in_one_decision_are_refused_where_case_is_ignored(
    agent: ScopeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_module, "CASE_BLIND", True)
    ack = _add_at(agent, "A~x-0", "A~X-0")
    assert not ack.accepted
    assert "added place 'A~x-0'" in ack.reason
    assert _add_at(agent, "A~x-0", t=2).accepted  # (nothing of the refused decision was kept)


# ------------------------------------------------ room for the worker's staging folders


def test_the_longest_name_accepted_leaves_room_for_the_staging_folders(tmp_path: Path) -> None:
    longest = max(n for n in range(200, 300) if folder_name_problem("p" * n) is None)
    folder = tmp_path / ("p" * longest)
    live = ctc_staging(folder)[1]
    old = live.with_name(f"{live.name[: -len('.live')]}.old")  # (`restore_live_masks`'s)
    for f in (folder, *ctc_staging(folder), old):
        f.mkdir()  # (a name of more than 255 bytes: OSError, "File name too long")
    assert longest == 255 - len(".live") - 1  # (no shorter than the staging folders need)
    assert folder_name_problem("p" * 250) == (
        "is 250 bytes long, more than a position's folder name may be (249: the worker "
        "stages its results in folders of the name and 6 bytes more, .<name>.live)"
    )
    assert folder_name_problem("µ" * 124) is None  # (248 bytes: bytes count, not characters)
    assert (folder_name_problem("µ" * 125) or "").startswith("is 250 bytes long")


def test_a_position_too_long_for_its_staging_folders_is_refused(
    sim_profile: HardwareProfile,
) -> None:
    seq = useq.MDASequence(channels=["DAPI"], stage_positions=[{"x": 0, "y": 0, "name": "a" * 250}])
    with pytest.raises(PlanError) as info:
        check_plan(seq, sim_profile)
    assert any("position name 'aaa" in p and "is 250 bytes long" in p for p in info.value.problems)


def test_an_added_place_too_long_for_its_staging_folders_is_refused(agent: ScopeAgent) -> None:
    ack = _add_at(agent, "A~" + "c" * 248)
    assert not ack.accepted
    assert "is 250 bytes long" in ack.reason


# ------------------------------------------------ a worker config saved "UTF-8 with BOM"

BOM = b"\xef\xbb\xbf"  # (Notepad's "UTF-8 with BOM", PowerShell 5.1's Set-Content -Encoding UTF8)


def test_a_worker_config_with_a_bom_is_read(tmp_path: Path) -> None:
    # a config of maxlen 0: read, it is refused for its maxlen (before: "Unexpected UTF-8 BOM")
    cfg = tmp_path / "cfg.json"
    cfg.write_bytes(BOM + json.dumps({"maxlen": 0}).encode())
    res = run_cli("worker", str(tmp_path / "no-agent-yet"), "--config", str(cfg), "--json")
    assert res.returncode == 2, res.stderr[-2000:]
    error = json.loads(res.stdout)["error"]
    assert error.startswith(f"worker config {cfg}"), error
    assert "maxlen must be >= 1" in error


def test_a_recordings_worker_config_with_a_bom_is_read_by_its_replay(tmp_path: Path) -> None:
    prof = load_profile("sim").with_square_sensor(64)
    rec = tmp_path / "rec"
    run_simulated(prof, demo_sequence(prof, timepoints=1, positions=1), rec, seed=1)
    saved = rec / "results" / "worker-config.json"
    saved.parent.mkdir(exist_ok=True)
    saved.write_bytes(BOM + WorkerConfig(stain_every=3).to_json().encode())
    run_replay(rec, tmp_path / "out")
    replayed = json.loads((tmp_path / "out" / "results" / "worker-config.json").read_text())
    assert replayed["stain_every"] == 3
    saved.write_bytes(BOM + json.dumps({"maxlen": "256"}).encode())
    with pytest.raises(DatasetError, match=r"worker-config\.json: worker config: maxlen must be"):
        run_replay(rec, tmp_path / "out2")


# ------------------------------------------------ overlay.json while the worker replaces it


def test_the_first_read_of_overlay_json_is_retried_while_windows_refuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # on Windows a file being replaced cannot be opened (PermissionError) for a moment
    file = tmp_path / OVERLAY_FILE
    info = {"v": OVERLAY_VERSION, "endpoint": "tcp://127.0.0.1:5555", "run_id": "r1"}
    file.write_text(json.dumps(info), encoding="utf-8")
    read_bytes = Path.read_bytes
    refused: list[Path] = []

    def once_refused(self: Path) -> bytes:
        if self == file and not refused:
            refused.append(self)
            raise PermissionError(13, "Access is denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", once_refused)
    assert _resolve(tmp_path, timeout_s=0.0) == ("tcp://127.0.0.1:5555", "r1")
    assert refused == [file]


def test_overlay_json_that_stays_unreadable_is_still_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / OVERLAY_FILE).mkdir()  # (a folder in its place: no retrying helps)
    with pytest.raises(LivescopeError, match="cannot read"):
        _resolve(tmp_path, timeout_s=0.0)
