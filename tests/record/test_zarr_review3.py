"""The recorder on an index no chunk can hold, a run's display colours, a group the disk refuses."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from livescope.record import ZARR_NAME, OmeZarrWriter, RecordingReader, read_frames
from livescope.schema import LivescopeError
from tests.record.test_zarr import _info
from tests.record.test_zarr_review2 import _files_limited_to


def _frame(value: int) -> np.ndarray:
    return np.full((8, 8), value, np.uint16)


@pytest.mark.parametrize(
    ("t", "z"),
    [
        pytest.param(-1, 0, id="t=-1"),
        pytest.param(0, -1, id="z=-1"),
        pytest.param(2.5, 0, id="t=2.5"),
    ],
)
def test_an_index_no_chunk_can_hold_is_refused_not_read_back_as_another_frame(
    tmp_path: Path, t: float, z: int
) -> None:
    """t=-1 was logged, its chunk written where no reader looks, and t=2's pixels read for it."""
    with OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0) as w:
        for i in range(3):
            w.write(_frame(i + 1), _info(i, i, "BF"))
        bad = _info(3, 0, "BF")
        bad["index"] = {"t": t, "p": 0, "z": z}
        refused = r"frame 3 of position 'p0' has index.*not written"
        with pytest.raises(LivescopeError, match=refused):
            w.write(_frame(99), bad)
        assert w.frames_written == 3
    frames = read_frames(tmp_path)
    assert [f["seq"] for f in frames] == [0, 1, 2]  # not logged as recorded
    reader = RecordingReader(tmp_path)
    assert [int(reader.read(f)[0, 0]) for f in frames] == [1, 2, 3]
    array = zarr.open_group(tmp_path / ZARR_NAME, mode="r")["0/0"]
    assert array.shape == (3, 1, 1, 8, 8)  # the array's metadata as it was


def test_a_run_of_several_channels_is_shown_in_their_colours(tmp_path: Path) -> None:
    """rdefs ``greyscale`` made napari-ome-zarr draw every channel grey (colours ignored)."""
    with OmeZarrWriter(tmp_path, channels=["Phase"], pixel_size_um=1.0) as w:
        w.write(_frame(1), _info(0, 0, "Phase"))
        omero = zarr.open_group(tmp_path / ZARR_NAME, mode="r")["0"].attrs["ome"]["omero"]
        assert omero["rdefs"]["model"] == "greyscale"  # one channel: grey is its colour
        w.write(_frame(2), _info(1, 0, "GFP"))  # a channel added mid-run
        w.write(_frame(3), _info(2, 0, "Phase", pos="B"))
    root = zarr.open_group(tmp_path / ZARR_NAME, mode="r")
    for key in ("0", "1"):
        omero = root[key].attrs["ome"]["omero"]
        assert [c["label"] for c in omero["channels"]] == ["Phase", "GFP"]
        assert len({c["color"] for c in omero["channels"]}) == 2
        assert omero["rdefs"]["model"] == "color"


@pytest.mark.skipif(sys.platform == "win32", reason="file size limits are POSIX")
def test_a_position_whose_group_the_disk_refuses_leaves_no_folder_behind(
    tmp_path: Path,
) -> None:
    """Its empty folder stayed in the store: zarr warned of it each time the store was listed."""
    store = tmp_path / ZARR_NAME
    w = OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0)
    w.write(_frame(1), _info(0, 0, "BF"))
    # the new position's group metadata (about 1.3 kB) does not fit: the disk is full
    with _files_limited_to(500), pytest.raises(OSError, match="too large"):
        w.write(_frame(2), _info(1, 0, "BF", pos="B"))
    assert not (store / "1").exists()
    w.close()
    root = zarr.open_group(store, mode="r")
    assert sorted(root.group_keys()) == ["0"]  # (a leftover folder: a warning, an error here)
    assert root.attrs["livescope"]["positions"] == ["p0"]
    assert [f["seq"] for f in read_frames(tmp_path)] == [0]
