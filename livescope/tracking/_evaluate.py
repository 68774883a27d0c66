"""Score a CTC tracking result against ground truth with py-ctcmetrics."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import tempfile
import warnings
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from livescope.schema import LivescopeError, check_input_folder

__all__ = ["evaluate_tracking", "gt_folder_hint"]


def gt_folder_hint(folder: str | Path) -> str:
    """``; give its parent ...`` when ``folder`` is a ground truth's TRA folder itself."""
    p = Path(folder)
    if p.name == "TRA" and (p / "man_track.txt").is_file():
        return f"; {p} is the TRA folder itself: give its parent ({p.parent})"
    return ""


def evaluate_tracking(res: str | Path, gt: str | Path, *, div_tolerance: int = 1) -> dict[str, Any]:
    """TRA, DET, LNK, division precision/recall/F1 and counts of a CTC result.

    ``res`` holds ``maskTTT.tif`` + ``res_track.txt``; ``gt`` holds
    ``TRA/man_trackTTT.tif`` + ``TRA/man_track.txt`` (a CTC ``NN_GT`` folder).
    Frame ``t`` is the file numbered ``t`` (``mask7.tif`` or ``mask007.tif``), as
    `livescope.record.read_ctc` reads it; a number missing from ``0..last`` or
    given twice is refused (the track files' frame numbers would point at other frames).
    Divisions are matched by py-ctcmetrics' branching criterion (BC(i)): parent
    and both daughters must match, within ``div_tolerance`` frames. ``lnk`` is
    None where the ground truth has no links (LNK is 0/0 there);
    ``div_precision`` is None where no division was found, ``div_recall`` where
    the truth has none, and ``div_f1`` where neither has one (all 0/0).
    ``aogm``: the AOGM (``total``), that of an empty result (``empty``, TRA's
    normaliser: TRA = 1 - min(total, empty) / empty) and how many of each
    operation it counts (``ns``, ``fn``, ``fp``, ``ed``, ``ea``, ``ec``: vertices
    split, missed and false; edges deleted, added and of the wrong kind).

    py-ctcmetrics reads every ``.tif`` in a folder as a frame, and adds the
    ground truth's top label + 1 to the result's labels in the masks' own type;
    other ``.tif`` files beside the frames (an AppleDouble ``._mask000.tif``, an
    overlay) and masks of a type too narrow for that sum (uint8) are scored from
    a copy that holds only the frames, the masks widened.
    """
    try:
        from ctc_metrics import evaluate_sequence
    except ImportError as exc:  # pragma: no cover (a core dependency)
        raise LivescopeError("livescope eval track needs py-ctcmetrics") from exc
    tol: Any = div_tolerance  # (from a caller that may not be typed)
    if isinstance(tol, bool) or not isinstance(tol, Integral) or tol < 0:
        # (py-ctcmetrics would score it all, then fail on a missing key)
        raise LivescopeError(f"div_tolerance must be a whole number of frames >= 0, got {tol!r}")
    div_tolerance = int(tol)
    res, gt = Path(res), Path(gt)
    for folder in (res, gt):
        check_input_folder(folder)
    if not (res / "res_track.txt").is_file():
        raise LivescopeError(f"{res}: no res_track.txt (not a CTC result folder)")
    if not (gt / "TRA" / "man_track.txt").is_file():
        raise LivescopeError(
            f"{gt}: no TRA/man_track.txt (not a CTC ground-truth folder){gt_folder_hint(gt)}"
        )
    # frame t is maskTTT.tif / man_trackTTT.tif by its number, as `read_ctc` reads it:
    # py-ctcmetrics pairs the files in name order (mask10.tif before mask2.tif)
    masks, truth = numbered_frames(res, "mask"), numbered_frames(gt / "TRA", "man_track")
    n_res, n_gt = len(masks), len(truth)
    if n_res != n_gt:
        raise LivescopeError(f"{res} has {n_res} masks but {gt / 'TRA'} has {n_gt} frames")
    res_rows, gt_rows = (_check_track_file(f) for f in (res / "res_track.txt",
                                                         gt / "TRA" / "man_track.txt"))  # fmt: skip
    n_tracks, n_true = len(res_rows), len(gt_rows)
    dtypes = set()
    if masks:
        # every marker's header, as every mask's: py-ctcmetrics' error on a damaged one
        # names no file, and on stacks of other plane counts it fails inside
        want = _tiff_header(truth[0], labels=True)[0]
        for g in truth[1:]:
            if not _same_size(shape := _tiff_header(g, labels=True)[0], want):
                raise LivescopeError(
                    f"{g} is {shape} px but {truth[0].name} is {want} px: a ground truth's "
                    "markers are label images of one size (2-D, or 3-D of as many planes)"
                )
        for m in masks:  # (headers only)
            shape, dtype = _tiff_header(m, labels=True)
            dtypes.add(dtype)
            if not _same_size(shape, want):
                raise LivescopeError(
                    f"{m} is {shape} px but the ground truth's {truth[0].name} is {want} px: "
                    "result and ground truth must be the same frames, label images of one size "
                    "(2-D, or 3-D of as many planes)"
                )
    if not n_tracks:
        raise LivescopeError(f"{res / 'res_track.txt'} lists no tracks: nothing to score")
    if not n_true:
        raise LivescopeError(
            f"{gt / 'TRA' / 'man_track.txt'} lists no tracks: nothing to score against"
        )
    if n_res < 2:  # (py-ctcmetrics fails on one frame: there are no links to score)
        raise LivescopeError(
            f"{res} has {n_res} frame{'' if n_res == 1 else 's'}: tracking is scored on 2 "
            "frames or more"
        )
    # py-ctcmetrics adds the truth's top label + 1 to the result's labels in the masks' type
    top = max(r[0] for r in res_rows) + max(r[0] for r in gt_rows) + 1
    widen = any(np.issubdtype(dt, np.integer) and top > np.iinfo(dt).max for dt in dtypes)
    links = sum(end - begin for _, begin, end, _ in gt_rows) + sum(p != 0 for *_, p in gt_rows)
    metrics = ["Valid", "TRA", "DET", *(["LNK"] if links else []), f"BC({max(div_tolerance, 3)})"]
    with (
        tempfile.TemporaryDirectory(prefix="livescope-ctc-") as tmp,
        contextlib.redirect_stdout(io.StringIO()),  # ("Invalid results!": said below)
        warnings.catch_warnings(record=True) as said,
    ):
        res_in, gt_in = res, gt
        # (copied too where a track file starts with a BOM, which py-ctcmetrics cannot read)
        res_bom, gt_bom = _has_bom(res / "res_track.txt"), _has_bom(gt / "TRA" / "man_track.txt")
        if widen or res_bom or _stray_tifs(res, masks) or _out_of_order(masks):
            res_in = _frames_only(res, masks, "res_track.txt", Path(tmp, "res"), widen=widen)
        if gt_bom or _stray_tifs(gt / "TRA", truth) or _out_of_order(truth):
            gt_in = _frames_only(
                gt / "TRA", truth, "man_track.txt", Path(tmp, "gt", "TRA"), widen=False
            ).parent
        warnings.simplefilter("always")
        try:
            r = evaluate_sequence(str(res_in), str(gt_in), metrics=metrics, threads=1)
        except ZeroDivisionError:  # (links in man_track.txt, none in its markers)
            raise LivescopeError(
                f"{gt / 'TRA'}: the ground truth's markers hold no links (LNK is 0/0)"
            ) from None
        except (ValueError, IndexError) as exc:
            # (py-ctcmetrics fails inside, without a word, on markers that hold no cell or
            # lack a label man_track.txt links to its parent)
            if problem := _marker_problem(truth, gt_rows):
                raise LivescopeError(f"{gt / 'TRA'}: {problem}") from exc
            raise
    if not r.get("Valid"):
        # py-ctcmetrics says why in warnings: the first few, e.g. "Label 3 in res_track
        # but not in mask .../mask004.tif."
        why = list(
            dict.fromkeys(
                _own_names(str(w.message), res_in, masks).replace(str(res_in), str(res))
                for w in said
                if w.category is UserWarning
            )
        )
        detail = "; ".join(why[:3]) + (f" (and {len(why) - 3} more)" if len(why) > 3 else "")
        raise LivescopeError(
            f"{res}: py-ctcmetrics finds the result invalid: "
            + (detail or "labels missing from masks or res_track.txt")
        )
    tp, fp, fn = (int(r[f"{k}_div({div_tolerance})"]) for k in ("tp", "fp", "fn"))
    # (None where undefined: no division found, or none in the truth; 1.0 scored the
    # divisions of a sequence that has none, a test never made)
    precision = round(tp / (tp + fp), 4) if tp + fp else None
    recall = round(tp / (tp + fn), 4) if tp + fn else None
    # (2tp / (2tp + fp + fn): 0 where divisions were all missed or all false)
    f1 = round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else None
    return {
        "tra": round(float(r["TRA"]), 5),
        "det": round(float(r["DET"]), 5),
        "lnk": round(float(r["LNK"]), 5) if links else None,
        "div_precision": precision,
        "div_recall": recall,
        "div_f1": f1,
        "div_tolerance": div_tolerance,
        "divisions_true": tp + fn,
        "divisions_found": tp + fp,
        "divisions_matched": tp,
        "frames": n_res,
        "tracks": n_tracks,
        "tracks_true": n_true,
        # (py-ctcmetrics' AOGM_0, the AOGM of an empty result and TRA's normaliser, had
        # come out as the key "0"; the AOGM itself was left out)
        "aogm": {
            **{
                name: float(r[k])
                for name, k in (("total", "AOGM"), ("empty", "AOGM_0"))
                if r.get(k) is not None
            },
            **{
                k[5:].lower(): float(r[k])
                for k in r
                if k.startswith("AOGM_") and k != "AOGM_0" and r[k] is not None
            },
        },
        "bc": {k: float(r[k]) for k in r if k.startswith("BC(") and r[k] is not None},
    }


