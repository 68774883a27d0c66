"""What a plan asks of a rig, worked out before it runs (``livescope plan check``).

`check_plan` says whether a plan can run on a rig at all; `plan_figures` says
what it will cost: frames, disk, light per position, and how long its time
points take against its interval. The time is a lower bound: each frame's
exposure, the camera's readout at its ``max_fps``, stage moves at their
``max_speed_um_s`` (x, y and z at once); filter changes, shutters, settling and
autofocus add to it. Time points are taken as the agent's queue takes them
(`livescope.scope.EventFeed`): by when each event is due, counted from the
run's start, so positions with time plans of their own are imaged side by side
(useq's event timer, reset per position, is not restarted). A time point that
takes longer than the interval does not fail the plan (the next one starts as
soon as it can), but its frames are not taken when the plan says: that is a
warning.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import useq

from ._plan import _light_by_field, focus_centred_positions, plan_events, planned_light_s
from ._plan_warnings import plan_warnings
from ._positions import position_name
from ._profile import HardwareProfile

__all__ = ["plan_figures"]

LIGHT_WARN_SHARE = 0.8
"""Warn when the plan alone gives a position this share of its fluorescence budget, at the
hottest point of its field of view (the decisions' close-ups may add little more)."""

LATE_WARN_S = 1.0
"""Warn when a time point starts at least this much later than the plan says."""


def _apart(a: float | None, b: float | None) -> float:
    """Return how far a stage axis moves from ``a`` to ``b``, µm (0: either not given)."""
    return abs(b - a) if a is not None and b is not None else 0.0


def plan_figures(
    sequence: useq.MDASequence,
    profile: HardwareProfile,
    *,
    events: Sequence[useq.MDAEvent] | None = None,
) -> dict[str, Any]:
    """Return what ``sequence`` asks of the rig of ``profile`` (a plan `check_plan` passed).

    Keys: ``frames``, ``positions``, ``time_points``, ``channels`` (in the plan's
    order), ``planned_duration_s`` (when the plan's last time point is due),
    ``estimated_duration_s`` (a lower bound, see the module), ``time_point_s``
    (the longest time point, lower bound; ``time_point``: its index ``t``),
    ``shortest_interval_s`` (between two time points' starts; None with one),
    ``late_s`` (how late the latest time point starts at best; 0 when all keep
    time; one due with the one before it, an interval of 0, is never late),
    ``recording_gb`` (full frames at the camera's bit depth),
    ``fluorescence_s`` (the plan's own frames', per position),
    ``received_fluorescence_s`` (what the hottest point of each position's
    field of view gets: its own frames' and those of the plan fields
    overlapping it there, as `check_plan` holds it to the budget; the same
    where no fields overlap) with ``fluorescence_budget_s``, and ``warnings``
    (each a sentence for people).
    """
    events = plan_events(sequence) if events is None else events
    images = [e for e in events if isinstance(e.action, useq.AcquireImage)]
    cam, xy, z = profile.camera, profile.stages.xy, profile.stages.z
    readout_s = 1.0 / cam.max_fps
    defaults = {c.name: c.default_exposure_ms for c in profile.channels.presets}

    # the agent's queue (`livescope.scope.EventFeed`) hands events over by when they are due,
    # counted from the run's start (the event timer useq resets per position is not
    # restarted), one time point (due, t) at a time: so a position's own time plan runs
    # beside the others', not after them
    queue = sorted(events, key=lambda e: float(e.min_start_time or 0.0))
    clock = 0.0  # seconds since the run began
    # (x, y, z) µm, and whether that z is counted from the focus where the run starts: a
    # relative z plan's planes for a position without z (`focus_centred_positions`), unknown
    # here, so no move between such a z and another is counted (the steps of a stack are)
    where: tuple[float | None, float | None, float | None, bool] = (None, None, None, False)
    from_focus = set(focus_centred_positions(sequence))
    point: tuple[float, int] | None = None  # (due, t) of the time point being taken
    starts: list[tuple[float, float, useq.MDAEvent]] = []  # (due, started, first event)
    spans: list[tuple[float, useq.MDAEvent]] = []  # (seconds, first event) per time point
    late = 0.0
    for ev in queue:
        due = float(ev.min_start_time or 0.0)
        if (due, int(ev.index.get("t", 0))) != point:  # a new time point: it waits, or is late
            if starts:
                spans.append((clock - starts[-1][1], starts[-1][2]))
                if due > starts[-1][0]:  # (one due with the one before: as soon as it can)
                    late = max(late, clock - due)
            clock = max(clock, due)
            starts.append((due, clock, ev))
            point = (due, int(ev.index.get("t", 0)))
        to = (ev.x_pos, ev.y_pos, ev.z_pos)
        centred = int(ev.index.get("p", 0)) in from_focus
        xy_um = max(_apart(where[0], to[0]), _apart(where[1], to[1]))  # (x and y at once)
        z_um = _apart(where[2], to[2]) if centred == where[3] else 0.0
        clock += max(xy_um / xy.max_speed_um_s, z_um / z.max_speed_um_s)
        where = (
            to[0] if to[0] is not None else where[0],
            to[1] if to[1] is not None else where[1],
            to[2] if to[2] is not None else where[2],
            centred if to[2] is not None else where[3],
        )
        if isinstance(ev.action, useq.AcquireImage):
            config = ev.channel.config if ev.channel is not None else ""
            exposure_ms = ev.exposure if ev.exposure is not None else defaults.get(config, 0.0)
            clock += float(exposure_ms) / 1000.0 + readout_s
    if starts:
        spans.append((clock - starts[-1][1], starts[-1][2]))

    positions = list(dict.fromkeys(position_name(e) for e in images))
    channels = list(dict.fromkeys(e.channel.config for e in images if e.channel is not None))
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(starts)]
    interval = min(gaps) if gaps else None
    longest = max(spans, key=lambda s: s[0], default=None)
    light: dict[str, float] = {}
    for (pos, _), s in planned_light_s(events, profile).items():
        light[pos] = light.get(pos, 0.0) + s
    # (what the hottest point of each field gets, its own frames' and overlapping ones')
    received = {k: sum(by.values()) for k, by in _light_by_field(events, profile)[0].items()}
    budget = profile.light_dose.max_fluorescence_s_per_position
    h, w = cam.sensor_shape_px
    figures: dict[str, Any] = {
        "frames": len(images),
        "positions": positions,
        "time_points": len({int(e.index.get("t", 0)) for e in images}),
        "channels": channels,
        "planned_duration_s": round(starts[-1][0], 3) if starts else 0.0,
        "estimated_duration_s": round(clock, 3),
        "time_point_s": round(longest[0], 3) if longest else 0.0,
        "time_point": int(longest[1].index.get("t", 0)) if longest else None,
        "shortest_interval_s": round(interval, 3) if interval is not None else None,
        "late_s": round(late, 3),
        "recording_gb": round(len(images) * h * w * (1 if cam.bit_depth <= 8 else 2) / 1e9, 3),
        "fluorescence_s": {k: round(v, 3) for k, v in light.items()},
        "received_fluorescence_s": {k: round(v, 3) for k, v in received.items()},
        "fluorescence_budget_s": budget,
        "warnings": [],
    }
    warnings: list[str] = figures["warnings"]
    warnings += plan_warnings(sequence, profile)  # (likely unit slips: ms for s, px for µm)
    if late >= LATE_WARN_S and longest is not None:
        # (the interval a late time point waits for: not a burst's 0, which never is late)
        waited = min((g for g in gaps if g > 0), default=0.0)
        warnings.append(
            f"time points start late, one by at least {late:.1f} s: a time point takes at "
            f"least {longest[0]:.1f} s (t={longest[1].index.get('t', 0)}: exposures, readout at "
            f"the camera's max_fps {cam.max_fps:g}, stage moves at max_speed_um_s), the shortest "
            f"interval is {waited:g} s (fewer positions, channels or planes, shorter "
            "exposures, or a longer interval)"
        )
    for pos, s in received.items():
        if s >= LIGHT_WARN_SHARE * budget:
            # (overlapping fields add to its own frames' light: say how much is its own)
            own = light.get(pos, 0.0)
            most = "" if s == own else f" where it gets most ({own:.1f} s from its own frames)"
            warnings.append(
                f"position {pos} gets {s:.1f} s of fluorescence from the plan alone{most}, "
                f"{100 * s / budget:.0f}% of light_dose.max_fluorescence_s_per_position "
                f"({budget:g} s): decisions may add at most {max(budget - s, 0.0):.1f} s there"
            )
    return figures
