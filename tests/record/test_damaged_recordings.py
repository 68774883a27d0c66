"""Run folders and OME-Zarr layouts damaged in one place: the error names it, the rest is read."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from livescope.record import (
    FRAMES_FILE,
    ZARR_NAME,
    DatasetError,
    FrameKey,
    OmeZarrWriter,
    RecordingReader,
    open_dataset,
    read_frames,
)
from livescope.schema import LivescopeError
from tests.record.test_ngff_review2 import _image
from tests.record.test_zarr import _info


def _run(path: Path) -> Path:
    """Record positions A (group 0) and B (group 1), two time points each; pixel = seq + 1."""
    with OmeZarrWriter(path, channels=["BF"], pixel_size_um=1.0) as w:
        for seq, (t, pos) in enumerate([(0, "A"), (0, "B"), (1, "A"), (1, "B")]):
            w.write(np.full((8, 8), seq + 1, np.uint16), _info(seq, t, "BF", pos=pos))
    return path


@pytest.mark.parametrize(
    "damaged",
    [
        pytest.param("1/zarr.json", id="group"),
        pytest.param("1/0/zarr.json", id="array"),
    ],
)
def test_one_positions_damaged_metadata_leaves_the_others_readable(
    tmp_path: Path, damaged: str
) -> None:
    """zarr's list of groups read every position's metadata: one damaged, none could be read.

    The error was a bare JSONDecodeError naming no file (a replay ended on it).
    """
    run = _run(tmp_path / "run")
    (run / ZARR_NAME / damaged).write_text('{"zarr_format": 3, "node_type": "gro')
    reader = RecordingReader(run)
    frames = read_frames(run)
    assert [int(reader.read(f)[0, 0]) for f in frames if f["position"] == "A"] == [1, 3]
    for f in frames:
        if f["position"] == "B":
            with pytest.raises(LivescopeError, match=f"{damaged}.* cannot be read"):
                reader.read(f)
    with open_dataset(run) as ds:
        assert int(ds.read(FrameKey("A", 1, "BF"))[0, 0]) == 3
        with pytest.raises(DatasetError, match=f"{damaged}.* cannot be read"):
            ds.read(FrameKey("B", 1, "BF"))


def _edit_record(k: int, edit: Callable[[dict[str, Any]], object]) -> Callable[[list[str]], None]:
    def apply(lines: list[str]) -> None:
        record = json.loads(lines[k])
        edit(record)
        lines[k] = json.dumps(record)

    return apply


@pytest.mark.parametrize(
    ("change", "line"),
    [
        pytest.param(_edit_record(2, lambda r: r.pop("shape")), 3, id="no shape"),
        pytest.param(_edit_record(2, lambda r: r.pop("dtype")), 3, id="no dtype"),
        pytest.param(_edit_record(2, lambda r: r.pop("seq")), 3, id="no seq"),
        pytest.param(_edit_record(2, lambda r: r.update(index=None)), 3, id="index null"),
        pytest.param(_edit_record(2, lambda r: r["index"].update(t="x")), 3, id="t a word"),
        pytest.param(_edit_record(2, lambda r: r.update(dtype="pixels")), 3, id="dtype no type"),
        pytest.param(lambda lines: lines.insert(1, "[1, 2]"), 2, id="not an object"),
        pytest.param(lambda lines: lines.insert(1, "{bad"), 2, id="not JSON"),
        pytest.param(
            lambda lines: lines.insert(0, "") or _edit_record(3, lambda r: r.pop("shape"))(lines),
            4,
            id="after a blank line",
        ),
    ],
)
def test_a_frame_log_line_that_is_no_frame_record_is_a_dataset_error_naming_it(
    tmp_path: Path, change: Callable[[list[str]], None], line: int
) -> None:
    """A KeyError, AttributeError, ValueError or LivescopeError: not "bad input" to replay_many.

    Its Dask task was retried (the output folder moved aside each time) for a
    log that fails the same way every time.
    """
    run = _run(tmp_path / "run")
    log = run / FRAMES_FILE
    lines = log.read_text(encoding="utf-8").splitlines()
    change(lines)
    log.write_text("".join(f"{text}\n" for text in lines), encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"{FRAMES_FILE}, line {line}: "):
        open_dataset(run)


def test_a_frame_logged_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    """A repeated line was taken as a frame more (5 frames, 4 keys): replayed twice."""
    run = _run(tmp_path / "run")
    log = run / FRAMES_FILE
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    log.write_text("".join([*lines, lines[1]]), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"line 2 \(seq 1\) and line 5 \(seq 1\) are both"):
        open_dataset(run)


def test_an_image_its_series_lists_but_missing_is_said_so(tmp_path: Path) -> None:
    """It was "not a Zarr group (an OME-Zarr image is one)": a copy that did not finish."""
    path = tmp_path / "b2r.zarr"
    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.attrs["ome"] = {"version": "0.5", "bioformats2raw.layout": 3}
    root.create_group("OME").attrs["ome"] = {"version": "0.5", "series": ["wellA", "wellB"]}
    for k in ("wellA", "wellB"):
        _image(root.create_group(k), np.ones((1, 1, 1, 8, 8), np.uint16))
    with open_dataset(path) as ds:
        assert ds.positions == ["wellA", "wellB"]
    shutil.rmtree(path / "wellB")
    with pytest.raises(DatasetError, match=r"wellB: listed in the OME group's series, but missing"):
        open_dataset(path)


@pytest.mark.parametrize(
    ("field", "text", "number"),
    [
        pytest.param("x_um", "12.5", 12.5, id="x_um"),
        pytest.param("y_um", "-3", -3.0, id="y_um"),
        pytest.param("z_um", " 1e-05 ", 1e-05, id="z_um"),
        pytest.param("exposure_ms", "10", 10.0, id="exposure_ms"),
        pytest.param("sample_time_s", "7.25", 7.25, id="sample_time_s"),
        pytest.param("pixel_size_um", "0.65", 0.65, id="pixel_size_um"),
    ],
)
def test_a_number_an_earlier_version_logged_as_text_is_read_as_that_number(
    tmp_path: Path, field: str, text: str, number: float
) -> None:
    """Numpy's numbers were logged as text ("0.65"): such a run must still replay.

    A pixel size was a bare TypeError (math.isfinite); the others were passed on
    as text, to fail later, downstream.
    """
    run = _run(tmp_path / "run")
    log = run / FRAMES_FILE
    lines = log.read_text(encoding="utf-8").splitlines()
    _edit_record(2, lambda r: r.update({field: text}))(lines)
    log.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    with open_dataset(run) as ds:
        frame = ds.frames[2]
        assert frame.origin == "seq 2"
        assert getattr(frame, field) == number
        assert isinstance(getattr(frame, field), float)


def test_what_the_recorder_logs_without_a_value_is_read_as_none(tmp_path: Path) -> None:
    """No stage (x, y, z null), no sample time (before session 35), no calibration (0)."""

    def unknown(r: dict[str, Any]) -> None:
        r.update(x_um=None, y_um=None, z_um=None, pixel_size_um=0.0, runner_time_ms=1500)
        r.pop("sample_time_s")
        r.pop("exposure_ms")

    run = _run(tmp_path / "run")
    log = run / FRAMES_FILE
    lines = log.read_text(encoding="utf-8").splitlines()
    _edit_record(2, unknown)(lines)
    log.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    with open_dataset(run) as ds:
        frame = ds.frames[2]
        assert (frame.x_um, frame.y_um, frame.z_um, frame.exposure_ms) == (None,) * 4
        assert (frame.pixel_size_um, frame.sample_time_s) == (None, 1.5)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("x_um", "left", id="x_um a word"),
        pytest.param("y_um", [1.0, 2.0], id="y_um a list"),
        pytest.param("z_um", True, id="z_um a bool"),
        pytest.param("z_um", math.nan, id="z_um NaN"),
        pytest.param("exposure_ms", {"ms": 10}, id="exposure_ms an object"),
        pytest.param("exposure_ms", "nan", id="exposure_ms NaN as text"),
        pytest.param("sample_time_s", math.inf, id="sample_time_s infinite"),
        pytest.param("sample_time_s", "", id="sample_time_s empty text"),
        pytest.param("pixel_size_um", "0.65 um", id="pixel_size_um a word"),
        pytest.param("pixel_size_um", 10**400, id="pixel_size_um too large"),
    ],
)
def test_a_logged_value_that_is_no_number_is_a_dataset_error_naming_line_and_field(
    tmp_path: Path, field: str, value: object
) -> None:
    """Passed on as it was, it failed far from the cause (a pixel size: a bare TypeError)."""
    run = _run(tmp_path / "run")
    log = run / FRAMES_FILE
    lines = log.read_text(encoding="utf-8").splitlines()
    _edit_record(2, lambda r: r.update({field: value}))(lines)
    log.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"{FRAMES_FILE}, line 3: .*\b{field} is "):
        open_dataset(run)


def test_a_run_time_of_a_frame_without_sample_time_must_be_a_number(tmp_path: Path) -> None:
    """Taken as the sample time, a NaN acquisition clock went on as one."""

    def no_time(r: dict[str, Any]) -> None:
        r.pop("sample_time_s")
        r.update(runner_time_ms=math.nan)

    run = _run(tmp_path / "run")
    log = run / FRAMES_FILE
    lines = log.read_text(encoding="utf-8").splitlines()
    _edit_record(2, no_time)(lines)
    log.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"{FRAMES_FILE}, line 3: .*\brunner_time_ms is "):
        open_dataset(run)


def test_a_pixel_size_given_replaces_a_logged_one_that_is_no_number(tmp_path: Path) -> None:
    """--pixel-size is the way out the error names: the logged value is not read."""
    run = _run(tmp_path / "run")
    log = run / FRAMES_FILE
    lines = log.read_text(encoding="utf-8").splitlines()
    _edit_record(2, lambda r: r.update(pixel_size_um="n/a"))(lines)
    log.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    with open_dataset(run, pixel_size_um=0.5) as ds:
        assert {f.pixel_size_um for f in ds.frames} == {0.5}
