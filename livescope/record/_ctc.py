"""Cell Tracking Challenge (CTC) layout: write and read label sequences with lineage.

Ground truth: ``TRA/man_trackTTT.tif`` + ``TRA/man_track.txt``; results:
``maskTTT.tif`` + ``res_track.txt``. Each line of a track file is ``L B E P``:
track label, first and last frame, parent label (0 when none). A track has no
gaps: an object missed for some frames continues as a new track whose parent is
its track before the gap. A daughter begins after its parent ends (usually the
next frame; later when it was first seen later).
"""

from __future__ import annotations

import io
import logging
import re
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile
from numpy.typing import NDArray

from livescope.schema import LivescopeError, write_atomic
from livescope.tracking import Revision, gt_folder_hint

__all__ = ["CtcTrack", "read_ctc", "relabel_for_ctc", "rewrite_ctc_result", "write_ctc"]

logger = logging.getLogger("livescope")


@dataclass(frozen=True)
class CtcTrack:
    """One line of a CTC track file."""

    label: int
    begin: int
    end: int
    parent: int


def relabel_for_ctc(
    id_frames: Sequence[NDArray[np.integer]],
    parent_of: Mapping[int, int],
    *,
    max_link_gap: int | None = None,
    not_acquired: Collection[int] = (),
    first_frame: int = 0,
) -> tuple[list[NDArray[np.uint16]], list[CtcTrack], dict[int, int]]:
    """Turn per-frame object ids into CTC labels and tracks.

    Parameters
    ----------
    id_frames
        One label image per frame; equal ids in different frames are the same object.
    parent_of
        Parent id of each object id (0 or missing: none).
    max_link_gap
        Link a track to its parent (or to its own track before a gap) only when it
        begins at most this many acquired frames after that one ends (frames of
        ``not_acquired`` are not counted); None: always. The simulator's ground
        truth uses 1, so that only what happens in view counts (a daughter
        drifting in from outside the field many frames later does not).
    not_acquired
        Frames that stand for time points not acquired (empty frames, where the rig
        refused one). An object cannot be seen missing there: a gap over them alone
        is still linked with ``max_link_gap=1``, as a tracker links it.
    first_frame
        The number of ``id_frames[0]`` (0 or more; LivescopeError below): the tracks'
        first and last frames (and ``not_acquired``) are numbered from it, for a
        sequence that starts late.
        Only the frames given are relabelled: write them with `write_ctc`'s
        ``first_frame``, which writes the empty ones before them.

    Returns
    -------
    frames, tracks, object_of
        uint16 label images (one per frame of ``id_frames``), the track list, and
        the object id of each CTC label.
        An object missed for some frames and seen again continues as a new track
        whose parent is its own track before the gap (CTC tracks have no gaps); a
        daughter links to its parent's last track when that ends before the
        daughter begins.

    """
    if first_frame < 0:
        raise LivescopeError(f"first_frame {first_frame}: frames are numbered from 0")
    tracks, label_at, object_of = _ctc_tracks(
        id_frames, parent_of, max_link_gap, not_acquired, first_frame
    )
    out = [_relabel(frame, f, label_at) for f, frame in enumerate(id_frames, first_frame)]
    return out, tracks, object_of


