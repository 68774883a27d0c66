"""An adaptive run: the agent, the supervised pipeline worker and the plan's policies.

`run_adaptive` acquires a plan on the simulated microscope (or on a real rig
through pymmcore-plus and the profile's Micro-Manager config; the agent records
every frame and streams it), runs the pipeline worker beside it in its own
process (restarted if it dies), lets the plan's policies change the
acquisition, then (simulated runs) scores the triggers against the simulation's
ground truth (`evaluate_triggers`) and returns the run summary.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import useq
import yaml

from livescope.bus import StallMonitor, machine_info, peak_memory_mb, uses_ipc
from livescope.record import DECISIONS_FILE, FRAMES_FILE, earlier_recording, read_frames
from livescope.schema import (
    FrameInfo,
    HardwareProfile,
    LivescopeError,
    check_output_folder,
    plan_sections,
    read_jsonl_counting,
    write_atomic,
)
from livescope.scope import (
    ScopeAgent,
    check_micromanager_config,
    interrupted_summary,
    run_micromanager,
    run_simulated,
)

from ._config import LATENCY_STAGES, PLAN_FILE, RESULTS_DIR, WorkerConfig
from ._results import LatencyLog, _stage_ms, behind_from_log, camera_to_start_ms, earlier_run
from ._supervisor import WorkerSupervisor
from ._truth_scores import evaluate_tracks, evaluate_triggers

__all__ = ["DEMO_POLICIES", "SLOW_FIELD_MS", "analysis_pace", "run_adaptive", "write_plan"]

logger = logging.getLogger("livescope")

ANALYSIS_GAPS = (
    "fields_missing", "fields_incomplete", "fields_unreadable", "decisions_unanswered",
    "overlay_errors", "ctc_results_not_written", "cells_revisions_not_applied",
    "fields_not_tracked",
)  # fmt: skip
"""The worker's counts of what it could not do, copied into a run's summary (``analysis_gaps``)."""


def analysis_pace(
    acceleration: float | None, duration_s: float, behind: dict[str, float]
) -> float | None:
    """Return the pace the analysis of a simulated run kept, in sample s per wall s, or None.

    A run at ``acceleration`` (sample seconds per wall second) that acquired
    for ``duration_s`` and whose analysis was still ``behind["last"]`` seconds
    behind at the end (`behind_from_log`) analysed ``duration_s`` of
    acquisition in ``duration_s + last``: about ``acceleration * duration /
    (duration + last)``, to one decimal. None when it ended less than 1 s
    behind (it kept up), or for a rig or replay (``acceleration`` None). A run
    at that pace can still fall a little behind: what the worker left out to
    catch up (`WorkerConfig.skip_stain_when_behind`) it then does.
    """
    last = float(behind.get("last", 0.0))
    if acceleration is None or duration_s <= 0 or last < 1.0:
        return None
    return max(0.1, round(acceleration * duration_s / (duration_s + last), 1))


def answered_late(work: dict[str, Any]) -> int:
    """Decisions the agent answered after the worker's wait ran out (a worker summary's counts)."""
    return int(work.get("decisions_accepted_late", 0)) + int(work.get("decisions_refused_late", 0))


def never_answered(work: dict[str, Any]) -> int:
    """Decisions the agent did not answer in time and never answered after (a worker summary's)."""
    return int(work.get("decisions_unanswered", 0)) - answered_late(work)


def analysis_gaps(work: dict[str, Any]) -> dict[str, int]:
    """Return a worker summary's `ANALYSIS_GAPS` (``decisions_unanswered``: never answered)."""
    gaps = {k: int(work.get(k, 0)) for k in ANALYSIS_GAPS}
    gaps["decisions_unanswered"] = never_answered(work)
    return gaps


SLOW_FIELD_MS = 5.0
"""A field whose pipeline overhead is above this is slow (issue 7's p99 target on a 2-core PC)."""

DEMO_POLICIES: list[dict[str, Any]] = [
    {
        "name": "mitosis-closeup",
        "when": {"mitosis": {"p_min": 0.5, "frames": 2}},
        "do": {
            "acquire": {
                "channels": ["Phase", "DAPI"],
                "loops": 4,
                "interval_s": 30,
                "centre": "cell",
                "share_field": True,
            }
        },
        "cooldown_s": 1800,
        "cooldown_radius_um": 20,
    }
]
"""The demo's rule: a cell in mitosis (two frames in a row) gets a fast time-lapse
(4 time points, 30 s apart, phase + nuclear stain) centred on it, unless one made
for another cell of the field at the same time point images it (``share_field``)."""


def write_plan(
    path: Path, sequence: useq.MDASequence, policies: list[dict[str, Any]] | None
) -> None:
    """Write a plan file: the sequence's fields plus ``policies:``."""
    data = json.loads(sequence.model_dump_json(exclude_unset=True, exclude_defaults=True))
    if policies:
        data["policies"] = policies
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def run_adaptive(
    profile: HardwareProfile,
    sequence: useq.MDASequence,
    out_dir: str | Path,
    *,
    policies: list[dict[str, Any]] | None = None,
    worker: WorkerConfig | None = None,
    seed: int | None = None,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_supervisor: Callable[[WorkerSupervisor], None] | None = None,
    ready_timeout_s: float = 120.0,
    bus: Literal["inline", "shm"] = "shm",
    plan_file: Path | None = None,
    acquire: Callable[[Callable[[ScopeAgent], None]], dict[str, Any]] | None = None,
    backend: str = "mda",
    port: int = 4827,
    watch_stalls: bool = True,
    ground_truth: tuple[Path, HardwareProfile] | None = None,
) -> dict[str, Any]:
    """Acquire with the pipeline worker in the loop; return the run summary.

    ``policies`` is a plan's ``policies:`` list (written with the sequence to
    ``out_dir/plan.yaml``, which the worker reads; ``plan_file``, the plan as the
    user wrote it, is copied there instead when given). ``on_supervisor`` is called
    once the worker is ready, before the first frame (e.g. to inject faults).
    ``acquire(on_ready)`` runs the acquisition instead of the profile's microscope
    (a replay) and returns its summary; it must call ``on_ready(agent)`` once the
    agent listens. ``backend`` / ``port``: how the agent acquires (`run_simulated`,
    `run_micromanager`). ``watch_stalls``: watch the machine for stalls while
    the run goes on (`livescope.bus.StallMonitor`; the summary's
    ``machine_stalls``, with the live fields whose pipeline overhead passed
    `SLOW_FIELD_MS` and the others, and how many of each a stall overlapped
    the overhead of, `_fields_in_a_stall`; ``{"error": ...}`` if the
    monitor failed, which is logged and does not fail the run). The summary's
    ``machine`` names the CPU and how fast it runs Python
    (`livescope.bus.machine_info`, timed before the run starts), so that
    latencies from different PCs can be compared. The triggers of the mitosis
    rules the worker ran (`evaluate_triggers`; the rules of the plan file it
    read: ``plan_file``'s when given, else ``policies``) and each position's
    tracks (`evaluate_tracks`) are scored against the simulation's ground
    truth: ``out_dir/ground_truth`` with ``profile``'s simulation by default;
    ``ground_truth`` gives another folder and the simulated profile it was made
    with (a replay of a simulated recording). A scoring that fails is logged
    and said in the summary (``error``); the run's results stand. So is a
    frame log that cannot be read (``frames.jsonl`` damaged: `read_frames`):
    ``frame_log_error`` says why, and the counts and latency read from it
    (``frames_planned_recorded``, ``frames_added``, ``decision_executed``)
    are left out (None, absent).

    Raises
    ------
    LivescopeError
        if the worker does not become ready (within ``ready_timeout_s``; at once
        when it fails by itself before it is ready, after its supervisor gave up
        when it is killed each time) or does not finish, or ``out_dir`` cannot be
        a run folder or holds a recording.

    """
    out = Path(out_dir)
    check_output_folder(out)
    uses_ipc()  # a bad LIVESCOPE_TRANSPORT: before anything is written
    if ground_truth is not None and ground_truth[1].simulation is None:
        raise LivescopeError(
            f"ground truth {ground_truth[0]} is scored with a simulated profile; "
            f"{ground_truth[1].name!r} is not one"
        )
    # (an earlier run's results too: its first worker refused them once the acquisition
    # was going, and the new recording then blocked the next try)
    if (found := earlier_recording(out) or earlier_run(out)) is not None:
        raise LivescopeError(f"{found} already exists; choose a new output folder")
    if acquire is None:  # a rig's config file that is not there: before anything is written
        check_micromanager_config(profile, backend)
    out.mkdir(parents=True, exist_ok=True)
    pc = machine_info()  # before anything of the run starts
    if plan_file is not None:
        (out / PLAN_FILE).write_bytes(Path(plan_file).read_bytes())
    else:
        write_plan(out / PLAN_FILE, sequence, policies)
    profile_path = out / "profile.yaml"  # the rig as run (e.g. its time acceleration)
    profile_path.write_text(
        yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
    cfg = worker or WorkerConfig(stain_every=5)
    cfg = dataclasses.replace(cfg, profile=str(profile_path))
    if threads is None:  # half the cores: the other half acquires, records and streams
        threads = max(1, (os.cpu_count() or 2) // 2)
    supervisor = WorkerSupervisor(out, cfg, threads=threads)

    def start_worker(agent: ScopeAgent) -> None:
        supervisor.start()
        ready = out / RESULTS_DIR / "ready"
        deadline = time.monotonic() + ready_timeout_s
        while not ready.exists():
            failed = supervisor.gave_up or (
                bool(supervisor.exits) and _failed_by_itself(supervisor.exits[-1])
            )
            if failed or time.monotonic() > deadline:
                # (a worker still loading its engines has no error to show: its log ends
                # mid-start, so the wait that ran out is what to say; the error of one
                # killed before it, restarted, is said as that)
                if failed:
                    why = f": {supervisor.error}" if supervisor.error else ""
                else:
                    why = f": not ready within {ready_timeout_s:g} s"
                    if supervisor.restarts:
                        why += (
                            f", restarted {supervisor.restarts} time(s)"
                            + (f" (the last worker before: {supervisor.error})"
                               if supervisor.error else "")
                        )  # fmt: skip
                raise LivescopeError(
                    f"the pipeline worker did not start{why} (see "
                    f"{out / RESULTS_DIR / 'worker.log'})"
                )
            time.sleep(0.05)
        if on_supervisor is not None:
            on_supervisor(supervisor)

    t0, started = time.perf_counter(), time.time()
    monitor: StallMonitor | None = None
    machine: dict[str, Any] | None = None
    if watch_stalls:
        try:
            monitor = StallMonitor().start()
        except (LivescopeError, OSError) as exc:  # an aside: the run goes on without it
            logger.warning("machine stalls not measured: %s", exc)
            machine = {"error": str(exc)}
        except BaseException:  # (a Ctrl+C as its probe starts: worker.log was left open)
            supervisor.stop()
            raise
    try:
        if acquire is not None:
            summary = acquire(start_worker)
        elif profile.kind == "simulated":
            summary = run_simulated(
                profile, sequence, out, seed=seed, progress=progress, bus=bus,
                on_ready=start_worker, backend=backend,
            )  # fmt: skip
        else:
            summary = run_micromanager(
                profile, sequence, out, progress=progress, bus=bus, on_ready=start_worker,
                backend=backend, port=port,
            )  # fmt: skip
    except KeyboardInterrupt:
        # Ctrl+C stopped the acquisition: what was recorded is analysed and reported (the
        # worker, in a process group of its own, did not get it); a second one stops that
        try:
            summary = interrupted_summary(out, since=started)
        except KeyboardInterrupt:
            supervisor.stop()
            _stop_quietly(monitor)
            raise
        if summary.get("interrupted_while_closing") is True:
            logger.warning(
                "interrupted as the recording closed, once the acquisition had ended and "
                "each frame it took was recorded; the worker analyses them (Ctrl+C again to "
                "stop it)"
            )
        else:
            logger.warning(
                "interrupted: the acquisition has stopped; the worker analyses what was "
                "recorded (Ctrl+C again to stop it)"
            )
    except BaseException:
        supervisor.stop()
        _stop_quietly(monitor)
        raise
    try:
        work = supervisor.wait()
    except BaseException:  # (e.g. a second Ctrl+C: the worker stops too)
        supervisor.stop()
        _stop_quietly(monitor)
        raise
    # read once, for the slow fields and how far behind (a run of days holds hundreds of
    # thousands of lines)
    try:
        latency_log = LatencyLog.read(out / RESULTS_DIR / "latency.jsonl")
    except BaseException:
        _stop_quietly(monitor)
        raise
    if monitor is not None:
        try:
            machine = {**monitor.stop(), **_fields_in_a_stall(out, monitor, latency_log)}
        except LivescopeError as exc:  # an aside: the run itself succeeded
            logger.warning("machine stalls not measured: %s", exc)
            machine = {"error": str(exc)}
    # the rules the worker ran: those of the plan file it read (``policies`` were written
    # into it, unless a plan file given as ``plan_file`` or in the worker's config took
    # their place: scored by ``policies``, its firings were left out, recall 0)
    spec = plan_sections(Path(cfg.plan) if cfg.plan else out / PLAN_FILE).get("policies")
    mitosis_rules = _mitosis_rules(spec)
    evaluation: dict[str, Any] = {
        "precision": None,
        "recall": None,
        "mitosis_to_trigger_s": None,
        "trigger_recall_imaged": None,
        "mitosis_to_closeup_s": None,
    }
    truth, truth_profile = ground_truth or (out / "ground_truth", profile)
    tracking: dict[str, Any] | None = None
    if (truth / "lineage.json").is_file():
        try:
            evaluation = evaluate_triggers(out, truth_profile, rules=mitosis_rules, truth=truth)
        except Exception as exc:  # an aside: the run itself succeeded
            logger.exception("the triggers could not be scored against %s", truth)
            evaluation = {**evaluation, "error": f"{type(exc).__name__}: {exc}"}
        tracking = evaluate_tracks(out, truth)
    # a damaged frame log (a line cut short by a full disk, then written after) loses the
    # frame counts and the decisions' execution latency, not the rest of the summary
    frame_log_error: str | None = None
    planned: int | None = None
    added: int | None = None
    try:
        frames = read_frames(out)
    except (LivescopeError, OSError) as exc:  # an aside: the run's other results stand
        logger.error("the frame log could not be read: %s; the frames it counts are left out "
                     "of the run's summary (mend or remove the damaged line to count them)",
                     exc)  # fmt: skip
        frame_log_error = f"{type(exc).__name__}: {exc}"
    else:
        planned = sum(1 for f in frames if not f.get("added_by"))
        added = len(frames) - planned
    latency = {k: {"p50": v["p50"], "p99": v["p99"]} for k, v in work.get("latency_ms", {}).items()
               if k in LATENCY_STAGES}  # fmt: skip
    for hop, v in work.get("bus", {}).get("latency", {}).items():  # the frame bus, hop by hop
        if hop != "camera_to_received":
            latency[hop] = {"p50": v["p50_ms"], "p99": v["p99_ms"]}
    behind = behind_from_log(latency_log)
    sim = profile.simulation if acquire is None else None
    accel = sim.time_acceleration if sim is not None else None
    executed = _decision_executed_ms(out, frames) if frame_log_error is None else []
    if executed:
        a = np.asarray(executed)
        latency["decision_executed"] = {"p50": round(float(np.percentile(a, 50)), 3),
                                        "p99": round(float(np.percentile(a, 99)), 3)}  # fmt: skip
    summary.update(
        {
            "frames_analysed": int(work.get("frames_analysed", 0)),
            "fields_analysed": int(work.get("fields_analysed", 0)),
            "frames_planned_recorded": planned,
            "frames_added": added,
            # why the two above are None (the frame log could not be read), else None
            "frame_log_error": frame_log_error,
            "decisions": {
                "accepted": summary["decisions_accepted"],
                "rejected": summary["decisions_rejected"]
                + int(work.get("decisions_rejected_guardrail", 0)),
                "rejected_by_guardrails": int(work.get("decisions_rejected_guardrail", 0)),
                "rejected_by_agent": summary["decisions_rejected"],
                # made by the policies once the run had ended (its last fields): never
                # sent, but scored as triggers (they are the detector's answers)
                "not_sent": int(work.get("decisions_not_sent", 0)),
                # firings whose cell another's sub-sequence images (``share_field``): no
                # decision of their own
                "shared": int(work.get("firings_shared", 0)),
                # and those whose sub-sequence was refused or not sent
                "shared_not_imaged": int(work.get("firings_shared_not_imaged", 0)),
                # decisions the agent never answered, and firings sharing the sub-sequence
                # of one it did not answer in time (it may have carried it out later)
                "unanswered": never_answered(work) + int(work.get("firings_shared_unanswered", 0)),
                # decisions answered after the worker's wait (in accepted / rejected)
                "answered_late": answered_late(work),
                # firings of rules that only record
                "recorded": int(work.get("firings_recorded", 0)),
                # firings given back to their rules: the agent refused their decision
                # as stale (guardrails.max_decision_age_s); they may fire again
                "given_back": int(work.get("firings_given_back", 0)),
            },
            "trigger_precision": evaluation["precision"],
            "trigger_recall": evaluation["recall"],
            "mitosis_to_trigger_s": evaluation["mitosis_to_trigger_s"],
            # the same mitoses as the acquisition saw them (the three above are the
            # detector's, a firing never sent included): those whose first right trigger
            # got a close-up taken, and from onset to its first frame
            "trigger_recall_imaged": evaluation["trigger_recall_imaged"],
            "mitosis_to_closeup_s": evaluation["mitosis_to_closeup_s"],
            "latency_ms": latency,
            "dropped_analysis_frames": int(work.get("frames_dropped_live", 0)),
            "fields_analysed_late": int(work.get("dropped_live", 0)),
            "dropped_recorded_frames": summary["frames_acquired"] - summary["frames_written"],
            "worker_restarts": work["supervisor"]["restarts"],
            # of them, workers taken as hung (no field stored while frames waited) and ended
            "worker_hangs": int(work["supervisor"].get("hangs", 0)),
            # what the analysis could not do (0 each in a run that went well): fields
            # neither received nor recorded in time, fields analysed without all their
            # frames, recorded fields none of whose frames could be read, decisions the
            # agent never answered, overlay updates that failed, positions whose tracks
            # could not be written as a CTC result, fields the tracker ignored (given again
            # or out of order: their cells have track 0)
            "analysis_gaps": analysis_gaps(work),
            "policies_disabled": work.get("policies_disabled", []),
            "engines": work.get("engines", {}),
            "engine_runtimes": work.get("engine_runtimes", {}),
            "engine_warm_up_s": work.get("warm_up_s"),
            # how long after its last frame a live field's analysis started (most, last), s
            "analysis_behind_s": behind,
            # the simulated microscope's pace (sample s per wall s; None for a rig or a
            # replay) and, when the analysis ended behind it, the pace the analysis kept
            "time_acceleration": accel,
            "analysis_pace": analysis_pace(accel, float(summary.get("duration_s") or 0.0), behind),
            # overlay-only virtual stains left out while a time point behind (`WorkerConfig`)
            "stains_skipped_behind": int(work.get("stains_skipped_behind", 0)),
            "guardrails": work.get("guardrails", {}),
            "evaluation": evaluation,
            "tracking": tracking,
            "machine": pc,
            "machine_stalls": machine,
            # the most memory each process held (MB): this one (the agent, and the
            # simulated microscope when there is one) and the worker's last process
            "peak_memory_mb": {"run": peak_memory_mb(), "worker": work.get("peak_memory_mb")},
            "wall_s": round(time.perf_counter() - t0, 2),
        }
    )
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def _mitosis_rules(policies: object) -> list[str]:
    """Names of a plan's declared mitosis rules, as the worker logs them (``name: 7``: "7")."""
    if not isinstance(policies, list):
        return []
    return [
        str(p["name"])
        for p in policies
        if isinstance(p, dict) and isinstance(p.get("when"), dict) and "mitosis" in p["when"]
    ]


_KILLED_FROM_OUTSIDE = frozenset(
    -int(sig)
    for sig in (getattr(signal, name, None) for name in ("SIGKILL", "SIGTERM", "SIGINT", "SIGHUP"))
    if sig is not None
)
"""Exit statuses of a process killed by another (POSIX): the OOM killer, a user, a shutdown."""


def _failed_by_itself(code: int) -> bool:
    """Return True if a worker that exited with ``code`` before it was ready failed by itself.

    Such a worker fails the run's start at once, while its supervisor would restart it: it
    exited with an error (an exception: a model not there, an engine that cannot load) or
    crashed (SIGSEGV, SIGABRT; a Windows crash status) as it loaded its engines, which a
    broken set-up does at each restart, and the error was said only after 5 restarts and
    ~31 s of pauses between them. One killed by another process (`_KILLED_FROM_OUTSIDE`:
    the OOM killer's SIGKILL, a user's kill) says nothing of the set-up: the run waits
    while the supervisor restarts it, as it would once the worker is ready (the run failed
    with "did not start: killed by SIGKILL" while its worker was being restarted), and
    fails once the supervisor gives up (`WorkerSupervisor.gave_up`) or the ready timeout
    ends. Exit 0 is no failure.
    """
    return code != 0 and code not in _KILLED_FROM_OUTSIDE


def _stop_quietly(monitor: StallMonitor | None) -> None:
    """Stop the stall monitor of a run that failed (the run's own error is the one to see)."""
    if monitor is not None:
        with contextlib.suppress(LivescopeError):
            monitor.stop()


def _slow_fields(
    run_dir: Path, monitor: StallMonitor, log: LatencyLog | None = None
) -> dict[str, int]:
    """Return the slow fields' half of `_fields_in_a_stall` (its ``slow_`` keys)."""
    got = _fields_in_a_stall(run_dir, monitor, log)
    return {k: got[k] for k in ("slow_fields", "slow_fields_in_a_stall")}


def _fields_in_a_stall(
    run_dir: Path, monitor: StallMonitor, log: LatencyLog | None = None
) -> dict[str, int]:
    """Count slow and fast live fields, and those a stall overlapped the overhead of.

    Slow: its overhead passed `SLOW_FIELD_MS`; fast: the others. A field's
    overhead windows: its frame's camera time to its analysis start, less where
    the engines ran on other fields meanwhile (its ``busy_wait``), and its
    analysis end to the agent's answer (``end_to_end``'s end). Its own
    engines are left out: a stall there slows the engines, not the pipeline,
    and at a few stalls a second one falls in nearly every field's seconds of
    engines and waiting (the demo's fast fields were "in a stall" as often as
    its slow ones). The fast fields' share is the baseline: slow fields in a
    stall no more often than fast ones were not slowed by the stalls. Times
    come from each line: its camera time is its analysis start less its queue
    wait and its way to the worker, its analysis end its start plus its
    ``engines`` and ``analyse_other``; the engines' spans are every line's
    start to analysis end (recorded fields' too).

    A damaged line (`livescope.schema.read_jsonl_counting`, `_stage_ms`; a live
    field with an overhead but without those stages or a whole-number
    ``t_start_ns``) is left out, their number said: one raised as the run
    ended, and the run's summary (or its machine stalls) was lost. ``log``:
    the run's ``latency.jsonl`` as read once (`LatencyLog`); None: read here.
    """
    if log is None:
        log = LatencyLog.read(run_dir / RESULTS_DIR / "latency.jsonl")
    damaged = log.damaged
    spans: list[tuple[int, int]] = []  # each field's analysis: start → analysed (ns)
    fields: list[tuple[bool, int, int, int, int]] = []  # (slow, camera, start, analysed, end)
    for rec in log.records:
        if (ms := _stage_ms(rec)) is None:
            damaged += 1
            continue
        t_start = rec.get("t_start_ns")
        if not isinstance(t_start, int) or isinstance(t_start, bool) or "engines" not in ms:
            t_start = None
        else:  # (a line before analyse_other was logged: its engines alone)
            t_analysed = t_start + int((ms["engines"] + ms.get("analyse_other", 0.0)) * 1e6)
            spans.append((t_start, t_analysed))
        if not rec.get("live") or "overhead" not in ms:
            continue  # (left out where its camera time is: the agent's clock ahead)
        # (a live field's overhead comes with these whenever its camera time is known)
        if t_start is None or not ms.keys() >= _SPAN_STAGES:
            damaged += 1
            continue
        t_cam = t_start - int(camera_to_start_ms(ms) * 1e6)
        fields.append((ms["overhead"] > SLOW_FIELD_MS, t_cam, t_start, t_analysed,
                       t_cam + int(ms["end_to_end"] * 1e6)))  # fmt: skip
    busy = _merged(spans)
    begins = [a for a, _ in busy]
    got = dict.fromkeys(("slow_fields", "slow_fields_in_a_stall",
                         "fast_fields", "fast_fields_in_a_stall"), 0)  # fmt: skip
    for slow, t_cam, t_start, t_analysed, t_end in fields:
        kind = "slow_fields" if slow else "fast_fields"
        got[kind] += 1
        windows = _outside(busy, begins, t_cam, t_start)
        if t_end > t_analysed:
            windows.append((t_analysed, t_end))
        got[f"{kind}_in_a_stall"] += any(monitor.during(a, b) for a, b in windows)
    if damaged:
        logger.warning("%s: %d damaged line(s) left out of the slow fields",
                       log.path, damaged)  # fmt: skip
    return got


_SPAN_STAGES = frozenset({"camera_to_received", "queue_wait", "engines", "end_to_end"})
"""What `_fields_in_a_stall` places a live field's overhead windows by (ms per stage)."""


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Return the ``(begin, end)`` spans as disjoint ones, in order (overlapping ones joined)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _outside(
    spans: list[tuple[int, int]], begins: list[int], start: int, end: int
) -> list[tuple[int, int]]:
    """Return the parts of ``[start, end]`` outside the disjoint, ordered ``spans``.

    ``begins``: the spans' begins (bisected: a run of days logs hundreds of
    thousands of fields).
    """
    out: list[tuple[int, int]] = []
    at = start
    # the first span that may reach into [start, end]: the one before the first to begin after it
    for i in range(max(0, bisect.bisect_right(begins, start) - 1), len(spans)):
        a, b = spans[i]
        if a >= end:
            break
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < end:
        out.append((at, end))
    return out


def _decision_executed_ms(run_dir: Path, frames: Sequence[FrameInfo]) -> list[float]:
    """Agent queued a decision's events → its first added frame acquired, ms.

    ``frames``: the run's frame log (`read_frames`), read once by the caller.

    Called as the run ends. A damaged line of ``decisions.jsonl``
    (`livescope.schema.read_jsonl_counting`; an answer that is no object with a
    true/false ``accepted``, or an accepted one without a string ``decision_id``
    or with a ``t_acked_ns`` that is no whole number) and an added frame without
    a string ``added_by`` or a whole-number ``t_camera_ns`` are left out, their
    number said: one raised, and the run's summary was lost.
    """
    path = run_dir / DECISIONS_FILE
    acked: dict[str, int] = {}
    recs, damaged = read_jsonl_counting(path)
    for rec in recs:
        ack = rec.get("ack")
        if not isinstance(ack, dict) or not isinstance(ack.get("accepted"), bool):
            damaged += 1
        elif ack["accepted"]:
            d, t = ack.get("decision_id"), ack.get("t_acked_ns", 0)
            # (JSON's true is no time)
            if not isinstance(d, str) or not isinstance(t, int) or isinstance(t, bool):
                damaged += 1
            else:
                acked[d] = t
    if damaged:
        logger.warning("%s: %d damaged line(s) left out of the decisions' execution latency",
                       path, damaged)  # fmt: skip
    first: dict[str, int] = {}
    damaged = 0
    for f in frames:
        d = f.get("added_by")
        if not d:
            continue  # (a planned frame)
        t = f.get("t_camera_ns")
        if not isinstance(d, str) or not isinstance(t, int) or isinstance(t, bool):
            damaged += 1
        elif d not in first:
            first[d] = t
    if damaged:
        logger.warning("%s: %d damaged added frame(s) left out of the decisions' execution "
                       "latency", run_dir / FRAMES_FILE, damaged)  # fmt: skip
    return [(first[d] - t) / 1e6 for d, t in acked.items() if d in first and t]
