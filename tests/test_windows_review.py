"""Windows portability review: what works on Linux and fails or misbehaves on Windows."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import useq

import livescope.schema._plan as plan_module
from livescope.schema import AddEvents, DecisionAck, ProfileError, clock_ns, load_profile
from livescope.scope import ScopeAgent, SimulatedMicroscope

# ------------------------------------------------ an added place's name is a folder's


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


def _add_at(agent: ScopeAgent, name: str, t: int = 1) -> DecisionAck:
    """Send a decision adding one frame at x/y of its own, filed under ``name``."""
    event = useq.MDAEvent(
        index={"t": t}, channel={"config": "DAPI"}, pos_name=name, x_pos=10.0, y_pos=0.0
    )
    decision = AddEvents(run_id=agent.run_id, delay_s=600, events=[event])
    return agent._on_decision(decision, clock_ns())


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../../outside", id="out-of-the-results-folder"),
        pytest.param("A/close-up", id="a-folder-inside-another"),
        pytest.param(".A.live", id="a-staging-folders-name"),
    ],
)
def test_an_added_place_whose_name_names_no_folder_of_its_own_is_refused(
    agent: ScopeAgent, name: str
) -> None:
    # the worker keeps each position's results in results/ctc/<position>: "../../outside"
    # wrote them outside the run folder, "A/close-up" inside A's
    ack = _add_at(agent, name)
    assert not ack.accepted
    assert repr(name) in ack.reason
    assert "folder" in ack.reason
    assert _add_at(agent, "A~close-up-1", t=2).accepted  # (a rule's close-up name is one)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("site:1", id="colon"),
        pytest.param("cell*", id="star"),
        pytest.param("why?", id="question-mark"),
        pytest.param("CON", id="device-name"),
        pytest.param("nul.txt", id="device-name-with-extension"),
        pytest.param("close-up.", id="trailing-dot"),
    ],
)
def test_an_added_place_whose_name_windows_refuses_is_refused_there(
    agent: ScopeAgent, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # accepted, its close-up's results failed on Windows ("storing results failed": the
    # worker restarted on the same field until it gave up on the run)
    monkeypatch.setattr(sys, "platform", "win32")  # (folder_name_problem's own branch)
    ack = _add_at(agent, name)
    monkeypatch.undo()
    assert not ack.accepted
    assert repr(name) in ack.reason


def test_an_added_place_named_as_a_plan_position_but_for_case_is_refused_where_case_is_ignored(
    agent: ScopeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    # on Windows "a" and the plan's "A" are one folder: the close-up's masks overwrote A's
    monkeypatch.setattr(plan_module, "CASE_BLIND", True)
    ack = _add_at(agent, "a")
    assert not ack.accepted
    assert "'A'" in ack.reason
    monkeypatch.setattr(plan_module, "CASE_BLIND", False)
    assert _add_at(agent, "a", t=2).accepted  # (Linux: two folders)


# ------------------------------------------------ Windows paths in a YAML file's double quotes


def _rig_with_config(tmp_path: Path, line: str) -> Path:
    """Write the widefield example profile with its micromanager_config line replaced."""
    example = Path(__file__).parents[1] / "hardware_profiles" / "widefield-2048-scmos.yaml"
    text = example.read_text(encoding="utf-8")
    lines = [line if ln.startswith("micromanager_config:") else ln for ln in text.splitlines()]
    path = tmp_path / "rig.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_windows_path_whose_backslashes_yaml_refuses_says_how_to_write_it(
    tmp_path: Path,
) -> None:
    # a bare "unknown escape character 'M'" did not say that the path was the problem
    path = _rig_with_config(
        tmp_path, r'micromanager_config: "C:\Program Files\Micro-Manager-2.0\rig.cfg"'
    )
    with pytest.raises(ProfileError, match="unknown escape character") as err:
        load_profile(path)
    assert "single quotes" in str(err.value)
    assert "C:/" in str(err.value)


@pytest.mark.parametrize(
    "name", ["実験\u3000データ", "\u0622\u0632\u0645\u0627\u06cc\u0634\u200c\u0647\u0627"]
)
def test_a_folder_name_with_a_wide_space_or_joiner_is_kept(tmp_path: Path, name: str) -> None:
    # (not YAML's escapes: a Japanese full-width space, a Persian zero-width non-joiner)
    path = _rig_with_config(tmp_path, f"micromanager_config: 'D:/{name}/ti2.cfg'")
    assert str(load_profile(path).micromanager_config) == f"D:/{name}/ti2.cfg"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(r'"D:\rigs\ti2.cfg"', id="carriage-return"),
        pytest.param(r'"D:\backup\ti2.cfg"', id="backspace"),
        pytest.param(r'"D:\new\ti2.cfg"', id="newline"),
        # (read as invisible characters, U+2029, U+2028, U+0085, U+00A0: they passed)
        pytest.param(r'"C:\Program Files/Micro-Manager-2.0/rig.cfg"', id="paragraph-separator"),
        pytest.param(r'"D:\Labs/ti2.cfg"', id="line-separator"),
        pytest.param(r'"D:\Nikon/ti2.cfg"', id="next-line"),
        pytest.param(r'"D:\_rigs/ti2.cfg"', id="no-break-space"),
    ],
)
def test_a_windows_path_that_yaml_read_as_escapes_is_refused_with_how_to_write_it(
    tmp_path: Path, value: str
) -> None:
    # "\r", "\b", "\n" in double quotes are YAML escapes: the path was read with a control
    # character in it and later "not found", printed with a line break in the middle
    path = _rig_with_config(tmp_path, f"micromanager_config: {value}")
    with pytest.raises(ProfileError, match="micromanager_config") as err:
        load_profile(path)
    assert "single quotes" in str(err.value)
    plain = _rig_with_config(tmp_path, "micromanager_config: 'D:\\rigs\\ti2.cfg'")
    assert str(load_profile(plain).micromanager_config) == "D:\\rigs\\ti2.cfg"


def test_the_worker_waits_for_fields_in_slices_and_takes_one_that_comes_late() -> None:
    # (a wait without a timeout cannot be interrupted by Ctrl+C on Windows before Python
    # 3.14: the worker waits in half-second slices, and an item after several is taken)
    import queue
    import threading

    from livescope.pipeline._worker import _take

    q: queue.Queue[object] = queue.Queue()
    threading.Timer(1.2, q.put, args=("field",)).start()
    assert _take(q) == "field"
    q.put(None)
    assert _take(q) is None
