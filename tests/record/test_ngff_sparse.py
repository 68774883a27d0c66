"""OME-Zarr planes never written: a sparse acquisition replays, a recording cut short ends early."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from livescope.record import DatasetError, FrameKey, OmeZarrWriter, open_dataset
from livescope.schema import FrameInfo


def _image(path: Path, shape: tuple[int, int], written: list[tuple[int, int]]) -> Path:
    """An NGFF 0.5 image of (t, c) ``shape`` (z 1, 8x8) with only the planes ``written``."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{"axes": [{"name": a} for a in "tczyx"], "datasets": [{"path": "0"}]}],
        "omero": {"channels": [{"label": "BF"}, {"label": "GFP"}][: shape[1]]},
    }
    array = group.create_array("0", shape=(*shape, 1, 8, 8), chunks=(1, 1, 1, 8, 8), dtype="u2")
    for t, c in written:
        array[t, c, 0] = 10 * t + c + 1
    return path


_ALL = [(t, c) for t in range(4) for c in range(2)]


@pytest.mark.parametrize(
    ("written", "last", "warning"),
    [
        pytest.param([(t, 0) for t in range(4)] + [(1, 1)], 3,
                     "3 of 8 planes never written (t=0 c=1 z=0, t=2 c=1 z=0, t=3 c=1 z=0); "
                     "replaying t=0..3", id="a-channel-imaged-at-one-time-point"),
        pytest.param([p for p in _ALL if p != (3, 0)], 3,
                     "1 of 8 planes never written (t=3 c=0 z=0); replaying t=0..3",
                     id="last-time-point-lacks-a-plane-before-one-written"),
        pytest.param([p for p in _ALL if p != (1, 1)], 3,
                     "1 of 8 planes never written (t=1 c=1 z=0); replaying t=0..3",
                     id="a-plane-missing-in-the-middle"),
        # the recording cut short: handled as before
        pytest.param([p for p in _ALL if p != (3, 1)], 2,
                     "1 of 8 planes never written (t=3 c=1 z=0); replaying t=0..2",
                     id="cut-short-in-the-last-time-point"),
        pytest.param([p for p in _ALL if p[0] < 2], 1,
                     "4 of 8 planes never written (t=2 c=0 z=0, t=2 c=1 z=0, t=3 c=0 z=0, ...); "
                     "replaying t=0..1", id="time-points-after-the-last-written"),
    ],
)  # fmt: skip
def test_only_the_end_of_an_ome_zarr_is_taken_for_a_recording_cut_short(
    tmp_path: Path, written: list[tuple[int, int]], last: int, warning: str
) -> None:
    path = _image(tmp_path / "img.zarr", (4, 2), written)
    with open_dataset(path) as ds:
        assert ds.warnings == [f"{path}: {warning}"]
        keys = [(f.key.t, ds.channels.index(f.key.channel)) for f in ds.frames]
        assert keys == [p for p in sorted(written) if p[0] <= last]
        for f in ds.frames:
            plane = ds.read(f.key)
            assert int(plane[0, 0]) == 10 * f.key.t + ds.channels.index(f.key.channel) + 1


def test_one_time_point_lacking_a_plane_before_one_written_is_replayed(tmp_path: Path) -> None:
    path = _image(tmp_path / "img.zarr", (1, 2), [(0, 1)])
    with open_dataset(path) as ds:
        assert [f.key for f in ds.frames] == [FrameKey("p0", 0, "GFP", 0)]
    cut = _image(tmp_path / "cut.zarr", (1, 2), [(0, 0)])  # the plane after it: cut short
    with pytest.raises(DatasetError, match="no time point was written in full"):
        open_dataset(cut)


def _info(seq: int, position: str, t: int, channel: str) -> FrameInfo:
    return FrameInfo(
        seq=seq, index={"t": t}, position=position, channel=channel, x_um=0.0, y_um=0.0,
        z_um=0.0, exposure_ms=10.0, pixel_size_um=0.5, sample_time_s=60.0 * t,
        runner_time_ms=0.0, t_camera_ns=0, hardware_triggered=False, added_by=None, adler32=0,
        shape=(8, 8), dtype="uint16", event={},
    )  # fmt: skip


def test_a_livescope_recording_of_triggered_frames_replays_every_one_under_its_names(
    tmp_path: Path,
) -> None:
    """GFP and a close-up taken at t=4 only: every frame replays, positions keep their names."""
    run = tmp_path / "run"
    written = [("A", t, "BF") for t in range(10)]
    written[5:5] = [("A", 4, "GFP"), ("A_close", 4, "BF")]
    with OmeZarrWriter(run, channels=["BF"], pixel_size_um=0.5, interval_s=60) as w:
        for seq, (position, t, channel) in enumerate(written):
            w.write(np.full((8, 8), t + 1, np.uint16), _info(seq, position, t, channel))
    store = Path(shutil.move(run / "data.ome.zarr", tmp_path / "shared.ome.zarr"))  # no frame log
    with open_dataset(store) as ds:
        assert ds.format == "ome-zarr"
        assert ds.positions == ["A", "A_close"]
        assert sorted((f.key.position, f.key.t, f.key.channel) for f in ds.frames) == sorted(
            written
        )
        assert all(int(ds.read(f.key)[0, 0]) == f.key.t + 1 for f in ds.frames)
        assert ds.frames[-1].sample_time_s == 540.0
        (warning,) = ds.warnings
        assert warning.endswith("replaying t=0..9")


def _stacks(path: Path, nt: int, blank: set[tuple[int, int]]) -> Path:
    """An NGFF 0.5 image of ``nt`` time points, z-stacks of 3; planes (t, z) in ``blank``
    hold only the fill value (zarr-python then stores no chunk)."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{"axes": [{"name": a} for a in "tzyx"], "datasets": [{"path": "0"}]}],
    }
    array = group.create_array("0", shape=(nt, 3, 8, 8), chunks=(1, 1, 8, 8), dtype="u2")
    for t in range(nt):
        for z in range(3):
            array[t, z] = 0 if (t, z) in blank else 10 * t + z + 1
    return path


def test_a_blank_plane_below_others_in_its_stack_is_replayed_as_blank(tmp_path: Path) -> None:
    # a dark plane of a z-stack (e.g. below the sample) has no chunk: the field was left
    # without it, and the worker analysed it as incomplete
    path = _stacks(tmp_path / "img.zarr", 2, blank={(0, 0), (1, 1)})
    with open_dataset(path) as ds:
        assert [(f.key.t, f.key.z) for f in ds.frames] == [(t, z) for t in (0, 1) for z in range(3)]
        assert int(ds.read(FrameKey("p0", 1, ds.channels[0], 1)).max()) == 0
        assert int(ds.read(FrameKey("p0", 1, ds.channels[0], 2))[0, 0]) == 13
        assert ds.warnings == [f"{path}: 2 z-plane(s) without a chunk below planes written in "
                               "their stack replayed as blank (the array's fill value: "
                               "zarr-python stores no chunk of only the fill value)"]  # fmt: skip
    # planes missing above the last one written in the last stack: a run cut short
    cut = _stacks(tmp_path / "cut.zarr", 2, blank={(1, 2)})
    with open_dataset(cut) as ds:
        assert [(f.key.t, f.key.z) for f in ds.frames] == [(0, z) for z in range(3)]
