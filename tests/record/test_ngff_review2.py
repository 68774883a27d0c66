"""Review of the OME-Zarr reader: tiles of only the fill value, damaged metadata, channels
without a label, a unit that is no word, a bioformats2raw layout's ``series``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import zarr

from livescope.record import DatasetError, FrameKey, open_dataset


def _image(
    group: Any,
    data: np.ndarray,
    *,
    zarr_format: Literal[2, 3] = 3,
    chunks: tuple[int, ...] | None = None,
    channels: list[dict[str, Any]] | None = None,
    axes: list[dict[str, Any]] | None = None,
    scale: list[float] | None = None,
) -> Any:
    """Write one NGFF image (0.5 on Zarr v3, 0.4 on v2) of t/c/z/y/x ``data`` into ``group``."""
    level: dict[str, Any] = {"path": "0"}
    if scale is not None:
        level["coordinateTransformations"] = [{"type": "scale", "scale": scale}]
    ms = {"axes": axes or [{"name": a} for a in "tczyx"], "datasets": [level]}
    meta: dict[str, Any] = {"multiscales": [ms]}
    if channels is not None:
        meta["omero"] = {"channels": channels}
    if zarr_format == 3:
        group.attrs["ome"] = {"version": "0.5", **meta}
    else:
        group.attrs.update({**meta, "multiscales": [{"version": "0.4", **ms}]})
    array = group.create_array(
        "0", shape=data.shape, chunks=chunks or (1, 1, 1, *data.shape[-2:]), dtype=data.dtype
    )
    array[...] = data
    return array


def _planes(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(1).integers(1, 200, shape).astype(np.uint16)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_tile_of_only_the_fill_value_in_every_plane_keeps_the_planes(
    tmp_path: Path, zarr_format: Literal[2, 3]
) -> None:
    # a tiled image with a corner of only the fill value (a mosaic's empty corner):
    # zarr-python stores no chunk for it, so every plane was "never written" and the
    # whole image refused ("no time point was written in full")
    data = _planes((3, 1, 1, 16, 16))
    data[..., :8, :8] = 0
    path = tmp_path / "tiles.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    _image(group, data, zarr_format=zarr_format, chunks=(1, 1, 1, 8, 8))
    with open_dataset(path) as ds:
        assert [f.key.t for f in ds.frames] == [0, 1, 2]
        for f in ds.frames:
            assert np.array_equal(ds.read(f.key), data[f.key.t, 0, 0])
        assert ds.warnings == [
            f"{path / '0'}: 1 y/x chunk(s) written in no plane replayed as blank (the "
            "array's fill value: zarr-python stores no chunk of only the fill value)"
        ]


def test_a_tile_missing_from_one_plane_only_still_leaves_it_out(tmp_path: Path) -> None:
    # (a write cut short, as before: only tiles no plane has are taken as blank)
    data = _planes((3, 1, 1, 16, 16))
    path = tmp_path / "tiles.zarr"
    _image(zarr.open_group(path, mode="w"), data, chunks=(1, 1, 1, 8, 8))
    (path / "0" / "c" / "1" / "0" / "0" / "1" / "1").unlink()
    with open_dataset(path) as ds:
        assert [f.key.t for f in ds.frames] == [0, 2]
        assert ds.warnings == [
            f"{path}: 1 of 3 planes never written (t=1 c=0 z=0); replaying t=0..2"
        ]


def _damage_level0_v3(root: Path) -> Path:
    (root / "0" / "zarr.json").write_text("{damaged")
    return root / "0"


def _damage_level0_v2(root: Path) -> Path:
    (root / "0" / ".zarray").write_text("{damaged")
    return root / "0"


def _damage_image_v3(root: Path) -> Path:
    (root / "1" / "zarr.json").write_text("{damaged")
    return root / "1"


def _damage_image_v2(root: Path) -> Path:
    (root / "1" / ".zattrs").write_text("{damaged")
    return root / "1"


@pytest.mark.parametrize(
    ("zarr_format", "layout", "damage"),
    [
        pytest.param(3, False, _damage_level0_v3, id="level-0-zarr.json"),
        pytest.param(2, False, _damage_level0_v2, id="level-0-.zarray"),
        pytest.param(3, True, _damage_image_v3, id="bioformats2raw-image-zarr.json"),
        pytest.param(2, True, _damage_image_v2, id="bioformats2raw-image-.zattrs"),
    ],
)
def test_damaged_zarr_metadata_is_a_dataset_error_naming_the_file(
    tmp_path: Path, zarr_format: Literal[2, 3], layout: bool, damage: Any
) -> None:
    # (a bare JSONDecodeError, naming no file)
    path = tmp_path / "img.zarr"
    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    if layout:
        root.attrs.update({"ome": {"version": "0.5", "bioformats2raw.layout": 3}}
                          if zarr_format == 3 else {"bioformats2raw.layout": 3})  # fmt: skip
        for k in ("0", "1"):
            _image(root.create_group(k), _planes((1, 1, 1, 8, 8)), zarr_format=zarr_format)
    else:
        _image(root, _planes((1, 1, 1, 8, 8)), zarr_format=zarr_format)
    where = damage(path)
    with pytest.raises(DatasetError) as err:
        open_dataset(path)
    assert str(err.value).startswith(f"{where}: its Zarr metadata cannot be read (JSONDecodeError")


@pytest.mark.parametrize(
    ("labels", "channels"),
    [
        pytest.param(["c1", None], ["c1", "c1_1"], id="a-label-that-is-the-next-channels-name"),
        pytest.param([None, "c0"], ["c0_1", "c0"], id="a-label-that-is-the-last-channels-name"),
        pytest.param(["GFP", "GFP"], ["GFP", "c1"], id="one-label-twice"),
    ],
)
def test_a_channel_without_a_label_of_its_own_does_not_take_anothers(
    tmp_path: Path, labels: list[str | None], channels: list[str]
) -> None:
    # two channels of one name: both frames had one key, and a replay served one as both
    data = _planes((2, 2, 1, 8, 8))
    path = tmp_path / "img.zarr"
    listed = [{"label": label} if label else {} for label in labels]
    _image(zarr.open_group(path, mode="w"), data, channels=listed)
    with open_dataset(path) as ds:
        assert ds.channels == channels
        assert len({f.key for f in ds.frames}) == len(ds.frames) == 4
        for f in ds.frames:
            c = channels.index(f.key.channel)
            assert np.array_equal(ds.read(f.key), data[f.key.t, c, 0])


def test_a_unit_that_is_not_a_word_is_said_not_a_traceback(tmp_path: Path) -> None:
    # (a TypeError: unhashable type 'list')
    path = tmp_path / "img.zarr"
    axes = [{"name": a} for a in "tczy"] + [{"name": "x", "unit": ["micrometer"]}]
    _image(zarr.open_group(path, mode="w"), _planes((2, 1, 1, 8, 8)), axes=axes,
           scale=[1.0, 1.0, 1.0, 0.5, 0.5])  # fmt: skip
    with open_dataset(path) as ds:
        assert len(ds.frames) == 2
        assert ds.frames[0].pixel_size_um is None
        assert "the x axis's unit \"['micrometer']\" is not one livescope knows" in "\n".join(
            ds.warnings
        )


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_bioformats2raw_layout_finds_the_images_its_series_lists(
    tmp_path: Path, zarr_format: Literal[2, 3]
) -> None:
    # NGFF: the OME group's "series" lists the images' paths, of any name; only groups
    # named 0, 1, ... were looked for ("bioformats2raw layout without an image group")
    path = tmp_path / "b2r.zarr"
    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    ome = root.create_group("OME")
    if zarr_format == 3:
        root.attrs["ome"] = {"version": "0.5", "bioformats2raw.layout": 3}
        ome.attrs["ome"] = {"version": "0.5", "series": ["B2", "A1"]}
    else:
        root.attrs["bioformats2raw.layout"] = 3
        ome.attrs["series"] = ["B2", "A1"]
    data = {k: _planes((2, 1, 1, 8, 8)) + i for i, k in enumerate(["B2", "A1"])}
    for k, planes in data.items():
        _image(root.create_group(k), planes, zarr_format=zarr_format)
    with open_dataset(path) as ds:
        assert ds.positions == ["B2", "A1"]  # (in the order listed)
        assert len(ds.frames) == 4
        for k in ("A1", "B2"):
            assert np.array_equal(ds.read(FrameKey(k, 1, "c0")), data[k][1, 0, 0])


def test_axes_named_in_capitals_replay(tmp_path: Path) -> None:
    # iohub (shrimPy's recorder) names its axes T, C, Z, Y, X: refused as lacking y/x
    data = _planes((2, 2, 3, 8, 8))
    path = tmp_path / "img.zarr"
    axes = [{"name": "T", "unit": "second"}, {"name": "C"}] + [
        {"name": a, "unit": "micrometer"} for a in "ZYX"
    ]
    channels = [{"label": "BF"}, {"label": "GFP"}]
    _image(zarr.open_group(path, mode="w", zarr_format=2), data, zarr_format=2, axes=axes,
           scale=[30.0, 1.0, 2.0, 0.5, 0.5], channels=channels)  # fmt: skip
    with open_dataset(path) as ds:
        assert len(ds.frames) == 12
        assert ds.frames[1].key == FrameKey("p0", 0, "BF", 1)  # (t, c, z order)
        f = next(f for f in ds.frames if f.key == FrameKey("p0", 1, "GFP", 2))
        assert (f.sample_time_s, f.pixel_size_um) == (30.0, 0.5)
        assert np.array_equal(ds.read(f.key), data[1, 1, 2])
