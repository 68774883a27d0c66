"""pycromanager backend (Python engine, simulated microscope): an exposure the camera does
not reach, a camera that drops out, a rig without an XY stage, an off-centre camera ROI,
and the command a missing pycromanager is named with."""

from __future__ import annotations

import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import useq

from livescope.record import read_frames
from livescope.schema import LivescopeError
from livescope.scope import PycromanagerAgent, SimulatedMicroscope, to_pycromanager_event
from livescope.scope._engine import roi_offset_px
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
    # (a failed read waits 1 ms before pycromanager asks again, and the camera is given up
    # after 1 s of failures: about 1000 tries, where the busy loop made ~300000 a second)
    assert calls[0] < 1100, calls[0]
    assert time.perf_counter() - t0 < 20  # (ended before the watchdog)
    assert len(read_frames(run)) == 2
    _registry_is_clean()


def test_a_camera_whose_image_is_late_gives_every_frame(
    scope: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (an image readable a few ms after its snap: pycromanager's engine asks again at once,
    # so "3 failures in a row" came within ~14 us and aborted a run that used to get them
    # all; here each image is there at its 5th read, whatever the time between reads)
    core = scope.core
    real_snap, real_get = core.snapImage, core.getImage
    since_snap, failed = [0], [0]
    threads: set[str] = set()

    def snap(*args: Any, **kwargs: Any) -> Any:
        since_snap[0] = 0
        threads.add(threading.current_thread().name)
        return real_snap(*args, **kwargs)

    def get_image(*args: Any, **kwargs: Any) -> Any:
        since_snap[0] += 1
        if since_snap[0] <= 4:
            failed[0] += 1
            threads.add(threading.current_thread().name)
            raise RuntimeError("image not yet read out")
        return real_get(*args, **kwargs)

    monkeypatch.setattr(core, "snapImage", snap)
    monkeypatch.setattr(core, "getImage", get_image)
    run = tmp_path / "run"
    summary = PycromanagerAgent(
        core, scope.profile, _one_place(loops=4), run, sim=scope, bus="off", watchdog_s=20
    ).run()
    assert summary["ok"] is True, summary["error"]
    assert len(read_frames(run)) == 4
    assert failed[0] == 16  # (each image was late)
    # (the failed reads, and the pause after each, are on pycromanager's engine thread,
    # the one that snaps: never the caller's)
    assert len(threads) == 1, threads
    assert threading.current_thread().name not in threads, threads


def test_the_camera_is_given_up_after_1_s_or_twice_its_exposure() -> None:
    from livescope.scope._pycromanager import _image_patience_s

    assert _image_patience_s(5.0) == 1.0
    assert _image_patience_s(None) == 1.0  # (the camera's exposure unknown)
    assert _image_patience_s(2000.0) == 4.0  # (a long exposure's image can come that late)


def test_a_failed_image_read_pauses_before_pycromanager_asks_again(
    scope: SimulatedMicroscope, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (pycromanager 1.0.2 calls a failing get_tagged_image again at once: 100% of a core)
    from livescope.scope._pycromanager_core import adapt_core

    def get_image(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no image")

    monkeypatch.setattr(scope.core, "getImage", get_image)
    seen: list[str] = []
    with adapt_core(scope.core, on_error=lambda name, exc: seen.append(name)) as core:
        adapted: Any = core  # (get_tagged_image is bound on the instance)
        t0 = time.perf_counter()
        for _ in range(20):
            with pytest.raises(RuntimeError, match="no image"):
                adapted.get_tagged_image(0, "Camera", 64, 64)
        assert time.perf_counter() - t0 >= 20 * 0.001  # (1 ms each, at least)
    assert seen == ["get_tagged_image"] * 20
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
    tags = {"ROI-X-start": 0, "ROI-Y-start": 0, "Binning": "1"}  # (sequence-acquired images)
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


def _mmcorej_tags(core: Any, binning: int) -> dict[str, Any]:
    """The tags MMCoreJ's getTaggedImage gives a snap (AcqEngJ's): TaggedImageCreator's.

    ``binning`` is the camera's "Binning" property (the simulated camera's is read-only 1).
    """
    return {
        "ROI": "-".join(str(v) for v in core.getROI()),  # (getROITag: "x-y-w-h")
        "Width": core.getImageWidth(),
        "Height": core.getImageHeight(),
        "Binning": str(binning),
        "Camera": core.getCameraDevice(),
        "PixelType": "GRAY16",
    }


@pytest.mark.parametrize(
    ("binning", "roi", "offset"),
    [(1, (0, 0, 32, 32), (-16.0, -16.0)), (1, (32, 16, 32, 16), (16.0, -8.0)),
     (2, (16, 0, 16, 16), (8.0, -8.0))],
)  # fmt: skip
def test_java_snaps_take_the_roi_from_mmcorejs_roi_tag(
    scope: SimulatedMicroscope, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    binning: int, roi: tuple[int, int, int, int], offset: tuple[float, float],
) -> None:  # fmt: skip
    # (AcqEngJ snaps with core.getTaggedImage: its tags carry "ROI": "x-y-w-h", never
    # ROI-X-start, which only sequence-acquired images get: the offset was never read)
    core = scope.core
    core.setROI(*roi)
    tags = _mmcorej_tags(core, binning)
    assert "ROI-X-start" not in tags
    agent = PycromanagerAgent(core, scope.profile, _one_place(), tmp_path / "run", bus="off")
    try:
        with caplog.at_level("WARNING", logger="livescope"):
            assert agent._roi_from_tags(tags, (roi[3], roi[2])) == offset
        assert "carry no ROI position" not in caplog.text
        # ("ROI" first; ROI-X-start where "ROI" cannot be read)
        both = {**tags, "ROI-X-start": 0, "ROI-Y-start": 0}
        assert agent._roi_from_tags(both, (roi[3], roi[2])) == offset
        assert agent._roi_from_tags({**both, "ROI": "bad"}, (32, 32)) == roi_offset_px(
            (0, 0, 32, 32), binning, scope.profile.camera.sensor_shape_px
        )
        # (a ROI off the profile's sensor: another camera's, said once)
        with caplog.at_level("WARNING", logger="livescope"):
            assert agent._roi_from_tags({**tags, "ROI": "64-0-32-32"}, (32, 32)) is None
            assert agent._roi_from_tags({**tags, "ROI": "64-0-32-32"}, (32, 32)) is None
        assert caplog.text.count("does not fit the profile's 64x64 px sensor") == 1, caplog.text
    finally:
        for sink in agent.sinks:  # (never run: closed as a run refused at its start is)
            sink.close()
        agent._close()
