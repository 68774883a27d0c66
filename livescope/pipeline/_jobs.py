"""What the pipeline worker's threads hand each other: fields, and fields to decide or store."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray

from livescope.policy import Observation, Verdict
from livescope.tracking import TrackerSnapshot

from ._analyzer import FrameResult

__all__ = ["DecideJob", "Field", "StoreJob", "overlap_ns"]  # the worker's own, not re-exported


@dataclass
class Field:
    """The frames of one position at one time point, as the worker analyses them."""

    position: str
    t: int
    frames: dict[tuple[str, int], NDArray[Any]]
    header: dict[str, Any]
    """Header of the frame that completed the field (latest arrival)."""
    t_received_ns: int
    live: bool = True
    t_start_ns: int = 0
    """When its analysis began and when its decisions were answered (`clock_ns`)."""
    t_done_ns: int = 0


@dataclass
class DecideJob:
    """A field whose engines have run, for the decision thread."""

    fld: Field
    res: FrameResult
    nuclear: NDArray[Any] | None
    pixel_size_um: float | None
    t_start_ns: int
    t_analysed_ns: int
    busy_ns: int
    """Time the engines spent on earlier fields while this one waited."""
    tracker_state: TrackerSnapshot | None
    """Its position's tracker right after this field (the next field may change it; None:
    nothing was tracked)."""


@dataclass
class StoreJob:
    """A decided field, for the store thread."""

    fld: Field
    res: FrameResult
    obs: Observation
    verdicts: list[Verdict]
    acks: dict[int, tuple[str, bool, str]]
    ms: dict[str, float]
    state: dict[str, Any]
    policy_state: tuple[int, str]
    """(generation, JSON) of the policies' state once this field was decided."""


def overlap_ns(spans: Iterable[tuple[int, int]], start: int, end: int) -> int:
    """Return how much of the ``(begin, end)`` spans (ns) lies between ``start`` and ``end``."""
    return sum(max(0, min(b, end) - max(a, start)) for a, b in spans)