def _ctc_tracks(
    id_frames: Sequence[NDArray[np.integer]],
    parent_of: Mapping[int, int],
    max_link_gap: int | None,
    not_acquired: Collection[int] = (),
    first_frame: int = 0,
) -> tuple[list[CtcTrack], dict[tuple[int, int], int], dict[int, int]]:
    """First pass of `relabel_for_ctc`: tracks, (object, frame) → label, label → object."""
    skipped = sorted(set(not_acquired))

    def acquired_gap(end: int, begin: int) -> int:
        """Frames from ``end`` to ``begin``, the ones not acquired between them left out."""
        return begin - end - (bisect_left(skipped, begin) - bisect_right(skipped, end))

    presence: dict[int, list[int]] = {}
    for f, frame in enumerate(id_frames, first_frame):
        for i in np.unique(frame).tolist():
            if i:
                presence.setdefault(int(i), []).append(f)
    segments: list[tuple[int, int, int]] = []  # (object id, begin, end)
    for obj in sorted(presence, key=lambda o: (presence[o][0], o)):
        frames = presence[obj]
        start = prev = frames[0]
        for f in frames[1:]:
            if f != prev + 1:
                segments.append((obj, start, prev))
                start = f
            prev = f
        segments.append((obj, start, prev))
    segments.sort(key=lambda s: (s[1], s[0]))
    if len(segments) > np.iinfo(np.uint16).max:
        raise LivescopeError(f"{len(segments)} tracks do not fit CTC's 16-bit labels")

    label_at: dict[tuple[int, int], int] = {}  # (object, frame) -> label
    last_label: dict[int, tuple[int, int]] = {}  # object -> (label, end) of its last segment
    object_of: dict[int, int] = {}
    tracks: list[CtcTrack] = []
    for n, (obj, begin, end) in enumerate(segments, start=1):
        parent = 0
        prev = obj if obj in last_label else int(parent_of.get(obj, 0) or 0)
        # the same object after a gap, or an object's first track: its parent's last one
        if (
            prev in last_label
            and last_label[prev][1] < begin
            and (max_link_gap is None or acquired_gap(last_label[prev][1], begin) <= max_link_gap)
        ):
            parent = last_label[prev][0]
        last_label[obj] = (n, end)
        object_of[n] = obj
        tracks.append(CtcTrack(n, begin, end, parent))
        for f in range(begin, end + 1):
            label_at[(obj, f)] = n
    return tracks, label_at, object_of


def _relabel(
    frame: NDArray[np.integer], f: int, label_at: Mapping[tuple[int, int], int]
) -> NDArray[np.uint16]:
    """Second pass of `relabel_for_ctc`: frame ``f``'s object ids → CTC labels."""
    ids = np.unique(frame)
    ids = ids[ids != 0]
    lut_from = ids.astype(np.int64)
    lut_to = np.array([label_at[(int(i), f)] for i in ids.tolist()], dtype=np.uint16)
    relabelled = np.zeros(frame.shape, np.uint16)
    if ids.size:
        pos = np.searchsorted(lut_from, frame.astype(np.int64))
        pos = np.clip(pos, 0, ids.size - 1)
        hit = lut_from[pos] == frame
        relabelled[hit] = lut_to[pos[hit]]
    return relabelled


class _MaskFiles(Sequence[NDArray[np.integer]]):
    """Frames ``0..n-1`` of a folder of ``maskT.tif`` files, read when asked for (absent: empty)."""

    def __init__(self, files: dict[int, Path], revisions: Sequence[Revision] = ()) -> None:
        self._files = files
        self._first = files[min(files)] if files else None
        self._shape: tuple[int, ...] = ()
        if self._first is not None:
            try:
                with tifffile.TiffFile(self._first) as tf:
                    self._shape = tuple(tf.pages[0].shape)
            except (OSError, ValueError, IndexError, TypeError, struct.error) as exc:
                # (a file cut short or damaged: TiffFileError, a ValueError, or struct.error)
                raise LivescopeError(f"{self._first}: cannot be read ({exc!r})") from None
        self._n = max(files) + 1 if files else 0
        self._revisions = list(revisions)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, f: int) -> NDArray[np.integer]:  # type: ignore[override]
        if not 0 <= f < self._n:
            raise IndexError(f)
        path = self._files.get(f)
        if path is None:
            return np.zeros(self._shape, np.uint16)
        frame = _read_labels(path)
        if frame.shape != self._shape:
            # (written as they were, the result held masks of two sizes, which no CTC
            # reader takes: py-ctcmetrics and `read_ctc` refuse it whole)
            raise LivescopeError(
                f"{path}: {'x'.join(map(str, frame.shape))} px, {self._first} "
                f"{'x'.join(map(str, self._shape))} px: the masks of {path.parent} are of two "
                "sizes (the position's binning, objective or ROI changed during the run), and "
                "a CTC sequence has one: no CTC result is made of them"
            )
        revs = [r for r in self._revisions if r.first <= f <= r.last]
        if revs:
            frame = frame.astype(np.int64)  # (a new id may not fit the mask's dtype)
            for r in revs:  # in order: a later one may change an id an earlier one gave
                frame[frame == r.old] = r.new
        return frame


