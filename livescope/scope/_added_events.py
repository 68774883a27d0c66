"""The events an ``AddEvents`` decision adds: checked against the rig, placed and timed.

The agent prepares them on the decision-server thread (`ScopeAgent._on_decision`)
before they are queued; what it refuses raises `LivescopeError`, whose message is
the decision's answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import useq
from useq import AcquireImage

from livescope.schema import (
    AddEvents,
    HardwareProfile,
    LivescopeError,
    folder_key,
    folder_name_problem,
    parent_position,
    place_name,
)

from ._agent_rig import _RigReach
from ._engine import SAMPLE_TIME_KEY, index_text
from ._feed import EventFeed


def prepare_added(
    d: AddEvents,
    feed: EventFeed,
    profile: HardwareProfile,
    *,
    c_index: dict[str, int],
    max_t: int,
    max_z: int,
    undefined_presets: frozenset[str],
    rig_reach: _RigReach,
) -> list[useq.MDAEvent]:
    """Fill positions, check channels, limits and collisions, set times.

    Runs for every added event of every decision, on the decision-server
    thread while a burst of decisions waits: it does each event's work once
    (one copy, one look at the queue) and spells an event out only in an
    error. The arguments after ``d`` are the agent's (`ScopeAgent._prepare_added`):
    its event queue, profile, channels' places on the c axis, largest time and z
    index, presets Micro-Manager lacks and where the rig can image.

    Raises
    ------
    LivescopeError
        naming the event (``event <i> <index>``) and what is wrong with it.

    """
    chans = profile.channels
    start = feed.now() + d.delay_s
    out: list[useq.MDAEvent] = []
    named: set[str] = set()  # the places this decision adds (not yet the feed's)
    for i, ev in enumerate(d.events):
        if (
            ev.properties or ev.keep_shutter_open or ev.roi is not None
            or ev.slm_image is not None or not isinstance(ev.action, AcquireImage)
        ):  # fmt: skip
            # (device properties could set another exposure or move a stage, an
            # open shutter light the sample between frames: none of it is checked)
            raise LivescopeError(
                f"{_event_label(i, ev)}: an added event may give its channel, exposure, "
                "position and time, not device properties, an open shutter, a camera "
                "ROI, an SLM image or an action other than acquiring an image"
            )
        index = dict(ev.index)
        if negative := {k: v for k, v in index.items() if v < 0}:
            # (no recording holds a frame there: it was written out of the array's
            # bounds, and read back as another frame)
            raise LivescopeError(f"{_event_label(i, ev)}: index {index_text(negative)} is negative")
        if int(index.get("t", 0)) > max_t:
            raise LivescopeError(
                f"{_event_label(i, ev)}: time index t={index['t']} is past the plan's last "
                f"plus light_dose.max_extra_frames_per_run (t <= {max_t})"
            )
        if int(index.get("z", 0)) > max_z:
            raise LivescopeError(
                f"{_event_label(i, ev)}: z index z={index['z']} is past the plan's last "
                f"plus light_dose.max_extra_frames_per_run (z <= {max_z})"
            )
        name = feed.position_of(ev.pos_name, index.get("p"), index.get("g"))
        update: dict[str, Any] = {}
        explicit = ev.x_pos is not None or ev.y_pos is not None
        if name is None and "g" in index and feed.position_of(ev.pos_name, index.get("p"), None):
            raise LivescopeError(
                f"{_event_label(i, ev)}: its position has no grid tile g={index['g']}"
            )
        if name is not None:
            # the plan's coordinates; the feed applies any move of the position on yield
            x, y, z = feed.position_plan(name)
            update["pos_name"], g = feed.tile_of(name)  # (a grid tile: name + g)
            index["p"] = feed.p_of[name]
            if g is None:
                index.pop("g", None)
            else:
                index["g"] = g
            if ev.x_pos is None and x is not None:
                update["x_pos"] = x
            if ev.y_pos is None and y is not None:
                update["y_pos"] = y
            if ev.z_pos is None and z is not None:
                update["z_pos"] = z
        elif ev.x_pos is None or ev.y_pos is None:
            raise LivescopeError(f"{_event_label(i, ev)}: unknown position and no x/y given")
        elif not ev.pos_name and "p" not in index:  # (an empty name is no name)
            # a place of its own: named by it, not filed under the plan's first position
            update["pos_name"] = place_name(ev.x_pos, ev.y_pos)
        elif ev.pos_name and ev.pos_name not in named:
            # and the places added before (the feed's `_note_place` adds to them once a
            # decision's events are prepared)
            added = itertools.chain(named, feed.added_places())
            if why := _place_name_problem(ev.pos_name, feed.positions, added):
                raise LivescopeError(f"{_event_label(i, ev)}: position name {ev.pos_name!r} {why}")
            named.add(ev.pos_name)
        if ev.channel is None:
            raise LivescopeError(f"{_event_label(i, ev)}: no channel")
        if ev.channel.group != chans.config_group:
            raise LivescopeError(
                f"{_event_label(i, ev)}: channel group {ev.channel.group!r} is not "
                f"{chans.config_group!r}"
            )
        preset = chans.get(ev.channel.config)
        exposure = ev.exposure if ev.exposure is not None else preset.default_exposure_ms
        if not preset.exposure_min_ms <= exposure <= preset.exposure_max_ms:
            lo, hi = preset.exposure_min_ms, preset.exposure_max_ms
            raise LivescopeError(
                f"{_event_label(i, ev)}: exposure {exposure} ms is outside channel "
                f"{preset.name!r} limits [{lo}, {hi}] ms"
            )
        if preset.name in undefined_presets:
            raise LivescopeError(
                f"{_event_label(i, ev)}: channel {preset.name!r} is not a preset of group "
                f"{chans.config_group!r} in Micro-Manager's configuration"
            )
        index["c"] = c_index[preset.name]
        due = start + float(ev.min_start_time or 0.0)
        meta = {**ev.metadata, "added_by": d.decision_id, SAMPLE_TIME_KEY: due}
        if explicit:
            meta["explicit_xy"] = True
            if ev.z_pos is None and name is not None:
                # (its z is the position's: a move of the position's focus applies to it)
                meta["z_from_plan"] = True
        update.update(exposure=exposure, index=index, min_start_time=due, metadata=meta)
        out.append(ev.model_copy(update=update))  # one copy per event: decisions come in bursts
    # where each will really be imaged (moves applied), and whether its place in the
    # plan is free, in one look at the queue
    places: set[tuple[float | None, float | None, float | None]] = set()  # checked
    keys: set[tuple[str, int, str, int]] = set()
    for i, (where, key, taken, stopped) in enumerate(feed.preview_added(out)):
        if stopped is not None:
            by_name = stopped in (key[0], parent_position(key[0]))
            lands = "" if by_name else f" and {key[0]} lies in its field"
            raise LivescopeError(
                f"{_event_label(i, d.events[i])}: position {stopped} was stopped by an "
                f"earlier decision{lands}; nothing more is acquired there"
            )
        if (xyz := (where.x_pos, where.y_pos, where.z_pos)) not in places:
            rig_reach.check(*xyz, _event_label(i, d.events[i]))
            profile.check_stage_travel(*xyz, _event_label(i, d.events[i]))
            places.add(xyz)
        if taken or key in keys:
            raise LivescopeError(
                f"{_event_label(i, d.events[i])}: position {key[0]} t={key[1]} channel "
                f"{key[2]} z={key[3]} is already planned or acquired; give the added events "
                "their own index"
            )
        keys.add(key)
    return out


def _place_name_problem(
    name: str, plan_positions: Iterable[str], added_places: Iterable[str] = ()
) -> str | None:
    """Say why an added place may not be called ``name`` (None: it may).

    Its frames and the worker's results (``results/ctc/<name>``) are filed
    under it: it must name a folder of its own there, on this system. Accepted,
    "../x" put them outside the run folder, "site:1" failed the worker's store on
    Windows (restarted on the same field until it gave up), a name of 250 bytes
    left no room for the worker's staging folders (its CTC result was never
    written), and "a" beside the plan's "A", or "p0~Rule-0" beside a place
    "p0~rule-0" added before, overwrote the other's masks where case is ignored
    (Windows, macOS).
    """
    if (why := folder_name_problem(name)) is not None:
        return f"{why} (its results are kept in a folder of its name)"
    key = folder_key(name)
    if same := sorted(p for p in plan_positions if p != name and folder_key(p) == key):
        return (
            f"is plan position {same[0]!r}'s but for case, and one folder here (its results "
            "would overwrite that position's): name the position as the plan does, or another"
        )
    if same := sorted(p for p in added_places if p != name and folder_key(p) == key):
        return (
            f"is added place {same[0]!r}'s but for case, and one folder here (their results "
            "would overwrite each other): name the place as it was named, or another"
        )
    return None


def _event_label(i: int, event: useq.MDAEvent) -> str:
    """``event <i> <index>``: how an error names an added event."""
    return f"event {i} {dict(event.index)}"
