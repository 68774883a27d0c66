"""Per-frame metadata on the hot path: a TypedDict, not a pydantic model."""

from __future__ import annotations

import math
from typing import Any, NotRequired, TypedDict

__all__ = ["FrameInfo", "roi_offset_pair"]


class FrameInfo(TypedDict):
    """What livescope records about every acquired frame (one JSON line each).

    Units are in the names; times are seconds (sample time), milliseconds, or
    nanoseconds of `clock_ns` (``t_camera_ns``).
    ``index`` is the useq event index (``t``, ``p``, ``c``, ``z``, ...), ``seq`` the
    frame's sequence number in the run (0, 1, 2, ... in acquisition order).
    ``hardware_triggered`` marks frames of a hardware-timed burst (camera sequence).
    ``t_camera_ns`` is ``clock_ns()`` when the frame reached livescope (through
    pycromanager, at its post-camera hook: after the snap on pycromanager's
    Python backend, once the camera was triggered on Micro-Manager's Java one);
    ``added_by`` the id of the decision that added its event (None: the plan's);
    ``adler32`` the checksum of its pixels as the camera produced them.
    ``roi_offset_px`` is where the frame's centre is from the camera sensor's
    (the stage position), (columns, rows) in the frame's pixels: a camera ROI
    off the sensor's centre. Absent or None where not known (frames recorded
    before it was): taken as (0, 0), centred.
    """

    seq: int
    index: dict[str, int]
    position: str
    channel: str
    x_um: float | None
    y_um: float | None
    z_um: float | None
    exposure_ms: float
    pixel_size_um: float
    sample_time_s: float | None
    runner_time_ms: float
    t_camera_ns: int
    hardware_triggered: bool
    added_by: str | None
    adler32: int
    shape: tuple[int, ...]
    dtype: str
    event: dict[str, Any]
    roi_offset_px: NotRequired[tuple[float, float] | None]


def roi_offset_pair(value: Any) -> tuple[float, float] | None:
    """Return a frame's ``roi_offset_px`` as (columns, rows), or None where it is not one.

    Two finite numbers (a bool is none), as a list or tuple: how a frame header,
    a frame log line and the worker's observation read it. None also for None
    (not known: the frame is taken as centred).
    """
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return None
    try:
        cols, rows = float(value[0]), float(value[1])
    except OverflowError:  # (a whole number past any float)
        return None
    return (cols, rows) if math.isfinite(cols) and math.isfinite(rows) else None
