"""Track a whole sequence of label images (the causal tracker, frame by frame)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray

from livescope.schema import LivescopeError

from ._tracker import OnlineTracker, TrackerConfig
from ._updates import Division

__all__ = ["TrackedSequence", "track_sequence"]


class _IdFrames(Sequence[NDArray[np.int64]]):
    """Track-id images computed on access (label images stay compact in memory)."""

    def __init__(self, labels: list[NDArray[Any]], maps: list[dict[int, int]]) -> None:
        self._labels, self._maps = labels, maps

    def __len__(self) -> int:
        return len(self._labels)

    @overload
    def __getitem__(self, i: int) -> NDArray[np.int64]: ...
    @overload
    def __getitem__(self, i: slice) -> list[NDArray[np.int64]]: ...
    def __getitem__(self, i: int | slice) -> NDArray[np.int64] | list[NDArray[np.int64]]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return _apply(self._labels[i], self._maps[i])


@dataclass
class TrackedSequence:
    """Label images, each frame's label -> track id map, and the lineage."""

    labels: list[NDArray[Any]]
    maps: list[dict[int, int]]
    parents: dict[int, int]
    divisions: list[Division]

    @property
    def id_frames(self) -> Sequence[NDArray[np.int64]]:
        """One track-id image per frame (0 = background); equal ids are one track."""
        return _IdFrames(self.labels, self.maps)

    @property
    def n_tracks(self) -> int:
        """Number of tracks in the lineage (a resumed tracker's earlier ones included)."""
        return len(self.parents)


def _compact(labels: NDArray[Any]) -> NDArray[Any]:
    """Copy ``labels`` into uint16 or uint32 if either holds them (else in their own type).

    Always a copy: a caller may hand the same buffer back refilled each frame (a
    reader or slot ring), and a kept view would turn every frame into the last one.
    """
    a = np.asarray(labels)
    top = int(a.max()) if a.size else 0
    for dt in (np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return a.astype(dt)
    return np.array(a)


def track_sequence(
    frames: Iterable[NDArray[np.integer[Any]]],
    *,
    images: Iterable[NDArray[Any] | None] | None = None,
    config: TrackerConfig | None = None,
    tracker: OnlineTracker | None = None,
    progress: Callable[[int], None] | None = None,
) -> TrackedSequence:
    """Run `OnlineTracker` over label images; apply its revisions to earlier frames.

    Every frame must have the first one's shape. ``tracker`` (one resumed from a
    saved state) continues with its own config: ``config`` is for a new one.
    Raises `LivescopeError` on a frame the tracker cannot take, on one of another
    shape, and on a ``config`` that differs from the given ``tracker``'s.
    """
    if tracker is not None and config is not None and config != tracker.config:
        raise LivescopeError(
            "track_sequence: config differs from the given tracker's own config, which it "
            "keeps: pass one or the other"
        )
    tr = tracker or OnlineTracker(config)
    maps: list[dict[int, int]] = []
    label_frames: list[NDArray[np.integer[Any]]] = []
    divisions: list[Division] = []
    imgs = iter(images) if images is not None else None
    start = tr.frame + 1  # a resumed tracker's first frame here is not frame 0
    for k, lab in enumerate(frames):
        if label_frames and np.shape(lab) != label_frames[0].shape:
            # centroids of another frame size are in other coordinates (a crop, a binning):
            # linking them to the tracks would join unrelated cells
            first = label_frames[0].shape
            raise LivescopeError(
                f"track_sequence: frame {k} of the sequence has shape {np.shape(lab)}, "
                f"its first {first} (every frame of a sequence must have the same size)"
            )
        img = next(imgs, None) if imgs is not None else None
        up = tr.update(lab, image=img)
        for rev in up.revisions:
            # frames before this sequence's first (a resumed tracker) are not here
            for f in range(max(rev.first, start), rev.last + 1):
                m = maps[f - start]
                for label, tid in m.items():
                    if tid == rev.old:
                        m[label] = rev.new
        maps.append(up.mapping())
        label_frames.append(_compact(lab))
        divisions.extend(up.divisions)
        if progress is not None:
            progress(k + 1)
    return TrackedSequence(label_frames, maps, tr.lineage, divisions)


def _apply(labels: NDArray[np.integer[Any]], mapping: dict[int, int]) -> NDArray[np.int64]:
    """Replace each label by its track id (0 where unmapped), with a lookup table."""
    lab = np.asarray(labels)
    top = max(int(lab.max()) if lab.size else 0, max(mapping, default=0))
    if top >= max(4 * lab.size, 1 << 16):
        # ids far sparser than pixels (e.g. uint32 hashes, 2**40): a table as long as
        # the largest id would not fit in memory; look each label up among the few
        dt = np.uint64 if lab.dtype.kind == "u" else np.int64  # (never mixed: float64)
        keys = np.array(sorted(mapping), dt)
        vals = np.array([mapping[int(k)] for k in keys.tolist()], np.int64)
        flat = lab.astype(dt, copy=False)
        pos = np.minimum(np.searchsorted(keys, flat), max(keys.size - 1, 0))
        out = np.zeros(lab.shape, np.int64)
        if keys.size:
            hit = (keys[pos] == flat) & (flat != 0)
            out[hit] = vals[pos[hit]]
        return out
    lut = np.zeros(top + 1, np.int64)
    for k, v in mapping.items():
        lut[k] = v
    lut[0] = 0
    return lut[lab]
