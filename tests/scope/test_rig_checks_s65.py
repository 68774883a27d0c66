"""A Micro-Manager rig's devices checked at the start and driven in the run.

The rig is a ``UniMMCore`` with Python devices standing in for a real rig's
(labelled as in a user's cfg, not as the profile names them): the agent and
engine run on it unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import useq
import zarr
from pymmcore_plus.experimental.unicore import (
    ShutterDevice,
    SimpleCameraDevice,
    StageDevice,
    StateDevice,
    UniMMCore,
    XYStageDevice,
)

from livescope.record import read_frames
from livescope.schema import HardwareProfile, LivescopeError, load_profile
from livescope.scope import ScopeAgent, run_micromanager

CHANNELS = ["Phase", "DAPI", "GFP", "mCherry", "Cy5"]


class _Shutter(ShutterDevice):
    def __init__(self) -> None:
        super().__init__()
        self.is_open = False

    def get_open(self) -> bool:
        return self.is_open

    def set_open(self, open: bool) -> None:
        self.is_open = bool(open)


class _Camera(SimpleCameraDevice):
    """A monochrome camera; it notes whether the shutter was open for each exposure."""

    def __init__(self, shutter: _Shutter | None = None) -> None:
        super().__init__()
        self._exposure = 10.0
        self.shutter = shutter
        self.lit: list[bool] = []

    def get_exposure(self) -> float:
        return self._exposure

    def set_exposure(self, exposure: float) -> None:
        self._exposure = float(exposure)

    def sensor_shape(self) -> tuple[int, int]:
        return (64, 80)

    def dtype(self) -> Any:
        return np.uint16

    def snap(self, buffer: Any) -> dict[str, Any]:
        self.lit.append(self.shutter is not None and self.shutter.is_open)
        buffer[:] = 1000
        return {}


class _ColourCamera(_Camera):
    """An RGB camera (brightfield and histology rigs)."""

    def sensor_shape(self) -> tuple[int, int, int]:  # type: ignore[override]
        return (64, 80, 3)

    def dtype(self) -> Any:
        return np.uint8

    def snap(self, buffer: Any) -> dict[str, Any]:
        buffer[:] = 100
        return {}


class _BinningCamera(_Camera):
    """A camera with Micro-Manager's Binning property: frames binned on the sensor."""

    def __init__(self) -> None:
        super().__init__()
        self._binning = 1

    def get_binning(self) -> int:
        return self._binning

    def set_binning(self, value: Any) -> None:
        self._binning = int(str(value)[0])

    def sensor_shape(self) -> tuple[int, int]:
        return (2048 // self._binning, 2048 // self._binning)


class _XY(XYStageDevice):
    def __init__(self) -> None:
        super().__init__()
        self._xy = (0.0, 0.0)

    def set_position_um(self, x: float, y: float) -> None:
        self._xy = (x, y)

    def get_position_um(self) -> tuple[float, float]:
        return self._xy

    def set_origin_x(self) -> None:
        pass

    def set_origin_y(self) -> None:
        pass

    def home(self) -> None:
        pass

    def stop(self) -> None:
        pass


class _Z(StageDevice):
    def __init__(self) -> None:
        super().__init__()
        self._z = 0.0

    def set_position_um(self, val: float) -> None:
        self._z = val

    def get_position_um(self) -> float:
        return self._z

    def home(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def set_origin(self) -> None:
        pass


class _Wheel(StateDevice):
    def __init__(self) -> None:
        super().__init__(dict(enumerate(CHANNELS)))
        self._state = 0

    def get_state(self) -> int:
        return self._state

    def set_state(self, position: int) -> None:
        self._state = int(position)


class _AutofocusCore(UniMMCore):
    """A rig whose hardware autofocus ("PFS") works; its offset drive is "PFSOffset"."""

    def getAutoFocusDevice(self) -> Any:
        return "PFS"

    def fullFocus(self) -> None:
        pass

    def enableContinuousFocus(self, enable: bool) -> None:
        pass


class _PresetShutterCore(UniMMCore):
    """A rig whose channel presets set Core-Shutter (DAPI: the lamp's; Phase: an LED, none).

    As Micro-Manager does for a preset with a Core-Shutter setting (``UniMMCore``'s
    C++ side cannot set it to a Python shutter).
    """

    shutters: ClassVar[dict[str, str]] = {"DAPI": "Shutter", "Phase": ""}

    def setConfig(self, groupName: str, configName: str) -> None:
        super().setConfig(groupName, configName)
        if groupName == "Channel":
            self.setShutterDevice(self.shutters.get(configName, ""))


def _rig_core(
    camera: _Camera,
    *,
    shutter: _Shutter | None = None,
    core_camera: bool = True,
    core: UniMMCore | None = None,
) -> UniMMCore:
    """Return a core with the rig's devices, labelled as in a user's cfg (no pixel size)."""
    core = core or UniMMCore()
    devices: dict[str, Any] = {"Camera": camera, "XY": _XY(), "Z": _Z(), "Wheel": _Wheel()}
    devices |= {"PFSOffset": _Z()} if isinstance(core, _AutofocusCore) else {}
    devices |= {"Shutter": shutter} if shutter is not None else {}
    for label, dev in devices.items():
        core.loadPyDevice(label, dev)
    core.initializeAllDevices()
    core.defineConfigGroup("Channel")
    for name in CHANNELS:
        core.defineConfig("Channel", name, "Wheel", "Label", name)
    core.setChannelGroup("Channel")
    if core_camera:
        core.setCameraDevice("Camera")
    core.setXYStageDevice("XY")
    core.setFocusDevice("Z")
    if shutter is not None:
        core.setShutterDevice("Shutter")
    core.setAutoShutter(True)
    return core


def _rig(cfg: str = "C:/rigs/ti2.cfg") -> HardwareProfile:
    return load_profile("widefield-2048-scmos").replace(micromanager_config=cfg)


def _plan(*channels: str, loops: int = 1) -> useq.MDASequence:
    return useq.MDASequence(
        channels=[useq.Channel(config=c, exposure=10.0) for c in channels],
        stage_positions=[(0.0, 0.0, 50.0)],
        time_plan=useq.TIntervalLoops(interval=0.05, loops=loops) if loops > 1 else None,
    )


def _not_blanked(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not blanked" in r.getMessage()]


def test_a_rig_without_a_shutter_images_its_frames_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # an LED or brightfield rig (no Core-Shutter): pymmcore-plus's engine closed "the"
    # shutter after each snap (autoshutter on) and the run died at its first frame
    # (RuntimeError: No device with label "")
    caplog.set_level(logging.WARNING, logger="livescope")
    core = _rig_core(_Camera())
    assert core.getShutterDevice() == ""
    summary = ScopeAgent(core, _rig(), _plan("DAPI", loops=2), tmp_path, bus="off").run()
    assert summary["ok"], summary["error"]
    assert summary["frames_written"] == 2
    assert len(read_frames(tmp_path)) == 2
    assert core.getAutoShutter()  # (as it was)
    [warning] = _not_blanked(caplog)
    assert "Core-Shutter" in warning
    assert "exposures only" in warning


def test_a_preset_that_sets_the_shutter_opens_it_for_its_exposures_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the shutter is decided per event, once its preset is applied: a preset may set
    # Core-Shutter (DAPI: the lamp's shutter) or clear it (Phase: an LED, none)
    caplog.set_level(logging.WARNING, logger="livescope")
    shutter = _Shutter()
    camera = _Camera(shutter)
    core = _rig_core(camera, shutter=shutter, core=_PresetShutterCore())
    summary = ScopeAgent(core, _rig(), _plan("Phase", "DAPI", loops=2), tmp_path, bus="off").run()
    assert summary["ok"], summary["error"]
    assert summary["frames_written"] == 4
    assert camera.lit == [False, True, False, True]  # Phase, DAPI; Phase, DAPI
    assert not shutter.is_open  # closed after each DAPI frame
    assert len(_not_blanked(caplog)) == 1


def test_a_core_without_a_camera_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    # no Core-Camera: every event failed, with "the camera's exposure is 0 ms"
    core = _rig_core(_Camera(), core_camera=False)
    with pytest.raises(LivescopeError, match=r"no camera.*set Core-Camera in the config"):
        ScopeAgent(core, _rig(), _plan("Phase"), tmp_path / "run", bus="off")
    assert not (tmp_path / "run").exists()


def test_a_colour_camera_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    # its frames are (height, width, 3): the run failed at the first frame written
    core = _rig_core(_ColourCamera())
    assert core.getNumberOfComponents() == 3
    with pytest.raises(LivescopeError, match=r"'Camera' gives 3 components per pixel \(colour"):
        ScopeAgent(core, _rig(), _plan("Phase"), tmp_path / "run", bus="off")
    assert not (tmp_path / "run").exists()


def test_an_autofocus_offset_device_micro_manager_lacks_is_refused(tmp_path: Path) -> None:
    # each autofocus failed ("No device with label") and the frames were taken at the
    # focus the rig had, the run found out only as it went
    core = _rig_core(_Camera(), shutter=_Shutter(), core=_AutofocusCore())

    def plan(device: str) -> useq.MDASequence:
        af = useq.AxesBasedAF(autofocus_device_name=device, autofocus_motor_offset=25, axes=("p",))
        return _plan("Phase").replace(autofocus_plan=af)

    with pytest.raises(LivescopeError) as err:
        ScopeAgent(core, _rig(), plan("PFS-Offset"), tmp_path / "run", bus="off")
    assert "autofocus device 'PFS-Offset'" in str(err.value)
    assert "'PFSOffset'" in str(err.value)  # the loaded one meant
    assert not (tmp_path / "run").exists()
    summary = ScopeAgent(core, _rig(), plan("PFSOffset"), tmp_path / "ok", bus="off").run()
    assert summary["ok"], summary["error"]
    assert summary["autofocus_failed"] == 0


def test_binned_frames_without_a_calibration_are_stamped_with_the_binned_pixel_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # they were stamped with the unbinned 0.325 µm: close-ups and recentring moved the
    # stage half as far as the frame showed
    caplog.set_level(logging.WARNING, logger="livescope")
    core = _rig_core(_BinningCamera(), shutter=_Shutter())
    core.setProperty("Camera", "Binning", "2")
    assert (core.getImageWidth(), core.getPixelSizeUm()) == (1024, 0.0)
    rig = _rig()
    px = rig.objective.pixel_size_um * 2
    ScopeAgent(core, rig, _plan("Phase"), tmp_path, bus="off").run()
    assert [f["pixel_size_um"] for f in read_frames(tmp_path)] == [px]
    attrs: Any = zarr.open_group(tmp_path / "data.ome.zarr", mode="r")["0"].attrs.asdict()
    scale = attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert scale["scale"][-2:] == [px, px]
    assert f"times the camera's binning 2: {px:g} µm" in caplog.text


def test_a_config_that_does_not_load_points_to_mmcore_s_own_commands(tmp_path: Path) -> None:
    # it said `mmcore find`, which pymmcore-plus has no such command for
    cfg = tmp_path / "rig.cfg"
    cfg.write_text("Device,Camera,NoSuchAdapter,Cam\nProperty,Core,Initialize,1\n")
    with pytest.raises(LivescopeError) as err:
        run_micromanager(_rig(str(cfg)), _plan("Phase"), tmp_path / "run", bus="off")
    message = str(err.value)
    assert "mmcore find" not in message
    assert "`mmcore list`" in message
    assert "`mmcore use PATH`" in message


def test_device_labels_other_than_the_profile_s_are_warned_of_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the profile's travel limits may describe another device than the cfg's
    caplog.set_level(logging.WARNING, logger="livescope")
    core = _rig_core(_Camera(), shutter=_Shutter())
    rig = _rig("C:/rigs/ti2.cfg")
    ScopeAgent(core, rig, _plan("Phase"), tmp_path / "a", bus="off").close()
    labels = [r.getMessage() for r in caplog.records if "device labels" in r.getMessage()]
    assert len(labels) == 1
    assert "C:/rigs/ti2.cfg" in labels[0]
    for profile_name, core_label in [
        ("HamamatsuHam_DCAM", "Camera"), ("XYStage", "XY"), ("ZDrive", "Z")
    ]:  # fmt: skip
        assert f"{profile_name!r}, the core's {core_label!r}" in labels[0]
    # the same labels: no warning
    caplog.clear()
    named = rig.replace(
        camera=rig.camera.replace(name="Camera"),
        stages=rig.stages.replace(
            xy=rig.stages.xy.replace(name="XY"), z=rig.stages.z.replace(name="Z")
        ),
    )
    ScopeAgent(core, named, _plan("Phase"), tmp_path / "b", bus="off").close()
    assert not [r for r in caplog.records if "device labels" in r.getMessage()]