def _check_track_file(path: Path) -> list[tuple[int, int, int, int]]:
    """Return a CTC track file's tracks: (label, begin, end, parent); refuse a non-lineage.

    Four whole numbers >= 0 per line; each label (> 0) listed once, beginning no
    later than it ends; a parent is 0 or a label listed in the file, not the
    track itself, and ends before its daughter begins.
    """
    rows: dict[int, tuple[int, int, int, int]] = {}  # label → (begin, end, parent, line)
    try:
        text = path.read_text(encoding="utf-8-sig")  # (-sig: also "UTF-8 with BOM", Notepad's)
    except UnicodeDecodeError:
        raise LivescopeError(f"{path}: not a text file of 'label begin end parent' lines") from None
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts):
            raise LivescopeError(
                f"{path}, line {n}: {line.strip()!r} is not 'label begin end parent' "
                "(four whole numbers >= 0)"
            )
        label, begin, end, parent = (int(p) for p in parts)
        where = f"{path}, line {n}"
        if label == 0:
            raise LivescopeError(f"{where}: label 0 is the background, not a track")
        if label in rows:
            raise LivescopeError(f"{where}: track {label} is listed again (line {rows[label][3]})")
        if begin > end:
            raise LivescopeError(
                f"{where}: track {label} begins (frame {begin}) after it ends ({end})"
            )
        if parent == label:
            raise LivescopeError(f"{where}: track {label} is its own parent")
        rows[label] = (begin, end, parent, n)
    for label, (begin, _, parent, n) in rows.items():
        if not parent:
            continue
        if parent not in rows:
            raise LivescopeError(
                f"{path}, line {n}: the parent {parent} of track {label} "
                "is not a track of this file"
            )
        if rows[parent][1] >= begin:
            raise LivescopeError(
                f"{path}, line {n}: track {label} begins at frame {begin}, but its parent "
                f"{parent} ends at frame {rows[parent][1]} "
                "(a parent ends before its daughters begin)"
            )
    return [(label, begin, end, parent) for label, (begin, end, parent, _) in rows.items()]


