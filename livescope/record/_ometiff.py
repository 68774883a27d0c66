"""Open an OME-TIFF file for replay: one series per position, T/C/Z planes of YX.

Each series is matched to its OME ``Image`` by name (by order where the images
have no names of their own and their counts agree); units of length and time
are converted from OME's (so are the planes' stage positions, ``PositionX/Y/Z``);
a Micro-Manager MMStack file is read by its OME-XML, which tells its positions
apart; planes its OME-XML lists but the file lacks, planes
the file ends inside of, and pages its OME-XML places in no plane are left
out, with a warning; a file of a multi-file OME-TIFF whose metadata is in
another (or, Micro-Manager's, without it), OME-XML that is not well-formed, and
pages tifffile cannot lay out (damaged, cut short) are refused naming the file;
what else tifffile warns of as it opens the file (a vendor's private tag of a
type it does not know) is passed on as a warning.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import logging
import math
import re
import struct
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from ._dataset import (
    Dataset,
    DatasetError,
    FrameKey,
    RecordedFrame,
    channel_names,
    check_dtype,
    dtype_name,
    refuse_repeated_keys,
)

__all__ = ["open_ome_tiff"]

logger = logging.getLogger("livescope")


# OME's units of length and time (UnitsLength, UnitsTime) in µm and s, by their NFKC form:
# that reads the micro sign (µ, which OME writes) as the Greek mu, and the angstrom sign as Å
_UM_PER: dict[str, float] = {
    "pm": 1e-6, "\u00c5": 1e-4, "nm": 1e-3, "\u03bcm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4,
    "dm": 1e5, "m": 1e6,
}  # fmt: skip
_S_PER: dict[str, float] = {
    "ns": 1e-9, "\u03bcs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0,
}  # fmt: skip
_LISTED_PLANES = 3  # missing planes named in a warning
# how tifffile fails to make series of pages that do not fit their OME metadata or are damaged
# (RuntimeError: 'incompatible keyframe', planes of one series whose strips or sizes differ)
_SERIES_ERRORS = (
    KeyError, ValueError, IndexError, TypeError, ZeroDivisionError, RuntimeError, struct.error,
)  # fmt: skip


def _first_few(names: list[str]) -> str:
    """Join the first `_LISTED_PLANES` of ``names``, with ", ..." if there are more."""
    return ", ".join(names[:_LISTED_PLANES]) + (", ..." if len(names) > _LISTED_PLANES else "")


@dataclasses.dataclass(frozen=True)
class _OmeImage:
    """One ``Image`` of an OME-XML: its name, channel names and ``Pixels`` attributes."""

    name: str | None
    channels: tuple[str, ...]
    pixels: dict[str, str]
    planes: tuple[dict[str, str], ...] = ()
    """Its ``Plane`` elements' attributes (``TheT``, ``TheC``, ``TheZ``, ``DeltaT``, ...)."""


