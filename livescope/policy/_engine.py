"""Run a set of policies on each observation, guard their decisions, keep their state."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import useq

from livescope.schema import (
    AddEvents,
    ChangeInterval,
    Decision,
    DecisionAck,
    HardwareProfile,
    LivescopeError,
    Move,
    StopPosition,
    StopRun,
    folder_name_problem,
    plan_sections,
)

from ._actions import Acquire, _decision
from ._guardrails import Guardrails
from ._observation import Firing, Observation
from ._rehearsal import centre_hit
from ._rules import Policy, Rule, rules_from_spec
from ._triggers import _EnterRegion

__all__ = [
    "DECIDE_HANG_S",
    "PolicyEngine",
    "Verdict",
    "firings_cap",
    "load_policies",
    "rules_for_profile",
]

logger = logging.getLogger("livescope")

_DONE: Any = object()  # the end of a policy's firings (a policy may yield None: an error)
_DECISIONS = (AddEvents, Move, ChangeInterval, StopPosition, StopRun)  # (`Decision`'s members)

DECIDE_HANG_S = 10.0
"""How long a policy's own code may run, in all, on one field (s), after its first firing:
every later step of its firings (a generator's ``next()``; not the guardrails' checks nor
the sending, between them). Past it, the policy is disabled as soon as its code returns a
firing (that firing goes nowhere). Its ``decide()`` call and the step to its first firing
are single calls, the worker's to judge: `POLICY_HANG_S` (the same 10 s) times each call
alone, for one that never returns; one that returns after all (a model loaded on the
first field) was only slow, whether it returns a firing or none. A generator yielding
without end returns again and again, each step soon, and only this total (or
`firings_cap`) finds it."""

_FIRINGS_PER_CELL = 10
_FIRINGS_MIN = 1000


def firings_cap(obs: Observation) -> int:
    """Return the most firings one policy may make for field ``obs`` (past it: disabled).

    10 per cell, lost track and division of the field, and at least 1000: a declared
    rule makes at most one per cell, track or division (or one for the field), and a
    decision that passes the guardrails is at most ``max_decisions_per_min`` a
    minute; more is a policy yielding without end (a loop that never moves on),
    which would hold up every later field and grow the field's verdicts without bound.
    """
    many = len(obs.cells) + len(obs.lost) + len(obs.divisions)
    return max(_FIRINGS_MIN, _FIRINGS_PER_CELL * many)


@dataclass(frozen=True)
class Verdict:
    """A firing and whether its decision may be sent (``ok``) or why not."""

    firing: Firing
    ok: bool
    stage: str = ""
    """``guardrail`` when the guardrails rejected it, or when its decision could not
    be made (`Firing.unmade`, say a field with no stage position; the reason says
    so) or its ``decision_id`` was given by a passing firing of the field already
    (the reason names it and that rule: see `PolicyEngine.evaluate`); ``record``
    for a rule that only records; ``shared`` when another firing's sub-sequence
    images its cell (the reason names it); ``""`` when it may be sent."""
    reason: str = ""
    by: int | None = None
    """A shared one's: the index, among the field's verdicts, of the firing whose
    sub-sequence images its cell (should the agent refuse that one, this goes too)."""


def load_policies(
    path: str | Path, profile: HardwareProfile, *, positions: Iterable[str] = ()
) -> list[Policy]:
    """Rules declared under ``policies:`` in a plan file (none: empty list).

    ``positions``: the plan's, for `rules_for_profile`.

    Raises
    ------
    LivescopeError
        naming the rule and what is wrong with it.

    """
    return rules_for_profile(
        plan_sections(path).get("policies"), profile, source=str(path), positions=positions
    )


def rules_for_profile(
    spec: object,
    profile: HardwareProfile,
    *,
    source: str = "plan",
    positions: Iterable[str] = (),
) -> list[Policy]:
    """`rules_from_spec` checked against a rig: its channels and the guardrails' limits.

    A declared rule whose every firing the guardrails would refuse (an
    ``acquire`` exposure outside its channel's limits or over the light-dose
    budget per frame, a close-up of more frames than the run may add or more
    fluorescence than a position's (or a channel's) whole budget, time points
    or a changed interval closer than ``guardrails.min_interval_s``) is refused
    now, before anything moves. So is an ``acquire`` rule whose close-ups at one
    of ``positions`` (the plan's, as the run names them: `position_name`) could
    not be named: ``<position>~<rule>-<n>`` is held to a folder name's limits.
    So is an ``enter_region`` whose region (pixels of the frame) lies wholly off
    the camera's sensor at binning 1 (``camera.sensor_shape_px``: no frame, binned
    or cropped, is larger), which no cell could enter: µm given for pixels, say.
    For a ``replay`` profile (its camera a placeholder, or the recording's frame)
    that is only a warning.

    Raises
    ------
    LivescopeError
        naming the rule and what is wrong with it (e.g. a channel the rig lacks).

    """
    rules = rules_from_spec(
        spec,
        channel_group=profile.channels.config_group,
        source=source,
        channels=[c.name for c in profile.channels.presets],
    )
    names = list(dict.fromkeys(positions))
    for i, rule in enumerate(rules):
        if isinstance(rule, Rule) and (problem := _never_passes(rule, profile)):
            raise LivescopeError(f"{source}: policies.{i} ({rule.name}): {problem}")
        if isinstance(rule, Rule) and (problem := _off_frame(rule, profile)):
            if profile.kind != "replay":
                raise LivescopeError(f"{source}: policies.{i} ({rule.name}): {problem}")
            logger.warning("%s: policies.%d (%s): %s", source, i, rule.name, problem)
        if isinstance(rule, Rule) and rule.acquire is not None:
            # its close-ups are named <position>~<rule>-<n>, held to a folder name's limits
            # when the run adds them: a position too long for them gets none (9999: room for
            # a run's close-ups, counted per rule)
            for pos in names:
                if (why := folder_name_problem(f"{pos}~{rule.name}-9999")) is not None:
                    raise LivescopeError(
                        f"{source}: policies.{i} ({rule.name}): its close-ups at position "
                        f"{pos!r} would be named {pos}~{rule.name}-<n>, which (<n> up to 9999) "
                        f"{why}: they would be refused during the run; shorten the position's "
                        "name or the rule's"
                    )
    return rules


def _off_frame(rule: Rule, profile: HardwareProfile) -> str | None:
    """Return why ``rule``'s ``enter_region`` can never fire on the rig's frames, or None."""
    if not isinstance(trigger := rule.trigger, _EnterRegion):
        return None
    y0, x0, y1, x1 = trigger.region
    h, w = profile.camera.sensor_shape_px
    # (a centroid is in the region when y0 <= y < y1 and x0 <= x < x1: the frame's are in
    # [0, h) x [0, w) at most, at binning 1; a binned or cropped frame is smaller)
    if y0 < h and y1 > 0 and x0 < w and x1 > 0:
        return None
    return (
        f"enter_region.region [{y0:g}, {x0:g}, {y1:g}, {x1:g}] ([y0, x0, y1, x1]) lies wholly "
        f"outside the camera's frame, {h} x {w} px (camera.sensor_shape_px; rows, columns): "
        "no cell could enter it; regions are in pixels of the frame (0 to its size), not µm"
    )


def _never_passes(rule: Rule, profile: HardwareProfile) -> str | None:
    """Return why the guardrails would refuse every firing of ``rule``, or None."""
    g, dose = profile.guardrails, profile.light_dose
    if rule.action == "change_interval" and float(rule.params["interval_s"]) < g.min_interval_s:
        return (
            f"change_interval.interval_s = {rule.params['interval_s']:g} s is shorter than "
            f"guardrails.min_interval_s = {g.min_interval_s:g} s"
        )
    if (acq := rule.acquire) is None:
        return None
    if acq.loops > 1 and acq.interval_s < g.min_interval_s:
        return (
            f"acquire.interval_s = {acq.interval_s:g} s is shorter than "
            f"guardrails.min_interval_s = {g.min_interval_s:g} s"
        )
    reach = acq.delay_s + (acq.loops - 1) * acq.interval_s
    if g.max_added_span_s is not None and reach > g.max_added_span_s:
        return (
            f"a close-up's last frames start {reach:g} s after it is applied (acquire.delay_s + "
            f"(loops - 1) x interval_s), later than guardrails.max_added_span_s = "
            f"{g.max_added_span_s:g} s (seconds, not ms?)"
        )
    frames = acq.loops * acq.z_planes * len(acq.channels)
    if frames > dose.max_extra_frames_per_run:
        return (
            f"one close-up is {frames} frames (acquire.loops x z_planes x channels), more than "
            f"light_dose.max_extra_frames_per_run = {dose.max_extra_frames_per_run}"
        )
    # every event of a close-up lands at one place: its light is all booked to each budget there
    light_s: dict[str, float] = {}
    for ch in acq.channels:
        preset = profile.channels.get(ch)
        given = ch in (acq.exposure_ms or {})
        exp = (acq.exposure_ms or {}).get(ch, preset.default_exposure_ms)
        # (an exposure the rule leaves out is the preset's: said so, the user wrote none)
        said = "" if given else f" (channel {ch!r}'s default_exposure_ms in the profile)"
        if preset.kind == "fluorescence":
            light_s[ch] = light_s.get(ch, 0.0) + exp / 1000.0 * acq.loops * acq.z_planes
        if not preset.exposure_min_ms <= exp <= preset.exposure_max_ms:
            return (
                f"acquire.exposure_ms {ch}: {exp:g} ms{said} is outside channel {ch!r} limits "
                f"[{preset.exposure_min_ms:g}, {preset.exposure_max_ms:g}] ms"
            )
        if preset.kind == "fluorescence" and exp > dose.max_exposure_ms_per_frame:
            return (
                f"acquire.exposure_ms {ch}: {exp:g} ms{said} exceeds "
                f"light_dose.max_exposure_ms_per_frame = {dose.max_exposure_ms_per_frame:g} ms"
            )
    if (total := sum(light_s.values())) > dose.max_fluorescence_s_per_position + 1e-9:
        return (
            f"one close-up is {total:g} s of fluorescence, more than "
            f"light_dose.max_fluorescence_s_per_position = "
            f"{dose.max_fluorescence_s_per_position:g} s"
        )
    per_ch = dose.max_fluorescence_s_per_channel
    for ch, s in light_s.items():
        if per_ch is not None and s > per_ch + 1e-9:
            return (
                f"one close-up is {s:g} s of {ch} fluorescence, more than "
                f"light_dose.max_fluorescence_s_per_channel = {per_ch:g} s"
            )
    return None


def _unloggable(f: Firing, name: str) -> str | None:
    """Return why a Python policy's firing cannot be taken as policy ``name``'s, or None.

    Its ``rule`` must be the policy's name (a stale refusal is given back, and
    the firing logged, by it), as must its decision's, where it names one (the
    decision log and the agent file it under that rule; `_completed` fills an
    empty one), and what the worker logs of it (``policy.jsonl``: anything JSON
    cannot write is written as its ``str``) must be writable: a mapping key JSON
    cannot take, or a value that holds itself, would stop the worker's decision
    thread there.
    """
    if f.rule != name:
        return f"decide() returned a Firing of rule {f.rule!r}, not of this policy ({name!r})"
    if f.decision is not None and f.decision.rule not in ("", name):
        return (
            f"decide() returned a decision of rule {f.decision.rule!r}, not of this policy "
            f"({name!r}): give it rule={name!r}"
        )
    try:
        json.dumps([f.trigger, f.position, f.track, f.y, f.x, f.inputs], default=str)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"decide() returned a Firing the run's log cannot write: {exc}"
    return None


def _unseen(f: Firing, obs: Observation) -> str | None:
    """Return why a Python policy's decision cannot answer the frame it names, or None.

    A decision's ``seq`` is the frame it answers: the agent refuses it as stale
    when that frame was taken longer ago than ``guardrails.max_decision_age_s``.
    One later than the field's (``obs.seq``) names a frame the policy had not
    seen when it decided: the decision would pass for fresher than it is. (An
    earlier one, a frame of a field it kept from before, is kept: it is judged
    older, as it is.)
    """
    d = f.decision
    if d is not None and d.seq is not None and d.seq > obs.seq:
        return (
            f"decide() returned a decision answering frame seq={d.seq}, later than the "
            f"field's it was given (seq {obs.seq}, {obs.position} t={obs.t}): leave seq out "
            "(it is filled in with the field's) or give it obs.seq"
        )
    return None


def _completed(f: Firing, obs: Observation) -> Firing:
    """Return a Python policy's firing with what its decision left out filled in.

    Every decision carries the rule that made it, the frame it answers and the
    sha256 of the engines whose results it saw (a declared rule's does,
    `_decision`): a decision made without them (``rule`` ``""``, ``seq`` None,
    ``engines`` empty) gets the firing's rule, the field's frame (``obs.seq``:
    so that the agent's ``max_decision_age_s`` judges it) and the field's
    engines (``obs.engines``); its id is kept. (Its ``run_id`` is required:
    never left out.)
    """
    d = f.decision
    if d is None:
        return f
    update: dict[str, Any] = {}
    if not d.rule:
        update["rule"] = f.rule
    if d.seq is None:
        update["seq"] = obs.seq
    if not d.engines and obs.engines:
        update["engines"] = dict(obs.engines)
    return replace(f, decision=d.model_copy(update=update)) if update else f


def _runaway(spent: float, made: int, cap: int, obs: Observation) -> str | None:
    """Return why a policy is taken as yielding without end on ``obs``, or None.

    ``spent``: seconds its own code has run on the field after its first firing,
    ``made``: its firings so far (`DECIDE_HANG_S`, `firings_cap`).
    """
    where = f"field {obs.position} t={obs.t}"
    if spent > DECIDE_HANG_S:
        return (
            f"decide() ran {spent:.3g} s on {where} after its first firing (its {made} "
            f"firings so far), more than the {DECIDE_HANG_S:g} s a policy's code may take "
            "on one field: does it yield without end (a loop that never moves on)?"
        )
    if made > cap:
        return (
            f"decide() made more than {cap} firings for {where}, the most one policy may "
            "make for one field (10 per cell, lost track or division, at least 1000): does "
            "it yield without end (a loop that never moves on)?"
        )
    return None


def _repeated(decision_id: str, rule: str) -> str:
    """Say why a decision whose id a passing firing of the field gave (``rule``'s) is refused."""
    return (
        f"decision_id {decision_id} was given already by a passing firing of rule {rule!r} "
        "on this field: the agent would apply it once, so it is not booked nor sent again; "
        "give each firing its own id (firing_id(obs.run_id, name, obs.position, obs.t, k), "
        "a k of its own)"
    )


def _shared_reason(by: Firing) -> str:
    """Say which sub-sequence images a shared firing's cell."""
    name = ""
    if isinstance(by.decision, AddEvents) and by.decision.events:
        name = f" {by.decision.events[0].pos_name}"
    track = f" (track {by.track})" if by.track is not None else ""
    return f"imaged by the sub-sequence{name} of {by.rule}{track}, whose field holds it"


def _covering(
    out: list[Verdict], made: list[int], acquire: Acquire, obs: Observation, f: Firing
) -> int | None:
    """Return the index in ``out`` of the first of ``made`` whose sub-sequence covers ``f``."""
    return next((j for j in made if acquire.covers(
        obs, (out[j].firing.y, out[j].firing.x), f.y, f.x)), None)  # fmt: skip


def _share_refused(
    out: list[Verdict], first: int, made: list[int], acquire: Acquire, obs: Observation
) -> None:
    """Make shared those the guardrails refused whose cell a passed sub-sequence holds.

    (Say, a close-up past the stage limits whose cell a later firing's close-up
    of the field images.) ``out[first:]`` are one policy's verdicts for the
    field, ``made`` the indices in ``out`` of its passed sub-sequences.
    """
    for i in range(first, len(out)):
        v = out[i]
        if v.stage != "guardrail":
            continue
        by = _covering(out, made, acquire, obs, v.firing)
        if by is not None:
            why = f"{_shared_reason(out[by].firing)} (the guardrails refused its own: "
            out[i] = Verdict(v.firing, False, "shared", f"{why}{v.reason})", by)


def _policy_bug(exc: BaseException) -> None:
    """Re-raise ``exc`` unless it is a policy's bug: anything but a Ctrl+C.

    Called in the ``except BaseException`` around a policy's own code: a
    ``SystemExit`` (a policy calling ``sys.exit``) or a ``GeneratorExit`` it
    raises is its bug, which disables it as any exception does (caught as
    ``Exception`` only, it stopped the worker, again on every restart, and
    the error did not name the policy). So is a ``KeyboardInterrupt`` on a
    thread other than the main one (the worker's decision thread), where no
    Ctrl+C arrives: the policy raised it itself.
    """
    if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
        raise exc


class PolicyEngine:
    """Policies + guardrails for one run.

    A policy that raises is disabled for the rest of the run (the error is
    logged and listed in `disabled`); the others go on. So is one whose firing
    carries something other than a decision, whose decision the guardrails'
    check raises on, or whose ``state()`` / ``restore()`` raises (or, for a
    Python policy, whose ``state()`` is not JSON). Anything it raises but a
    ``KeyboardInterrupt`` counts, ``SystemExit`` included.

    `calling` says whose code runs now, for a watchdog that finds a policy
    that never returns (the worker's); `disable` takes one out. One whose
    calls each return, but that yields without end, is found here
    (`DECIDE_HANG_S`, `firings_cap`) and disabled as one that raised.
    """

    def __init__(
        self,
        policies: Sequence[Policy],
        profile: HardwareProfile,
        sequence: useq.MDASequence | Iterable[useq.MDAEvent] | None = None,
    ) -> None:
        names = [p.name for p in policies]
        if dups := sorted({n for n in names if names.count(n) > 1}):
            raise LivescopeError(f"policy names must be unique; repeated: {dups}")
        self.policies = list(policies)
        self.guardrails = Guardrails(profile, sequence)
        self.disabled: dict[str, str] = {}
        self.calling: tuple[str, str, float] | None = None
        """The policy whose own code runs now: its name, the call (``"decide()"``,
        ``"state()"``, ``"restore()"`` or ``"give_back()"``) and since when
        (`time.monotonic`, s); None between calls. Set on the thread that calls
        the engine, read by a watchdog on another: a new tuple for each call (the
        same one seen again is the same call, still running). A
        ``KeyboardInterrupt`` from the policy leaves it set (whose it was)."""

    def evaluate(
        self, obs: Observation, on_pass: Callable[[Decision], None] | None = None
    ) -> list[Verdict]:
        """Every enabled policy's firings for ``obs``, each checked by the guardrails.

        A passing decision's budget is booked at once (see `Guardrails.commit`);
        call `refused` for one the agent does not take. ``on_pass`` is called
        (on this thread) with each passing decision as soon as it is booked,
        before the policy makes its next firing: a caller sends it from there,
        so that the agent works on it while the policies go on. An exception
        from ``on_pass`` is not the policy's fault: it propagates at once,
        ending the evaluation with that decision booked (it may have left) and
        the rest of the field's firings unmade; the worker stops on it.

        A policy that raises is disabled; the firings it gave before it raised
        stand (their decisions may already be on their way). So is one whose
        firing's ``decision`` is neither None nor a `Decision`, or (a Python
        policy) whose firing or its decision names another rule or carries what
        the run's log cannot write (`_unloggable`) or answers a frame later than
        the field's (`_unseen`; that firing goes nowhere: no verdict), and one
        whose decision the guardrails' check raises on (that firing is refused
        at stage ``guardrail``, the error its reason). A Python policy's decision
        made without its rule, the frame it answers (``seq``) or the engines'
        sha256 gets the field's (`_completed`) before it is checked and handed on.

        So is one that yields without end: its own code after its first firing
        (each later step of its firings, not the guardrails nor the sending) run
        for longer than `DECIDE_HANG_S` on one field, or more than `firings_cap`
        firings for one field (the firing past either goes nowhere); the error
        says which. (Its ``decide()`` call and the step to its first firing are
        single calls, the worker's watchdog's to judge, as is a call that never
        returns: one slow once, that returns a firing or none, is only slow.)

        A firing whose
        decision could not be made (`Firing.unmade`: a field with no stage
        position, or a cell whose centroid is NaN, say) is refused at stage
        ``guardrail`` with that reason; the policy goes on. So is one whose
        decision's ``decision_id`` a passing firing of the field (of any policy)
        has given already (`_repeated`: a Python policy yielding a firing twice, or
        giving two the same `firing_id`): the agent would apply it once, and
        answer the second as the first, so it is neither booked nor sent again;
        its reason names the id and the rule that gave it. The policy is not
        disabled: its first firing stands, and its other firings are judged.

        A firing of a rule whose ``acquire`` shares fields (``share_field``) that
        the sub-sequence of an earlier firing of the field covers (it passed the
        guardrails; `Acquire.covers`) is not judged: its verdict is ``shared``,
        and its decision is neither booked nor sent. One the guardrails refused
        whose cell a later firing's passing sub-sequence covers is ``shared`` too
        (its reason says why its own was refused).
        """
        out: list[Verdict] = []
        given: dict[str, str] = {}  # the field's passing decisions' ids → their rules
        for policy in self.policies:
            if policy.name in self.disabled:
                continue
            acquire = policy.acquire if isinstance(policy, Rule) else None
            sharing = acquire is not None and acquire.share_field
            made: list[int] = []  # (the field's verdicts whose sub-sequences may be shared)
            first = len(out)  # (this policy's first verdict)
            firings: Iterator[Firing] | None = None
            spent, made_n, cap = 0.0, 0, firings_cap(obs)  # (its own code's, on this field)
            while True:
                # (a new note each step: the watchdog times one call that does not return;
                # the later steps' total is timed here, as each returns)
                began = time.monotonic()
                self.calling = (policy.name, "decide()", began)
                try:
                    if firings is None:
                        firings = iter(policy.decide(obs))
                    f = next(firings, _DONE)
                    if made_n:
                        # (only the steps after its first firing: decide() and the step to
                        # its first are single calls, the watchdog's; one that returns was
                        # only slow, a firing returned or none)
                        spent += time.monotonic() - began
                    if f is _DONE:
                        break
                    made_n += 1
                    if why := _runaway(spent, made_n, cap, obs):
                        self._disable(policy.name, why)
                        break
                    if not isinstance(f, Firing):
                        raise TypeError(f"decide() returned {type(f).__name__}, not a Firing")
                    if f.decision is not None and not isinstance(f.decision, _DECISIONS):
                        raise TypeError(
                            f"decide() returned a Firing whose decision is a "
                            f"{type(f.decision).__name__}, not a decision "
                            f"({', '.join(d.__name__ for d in _DECISIONS)}) or None"
                        )
                    if not isinstance(policy, Rule):
                        if why := _unloggable(f, policy.name) or _unseen(f, obs):
                            raise TypeError(why)
                        f = _completed(f, obs)
                except BaseException as exc:  # noqa: BLE001 (any policy bug disables that policy)
                    _policy_bug(exc)
                    self._disable(policy.name, f"{type(exc).__name__}: {exc}")
                    break
                self.calling = None  # (the guardrails and the sending are not the policy's)
                by = None if acquire is None else _covering(out, made, acquire, obs, f)
                if by is not None:
                    out.append(Verdict(f, False, "shared", _shared_reason(out[by].firing), by))
                    continue
                if (d := f.decision) is not None and d.decision_id in given:
                    why = _repeated(d.decision_id, given[d.decision_id])
                    logger.warning("no %s from %r sent: %s", d.type, f.rule, why)
                    out.append(Verdict(f, False, "guardrail", why))
                    continue
                verdict = self._judge(policy.name, f, obs, on_pass)
                if verdict.ok and f.decision is not None:
                    given[f.decision.decision_id] = f.rule
                if verdict.ok and sharing:
                    made.append(len(out))
                out.append(verdict)
                if policy.name in self.disabled:  # (the guardrails' check raised on it)
                    break
            self.calling = None  # (its firings ended, or it was disabled)
            if acquire is not None and made:
                _share_refused(out, first, made, acquire, obs)
        return out

    def _judge(
        self, name: str, f: Firing, obs: Observation,
        on_pass: Callable[[Decision], None] | None,
    ) -> Verdict:  # fmt: skip
        """Check policy ``name``'s firing ``f``; book and hand on its decision if it passes."""
        if f.unmade:
            logger.warning("no decision from %r: %s", f.rule, f.unmade)
            return Verdict(f, False, "guardrail", f.unmade)
        if f.decision is None:
            return Verdict(f, False, "record", "recorded only (no action)")
        try:
            reason = self.guardrails.check(f.decision, obs.sample_time_s)
        except BaseException as exc:  # noqa: BLE001 (a decision they cannot read: the policy's bug)
            _policy_bug(exc)
            why = f"{type(exc).__name__} in the guardrails' check of its {f.decision.type}: {exc}"
            self._disable(name, why)
            return Verdict(f, False, "guardrail", why)
        if reason is not None:
            logger.warning("guardrail rejected %s from %r: %s", f.decision.type, f.rule, reason)
            return Verdict(f, False, "guardrail", reason)
        self.guardrails.commit(f.decision, obs.sample_time_s)  # the next sees it
        if on_pass is not None:
            on_pass(f.decision)
        return Verdict(f, True)

    def rehearse(self, obs: Observation) -> int:
        """Run each declared rule's decision path once on ``obs``, off the record.

        For every enabled `Rule`, the decision it would make for a cell at the
        middle of the field is built, checked by the guardrails (nothing
        booked: no `Guardrails.commit`) and serialised, and the answer's JSON
        read back, so that the run's first decisions do not run that code cold
        (see ``_rehearsal``). The rules' own state (cooldowns, what fired) is not
        touched; Python policies are not run. Returns how many decisions were
        rehearsed. A rule whose rehearsal fails is left as it is (it is judged
        on the run's real fields).
        """
        hit = centre_hit(obs)
        done = 0
        for policy in self.policies:
            if not isinstance(policy, Rule) or policy.name in self.disabled:
                continue
            try:
                decision = _decision(
                    policy.action, policy.params, obs, hit, policy.name, 0, policy.acquire
                )
                if decision is None:
                    continue
                self.guardrails.check(decision, obs.sample_time_s)
                ack = DecisionAck(
                    decision_id=decision.decision_id, run_id=decision.run_id,
                    type=decision.type, accepted=True, events_added=1, t_received_ns=1,
                )  # fmt: skip
                decision.model_dump_json()
                DecisionAck.model_validate_json(ack.model_dump_json())
                done += 1
            except Exception as exc:  # noqa: BLE001 (never fatal: the rule is judged on real fields)
                logger.debug("rehearsing rule %r: %s", policy.name, exc)
        return done

    def refused(self, verdict: Verdict, now_s: float) -> None:
        """Give back the budget of a passed decision the agent refused (or was never sent)."""
        if verdict.ok and verdict.firing.decision is not None:
            self.guardrails.release(verdict.firing.decision, now_s)

    def give_back(self, verdicts: Sequence[Verdict], i: int) -> list[int]:
        """Give back to their rules the firing of ``verdicts[i]`` and those shared with it.

        For a decision the agent refused as stale (`STALE_REFUSAL`: the frame
        it answers was older than ``guardrails.max_decision_age_s``): each rule
        takes its firing back (`Rule.give_back`, once per cell), so that a
        cell still in mitosis (a lasting condition) fires again on a fresher
        field, with no cooldown begun and not counted towards ``max_fires``. The field's
        firings shared with it (its sub-sequence was to image their cells) are
        given back too. A Python policy takes its firing back only if it has a
        ``give_back(decision_id) -> bool`` method (optional, like ``state()``);
        one that raises there is disabled, as in ``decide``. Call `refused` for
        the budget as for any refusal. Returns the indices (in ``verdicts``) of
        the firings given back.
        """
        by_name = {p.name: p for p in self.policies}
        out = []
        for j, v in enumerate(verdicts):
            if j != i and not (v.stage == "shared" and v.by == i):
                continue
            policy, decision = by_name.get(v.firing.rule), v.firing.decision
            if policy is None or decision is None or policy.name in self.disabled:
                continue
            take = getattr(policy, "give_back", None)
            if not callable(take):
                continue
            self.calling = (policy.name, "give_back()", time.monotonic())
            try:
                if take(decision.decision_id):
                    out.append(j)
            except BaseException as exc:  # noqa: BLE001 (a policy bug disables that policy)
                _policy_bug(exc)
                self._disable(policy.name, f"{type(exc).__name__} in give_back: {exc}")
            self.calling = None
        return out

    def disable(self, name: str, why: str) -> None:
        """Disable policy ``name`` for the rest of the run, saying ``why`` (logged as an error).

        For a failure found outside the engine's own calls: a policy whose
        call never returned (hung), found by the worker's watchdog, is
        disabled by the worker restarted after it. Listed in `disabled` (saved
        in `state`) as one that raised; a name no policy has is ignored.
        """
        if any(p.name == name for p in self.policies):
            self._disable(name, why)

    def _disable(self, name: str, why: str) -> None:
        """Disable policy ``name`` for the rest of the run (it failed), saying ``why``."""
        self.disabled[name] = why
        logger.error("policy %r failed and is disabled for this run: %s", name, why)

    def state(self) -> dict[str, Any]:
        """Policies' and guardrails' state (JSON) for a restarted worker.

        A policy whose ``state()`` raises, or (a Python policy: a `Rule`'s is
        JSON) returns what ``json.dumps`` cannot write, is disabled and its
        state left out, as are disabled policies' (never used again).
        """
        pol: dict[str, Any] = {}
        for p in self.policies:
            get = getattr(p, "state", None)
            if not callable(get) or p.name in self.disabled:
                continue
            self.calling = (p.name, "state()", time.monotonic())
            try:
                got = get()
                if not isinstance(p, Rule):
                    json.dumps(got)  # (the worker writes it as JSON, on every field)
            except BaseException as exc:  # noqa: BLE001 (a policy bug disables that policy)
                _policy_bug(exc)
                self.calling = None
                self._disable(p.name, f"{type(exc).__name__} in state(): {exc}")
                continue
            self.calling = None
            pol[p.name] = got
        return {"policies": pol, "disabled": self.disabled, "guardrails": self.guardrails.state()}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from `state`.

        A policy disabled when it was saved stays disabled, as does one
        disabled already (`disable`: it hung before the state was saved), whose
        ``restore()`` is not called; one whose ``restore()`` raises is disabled now.
        """
        self.disabled = {**self.disabled, **dict(state.get("disabled", {}))}
        saved = state.get("policies", {})
        for p in self.policies:
            put = getattr(p, "restore", None)
            if not callable(put) or p.name not in saved or p.name in self.disabled:
                continue
            self.calling = (p.name, "restore()", time.monotonic())
            try:
                put(saved[p.name])
            except BaseException as exc:  # noqa: BLE001 (a policy bug disables that policy)
                _policy_bug(exc)
                self._disable(p.name, f"{type(exc).__name__} in restore(): {exc}")
            self.calling = None
        self.guardrails.restore(state["guardrails"])
