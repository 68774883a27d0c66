"""Review of the simulated scope's devices and the recorded-dataset model: each a bug fixed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livescope.record import DatasetError, FrameKey, RecordedFrame, open_dataset
from livescope.record._dataset import refuse_repeated_keys
from livescope.scope import SimulatedMicroscope
from livescope.scope._sim import META_SAMPLE_TIME

from ..conftest import write_ndtiff


def test_a_snap_taken_while_a_burst_runs_leaves_the_bursts_sample_times(
    sim: SimulatedMicroscope,
) -> None:
    # the burst and a snap (snapImage runs the camera's sequence for one frame) shared one
    # frame counter: a snap between two frames of a burst reset it, and the burst's next
    # frame showed the sample at its first frame's time again
    core, camera = sim.core, sim._camera
    sim.time_acceleration = 1e12  # (no pacing waits)
    sim.set_time(60.0)
    core.setExposure(50.0)
    period_s = max(0.05, 1.0 / sim.profile.camera.max_fps)
    metas: list[Any] = []

    def get_buffer(shape: Sequence[int], dtype: Any) -> np.ndarray:
        if metas:  # between the burst's frames, where another thread may snap
            core.snapImage()
        return np.empty(tuple(shape), dtype)

    metas.extend(camera.start_sequence(3, get_buffer))
    times = [float(m[META_SAMPLE_TIME]) for m in metas]
    assert times == pytest.approx([60.0 + k * period_s for k in range(3)])


@pytest.mark.parametrize(
    ("roi", "ok"),
    [
        pytest.param((10.5, 4, 64, 32), False, id="fraction-of-a-pixel"),
        pytest.param((10, 4, 64, 32.25), False, id="fractional-height"),
        pytest.param((10.0, 4.0, 64.0, 32.0), True, id="whole-pixels-as-floats"),
    ],
)
def test_a_camera_roi_is_whole_pixels(
    sim: SimulatedMicroscope, roi: tuple[float, float, float, float], ok: bool
) -> None:
    # a ROI of a fraction of a pixel was kept (Micro-Manager's core takes ints): every
    # snap after it failed slicing the frame ("slice indices must be integers")
    core = sim.core
    full = core.getROI()
    if not ok:
        with pytest.raises(ValueError, match="whole pixels"):
            core.setROI(*roi)
        assert core.getROI() == full
    else:
        core.setROI(*roi)
        assert core.getROI() == [int(v) for v in roi]
    core.snapImage()
    *_, w, h = core.getROI()
    assert core.getImage().shape == (h, w)


def test_the_stages_refuse_an_adapter_origin_they_cannot_keep(sim: SimulatedMicroscope) -> None:
    # setAdapterOrigin(XY) returned as if the current position were now the one given,
    # and the stages went on reporting the old one (their setOrigin already refused)
    core = sim.core
    core.setXYPosition(100.0, 50.0)
    core.setPosition(5.0)
    with pytest.raises(NotImplementedError, match="absolute sample coordinates"):
        core.setAdapterOriginXY(0.0, 0.0)
    with pytest.raises(NotImplementedError, match="absolute sample coordinates"):
        core.setAdapterOrigin(0.0)
    assert tuple(core.getXYPosition()) == (100.0, 50.0)
    assert core.getPosition() == 5.0


@pytest.mark.parametrize(
    "origins",
    [pytest.param(("", ""), id="no-origin"), pytest.param(("t1.tif", "t1.tif"), id="one-origin")],
)
def test_two_frames_of_one_key_are_refused_whatever_their_origins(
    tmp_path: Path, origins: tuple[str, str]
) -> None:
    # frames were told apart by their origin text: two frames of one key and the same
    # origin (or none, the default) were let through, and a replay served one as both
    key = FrameKey("p0", 1, "BF")
    frames = [RecordedFrame(key, (8, 8), "uint16", origin=o) for o in origins]
    with pytest.raises(DatasetError, match=r"are both .*t=1"):
        refuse_repeated_keys(tmp_path, frames, "t")


@pytest.mark.parametrize(
    ("odd", "match"),
    [
        pytest.param(
            np.full((8, 8), 300, np.uint16), r"8 × 8 px uint16, not 8 × 8 px uint8", id="dtype"
        ),
        pytest.param(
            np.full((6, 10), 5, np.uint8), r"6 × 10 px uint8, not 8 × 8 px uint8", id="shape"
        ),
    ],
)
def test_a_frame_read_in_another_shape_or_type_than_declared_is_refused_naming_it(
    tmp_path: Path, odd: np.ndarray, match: str
) -> None:
    # an NDTiff dataset declares the first image's shape and type for every frame: a later
    # uint16 frame was read as it is, and a replay copied it into its uint8 camera's
    # buffer, wrapping 300 to 44 without a word
    def image(t: int, p: int, c: int) -> np.ndarray:
        return odd if t == 1 else np.full((8, 8), 7, np.uint8)

    root = write_ndtiff(tmp_path, image, timepoints=2, positions=1)
    with open_dataset(root) as ds:
        first, later = (f for f in ds.frames if f.key.channel == "DAPI")
        assert (first.shape, first.dtype) == (later.shape, later.dtype) == ((8, 8), "uint8")
        assert ds.read(first.key).max() == 7
        with pytest.raises(DatasetError, match=match) as err:
            ds.read(later.key)
        assert str(ds.path) in str(err.value)
        assert later.origin in str(err.value)