def open_ome_tiff(p: Path, interval_s: float, pixel_size_um: float | None) -> Dataset:
    """One series per position; planes in the order of the series' leading axes (T, C, Z)."""
    import tifffile

    logged: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    log = logging.getLogger("tifffile")
    log.addHandler(handler)
    try:
        # (a Micro-Manager MMStack file is OME-TIFF too: tifffile would read it as one series
        # of all positions from its own index map, which livescope cannot tell apart)
        tf = tifffile.TiffFile(p, is_mmstack=False)
    except (OSError, ValueError, TypeError, struct.error, tifffile.TiffFileError) as exc:
        # (TypeError: tifffile on a first page whose tags are damaged, e.g. one value made two)
        raise DatasetError(f"{p}: not a readable TIFF ({exc!r})") from None
    finally:
        log.removeHandler(handler)
    try:
        if damage := [m for m in logged if _is_damage(m)]:
            raise DatasetError(f"{p}: truncated or damaged TIFF ({damage[0]})")
        if not tf.is_ome:
            raise DatasetError(_no_ome(p, bool(tf.is_micromanager)))
        renamed: list[str] = []
        images = _ome_images(p, tf.ome_metadata or "", renamed)
        try:
            # (parsed now, lazily: planes listed in the XML but not in the file are None)
            all_series = list(tf.series)
        except _SERIES_ERRORS as exc:
            raise DatasetError(f"{p}: its OME metadata does not fit its pages ({exc!r})") from None
        if any(s.kind == "generic" for s in all_series):  # (tifffile's fallback: no OME plane)
            raise DatasetError(f"{p}: none of the planes its OME metadata lists is in the file")
        _keep_files_open(tf, all_series)
        matched = _series_images(p, all_series, images)
        # (what tifffile could not read but the planes do not need: a vendor's private tag)
        warnings = [
            f"{p}: tifffile warned on opening it, and read on ({m})" for m in dict.fromkeys(logged)
        ] + renamed
        left_out = [im.name or f"image {k}" for k, im in enumerate(images) if im not in matched]
        if left_out:
            warnings.append(
                f"{p}: {len(left_out)} of {len(images)} images its OME metadata lists have no "
                f"plane in the file ({', '.join(map(repr, left_out))}; a file of a multi-file "
                "OME-TIFF missing?); replaying without them"
            )
        if unlisted := _unlisted_pages(tf, all_series):
            warnings.append(
                f"{p}: {len(unlisted)} of the file's {len(tf.pages)} pages are in no plane its "
                f"OME metadata lists (page {_first_few(list(map(str, unlisted)))}; its SizeT, "
                "SizeC or SizeZ smaller than what was written?); replaying without them"
            )
        frames: list[RecordedFrame] = []
        index: dict[FrameKey, Any] = {}
        missing: list[str] = []
        cut: list[str] = []
        planes = 0
        for i, (series, image) in enumerate(zip(all_series, matched, strict=True)):
            axes, shape = series.get_axes(False), series.get_shape(False)
            lead = axes[: axes.index("Y")] if "Y" in axes else axes
            if axes[len(lead) :] not in ("YX", "YXS") or set(lead) - set("TCZ"):
                raise DatasetError(
                    f"{p}: series {i} has axes {axes}; livescope replays T, C, Z planes of YX"
                )
            if axes.endswith("S") and shape[-1] != 1:
                raise DatasetError(f"{p}: series {i} is RGB; livescope replays monochrome frames")
            check_dtype(f"{p} (series {i})", series.dtype, tuple(shape[len(lead) : len(lead) + 2]))
            um, step = _ome_scales(p, image, interval_s, pixel_size_um, warnings)
            position = str(series.name or f"p{i}")
            lead_shape = tuple(int(n) for n in shape[: len(lead)])
            wanted = {
                (at.get("T", 0), at.get("C", 0), at.get("Z", 0))
                for at in (dict(zip(lead, idx, strict=True)) for idx in np.ndindex(*lead_shape))
            }
            when = _plane_times(p, image, wanted, warnings)
            stage = _plane_positions(p, image, warnings)
            for plane, idx in enumerate(np.ndindex(*lead_shape)):
                at = dict(zip(lead, idx, strict=True))
                c = at.get("C", 0)
                key = FrameKey(position, at.get("T", 0),
                               image.channels[c] if c < len(image.channels) else f"c{c}",
                               at.get("Z", 0))  # fmt: skip
                planes += 1
                where = f"{position + ' ' if len(all_series) > 1 else ''}t={key.t} c={c} z={key.z}"
                page = series[plane]
                if page is None:  # in a file not beside it, or never written
                    missing.append(where)
                    continue
                if _ends_past_file(page):  # (a writer stopped while writing it)
                    cut.append(where)
                    continue
                x_um, y_um, z_um = stage.get((key.t, c, key.z), (None, None, None))
                frames.append(
                    RecordedFrame(
                        key, (int(shape[len(lead)]), int(shape[len(lead) + 1])),
                        dtype_name(series.dtype),
                        sample_time_s=when.get((key.t, c, key.z), key.t * step),
                        x_um=x_um, y_um=y_um, z_um=z_um,
                        pixel_size_um=um, origin=f"series {i} plane {plane}",
                    )
                )  # fmt: skip
                index[key] = (i, plane)
        if not frames:
            raise DatasetError(f"{p}: none of the planes its OME metadata lists is in the file")
        if missing:
            warnings.append(
                f"{p}: {len(missing)} of {planes} planes its OME metadata lists are not in the "
                f"file ({_first_few(missing)}); replaying without them"
            )
        if cut:
            warnings.append(
                f"{p}: {len(cut)} of {planes} planes are cut short: the file ends inside them "
                f"({_first_few(cut)}; a recording stopped while writing?); replaying without them"
            )
        refuse_repeated_keys(p, frames, "series name, T, C and Z")
    except BaseException:
        tf.close()
        raise
    frames.sort(key=lambda f: (f.key.t, *index[f.key]))  # time point, then series and plane
    return Dataset(p, "ome-tiff", frames, warnings=warnings, _source=tf, _index=index)


