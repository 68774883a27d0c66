"""An OME-TIFF's planes are replayed at the times its metadata says they were taken."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.record import open_dataset

_NS = 'xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"'


def _write(path: Path, planes: str, *, pixels: str = "", size_t: int = 3) -> Path:
    """``size_t`` 32x32 time points of one channel "DAPI"; ``planes``: its Plane elements."""
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><OME {_NS} UUID="urn:uuid:1">'
        '<Image ID="Image:0" Name="P"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" '
        f'Type="uint16" SizeX="32" SizeY="32" SizeC="1" SizeZ="1" SizeT="{size_t}" '
        f'PhysicalSizeX="0.5" TimeIncrement="60" {pixels}>'
        '<Channel ID="Channel:0:0" Name="DAPI" SamplesPerPixel="1"/>'
        f'<TiffData IFD="0" PlaneCount="{size_t}"/>{planes}</Pixels></Image></OME>'
    )
    with tifffile.TiffWriter(path) as tw:
        for t in range(size_t):
            tw.write(np.full((32, 32), t, np.uint16), description=xml.encode() if t == 0 else None,
                     metadata=None)  # fmt: skip
    return path


def _planes(*deltas: str, unit: str = "s") -> str:
    return "".join(
        f'<Plane TheT="{t}" TheC="0" TheZ="0" DeltaT="{d}" DeltaTUnit="{unit}"/>'
        for t, d in enumerate(deltas)
    )


def test_planes_are_replayed_at_their_delta_t(tmp_path: Path) -> None:
    # (an event-triggered acquisition's time points are not evenly spaced: they were
    # replayed TimeIncrement apart, and every rule's cooldown and rate timed wrong)
    path = _write(tmp_path / "a.ome.tif", _planes("0", "45500", "200000", unit="ms"))
    with open_dataset(path) as ds:
        assert [f.sample_time_s for f in ds.frames] == pytest.approx([0.0, 45.5, 200.0])
        assert ds.warnings == []


def test_without_delta_t_time_points_are_time_increment_apart(tmp_path: Path) -> None:
    with open_dataset(_write(tmp_path / "a.ome.tif", "")) as ds:
        assert [f.sample_time_s for f in ds.frames] == [0.0, 60.0, 120.0]
        assert ds.warnings == []


@pytest.mark.parametrize(
    ("planes", "why"),
    [
        pytest.param(
            _planes("0", "300", "200"),
            "time point 2 was taken (DeltaT) before time point 1 ended",
            id="backwards",
        ),
        pytest.param(
            _planes("0", "30") + '<Plane TheT="2" TheC="0" TheZ="0"/>',
            "the plane at T=2 C=0 Z=0 has no DeltaT",
            id="some-missing",
        ),
        pytest.param(
            _planes("0", "30", "90", unit="fortnight"), "is no time livescope knows", id="unit"
        ),
        pytest.param(_planes("0", "-30", "90"), "is no time livescope knows", id="negative"),
    ],
)
def test_delta_t_that_cannot_be_trusted_is_said_and_not_used(
    tmp_path: Path, planes: str, why: str
) -> None:
    with open_dataset(_write(tmp_path / "a.ome.tif", planes)) as ds:
        assert [f.sample_time_s for f in ds.frames] == [0.0, 60.0, 120.0]
        (warning,) = ds.warnings
        assert "the planes' times (DeltaT) are not used: " in warning
        assert why in warning


def test_pixels_that_are_not_square_are_said(tmp_path: Path) -> None:
    # (only PhysicalSizeX was read: a Y of another size went unseen)
    path = _write(tmp_path / "a.ome.tif", "", pixels='PhysicalSizeY="0.65"')
    with open_dataset(path) as ds:
        assert ds.frames[0].pixel_size_um == 0.5
        assert ds.warnings == [
            f"{path}: its pixels are not square (PhysicalSizeX 0.5 um, PhysicalSizeY 0.65 um); "
            "replayed as 0.5 um both ways"
        ]
    with open_dataset(_write(tmp_path / "b.ome.tif", "", pixels='PhysicalSizeY="0.5"')) as ds:
        assert ds.warnings == []


def test_delta_t_of_only_some_planes_is_not_mixed_with_evenly_spaced_times(
    tmp_path: Path,
) -> None:
    # OME may list only some planes: the others fell back to t x TimeIncrement beside
    # DeltaT's times (two clocks: time could run backwards)
    path = _write(tmp_path / "a.ome.tif", _planes("500", "530"))
    with open_dataset(path) as ds:
        assert [f.sample_time_s for f in ds.frames] == [0.0, 60.0, 120.0]
        (warning,) = ds.warnings
        assert "1 of its 3 planes have no DeltaT (T=2 C=0 Z=0, ...)" in warning
