"""Peer trackers (laptrack, trackpy) on the same input, for side-by-side comparisons.

Optional: each needs its package (laptrack, trackpy: livescope's ``dev`` extra). Both get the
same objects (centroids of the label images), one search radius (``max_distance``,
the caller's choice: ours has per-track gates instead) and our gap (``max_gap``,
frames between sightings); divisions are left at each package's default (off in both).
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import LivescopeError, install_command

from ._objects import ObjectTable, measure_objects
from ._sequence import TrackedSequence

__all__ = ["PEERS", "objects_table", "peer_track"]

PEERS = ("laptrack", "trackpy")


def objects_table(objects: Sequence[ObjectTable]) -> Any:
    """One row per object (frame, label, centroid y and x): what the peers link."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise LivescopeError(
            f"the peer trackers need pandas, which livescope's dev extra brings with laptrack "
            f"and trackpy: {install_command('dev')}"
        ) from exc
    cols = ("frame", "label", "y", "x")
    parts = [
        (np.full(len(o), f, np.int64), o.labels, o.centroids[:, 0], o.centroids[:, 1])
        for f, o in enumerate(objects)
    ]
    return pd.DataFrame(
        {c: np.concatenate([p[k] for p in parts]) if parts else [] for k, c in enumerate(cols)}
    )


def peer_track(
    name: str,
    frames: Iterable[NDArray[np.integer[Any]]],
    *,
    max_distance: float,
    max_gap: int = 3,
    table: Any = None,
) -> TrackedSequence:
    """Track label images with a peer package; same output form as `track_sequence`.

    ``frames`` may be any iterable (read once); every frame must have the first
    one's shape. ``table`` (from `objects_table`) skips measuring the objects again.
    Raises `LivescopeError` on a frame of another shape and where the peer is
    not installed.
    """
    if name not in PEERS:
        raise LivescopeError(f"unknown peer tracker {name!r} (known: {', '.join(PEERS)})")
    # read once (a generator was read twice: IndexError); an iterator's frames copied as
    # they come (a reader that refills one buffer would leave every frame the last one)
    labels: list[NDArray[Any]] = []
    for k, f in enumerate(frames):
        if labels and np.shape(f) != labels[0].shape:
            # (centroids of another frame size are in other coordinates, as in track_sequence)
            raise LivescopeError(
                f"peer_track: frame {k} of the sequence has shape {np.shape(f)}, its first "
                f"{labels[0].shape} (every frame of a sequence must have the same size)"
            )
        labels.append(np.asarray(f) if isinstance(frames, Sequence) else np.array(f))
    try:
        with warnings.catch_warnings():  # the peers' own deprecation noise (pandas)
            warnings.simplefilter("ignore")
            df = objects_table([measure_objects(f) for f in labels]) if table is None else table
            return _run(name, labels, df, max_distance, max_gap)
    except ImportError as exc:
        raise LivescopeError(
            f"peer tracker {name} is not installed ({exc}); livescope's dev extra brings it: "
            f"{install_command('dev')}"
        ) from exc


def _run(
    name: str,
    frames: Sequence[NDArray[np.integer[Any]]],
    df: Any,
    max_distance: float,
    max_gap: int,
) -> TrackedSequence:
    maps: list[dict[int, int]] = [{} for _ in frames]
    if len(df) == 0:  # nothing to link (both peers fail on an empty table)
        importlib.import_module(name)  # (still: not installed is an error)
        return TrackedSequence(list(frames), maps, {}, [])
    if name == "laptrack":
        from laptrack import LapTrack

        lt = LapTrack(
            cutoff=max_distance**2,
            gap_closing_cutoff=max_distance**2,
            gap_closing_max_frame_count=max_gap,
        )
        track_df, split_df, _ = lt.predict_dataframe(
            df, coordinate_cols=["y", "x"], frame_col="frame", only_coordinate_cols=False
        )
        track_df = track_df.reset_index()
        ids = track_df["track_id"].to_numpy() + 1
        frame_col = "frame" if "frame" in track_df else "frame_y"
        parents = {int(t): 0 for t in np.unique(ids)}
        for _, r in split_df.iterrows():
            parents[int(r["child_track_id"]) + 1] = int(r["parent_track_id"]) + 1
        fr, lab = track_df[frame_col].to_numpy(), track_df["label"].to_numpy()
    else:
        import trackpy

        # its per-frame INFO lines hushed for this call only (trackpy.quiet() set its
        # logger's level for the whole process)
        log = logging.getLogger("trackpy")
        level = log.level
        log.setLevel(logging.WARNING)
        try:
            # trackpy's memory counts the frames missed; max_gap, frames between sightings
            linked = trackpy.link(
                df, search_range=max_distance, memory=max_gap - 1, pos_columns=["y", "x"]
            )
        finally:
            log.setLevel(level)
        ids = linked["particle"].to_numpy() + 1
        parents = {int(t): 0 for t in np.unique(ids)}
        fr, lab = linked["frame"].to_numpy(), linked["label"].to_numpy()
    for f, lb, i in zip(fr.tolist(), lab.tolist(), ids.tolist(), strict=True):
        maps[int(f)][int(lb)] = int(i)
    return TrackedSequence(list(frames), maps, parents, [])