# What tifffile logs, on opening a file, for damage to its pages: page offsets or tag values
# past the end of the file (a file cut short), a broken chain of pages, a page without its
# strips. Anything else it logs (a tag of a type it does not know, text that is not ASCII) is
# passed on as a warning.
_DAMAGE = re.compile(
    r"invalid value ?offset|could not read all values|corrupted tag list|invalid offset to"
    r"|invalid page offset|circular reference|contains no pages|suspicious number of tags"
    r"|missing (data )?(offset|ByteCounts)|missing required tags|incorrect \w+ count"
)
# the tags the pixels are laid out by (TIFF 6 and tifffile's): one of these that tifffile could
# not read leaves the pixels unreadable or misread
_LAYOUT_TAGS = frozenset({
    254, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325, 330,
    338, 339, 347, 530, 32997, 32998,
})  # fmt: skip
_TAG = re.compile(r"<tifffile\.TiffTag (\d+) @")


def _is_damage(message: str) -> bool:
    """Whether ``message``, logged by tifffile while it opened a file, says the file is damaged."""
    if _DAMAGE.search(message):
        return True
    tag = _TAG.search(message)
    return "TiffTag.fromfile" in message and tag is not None and int(tag[1]) in _LAYOUT_TAGS


def _ome_images(p: Path, xml: str, warnings: list[str]) -> list[_OmeImage]:
    """Return the images an OME-TIFF's OME-XML describes, in order.

    Channels are told apart by name: of two of one name, the later is renamed (see
    `_channel_names`), said in ``warnings``.

    Raises
    ------
    DatasetError
        naming the file: XML that is not well-formed, the XML of a multi-file
        OME-TIFF's other files that only names the one holding the metadata
        (``BinaryOnly``), or XML that describes no image.

    """
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise DatasetError(
            f"{p}: its OME metadata is not well-formed XML ({exc}); cannot tell time, channel "
            "and z apart"
        ) from None

    def tag(element: ElementTree.Element) -> str:
        return element.tag.rsplit("}", 1)[-1]  # without the schema's namespace

    images: list[_OmeImage] = []
    for element in root:
        if tag(element) == "BinaryOnly":
            raise DatasetError(_binary_only(p, element.attrib.get("MetadataFile")))
        if tag(element) != "Image":
            continue
        pixels = next((e for e in element if tag(e) == "Pixels"), None)
        channels = [e for e in (pixels if pixels is not None else ()) if tag(e) == "Channel"]
        planes = [e for e in (pixels if pixels is not None else ()) if tag(e) == "Plane"]
        name = element.attrib.get("Name")
        where = f"{p} (image {name!r})" if name else str(p)
        images.append(
            _OmeImage(
                name,
                channel_names(where, [c.attrib.get("Name") for c in channels], warnings),
                dict(pixels.attrib) if pixels is not None else {},
                tuple(dict(e.attrib) for e in planes),
            )
        )
    if not images:
        raise DatasetError(f"{p}: its OME metadata describes no image")
    return images


