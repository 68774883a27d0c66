"""The replay microscope on its own: recorded frames served bit for bit, paced by recorded time."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import useq

from livescope.record import open_dataset, read_frames
from livescope.schema import HardwareProfile, LivescopeError, load_plan, load_profile
from livescope.scope import (
    ReplayEngine,
    ReplayMicroscope,
    ReplaySource,
    demo_sequence,
    map_channels,
    replay_sequence,
    run_replay_scope,
    run_simulated,
)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 position × 3 time points 1 s apart (sample time), phase + DAPI, 128²."""
    prof = load_profile("sim")
    prof = prof.replace(camera=prof.camera.replace(sensor_shape_px=(128, 128)).model_dump())
    out = tmp_path_factory.mktemp("rec") / "run"
    run_simulated(prof, demo_sequence(prof, timepoints=3, positions=1, interval_s=1.0), out)
    return out


def _replay(recording: Path, out: Path, speed: float | None) -> tuple[dict, float]:
    ds = open_dataset(recording)
    prof = load_profile("sim")
    t0 = time.perf_counter()
    summary = run_replay_scope(
        ds, prof, load_plan(recording / "plan.yaml"), out,
        channels=map_channels(ds, prof), speed=speed,
    )  # fmt: skip
    ds.close()
    return summary, time.perf_counter() - t0


def test_every_frame_is_served_bit_for_bit_with_its_recorded_time(
    recording: Path, tmp_path: Path
) -> None:
    summary, _ = _replay(recording, tmp_path / "max", None)
    assert summary["frames_served"] == summary["frames_written"] == 6
    assert summary["frames_not_recorded"] == 0
    src, out = read_frames(recording), read_frames(tmp_path / "max")
    assert [f["adler32"] for f in out] == [f["adler32"] for f in src]
    assert [f["sample_time_s"] for f in out] == [f["sample_time_s"] for f in src] == [
        0.0, 0.0, 1.0, 1.0, 2.0, 2.0
    ]  # fmt: skip
    assert all(f["pixel_size_um"] == src[0]["pixel_size_um"] for f in out)


def test_pacing_follows_the_recorded_times(recording: Path, tmp_path: Path) -> None:
    ds = open_dataset(recording)
    prof = load_profile("sim")
    source = ReplaySource(ds, map_channels(ds, prof))
    plan = load_plan(recording / "plan.yaml")
    with ReplayMicroscope(prof, source) as scope:
        for speed, due in ((1.0, [0, 0, 1, 1, 2, 2]), (4.0, [0, 0, 0.25, 0.25, 0.5, 0.5])):
            engine = ReplayEngine(scope.core, prof, source, speed=speed)
            assert [e.min_start_time for e in engine.event_iterator(plan)] == due
        engine = ReplayEngine(scope.core, prof, source, speed=None)
        assert [e.min_start_time for e in engine.event_iterator(plan)] == [None] * 6
    ds.close()
    _, wall = _replay(recording, tmp_path / "realtime", 1.0)
    assert wall >= 2.0  # the last time point is 2 s of sample time after the first


def test_frames_the_recording_lacks_are_skipped_and_counted(
    recording: Path, tmp_path: Path
) -> None:
    ds = open_dataset(recording)
    prof = load_profile("sim")
    longer = load_plan(recording / "plan.yaml").replace(
        time_plan=useq.TIntervalLoops(interval=1.0, loops=5)
    )
    summary = run_replay_scope(
        ds, prof, longer, tmp_path / "r", channels=map_channels(ds, prof), speed=None
    )
    ds.close()
    assert summary["frames_served"] == 6
    assert summary["frames_not_recorded"] == 4
    assert "4 planned frame(s) are not in the recording" in summary["warnings"][-1]


def test_channels_the_profile_lacks_need_a_map(tmp_path: Path) -> None:
    import numpy as np
    import tifffile

    folder = tmp_path / "ctc"
    folder.mkdir()
    for t in range(2):
        tifffile.imwrite(folder / f"t{t:03d}.tif", np.zeros((16, 16), np.uint16))
    replay = load_profile("replay")
    # one unknown channel: imaged as the profile's first fluorescence channel
    with open_dataset(folder, channel="GFP") as ds:
        assert map_channels(ds, replay) == {"GFP": "DAPI"}
        assert "replayed as 'DAPI'" in ds.warnings[-1]
        assert map_channels(ds, replay, {"GFP": "Fluo"}) == {"GFP": "Fluo"}
        # a mistake in the map is named, never ignored (the old fallback hid both)
        with pytest.raises(LivescopeError, match=r"names channel\(s\) \['GPF'\] the dataset"):
            map_channels(ds, replay, {"GPF": "Fluo"})
        with pytest.raises(LivescopeError, match=r"maps to \['GFPX'\], not channels of profile"):
            map_channels(ds, replay, {"GFP": "GFPX"})
        seq = replay_sequence(ds, replay, {"GFP": "Fluo"})
        assert [c.config for c in seq.channels] == ["Fluo"]
        assert seq.sizes["t"] == 2
    data = np.zeros((2, 2, 1, 16, 16), np.uint16)
    tifffile.imwrite(tmp_path / "a.ome.tif", data, ome=True, photometric="minisblack",
                     metadata={"axes": "TCZYX", "Channel": {"Name": ["GFP", "RFP"]}})  # fmt: skip
    with (
        open_dataset(tmp_path / "a.ome.tif") as ds,
        pytest.raises(LivescopeError, match=r"channel\(s\) 'GFP', 'RFP' not in profile 'replay'"),
    ):
        map_channels(ds, replay)


