from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from livescope.record import OmeZarrWriter, read_frames
from livescope.schema import FrameInfo, LivescopeError


def _info(seq: int, t: int, c: str, pos: str = "p0", z: int = 0) -> FrameInfo:
    return FrameInfo(
        seq=seq,
        index={"t": t, "p": 0, "z": z},
        position=pos,
        channel=c,
        x_um=0.0,
        y_um=0.0,
        z_um=0.0,
        exposure_ms=10.0,
        pixel_size_um=0.65,
        sample_time_s=float(t),
        runner_time_ms=0.0,
        shape=(8, 8),
        dtype="uint16",
        event={},
    )


def test_axes_grow_with_dynamic_events(tmp_path: Path) -> None:
    w = OmeZarrWriter(tmp_path, channels=["Phase"], pixel_size_um=0.65)
    frames = {}
    plan = [
        (0, "Phase", "a", 0),
        (1, "Phase", "a", 0),
        (5, "Phase", "a", 0),  # t jumps
        (5, "DAPI", "a", 2),  # a channel and a z plane added mid-run
        (0, "Phase", "b", 0),
    ]  # a position added mid-run
    for seq, (t, c, pos, z) in enumerate(plan):
        img = np.full((8, 8), seq + 1, np.uint16)
        w.write(img, _info(seq, t, c, pos, z))
        frames[(t, c, pos, z)] = img
    w.close()
    root = zarr.open_group(tmp_path / "data.ome.zarr", mode="r")
    a = root["0/0"]
    assert a.shape == (6, 2, 3, 8, 8)
    assert a.metadata.dimension_names == ("t", "c", "z", "y", "x")
    assert int(a[5, 1, 2, 0, 0]) == 4
    assert int(a[3, 0, 0, 0, 0]) == 0  # never acquired: fill value, and absent from the log
    assert root["1/0"].shape == (1, 2, 1, 8, 8)  # channels are shared by all positions
    ome = root["0"].attrs["ome"]
    assert ome["version"] == "0.5"
    assert [c["label"] for c in ome["omero"]["channels"]] == ["Phase", "DAPI"]
    assert root.attrs["livescope"]["frames"] == 5
    log = read_frames(tmp_path)
    assert [f["seq"] for f in log] == list(range(5))
    assert {(f["index"]["t"], f["channel"]) for f in log} == {(t, c) for t, c, _, _ in plan}


def test_shape_mismatch_is_an_error(tmp_path: Path) -> None:
    with OmeZarrWriter(tmp_path, channels=["Phase"], pixel_size_um=1.0) as w:
        w.write(np.zeros((8, 8), np.uint16), _info(0, 0, "Phase"))
        with pytest.raises(LivescopeError, match="earlier frames"):
            w.write(np.zeros((4, 8), np.uint16), _info(1, 1, "Phase"))


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    OmeZarrWriter(tmp_path, channels=[], pixel_size_um=1.0).close()
    with pytest.raises(LivescopeError, match="already exists"):
        OmeZarrWriter(tmp_path, channels=[], pixel_size_um=1.0)


@pytest.mark.parametrize(
    ("codec", "compressor"),
    [
        pytest.param("blosc-zstd", "blosc", id="default-blosc-zstd"),
        pytest.param("zstd", "zstd", id="zstd"),
        pytest.param("none", None, id="none"),
    ],
)
def test_each_codec_keeps_the_pixels_exactly(
    tmp_path: Path, codec: str, compressor: str | None
) -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 65535, (32, 48), dtype=np.uint16)
    kw = {} if codec == "blosc-zstd" else {"codec": codec}
    with OmeZarrWriter(tmp_path, channels=["DAPI"], pixel_size_um=1.0, **kw) as w:
        w.write(img, _info(0, 0, "DAPI"))
    a = zarr.open_group(tmp_path / "data.ome.zarr", mode="r")["0/0"]
    np.testing.assert_array_equal(a[0, 0, 0], img)
    names = [c.to_dict()["name"] for c in a.metadata.codecs]
    assert names[0] == "bytes"
    assert names[1:] == ([compressor] if compressor else [])


def test_an_unknown_codec_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(LivescopeError, match=r"unknown recording codec 'lzma'.*blosc-zstd"):
        OmeZarrWriter(tmp_path, channels=[], pixel_size_um=1.0, codec="lzma")