def rewrite_ctc_result(
    folder: str | Path,
    parent_of: Mapping[int, int],
    out: str | Path | None = None,
    revisions: Sequence[Revision] = (),
    *,
    labels_csv: str | Path | None = None,
) -> list[CtcTrack]:
    """Make a folder of per-frame object-id masks a valid CTC result, in place or in ``out``.

    ``folder/maskT.tif`` hold object (track) ids frame by frame, as a live
    tracker wrote them: an object may vanish for some frames and come back (gap
    closing), and frames may be missing. They are rewritten as CTC labels with
    ``res_track.txt`` (`relabel_for_ctc`), one frame in memory at a time; a
    missing frame becomes an empty one. The result ends at the last mask of
    ``folder``: time points after it with nothing segmented (a nuclear channel
    imaged every few, whose last ones were not) have no frame, there being no
    knowing them here; such a result holds fewer frames than its run's time
    points (`livescope.pipeline.evaluate_tracks` scores it over the time points
    segmented). ``revisions``, in the order the tracker
    made them: ids it changed in frames already written (a division found late:
    see `livescope.tracking.Revision`), applied as each frame is read. With
    ``out`` (a new folder), the result goes there and ``folder`` is left as it
    was; frames of a result ``out`` held before that are no frames of this one
    (past its last frame, or numbered with other digits: ``maskTTTT.tif``) are
    removed once this one is written whole, as `write_ctc` does, and other files
    are left as they are. In place, a frame under other digits than the new
    ones is removed as it is rewritten. Returns the tracks. Each file is written
    whole (`livescope.schema.write_atomic`): a write that fails leaves the file
    it would replace as it was. The folder as a whole is not: in place, a
    rewrite that fails partway (a damaged mask, a full disk) leaves some frames
    relabelled and others not, and no ``res_track.txt`` written. For a result
    that must stay whole, write to a new ``out`` and swap it in (as the
    pipeline's worker does).

    CTC numbers the tracks afresh (by first frame), and an object seen again
    after a gap becomes a track of its own: the labels are not the masks' ids.
    ``labels_csv``: a file to write, before ``res_track.txt``, the table that
    maps them back, ``label,track,begin,end`` (a CSV with that header: each CTC
    label, the id it was made of, revisions applied, and its first and last
    frame), one row per track in the order of ``res_track.txt``. CTC readers
    (py-ctcmetrics, `read_ctc`) read only the masks and ``res_track.txt`` of a
    folder: the table may go beside them.

    Raises
    ------
    LivescopeError
        if the masks are not all of one size (a binning, objective or ROI
        changed during the run), naming two of the sizes and their files:
        nothing is written (a CTC sequence has one size; a missing frame is an
        empty one of the first frame's). If a mask cannot be read (cut short,
        damaged), naming it. If a frame of the result ``out`` held before
        cannot be removed, naming it (the new result is written).

    """
    base = Path(folder)
    files: dict[int, Path] = {}
    for p in base.glob("mask*.tif"):
        digits = p.stem[4:]
        if digits.isdigit():
            files[int(digits)] = p
    dest = base if out is None else Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    if not files:
        if labels_csv is not None:
            write_atomic(labels_csv, _labels_table([], {}))
        write_atomic(dest / "res_track.txt", "")
        if out is not None:
            _remove_stale_frames(dest, "mask", set())
        return []
    frames = _MaskFiles(files, revisions)
    tracks, label_at, object_of = _ctc_tracks(frames, parent_of, None)
    nd = _digits(len(frames))
    written: set[str] = set()
    for f in range(len(frames)):
        relabelled = _relabel(frames[f], f, label_at)
        target = dest / f"mask{f:0{nd}d}.tif"
        _write_mask(target, relabelled)
        written.add(target.name)
        if out is None and f in files and files[f] != target:
            files[f].unlink()  # the same frame under another number of digits
    if labels_csv is not None:  # (first: a folder with res_track.txt is a result written whole)
        write_atomic(labels_csv, _labels_table(tracks, object_of))
    write_atomic(dest / "res_track.txt", _track_lines(tracks))
    if out is not None:  # (in place, the frames are the folder's own: none past the last)
        _remove_stale_frames(dest, "mask", written)
    return tracks