def test_a_replayed_plan_is_timed_by_its_time_points_not_its_frames(tmp_path: Path) -> None:
    from livescope.record import Dataset, FrameKey, RecordedFrame

    # a real rig's recording: each frame its own time (positions 0.5 s and channels
    # 0.1 s apart), time points 120 s apart, one time point missing from the numbering
    frames = [
        RecordedFrame(FrameKey(p, t, c, 0), (16, 16), "uint16",
                      sample_time_s=120.0 * t + 0.5 * i + 0.1 * j, x_um=100.0 * i, y_um=0.0)
        for t in (0, 1, 2, 4) for i, p in enumerate("AB") for j, c in enumerate(("Phase", "DAPI"))
    ]  # fmt: skip
    ds = Dataset(tmp_path, "test", frames)
    seq = replay_sequence(ds, load_profile("replay"), {"Phase": "Phase", "DAPI": "DAPI"})
    assert isinstance(seq.time_plan, useq.TIntervalLoops)
    assert seq.time_plan.interval.total_seconds() == pytest.approx(120.0)  # (it was 0.1 s)
    assert seq.sizes["t"] == 5


def test_a_micro_manager_dataset_replays_with_the_camera_turn_it_was_recorded_with(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the pixel size affine an NDTiff dataset records was not read: a close-up or
    # recentring replayed on a mirrored camera's frames went to the cell's mirror image
    import numpy as np

    from ..conftest import write_ndtiff

    def replayed(name: str, affine: Callable[[int], str]) -> HardwareProfile:
        root = write_ndtiff(
            tmp_path / name, lambda t, p, c: np.full((32, 32), 100, np.uint16), timepoints=2,
            positions=1, tags=lambda t, p, c: {"ElapsedTime-ms": 1000.0 * t, "PixelSizeUm": 0.65,
                                               "PixelSizeAffine": affine(t)},
        )  # fmt: skip
        prof, out = load_profile("replay"), tmp_path / f"{name}-run"
        with open_dataset(root) as ds:
            channels = map_channels(ds, prof)
            plan = replay_sequence(ds, prof, channels)
            run_replay_scope(ds, prof, plan, out, channels=channels, speed=None)
        return load_profile(out / "profile.yaml")  # what the worker reads

    assert load_profile("replay").camera.orientation == (1, 0, 0, 1)
    assert replayed("mirrored", lambda t: "-0.65;0;0;0;0.65;0").camera.orientation == (-1, 0, 0, 1)
    # Micro-Manager's default (a plain scale) and no calibration (zeros): the profile's
    assert replayed("plain", lambda t: "0.65;0;0;0;0.65;0").camera.orientation == (1, 0, 0, 1)
    assert replayed("zeros", lambda t: "0;0;0;0;0;0").camera.orientation == (1, 0, 0, 1)
    # two objectives' calibrations a degree apart, either way: one turn, no warning
    assert replayed(
        "calibrated",
        lambda t: "0.6499;-0.0057;0;0.0057;0.6499;0" if t == 0 else "1.3;0.0008;0;-0.0006;1.3;0",
    ).camera.orientation == pytest.approx(
        tuple(v / math.hypot(0.6499, 0.0057) for v in (0.6499, -0.0057, 0.0057, 0.6499)), abs=1e-6
    )  # (the first's, a degree off (1, 0, 0, 1): as a live run takes Micro-Manager's)
    assert "more than one camera turn" not in caplog.text
    # turned between time points: the first frame's turn, with a warning naming both
    turned = replayed("turned", lambda t: "0;0.65;0;0.65;0;0" if t == 0 else "0.65;0;0;0;0.65;0")
    assert turned.camera.orientation == (0, 1, 1, 0)
    assert "more than one camera turn" in caplog.text
    # a sheared one is no turn: the profile's, with a warning (nothing to calibrate in a replay)
    assert replayed("sheared", lambda t: "0.65;0.3;0;0;0.65;0").camera.orientation == (1, 0, 0, 1)
    assert "recorded pixel size affine (0.65, 0.3; 0, 0.65) is not a turn" in caplog.text
    # the simulated microscope's profile cannot state a turned camera: refused, by name
    sim = load_profile("sim")
    with open_dataset(tmp_path / "mirrored") as ds:
        channels = map_channels(ds, sim)
        plan = replay_sequence(ds, sim, channels)
        with pytest.raises(LivescopeError, match=r"dataset's recorded pixel size affine "
                           r"\(-0.65, 0; 0, 0.65\) turns .* --profile replay"):  # fmt: skip
            run_replay_scope(ds, sim, plan, tmp_path / "sim-run", channels=channels)
