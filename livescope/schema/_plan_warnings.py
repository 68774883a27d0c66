"""Likely unit slips in a plan that runs as written (``livescope plan check`` warns of them)."""

from __future__ import annotations

import math

import useq

from ._profile import HardwareProfile

__all__ = ["plan_warnings"]

_DAY_S = 86_400.0
_MIN_Z_STEP_UM = 0.01
_FOV_RATIO = 2.0


def plan_warnings(sequence: useq.MDASequence, profile: HardwareProfile) -> list[str]:
    """Return the likely unit slips of a plan that runs as written (each a sentence for people).

    A grid whose fov_width or fov_height is more than 2x the profile's field
    of view either way (pixels given for µm: tiles with gaps between them), a
    time plan interval over a day (ms given for s), a z step under 0.01 µm
    (mm given for µm). Not refused: such a plan may be meant.
    """
    warnings: list[str] = []
    subs = [("", sequence)] + [
        (f"stage_positions.{i}.sequence.", p.sequence)
        for i, p in enumerate(sequence.stage_positions)
        if p.sequence is not None
    ]
    grids = [(f"{prefix}grid_plan", seq.grid_plan) for prefix, seq in subs]
    if isinstance(sequence.stage_positions, useq.WellPlatePlan):
        grids.append(
            ("stage_positions.well_points_plan", sequence.stage_positions.well_points_plan)
        )
    h, w = profile.field_of_view_um
    pixels = sorted(float(n) for n in profile.camera.sensor_shape_px)
    for where, grid in grids:
        fw, fh = getattr(grid, "fov_width", None), getattr(grid, "fov_height", None)
        if fw is None or fh is None or not (fw > 0 and fh > 0):
            continue
        # (the camera's pixel counts themselves: a slip a 2x margin misses at ~1 µm pixels)
        as_px = sorted((fw, fh)) == pixels and not math.isclose(fw, w, rel_tol=0.01)
        if as_px or not all(1 / _FOV_RATIO <= a / b <= _FOV_RATIO for a, b in ((fw, w), (fh, h))):
            apart = "its camera's size in px" if as_px else f"{_FOV_RATIO:g}x apart or more"
            warnings.append(
                f"{where}: fov {fw:g} x {fh:g} µm, but this profile's field of view is "
                f"{w:g} x {h:g} µm ({apart}): the tiles would "
                f"{'leave gaps between them' if fw > w or fh > h else 'overlap mostly'} "
                "(µm, not px?)"
            )
    for prefix, seq in subs:
        tp = seq.time_plan
        phases = getattr(tp, "phases", None) or ([tp] if tp is not None else [])
        for k, phase in enumerate(phases):
            interval = getattr(phase, "interval", None)
            if interval is not None and (s := interval.total_seconds()) > _DAY_S:
                tag = f".phases.{k}" if isinstance(tp, useq.MultiPhaseTimePlan) else ""
                warnings.append(
                    f"{prefix}time_plan{tag}.interval: {s:g} s is more than a day "
                    f"({s / _DAY_S:.1f} days between time points): intervals are seconds "
                    "(ms meant?)"
                )
        step = getattr(seq.z_plan, "step", None)
        if step is not None and 0 < step < _MIN_Z_STEP_UM:
            warnings.append(
                f"{prefix}z_plan.step: {step:g} µm is less than {_MIN_Z_STEP_UM:g} µm: z_plan "
                "numbers are µm (mm meant?)"
            )
    return warnings