def _marker_problem(truth: list[Path], rows: list[tuple[int, int, int, int]]) -> str:
    """Say what in the ground truth's markers py-ctcmetrics cannot score ("" if nothing found).

    Called only after py-ctcmetrics failed (it reads every marker again).
    """
    import tifffile

    present = [set(np.unique(tifffile.imread(f)).tolist()) - {0} for f in truth]
    if not any(present):
        return "its markers (man_trackTTT.tif) hold no cell: nothing to score against"
    spans = {label: (begin, end) for label, begin, end, _ in rows}
    for label, begin, _, parent in rows:
        if not parent:
            continue
        # (a parent link joins the parent's last frame to its daughter's first)
        for who, t in ((parent, spans[parent][1]), (label, begin)):
            if t >= len(truth) or who not in present[t]:
                where = truth[t].name if t < len(truth) else f"frame {t} (there is none)"
                return (
                    f"man_track.txt links track {label} to its parent {parent}, but {where} "
                    f"holds no label {who}: markers and track file must agree"
                )
    return ""


def numbered_frames(folder: Path, stem: str) -> list[Path]:
    """Frames ``stemT.tif`` of ``folder`` in frame order; refuse a gap or a frame named twice.

    A track file's frame numbers are positions in this list: a missing frame
    would pair every later one with another frame of the ground truth.
    """
    pattern = re.compile(rf"{re.escape(stem)}(\d+)\.tif")
    files: dict[int, Path] = {}
    for p in sorted(folder.glob(f"{stem}*.tif")):
        if (m := pattern.fullmatch(p.name)) is None:
            continue  # (e.g. "mask000 copy.tif": not a frame, left out by `_frames_only`)
        if (other := files.setdefault(int(m.group(1)), p)) != p:
            raise LivescopeError(f"{other} and {p} are both frame {int(m.group(1))}")
    if gaps := sorted(set(range(max(files, default=-1) + 1)) - set(files)):
        named = ", ".join(map(str, gaps[:5])) + (", ..." if len(gaps) > 5 else "")
        raise LivescopeError(
            f"{folder}: {stem}TTT.tif missing for {len(gaps)} of frames 0..{max(files)} "
            f"({named}); a CTC sequence has a file for every frame, which its track file's "
            "numbers refer to"
        )
    return [files[t] for t in range(len(files))]


