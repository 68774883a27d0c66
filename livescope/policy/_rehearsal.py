"""A decision rehearsed before a run's first field, by the worker and by the agent.

The first decision a process builds, checks, serialises or parses runs its
code cold (pydantic's validators and serialisers, the guardrails' paths, the
interpreter's specialised bytecode): on this project's 2-core machine a
close-up's build, check and JSON took ~0.25 ms more on the worker's side the
first time and its parse, check and queueing ~0.5 ms more on the agent's
(669 against 73-130 µs), against ~0.1 ms each once warm. A run's first
decisions come at its busiest moment (the demo's first time point fires 5-12
close-ups per field), so each side runs decisions like them through first,
off the record: built, checked and serialised, never booked, sent or queued.
Their check leaves the guardrails as it found them: a rehearsed decision (run
id `REHEARSAL`, or a check with ``rate=0``, the agent's) notes no step back of
the clock, which its field's sample time 0 would be after a restart
(`Guardrails.check`).
"""

from __future__ import annotations

import useq

from livescope.schema import AddEvents, HardwareProfile

from ._actions import Acquire, _decision
from ._observation import Observation
from ._triggers import Hit

__all__ = ["REHEARSAL", "centre_hit", "rehearsal_closeup", "rehearsal_field"]

REHEARSAL = "rehearsal"
"""The rule name and run id of rehearsed decisions (never sent; the guardrails' check of
one leaves where the clock stepped back as it was)."""


def rehearsal_field(event: useq.MDAEvent, profile: HardwareProfile, run_id: str) -> Observation:
    """Return an observation of ``event``'s field with no cells (its place, a camera frame).

    ``event`` is a plan event (the plan's first, usually): the rehearsed
    decisions land where the run's first ones may (at x, y = 0 where it gives
    none). Its sample time is 0 s, before any field, also after a restart:
    give it the run id `REHEARSAL` where the guardrails check its decisions
    with the rate counted (`Guardrails.check`).
    """
    x, y = event.x_pos or 0.0, event.y_pos or 0.0
    h, w = profile.camera.sensor_shape_px
    return Observation(
        run_id=run_id,
        seq=0,
        position=event.pos_name or "p0",
        t=0,
        sample_time_s=0.0,
        pixel_size_um=profile.objective.pixel_size_um,
        shape=(h, w),
        stage_um=(x, y, event.z_pos),
        orientation=profile.camera.orientation,
    )


def centre_hit(obs: Observation) -> Hit:
    """Return a hit on a cell at the middle of ``obs``'s frame."""
    h, w = obs.shape
    return Hit(track=1, y=(h - 1) / 2, x=(w - 1) / 2, inputs={"p_mitosis": 1.0})


def rehearsal_closeup(obs: Observation, profile: HardwareProfile) -> AddEvents:
    """Build a close-up as a rule does: every channel of the rig, 4 time points, on a cell.

    (Its interval is the rig's shortest allowed, and at least 1 s, as a time-lapse
    needs one: so that the guardrails check it through.)
    """
    acquire = Acquire(
        channels=tuple(c.name for c in profile.channels.presets),
        group=profile.channels.config_group,
        loops=4,
        interval_s=max(1.0, profile.guardrails.min_interval_s),
    )
    decision = _decision("acquire", {}, obs, centre_hit(obs), REHEARSAL, 0, acquire)
    assert isinstance(decision, AddEvents)  # (an acquire action's decision)
    return decision
