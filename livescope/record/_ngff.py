"""OME-Zarr images read for replay: NGFF 0.4 (Zarr v2) and 0.5 (Zarr v3), level 0 only.

An image is one position (named by livescope's own ``livescope.position``
attribute where it has one, else ``p0``, ``p1``, ... in the order of the
groups); a ``bioformats2raw.layout`` folder holds one image per position: those
its ``OME`` group's ``series`` lists (named by their paths), else its groups
numbered 0, 1, .... Axes are t, c, z, y, x, in either case.

A z-plane without a chunk on disk below one written in its stack (time point,
position, channel) is blank, and replayed as the fill value (zarr-python
stores no chunk that holds only the fill value; a channel's stack is acquired
whole), and so is a y/x chunk that no plane has (a region of only the fill
value, such as a mosaic's empty corner). Other planes without a chunk are left
out, with a warning.
Most are not damage: livescope's recorder leaves a plane unwritten when it was not acquired
(a channel imaged only at some time points, a close-up position), and
zarr-python does not store a chunk that holds only the fill value (a blank
plane). Only the end of the recording is taken for a run cut short: the time
points after the last one with any plane written, and that last one too when
the planes it lacks follow all the planes it has (in t, position, c, z order)
and were written at the time point before it (or it is the only one). See
`livescope.record.open_dataset`.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
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
)

__all__ = ["open_ome_zarr"]

# (NGFF's units that a microscope's scales come in; another leaves the axis without one)
_SPACE_UM: dict[str | None, float] = {
    None: 1.0, "micrometer": 1.0, "nanometer": 1e-3, "picometer": 1e-6, "angstrom": 1e-4,
    "millimeter": 1e3, "centimeter": 1e4, "decimeter": 1e5, "meter": 1e6, "inch": 25400.0,
}  # fmt: skip
_TIME_S: dict[str | None, float] = {
    None: 1.0, "second": 1.0, "millisecond": 1e-3, "microsecond": 1e-6, "nanosecond": 1e-9,
    "centisecond": 1e-2, "decisecond": 0.1, "minute": 60.0, "hour": 3600.0, "day": 86400.0,
}  # fmt: skip
_AXES = ("t", "c", "z", "y", "x")  # (the names livescope replays, in any case)
_LISTED_PLANES = 3  # missing planes named in the warning


@dataclass
class _ZarrImage:
    """Level 0 of one NGFF image (one position) and which of its planes are on disk."""

    position: str
    array_path: str  # from the dataset folder, "/"-separated
    array: Any
    lead: list[str]  # the t/c/z axes of the array, in its order (y, x follow)
    channels: list[str]
    step_s: float
    pixel_size_um: float | None
    missing: set[tuple[int, ...]]  # planes (indices along ``lead``) never written
    notes: list[str] = field(default_factory=list)  # for the dataset's warnings


def open_ome_zarr(p: Path, interval_s: float, pixel_size_um: float | None) -> Dataset:
    """Open an OME-Zarr image, or a ``bioformats2raw.layout`` folder of images (positions)."""
    import zarr

    try:
        root = zarr.open_group(p, mode="r")
    except Exception as exc:  # noqa: BLE001 (zarr raises many kinds on a bad store)
        raise DatasetError(f"{p}: not a readable Zarr group ({exc!r})") from None
    attrs = _ome_attrs(root)
    if "plate" in attrs or "well" in attrs:
        raise DatasetError(f"{p}: OME-Zarr plates are not supported yet")
    if "bioformats2raw.layout" in attrs and "multiscales" not in attrs:
        # the images: those the OME group's "series" lists where it has one (they may
        # have any name), else the groups numbered 0, 1, ... (the folders, not zarr's
        # list of groups: that reads every member's metadata, and one damaged raised a
        # bare JSONDecodeError naming no file)
        ome = _member(p, root, "OME")
        series = _ome_attrs(ome).get("series") if isinstance(ome, zarr.Group) else None
        listed = False  # (the images are those the series lists)
        if isinstance(series, list) and series and all(isinstance(k, str) and k for k in series):
            keys, listed = list(dict.fromkeys(str(k) for k in series)), True
        else:
            keys = sorted((d.name for d in p.iterdir() if d.is_dir() and d.name.isdigit()), key=int)
        if not keys:
            raise DatasetError(f"{p}: bioformats2raw layout without an image group (0/, 1/, ...)")
        names = [f"p{k}" if k.isdigit() else k for k in keys]
        images = []
        for k, name in zip(keys, names, strict=True):
            group = _member(p, root, k)
            if group is None and listed and not (p / k).exists():
                raise DatasetError(
                    f"{p / k}: listed in the OME group's series, but missing (a copy of the "
                    "dataset that did not finish?)"
                )
            images.append(_zarr_image(p, group, k, name, interval_s, pixel_size_um))
    else:
        keys = ["0"]
        images = [_zarr_image(p, root, "", "p0", interval_s, pixel_size_um)]
    if len({image.position for image in images}) < len(images):
        for k, image in zip(keys, images, strict=True):  # (names that clash: none is used)
            image.position = f"p{k}"

    # every plane: t, position (index in images), c, z, its indices in the array, on disk
    planes: list[tuple[int, int, int, int, tuple[int, ...], bool]] = []
    for i, image in enumerate(images):
        for idx in np.ndindex(*image.array.shape[:-2]):
            at = dict(zip(image.lead, idx, strict=True))
            plane = (at.get("t", 0), i, at.get("c", 0), at.get("z", 0), idx)
            planes.append((*plane, idx not in image.missing))
    planes.sort(key=lambda plane: plane[:4])
    if not planes:
        raise DatasetError(f"{p}: the OME-Zarr image holds no plane")
    # a z-plane missing below one written in its stack (time point, position, channel)
    # is blank (zarr-python stores no chunk of only the fill value), not unacquired: a
    # channel's stack is acquired whole. (Planes missing above the last one written may
    # be a stack cut short: they are left to `_last_time_point`.)
    top: dict[tuple[int, int, int], int] = {}
    for t, i, c, z, _, on_disk in planes:
        if on_disk:
            top[(t, i, c)] = max(z, top.get((t, i, c), z))
    blank = {plane[:4] for plane in planes
             if not plane[5] and plane[3] < top.get(plane[:3], -1)}  # fmt: skip
    planes = [(*plane[:5], plane[5] or plane[:4] in blank) for plane in planes]
    missing = [plane for plane in planes if not plane[5]]
    several = len(images) > 1
    named = ", ".join(
        f"{images[i].position + ' ' if several else ''}t={t} c={c} z={z}"
        for t, i, c, z, _, _ in missing[:_LISTED_PLANES]
    ) + (", ..." if len(missing) > _LISTED_PLANES else "")
    last = _last_time_point(planes)
    if last is None:
        raise DatasetError(
            f"{p}: no time point was written in full ({len(missing)} of {len(planes)} "
            f"planes never written: {named})"
        )
    warnings: list[str] = [note for image in images for note in image.notes]
    if blank:
        warnings.append(
            f"{p}: {len(blank)} z-plane(s) without a chunk below planes written in their "
            "stack replayed as blank (the array's fill value: zarr-python stores no chunk "
            "of only the fill value)"
        )
    if missing:
        # (no word of a crash: most are planes not acquired, or blank; see the module's doc)
        warnings.append(
            f"{p}: {len(missing)} of {len(planes)} planes never written ({named}); "
            f"replaying t={planes[0][0]}..{last}"
        )
    frames: list[RecordedFrame] = []
    index: dict[FrameKey, Any] = {}
    for t, i, c, z, idx, on_disk in planes:
        if not on_disk or t > last:
            continue
        image = images[i]
        key = FrameKey(image.position, t, image.channels[c], z)
        frames.append(
            RecordedFrame(
                key, (int(image.array.shape[-2]), int(image.array.shape[-1])),
                dtype_name(image.array.dtype), sample_time_s=t * image.step_s,
                pixel_size_um=image.pixel_size_um, origin=f"{image.array_path} t={t} c={c} z={z}",
            )
        )  # fmt: skip
        index[key] = (image.array_path, idx)
    source = {image.array_path: image.array for image in images}
    return Dataset(p, "ome-zarr", frames, warnings=warnings, _source=source, _index=index)


def _last_time_point(planes: list[tuple[int, int, int, int, tuple[int, ...], bool]]) -> int | None:
    """Return the last time point to replay; None when none was written in full.

    ``planes`` are (t, image, c, z, indices, on disk), sorted. A plane missing
    before the last time point with any plane written is a sparse acquisition
    (not acquired there, or blank), not a sign of a crash: it is left out and
    the later time points are replayed. At that last time point, a plane
    missing after all those written, which the time point before it holds (or
    any, when it is the first), is a run cut short: the time point is left out,
    as a partial one (and with it the whole recording, when it is the first).
    """
    written = {plane[:4] for plane in planes if plane[5]}
    if not written:
        return None
    end = max(t for t, *_ in written)
    at_end = [plane for plane in planes if plane[0] == end]
    last_written = max(k for k, plane in enumerate(at_end) if plane[5])
    first = planes[0][0]
    cut = any(
        not on_disk and (end == first or (end - 1, i, c, z) in written)
        for _, i, c, z, _, on_disk in at_end[last_written + 1 :]
    )
    if not cut:
        return end
    return end - 1 if end > first else None


def _ome_attrs(group: Any) -> dict[str, Any]:
    """NGFF attributes: under ``ome`` (0.5, Zarr v3) or at the top (0.4, Zarr v2)."""
    attrs: dict[str, Any] = dict(group.attrs)
    ome = attrs.get("ome")
    return {**attrs, **ome} if isinstance(ome, dict) else attrs


def _zarr_image(
    p: Path,
    group: Any,
    group_path: str,
    position: str,
    interval_s: float,
    pixel_size_um: float | None,
) -> _ZarrImage:
    """Read the NGFF metadata of one image group and list the chunks of its level 0."""
    import zarr

    where = p / group_path if group_path else p
    if not isinstance(group, zarr.Group):
        raise DatasetError(f"{where}: not a Zarr group (an OME-Zarr image is one)")
    attrs = _ome_attrs(group)
    if "plate" in attrs or "well" in attrs:
        raise DatasetError(f"{where}: OME-Zarr plates are not supported yet")
    multiscales = attrs.get("multiscales")
    ms = multiscales[0] if isinstance(multiscales, list) and multiscales else None
    if not isinstance(ms, dict):
        raise DatasetError(f"{where}: no OME-Zarr multiscales metadata (not an NGFF image)")
    datasets = ms.get("datasets")
    level = datasets[0] if isinstance(datasets, list) and datasets else None
    if not isinstance(level, dict) or not isinstance(level.get("path"), str):
        raise DatasetError(f"{where}: the multiscales list no dataset path")
    array_path = f"{group_path}/{level['path']}" if group_path else level["path"]
    array = _member(where, group, level["path"])
    if array is None:
        raise DatasetError(f"{p / array_path}: level 0 of the multiscales is missing")
    if not isinstance(array, zarr.Array):
        raise DatasetError(f"{p / array_path}: level 0 of the multiscales is not an array")

    axes = ms.get("axes")
    if axes is None and array.ndim == 5:
        axes = ["t", "c", "z", "y", "x"]  # NGFF 0.1 and 0.2: always 5-D, no axes listed
    axes = axes if isinstance(axes, list) else []
    names = [a.get("name") if isinstance(a, dict) else a for a in axes]
    names = [n if isinstance(n, str) and n else None for n in names]
    # (iohub, which shrimPy records with, names its axes T, C, Z, Y, X)
    names = [n.lower() if n is not None and n.lower() in _AXES else n for n in names]
    units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
    units = [u if u is None or isinstance(u, str) else str(u) for u in units]  # (not a key)
    if "y" not in names or "x" not in names or None in names:
        raise DatasetError(f"{where}: multiscales axes {names} lack y/x")
    lead = [str(n) for n in names[:-2]]
    if names[-2:] != ["y", "x"] or set(lead) - {"t", "c", "z"} or len(set(lead)) < len(lead):
        raise DatasetError(
            f"{where}: multiscales axes {names} are not supported (livescope replays t, c, z "
            "planes of y/x)"
        )
    if len(names) != array.ndim:
        raise DatasetError(
            f"{where}: multiscales axes {names} do not match {array_path} of shape {array.shape}"
        )
    check_dtype(str(p / array_path), array.dtype, tuple(array.shape[-2:]))

    scale = _zarr_scale(level.get("coordinateTransformations"), array.ndim)
    outer = _zarr_scale(ms.get("coordinateTransformations"), array.ndim)
    if scale is not None and outer is not None:
        scale = [a * b for a, b in zip(scale, outer, strict=True)]
    scale = scale or outer
    um = pixel_size_um
    notes: list[str] = []  # (a unit not known: that axis without a scale, said)
    x_factor = _SPACE_UM.get(units[-1])
    if um is None and scale is not None and x_factor is not None and scale[-1] > 0:
        um = scale[-1] * x_factor
        if units[-1] is None:  # (NGFF's unit is optional: a scale of no unit may be pixels)
            notes.append(
                f"{where}: the x axis has no unit; its scale {scale[-1]:g} read as µm per "
                "pixel (--pixel-size gives another)"
            )
    elif um is None and scale is not None and x_factor is None:
        notes.append(
            f"{where}: the x axis's unit {units[-1]!r} is not one livescope knows; replayed "
            "without a pixel size (--pixel-size gives one)"
        )
    step = interval_s
    if "t" in names and scale is not None:
        t_factor = _TIME_S.get(units[names.index("t")])
        if t_factor is not None and scale[names.index("t")] > 0:
            step = scale[names.index("t")] * t_factor
            if units[names.index("t")] is None:
                notes.append(
                    f"{where}: the t axis has no unit; its scale {step:g} read as seconds "
                    "between time points"
                )
        elif t_factor is None:
            notes.append(
                f"{where}: the t axis's unit {units[names.index('t')]!r} is not one livescope "
                f"knows; time points replayed {interval_s:g} s apart (--interval-s)"
            )

    n_channels = int(array.shape[names.index("c")]) if "c" in names else 1
    omero = attrs.get("omero")
    listed = omero.get("channels") if isinstance(omero, dict) else None
    listed = listed if isinstance(listed, list) else []
    labels = [listed[k].get("label") if k < len(listed) and isinstance(listed[k], dict)
              else None for k in range(n_channels)]  # fmt: skip
    labels = [label if isinstance(label, str) and label else None for label in labels]
    # a channel without a label of its own is c<k>, unless that is another's label (two
    # channels of one name: a replay served one as both)
    channels = list(channel_names(str(p / array_path), labels, notes))
    missing, blank_tiles = _missing_planes(array, p / array_path)
    if blank_tiles:
        notes.append(
            f"{p / array_path}: {blank_tiles} y/x chunk(s) written in no plane replayed as "
            "blank (the array's fill value: zarr-python stores no chunk of only the fill value)"
        )
    own = attrs.get("livescope")  # (what livescope's recorder writes: the position's name)
    name = own.get("position") if isinstance(own, dict) else None
    position = name if isinstance(name, str) and name else position
    return _ZarrImage(position, array_path, array, lead, channels, step, um, missing, notes)


def _member(where: Path, group: Any, path: str) -> Any:
    """Return ``group[path]`` (the group at ``where``), None where it has no such member.

    Raises
    ------
    DatasetError
        naming the member, when its Zarr metadata cannot be read (damaged).

    """
    try:
        return group[path]
    except KeyError:
        return None
    except Exception as exc:  # noqa: BLE001 (zarr raises many kinds on damaged metadata)
        raise DatasetError(f"{where / path}: its Zarr metadata cannot be read ({exc!r})") from None


def _zarr_scale(transforms: Any, ndim: int) -> list[float] | None:
    """Return the ``scale`` of a list of NGFF coordinate transformations, if it has one."""
    for tr in transforms if isinstance(transforms, list) else []:
        scale = tr.get("scale") if isinstance(tr, dict) and tr.get("type") == "scale" else None
        if isinstance(scale, list) and len(scale) == ndim:
            # an entry that is no number (null, where a writer knew no pixel size) leaves
            # that axis without a scale (NaN, not above 0), not every axis: the t scale
            # was lost with it
            return [_number(v) for v in scale]
    return None


def _number(value: Any) -> float:
    """Return ``value`` as a float; NaN where it is none (null, a bool, a word)."""
    if isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _missing_planes(array: Any, folder: Path) -> tuple[set[tuple[int, ...]], int]:
    """Return the planes (indices along the leading axes) with a chunk never written.

    And how many y/x chunks no plane has. A missing chunk reads back as the fill
    value, silently: a run killed mid-write leaves some. The chunk files of the
    (local) array are listed once; a plane is on disk when every chunk covering
    its y/x extent is (a chunk spanning several planes counts for each of them),
    but for y/x chunks that no plane has (a region of only the fill value).
    Sharded arrays are checked shard by shard.
    """
    keys: set[str] = set()
    for dirpath, _, files in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        keys.update((rel / f).as_posix() for f in files)
    shape = tuple(int(n) for n in array.shape)
    grid = tuple(int(n) for n in (array.shards or array.chunks))
    counts = [-(-n // g) for n, g in zip(shape, grid, strict=True)]
    yx = [(yi, xi) for yi in range(counts[-2]) for xi in range(counts[-1])]
    leads = list(np.ndindex(*counts[:-2]))
    written = {
        (lead, c) for lead in leads for c in yx
        if array.metadata.encode_chunk_key((*lead, *c)) in keys
    }  # fmt: skip
    # a y/x chunk written in no plane, beside others that are, holds only the fill
    # value (a mosaic's empty corner: zarr-python stores no chunk of only the fill
    # value), not a write cut short: every plane was left out for it
    never = {c for c in yx if not any((lead, c) in written for lead in leads)}
    never = never if len(never) < len(yx) else set()
    missing: set[tuple[int, ...]] = set()
    for lead in leads:
        if all((lead, c) in written for c in yx if c not in never):
            continue
        spans = [
            range(i * g, min((i + 1) * g, n))
            for i, g, n in zip(lead, grid[:-2], shape[:-2], strict=True)
        ]
        missing.update(itertools.product(*spans))
    return missing, len(never)