def _write_mask(path: Path, frame: NDArray[np.uint16]) -> None:
    """Write one label image to ``path`` whole: a crash mid-write leaves the old file or the new.

    (written in place, a crash or a full disk left a truncated mask, which no reader
    can open, where the old one had been)
    """
    write_atomic(path, _encode_mask(frame))


def _encode_mask(frame: NDArray[np.uint16]) -> memoryview:
    """One label image as the bytes of its TIFF file (zlib-compressed)."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, frame, compression="zlib")
    return buf.getbuffer()


def _track_lines(tracks: Sequence[CtcTrack]) -> str:
    return "".join(f"{t.label} {t.begin} {t.end} {t.parent}\n" for t in tracks)


def _labels_table(tracks: Sequence[CtcTrack], object_of: Mapping[int, int]) -> str:
    """``labels_csv`` of `rewrite_ctc_result`: each CTC label's object id and frames."""
    rows = "".join(f"{t.label},{object_of[t.label]},{t.begin},{t.end}\n" for t in tracks)
    return "label,track,begin,end\n" + rows


def _digits(n_frames: int) -> int:
    return max(3, len(str(max(n_frames - 1, 0))))


def write_ctc(
    folder: str | Path,
    frames: Sequence[NDArray[np.uint16]],
    tracks: Sequence[CtcTrack],
    kind: Literal["gt", "res"] = "res",
    *,
    first_frame: int = 0,
) -> Path:
    """Write a label sequence in CTC layout.

    ``kind="gt"`` writes ``folder/TRA/man_trackTTT.tif`` and ``man_track.txt``;
    ``kind="res"`` writes ``folder/maskTTT.tif`` and ``res_track.txt``.
    Returns the folder holding the track file. Each file is written whole
    (`livescope.schema.write_atomic`): a write that fails (a full disk, a crash)
    leaves the file it would replace as it was, never a truncated one. Frames
    of a sequence the folder held before that are no frames of this one (past
    its last frame, or numbered with other digits: ``stemTTTT.tif``) are removed
    once this one is written; other files are left as they are.

    ``first_frame``: the number of ``frames[0]``, for a sequence that starts late
    (tracks numbered so: `relabel_for_ctc`'s ``first_frame``). CTC sequences
    start at frame 0: the frames before it are written empty, of ``frames[0]``'s
    size (one image encoded once, however many; none when ``frames`` is empty).

    Raises
    ------
    LivescopeError
        if a frame holds a label CTC's 16-bit masks cannot (below 0 or above
        65535: `relabel_for_ctc` numbers tracks from 1), naming the frame;
        nothing is written; so too if ``first_frame`` is below 0. If a frame of
        the sequence the folder held before cannot be removed, naming it (the
        new sequence is written).

    """
    top = int(np.iinfo(np.uint16).max)
    for f, frame in enumerate(frames):
        if frame.size and (int(frame.min()) < 0 or int(frame.max()) > top):
            raise LivescopeError(
                f"frame {f} holds labels {int(frame.min())}..{int(frame.max())}; CTC masks hold "
                f"0..{top} (relabel_for_ctc numbers the tracks from 1)"
            )
    base = Path(folder) / "TRA" if kind == "gt" else Path(folder)
    if first_frame < 0:
        raise LivescopeError(f"first_frame {first_frame}: frames are numbered from 0")
    base.mkdir(parents=True, exist_ok=True)
    stem, track_file = ("man_track", "man_track.txt") if kind == "gt" else ("mask", "res_track.txt")
    first = first_frame if len(frames) else 0
    nd = _digits(first + len(frames))
    written: set[str] = set()
    if first:
        # (one empty image encoded once and written again: a label image, its check and
        # its compression for each frame before a late first one cost minutes and GB)
        empty = _encode_mask(np.zeros(frames[0].shape, np.uint16))
        for f in range(first):
            name = f"{stem}{f:0{nd}d}.tif"
            write_atomic(base / name, empty)
            written.add(name)
    for f, frame in enumerate(frames, first):
        name = f"{stem}{f:0{nd}d}.tif"
        _write_mask(base / name, frame.astype(np.uint16))
        written.add(name)
    write_atomic(base / track_file, _track_lines(tracks))
    _remove_stale_frames(base, stem, written)
    return base


