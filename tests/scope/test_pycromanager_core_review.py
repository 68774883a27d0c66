"""pycromanager bridge helpers: NDTiff frames read back, pixel types, image tags."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq

from livescope.schema import HardwareProfile, LivescopeError
from livescope.scope import PycromanagerAgent, SimulatedMicroscope, read_saved_frame
from livescope.scope._pycromanager_core import close_writer_readers


@pytest.fixture
def dataset(tmp_path: Path) -> Iterator[Any]:
    """A writable NDTiff dataset, as `PycromanagerAgent` has pycromanager open one."""
    from ndstorage import NDTiffDataset

    ds = NDTiffDataset(str(tmp_path), name="nd", writable=True)
    ds.initialize({})
    close_writer_readers(ds)
    yield ds
    if not ds.is_finished():
        ds.finish()
    ds.close()


def _frame(dtype: Any, h: int = 6, w: int = 5) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, np.iinfo(dtype).max, size=(h, w), dtype=dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_8_and_16_bit_frames_read_back_as_saved(dataset: Any, dtype: Any) -> None:
    image = _frame(dtype)
    dataset.put_image({"time": 0}, image, {"PixelType": "x", "n": 3})
    pixels, md = read_saved_frame(dataset, {"time": 0})
    assert pixels.dtype == dtype
    np.testing.assert_array_equal(pixels, image)
    assert md == {"PixelType": "x", "n": 3}


def test_a_32_bit_frame_ndtiff_labels_16_bit_is_refused_not_read_as_half_its_bytes(
    dataset: Any,
) -> None:
    # NDTiff has no 32-bit pixel type: a 32-bit frame is indexed "16-bit" with its own
    # width, and its 4 bytes a pixel are on disk; read as 16-bit, the first half of its
    # bytes came back as a frame of the right shape, silently wrong
    image = _frame(np.uint32)
    w = image.shape[1]
    dataset.put_image({"time": 0}, image.view(np.uint16), {"PixelType": "GRAY32"})
    entry = dataset.index[frozenset({"time": 0}.items())]
    assert entry.pixel_type == 1
    entry.image_width = w  # (what the index says of a 32-bit frame)
    with pytest.raises(LivescopeError, match=r"4 bytes a pixel.*16-bit.*'GRAY32'"):
        read_saved_frame(dataset, {"time": 0})


@pytest.mark.parametrize("code", [None, 7], ids=["none", "seven"])
def test_a_pixel_type_ndtiff_does_not_define_is_a_livescope_error_naming_it(
    dataset: Any, code: Any
) -> None:
    # (None raised a bare TypeError; 7 was reported as RGB)
    dataset.put_image({"time": 0}, _frame(np.uint16), {})
    dataset.index[frozenset({"time": 0}.items())].pixel_type = code
    with pytest.raises(LivescopeError, match=rf"NDTiff pixel type {code}, which is none"):
        read_saved_frame(dataset, {"time": 0})


@pytest.mark.parametrize(
    ("image", "named"),
    [
        pytest.param(_frame(np.uint32), "uint32", id="uint32"),
        pytest.param(np.zeros((4, 4), np.float32), "float32", id="float32"),
        pytest.param(np.zeros((4, 4, 3), np.uint8), r"shape \(4, 4, 3\)", id="rgb"),
    ],
)
def test_a_frame_ndstorage_cannot_save_is_refused_naming_its_pixels_and_the_dataset_ends(
    dataset: Any, image: np.ndarray, named: str
) -> None:
    # ndstorage raised "unknown pixel type" once it had opened a file for the frame, and
    # then failed finish() too (OSError), which left pycromanager's acquisition stalled
    with pytest.raises(LivescopeError, match=rf"{named}.*'GRAY32'.*8- and 16-bit"):
        dataset.put_image({"time": 0}, image, {"PixelType": "GRAY32"})
    dataset.finish()
    assert dataset.is_finished()


def test_frames_saved_by_pycromanager_are_tagged_with_their_pixel_type(
    sim_profile: HardwareProfile, tmp_path: Path
) -> None:
    # pycromanager 1.0.2's engine passes no pixel type: every frame was tagged null
    profile = sim_profile.replace(
        camera=sim_profile.camera.replace(sensor_shape_px=(32, 32)).model_dump()
    )
    plan = useq.MDASequence(channels=[useq.Channel(config="Phase", exposure=5.0)])
    with SimulatedMicroscope(profile) as sim:
        summary = PycromanagerAgent(
            sim.core, profile, plan, tmp_path / "run", sim=sim, bus="off", watchdog_s=20
        ).run()
    from ndstorage import Dataset

    nd = Dataset(summary["ndtiff"])
    try:
        assert len(nd.index) == 1
        for key in nd.index:
            pixels, md = read_saved_frame(nd, dict(key))
            assert md["PixelType"] == {np.uint8: "GRAY8", np.uint16: "GRAY16"}[pixels.dtype.type]
    finally:
        nd.close()
