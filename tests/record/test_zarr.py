from __future__ import annotations

from pathlib import Path
from typing import Any

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
        w.write(np.zeros((8, 8), np.uint16), _info(0, 1, "DAPI"))  # the array: t = 0, 1
        monkeypatch.setattr(os, "replace", refuse)
        with pytest.raises(PermissionError, match="in use"):  # t = 0: only its chunk is written
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


def _refusing_once(real: Any, *targets: Path) -> tuple[Any, list[Path]]:
    """An os.replace refusing the first replace onto each of ``targets``, as Windows does."""
    refused: list[Path] = []

    def replace(src: str, dst: str) -> None:
        if Path(dst) in targets and Path(dst) not in refused:
            refused.append(Path(dst))
            raise PermissionError(13, "the file is in use by another process", str(dst))
        real(src, dst)

    return replace, refused


def test_attributes_held_open_by_a_reader_are_replaced_once_they_are_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new channel's and the closing attributes are retried like chunks (Windows locks)."""
    import os

    store = tmp_path / "data.ome.zarr"
    replace, refused = _refusing_once(os.replace, store / "0" / "zarr.json", store / "zarr.json")
    w = OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0)
    w.write(np.zeros((8, 8), np.uint16), _info(0, 0, "BF"))
    monkeypatch.setattr(os, "replace", replace)
    w.write(np.ones((8, 8), np.uint16), _info(1, 0, "GFP"))  # a triggered channel
    w.close()
    monkeypatch.undo()
    assert refused == [store / "0" / "zarr.json", store / "zarr.json"]
    root = zarr.open_group(store, mode="r")
    assert [c["label"] for c in root["0"].attrs["ome"]["omero"]["channels"]] == ["BF", "GFP"]
    assert root.attrs["livescope"]["frames"] == 2
    np.testing.assert_array_equal(root["0/0"][0, 1, 0], np.ones((8, 8), np.uint16))


def test_a_channel_whose_attributes_stay_locked_is_taken_in_by_its_next_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from livescope.record import RecordingReader

    group = tmp_path / "data.ome.zarr" / "0" / "zarr.json"
    real = os.replace

    def refuse_the_group(src: str, dst: str) -> None:
        if Path(dst) == group:
            raise PermissionError(13, "the file is in use by another process", str(dst))
        real(src, dst)

    with OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0) as w:
        w.write(np.zeros((8, 8), np.uint16), _info(0, 0, "BF"))
        monkeypatch.setattr(os, "replace", refuse_the_group)
        with pytest.raises(PermissionError, match="in use"):
            w.write(np.ones((8, 8), np.uint16), _info(1, 0, "GFP"))
        monkeypatch.undo()
        assert (w.channels, w.frames_written) == (["BF"], 1)  # the refused frame: not taken
        w.write(np.full((8, 8), 7, np.uint16), _info(2, 1, "GFP"))
        w.write(np.full((8, 8), 8, np.uint16), _info(3, 1, "BF"))
    reader = RecordingReader(tmp_path)
    assert [int(reader.read(i)[0, 0]) for i in read_frames(tmp_path)] == [0, 7, 8]
    assert zarr.open_group(tmp_path / "data.ome.zarr", mode="r")["0/0"].shape[1] == 2


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_every_position_holds_every_channel_in_its_pixel_types_window(
    tmp_path: Path, dtype: type[np.unsignedinteger[Any]]
) -> None:
    """A channel first seen at one position widens every position's c axis (napari needs it)."""
    top = int(np.iinfo(dtype).max)
    w = OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0, interval_s=0)
    w.write(np.full((8, 8), 200, dtype), _info(0, 0, "BF", "A"))
    w.write(np.full((8, 8), 100, dtype), _info(1, 0, "GFP", "B"))  # GFP first seen at B
    root = zarr.open_group(tmp_path / "data.ome.zarr", mode="r")
    assert root["0/0"].shape == (1, 2, 1, 8, 8)  # at once, not only when A takes a frame
    w.close()
    for k in ("0", "1"):
        channels = root[k].attrs["ome"]["omero"]["channels"]
        assert [c["label"] for c in channels] == ["BF", "GFP"]
        assert root[f"{k}/0"].shape[1] == len(channels)
        assert channels[0]["window"] == {"start": 0, "end": top, "min": 0, "max": top}
    assert root["1/0"][0, 0, 0, 0, 0] == 0  # B's BF, never taken: the fill value