def _out_of_order(frames: list[Path]) -> bool:
    """Whether py-ctcmetrics, which takes the files in name order, would misorder ``frames``."""
    names = [f.name for f in frames]
    return names != sorted(names)


def _copy_names(frames: list[Path]) -> list[str]:
    """Name the frames in `_frames_only`'s copy: their own names, zero-padded if out of order."""
    if not _out_of_order(frames):
        return [f.name for f in frames]
    width = max(3, len(str(len(frames) - 1)))
    stems = [re.sub(r"\d+\.tif$", "", f.name) for f in frames]
    return [f"{stem}{t:0{width}d}.tif" for t, stem in enumerate(stems)]


def _own_names(message: str, copy: Path, frames: list[Path]) -> str:
    """``message`` with the frames of `_frames_only`'s ``copy`` named as the user's files."""
    for f, name in zip(frames, _copy_names(frames), strict=True):
        if name != f.name:
            message = message.replace(str(copy / name), str(f))
    return message


def _stray_tifs(folder: Path, frames: list[Path]) -> list[Path]:
    """Files py-ctcmetrics would take for frames (every name ending .tif) that are none."""
    keep = {f.name for f in frames}
    return [p for p in folder.iterdir() if p.name.endswith(".tif") and p.name not in keep]


_BOM = "\ufeff".encode()
"""How a text file saved as "UTF-8 with BOM" (Windows Notepad) begins."""


def _has_bom(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(_BOM)) == _BOM


def _frames_only(folder: Path, frames: list[Path], track: str, dest: Path, *, widen: bool) -> Path:
    """Copy ``frames`` and the track file to ``dest``; ``widen``: the frames as int64.

    Frames whose names would sort out of frame order (``mask9.tif``,
    ``mask10.tif``) are copied under zero-padded names, which do not.
    """
    import tifffile

    dest.mkdir(parents=True)
    data = (folder / track).read_bytes()
    (dest / track).write_bytes(data.removeprefix(_BOM))  # (py-ctcmetrics reads no BOM)
    for f, name in zip(frames, _copy_names(frames), strict=True):
        if widen:
            tifffile.imwrite(dest / name, tifffile.imread(f).astype(np.int64))
        else:
            shutil.copyfile(f, dest / name)
    return dest


def _same_size(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether two frames' shapes agree, axes of length 1 aside.

    (A plane saved as a stack of one, (1, H, W), as tifffile keeps its shape,
    is the size of an (H, W) one: py-ctcmetrics scores the pair.)
    """
    return [n for n in a if n != 1] == [n for n in b if n != 1]


def _tiff_header(path: Path, *, labels: bool = False) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Return a TIFF's shape and type (its headers only); ``labels``: refuse one not of labels.

    The shape is the whole image's, as `tifffile.imread` reads it: a 3-D stack's
    planes counted, not its first page's alone.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as exc:
        raise LivescopeError(f"{path}: cannot read it as a TIFF ({exc})") from exc
    if labels and not np.issubdtype(dtype, np.integer):
        raise LivescopeError(f"{path}: a mask must hold integer labels, not {dtype} values")
    return shape, dtype
