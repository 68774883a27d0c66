"""The scope agent: owns the core, records every frame, streams it, applies decisions.

The plan's events are fed to pymmcore-plus's MDA runner from a queue (`EventFeed`)
so that decisions can add, move, re-time or stop events while the run goes on.
Events due at the same time are handed to the engine together, so bursts still
merge into hardware-timed sequences. Decisions are applied between events. What
the agent checks against the core before a run is in `._agent_rig`; how an added
event is checked and placed, in `._added_events`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import useq
from pymmcore_plus import CMMCorePlus

from livescope import __version__
from livescope.bus import (
    BUS_FILE,
    Answered,
    BusInfo,
    BusSecurity,
    DecisionServer,
    FramePublisher,
    fast_thread_switching,
)
from livescope.policy import Guardrails, rehearsal_closeup, rehearsal_field
from livescope.record import DecisionLog, OmeZarrWriter, PSink, earlier_recording
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
    check_plan,
    clock_ns,
    parse_decision,
    plan_events,
    plan_figures,
    remove_file,
    write_atomic,
)

from ._added_events import prepare_added
from ._agent_rig import (
    _around_focus,
    _bus_frame_bytes,
    _check_autofocus,
    _check_camera,
    _check_stage_devices,
    _interval_s,
    _objective_in_use,
    _oriented,
    _pixel_size_um,
    _undefined_presets,
    _warn_other_labels,
    _z_step_um,
)
from ._engine import LivescopeEngine, index_text
from ._fanout import FrameFanout
from ._feed import EventFeed

__all__ = ["ScopeAgent"]

logger = logging.getLogger("livescope")

AGENT_RATE_SLACK = 2.0
"""The agent refuses decisions past this many times the profile's decisions per minute
(the worker holds them to it by sample time; the agent counts when they arrive)."""


class ScopeAgent:
    """Runs a plan on a core: records every frame, publishes it, applies decisions.

    Parameters
    ----------
    core
        The pymmcore-plus core (``CMMCorePlus`` or the simulated ``UniMMCore``).
    profile
        The rig's hardware profile (decisions are checked against it).
    sequence
        The plan.
    run_dir
        Run folder (new): recording, frame log, decision log, ``bus.json``.
    sim
        The simulated microscope behind ``core``, if any (adds ground truth).
    bus
        ``"inline"``, ``"shm"`` or ``"off"``.
    endpoints
        Optional ``frames``, ``control`` and ``decisions`` endpoints to bind.
    security
        CURVE keys (required to bind to a network address).
    engine
        The acquisition engine (default: a `LivescopeEngine` for ``core``; replays
        pass theirs).
    clock
        Plan seconds since the run started, when not the wall clock (a replay's is
        the recorded time of the last event served).
    recording_memory_bytes
        How many bytes of frames may wait to be recorded before the run is
        cancelled (the disk slower than the camera); None: a quarter of the PC's
        physical memory (4 GiB where it cannot be read).

    """

    what_if = False
    """Decisions are only logged, not applied to the acquisition (replays set it)."""

    ages_decisions = True
    """The frame a decision answers may be too old (``guardrails.max_decision_age_s``);
    a replay's are not aged: its time is the recording's, served ahead of the analysis."""

    def __init__(
        self,
        core: CMMCorePlus,
        profile: HardwareProfile,
        sequence: useq.MDASequence,
        run_dir: str | Path,
        *,
        sim: Any = None,
        run_id: str | None = None,
        bus: Literal["inline", "shm", "off"] = "inline",
        endpoints: dict[str, str] | None = None,
        security: BusSecurity | None = None,
        extra_sinks: list[PSink] | None = None,
        engine: LivescopeEngine | None = None,
        clock: Callable[[], float] | None = None,
        recording_memory_bytes: int | None = None,
    ) -> None:
        sequence = _around_focus(sequence, core)
        # the plan expanded once (~40 µs per event: seconds for a long multi-position run)
        # for the plan check, the event queue and the guardrails' books
        planned = plan_events(sequence)
        _check_camera(core)
        self._rig_reach = _check_stage_devices(core, planned)
        if not self.what_if:  # (a replay's autofocus events were the recorded rig's)
            _check_autofocus(core, planned)
            _warn_other_labels(core, profile)  # (a replay's devices are its own)
        # (the camera's field on the stage, which the plan check uses, turns with it)
        given = profile
        profile = _objective_in_use(core, _oriented(core, profile, recorded=self.what_if))
        # (a replay's plan asks for light that was given when its frames were recorded)
        # (autofocus: the core's own device was checked above; a replay's were the rig's)
        check_plan(
            sequence, profile, events=planned, light_budget=not self.what_if,
            autofocus_device=True, recorded=self.what_if,
        )  # fmt: skip
        if not self.what_if:  # (what `livescope plan check` warns of: time points that will
            # start late, a light budget the plan nearly spends; a replay's are the recording's)
            for warning in plan_figures(sequence, profile, events=planned)["warnings"]:
                logger.warning("plan: %s", warning)
        self._undefined_presets = _undefined_presets(core, profile, planned)
        # the largest time index an added event may take (a huge one grew the recording's
        # time axis to match)
        self._max_t = max((int(e.index.get("t", 0)) for e in planned), default=0) + int(
            profile.light_dose.max_extra_frames_per_run
        )
        # and z index (each plane a frame: an added stack holds at most that many more; a
        # huge one grew the recording's z axis to match, past what a reader can open)
        self._max_z = max((int(e.index.get("z", 0)) for e in planned), default=0) + int(
            profile.light_dose.max_extra_frames_per_run
        )
        self.planned_events = len(planned)
        """How many events the plan holds (decisions may add more)."""
        self.recording_memory_bytes = recording_memory_bytes
        self._first_event = planned[0] if planned else None  # where a rehearsal lands
        self.core, self.profile, self.sequence, self.sim = core, profile, sequence, sim
        self.run_dir = Path(run_dir)
        self.run_id = run_id or time.strftime("run-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.engine = engine or LivescopeEngine(core, profile, sim=sim)
        accel = sim.time_acceleration if sim is not None else 1.0
        self.feed = EventFeed(
            sequence, self.engine, accel, clock, events=planned,
            field_of_view_um=profile.field_of_view_um,
        )  # fmt: skip
        # every channel of the rig has its place on the c axis from the start: the
        # plan's first, then the others (decisions may add them)
        channels = list(
            dict.fromkeys(
                [c.config for c in sequence.channels] + [c.name for c in profile.channels.presets]
            )
        )
        self.channel_order = channels
        self._c_index = {name: c for c, name in enumerate(channels)}
        self.guardrails = Guardrails(profile, planned)
        """What accepted decisions have booked of the rig's budgets (the plan's frames too)."""
        self.decisions_accepted = 0
        self.decisions_rejected = 0
        self.decision_log_errors = 0  # answers the decision log could not keep (a full disk)
        self._fanout: FrameFanout | None = None  # the running acquisition's
        # the sample's time, for how old the frame a decision answers is: the plan's clock
        # on a simulated rig (its sample stops with it during a pause), the wall clock on a
        # real one (the sample goes on through a pause); None: decisions are not aged
        self._sample_clock: Callable[[], float] | None = (
            None if not self.ages_decisions
            else self.feed.now if profile.kind == "simulated" else time.perf_counter
        )  # fmt: skip
        # the bus first: an endpoint that cannot be bound (in use, malformed) stops the
        # agent before anything is written into the run folder
        eps = endpoints or {}
        self.publisher: FramePublisher | None = None
        self.server: DecisionServer | None = None
        if bus != "off":
            max_bytes = _bus_frame_bytes(core, profile.camera.sensor_shape_px)
            self.publisher = FramePublisher(
                self.run_id,
                endpoint=eps.get("frames"),
                control_endpoint=eps.get("control"),
                mode=bus,
                max_frame_bytes=max_bytes,
                security=security,
            )
            try:
                self.server = DecisionServer(
                    self._on_decision,
                    endpoint=eps.get("decisions"),
                    security=security,
                    on_answered=self._record_answered,
                )
            except BaseException:
                self.publisher.close()
                raise
        # what the agent opened is closed if the rest fails (e.g. the recorder refuses a
        # recorded folder): no decision server or frame bus is left bound for the process's life
        recorder: OmeZarrWriter | None = None
        decision_log: DecisionLog | None = None
        try:
            # what ran, for workers and replays, each whole when it appears and before the
            # frame log (a worker started first reads them once the log is there); not over
            # a recorded run's (the recorder refuses its folder)
            if earlier_recording(self.run_dir) is None:
                import json

                import yaml

                self.run_dir.mkdir(parents=True, exist_ok=True)
                plan_file = self.run_dir / "plan.yaml"
                if not plan_file.exists():
                    data = json.loads(
                        sequence.model_dump_json(exclude_unset=True, exclude_defaults=True)
                    )
                    write_atomic(plan_file, yaml.safe_dump(data, sort_keys=False))
                # the rig as run (a crashed run keeps it); written again when the camera's
                # orientation came from Micro-Manager
                profile_file = self.run_dir / "profile.yaml"
                if profile is not given or not profile_file.exists():
                    rig = yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False)
                    write_atomic(profile_file, rig)
            self.recorder = recorder = OmeZarrWriter(
                self.run_dir,
                channels=channels,
                pixel_size_um=_pixel_size_um(core, profile, replay=self.what_if),
                z_step_um=_z_step_um(sequence),
                interval_s=_interval_s(sequence),
                attrs={"run_id": self.run_id, "profile": profile.name, "livescope": __version__},
                bit_depth=profile.camera.bit_depth,
            )
            self.decision_log = decision_log = DecisionLog(self.run_dir)
            if self.publisher is not None and self.server is not None:
                BusInfo(
                    self.run_id,
                    self.publisher.endpoint,
                    self.publisher.control_endpoint,
                    self.server.endpoint,
                    bus,
                ).with_this_process().write(self.run_dir)  # (a worker sees if it is killed)
        except BaseException:
            # (not bus.json: the folder's may be another agent's, whose recording it holds)
            self._release(decision_log)
            if recorder is not None:
                try:
                    recorder.close()
                except OSError as exc:  # (the error that stopped the agent is the one raised)
                    logger.warning("closing the recording %s: %s", recorder.path, exc)
            raise
        self.sinks: list[PSink] = [self.recorder, *(extra_sinks or [])]

    # ------------------------------------------------------------ decisions

    def _on_decision(self, decision: Decision, t_rx: int) -> DecisionAck:
        """Check and apply one decision (decision-server thread); never raises."""
        accepted, reason, added = False, "", 0
        try:
            if decision.run_id != self.run_id:
                raise LivescopeError(
                    f"unknown run {decision.run_id!r}; this agent runs {self.run_id!r}"
                )
            if self.feed.finished or self.feed.stopped:
                raise LivescopeError("the run has ended")
            # the rig's budgets, checked again here: a decision may come from any
            # client of the channel, not only a worker whose guardrails passed it
            now = self.feed.now()
            age = self._frame_age_s(decision.seq)
            if (
                why := self.guardrails.check(decision, now, rate=AGENT_RATE_SLACK, age_s=age)
            ) is not None:
                raise LivescopeError(f"guardrail: {why}")
            # booked before it is applied, given back if applying fails: a decision whose
            # events were queued is never answered refused
            self.guardrails.commit(decision, now)
            try:
                added, reason = self._apply(decision)
            except BaseException:
                self.guardrails.release(decision, now)
                raise
            accepted = True
        except (LivescopeError, ValueError, KeyError) as exc:
            reason = str(exc.args[0]) if isinstance(exc, KeyError) else str(exc)
        except Exception as exc:  # a bug: refused and counted, and the run goes on
            logger.exception("decision %s (%s) failed", decision.decision_id, decision.type)
            reason = f"internal error: {type(exc).__name__}: {exc}"
        ack = DecisionAck(
            decision_id=decision.decision_id,
            run_id=decision.run_id,
            type=decision.type,
            accepted=accepted,
            reason=reason,
            seq=decision.seq,
            events_added=added,
            t_received_ns=t_rx,
            t_acked_ns=clock_ns(),
        )
        if accepted:
            self.decisions_accepted += 1
        else:
            self.decisions_rejected += 1
            logger.warning(
                "decision %s (%s) rejected: %s", decision.decision_id, decision.type, reason
            )
        return ack

    def _frame_age_s(self, seq: int | None) -> float | None:
        """How long ago (the sample's time) frame ``seq`` was taken; None when not known.

        Not known: no frame named, one this run has not taken, or a replay's.
        """
        times = self._fanout.frame_times if self._fanout is not None else ()
        if seq is None or self._sample_clock is None or not 0 <= seq < len(times):
            return None
        return self._sample_clock() - times[seq]

    def _record_answered(self, answered: list[Answered]) -> None:
        """Count malformed parts and log every answer (server thread, after a burst's replies).

        The decision log is written here, once a burst of messages (a field's
        decisions, posted one by one) is answered, so that writing it never
        delays an acknowledgement. The runner, if it waits for its next event,
        takes the added ones now: not before, so that it does not take the GIL
        from the answers (a close-up's first frame starts ~1 ms after the
        burst's last answer, the server's wait for a next message).
        """
        self.feed.wake()
        for raw, decision, ack in answered:
            record: dict[str, Any]
            if decision is None:
                self.decisions_rejected += 1
                text = raw[:2000].decode("utf-8", errors="replace")
                record = {"invalid": text, "ack": ack.model_dump(mode="json")}
            else:
                record = {
                    "decision": decision.model_dump(mode="json"),
                    "ack": ack.model_dump(mode="json"),
                }
                if self.what_if:
                    record["what_if"] = True
            try:
                self.decision_log.append(record)
            except OSError:
                self.decision_log_errors += 1
                logger.exception("decision %s: writing the decision log failed", ack.decision_id)

    def _apply(self, d: Decision) -> tuple[int, str]:
        feed = self.feed
        if isinstance(d, StopRun):
            feed.stop()
            self.core.mda.cancel()  # also ends a wait for the next event
            return 0, "run stops after the current frame"
        if isinstance(d, StopPosition):
            if not feed.has_position(d.position):  # the plan's, or a place decisions added
                raise LivescopeError(
                    f"unknown position {d.position!r}; have {sorted(feed.positions)}"
                )
            n = feed.stop_position(d.position)
            return 0, f"{n} pending event(s) dropped"
        if isinstance(d, Move):
            if d.position not in feed.positions:
                raise LivescopeError(
                    f"unknown position {d.position!r}; have {sorted(feed.positions)}"
                )
            for xyz in feed.moved_coordinates(d.position, d.x_um, d.y_um, d.z_um):
                self._rig_reach.check(*xyz, f"move {d.position}")
                self.profile.check_stage_travel(*xyz, f"move {d.position}")
            n = feed.move(d.position, d.x_um, d.y_um, d.z_um)
            return 0, f"{n} pending event(s) moved"
        if isinstance(d, ChangeInterval):
            n = feed.change_interval(d.interval_s)
            return 0, f"{n} pending event(s) re-timed"
        if isinstance(d, AddEvents):
            events = self._prepare_added(d)
            feed.add(events, wake=False)  # woken once the burst is answered
            return len(events), ""
        raise LivescopeError(f"unsupported decision type {d.type!r}")  # pragma: no cover

    def _prepare_added(self, d: AddEvents) -> list[useq.MDAEvent]:
        """Fill positions, check channels, limits and collisions, set times (`prepare_added`)."""
        return prepare_added(
            d, self.feed, self.profile, c_index=self._c_index, max_t=self._max_t,
            max_z=self._max_z, undefined_presets=self._undefined_presets,
            rig_reach=self._rig_reach,
        )  # fmt: skip

    # ------------------------------------------------------------ running

    def run(self, progress: Any = None) -> dict[str, Any]:
        """Acquire until the plan is done or a decision stops the run (blocking).

        Returns the run summary (also written to ``summary.json``). Runs with a
        short GIL switch interval (`fast_thread_switching`): frames change threads
        several times on their way out. A Ctrl+C is raised (KeyboardInterrupt)
        once the summary is written, also one that came after acquisition had
        ended (the summary's ``interrupted_while_closing``; `interrupted_summary`
        reads either).
        """
        with fast_thread_switching():
            return self._run(progress)

    def _rehearse_decision(self) -> bool:
        """Parse, check, prepare and answer a close-up once before the first frame, off the record.

        The run's first decision then does not run that code cold (669 against
        187 µs here; see ``livescope.policy._rehearsal``): nothing is
        booked, queued or logged. Returns False when the rehearsal stopped
        short (an empty plan, or a rig whose limits refuse the close-up).
        """
        if self._first_event is None:
            return False
        try:  # never fatal: at worst the first decisions run cold
            obs = rehearsal_field(self._first_event, self.profile, self.run_id)
            body = rehearsal_closeup(obs, self.profile).model_dump_json().encode()
            t_rx = clock_ns()
            decision = parse_decision(body)
            self.guardrails.check(decision, self.feed.now(), rate=0)
            added = len(self._prepare_added(decision)) if isinstance(decision, AddEvents) else 0
            ack = DecisionAck(
                decision_id=decision.decision_id, run_id=decision.run_id, type=decision.type,
                accepted=True, seq=decision.seq, events_added=added, t_received_ns=t_rx,
                t_acked_ns=clock_ns(),
            )  # fmt: skip
            ack.model_dump_json()
            decision.model_dump(mode="json")
            ack.model_dump(mode="json")
        except Exception as exc:  # noqa: BLE001 (e.g. limits that refuse any close-up)
            logger.debug("rehearsing a decision: %s", exc)
            return False
        return True

    def _run(self, progress: Any) -> dict[str, Any]:
        self._rehearse_decision()
        core = self.core
        try:  # (nothing has run: what the agent opened is closed, bus.json removed)
            core.mda.set_engine(self.engine)  # (refused while the core runs another MDA)
            # (a wrong LIVESCOPE_BULK_PRIORITY stops the fan-out here)
            fanout = FrameFanout(
                self.sinks, publisher=self.publisher, on_cancel=self._cancel, progress=progress,
                clock=self._sample_clock, max_held_bytes=self.recording_memory_bytes,
            )  # fmt: skip
        except BaseException:
            self.close()
            raise
        self._fanout = fanout
        core.mda.events.frameReady.connect(fanout.on_frame)
        self.feed.runner_cancelled = lambda: not core.mda.is_running()
        self.feed.runner_pausing = lambda: core.mda.is_paused() or core.mda.status.pause_requested
        core.mda.events.sequencePauseToggled.connect(self.feed.pause_toggled)
        t0 = time.perf_counter()
        error: BaseException | None = None
        try:
            core.mda.run(iter(self.feed))
        except BaseException as exc:  # noqa: BLE001 (re-raised after teardown)
            error = exc
            if not isinstance(exc, Exception):  # (Ctrl+C: pymmcore-plus left its run open)
                _end_runner(core)
        finally:
            duration = time.perf_counter() - t0
            core.mda.events.frameReady.disconnect(fanout.on_frame)
            core.mda.events.sequencePauseToggled.disconnect(self.feed.pause_toggled)
            self.feed.stop()
            for event in self.engine.cut_off_events():  # (a burst's, counted taken as handed)
                self.feed.untake(event)
            try:
                fanout.finish()
            except (LivescopeError, KeyboardInterrupt) as exc:  # (Ctrl+C: as if in the run)
                error = error or exc
            finally:
                summary, error = self._end(fanout, duration, error)
        if error is not None:
            raise error
        if self.engine.failed_events:
            raise LivescopeError(
                f"{len(self.engine.failed_events)} frame(s) could not be acquired"
                f"{self._first_failure()}"
            )
        return summary

    def _first_failure(self) -> str:
        """``; the first, <why>`` for a run whose events failed (the log says more)."""
        why = self.engine.first_failure
        if why is None:
            first = self.engine.failed_events[0].index if self.engine.failed_events else {}
            why = f"event {index_text(first)} (the log says why)"
        return f"; the first, {why}"

    def _cancel(self) -> None:
        self.feed.stop()
        self.core.mda.cancel()

    def _summary(
        self, fanout: FrameFanout, duration: float, error: BaseException | None = None
    ) -> dict[str, Any]:
        """Return the run summary (``summary.json``); ``ok`` only if the run ended as planned.

        A Ctrl+C that came once acquisition had ended, while the recording was
        closed, leaves a run whose every frame was recorded as it was:
        ``interrupted_while_closing`` says it came (`run` raises it afterwards).
        """
        closing = error is not None and error is fanout.closing_interrupt
        if closing:
            error = None
        bus: dict[str, Any] = self.publisher.stats() if self.publisher else {"mode": "off"}
        bus["dropped_in_agent"] = fanout.bus_dropped
        bus["publish_failures"] = fanout.publish_failures  # (of those: publishing raised)
        failed = len(self.engine.failed_events)
        unfocused = len(self.engine.autofocus_failed)
        unlogged = self.decision_log_errors + self.decision_log.sync_errors
        summary: dict[str, Any] = {
            "ok": error is None and failed == 0 and unfocused == 0 and unlogged == 0,
            "interrupted": isinstance(error, KeyboardInterrupt),
            "error": (
                "interrupted (Ctrl-C)"
                if isinstance(error, KeyboardInterrupt)
                else f"{type(error).__name__}: {error}"
                if error is not None
                else f"{failed} frame(s) could not be acquired{self._first_failure()}"
                if failed
                else f"{unfocused} autofocus event(s) failed; the first, at "
                f"{self.engine.first_autofocus_failure}"
                if unfocused
                else f"{unlogged} write(s) or sync(s) of the decision log failed"
                if unlogged
                else None
            ),
            "run_id": self.run_id,
            "frames_acquired": fanout.frames_acquired,
            "frames_written": fanout.frames_written,
            "frames_failed": failed,
            "autofocus_failed": unfocused,
            "positions": list(self.feed.positions),
            "channels": self.recorder.channels,
            "duration_s": round(duration, 3),
            "fps": round(fanout.frames_acquired / duration, 2) if duration > 0 else 0.0,
            "max_queue_depth": fanout.max_queue_depth,
            "decisions_accepted": self.decisions_accepted,
            "decisions_rejected": self.decisions_rejected,
            "decision_log_errors": unlogged,
            # what became of the plan's events and those decisions added (`EventFeed.counts`)
            "events": self.feed.counts,
            "bus": bus,
            "out": str(self.run_dir.resolve()),
            "recording": str(self.recorder.path.resolve()),
            "profile": self.profile.name,
            "livescope_version": __version__,
            **self._summary_extra(),
        }
        if closing:
            summary["interrupted_while_closing"] = True
        if fanout.abandoned:  # (Ctrl+C pressed again while the recording closed)
            summary["error"] = (
                f"{summary['error'] or 'stopped'}; the recording was abandoned "
                f"({fanout.frames_unwritten} frame(s) not written, its files not closed)"
            )
        return summary

    def _end(
        self, fanout: FrameFanout, duration: float, error: BaseException | None
    ) -> tuple[dict[str, Any], BaseException | None]:
        """Write ``summary.json`` and close; return the summary and the run's error.

        Closing happens whatever fails (the bus's shared memory, the decision
        channel). A summary that cannot be written (e.g. the disk is full) is
        logged; it becomes the run's error only when the run had none (a
        recording that failed for the same reason stays the error reported).
        """
        import json

        try:
            # the decision channel's last answers are logged, and the log synced, before
            # the summary counts what the log could not keep (workers see the run end first)
            remove_file(self.run_dir / BUS_FILE)
            try:  # (nothing here may keep the summary from being written)
                if self.server is not None:
                    self.server.close()
                self.decision_log.close()
            except Exception:
                logger.exception("closing the decision channel failed")
            summary = self._summary(fanout, duration, error)
            path = self.run_dir / "summary.json"
            try:  # never half-written: a run without it reads as one cut short
                write_atomic(path, json.dumps(summary, indent=1))
            except OSError as exc:
                logger.error("writing %s failed: %s", path, exc)
                if error is None or error is fanout.closing_interrupt:
                    error = LivescopeError(
                        f"the run ended but its summary could not be written to {path}: {exc}"
                    )
        finally:
            self._close()
        return summary, error

    def _summary_extra(self) -> dict[str, Any]:
        """Keys a subclass adds to the run summary (e.g. how it acquired)."""
        return {}

    def close(self) -> None:
        """Release the agent's sockets, threads and ``bus.json`` without running.

        For a caller whose own set-up fails between making the agent and `run`
        (which closes it itself). The bus is released even when closing the
        recording fails (its error, e.g. an OSError, is raised afterwards).
        """
        try:
            self.recorder.close()  # (the frame log; nothing was recorded)
        finally:
            self._close()

    def _close(self) -> None:
        remove_file(self.run_dir / BUS_FILE)  # nobody can attach any more (never raises)
        self._release(self.decision_log)

    def _release(self, decision_log: DecisionLog | None) -> None:
        """Close the decision server, the frame bus and ``decision_log`` (None: not opened)."""
        if self.server is not None:
            self.server.close()
        if self.publisher is not None:
            self.publisher.close()
        if decision_log is not None:
            decision_log.close()


def interrupted_summary(run_dir: str | Path, *, since: float | None = None) -> dict[str, Any]:
    """Return the summary a run stopped by Ctrl+C wrote, in its KeyboardInterrupt's handler.

    The agent stops acquiring, closes the recording and writes ``summary.json``
    (``interrupted``, or ``interrupted_while_closing`` when the Ctrl+C came once
    acquisition had ended) before it raises the KeyboardInterrupt: what was
    acquired can still be analysed and reported. ``since``: when the run started
    (`time.time`); a ``summary.json`` written before then is an earlier run's.
    Raises KeyboardInterrupt again when the run wrote no such summary (stopped
    before it began acquiring).
    """
    import json

    path = Path(run_dir) / "summary.json"
    try:
        # (an earlier run's, in a folder used again; the slack: file systems' coarse clocks)
        if since is not None and path.stat().st_mtime < since - 2.0:
            raise KeyboardInterrupt
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise KeyboardInterrupt from None
    if not isinstance(summary, dict) or (
        summary.get("interrupted") is not True
        and summary.get("interrupted_while_closing") is not True
    ):
        raise KeyboardInterrupt
    return summary


def ready_or_close(agent: ScopeAgent, on_ready: Callable[[ScopeAgent], None]) -> None:
    """Call ``on_ready(agent)``; if it fails (e.g. the worker did not start), close the agent."""
    try:
        on_ready(agent)
    except BaseException:
        agent.close()  # its sockets and threads, which only `run` would close otherwise
        raise


def _end_runner(core: Any) -> None:
    """End the core's MDA run that a KeyboardInterrupt cut short (acquisition thread).

    pymmcore-plus ends a run (the engine's sequence teardown, ``sequenceFinished``,
    the runner idle again) only when it runs out of events or raises an
    ``Exception``: after a Ctrl+C the core says it is still acquiring, and
    refuses every later run ("Cannot register a new engine ...") for as long as
    the process lives. Ended here as pymmcore-plus ends a run: its engine torn
    down, ``sequenceFinished`` emitted (``sequenceCanceled`` first if it was
    waiting for an event), the runner idle.
    """
    runner = core.mda
    if not runner.is_running():
        return
    runner.cancel()  # (the reason the run ended: cancelled)
    finish = getattr(runner, "_finish_run", None)  # (pymmcore-plus has no public way)
    try:
        if finish is None:
            raise LivescopeError(f"{type(runner).__name__} has no _finish_run")
        finish(getattr(runner, "_sequence", None) or useq.MDASequence())
    except Exception:
        logger.exception("ending the interrupted MDA run failed: the core may refuse the next")
