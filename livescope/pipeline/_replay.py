"""Replay a recorded dataset through the unchanged pipeline (``livescope replay``).

`run_replay` opens the dataset (`livescope.record.open_dataset`: livescope
recordings, NDTiff, OME-TIFF, OME-Zarr, CTC folders), serves its frames through
a replay camera on a real ``UniMMCore`` (`livescope.scope.run_replay_scope`)
to the scope agent, and runs the supervised pipeline worker and the plan's
policies exactly as `run_adaptive` does for a live run. Decisions are logged as
what-if. At ``speed=None`` (as fast as the pipeline goes) each time point waits
for the worker to finish the previous ones, so every replay of a recording
analyses the same fields in the same order and makes the same decisions.

What is replayed:

* a livescope recording replays its own ``plan.yaml`` (frames it lacks are
  skipped), with the profile and worker settings it was recorded with, and its
  policies unless ``plan`` gives others; the plan's and its rules' channels
  named as ``channel_map`` maps them (`map_channels`);
* any other dataset gets a plan asking for each of its frames (positions,
  time points, channels, z), on the ``replay`` profile, with the policies of
  ``plan`` if given (else analysis only).

A recording of the simulated microscope keeps the simulation's ground truth:
the replay's mitosis triggers and tracks are scored against it with the
simulation the recording was made with, whatever profile the replay runs on
(``trigger_precision``, ``trigger_recall``, ``evaluation``, ``tracking``), so
that a rule can be tried offline (``plan``) and compared with the live run's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import useq

from livescope.bus import uses_ipc
from livescope.policy import rules_for_profile
from livescope.record import FRAMES_FILE, Dataset, DatasetError, open_dataset
from livescope.schema import (
    HardwareProfile,
    LivescopeError,
    Objective,
    check_output_folder,
    check_plan,
    load_plan,
    load_profile,
    plan_events,
    plan_sections,
    read_jsonl,
    write_atomic,
)
from livescope.scope import (
    ReplaySource,
    ScopeAgent,
    check_gate_timeout,
    check_speed,
    map_channels,
    position_name,
    replay_sequence,
    run_replay_scope,
)

from ._config import PLAN_FILE, RESULTS_DIR, WorkerConfig
from ._demo import run_adaptive

__all__ = ["replay_overhead", "run_replay"]

logger = logging.getLogger("livescope")


def _recording_profile(ds: Dataset) -> HardwareProfile:
    """Return the profile a livescope recording was made with (else the replay profile)."""
    saved = ds.path / "profile.yaml"
    if saved.is_file():
        return load_profile(saved)
    summary = ds.path / "summary.json"
    if summary.is_file():
        name = json.loads(summary.read_text(encoding="utf-8")).get("profile")
        if name:
            try:
                return load_profile(str(name))
            except LivescopeError:
                pass
    return load_profile("replay")


def fit_to_recording(profile: HardwareProfile, ds: Dataset) -> HardwareProfile:
    """Return ``profile`` with the recording's frame shape and pixel size, if it is a replay one.

    The ``replay`` profile's camera (1024² px) and objective (1 µm/px) are
    placeholders: left as they are, the guardrails would judge which positions'
    fields overlap, and the worker warm up and the bus be sized, for a frame the
    recording does not have. A rig's profile is kept as given (a warning in
    ``ds.warnings`` when its default objective's pixel size, at a binning of
    1-4, is not the recording's).
    """
    if not ds.frames:
        return profile
    pixel = next((f.pixel_size_um for f in ds.frames if f.pixel_size_um), None)
    if profile.kind != "replay":
        if pixel and not _binning(profile.objective, pixel):
            others = [(o.name, b) for o in profile.objectives if (b := _binning(o, pixel))]
            hint = (
                f" (objective {others[0][0]!r} at binning {others[0][1]})"
                if len(others) == 1
                else ""
            )
            ds.warnings.append(
                f"{ds.path}: its pixel size is {pixel:g} µm{hint}, profile {profile.name!r}'s "
                f"objective {profile.default_objective!r} gives "
                f"{profile.objective.pixel_size_um:g} µm at binning 1: the guardrails judge "
                "fields and moves at the profile's"
            )
        return profile
    objectives = [
        o.replace(pixel_size_um=pixel) if pixel and o.name == profile.default_objective else o
        for o in profile.objectives
    ]
    return profile.replace(
        camera=profile.camera.replace(sensor_shape_px=ds.frames[0].shape).model_dump(),
        objectives=[o.model_dump() for o in objectives],
    )


def _binning(objective: Objective, pixel_um: float) -> int | None:
    """Return the binning (1-4) at which ``objective`` gives a frame's pixel size, if any."""
    return next((b for b in (1, 2, 3, 4) if objective.gives(pixel_um, b)), None)