def _remove_stale_frames(base: Path, stem: str, written: set[str]) -> None:
    """Remove the ``stemT.tif`` frames of ``base`` other than ``written`` (names), once those are.

    (over an older sequence: its frames past this one's last, or under another number of
    digits, were read as frames of this one; other files are left as they are)

    Raises
    ------
    LivescopeError
        naming a frame that cannot be removed.

    """
    pattern = re.compile(rf"^{re.escape(stem)}\d+\.tif$")
    for p in sorted(base.glob(f"{stem}*.tif")):
        if pattern.match(p.name) and p.name not in written:
            try:
                p.unlink()
            except OSError as exc:  # (e.g. held open by a viewer on Windows)
                raise LivescopeError(
                    f"{p}: a frame of the sequence {base} held before could not be removed "
                    f"({exc}); remove it, or it is read as a frame of the one just written"
                ) from None


def read_ctc(
    folder: str | Path, kind: Literal["gt", "res"] = "res"
) -> tuple[list[NDArray[np.uint16]], list[CtcTrack]]:
    """Read a CTC label sequence written by `write_ctc` (or by anyone following CTC).

    Frame ``t`` of the list is ``stemT.tif`` (``stem``: ``man_track`` or ``mask``);
    other files are ignored.

    Raises
    ------
    LivescopeError
        naming the folder or file: no frame, a frame missing from ``0..last`` (the
        track file's frame numbers would point at the wrong frames), a frame
        numbered twice, a frame or track file that cannot be read, a frame that
        is no 2-D plane of whole numbers or not of frame 0's size, a track file
        that is no lineage (`_parse_tracks`: naming the line), a label in a
        frame outside its track's begin..end, or (``kind="res"``) a track whose
        label is missing from frames of its begin..end (`_check_labels`).

    Labels of the masks no track lists, tracks ending after the last frame
    and (``kind="gt"``) tracks missing from frames of their span are logged as
    warnings (``livescope`` logger) and read as they are.

    """
    base = Path(folder) / "TRA" if kind == "gt" else Path(folder)
    stem, track_file = ("man_track", "man_track.txt") if kind == "gt" else ("mask", "res_track.txt")
    pattern = re.compile(rf"^{re.escape(stem)}(\d+)\.tif$")
    files: dict[int, Path] = {}
    for p in sorted(base.glob(f"{stem}*.tif")):
        if (m := pattern.match(p.name)) is None:
            continue
        if (other := files.setdefault(int(m.group(1)), p)) != p:
            raise LivescopeError(f"{other} and {p} are both frame {int(m.group(1))}")
    if not files:
        raise LivescopeError(f"no {stem}TTT.tif files in {base}{gt_folder_hint(folder)}")
    if gaps := sorted(set(range(max(files) + 1)) - set(files)):
        named = ", ".join(map(str, gaps[:5])) + (", ..." if len(gaps) > 5 else "")
        raise LivescopeError(
            f"{base}: {stem}TTT.tif missing for {len(gaps)} of frames 0..{max(files)} ({named}); "
            "a CTC sequence has a file for every frame, which its track file's numbers refer to"
        )
    frames = [_read_labels(files[t]) for t in range(len(files))]
    for t, frame in enumerate(frames):  # (what every caller takes: 2-D label planes)
        if frame.ndim != 2 or not np.issubdtype(frame.dtype, np.integer):
            raise LivescopeError(
                f"{files[t]}: a {frame.dtype} frame of shape {frame.shape}; livescope reads "
                "2-D CTC sequences (one plane of whole-number labels per frame; a 3-D set's "
                "planes are not tracked here)"
            )
        if frame.shape != frames[0].shape:
            raise LivescopeError(
                f"{files[t]}: {frame.shape[0]}x{frame.shape[1]} px, frame 0 "
                f"{frames[0].shape[0]}x{frames[0].shape[1]} (a sequence's frames have one size)"
            )
    try:
        # (utf-8-sig: also a file saved as "UTF-8 with BOM", as Windows Notepad saves it)
        text = (base / track_file).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:  # (e.g. saved as UTF-16 by a Windows tool)
        raise LivescopeError(f"{base / track_file}: cannot be read ({exc})") from None
    tracks = _parse_tracks(base / track_file, text)
    _check_labels(base / track_file, [files[t] for t in range(len(files))], frames, tracks, kind)
    return frames, tracks


