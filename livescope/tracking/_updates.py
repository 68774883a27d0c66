"""What the tracker returns for a frame: track ids, and lineage events (`TrackUpdate`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Division", "Revision", "TrackUpdate"]


@dataclass(frozen=True)
class Division:
    """``parent`` ends at ``frame - 1``; ``daughters`` begin at ``frame`` or later.

    (The parent's last sighting may be before ``frame - 1``, the daughters' first
    after ``frame``, when it or they were missed: `OnlineTracker.spans` has those.)
    """

    parent: int
    daughters: tuple[int, int]
    frame: int
    detected_at: int


@dataclass(frozen=True)
class Revision:
    """In frames ``first..last`` (already returned), track ``old`` is now ``new``."""

    old: int
    new: int
    first: int
    last: int


@dataclass(frozen=True)
class TrackUpdate:
    """What one frame gave: a track id per object, and lineage events."""

    frame: int
    labels: NDArray[np.int64]
    track_ids: NDArray[np.int64]
    born: tuple[int, ...] = ()
    """Tracks started on this frame without a parent (a division's daughters are in
    ``divisions``, not here)."""
    lost: tuple[int, ...] = ()
    """Tracks seen on the previous frame given (not always ``frame - 1``) and not on this
    one; a parent that divided on this frame is one of them if it was seen on that frame
    (one missed before it divided was lost on the frame after its last sighting)."""
    divisions: tuple[Division, ...] = ()
    revisions: tuple[Revision, ...] = ()
    ignored: str = ""
    """Why this frame was not tracked (its track ids are 0); empty when it was."""

    def mapping(self) -> dict[int, int]:
        """Label -> track id."""
        return dict(zip(self.labels.tolist(), self.track_ids.tolist(), strict=True))
