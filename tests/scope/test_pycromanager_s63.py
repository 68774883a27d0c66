"""pycromanager backend (Python engine, simulated microscope): an exposure the camera does
not reach, a camera that drops out, a rig without an XY stage, an off-centre camera ROI,
and the command a missing pycromanager is named with."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import useq

from livescope.record import read_frames
from livescope.schema import LivescopeError
from livescope.scope import PycromanagerAgent, SimulatedMicroscope, to_pycromanager_event
from livescope.scope._pycromanager_core import PYCROMANAGER_REQUIREMENT, require_pycromanager

from .test_pycromanager import _registry_is_clean
from .test_pycromanager import profile as profile
from .test_pycromanager import scope as scope


def _one_place(loops: int = 2, exposure: float = 5.0) -> useq.MDASequence:
    return useq.MDASequence(
        stage_positions=[useq.Position(x=100, y=100, z=0, name="A")],
        channels=[useq.Channel(config="Phase", exposure=exposure)],
        time_plan=useq.TIntervalLoops(interval=0.1, loops=loops),
    )


def _camera_exposure(scope: SimulatedMicroscope, monkeypatch: pytest.MonkeyPatch,
                     reach: Any) -> None:  # fmt: skip
    """Make the camera set ``reach(asked)`` ms when asked for an exposure."""
    core = scope.core
    real = core.setExposure

    def set_exposure(*args: Any) -> None:
        *device, value = args
        real(*device, reach(float(value)))

    monkeypatch.setattr(core, "setExposure", set_exposure)


# ----------------------------------------------------------------- exposure


def test_an_exposure_the_camera_does_not_reach_fails_its_frames(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (a camera whose shortest exposure is 20 ms: the frames were recorded as 5 ms ones,
    # and the run said ok; the mda backend fails them)
    _camera_exposure(scope, monkeypatch, lambda asked: max(asked, 20.0))
    run = tmp_path / "run"
    agent = PycromanagerAgent(scope.core, scope.profile, _one_place(), run, sim=scope, bus="off")
    with pytest.raises(
        LivescopeError, match=r"acquired 0 of 2 events: .*the camera's exposure is 20 ms, not "
        r"the 5 ms asked for"
    ):  # fmt: skip
        agent.run()
    assert read_frames(run) == []
    assert len(agent.engine.failed_events) == 2
    _registry_is_clean()


def test_a_frame_records_the_exposure_the_camera_set(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (a camera rounds an exposure a little: the frame's is the camera's, not the plan's)
    _camera_exposure(scope, monkeypatch, lambda asked: asked + 0.25)
    run = tmp_path / "run"
    summary = PycromanagerAgent(
        scope.core, scope.profile, _one_place(), run, sim=scope, bus="off"
    ).run()
    assert summary["ok"] is True, summary["error"]
    assert [f["exposure_ms"] for f in read_frames(run)] == [5.25, 5.25]


# ----------------------------------------------------------------- camera drop-out


def test_a_camera_that_drops_out_ends_the_run_with_its_error(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pycromanager 1.0.2 retries getImage for ever (about a million calls in 3 s): the
    # run ended at the watchdog, "stalled", and the camera's error was lost
    core = scope.core
    real = core.getImage
    calls = [0]

    def get_image(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] > 2:
            raise RuntimeError("camera not responding (USB disconnected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "getImage", get_image)
    run = tmp_path / "run"
    agent = PycromanagerAgent(
        core, scope.profile, _one_place(loops=6), run, sim=scope, bus="off", watchdog_s=20
    )
    t0 = time.perf_counter()
    with pytest.raises(LivescopeError) as info:
        agent.run()
    message = str(info.value)
    assert "RuntimeError: camera not responding (USB disconnected)" in message, message
    assert "check the camera's connection" in message, message
    assert "stalled" not in message, message
    assert calls[0] < 100, calls[0]  # (a few tries, not a busy loop)
    assert time.perf_counter() - t0 < 20  # (ended before the watchdog)
    assert len(read_frames(run)) == 2
    _registry_is_clean()


# ----------------------------------------------------------------- no XY stage


def test_a_rig_without_an_xy_stage_images_its_one_place(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    # (the agent accepts a plan at one x/y on a rig without an XY stage, as the mda backend
    # does; pycromanager refused every event that gave x/y, with a bare Exception)
    scope.core.setXYStageDevice("")
    run = tmp_path / "run"
    summary = PycromanagerAgent(
        scope.core, scope.profile, _one_place(), run, sim=scope, bus="off"
    ).run()
    assert summary["ok"] is True, summary["error"]
    frames = read_frames(run)
    assert [(f["x_um"], f["y_um"]) for f in frames] == [(100.0, 100.0)] * 2
    _registry_is_clean()


def test_to_pycromanager_event_leaves_x_and_y_out_without_an_xy_stage() -> None:
    event = useq.MDAEvent(index={"t": 0}, x_pos=1.0, y_pos=2.0, z_pos=3.0)
    assert (to_pycromanager_event(event)["x"], to_pycromanager_event(event)["y"]) == (1.0, 2.0)
    out = to_pycromanager_event(event, xy_stage=False)
    assert "x" not in out
    assert "y" not in out
    assert out["z"] == 3.0


def test_an_error_of_pycromanager_itself_is_a_livescope_error_naming_it(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (pycromanager raises bare Exceptions: the run raised builtins.Exception)
    from pycromanager.acquisition.acq_eng_py.internal.engine import Engine

    def refuse(self: Any, event: Any) -> None:
        raise Exception("Event requires an x position, but no Core-XYStage device is set")

    monkeypatch.setattr(Engine, "check_for_default_devices", refuse)
    agent = PycromanagerAgent(
        scope.core, scope.profile, _one_place(), tmp_path / "run", sim=scope, bus="off"
    )
    with pytest.raises(LivescopeError) as info:
        agent.run()
    message = str(info.value)
    assert "pycromanager" in message, message
    assert "Exception: Event requires an x position, but no Core-XYStage" in message, message
    _registry_is_clean()


# ----------------------------------------------------------------- camera ROI


def test_frames_of_an_off_centre_roi_carry_its_offset(
    scope: SimulatedMicroscope, tmp_path: Path
) -> None:
    # (the mda backend stamps roi_offset_px; pycromanager's frames were taken as centred)
    scope.core.setROI(0, 0, 32, 32)  # the 64x64 sensor's top-left quarter
    run = tmp_path / "run"
    PycromanagerAgent(scope.core, scope.profile, _one_place(), run, sim=scope, bus="off").run()
    frames = read_frames(run)
    assert [f["shape"] for f in frames] == [[32, 32]] * 2
    assert [f["roi_offset_px"] for f in frames] == [[-16.0, -16.0]] * 2


def test_frames_of_the_whole_sensor_are_centred(scope: SimulatedMicroscope, tmp_path: Path) -> None:
    run = tmp_path / "run"
    PycromanagerAgent(scope.core, scope.profile, _one_place(), run, sim=scope, bus="off").run()
    assert [f["roi_offset_px"] for f in read_frames(run)] == [[0.0, 0.0]] * 2


# ----------------------------------------------------------------- install hint


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX quoting")
def test_a_missing_pycromanager_is_named_with_this_pythons_pip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (a bare "pip install" may be another Python's)
    monkeypatch.setitem(sys.modules, "ndstorage", None)  # (as if not installed)
    with pytest.raises(LivescopeError) as info:
        require_pycromanager("python")
    command = (
        f"{shlex.quote(sys.executable)} -m pip install {shlex.quote(PYCROMANAGER_REQUIREMENT)}"
    )
    assert str(info.value).endswith(command), str(info.value)


def test_java_frames_take_the_roi_from_micro_managers_tags(
    scope: SimulatedMicroscope, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # (the Java backend's core is over the bridge: the ROI comes from the frame's tags)
    agent = PycromanagerAgent(scope.core, scope.profile, _one_place(), tmp_path / "run", bus="off")
    tags = {"ROI-X-start": 0, "ROI-Y-start": 0, "Binning": "1"}
    assert agent._roi_from_tags(tags, (32, 32)) == (-16.0, -16.0)
    assert agent._roi_from_tags({"Binning": "2x2"}, (32, 32)) == (0.0, 0.0)  # (whole, binned)
    with caplog.at_level("WARNING", logger="livescope"):
        assert agent._roi_from_tags({}, (32, 32)) is None
        assert agent._roi_from_tags({}, (32, 32)) is None
    warned = [r for r in caplog.records if "carry no ROI position" in r.getMessage()]
    assert len(warned) == 1, caplog.text
    for sink in agent.sinks:  # (never run: closed as a run refused at its start is)
        sink.close()
    agent._close()
