"""Review of the run's logs and the OME-Zarr reader: a decision log whose disk fills
mid-line, a closed dataset, NGFF scales with a null entry or a day/nanometer unit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from livescope.record import (
    DatasetError,
    OmeZarrWriter,
    open_dataset,
    read_decisions,
)

_FULL_DISK = textwrap.dedent(
    """
    import resource, sys
    from livescope.record import DecisionLog

    log = DecisionLog(sys.argv[1])
    log.append({"n": 1})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # the disk "fills" 100 bytes into the next line (a long reason: beyond any buffer)
    resource.setrlimit(resource.RLIMIT_FSIZE, (log.path.stat().st_size + 100, hard))
    try:
        log.append({"n": 2, "reason": "é" * 20000})
    except OSError:
        print("refused")
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
    log.append({"n": 3})
    log.close()
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE stands in for a full disk")
def test_a_decision_cut_off_by_a_full_disk_leaves_the_log_readable(tmp_path: Path) -> None:
    # the start of the line was written, the rest lost, and the next decision glued
    # to it: read_decisions then refused the whole log (a damaged line 2)
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["refused"]  # (the agent counts it as not kept)
    assert [r["n"] for r in read_decisions(tmp_path)] == [1, 3]


def _run(folder: Path) -> Path:
    with OmeZarrWriter(folder, channels=["BF"], pixel_size_um=0.5) as w:
        w.write(np.full((8, 8), 7, np.uint16), {
            "seq": 0, "position": "A1", "channel": "BF", "index": {"t": 0},
            "shape": [8, 8], "dtype": "uint16", "sample_time_s": 0.0,
        })  # fmt: skip
    return folder


def test_a_closed_run_folder_refuses_a_read_by_name(tmp_path: Path) -> None:
    # Dataset.read of a closed run folder crashed (AttributeError on None)
    ds = open_dataset(_run(tmp_path / "run"))
    assert ds.format == "livescope"
    key = ds.frames[0].key
    assert int(ds.read(key)[0, 0]) == 7
    ds.close()
    with pytest.raises(DatasetError, match=r"run: the dataset is closed"):
        ds.read(key)


def _ngff(p: Path, units: dict[str, str], scale: list[Any]) -> Path:
    """An NGFF 0.4 image (Zarr v2) of 3 time points of one 4x4 plane."""
    g = zarr.open_group(p, mode="w", zarr_format=2)
    a = g.create_array("0", shape=(3, 1, 1, 4, 4), chunks=(1, 1, 1, 4, 4), dtype="uint16")
    a[...] = 5
    axes = [{"name": n, **({"unit": units[n]} if n in units else {})} for n in "tczyx"]
    transforms = [{"type": "scale", "scale": scale}]
    g.attrs["multiscales"] = [
        {"version": "0.4", "axes": axes,
         "datasets": [{"path": "0", "coordinateTransformations": transforms}]}
    ]  # fmt: skip
    return p


def test_a_null_pixel_scale_keeps_the_recorded_time_scale(tmp_path: Path) -> None:
    # a writer that knew no pixel size wrote null for y/x: the whole scale was dropped,
    # and the time points replayed the given interval instead of their recorded 2 min
    units = {"t": "minute", "y": "micrometer", "x": "micrometer"}
    path = _ngff(tmp_path / "img.ome.zarr", units, [2.0, 1.0, 1.0, None, None])
    with open_dataset(path, interval_s=5) as ds:
        assert [f.sample_time_s for f in ds.frames] == [0.0, 120.0, 240.0]
        assert ds.frames[0].pixel_size_um is None


@pytest.mark.parametrize(
    ("t_unit", "xy_unit", "step_s", "um"),
    [
        pytest.param("day", "micrometer", 86400.0, 0.25, id="day"),
        pytest.param("nanosecond", "picometer", 1e-9, 0.25e-6, id="nanosecond-picometer"),
    ],
)
def test_ngff_time_and_space_units_are_converted(
    tmp_path: Path, t_unit: str, xy_unit: str, step_s: float, um: float
) -> None:
    # NGFF units missing from the tables left the axis without its scale, silently
    units = {"t": t_unit, "y": xy_unit, "x": xy_unit}
    path = _ngff(tmp_path / "img.ome.zarr", units, [1.0, 1.0, 1.0, 0.25, 0.25])
    with open_dataset(path, interval_s=5) as ds:
        assert [f.sample_time_s for f in ds.frames] == pytest.approx([0, step_s, 2 * step_s])
        assert ds.frames[0].pixel_size_um == pytest.approx(um)


def test_an_ngff_unit_livescope_does_not_know_is_said(tmp_path: Path) -> None:
    # (that axis was left without a scale, the recorded interval or pixel size unused,
    # without a word)
    units = {"t": "fortnight", "y": "furlong", "x": "furlong"}
    path = _ngff(tmp_path / "img.ome.zarr", units, [1.0, 1.0, 1.0, 0.25, 0.25])
    with open_dataset(path, interval_s=5) as ds:
        assert [f.sample_time_s for f in ds.frames] == [0, 5, 10]
        assert ds.frames[0].pixel_size_um is None
        text = "\n".join(ds.warnings)
        assert "the x axis's unit 'furlong' is not one livescope knows" in text
        assert "the t axis's unit 'fortnight' is not one livescope knows" in text
        assert "replayed 5 s apart (--interval-s)" in text


def test_an_ngff_scale_of_no_unit_is_read_as_um_and_seconds_and_said(tmp_path: Path) -> None:
    # NGFF's unit is optional: a scale without one (often pixels, 1.0) was read as µm
    # per pixel and seconds without a word
    path = _ngff(tmp_path / "img.ome.zarr", {}, [30.0, 1.0, 1.0, 1.0, 1.0])
    with open_dataset(path, interval_s=5) as ds:
        assert [f.sample_time_s for f in ds.frames] == [0, 30, 60]
        assert ds.frames[0].pixel_size_um == 1.0
        text = "\n".join(ds.warnings)
        assert "the x axis has no unit; its scale 1 read as µm per pixel" in text
        assert "the t axis has no unit; its scale 30 read as seconds" in text
    with open_dataset(path, interval_s=5, pixel_size_um=0.5) as ds:  # (given: no guess)
        assert ds.frames[0].pixel_size_um == 0.5
        assert "x axis has no unit" not in "\n".join(ds.warnings)
