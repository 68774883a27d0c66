"""OME-TIFF files whose OME-XML and pages disagree, units, damaged metadata and planes."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.record import DatasetError, FrameKey, open_dataset

_NS = 'xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"'


def _image(
    i: int, name: str, channels: list[str], planes: int, *, attrs: str = "", tiff_data: str = ""
) -> str:
    """One OME ``Image`` of 16x16 uint16 planes, T (``planes / len(channels)``) x C."""
    chans = "".join(
        f'<Channel ID="Channel:{i}:{k}" Name="{c}" SamplesPerPixel="1"/>'
        for k, c in enumerate(channels)
    )
    size_t = planes // len(channels)
    tiff_data = tiff_data or f'<TiffData IFD="0" PlaneCount="{planes}"/>'
    return (
        f'<Image ID="Image:{i}" Name="{name}"><Pixels ID="Pixels:{i}" DimensionOrder="XYCZT" '
        f'Type="uint16" SizeX="16" SizeY="16" SizeC="{len(channels)}" SizeZ="1" '
        f'SizeT="{size_t}" {attrs}>{chans}{tiff_data}</Pixels></Image>'
    )


def _ome(uuid: str, *images: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><OME {_NS} UUID="{uuid}">{"".join(images)}</OME>'


def _write(path: Path, xml: str, values: list[int]) -> Path:
    """Write one 16x16 page of each value, the first described by ``xml``."""
    with tifffile.TiffWriter(path) as tw:
        for k, value in enumerate(values):
            description = xml.encode() if k == 0 else None
            tw.write(np.full((16, 16), value, np.uint16), description=description, metadata=None)
    return path


def test_planes_listed_but_not_in_the_file_are_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # an acquisition stopped early: the XML lists 3 time points, the file holds 2
    xml = _ome("urn:uuid:1", _image(0, "Pos0", ["BF"], 3, attrs='PhysicalSizeX="0.5"'))
    path = _write(tmp_path / "short.ome.tif", xml, [1, 2])
    with caplog.at_level(logging.CRITICAL, "tifffile"), open_dataset(path) as ds:
        assert [f.key.t for f in ds.frames] == [0, 1]
        assert ds.warnings == [
            f"{path}: 1 of 3 planes its OME metadata lists are not in the file (t=2 c=0 z=0); "
            "replaying without them"
        ]
        assert [int(ds.read(f.key)[0, 0]) for f in ds.frames] == [1, 2]
        with pytest.raises(DatasetError, match=r"short\.ome\.tif: no recorded frame"):
            ds.read(FrameKey("Pos0", 2, "BF"))
    with pytest.raises(DatasetError, match=r"short\.ome\.tif: the dataset is closed"):
        ds.read(ds.frames[0].key)


def test_an_ome_tiff_none_of_whose_planes_is_in_the_file_is_refused(tmp_path: Path) -> None:
    xml = _ome("urn:uuid:1", _image(0, "Pos0", ["BF"], 2, tiff_data='<TiffData IFD="5"/>'))
    path = _write(tmp_path / "empty.ome.tif", xml, [1])
    with pytest.raises(DatasetError, match=r"empty\.ome\.tif: none of the planes its OME metadata"):
        open_dataset(path)


def test_a_plane_that_cannot_be_decoded_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "z.ome.tif"
    data = np.random.default_rng(0).integers(0, 60000, (2, 64, 64), dtype=np.uint16)
    tifffile.imwrite(path, data, ome=True, compression="zlib", metadata={"axes": "TYX"})
    with tifffile.TiffFile(path) as tf:
        offset, count = tf.pages[1].dataoffsets[0], tf.pages[1].databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[offset : offset + count] = bytes(count)
    path.write_bytes(bytes(raw))
    with open_dataset(path) as ds:
        assert np.array_equal(ds.read(ds.frames[0].key), data[0])
        with pytest.raises(DatasetError, match=r"z\.ome\.tif: .*t=1.* cannot be read"):
            ds.read(ds.frames[1].key)


def _pos1_file(tmp_path: Path, names: tuple[str, str]) -> Path:
    """Position 1's file of a two-file OME-TIFF, without position 0's (BF, GFP pages)."""
    xml = _ome(
        "urn:uuid:bbbb",
        _image(0, names[0], ["GFP", "BF"], 2, attrs='PhysicalSizeX="6.5"',
               tiff_data='<TiffData IFD="0" PlaneCount="2">'
               '<UUID FileName="Pos0.ome.tif">urn:uuid:aaaa</UUID></TiffData>'),
        _image(1, names[1], ["BF", "GFP"], 2, attrs='PhysicalSizeX="0.65"',
               tiff_data='<TiffData IFD="0" PlaneCount="2">'
               '<UUID FileName="Pos1.ome.tif">urn:uuid:bbbb</UUID></TiffData>'),
    )  # fmt: skip
    return _write(tmp_path / "Pos1.ome.tif", xml, [100, 900])


def test_a_series_takes_channels_and_pixel_size_from_the_image_of_its_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # tifffile leaves Pos0 out (its file is missing): series 0 is image 1, not image 0
    path = _pos1_file(tmp_path, ("Pos0", "Pos1"))
    with caplog.at_level(logging.CRITICAL, "tifffile"), open_dataset(path) as ds:
        assert ds.positions == ["Pos1"]
        got = {f.key.channel: (int(ds.read(f.key)[0, 0]), f.pixel_size_um) for f in ds.frames}
        assert got == {"BF": (100, 0.65), "GFP": (900, 0.65)}
        assert ds.warnings == [
            f"{path}: 1 of 2 images its OME metadata lists have no plane in the file ('Pos0'; "
            "a file of a multi-file OME-TIFF missing?); replaying without them"
        ]


def test_series_that_cannot_be_matched_to_their_images_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _pos1_file(tmp_path, ("Pos", "Pos"))  # no name of its own: which image is it?
    with (
        caplog.at_level(logging.CRITICAL, "tifffile"),
        pytest.raises(DatasetError, match=r"Pos1\.ome\.tif: its OME metadata describes 2 images, "
                      r"the file holds planes of 1"),
    ):  # fmt: skip
        open_dataset(path)


_NM = 'PhysicalSizeX="325" PhysicalSizeXUnit="nm"'


@pytest.mark.parametrize(
    ("attrs", "pixel_um", "step_s"),
    [
        pytest.param('PhysicalSizeX="0.325" TimeIncrement="2"', 0.325, 2.0, id="defaults-um-s"),
        pytest.param(f'{_NM} TimeIncrement="500" TimeIncrementUnit="ms"', 0.325, 0.5, id="nm-ms"),
        pytest.param('PhysicalSizeX="0.325" PhysicalSizeXUnit="\u00b5m"', 0.325, 1.0, id="micro"),
        pytest.param('PhysicalSizeX="0.325" PhysicalSizeXUnit="\u03bcm"', 0.325, 1.0, id="mu"),
        pytest.param('PhysicalSizeX="0.325" PhysicalSizeXUnit="um"', 0.325, 1.0, id="um"),
        pytest.param('PhysicalSizeX="0.000325" PhysicalSizeXUnit="mm"', 0.325, 1.0, id="mm"),
        pytest.param('PhysicalSizeX="0.0000325" PhysicalSizeXUnit="cm"', 0.325, 1.0, id="cm"),
        pytest.param('PhysicalSizeX="3.25e-7" PhysicalSizeXUnit="m"', 0.325, 1.0, id="m"),
        pytest.param('PhysicalSizeX="325000" PhysicalSizeXUnit="pm"', 0.325, 1.0, id="pm"),
        pytest.param('PhysicalSizeX="3250" PhysicalSizeXUnit="\u00c5"', 0.325, 1.0, id="angstrom"),
        pytest.param('PhysicalSizeX="3250" PhysicalSizeXUnit="\u212b"', 0.325, 1.0, id="A-sign"),
        pytest.param(f'{_NM} TimeIncrement="2" TimeIncrementUnit="s"', 0.325, 2.0, id="s"),
        pytest.param(
            f'{_NM} TimeIncrement="2e6" TimeIncrementUnit="\u00b5s"', 0.325, 2.0, id="micro-s"
        ),
        pytest.param(f'{_NM} TimeIncrement="2e6" TimeIncrementUnit="us"', 0.325, 2.0, id="us"),
        pytest.param(f'{_NM} TimeIncrement="2e9" TimeIncrementUnit="ns"', 0.325, 2.0, id="ns"),
        pytest.param(f'{_NM} TimeIncrement="1.5" TimeIncrementUnit="min"', 0.325, 90.0, id="min"),
        pytest.param(f'{_NM} TimeIncrement="0.5" TimeIncrementUnit="h"', 0.325, 1800.0, id="h"),
    ],
)
def test_ome_units_of_length_and_time_are_converted(
    tmp_path: Path, attrs: str, pixel_um: float, step_s: float
) -> None:
    xml = _ome("urn:uuid:1", _image(0, "A", ["G"], 2, attrs=attrs))
    path = _write(tmp_path / "u.ome.tif", xml, [1, 2])
    with open_dataset(path) as ds:
        assert [f.pixel_size_um for f in ds.frames] == pytest.approx([pixel_um] * 2)
        assert [f.sample_time_s for f in ds.frames] == pytest.approx([0.0, step_s])
        assert ds.warnings == []


@pytest.mark.parametrize(
    ("attrs", "pixel_um", "warning"),
    [
        pytest.param(
            'PhysicalSizeX="1" PhysicalSizeXUnit="pixel" TimeIncrement="2"', None,
            "PhysicalSizeXUnit 'pixel' is not a unit of length livescope knows; replayed "
            "without a pixel size (--pixel-size gives one)",
            id="length",
        ),
        pytest.param(
            'PhysicalSizeX="0.5" TimeIncrement="2" TimeIncrementUnit="fortnight"', 0.5,
            "TimeIncrementUnit 'fortnight' is not a unit of time livescope knows; time points "
            "replayed 3 s apart (--interval-s)",
            id="time",
        ),
    ],
)  # fmt: skip
def test_an_unknown_unit_is_not_read_and_said_in_a_warning(
    tmp_path: Path, attrs: str, pixel_um: float | None, warning: str
) -> None:
    xml = _ome("urn:uuid:1", _image(0, "A", ["G"], 2, attrs=attrs))
    path = _write(tmp_path / "u.ome.tif", xml, [1, 2])
    with open_dataset(path, interval_s=3.0) as ds:
        assert [f.pixel_size_um for f in ds.frames] == [pixel_um] * 2
        step = 3.0 if "fortnight" in attrs else 2.0
        assert [f.sample_time_s for f in ds.frames] == [0.0, step]
        assert ds.warnings == [f"{path}: {warning}"]


def test_a_pixel_size_that_is_not_a_number_is_refused_naming_the_frame(tmp_path: Path) -> None:
    xml = _ome("urn:uuid:1", _image(0, "A", ["G"], 1, attrs='PhysicalSizeX="n/a"'))
    path = _write(tmp_path / "nan.ome.tif", xml, [1])
    with pytest.raises(DatasetError, match=r"series 0 plane 0 records a pixel size of nan"):
        open_dataset(path)
    with open_dataset(path, pixel_size_um=0.5) as ds:
        assert math.isclose(ds.frames[0].pixel_size_um or 0, 0.5)


@pytest.mark.parametrize(
    ("binary_only", "master", "message"),
    [
        pytest.param(
            '<BinaryOnly MetadataFile="run_Pos0.ome.tif" UUID="urn:uuid:1"/>', False,
            r"\(positions, times, channels\) is in run_Pos0\.ome\.tif \(BinaryOnly OME-XML\), "
            r"which is not beside it; open that file, with the dataset's other files beside it",
            id="metadata-file-missing",
        ),
        pytest.param(
            '<BinaryOnly MetadataFile="run_Pos0.ome.tif" UUID="urn:uuid:1"/>', True,
            r"\(positions, times, channels\) is in run_Pos0\.ome\.tif \(BinaryOnly OME-XML\); "
            r"open .*run_Pos0\.ome\.tif instead",
            id="metadata-file-beside",
        ),
        pytest.param(
            '<BinaryOnly UUID="urn:uuid:1"/>', False,
            r"is in another file, which its OME-XML \(BinaryOnly\) does not name",
            id="metadata-file-unnamed",
        ),
    ],
)  # fmt: skip
def test_a_binary_only_file_of_a_multi_file_ome_tiff_names_the_file_with_the_metadata(
    tmp_path: Path, binary_only: str, master: bool, message: str
) -> None:
    if master:
        xml = _ome("urn:uuid:1", _image(0, "Pos0", ["BF"], 1))
        _write(tmp_path / "run_Pos0.ome.tif", xml, [1])
    xml = f'<?xml version="1.0" encoding="UTF-8"?><OME {_NS} UUID="urn:uuid:2">{binary_only}</OME>'
    path = _write(tmp_path / "run_Pos1.ome.tif", xml, [2])
    prefix = r"run_Pos1\.ome\.tif: one file of a multi-file OME-TIFF whose metadata "
    with pytest.raises(DatasetError, match=prefix + message):
        open_dataset(path)


def test_ome_xml_that_is_not_well_formed_is_a_clear_error(tmp_path: Path) -> None:
    # a writer that did not escape '&' in a channel name
    xml = _ome("urn:uuid:1", _image(0, "A", ["GFP & RFP"], 1))
    path = _write(tmp_path / "bad.ome.tif", xml, [1])
    with pytest.raises(
        DatasetError, match=r"bad\.ome\.tif: its OME metadata is not well-formed XML \(not "
    ):
        open_dataset(path)


def test_ome_xml_that_describes_no_image_is_a_clear_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "none.ome.tif", _ome("urn:uuid:1"), [1])
    with pytest.raises(DatasetError, match=r"none\.ome\.tif: its OME metadata describes no image"):
        open_dataset(path)
