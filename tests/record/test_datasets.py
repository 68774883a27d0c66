"""Recorded datasets opened for replay (livescope, CTC, OME-TIFF, NDTiff, OME-Zarr), bad input."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import tifffile
import zarr

from livescope.record import DatasetError, FrameKey, open_dataset, read_frames
from livescope.schema import load_profile
from livescope.scope import demo_sequence, run_simulated

from ..conftest import shared_subfolder, write_ndtiff


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rec") / "run"
    prof = load_profile("sim")
    run_simulated(prof, demo_sequence(prof, timepoints=3, positions=2), out)
    return out


def test_a_livescope_recording_replays_every_logged_frame(recording: Path) -> None:
    with open_dataset(recording) as ds:
        assert ds.format == "livescope"
        assert len(ds.frames) == 3 * 2 * 2
        assert ds.positions == ["p0", "p1"]
        assert ds.channels == ["Phase", "DAPI"]
        (f,) = [f for f in ds.frames if f.key == FrameKey("p0", 1, "DAPI", 0)]
        assert ds.frames.index(f) == 5  # acquisition order: t, p, c
        assert f.sample_time_s == pytest.approx(120.0)
        assert f.pixel_size_um == pytest.approx(0.65)
        root = zarr.open_group(recording / "data.ome.zarr", mode="r")
        assert np.array_equal(ds.read(f.key), root["0/0"][1, 1, 0])
        assert ds.warnings == []
        with pytest.raises(DatasetError, match="no recorded frame"):
            ds.read(FrameKey("p0", 9, "DAPI", 0))


def test_a_real_rigs_older_recording_is_timed_by_its_acquisition_clock(
    recording: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(recording, old)
    infos = [json.loads(x) for x in (old / "frames.jsonl").read_text().splitlines()]
    for info in infos:  # as a real rig's recording before session 35: no sample time
        info["sample_time_s"] = None
    (old / "frames.jsonl").write_text("".join(json.dumps(i) + "\n" for i in infos))
    with open_dataset(old) as ds:
        times = [f.sample_time_s for f in ds.frames]
    assert times == pytest.approx([i["runner_time_ms"] / 1000 for i in infos])
    assert None not in times


def test_a_recording_cut_mid_write_replays_up_to_its_last_frame(
    recording: Path, tmp_path: Path
) -> None:
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(recording, cut)
    log = (cut / "frames.jsonl").read_text()
    lines = log.splitlines(keepends=True)
    (cut / "frames.jsonl").write_text("".join(lines[:7]) + lines[7][:40])  # killed mid-line
    (cut / "summary.json").unlink()
    with open_dataset(cut) as ds:
        assert len(ds.frames) == 7
        assert "did not finish" in ds.warnings[0]
        assert ds.read(ds.frames[-1].key).shape == (512, 512)
    assert len(read_frames(cut)) == 7


def test_a_damaged_chunk_is_a_clear_error_naming_its_frame(recording: Path, tmp_path: Path) -> None:
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(recording, damaged)
    chunks = sorted(p for p in (damaged / "data.ome.zarr" / "0" / "0").rglob("*") if p.is_file())
    chunks = [p for p in chunks if p.name != "zarr.json"]
    chunks[0].write_bytes(b"\x00" * 64)  # (p0's first chunk: t=0, Phase)
    with open_dataset(damaged) as ds:
        with pytest.raises(DatasetError, match=r"frame 0 \(p0 t=0 c=Phase z=0\) cannot be read"):
            ds.read(FrameKey("p0", 0, "Phase", 0))
        assert ds.read(FrameKey("p0", 0, "DAPI", 0)).shape == (512, 512)  # the others still are


def _ctc(folder: Path, frames: dict[int, np.ndarray]) -> Path:
    folder.mkdir()
    for t, image in frames.items():
        tifffile.imwrite(folder / f"t{t:03d}.tif", image)
    return folder


def test_a_ctc_folder_is_one_position_and_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = {t: rng.integers(0, 4000, (32, 48), dtype=np.uint16) for t in (0, 1, 3)}
    with open_dataset(_ctc(tmp_path / "01", images), channel="DAPI", interval_s=300) as ds:
        assert ds.format == "ctc"
        assert [f.key for f in ds.frames] == [FrameKey("p0", t, "DAPI") for t in (0, 1, 3)]
        assert [f.sample_time_s for f in ds.frames] == [0, 300, 900]
        assert np.array_equal(ds.read(FrameKey("p0", 3, "DAPI")), images[3])
        assert ds.warnings == [f"{tmp_path / '01'}: frames 2..2 are missing (t003.tif follows)"]


def test_an_unreadable_ctc_frame_is_left_out_with_a_warning_and_later_ones_kept(
    tmp_path: Path,
) -> None:
    good = np.ones((8, 8), np.uint8)
    folder = _ctc(tmp_path / "01", {0: good, 1: good, 3: good})
    (folder / "t002.tif").write_bytes(b"II*\x00garbage")
    tifffile.imwrite(folder / "t004.tif", np.ones((64, 64), np.uint8), compression="zlib")
    (folder / "t004.tif").write_bytes((folder / "t004.tif").read_bytes()[:12])  # cut short
    with open_dataset(folder) as ds:
        assert [f.key.t for f in ds.frames] == [0, 1, 3]  # t003, after the bad one, is kept
        assert len(ds.warnings) == 2
        assert "t002.tif: cannot be read (" in ds.warnings[0]
        assert ds.warnings[0].endswith("replayed without it")
        assert "t004.tif: cannot be read (" in ds.warnings[1]


def test_a_damaged_line_of_the_frame_log_is_named(tmp_path: Path) -> None:
    from livescope.schema import LivescopeError

    (tmp_path / "frames.jsonl").write_text('{"seq": 0}\n{not json\n{"seq": 2}\n[1]\n')
    with pytest.raises(LivescopeError, match=r"frames.jsonl, line 2: not a JSON frame record"):
        read_frames(tmp_path)
    (tmp_path / "frames.jsonl").write_text('{"seq": 0}\n[1]\n')
    with pytest.raises(LivescopeError, match=r"line 2: a frame record is a JSON object, not list"):
        read_frames(tmp_path)
    (tmp_path / "frames.jsonl").write_text('{"seq": 0}\n\n{"seq": 1}\n{"seq": 2, "cut')
    assert [f["seq"] for f in read_frames(tmp_path)] == [0, 1]  # a crash's last line is skipped


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.ones((8, 8), np.float32), "pixel type float32 is not supported"),
        (np.ones((8, 8, 3), np.uint8), "frames of shape (8, 8, 3) are not supported"),
        (np.ones((2, 8, 8), np.uint16), "frames of shape (2, 8, 8) are not supported"),
    ],
)
def test_unsupported_frames_are_refused_naming_the_file(
    tmp_path: Path, image: np.ndarray, expected: str
) -> None:
    folder = _ctc(tmp_path / "01", {0: image})
    with pytest.raises(DatasetError, match=r"t000\.tif: ") as err:
        open_dataset(folder)
    assert expected in str(err.value)


def test_other_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file or folder"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a dataset livescope can replay"):
        open_dataset(tmp_path / "empty")


def test_gowt1_sequence_opens_as_a_ctc_folder() -> None:
    with open_dataset(shared_subfolder("ctc-Fluo-N2DH-GOWT1/01")) as ds:
        assert len(ds.frames) == 92
        assert ds.frames[0].shape == (1024, 1024)
        assert ds.frames[0].dtype == "uint8"
        assert ds.read(ds.frames[-1].key).shape == (1024, 1024)


def _ome(path: Path, data: np.ndarray, positions: int = 2, axes: str = "TCZYX") -> Path:
    with tifffile.TiffWriter(path, ome=True) as tw:
        for p in range(positions):
            tw.write(data + p, photometric="minisblack", metadata={
                "axes": axes, "Name": f"pos{p}", "Channel": {"Name": ["Phase", "DAPI"]},
                "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65, "TimeIncrement": 120.0,
            })  # fmt: skip
    return path


def test_an_ome_tiff_replays_each_series_as_a_position(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 4000, (4, 2, 1, 32, 48), dtype=np.uint16)
    with open_dataset(_ome(tmp_path / "a.ome.tif", data)) as ds:
        assert ds.format == "ome-tiff"
        assert ds.positions == ["pos0", "pos1"]
        assert ds.channels == ["Phase", "DAPI"]
        assert len(ds.frames) == 4 * 2 * 2
        assert [f.key for f in ds.frames[:3]] == [
            FrameKey("pos0", 0, "Phase"), FrameKey("pos0", 0, "DAPI"), FrameKey("pos1", 0, "Phase")
        ]  # fmt: skip
        f = next(f for f in ds.frames if f.key == FrameKey("pos1", 3, "DAPI"))
        assert f.sample_time_s == 360.0
        assert f.pixel_size_um == pytest.approx(0.65)
        assert np.array_equal(ds.read(f.key), data[3, 1, 0] + 1)


def test_two_ome_tiff_series_of_one_name_are_refused(tmp_path: Path) -> None:
    # one would be served as both: the first series' frames replayed with the second's pixels
    path = tmp_path / "twice.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        for value in (1, 2):
            meta = {"axes": "TYX", "Name": "Pos", "Channel": {"Name": ["DAPI"]}}
            tw.write(np.full((2, 16, 16), value, np.uint16), metadata=meta)
    with pytest.raises(DatasetError, match=r"twice\.ome\.tif: series 0 plane 0 and series 1 "
                       r"plane 0 are both .*'Pos'.*series name, T, C and Z"):  # fmt: skip
        open_dataset(path)


@pytest.mark.parametrize("case_blind", [False, True])
def test_series_names_that_cannot_name_a_folder_are_replayed_under_names_that_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case_blind: bool
) -> None:
    # a replay keeps each position's results in a folder of its name (a plan of such
    # names is refused; a recording's are not the user's to change): renamed, said
    # in a warning, every frame still read from its own series
    import livescope.schema._plan as plan

    monkeypatch.setattr(plan, "CASE_BLIND", case_blind)  # Windows, macOS: A1 is a1
    names = ["TileScan 1/Position 1", ".B.live", "..", "A1", "a1", "p3"]
    path = tmp_path / "named.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        for value, name in enumerate(names):
            meta = {"axes": "TYX", "Name": name, "Channel": {"Name": ["DAPI"]}}
            tw.write(np.full((2, 16, 16), value, np.uint16), metadata=meta)
    with open_dataset(path) as ds:
        want = ["TileScan 1_Position 1", "B.live", "_", "A1", "p4" if case_blind else "a1", "p3"]
        assert ds.positions == want
        for value, name in enumerate(want):
            assert np.all(ds.read(FrameKey(name, 1, "DAPI")) == value)
        renamed = [(a, b) for a, b in zip(names, want, strict=True) if a != b]
        assert ds.warnings == [
            f"position {a!r} is replayed as {b!r}: its name cannot name its results folder"
            for a, b in renamed
        ]


def test_a_truncated_or_plain_tiff_is_a_clear_error(tmp_path: Path) -> None:
    data = np.ones((4, 2, 1, 32, 48), np.uint16)
    path = _ome(tmp_path / "a.ome.tif", data)
    raw = path.read_bytes()
    cut = tmp_path / "cut.ome.tif"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(DatasetError, match=r"cut\.ome\.tif: (truncated|no OME)"):
        open_dataset(cut)
    header = tmp_path / "header.tif"
    header.write_bytes(raw[:6])
    with pytest.raises(DatasetError, match=r"header\.tif: not a readable TIFF"):
        open_dataset(header)
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.ones((3, 8, 8), np.uint16), photometric="minisblack")
    with pytest.raises(DatasetError, match="no OME metadata"):
        open_dataset(plain)
    rgb = tmp_path / "rgb.ome.tif"
    tifffile.imwrite(rgb, np.ones((8, 8, 3), np.uint8), ome=True, photometric="rgb")
    with pytest.raises(DatasetError, match="RGB"):
        open_dataset(rgb)
    floats = tmp_path / "f.ome.tif"
    tifffile.imwrite(floats, np.ones((2, 8, 8), np.float32), ome=True, photometric="minisblack")
    with pytest.raises(DatasetError, match="pixel type float32 is not supported"):
        open_dataset(floats)


def _ndtiff(root: Path) -> Path:
    return write_ndtiff(root, lambda t, p, c: np.full((16, 24), 10 * t + p + c * 100, np.uint16))


def test_an_ndtiff_dataset_replays_and_keeps_stdout_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _ndtiff(tmp_path / "nd")
    capsys.readouterr()
    with open_dataset(root) as ds:  # the folder holding acq_1/
        assert ds.format == "ndtiff"
        assert len(ds.frames) == 12
        assert ds.positions == ["p0", "p1"]
        assert ds.channels == ["Phase", "DAPI"]
        f = next(f for f in ds.frames if f.key == FrameKey("p1", 2, "DAPI"))
        assert f.sample_time_s == 240.0
        assert f.x_um == 100.0
        assert f.pixel_size_um == 0.65
        assert int(ds.read(f.key)[0, 0]) == 121
    assert capsys.readouterr().out == ""  # ndstorage's progress printing is hidden


def test_ndtiff_tags_written_as_text_or_as_intended_positions_are_read(tmp_path: Path) -> None:
    # Micro-Manager writes some tags as text, and a stage position it was asked for as
    # *_um_Intended (a text ElapsedTime-ms raised; the z of an intended one was lost)
    root = write_ndtiff(
        tmp_path / "nd", lambda t, p, c: np.zeros((16, 24), np.uint16), timepoints=2,
        tags=lambda t, p, c: {"ElapsedTime-ms": f"{120000.0 * t + 40 * c}", "Exposure": "20",
                              "XPosition_um_Intended": 100.0 * p, "YPositionUm": "-5.5",
                              "ZPosition_um_Intended": "12.5", "PixelSizeUm": 0.65},
    )  # fmt: skip
    with open_dataset(root) as ds:
        f = next(f for f in ds.frames if f.key == FrameKey("p1", 1, "DAPI"))
        assert (f.sample_time_s, f.exposure_ms) == (120.04, 20.0)
        assert (f.x_um, f.y_um, f.z_um) == (100.0, -5.5, 12.5)


def test_a_damaged_ndtiff_index_is_a_clear_error(tmp_path: Path) -> None:
    acq = next((_ndtiff(tmp_path / "nd")).iterdir())
    index = acq / "NDTiff.index"
    index.write_bytes(index.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="the NDTiff index cannot be read"):
        open_dataset(acq)


def _ngff(
    path: Path,
    data: np.ndarray,
    *,
    axes: list[Any] | None = None,
    scale: list[float] | None = None,
    units: dict[str, str] | None = None,
    channels: list[str] | None = None,
    zarr_format: Literal[2, 3] = 3,
    chunks: tuple[int, ...] | None = None,
    separator: str = ".",
    group: Any = None,
) -> Path:
    """Write one NGFF image (0.5 on Zarr v3, 0.4 on v2) with its level 0 at ``0``."""
    axes = axes if axes is not None else list("tczyx")
    units = units if units is not None else {"t": "second", "y": "micrometer", "x": "micrometer"}
    entries = [
        {"name": a, **({"unit": units[a]} if a in units else {})} if isinstance(a, str) else a
        for a in axes
    ]
    level: dict[str, Any] = {"path": "0"}
    if scale is not None:
        level["coordinateTransformations"] = [{"type": "scale", "scale": scale}]
    meta: dict[str, Any] = {"multiscales": [{"version": "0.4", "axes": entries,
                                             "datasets": [level]}]}  # fmt: skip
    if channels is not None:
        meta["omero"] = {"channels": [{"label": c} for c in channels]}
    if group is None:
        group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    if zarr_format == 3:
        meta["multiscales"][0].pop("version")
        group.attrs["ome"] = {"version": "0.5", **meta}
        encoding: dict[str, Any] = {"name": "default", "separator": "/"}
    else:
        group.attrs.update(meta)
        encoding = {"name": "v2", "separator": separator}
    array = group.create_array(
        "0", shape=data.shape, chunks=chunks or (*(1,) * (data.ndim - 2), *data.shape[-2:]),
        dtype=data.dtype, chunk_key_encoding=encoding,
    )  # fmt: skip
    array[...] = data
    return path


def _planes(shape: tuple[int, ...], dtype: type = np.uint16) -> np.ndarray:
    return np.random.default_rng(0).integers(1, 200, shape).astype(dtype)


def test_an_ome_zarr_05_image_replays_its_planes_in_time_order(tmp_path: Path) -> None:
    data = _planes((3, 2, 1, 32, 32))
    path = _ngff(tmp_path / "img.zarr", data, scale=[120.0, 1.0, 2.0, 0.65, 0.65],
                 channels=["Phase", "DAPI"])  # fmt: skip
    with open_dataset(path) as ds:
        assert ds.format == "ome-zarr"
        assert ds.positions == ["p0"]
        assert ds.channels == ["Phase", "DAPI"]
        assert [f.key for f in ds.frames[:3]] == [
            FrameKey("p0", 0, "Phase"), FrameKey("p0", 0, "DAPI"), FrameKey("p0", 1, "Phase")
        ]  # fmt: skip
        assert len(ds.frames) == 6
        f = ds.frames[-1]
        assert f.key == FrameKey("p0", 2, "DAPI")
        assert (f.shape, f.dtype, f.origin) == ((32, 32), "uint16", "0 t=2 c=1 z=0")
        assert f.sample_time_s == 240.0
        assert f.pixel_size_um == pytest.approx(0.65)
        assert np.array_equal(ds.read(f.key), data[2, 1, 0])
        assert ds.warnings == []
    with open_dataset(path, pixel_size_um=0.5) as ds:  # given: it wins over the file's
        assert ds.frames[0].pixel_size_um == 0.5


@pytest.mark.parametrize("separator", [".", "/"])
def test_an_ngff_04_image_on_zarr_v2_converts_units(tmp_path: Path, separator: str) -> None:
    data = _planes((2, 1, 3, 16, 24), np.uint8)
    path = _ngff(
        tmp_path / "img.zarr", data, zarr_format=2, separator=separator,
        scale=[500.0, 1.0, 1.0, 650.0, 650.0],
        units={"t": "millisecond", "y": "nanometer", "x": "nanometer"},
    )  # fmt: skip
    assert (path / ".zattrs").is_file()
    with open_dataset(path, interval_s=60) as ds:
        assert ds.format == "ome-zarr"
        assert ds.channels == ["c0"]
        assert len(ds.frames) == 2 * 3
        f = next(f for f in ds.frames if f.key == FrameKey("p0", 1, "c0", 2))
        assert f.sample_time_s == 0.5
        assert f.pixel_size_um == pytest.approx(0.65)
        assert f.dtype == "uint8"
        assert np.array_equal(ds.read(f.key), data[1, 0, 2])


def test_a_bioformats2raw_layout_replays_each_image_as_a_position(tmp_path: Path) -> None:
    data = _planes((2, 2, 1, 16, 16))
    root = zarr.open_group(tmp_path / "b2r.zarr", mode="w", zarr_format=3)
    root.attrs["ome"] = {"version": "0.5", "bioformats2raw.layout": 3}
    for p in range(2):
        _ngff(tmp_path, data + p, group=root.create_group(str(p)), channels=["Phase", "DAPI"],
              scale=[300.0, 1.0, 1.0, 0.65, 0.65])  # fmt: skip
    with open_dataset(tmp_path / "b2r.zarr") as ds:
        assert ds.positions == ["p0", "p1"]
        assert [f.key for f in ds.frames[:4]] == [
            FrameKey("p0", 0, "Phase"), FrameKey("p0", 0, "DAPI"),
            FrameKey("p1", 0, "Phase"), FrameKey("p1", 0, "DAPI"),
        ]  # fmt: skip
        assert len(ds.frames) == 8
        f = next(f for f in ds.frames if f.key == FrameKey("p1", 1, "DAPI"))
        assert (f.origin, f.sample_time_s) == ("1/0 t=1 c=1 z=0", 300.0)
        assert np.array_equal(ds.read(f.key), data[1, 1, 0] + 1)


def test_a_livescope_ome_zarr_opens_as_a_generic_one(recording: Path, tmp_path: Path) -> None:
    # (copied out of its run folder: inside it, it opens as the run, test_ometiff_damaged.py)
    store = shutil.copytree(recording / "data.ome.zarr", tmp_path / "data.ome.zarr")
    with open_dataset(store) as ds:
        assert ds.format == "ome-zarr"
        assert (ds.positions, ds.channels) == (["p0", "p1"], ["Phase", "DAPI"])
        assert len(ds.frames) == 3 * 2 * 2
        assert ds.frames[5].key == FrameKey("p0", 1, "DAPI", 0)
        assert ds.frames[5].sample_time_s == pytest.approx(120.0)
        with open_dataset(recording) as own:
            assert np.array_equal(ds.read(ds.frames[5].key), own.read(ds.frames[5].key))


def test_an_image_without_t_and_z_axes_is_one_time_point(tmp_path: Path) -> None:
    data = _planes((2, 8, 8))
    path = _ngff(tmp_path / "cyx.zarr", data, axes=["c", "y", "x"], zarr_format=2)
    with open_dataset(path) as ds:
        assert [f.key for f in ds.frames] == [FrameKey("p0", 0, "c0"), FrameKey("p0", 0, "c1")]
        assert ds.frames[1].sample_time_s == 0.0
        assert ds.frames[1].pixel_size_um is None
        assert np.array_equal(ds.read(ds.frames[1].key), data[1])


@pytest.mark.parametrize(
    ("zarr_format", "chunks", "chunk", "expected", "replayed"),
    [
        (3, None, "c/2/1/0/0/0", "1 of 6 planes never written (t=2 c=1 z=0); replaying t=0..1", 4),
        (2, None, "2.1.0.0.0", "1 of 6 planes never written (t=2 c=1 z=0); replaying t=0..1", 4),
        # a quarter of a plane missing: the plane is left out, later time points replay
        (3, (1, 1, 1, 16, 16), "c/1/0/0/1/0", "1 of 6 planes never written (t=1 c=0 z=0); "
         "replaying t=0..2", 5),
        # one chunk holds both channels
        (3, (1, 2, 1, 32, 32), "c/2/0/0/0/0", "2 of 6 planes never written (t=2 c=0 z=0, "
         "t=2 c=1 z=0); replaying t=0..1", 4),
    ],
)  # fmt: skip
def test_planes_never_written_are_left_out_with_a_warning(
    tmp_path: Path,
    zarr_format: Literal[2, 3],
    chunks: tuple[int, ...] | None,
    chunk: str,
    expected: str,
    replayed: int,
) -> None:
    data = _planes((3, 2, 1, 32, 32))
    path = _ngff(tmp_path / "cut.zarr", data, zarr_format=zarr_format, chunks=chunks)
    (path / "0" / chunk).unlink()  # the run was killed before it was written
    with open_dataset(path) as ds:
        assert ds.warnings == [f"{path}: {expected}"]
        assert len(ds.frames) == replayed
        last = ds.frames[-1]
        assert last.key == FrameKey("p0", int(expected[-1]), "c1")
        assert np.array_equal(ds.read(last.key), data[last.key.t, 1, 0])


def test_an_ome_zarr_without_a_complete_time_point_is_refused(tmp_path: Path) -> None:
    path = _ngff(tmp_path / "cut.zarr", _planes((1, 2, 1, 8, 8)))
    (path / "0" / "c" / "0" / "1" / "0" / "0" / "0").unlink()
    with pytest.raises(DatasetError) as err:
        open_dataset(path)
    assert str(err.value) == (
        f"{path}: no time point was written in full (1 of 2 planes never written: t=0 c=1 z=0)"
    )


@pytest.mark.parametrize(
    ("axes", "shape", "expected"),
    [
        (["c", "q"], (2, 8), "multiscales axes ['c', 'q'] lack y/x"),
        ([{"type": "space"}, {"type": "space"}], (8, 8), "multiscales axes [None, None] lack y/x"),
        (["t", "w", "y", "x"], (2, 2, 8, 8), "multiscales axes ['t', 'w', 'y', 'x'] are not "
         "supported (livescope replays t, c, z planes of y/x)"),
    ],
)  # fmt: skip
def test_ome_zarr_axes_livescope_cannot_replay_are_named(
    tmp_path: Path, axes: list[Any], shape: tuple[int, ...], expected: str
) -> None:
    path = _ngff(tmp_path / "odd.zarr", _planes(shape), axes=axes)
    with pytest.raises(DatasetError) as err:
        open_dataset(path)
    assert str(err.value) == f"{path}: {expected}"


def test_other_ome_zarr_stores_are_clear_errors(tmp_path: Path) -> None:
    floats = _ngff(tmp_path / "f.zarr", np.ones((2, 1, 1, 8, 8), np.float32))
    with pytest.raises(DatasetError) as err:
        open_dataset(floats)
    assert str(err.value) == (
        f"{floats / '0'}: pixel type float32 is not supported (livescope replays uint8/uint16 "
        "monochrome frames)"
    )
    plate = zarr.open_group(tmp_path / "plate.zarr", mode="w", zarr_format=3)
    plate.attrs["ome"] = {"version": "0.5", "plate": {"rows": [{"name": "A"}]}}
    with pytest.raises(DatasetError) as err:
        open_dataset(tmp_path / "plate.zarr")
    assert str(err.value) == f"{tmp_path / 'plate.zarr'}: OME-Zarr plates are not supported yet"
    zarr.open_group(tmp_path / "plain.zarr", mode="w", zarr_format=2).attrs["x"] = 1
    with pytest.raises(DatasetError, match=r"plain\.zarr: no OME-Zarr multiscales metadata"):
        open_dataset(tmp_path / "plain.zarr")


def test_a_recorded_pixel_size_affine_is_read_in_each_form_micro_manager_writes(
    tmp_path: Path,
) -> None:
    forms = {
        0: ("-0.65;0.0;5.0;0.0;0.65;0.0", (-0.65, 0.0, 5.0, 0.0, 0.65, 0.0)),  # its tag
        1: ("AffineTransform[[0.0, 0.65, 0.0], [0.65, 0.0, -2e-1]]",  # through its Java side
            (0.0, 0.65, 0.0, 0.65, 0.0, -0.2)),
        2: ([0.65, 0, 0, 0, 0.65, 0], (0.65, 0.0, 0.0, 0.0, 0.65, 0.0)),  # pymmcore-plus's list
        3: ("0;0;0;0;0;0", None),  # no calibration
        4: ("0.65;0;0;0.65", None),  # not six numbers
        5: ("nan;0;0;0;1;0", None),
        6: ("0.65-0.0-0.0-0.0-0.65-0.0", None),  # no form it writes (its ROI tags use "-")
    }  # fmt: skip
    root = write_ndtiff(
        tmp_path / "nd", lambda t, p, c: np.zeros((16, 24), np.uint16), timepoints=1,
        positions=len(forms), tags=lambda t, p, c: {"PixelSizeUm": 0.65,
                                                    "PixelSizeAffine": forms[p][0]},
    )  # fmt: skip
    with open_dataset(root) as ds:
        got = {int(f.key.position[1:]): f.affine for f in ds.frames if f.key.channel == "DAPI"}
    assert got == {p: expected for p, (_, expected) in forms.items()}
    with open_dataset(_ndtiff(tmp_path / "untagged")) as ds:
        assert {f.affine for f in ds.frames} == {None}


@pytest.mark.parametrize("size", [-0.65, float("nan"), float("inf")])
def test_a_recorded_pixel_size_below_0_or_not_a_number_is_refused_naming_the_frame(
    tmp_path: Path, size: float
) -> None:
    data = np.zeros((2, 1, 1, 16, 16), np.uint16)
    path = tmp_path / "bad.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(data, photometric="minisblack", metadata={"axes": "TCZYX", "PhysicalSizeX": size})
    with pytest.raises(DatasetError, match=r"bad\.ome\.tif: series 0 plane 0 records a pixel size"):
        open_dataset(path)
    with open_dataset(path, pixel_size_um=0.5) as ds:  # the user gives the right one
        assert {f.pixel_size_um for f in ds.frames} == {0.5}
    with pytest.raises(DatasetError, match="pixel size -1 µm given"):
        open_dataset(path, pixel_size_um=-1)


def test_a_recorded_pixel_size_of_0_is_read_as_none(tmp_path: Path) -> None:
    """Micro-Manager records 0 for a pixel size never calibrated."""
    data = np.zeros((2, 1, 1, 16, 16), np.uint16)
    path = tmp_path / "uncalibrated.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(data, photometric="minisblack", metadata={"axes": "TCZYX", "PhysicalSizeX": 0})
    with open_dataset(path) as ds:
        assert {f.pixel_size_um for f in ds.frames} == {None}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_big_endian_ome_zarr_replays_in_this_machines_byte_order(
    tmp_path: Path, zarr_format: Literal[2, 3]
) -> None:
    """bioformats2raw (Java) writes its uint16 arrays big-endian (``>u2``)."""
    data = _planes((2, 1, 1, 16, 16)) * 300
    path = _ngff(tmp_path / "img.zarr", data.astype(">u2"), zarr_format=zarr_format)
    with open_dataset(path) as ds:
        assert [f.dtype for f in ds.frames] == ["uint16", "uint16"]
        image = ds.read(ds.frames[1].key)
        assert image.dtype == np.dtype("uint16")
        assert image.dtype.isnative
        assert np.array_equal(image, data[1, 0, 0])


def test_a_run_of_frames_with_a_leading_axis_of_1_replays(tmp_path: Path) -> None:
    """The recorder takes a camera's (1, h, w) frames (and logs that shape): replayed as (h, w)."""
    from livescope.record import OmeZarrWriter

    img = _planes((1, 8, 8))
    info: Any = {
        "seq": 0, "index": {"t": 0}, "position": "p0", "channel": "BF", "x_um": 0.0,
        "y_um": 0.0, "z_um": 0.0, "exposure_ms": 10.0, "pixel_size_um": 0.65,
        "sample_time_s": 0.0, "runner_time_ms": 0.0, "shape": img.shape, "dtype": "uint16",
        "event": {},
    }  # fmt: skip
    with OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=0.65) as w:
        w.write(img, info)
    with open_dataset(tmp_path) as ds:
        assert ds.frames[0].shape == (8, 8)
        assert np.array_equal(ds.read(ds.frames[0].key), img[0])


def test_two_ctc_frames_of_one_number_are_refused_naming_both(tmp_path: Path) -> None:
    folder = _ctc(tmp_path / "01", {t: np.full((8, 8), t, np.uint16) for t in (0, 1)})
    tifffile.imwrite(folder / "t0001.tif", np.full((8, 8), 99, np.uint16))
    with pytest.raises(DatasetError, match=r"t001\.tif and t0001\.tif are both .*t=1"):
        open_dataset(folder)
