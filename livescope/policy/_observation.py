"""What a policy sees (one analysed field) and what it gives back (firings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import UNTURNED, Decision

__all__ = ["Cells", "Firing", "Observation"]


def _empty_f() -> NDArray[np.float64]:
    return np.zeros(0, np.float64)


def _empty_i() -> NDArray[np.int64]:
    return np.zeros(0, np.int64)


@dataclass(frozen=True)
class Cells:
    """Per-cell measurements of one field (equal-length arrays, one entry per cell).

    Centroids are pixels (row ``y``, column ``x``) of the field's segmented frame
    (`Observation.shape`). Values a stage did not produce are NaN (``stain``
    without a virtual-staining engine or at a time point it was not made,
    ``p_mitosis`` without a cell-state engine or for a cell it did not score);
    ``state`` is then ``""``.
    """

    labels: NDArray[np.int64] = field(default_factory=_empty_i)
    tracks: NDArray[np.int64] = field(default_factory=_empty_i)
    parents: NDArray[np.int64] = field(default_factory=_empty_i)
    """Parent track of each cell's track (0: none known)."""
    age: NDArray[np.int64] = field(default_factory=_empty_i)
    """Frames since the track began (0 on its first frame)."""
    y: NDArray[np.float64] = field(default_factory=_empty_f)
    x: NDArray[np.float64] = field(default_factory=_empty_f)
    area: NDArray[np.float64] = field(default_factory=_empty_f)
    """Pixels of the frame (px², not µm²: at 0.65 µm/px a nucleus of 113 µm² is ~270)."""
    intensity: NDArray[np.float64] = field(default_factory=_empty_f)
    """Mean of the nuclear signal (the stain, or the virtual stain) over the cell."""
    stain: NDArray[np.float64] = field(default_factory=_empty_f)
    """Mean of the virtual stain over the cell."""
    p_mitosis: NDArray[np.float64] = field(default_factory=_empty_f)
    state: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.tracks.size)

    def feature(self, name: str) -> NDArray[np.float64]:
        """Return a per-cell feature by name (``intensity``, ``stain``, ``area``, ``p_mitosis``)."""
        if name not in FEATURES:
            raise KeyError(f"unknown cell feature {name!r}; known: {', '.join(FEATURES)}")
        return np.asarray(getattr(self, name), np.float64)


FEATURES = ("intensity", "stain", "area", "p_mitosis")


@dataclass(frozen=True)
class Observation:
    """The analysis of one field (one position at one time point), as policies see it.

    ``sample_time_s`` is the run's plan clock: policies and guardrails time
    cooldowns and rates with it, so a replay decides exactly as the live run did.
    """

    run_id: str
    seq: int
    """Sequence number of the frame the field's analysis completed with."""
    position: str
    t: int
    sample_time_s: float
    pixel_size_um: float
    shape: tuple[int, int]
    """(rows, columns) of the frame the cells' centroids are pixels of (the segmented one)."""
    stage_um: tuple[float, float, float | None] | None = None
    """(x, y, z) of the field's centre, µm (None when the frame carried none); z is
    the middle of a z-stack's planes (until session 40 its last plane's)."""
    cells: Cells = field(default_factory=Cells)
    divisions: tuple[tuple[int, tuple[int, int]], ...] = ()
    """(parent track, (daughter, daughter)) found on this frame."""
    lost: tuple[int, ...] = ()
    """Tracks not seen on this frame that were seen on the previous one (a parent that
    divided on this frame too: ``track_lost`` passes over those in ``divisions``)."""
    engines: dict[str, str] = field(default_factory=dict)
    """Engine name → model sha256 used for this field."""
    orientation: tuple[float, float, float, float] = UNTURNED
    """The stage directions of the frame's columns and rows (the profile's
    ``camera.orientation``; Micro-Manager's pixel size affine on a real rig)."""
    segmented: bool = True
    """False for a field nothing was segmented in (no nuclear frame at this time
    point and no virtual stain, or no segmentation engine): its `cells` are
    unknown, not none. Rules pass over it; a Python policy may too."""
    roi_offset_um: tuple[float, float] = (0.0, 0.0)
    """Where the frame's centre is from the camera sensor's, whose place `stage_um`
    is, µm along the frame's (columns, rows): a camera ROI off the sensor's centre
    (the frame's ``roi_offset_px``; (0, 0) where it carried none). `orientation`
    turns it onto the stage as it does the pixels."""

    def stage_xy(self, y: float, x: float) -> tuple[float, float]:
        """Stage (x, y) in µm of a pixel (row ``y``, column ``x``) of this field.

        By default row 0 is at the smallest stage y and column 0 at the
        smallest x (the simulated microscope's and Micro-Manager's default
        orientation); `orientation` turns or mirrors that. The frame's centre
        is `roi_offset_um` from `stage_um` (a camera ROI off the sensor's centre).

        Raises
        ------
        ValueError
            if the frame carried no stage position.

        """
        if self.stage_um is None:
            raise ValueError(f"field {self.position} t={self.t} has no stage position")
        sx, sy = self.stage_um[0], self.stage_um[1]
        h, w = self.shape
        dcol = (x - (w - 1) / 2) * self.pixel_size_um + self.roi_offset_um[0]
        drow = (y - (h - 1) / 2) * self.pixel_size_um + self.roi_offset_um[1]
        a, b, c, d = self.orientation
        return sx + a * dcol + b * drow, sy + c * dcol + d * drow

    def aim_xy(self, y: float, x: float) -> tuple[float, float]:
        """Stage (x, y) in µm to image pixel (row ``y``, column ``x``) at the frame's centre.

        Where a close-up centred on a cell, or a recentring, moves the stage: the
        frames taken there, with the camera's ROI as it is, have the cell at their
        centre. That is `stage_xy` less the ROI's offset (`roi_offset_um`: a ROI
        off the sensor's centre images the stage position off its own centre), not
        the cell's own stage place, which would put it at the sensor's centre,
        at the ROI's edge or outside it.

        Raises
        ------
        ValueError
            if the frame carried no stage position.

        """
        sx, sy = self.stage_xy(y, x)
        ox, oy = self.roi_offset_um
        a, b, c, d = self.orientation
        return sx - (a * ox + b * oy), sy - (c * ox + d * oy)

    def track_row(self, track: int) -> int | None:
        """Index of ``track`` in `cells` (None if not in this field)."""
        hits = np.flatnonzero(self.cells.tracks == track)
        return int(hits[0]) if hits.size else None


@dataclass(frozen=True)
class Firing:
    """One firing of a rule: the decision it asks for and what it saw.

    ``decision`` is None for a rule that only records an event (no action), and
    for a firing whose decision could not be made (``unmade`` says why).
    """

    rule: str
    trigger: str
    position: str
    decision: Decision | None
    track: int | None = None
    y: float | None = None
    x: float | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    unmade: str = ""
    """Why its decision could not be made (say, a close-up in a field whose frame
    carried no stage position): the engine refuses this firing with it as the
    reason, and the policy goes on. ``""``: made (or only recorded)."""