def _said(renamed: Mapping[str, str]) -> str:
    """``{"Phase": "DAPI"}`` → ``"Phase → DAPI"``."""
    return ", ".join(f"{k} → {v}" for k, v in renamed.items())


def _plan_renamed(
    sequence: useq.MDASequence, profile: HardwareProfile, renamed: Mapping[str, str]
) -> useq.MDASequence:
    """Return a recorded plan whose channels are named as ``renamed`` maps them.

    ``renamed``: {recorded channel: profile channel} (`map_channels`, those it
    renames). The plan's channels and those of its positions' own sequences
    take the profile channel's name, their exposures held to its preset's
    limits (as `replay_sequence` holds a dataset's); an event of channel DAPI
    after ``--channel-map Phase=DAPI`` is then served the recorded Phase frame.
    The plan itself when nothing is renamed.
    """
    if not renamed:
        return sequence

    def fitted(channels: Sequence[useq.Channel]) -> list[useq.Channel]:
        out = []
        for ch in channels:
            if (name := renamed.get(ch.config)) is None:
                out.append(ch)
                continue
            preset = profile.channels.get(name)
            exposure = None if ch.exposure is None else preset.clamp_exposure(ch.exposure)
            out.append(ch.replace(config=name, exposure=exposure))
        return out

    positions = [
        p if p.sequence is None else p.replace(sequence=p.sequence.replace(
            channels=fitted(p.sequence.channels)))
        for p in sequence.stage_positions
    ]  # fmt: skip
    return sequence.replace(channels=fitted(sequence.channels), stage_positions=positions)


def _rules_renamed(policies: Any, renamed: Mapping[str, str], warnings: list[str]) -> Any:
    """Return a recorded plan's ``policies:`` with their channels named as ``renamed`` maps them.

    The channels (and exposures) of each declared rule's ``acquire``; a Python
    policy's settings are passed as recorded (a warning in ``warnings``: which
    of them name channels is its own affair). Anything malformed is left as it
    is, for `rules_for_profile` to say what is wrong.
    """
    if not renamed or not isinstance(policies, list):
        return policies

    def name(ch: Any) -> Any:
        return renamed.get(ch, ch) if isinstance(ch, str) else ch

    out: list[Any] = []
    for rule in policies:
        if isinstance(rule, dict) and "python" in rule:
            warnings.append(
                f"policy {rule.get('name')!r} is a Python policy: its settings are passed as "
                f"recorded, the channels they name not replayed as {_said(renamed)}"
            )
        do = rule.get("do") if isinstance(rule, dict) else None
        if not isinstance(do, dict) or not isinstance(given := do.get("acquire"), dict):
            out.append(rule)
            continue
        acquire = dict(given)
        chans = acquire.get("channels")
        if isinstance(chans, list | tuple):
            acquire["channels"] = [name(c) for c in chans]
        elif isinstance(chans, str):
            acquire["channels"] = name(chans)
        if isinstance(ms := acquire.get("exposure_ms"), dict):
            acquire["exposure_ms"] = {name(k): v for k, v in ms.items()}
        out.append({**rule, "do": {**do, "acquire": acquire}})
    return out


def replay_policies(plan: str | Path) -> Any:
    """Return the ``policies:`` of a replay's ``--plan`` (the only part of it a replay takes).

    Raises
    ------
    LivescopeError
        if the plan is malformed (a misspelt key is an error, not ignored) or has
        no ``policies:`` at all.

    """
    load_plan(plan)
    sections = plan_sections(plan)
    if "policies" not in sections:
        raise LivescopeError(
            f"{plan} has no policies: a replay takes only the policies of --plan (the "
            "frames it serves are the recording's); add the rules to try, or "
            "'policies: []' to replay with none"
        )
    return sections["policies"]


