"""Review: a replay's plan from a dataset (z stacks), and the simulation's ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.record import Dataset, FrameKey, RecordedFrame, read_frames
from livescope.schema import FrameInfo, LivescopeError, load_profile
from livescope.scope import (
    GroundTruthWriter,
    ReplaySource,
    SimulatedMicroscope,
    replay_sequence,
    run_replay_scope,
)


def _tiff_dataset(
    folder: Path, keys: list[FrameKey], z_um: dict[int, float] | None = None
) -> Dataset:
    """A dataset of one TIFF per frame (pixels: its z index), recorded at ``z_um[z]``."""
    folder.mkdir()
    frames, index = [], {}
    for n, key in enumerate(keys):
        path = folder / f"f{n}.tif"
        tifffile.imwrite(path, np.full((16, 16), 100 + key.z, np.uint16))
        frames.append(
            RecordedFrame(key, (16, 16), "uint16", sample_time_s=60.0 * key.t,
                          x_um=10.0, y_um=20.0, z_um=(z_um or {}).get(key.z), origin=path.name)
        )  # fmt: skip
        index[key] = path
    return Dataset(folder, "tiff", frames, _index=index)


def test_a_z_stack_replays_each_plane_where_it_was_recorded(tmp_path: Path) -> None:
    # a stack 2.5 µm apart around a focus at 50 µm: the plan sent its planes to z = 0, 1,
    # 2 µm (a single plane went to its recorded z), and the replay's frames said so
    recorded = {0: 50.0, 1: 52.5, 2: 55.0}
    keys = [FrameKey("A", t, "DAPI", z) for t in range(2) for z in range(3)]
    ds = _tiff_dataset(tmp_path / "ds", keys, recorded)
    prof = load_profile("replay")
    channels = {"DAPI": "DAPI"}
    seq = replay_sequence(ds, prof, channels)
    source = ReplaySource(ds, channels)
    assert {source.key_of(e): e.z_pos for e in seq} == {k: recorded[k.z] for k in keys}
    summary = run_replay_scope(ds, prof, seq, tmp_path / "run", channels=channels, speed=None)
    assert summary["frames_served"] == len(keys)
    frames = read_frames(tmp_path / "run")
    assert [f["z_um"] for f in frames] == [recorded[k.z] for k in keys]


@pytest.mark.parametrize(
    "planes",
    [
        pytest.param((2,), id="one-plane-at-index-2"),
        pytest.param((1, 2), id="planes-1-and-2"),
    ],
)
def test_every_recorded_plane_is_asked_for(tmp_path: Path, planes: tuple[int, ...]) -> None:
    # a dataset whose only plane has z index 2: the plan had no z axis, asked for plane 0
    # of every field, and the replay served nothing
    keys = [FrameKey("A", t, "DAPI", z) for t in range(2) for z in planes]
    ds = _tiff_dataset(tmp_path / "ds", keys)
    channels = {"DAPI": "DAPI"}
    seq = replay_sequence(ds, load_profile("replay"), channels)
    source = ReplaySource(ds, channels)
    asked = [source.key_of(e) for e in seq]
    assert set(keys) <= set(asked)


def _info(seq: int, position: str, t: int, sample_time_s: float | None) -> FrameInfo:
    return FrameInfo(
        seq=seq, index={"t": t}, position=position, channel="DAPI", x_um=0.0, y_um=0.0,
        z_um=0.0, exposure_ms=20.0, pixel_size_um=0.65, sample_time_s=sample_time_s,
        runner_time_ms=0.0, t_camera_ns=0, hardware_triggered=False, added_by=None,
        adler32=0, shape=(512, 512), dtype="uint16", event={},
    )  # fmt: skip


def test_a_frame_refused_by_the_truth_leaves_the_others_truth_written(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # a position whose first frame had no sample time was listed with no truth: `close`
    # then failed (IndexError) and wrote neither the other positions' truth nor lineage.json
    writer = GroundTruthWriter(sim, tmp_path / "truth")
    writer.write(np.zeros((512, 512), np.uint16), _info(0, "A", 0, 0.0))
    with pytest.raises(LivescopeError, match="no sample time or stage position"):
        writer.write(np.zeros((512, 512), np.uint16), _info(1, "B", 0, None))
    writer.close()
    assert (tmp_path / "truth" / "lineage.json").is_file()
    assert (tmp_path / "truth" / "A" / "TRA" / "man_track.txt").is_file()
    assert list(writer.summary["positions"]) == ["A"]