@pytest.mark.parametrize("codec", ["blosc-zstd", "zstd", "none"])
@pytest.mark.parametrize("dtype", ["uint16", "uint8"])
def test_chunks_are_the_bytes_zarr_itself_writes(tmp_path: Path, codec: str, dtype: str) -> None:
    """The recorder encodes chunks itself; zarr, given the same array, writes the same bytes."""
    rng = np.random.default_rng(2)
    img = (rng.poisson(100, (37, 53)) + (rng.random((37, 53)) > 0.95) * 150).astype(dtype)
    with OmeZarrWriter(tmp_path / "ours", channels=["DAPI"], pixel_size_um=1.0, codec=codec) as w:
        w.write(img, _info(0, 2, "DAPI", z=1))
    ours = tmp_path / "ours" / "data.ome.zarr" / "0" / "0"
    theirs = zarr.create_array(
        tmp_path / "theirs.zarr", shape=(3, 1, 2, 37, 53), chunks=(1, 1, 1, 37, 53),
        dtype=dtype, fill_value=0, compressors=zarr.open_array(ours, mode="r").compressors or None,
    )  # fmt: skip
    theirs[2, 0, 1] = img
    key = "c/2/0/1/0/0"
    assert (ours / key).read_bytes() == (tmp_path / "theirs.zarr" / key).read_bytes()
    assert not list(ours.rglob(".*.tmp"))  # no temporary file left
    a = zarr.open_array(ours, mode="r")
    assert a.shape == (3, 1, 2, 37, 53)
    np.testing.assert_array_equal(a[2, 0, 1], img)


def test_a_frame_that_is_not_one_image_is_refused(tmp_path: Path) -> None:
    with OmeZarrWriter(tmp_path, channels=["Phase"], pixel_size_um=1.0) as w:
        w.write(np.ones((1, 8, 8), np.uint16), _info(0, 0, "Phase"))  # a leading 1 is fine
        with pytest.raises(LivescopeError, match=r"shape \(2, 8, 8\); one 2-D image"):
            w.write(np.ones((2, 8, 8), np.uint16), _info(1, 1, "Phase"))


def test_a_chunk_held_open_by_a_reader_is_replaced_once_it_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows refuses to replace a file another process has open: the writer tries again."""
    import os

    real = os.replace
    refused: list[str] = []

    def replace_once_refused(src: str, dst: str) -> None:
        if not refused:
            refused.append(str(dst))
            raise PermissionError(13, "the file is in use by another process", str(dst))
        real(src, dst)

    img = np.arange(64, dtype=np.uint16).reshape(8, 8)
    with OmeZarrWriter(tmp_path, channels=["DAPI"], pixel_size_um=1.0) as w:
        w.write(img, _info(0, 0, "DAPI"))  # zarr creates the array
        monkeypatch.setattr(os, "replace", replace_once_refused)
        w.write(img + 1, _info(1, 1, "DAPI"))  # the array grows, then its chunk
        monkeypatch.setattr(os, "replace", real)
    assert refused[0].endswith("zarr.json")
    a = zarr.open_group(tmp_path / "data.ome.zarr", mode="r")["0/0"]
    assert a.shape == (2, 1, 1, 8, 8)
    np.testing.assert_array_equal(a[1, 0, 0], img + 1)


def test_a_chunk_that_stays_locked_fails_the_write_with_the_os_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    def refuse(src: str, dst: str) -> None:
        raise PermissionError(13, "the file is in use by another process", str(dst))

    with OmeZarrWriter(tmp_path, channels=["DAPI"], pixel_size_um=1.0) as w:
        w.write(np.zeros((8, 8), np.uint16), _info(0, 0, "DAPI"))
        monkeypatch.setattr(os, "replace", refuse)
        with pytest.raises(PermissionError, match="in use"):
            w.write(np.zeros((8, 8), np.uint16), _info(1, 0, "DAPI"))
        monkeypatch.undo()
        assert w.frames_written == 1  # the refused frame is not logged as written
    assert not list((tmp_path / "data.ome.zarr").rglob(".*.tmp"))  # no temporary file left


def test_a_reader_waits_out_metadata_being_replaced_and_names_it_if_it_stays_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows cannot open a zarr.json the recorder is replacing: the reader tries again."""
    from livescope.record import RecordingReader

    img = np.arange(64, dtype=np.uint16).reshape(8, 8)
    with OmeZarrWriter(tmp_path, channels=["DAPI"], pixel_size_um=1.0) as w:
        w.write(img, _info(0, 0, "DAPI"))
    reader = RecordingReader(tmp_path)
    info = read_frames(tmp_path)[0]
    real = reader._group
    refusals = [2]

    def locked_for_a_moment(position: str) -> object:
        if refusals[0] > 0:
            refusals[0] -= 1
            raise PermissionError(13, "the file is in use by another process", "zarr.json")
        return real(position)

    monkeypatch.setattr(reader, "_group", locked_for_a_moment)
    np.testing.assert_array_equal(reader.read(info), img)
    assert refusals == [0]
    refusals[0] = 10**6
    with pytest.raises(LivescopeError, match=r"metadata cannot be opened: .*in use"):
        reader.read(info)