def _no_ome(p: Path, micromanager: bool) -> str:
    """Say that ``p`` has no OME-XML; for a Micro-Manager file, which file of its dataset has.

    Micro-Manager writes the OME-XML of a whole dataset (all positions, all files)
    into its first file only: ``<prefix>_MMStack_<position>.ome.tif``, the first
    position's; the others (``..._1.ome.tif``, the other positions') have none.
    """
    import tifffile

    plain = f"{p}: no OME metadata; cannot tell time, channel and z apart"
    if not micromanager or "_MMStack" not in p.name:  # (an ImageJ hyperstack, a plain stack)
        return (
            f"{plain}: save it as OME-TIFF (in Fiji: Plugins > Bio-Formats > Bio-Formats "
            "Exporter, to a .ome.tif), or, for one channel in 2D, as a folder of one frame "
            "per file: t000.tif, t001.tif, ..."
        )
    prefix = p.name.split("_MMStack")[0]
    for other in sorted(p.parent.glob(f"{glob.escape(prefix)}_MMStack*.tif")):
        if other == p:
            continue
        try:
            with tifffile.TiffFile(other, is_mmstack=False) as tf:
                has_ome = bool(tf.is_ome)
        except (OSError, ValueError, struct.error):  # (TiffFileError: a ValueError)
            continue
        if has_ome:
            return (
                f"{plain}: a file of a Micro-Manager dataset whose OME metadata (positions, "
                f"times, channels) is in {other.name}; open {other} instead"
            )
    return (
        f"{plain}: a file of a Micro-Manager dataset whose OME metadata is in its first file "
        f"({prefix}_MMStack_<first position>.ome.tif), which is not beside it; open that file, "
        "with the dataset's other files beside it"
    )


def _binary_only(p: Path, metadata_file: str | None) -> str:
    """Say which file holds the metadata of a multi-file OME-TIFF that ``p`` is part of."""
    if not metadata_file:
        return (
            f"{p}: one file of a multi-file OME-TIFF whose metadata is in another file, which "
            "its OME-XML (BinaryOnly) does not name"
        )
    master = p.parent / metadata_file
    if master.is_file():
        return (
            f"{p}: one file of a multi-file OME-TIFF whose metadata (positions, times, "
            f"channels) is in {metadata_file} (BinaryOnly OME-XML); open {master} instead"
        )
    return (
        f"{p}: one file of a multi-file OME-TIFF whose metadata (positions, times, channels) "
        f"is in {metadata_file} (BinaryOnly OME-XML), which is not beside it; open that file, "
        "with the dataset's other files beside it"
    )


def _series_images(p: Path, series: list[Any], images: list[_OmeImage]) -> list[_OmeImage]:
    """Return the OME ``Image`` each of tifffile's series reads.

    tifffile leaves out an image none of whose planes it can reach (e.g. all in
    a file of a multi-file OME-TIFF that is missing), so series n need not be
    image n: they are matched by name where every image has its own, else in
    order where none was left out.

    Raises
    ------
    DatasetError
        naming the file, where neither can be done.

    """
    names = [im.name for im in images]
    if None not in names and len(set(names)) == len(names):
        by_name = {im.name: im for im in images}
        if all(s.name in by_name for s in series):
            return [by_name[s.name] for s in series]
    if len(series) == len(images):
        return images
    raise DatasetError(
        f"{p}: its OME metadata describes {len(images)} images, the file holds planes of "
        f"{len(series)}, and the images have no names of their own to tell which (a file of a "
        "multi-file OME-TIFF missing?)"
    )


def _keep_files_open(tf: Any, series: list[Any]) -> None:
    """Open the other files of a multi-file OME-TIFF whose planes ``series`` read.

    tifffile closes each after reading its pages, and reopens it on the first read
    with a UserWarning (an error where warnings are); open, they are closed with ``tf``.
    """
    for handle in {id(pg.parent): pg.parent.filehandle for s in series for pg in s.pages
                   if pg is not None and pg.parent is not tf}.values():  # fmt: skip
        if handle.closed:
            handle.open()


def _ends_past_file(page: Any) -> bool:
    """Whether a page's pixel data runs past the end of its file (which would fail on reading)."""
    size = int(page.parent.filehandle.size)
    return any(
        int(o) + int(n) > size for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)
    )