def _check_labels(
    path: Path,
    files: Sequence[Path],
    frames: Sequence[NDArray[np.integer]],
    tracks: Sequence[CtcTrack],
    kind: Literal["gt", "res"],
) -> None:
    """Refuse masks that contradict their track file ``path``; warn where it misses some.

    CTC: each label of the masks is a track of the track file, and is in every
    frame from its begin to its end and in no other. A label in a frame outside
    its track is refused (py-ctcmetrics finds such a result invalid; the frame
    would be scored against the wrong track). A track missing from frames of
    its span is refused in a result (py-ctcmetrics: invalid) and warned of in a
    ground truth (py-ctcmetrics does not check those). Warned of: labels no
    track lists (each read as a cell of no lineage; `livescope eval track`
    refuses such a result through py-ctcmetrics) and tracks that end after the
    last frame (py-ctcmetrics leaves their frames past it out).

    Raises
    ------
    LivescopeError
        naming the mask file, the label and its track's frames.

    """
    span = {t.label: t for t in tracks}
    seen: dict[int, list[int]] = {}  # label -> the frames it is in
    for f, frame in enumerate(frames):
        # (the labelled pixels only: np.unique of whole frames took twice as long as reading them)
        for label in np.unique(frame[frame != 0]).tolist():
            seen.setdefault(label, []).append(f)
            if (t := span.get(label)) is not None and not t.begin <= f <= t.end:
                raise LivescopeError(
                    f"{files[f]}: label {label} is in frame {f}, but {path} has track {label} "
                    f"in frames {t.begin}..{t.end} only (a CTC track is in the frames from its "
                    "begin to its end, and in no other)"
                )
    last = len(frames) - 1
    if unlisted := sorted(label for label in seen if label not in span):
        named = ", ".join(
            f"{label} in {files[seen[label][0]].name}..{files[seen[label][-1]].name}"
            for label in unlisted[:5]
        ) + (f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else "")
        logger.warning(
            "%s lists no track for label%s %s of the masks (a CTC track file lists every "
            "label of its masks); read as cells of no lineage",
            path, "s" if len(unlisted) > 1 else "", named,
        )  # fmt: skip
    gaps = []
    for t in tracks:
        listed = range(t.begin, min(t.end, last) + 1)
        if missing := sorted(set(listed) - set(seen.get(t.label, ()))):
            gaps.append((t, missing))
    if gaps:
        t, missing = gaps[0]
        what = (
            f"{path}: track {t.label} is in frames {t.begin}..{t.end}, but its label is missing "
            f"from {len(missing)} of them ({files[missing[0]].name} first)"
            + (f", and {len(gaps) - 1} other tracks from some of theirs" if len(gaps) > 1 else "")
        )
        if kind == "res":
            raise LivescopeError(
                f"{what}; a CTC result's track is in every frame of its span (an object missed "
                "for some frames goes on as a new track, its parent the track before the gap)"
            )
        logger.warning("%s; each frame is read as it is", what)
    if beyond := [t for t in tracks if t.end > last]:
        named = ", ".join(f"{t.label} (to frame {t.end})" for t in beyond[:5])
        logger.warning(
            "%s: %d track%s end%s after the last frame, %d (%s): %s%s; frames missing at the "
            "end of the sequence, or the track file of a longer one? The tracks are returned "
            "as listed",
            path, len(beyond), "s" if len(beyond) > 1 else "", "" if len(beyond) > 1 else "s",
            last, files[last].name, named, ", ..." if len(beyond) > 5 else "",
        )  # fmt: skip


