"""A livescope run folder opened for replay: a given pixel size, its own OME-Zarr store opened."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from livescope.record import (
    FRAMES_FILE,
    ZARR_NAME,
    DatasetError,
    FrameKey,
    OmeZarrWriter,
    open_dataset,
)


def _run(folder: Path, pixel_size_um: float | None = 0.5) -> Path:
    """A run of position 'A1': BF and GFP at t=0, BF only at t=1, 7.5 s later."""
    with OmeZarrWriter(folder, channels=["BF", "GFP"], pixel_size_um=1.0) as w:
        for seq, (t, channel, sample_s) in enumerate([(0, "BF", 0.0), (0, "GFP", 0.2),
                                                      (1, "BF", 7.5)]):  # fmt: skip
            w.write(np.full((8, 8), 10 * seq, np.uint16), {
                "seq": seq, "position": "A1", "channel": channel, "index": {"t": t},
                "shape": [8, 8], "dtype": "uint16", "sample_time_s": sample_s,
                "pixel_size_um": pixel_size_um,
            })  # fmt: skip
    return folder


@pytest.mark.parametrize(
    "logged",
    [
        pytest.param(0.5, id="recorded"),
        pytest.param(None, id="none-recorded"),
        pytest.param(0.0, id="uncalibrated"),
        pytest.param(-1.0, id="below-0"),
    ],
)
def test_a_given_pixel_size_replaces_a_run_folders_logged_one(
    tmp_path: Path, logged: float | None
) -> None:
    run = _run(tmp_path / "run", logged)
    with open_dataset(run, pixel_size_um=0.325) as ds:
        assert ds.format == "livescope"
        assert [f.pixel_size_um for f in ds.frames] == [0.325] * 3


def test_a_run_folders_pixel_size_below_0_is_refused_saying_how_to_give_one(
    tmp_path: Path,
) -> None:
    run = _run(tmp_path / "run", -1.0)
    with pytest.raises(DatasetError, match=r"seq 0 records a pixel size of -1.0 µm; it must be "
                       r"above 0 \(--pixel-size gives the right one\)"):  # fmt: skip
        open_dataset(run)


def test_a_runs_own_store_opens_as_its_run_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # its frame log holds the sample times, the position's name and which channels each
    # time point took: read as a generic OME-Zarr store, none of them would be
    run = _run(tmp_path / "run")
    with caplog.at_level(logging.INFO, "livescope"), open_dataset(run / ZARR_NAME) as ds:
        assert (ds.format, ds.path) == ("livescope", run)
        assert [(f.key, f.sample_time_s) for f in ds.frames] == [
            (FrameKey("A1", 0, "BF"), 0.0), (FrameKey("A1", 0, "GFP"), 0.2),
            (FrameKey("A1", 1, "BF"), 7.5),
        ]  # fmt: skip
        assert int(ds.read(FrameKey("A1", 1, "BF"))[0, 0]) == 20
    assert f"{run / ZARR_NAME} is a livescope run's recording: opening its run folder" in (
        caplog.text
    )


def test_a_store_named_as_a_runs_but_without_its_frame_log_opens_as_a_generic_one(
    tmp_path: Path,
) -> None:
    run = _run(tmp_path / "run")
    (run / FRAMES_FILE).unlink()
    with open_dataset(run / ZARR_NAME) as ds:
        assert ds.format == "ome-zarr"