def _unlisted_pages(tf: Any, series: list[Any]) -> list[int]:
    """Return the full-resolution pages of ``tf`` that none of its series reads.

    tifffile reads as many pages as the OME sizes call for and drops the rest
    (e.g. a writer that recorded SizeT before the run went on longer), and a
    page its TiffData places outside the sizes. Reduced-resolution pages
    (thumbnails, pyramid levels) are not frames and are not counted.
    """
    used = {page.index for s in series for page in s.pages
            if page is not None and page.parent is tf}  # fmt: skip
    unlisted = []
    for i in range(len(tf.pages)):
        if i in used:
            continue
        try:
            page = tf.pages[i]
            page = page.aspage() if hasattr(page, "aspage") else page  # (a frame: no subfiletype)
            reduced = bool(page.subfiletype & 1)  # (bit 0: a reduced-resolution image)
        except (OSError, ValueError, IndexError, struct.error):  # (TiffFileError: a ValueError)
            reduced = False  # a damaged page: not read either way
        if not reduced:
            unlisted.append(i)
    return unlisted


def _ome_scales(
    p: Path, image: _OmeImage, interval_s: float, pixel_size_um: float | None, warnings: list[str]
) -> tuple[float | None, float]:
    """Return an image's pixel size (µm; ``pixel_size_um`` if given) and time step (s).

    A unit livescope does not know is said in ``warnings``: the pixel size is then
    None, the time step ``interval_s`` (as where none is recorded). A size that is
    not a number is NaN, refused later naming the frame.
    """
    px = image.pixels
    notes: list[str] = []
    um = pixel_size_um
    if um is None and (size := px.get("PhysicalSizeX")) is not None:
        unit = px.get("PhysicalSizeXUnit")
        um = _in_unit(size, unit, _UM_PER)
        if um is None:
            notes.append(
                f"{p}: PhysicalSizeXUnit {unit!r} is not a unit of length livescope knows; "
                "replayed without a pixel size (--pixel-size gives one)"
            )
        y_um = _in_unit(px.get("PhysicalSizeY", ""), px.get("PhysicalSizeYUnit"), _UM_PER)
        if (  # (policies place cells with one pixel size)
            um is not None and y_um is not None and math.isfinite(y_um) and y_um > 0
            and abs(y_um - um) > 0.01 * um
        ):  # fmt: skip
            notes.append(
                f"{p}: its pixels are not square (PhysicalSizeX {um:g} um, PhysicalSizeY "
                f"{y_um:g} um); replayed as {um:g} um both ways"
            )
    step = interval_s
    if (increment := px.get("TimeIncrement")) is not None:
        unit = px.get("TimeIncrementUnit")
        seconds = _in_unit(increment, unit, _S_PER)
        if seconds is None:
            notes.append(
                f"{p}: TimeIncrementUnit {unit!r} is not a unit of time livescope knows; "
                f"time points replayed {interval_s:g} s apart (--interval-s)"
            )
        elif math.isfinite(seconds) and seconds > 0:
            step = seconds
        elif seconds != 0:  # (0: not recorded, as some writers put it)
            notes.append(
                f"{p}: TimeIncrement {increment!r} is not a time step; time points replayed "
                f"{interval_s:g} s apart (--interval-s)"
            )
    warnings.extend(n for n in notes if n not in warnings)
    return um, step