def test_each_position_keeps_the_t_scale_of_its_own_times(tmp_path: Path) -> None:
    # the plan's p0 every 120 s; a close-up's sub-sequence, whose time points count
    # from 0 too, every 30 s from 500 s on
    with OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=0.5, interval_s=120) as w:
        seq = 0
        for t in range(3):
            w.write(
                np.zeros((8, 8), np.uint16), {**_info(seq, t, "BF"), "sample_time_s": 120.0 * t}
            )
            seq += 1
        for t in range(4):
            info = {**_info(seq, t, "BF", pos="p0~closeup-0"), "sample_time_s": 500.0 + 30 * t}
            w.write(np.zeros((8, 8), np.uint16), info)
            seq += 1
    root = zarr.open_group(tmp_path / "data.ome.zarr", mode="r")
    scales = [root[k].attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
              [0]["scale"][0] for k in ("0", "1")]  # fmt: skip
    assert scales == [120.0, 30.0]


def test_the_display_window_ends_at_the_cameras_largest_count(tmp_path: Path) -> None:
    w = OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0, bit_depth=12)
    w.write(np.full((8, 8), 200, np.uint16), _info(0, 0, "BF", "A"))
    w.close()
    root = zarr.open_group(tmp_path / "data.ome.zarr", mode="r")
    window = root["0"].attrs["ome"]["omero"]["channels"][0]["window"]
    assert window == {"start": 0, "end": 4095, "min": 0, "max": 65535}


@pytest.mark.parametrize(
    ("interval_s", "sample_s", "runner_ms", "scale"),
    [
        pytest.param(0, [0.0, 0.05, 0.1], [0.0] * 3, 0.05, id="as-fast-as-possible"),
        pytest.param(1.0, [0.0, 5.0, 605.0], [0.0] * 3, 302.5, id="phases-5s-then-600s"),
        pytest.param(60, [0.0, 60.0, 120.0], [0.0] * 3, 60.0, id="an-interval-kept"),
        pytest.param(0, [0.0] * 3, [0.0] * 3, 1.0, id="simulated-as-fast-as-possible"),
        pytest.param(30, [0.0], [0.0], 30.0, id="one-time-point-the-interval"),
        pytest.param(0, [None] * 3, [0.0, 200.0, 400.0], 0.2, id="runner-time-without-sample"),
    ],
)  # fmt: skip
def test_the_t_scale_is_the_mean_spacing_of_the_logged_times(
    tmp_path: Path,
    interval_s: float,
    sample_s: list[float | None],
    runner_ms: list[float],
    scale: float,
) -> None:
    with OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=0.5, interval_s=interval_s) as w:
        for t, (sample, runner) in enumerate(zip(sample_s, runner_ms, strict=True)):
            info: FrameInfo = {**_info(t, t, "BF"), "sample_time_s": sample}
            w.write(np.zeros((8, 8), np.uint16), {**info, "runner_time_ms": runner})
    attrs = zarr.open_group(tmp_path / "data.ome.zarr", mode="r")["0"].attrs["ome"]
    transforms = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert transforms == [{"type": "scale", "scale": [scale, 1.0, 1.0, 0.5, 0.5]}]


def test_a_second_frame_at_one_place_is_refused_not_written_over_the_first(
    tmp_path: Path,
) -> None:
    with OmeZarrWriter(tmp_path, channels=["GFP"], pixel_size_um=1.0) as w:
        w.write(np.full((8, 8), 1, np.uint16), _info(0, 0, "GFP", z=1))
        with pytest.raises(LivescopeError, match=r"frame 1 .*t=0, channel 'GFP', z=1.*earlier"):
            w.write(np.full((8, 8), 2, np.uint16), _info(1, 0, "GFP", z=1))
        w.write(np.full((8, 8), 3, np.uint16), _info(2, 0, "GFP", "p1", z=1))  # another place
    from livescope.record import RecordingReader

    reader = RecordingReader(tmp_path)
    assert [int(reader.read(i)[0, 0]) for i in read_frames(tmp_path)] == [1, 3]


def test_a_failing_sync_of_the_frame_log_at_close_still_writes_the_final_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network share may refuse fsync: the channels, t scale and frame count are written."""
    import os

    w = OmeZarrWriter(tmp_path, channels=["BF"], pixel_size_um=1.0, interval_s=0)
    for t in range(3):
        w.write(np.zeros((8, 8), np.uint16), {**_info(t, t, "BF"), "sample_time_s": 30.0 * t})

    def refuse(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(OSError, match="Input/output error"):
        w.close()
    monkeypatch.undo()
    assert w._log.closed
    root = zarr.open_group(tmp_path / "data.ome.zarr", mode="r")
    assert root.attrs["livescope"]["frames"] == 3
    scale = root["0"].attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert scale[0]["scale"][0] == 30.0
    assert len(read_frames(tmp_path)) == 3
