"""Recorded files as other tools write them: Micro-Manager MMStack, multi-file OME, stage places."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.record import DatasetError, open_dataset

_NS = 'xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"'
_C, _Z, _T, _P, _H, _W = 2, 2, 4, 2, 6, 5  # channels, planes, time points, positions; px
_CHANNELS = ("DAPI", "GFP")

Coords = tuple[int, int, int, int]  # (channel, z, time, position): Micro-Manager's index map


def _value(c: int, z: int, t: int, p: int) -> int:
    """The value every pixel of one plane holds: its coordinates, to check where it went."""
    return 1000 * p + 100 * t + 10 * c + z


def _entry(tag: int, kind: int, count: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag, kind, count) + value


def _short(v: int) -> bytes:
    return struct.pack("<HH", v, 0)


def _long(v: int) -> bytes:
    return struct.pack("<I", v)


def _write_mmstack(path: Path, planes: list[Coords], summary: dict[str, object],
                   descriptions: tuple[str, ...]) -> None:  # fmt: skip
    """One file as Micro-Manager's MultipageTiffWriter lays it out.

    Its header (index map, display settings, comments, summary) right after
    TIFF's; each plane's IFD of 13 entries (162 bytes) followed by its pixels;
    ``descriptions`` (OME-XML, ImageJ's) in the first IFD; the index map at the end.
    """
    summary_bytes = json.dumps(summary).encode()
    buf = bytearray(b"II" + struct.pack("<HI", 42, 0) + bytes(32) + summary_bytes)
    ifds: list[int] = []
    next_at = 4  # where the offset of the next IFD goes
    for k, coords in enumerate(planes):
        buf += b"\0" * (len(buf) % 2)
        at = len(buf)
        struct.pack_into("<I", buf, next_at, at)
        ifds.append(at)
        texts = [d.encode() + b"\0" for d in descriptions] if k == 0 else []
        meta = json.dumps(dict(zip(("ChannelIndex", "SliceIndex", "FrameIndex", "PositionIndex"),
                                   coords, strict=True))).encode() + b"\0"  # fmt: skip
        n = 13 + len(texts)
        pixels_at = at + 2 + 12 * n + 4
        pixels = np.full((_H, _W), _value(*coords), "<u2").tobytes()
        extra = bytearray()

        def out(b: bytes, base: int = pixels_at + len(pixels), extra: bytearray = extra) -> bytes:
            offset = base + len(extra)
            extra.extend(b + b"\0" * (len(b) % 2))
            return _long(offset)

        entries = [_entry(256, 4, 1, _long(_W)), _entry(257, 4, 1, _long(_H)),
                   _entry(258, 3, 1, _short(16)), _entry(259, 3, 1, _short(1)),
                   _entry(262, 3, 1, _short(1))]  # fmt: skip
        entries += [_entry(270, 2, len(t), out(t)) for t in texts]
        entries += [_entry(273, 4, 1, _long(pixels_at)), _entry(277, 3, 1, _short(1)),
                    _entry(278, 4, 1, _long(_H)), _entry(279, 4, 1, _long(len(pixels))),
                    _entry(282, 5, 1, out(struct.pack("<II", 1, 1))),
                    _entry(283, 5, 1, out(struct.pack("<II", 1, 1))),
                    _entry(296, 3, 1, _short(1)),
                    _entry(51123, 2, len(meta), out(meta))]  # fmt: skip
        buf += struct.pack("<H", n) + b"".join(entries)
        next_at = len(buf)
        buf += _long(0) + pixels + extra
    index_at = len(buf)
    buf += struct.pack("<II", 3453623, len(planes))
    for coords, at in zip(planes, ifds, strict=True):
        buf += struct.pack("<5I", *coords, at)
    display_at = len(buf)
    buf += struct.pack("<II", 347834724, 2) + b"[]"
    comments_at = len(buf)
    buf += struct.pack("<II", 84720485, 2) + b"{}"
    struct.pack_into("<8I", buf, 8, 54773648, index_at, 483765892, display_at,
                     99384722, comments_at, 2355492, len(summary_bytes))  # fmt: skip
    path.write_bytes(bytes(buf))


def _mm_dataset(folder: Path) -> dict[str, list[Coords]]:
    """A Micro-Manager 2 OME-TIFF: 2 positions, each in 2 files (``_1``: time points 2, 3).

    The OME-XML of the whole dataset is in the first file only (each plane's
    TiffData naming its file and IFD); every first IFD has ImageJ's description.
    """
    files: dict[str, list[Coords]] = {}
    for p in range(_P):
        for part, ts in enumerate([(0, 1), (2, 3)]):
            name = f"exp_MMStack_Pos{p}{'_1' if part else ''}.ome.tif"
            files[name] = [(c, z, t, p) for t in ts for c in range(_C) for z in range(_Z)]
    uuids = {name: f"urn:uuid:0000000{k}-0000-0000-0000-000000000000"
             for k, name in enumerate(files)}  # fmt: skip
    images = []
    for p in range(_P):
        data = "".join(
            f'<TiffData FirstC="{c}" FirstZ="{z}" FirstT="{t}" IFD="{ifd}" PlaneCount="1">'
            f'<UUID FileName="{name}">{uuids[name]}</UUID></TiffData>'
            for name, planes in files.items()
            for ifd, (c, z, t, pp) in enumerate(planes)
            if pp == p
        )
        channels = "".join(f'<Channel ID="Channel:{p}:{k}" Name="{n}" SamplesPerPixel="1"/>'
                           for k, n in enumerate(_CHANNELS))  # fmt: skip
        images.append(
            f'<Image ID="Image:{p}" Name="Pos{p}"><Pixels ID="Pixels:{p}" DimensionOrder="XYZCT" '
            f'Type="uint16" SizeX="{_W}" SizeY="{_H}" SizeC="{_C}" SizeZ="{_Z}" SizeT="{_T}" '
            'PhysicalSizeX="0.65" PhysicalSizeXUnit="\u00b5m" PhysicalSizeY="0.65" '
            f'PhysicalSizeYUnit="\u00b5m">{channels}{data}</Pixels></Image>'
        )
    first = next(iter(files))
    xml = (f'<?xml version="1.0" encoding="UTF-8"?><OME {_NS} UUID="{uuids[first]}">'
           f"{''.join(images)}</OME>")  # fmt: skip
    imagej = f"ImageJ=1.48\nimages={_C * _Z * _T}\nchannels={_C}\nslices={_Z}\nframes={_T}\n"
    summary = {"MicroManagerVersion": "2.0.3", "Prefix": "exp", "Frames": _T, "Channels": _C,
               "Slices": _Z, "Positions": _P, "ChNames": list(_CHANNELS)}  # fmt: skip
    for name, planes in files.items():
        _write_mmstack(folder / name, planes, summary, (xml, imagej) if name == first else ())
    return files


def test_a_micro_manager_mmstack_ome_tiff_replays_every_plane_where_it_was_taken(
    tmp_path: Path,
) -> None:
    _mm_dataset(tmp_path)
    with tifffile.TiffFile(tmp_path / "exp_MMStack_Pos0.ome.tif") as tf:
        assert tf.is_mmstack  # (what tifffile reads first: its own index map)
        assert tf.is_ome
    with open_dataset(tmp_path / "exp_MMStack_Pos0.ome.tif") as ds:
        assert ds.positions == ["Pos0", "Pos1"]
        assert ds.channels == list(_CHANNELS)
        assert ds.warnings == []
        got = {
            (f.key.position, f.key.t, f.key.channel, f.key.z): int(ds.read(f.key)[0, 0])
            for f in ds.frames
        }
        assert {f.pixel_size_um for f in ds.frames} == {0.65}
    want = {
        (f"Pos{p}", t, _CHANNELS[c], z): _value(c, z, t, p)
        for p in range(_P) for t in range(_T) for c in range(_C) for z in range(_Z)
    }  # fmt: skip
    assert got == want


@pytest.mark.parametrize(
    "name", ["exp_MMStack_Pos0_1.ome.tif", "exp_MMStack_Pos1.ome.tif"], ids=["continuation", "pos1"]
)
def test_a_micro_manager_file_without_the_ome_xml_names_the_one_with_it(
    tmp_path: Path, name: str
) -> None:
    _mm_dataset(tmp_path)
    with pytest.raises(
        DatasetError,
        match=rf"{name}: no OME metadata.*Micro-Manager dataset whose OME metadata .* is in "
        r"exp_MMStack_Pos0\.ome\.tif; open .*exp_MMStack_Pos0\.ome\.tif instead",
    ):
        open_dataset(tmp_path / name)


def test_a_micro_manager_file_whose_first_file_is_gone_says_so(tmp_path: Path) -> None:
    _mm_dataset(tmp_path)
    (tmp_path / "exp_MMStack_Pos0.ome.tif").unlink()
    with pytest.raises(DatasetError, match=r"Pos1\.ome\.tif: no OME metadata.*not beside it"):
        open_dataset(tmp_path / "exp_MMStack_Pos1.ome.tif")


def test_planes_in_the_other_file_of_a_multi_file_ome_tiff_read_without_a_warning(
    tmp_path: Path,
) -> None:
    # (tifffile closes the other files after reading their pages; pytest makes its
    # "reading array from closed file" warning an error, as a user's filter may)
    def data(ifd: int, t: int, name: str, uuid: str) -> str:
        return (f'<TiffData FirstT="{t}" IFD="{ifd}" PlaneCount="1">'
                f'<UUID FileName="{name}">{uuid}</UUID></TiffData>')  # fmt: skip

    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><OME {_NS} UUID="urn:uuid:a">'
        '<Image ID="Image:0" Name="P"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" '
        'Type="uint16" SizeX="8" SizeY="8" SizeC="1" SizeZ="1" SizeT="4">'
        '<Channel ID="Channel:0:0" Name="BF" SamplesPerPixel="1"/>'
        + "".join(data(k % 2, k, f"run_{k // 2}.ome.tif", f"urn:uuid:{'ab'[k // 2]}")
                  for k in range(4))
        + "</Pixels></Image></OME>"
    )  # fmt: skip
    other = f'<?xml version="1.0"?><OME {_NS} UUID="urn:uuid:b"><BinaryOnly '
    other += 'MetadataFile="run_0.ome.tif" UUID="urn:uuid:a"/></OME>'
    for k, description in enumerate((xml, other)):
        with tifffile.TiffWriter(tmp_path / f"run_{k}.ome.tif") as tw:
            for t in (2 * k, 2 * k + 1):
                tw.write(np.full((8, 8), 10 + t, np.uint16), metadata=None,
                         description=description.encode() if t % 2 == 0 else None)  # fmt: skip
    with open_dataset(tmp_path / "run_0.ome.tif") as ds:
        assert [int(ds.read(f.key)[0, 0]) for f in ds.frames] == [10, 11, 12, 13]
        assert [f.key.t for f in ds.frames] == [0, 1, 2, 3]


def test_plane_stage_positions_are_read_in_um_whatever_their_unit(tmp_path: Path) -> None:
    path = tmp_path / "bf.ome.tif"
    tifffile.imwrite(
        path, np.zeros((2, 2, 8, 8), np.uint16), ome=True,
        metadata={"axes": "TZYX", "Plane": {
            "PositionX": [1.5] * 4, "PositionXUnit": ["mm"] * 4,
            "PositionY": [-2000.0] * 4, "PositionYUnit": ["\u00b5m"] * 4,
            "PositionZ": [10000, 10500, 10000, 10500], "PositionZUnit": ["nm"] * 4,
        }},
    )  # fmt: skip
    with open_dataset(path) as ds:
        got = [(f.key.t, f.key.z, f.x_um, f.y_um, f.z_um) for f in ds.frames]
        assert ds.warnings == []
    assert got == [(t, z, 1500.0, -2000.0, [10.0, 10.5][z]) for t in (0, 1) for z in (0, 1)]


def test_stage_positions_in_no_known_unit_are_not_read_and_said(tmp_path: Path) -> None:
    # (Bio-Formats writes 0 "reference frame" where no stage position was recorded)
    path = tmp_path / "bf.ome.tif"
    tifffile.imwrite(
        path, np.zeros((2, 8, 8), np.uint16), ome=True,
        metadata={"axes": "TYX", "Plane": {
            "PositionX": [0, 0], "PositionXUnit": ["reference frame"] * 2,
            "PositionY": [5, 6], "PositionYUnit": ["mm"] * 2,
        }},
    )  # fmt: skip
    with open_dataset(path) as ds:
        assert [(f.x_um, f.y_um, f.z_um) for f in ds.frames] == [
            (None, 5000.0, None), (None, 6000.0, None)
        ]  # fmt: skip
        assert len(ds.warnings) == 1
        assert "PositionX '0' reference frame are no length livescope knows" in ds.warnings[0]