def _plane_times(
    p: Path, image: _OmeImage, wanted: set[tuple[int, int, int]], warnings: list[str]
) -> dict[tuple[int, int, int], float]:
    """Return when each plane was taken, s, by (T, C, Z): its ``Plane`` ``DeltaT``.

    Empty (time points ``TimeIncrement`` or ``--interval-s`` apart) where the
    planes carry no DeltaT; also, said in ``warnings``, where a plane of
    ``wanted`` (the series') lacks one or has one that is no time, or where a
    later time point's planes were taken before an earlier one's: one bad time
    would misplace every rule's cooldown (and times of two clocks mixed).
    """
    times: dict[tuple[int, int, int], float] = {}
    bad: str | None = None
    for attrs in image.planes:
        delta = attrs.get("DeltaT")
        try:
            at = tuple(int(attrs.get(k, "0")) for k in ("TheT", "TheC", "TheZ"))
        except ValueError:
            bad = f"a Plane's TheT/TheC/TheZ is no whole number ({attrs!r:.80})"
            break
        if delta is None:
            if times:
                bad = f"the plane at T={at[0]} C={at[1]} Z={at[2]} has no DeltaT"
                break
            continue
        seconds = _in_unit(delta, attrs.get("DeltaTUnit"), _S_PER)
        if seconds is None or not math.isfinite(seconds) or seconds < 0:
            bad = f"DeltaT {delta!r} {attrs.get('DeltaTUnit', '')!s} is no time livescope knows"
            break
        times[(at[0], at[1], at[2])] = seconds
    if bad is None and times and (lack := sorted(wanted - times.keys())):
        t, c, z = lack[0]
        bad = f"{len(lack)} of its {len(wanted)} planes have no DeltaT (T={t} C={c} Z={z}, ...)"
    if bad is None and times:
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        for (t, _, _), s in times.items():
            first[t], last[t] = min(first.get(t, s), s), max(last.get(t, s), s)
        order = sorted(first)
        for a, b in itertools.pairwise(order):
            if first[b] < last[a]:
                bad = f"time point {b} was taken (DeltaT) before time point {a} ended"
                break
    if bad is not None:
        _warn_once(
            warnings, p, image,
            f"the planes' times (DeltaT) are not used: {bad}; time points are "
            "replayed evenly spaced (TimeIncrement, or --interval-s)",
        )  # fmt: skip
        return {}
    return times


def _plane_positions(
    p: Path, image: _OmeImage, warnings: list[str]
) -> dict[tuple[int, int, int], tuple[float | None, float | None, float | None]]:
    """Return where the stage was for each plane, µm, by (T, C, Z): its ``Plane`` PositionX/Y/Z.

    An axis a plane does not state is None; so is one in a unit livescope does
    not know (Bio-Formats writes 0 ``reference frame`` where none was recorded)
    or that is no number, said in ``warnings``.
    """
    stage: dict[tuple[int, int, int], tuple[float | None, float | None, float | None]] = {}
    unknown: list[str] = []
    for attrs in image.planes:
        try:
            t, c, z = (int(attrs.get(k, "0")) for k in ("TheT", "TheC", "TheZ"))
        except ValueError:  # (said by _plane_times)
            continue
        xyz: list[float | None] = []
        for axis in "XYZ":
            value, unit = attrs.get(f"Position{axis}"), attrs.get(f"Position{axis}Unit")
            um = None if value is None else _in_unit(value, unit, _UM_PER)
            if value is not None and (um is None or not math.isfinite(um)):
                if (what := f"Position{axis} {value!r} {unit or ''}".rstrip()) not in unknown:
                    unknown.append(what)
                um = None
            xyz.append(um)
        stage[(t, c, z)] = (xyz[0], xyz[1], xyz[2])
    if unknown:
        _warn_once(
            warnings, p, image,
            f"stage positions {_first_few(unknown)} are no length livescope knows; "
            "replayed without them",
        )  # fmt: skip
    return stage


def _warn_once(warnings: list[str], p: Path, image: _OmeImage, problem: str) -> None:
    """Add ``problem`` to ``warnings``, naming the file and ``image``, unless it is there already.

    The image is named where it has a name; a note of two series that say the
    same (series read by one ``Image``, or images without names) is added once.
    """
    name = f" (image {image.name!r})" if image.name else ""
    if (note := f"{p}{name}: {problem}") not in warnings:
        warnings.append(note)


def _in_unit(value: str, unit: str | None, per: dict[str, float]) -> float | None:
    """Return an OME quantity in ``per``'s unit (µm or s; OME's default when ``unit`` is None).

    None where ``unit`` is not in ``per``; NaN where ``value`` is not a number.
    """
    factor = 1.0 if unit is None else per.get(unicodedata.normalize("NFKC", unit.strip()))
    if factor is None:
        return None
    try:
        return float(value) * factor
    except ValueError:
        return math.nan