def _parse_tracks(path: Path, text: str) -> list[CtcTrack]:
    """Return the tracks of a CTC track file's ``text``; refuse one that is no lineage.

    Four whole numbers >= 0 per line; each label (> 0) listed once, beginning
    no later than it ends; a parent is 0 or a label listed in the file, not the
    track itself, and ends before its daughter begins (as CTC defines it).

    Raises
    ------
    LivescopeError
        naming the file and line of the first track that breaks these.

    """
    tracks: dict[int, tuple[CtcTrack, int]] = {}  # label -> (track, line)
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts):
            # (not 4 parts, not numbers, or below 0)
            raise LivescopeError(f"{path}:{n}: expected 'L B E P' (four whole numbers >= 0), "
                                 f"got {line!r}")  # fmt: skip
        t = CtcTrack(*(int(p) for p in parts))
        if t.label == 0:
            raise LivescopeError(f"{path}:{n}: label 0 is the background, not a track")
        if t.label in tracks:
            raise LivescopeError(
                f"{path}:{n}: track {t.label} is listed again (line {tracks[t.label][1]})"
            )
        if t.begin > t.end:
            raise LivescopeError(
                f"{path}:{n}: track {t.label} begins (frame {t.begin}) after it ends ({t.end})"
            )
        if t.parent == t.label:
            raise LivescopeError(f"{path}:{n}: track {t.label} is its own parent")
        tracks[t.label] = (t, n)
    for t, n in tracks.values():
        if not t.parent:
            continue
        if t.parent not in tracks:
            raise LivescopeError(
                f"{path}:{n}: the parent {t.parent} of track {t.label} is not a track of this file"
            )
        if (mother := tracks[t.parent][0]).end >= t.begin:
            raise LivescopeError(
                f"{path}:{n}: track {t.label} begins at frame {t.begin}, but its parent "
                f"{t.parent} ends at frame {mother.end} (a parent ends before its daughters begin)"
            )
    return [t for t, _ in tracks.values()]


def _read_labels(path: Path) -> NDArray[np.uint16]:
    """Return one CTC label image; LivescopeError naming the file if it cannot be read."""
    try:
        return np.asarray(tifffile.imread(path))
    except Exception as exc:  # noqa: BLE001 (tifffile and its decoders raise many kinds:
        # TiffFileError, struct.error, IndexError on a file cut short; imagecodecs'
        # DeflateError or zlib.error on damaged compressed data, as write_ctc writes)
        raise LivescopeError(f"{path}: cannot be read ({exc!r})") from None