def run_replay(
    dataset: str | Path,
    out_dir: str | Path,
    *,
    plan: str | Path | None = None,
    profile: HardwareProfile | str | None = None,
    speed: float | None = None,
    channel_map: Mapping[str, str] | None = None,
    channel: str = "Fluo",
    interval_s: float = 1.0,
    pixel_size_um: float | None = None,
    nucleus_diameter_um: float | None = None,
    worker: WorkerConfig | None = None,
    threads: int | None = None,
    gate_timeout_s: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Replay ``dataset`` with the pipeline worker and policies in the loop; return the summary.

    ``speed``: recorded seconds per wall second (``1.0`` real time), None as fast
    as the pipeline goes (and reproducible). ``channel``, ``interval_s`` and
    ``pixel_size_um`` describe datasets that do not record them (CTC folders).
    ``nucleus_diameter_um`` tells the segmentation engine the nuclei's size
    (default: the profile's simulation, else the engine's own scale).

    Raises
    ------
    DatasetError
        naming the file and the problem when the dataset cannot be replayed.
    LivescopeError
        when the plan, profile or channels do not fit, or the worker fails.

    """
    check_speed(speed)
    check_gate_timeout(gate_timeout_s)
    out = Path(out_dir)
    check_output_folder(out, empty=True)
    uses_ipc()  # a bad LIVESCOPE_TRANSPORT: before anything is written
    ds = open_dataset(dataset, channel=channel, interval_s=interval_s, pixel_size_um=pixel_size_um)
    writing = False  # (in `out`: what a Ctrl+C before the first frame removes)
    made: Path | None = None
    try:
        # frames one camera cannot serve: before `out` is made (it was refused half written)
        ReplaySource.check_frames(ds)
        own = ds.format == "livescope"
        if isinstance(profile, str):
            profile = load_profile(profile)
        # (read once: the profile to run on by default, and the ground truth's simulation)
        recorded = _recording_profile(ds) if own and profile is None else None
        prof = fit_to_recording(profile or recorded or load_profile("replay"), ds)
        channels = map_channels(ds, prof, channel_map)
        recorded_plan = ds.path / PLAN_FILE
        source = "in use"
        # (the recorded plan names the recorded channels: renamed as they are served, or its
        # events asked for a channel the profile lacks, or another channel's frames)
        renamed = {k: v for k, v in channels.items() if k != v}
        if own and recorded_plan.is_file():
            sequence = _plan_renamed(load_plan(recorded_plan, recorded=True), prof, renamed)
            source = str(recorded_plan) + (
                f" (channels replayed as {_said(renamed)})" if renamed else ""
            )
        else:
            sequence = replay_sequence(ds, prof, channels)
        policies: Any = None
        if plan is not None:
            policies = replay_policies(plan)
        elif own and recorded_plan.is_file():
            policies = _rules_renamed(
                plan_sections(recorded_plan).get("policies"), renamed, ds.warnings
            )
        # bad rules are reported now, not by a worker that cannot start
        rules_for_profile(
            policies,
            prof,
            source=str(plan or recorded_plan),
            positions=map(position_name, plan_events(sequence)),
        )
        # and a plan the profile cannot run, before anything is written in `out` (the agent
        # refused it once the plan and profile were there: a rerun found `out` not empty)
        check_plan(sequence, prof, source, light_budget=False, autofocus_device=True, recorded=True)
        cfg = worker
        saved_cfg = ds.path / RESULTS_DIR / "worker-config.json"
        if cfg is None and own and saved_cfg.is_file():
            try:
                cfg = WorkerConfig.from_json(saved_cfg.read_text(encoding="utf-8-sig"))
            except (LivescopeError, ValueError) as exc:  # (said without the file's name)
                raise DatasetError(
                    f"{saved_cfg}: {exc} (edit it, or move it aside to replay with the "
                    "default worker settings)"
                ) from None
        cfg = dataclasses.replace(cfg or WorkerConfig(stain_every=5), plan=None, idle_s=None)
        if speed is None:  # (whether a later time point was queued yet is the host's timing:
            # a stain left out to catch up made the same replay's results differ)
            cfg = dataclasses.replace(cfg, skip_stain_when_behind=False)
        if nucleus_diameter_um is not None:
            cfg = dataclasses.replace(cfg, nucleus_diameter_um=nucleus_diameter_um)
        # no pixel size: close-ups and recentring move by the one taken, which is the replay
        # profile's placeholder (a rig's profile, chosen with --profile, gives its objective's)
        if not any(f.pixel_size_um for f in ds.frames) and (
            prof.kind == "replay" or nucleus_diameter_um is not None
        ):
            unused = (
                f"; the nucleus diameter ({nucleus_diameter_um:g} µm) cannot be turned into "
                "pixels and is not used"
                if nucleus_diameter_um is not None
                else ""
            )
            ds.warnings.append(
                f"{ds.path}: the dataset states no pixel size: taken as "
                f"{prof.objective.pixel_size_um:g} µm per pixel (the objective of profile "
                f"{prof.name!r}){unused}; pass --pixel-size"
            )
        made, writing = _first_made(out), True
        out.mkdir(parents=True, exist_ok=True)
        (out / "source.json").write_text(
            json.dumps(
                {
                    "dataset": str(ds.path.resolve()),
                    "format": ds.format,
                    "channels": channels,
                    "frames": len(ds.frames),
                    "plan": str(plan) if plan is not None else None,
                    "profile": prof.name,
                    "speed": "max" if speed is None else speed,
                    "channel_map": dict(channel_map or {}),
                },
                indent=1,
            ),
            encoding="utf-8",
        )

        def acquire(on_ready: Callable[[ScopeAgent], None]) -> dict[str, Any]:
            return run_replay_scope(
                ds, prof, sequence, out, channels=channels, speed=speed, gate=speed is None,
                gate_timeout_s=gate_timeout_s, progress=progress, bus="shm", on_ready=on_ready,
            )  # fmt: skip

        # a simulated recording's ground truth scores the replay's triggers and tracks
        # too (the replay serves its time points with their sample times), with the
        # simulation it was recorded with, whatever profile the replay runs on
        truth: tuple[Path, HardwareProfile] | None = None
        if own and (ds.path / "ground_truth" / "lineage.json").is_file():
            recorded = recorded or _recording_profile(ds)
            if recorded.simulation is not None:
                truth = (ds.path / "ground_truth", recorded)
            else:
                ds.warnings.append(
                    f"{ds.path} holds a simulation's ground truth, but its profile "
                    f"{recorded.name!r} is not simulated: the replay is not scored"
                )
        t0 = time.perf_counter()
        summary = run_adaptive(
            prof, sequence, out, policies=policies, worker=cfg, threads=threads,
            progress=progress, acquire=acquire, ground_truth=truth,
        )  # fmt: skip
        wall = time.perf_counter() - t0
    except KeyboardInterrupt:
        if writing:
            _remove_unrecorded(out, made)
        raise
    finally:
        ds.close()
    overhead = replay_overhead(out)
    # every decision the replay agent accepts is a what-if (`ReplayAgent`)
    what_if = {"what_if": summary["decisions_accepted"],
               "what_if_frames_served": summary.pop("what_if_served")}  # fmt: skip
    summary.update(
        {
            "replay": True,
            "dataset": str(ds.path.resolve()),
            "decisions": {**summary["decisions"], **what_if},
            "deterministic": bool(
                speed is None
                and not summary.get("interrupted")  # (a Ctrl+C: fewer frames served)
                and summary.get("gate_timeouts", 0) == 0
                and summary.get("gate_waits_skipped", 0) == 0  # (each follows a timeout)
                and summary.get("fields_analysed_late", 0) == 0
                and summary.get("worker_restarts", 0) == 0
                and summary.get("stains_skipped_behind", 0) == 0
            ),
            "replay_overhead": overhead,
            "wall_s": round(wall, 2),
            "warnings": list(dict.fromkeys([*summary.get("warnings", []), *ds.warnings])),
        }
    )
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def _first_made(out: Path) -> Path | None:
    """Return the first folder ``out.mkdir(parents=True)`` makes (None: ``out`` is there)."""
    if out.is_dir():
        return None
    made = out.absolute()
    while not made.parent.exists() and made.parent != made:
        made = made.parent
    return made


def _remove_unrecorded(out: Path, made: Path | None) -> None:
    """Remove what a replay stopped before its first frame was recorded wrote (a Ctrl+C).

    Its worker starts for many seconds before the first frame: left there, the
    empty recording, logs and worker lock made a rerun into ``out`` "not empty".
    ``made``: the folder the replay made (`_first_made`), removed whole; None
    when ``out`` was there (empty, `check_output_folder`): what is in it goes.
    What was recorded is kept.
    """
    frames = out / FRAMES_FILE
    if frames.is_file() and frames.stat().st_size > 0:
        return
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
    else:
        for p in out.iterdir() if out.is_dir() else ():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    logger.warning("interrupted before the first frame was recorded: what the replay wrote "
                   "is removed, %s can be used again", out)  # fmt: skip


def replay_overhead(run_dir: str | Path) -> dict[str, float] | None:
    """Share of the analysis wall time in which the worker waited for the replay.

    From the worker's ``results/latency.jsonl``: the span from the first field's
    analysis start to the last field's decisions, minus the time the worker spent
    on fields (engines, policies, decisions), over that span. None when fewer
    than two fields were analysed.
    """
    path = Path(run_dir) / RESULTS_DIR / "latency.jsonl"
    spans: list[tuple[int, int]] = []
    for rec in read_jsonl(path):
        a, b = int(rec.get("t_start_ns") or 0), int(rec.get("t_done_ns") or 0)
        if a and b >= a:
            spans.append((a, b))
    if len(spans) < 2:
        return None
    first = min(a for a, _ in spans)
    last = max(b for _, b in spans)
    busy = 0
    cursor = first
    for a, b in sorted(spans):  # union of the busy intervals
        a = max(a, cursor)
        if b > a:
            busy += b - a
            cursor = b
    wall = last - first
    idle = max(0, wall - busy)
    return {
        "share": round(idle / wall, 4) if wall else 0.0,
        "idle_s": round(idle / 1e9, 3),
        "analysis_wall_s": round(wall / 1e9, 3),
        "fields": len(spans),
    }
