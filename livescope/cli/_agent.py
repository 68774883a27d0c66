"""``livescope agent`` and ``livescope worker``: the two halves of a run, as processes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from ._common import (
    JsonOpt,
    PortOpt,
    ProfileOpt,
    SeedOpt,
    VerboseOpt,
    accelerated,
    emit,
    exit_unless_as_planned,
    fail,
    finite,
    given_or_none,
    given_path,
    refuse_replay_profile,
    refuse_unknown_backend,
    setup_logging,
    stderr,
    user_errors,
)


def agent(
    plan: Annotated[Path, typer.Option(parser=given_path, help="Plan YAML (a useq MDASequence).")],
    profile: ProfileOpt = "sim",
    out: Annotated[
        Path | None,
        typer.Option(
            parser=given_path,
            help="Run folder (new, or one without an earlier run's recording, summary, "
            "decisions or results). Default: runs/agent-<date>-<time>.",
        ),
    ] = None,
    bus: Annotated[
        str, typer.Option(help="Frame bus: inline, shm (shared memory) or off.")
    ] = "shm",
    frames_endpoint: Annotated[
        str | None, typer.Option(callback=given_or_none, help="Bind frames here.")
    ] = None,
    control_endpoint: Annotated[
        str | None, typer.Option(callback=given_or_none, help="Bind bus control here.")
    ] = None,
    decisions_endpoint: Annotated[
        str | None, typer.Option(callback=given_or_none, help="Bind decisions here.")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(callback=given_or_none, help="Run id (default: generated).")
    ] = None,
    seed: SeedOpt = None,
    time_acceleration: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            callback=finite,
            help="Simulated profiles: sample seconds per wall second (default: the "
            "profile's, 600 for 'sim'; run and demo use 40).",
        ),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="How to acquire: mda (pymmcore-plus) or pycromanager (a running Micro-Manager; "
            "pycromanager's Python backend on a simulated profile)."
        ),
    ] = "mda",
    port: PortOpt = 4827,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run a plan: record every frame, stream it on the bus, apply decisions from workers.

    The bus endpoints are written to RUN/bus.json for workers to attach. Exits
    0 when the run ended as planned, 1 when it ended but not so (its summary
    says why), 2 on a usage error, a refused plan, frames that could not be
    acquired, or Ctrl+C.
    """
    setup_logging(verbose)
    from livescope.schema import check_output_folder, check_plan, load_plan, load_profile
    from livescope.scope import (
        check_micromanager_config,
        interrupted_summary,
        run_micromanager,
        run_simulated,
    )

    with user_errors(json_out):
        if bus not in ("inline", "shm", "off"):
            fail(f"--bus must be inline, shm or off, not {bus!r}", as_json=json_out)
        bound = [
            f"--{name}-endpoint"
            for name, value in (
                ("frames", frames_endpoint),
                ("control", control_endpoint),
                ("decisions", decisions_endpoint),
            )
            if value is not None
        ]
        if bus == "off" and bound:  # (they were ignored: a worker sent there waited in vain)
            fail(
                f"{' and '.join(bound)}: --bus off opens no bus to bind there; "
                "leave them out or give --bus inline or shm",
                as_json=json_out,
            )
        refuse_unknown_backend(backend, as_json=json_out)
        prof = accelerated(load_profile(profile), time_acceleration, as_json=json_out)
        refuse_replay_profile(prof, "agent", as_json=json_out)
        if seed is not None and prof.kind != "simulated":  # (a real rig's run ignored it)
            fail("--seed applies to simulated profiles only", as_json=json_out)
        sequence = load_plan(plan)
        check_plan(sequence, prof, str(plan))
        # its policies too: a worker would refuse a bad rule only once acquisition is going
        _check_policies(plan, prof)
        run_dir = out or Path("runs") / time.strftime("agent-%Y%m%d-%H%M%S")
        from livescope.pipeline._results import earlier_run
        from livescope.record import earlier_recording

        if (found := earlier_recording(run_dir) or earlier_run(run_dir)) is not None:
            fail(f"{found} already exists; choose a new --out", as_json=json_out)
        check_output_folder(run_dir)
        check_micromanager_config(prof, backend)  # (before the run folder is made)
        from livescope.bus import uses_ipc

        if bus != "off" and not (frames_endpoint and control_endpoint and decisions_endpoint):
            uses_ipc()  # a bad LIVESCOPE_TRANSPORT (it makes the endpoints not given)
        run_dir.mkdir(parents=True, exist_ok=True)
        # the plan as given (with its policies) goes beside the recording for the worker
        (run_dir / "plan.yaml").write_bytes(plan.read_bytes())
        endpoints = {
            k: v
            for k, v in (
                ("frames", frames_endpoint),
                ("control", control_endpoint),
                ("decisions", decisions_endpoint),
            )
            if v
        }

        def ready(a: Any) -> None:
            attach = f"attach with {run_dir}/bus.json" if bus != "off" else "nothing to attach"
            stderr.print(f"agent running {a.run_id}: bus {bus}, {attach}", markup=False)

        started = time.time()
        try:
            if prof.kind == "simulated":
                summary = run_simulated(
                    prof,
                    sequence,
                    run_dir,
                    seed=seed,
                    bus=bus,  # type: ignore[arg-type]
                    endpoints=endpoints,
                    run_id=run_id,
                    on_ready=ready,
                    backend=backend,
                )
            else:
                summary = run_micromanager(
                    prof, sequence, run_dir, bus=bus, endpoints=endpoints, run_id=run_id,  # type: ignore[arg-type]
                    on_ready=ready, backend=backend, port=port,
                )  # fmt: skip
        except KeyboardInterrupt:  # Ctrl+C: what was recorded is reported
            summary = interrupted_summary(run_dir, since=started)
        from livescope.view import write_report

        # a worker attached to this run may still be finishing: `livescope report RUN`
        # writes the report again with all of its results
        summary["report"] = str(write_report(run_dir).resolve())
    if json_out:
        emit(summary)
    else:
        stderr.print(
            f"{summary['frames_acquired']} frames acquired, {summary['frames_written']} recorded, "
            f"{summary['decisions_accepted']} decisions accepted, "
            f"{summary['decisions_rejected']} rejected"
        )
        typer.echo(summary["out"])
    exit_unless_as_planned(summary)


ATTACH_WAIT_S = 30.0
"""How long `livescope worker` waits for an agent to start in its run folder (its bus.json)."""


def _check_policies(plan: Path, prof: Any) -> None:
    """Refuse a plan whose policies the rig's guardrails or channels refuse (exit 2)."""
    from livescope.policy import rules_for_profile
    from livescope.schema import load_plan, plan_events, plan_sections, position_name

    rules_for_profile(
        plan_sections(plan).get("policies"),
        prof,
        source=str(plan),
        positions=map(position_name, plan_events(load_plan(plan))),
    )


ENGINE_TASKS = {"seg": ("segmentation", "nuclei-unet"),
                "stain": ("virtual_stain", "nuclei-stain"),
                "states": ("classification", "cell-state")}  # fmt: skip
"""The task of each engine a worker (or `bench engines`) runs, with a shipped engine of it."""


def check_engine_task(name: str, role: str, option: str) -> None:
    """Refuse ``name`` unless it is an engine of ``role``'s task (`ENGINE_TASKS`).

    Called before any work: an engine of another task (``--stain nuclei-unet``)
    was refused only once its engine was made, after a worker's wait or a
    benchmark's other engines had run.

    Raises
    ------
    EngineError
        naming ``option`` (how the user gave the engine), the engine and its task;
        or no engine of that name.

    """
    from livescope.inference import EngineError, find_engine
    from livescope.schema import EngineCard

    task, example = ENGINE_TASKS[role]
    try:
        folder = find_engine(name)
    except EngineError as exc:
        raise EngineError(f"{option}: {exc}") from None
    card = EngineCard.from_file(folder / "card.yaml")
    if card.task != task:
        raise EngineError(
            f"{option} {name}: it is a {card.task} engine, not a {task} engine (e.g. {example})"
        )


def _check_worker_options(
    seg: str, stain: str, states: str, backend: str | None, profile: str | None,
    plan: Path | None, *, options: tuple[str, str, str] = ("--seg", "--stain", "--states"),
) -> None:  # fmt: skip
    """Refuse an analysis worker's unknown engine, backend, profile or plan before it waits.

    ``options`` name the three engines in the messages (a config file's keys).
    """
    from livescope.inference import select_backend
    from livescope.schema import load_profile

    for name, role, option in zip((seg, stain, states), ENGINE_TASKS, options, strict=True):
        if name:
            check_engine_task(name, role, option)
    if backend is not None:
        select_backend(backend)
    if profile is not None:
        prof = load_profile(profile)
        if plan is not None:
            _check_policies(plan, prof)


def _check_worker_config(cfg: Any, config: Path, *, as_json: bool) -> None:
    """Refuse a worker config's bad values, engines, backend, profile or plan before it waits.

    As a worker's own options are checked (`_check_worker_options`), each
    message naming the config file and its key (exit 2).
    """
    from livescope.schema import ConfigError, LivescopeError

    if problems := cfg.value_problems():
        fail(
            f"worker config {config} is invalid:\n  - " + "\n  - ".join(problems),
            as_json=as_json,
            problems=problems,
        )
    try:
        _check_worker_options(
            cfg.segmenter or "", cfg.stain or "", cfg.states or "", cfg.backend, cfg.profile,
            Path(cfg.plan) if cfg.plan else None, options=("segmenter", "stain", "states"),
        )  # fmt: skip
    except LivescopeError as exc:
        listed = exc.problems if isinstance(exc, ConfigError) else None
        fail(f"worker config {config}: {exc}", as_json=as_json, problems=listed)


def _wait_for_run(run: Path, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for an agent's run in ``run``; return whether one is there.

    A run is there once its ``bus.json`` or ``summary.json`` is, or its frame log
    with its ``profile.yaml`` (an agent writes its plan, then its profile, each
    whole, before its bus; the frame log comes first).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if run.is_file() or any((run / f).exists() for f in ("bus.json", "summary.json")):
            return True
        if (run / "frames.jsonl").exists() and (run / "profile.yaml").exists():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _refuse_run_without_bus(run: Path, wait_s: float) -> None:
    """Refuse a run that is recorded but has no bus to attach to (an agent with ``--bus off``).

    Waits up to ``wait_s`` (5 s at least) for its ``bus.json`` (an agent writes its frame log and
    profile before its bus) or ``summary.json`` (the run ended). Without either,
    nothing tells a worker when the run ends (no process to ask, no run id): one
    that went on analysed the fields recorded by then, said it was done, and its
    policies failed for want of the run's id.

    Raises
    ------
    LivescopeError
        naming the folder, saying to analyse the run after it ends.

    """
    from livescope.bus import BUS_FILE
    from livescope.schema import LivescopeError

    deadline = time.monotonic() + max(wait_s, 5.0)  # (at least: the agent is writing it)
    while True:
        if any((run / f).exists() for f in (BUS_FILE, "summary.json")):
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    raise LivescopeError(
        f"{run} holds a recording but no {BUS_FILE} or summary.json: the agent runs with "
        "--bus off (no frames to attach to), or was killed without ending its run; "
        "analyse the run after it ends (`livescope worker RUN --analyse` once "
        "RUN/summary.json is there; a killed run's recording with `livescope replay RUN "
        "--out DIR`), or start the agent with a bus"
    )


def _say_waiting(run: Path) -> None:
    """Say that the worker waits for an agent in ``run``, unless its run is already there.

    Called where the wait begins, once the worker's own options have passed their
    checks: a refused option (an unknown engine) ends it at once, with no wait to announce.
    """
    if not run.is_file() and not any((run / f).exists() for f in ("bus.json", "summary.json")):
        stderr.print(
            f"waiting up to {ATTACH_WAIT_S:g} s for an agent to start in {run} (its bus.json)",
            markup=False,
        )


def _runtime_failed(exc: BaseException) -> bool:
    """Return True if ``exc`` is, or was raised from, a failure of an engine's runtime.

    A model that loaded but whose runtime failed on an input (``BackendRunError``: a GPU
    out of memory, a driver error), however the engine wrapped it (``engine NAME: ...``):
    not the user's config or input, and a restarted worker may not meet it again.
    """
    from livescope.inference._backend_base import BackendRunError

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:  # (a cycle of causes ends the walk)
        if isinstance(cause, BackendRunError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _fail_runtime(message: str, *, as_json: bool) -> NoReturn:
    """Report a failure of the engines' runtime as `fail` reports a user error; exit 75.

    With its own status (`WORKER_RUNTIME_FAILED`), not the user error's 2, which the
    supervisor takes, before the worker is ready, for a refusal it does not restart.
    """
    from livescope.pipeline._supervisor import WORKER_RUNTIME_FAILED

    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True,
                 soft_wrap=True)  # fmt: skip
    if as_json:
        emit({"ok": False, "error": message, "problems": []})
    raise typer.Exit(WORKER_RUNTIME_FAILED)


WORKER_ENGINES = {"seg": "nuclei-unet", "stain": "nuclei-stain", "states": "cell-state"}
"""The engines of an analysis worker not told others (``--seg``, ``--stain``, ``--states``)."""

WORKER_CONFIG_KEYS = {"seg": "segmenter", "stain": "stain", "states": "states", "plan": "plan",
                      "profile": "profile", "backend": "backend",
                      "nucleus_diameter_um": "nucleus_diameter_um", "maxlen": "maxlen",
                      "idle_s": "idle_s"}  # fmt: skip
"""The worker's options that its ``--config`` sets: each one's parameter, with the config's key."""


def _refuse_options_config_sets(ctx: typer.Context, config: Path, *, as_json: bool) -> None:
    """Refuse the options given beside ``--config`` that it sets (`WORKER_CONFIG_KEYS`), exit 2.

    The config's values were taken and the options ignored: ``--seg ''`` beside it ran the
    config's segmentation engine, and the worker exited 0. An option left at its default
    was not given; one the config cannot set (``--resume``) is the worker's to take.
    """
    opts = {param.name: param.opts[0] for param in ctx.command.params}
    # (by name: the enum is that of the click typer uses, its own copy since typer 0.2x)
    given = [
        (opts[name], key)
        for name, key in WORKER_CONFIG_KEYS.items()
        if (source := ctx.get_parameter_source(name)) is not None
        and source.name not in ("DEFAULT", "DEFAULT_MAP")
    ]
    if given:
        names = [option for option, _ in given]
        listed = (", ".join(names[:-1]) + f" and {names[-1]}") if len(names) > 1 else names[0]
        it = "it" if len(given) == 1 else "them"
        fail(
            f"{listed}: --config {config} sets {it} (its {', '.join(k for _, k in given)}); "
            f"put {it} in the config file, or leave out --config",
            as_json=as_json,
        )


def worker(
    ctx: typer.Context,
    run: Annotated[
        Path,
        typer.Argument(
            parser=given_path,
            metavar="RUN",
            help="Run folder of a running agent (or its bus.json).",
        ),
    ],
    policy: Annotated[str, typer.Option(help="Delivery: every (queue) or latest.")] = "every",
    maxlen: Annotated[int, typer.Option(min=1, help="Queue length for 'every'.")] = 16,
    idle_s: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Stop after this long without frames, or when the run ends (default: 5 s; "
            "with --analyse: wait for as long as the run goes on).",
        ),
    ] = None,
    analyse: Annotated[
        bool,
        typer.Option(help="Run the pipeline: engines, policies, results store, overlay."),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            help="Pipeline worker config (JSON, as the supervisor writes it). It sets --seg, "
            "--stain, --states, --plan, --profile, --backend, --nucleus-diameter-um, --maxlen "
            "and --idle-s: they are refused beside it."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Resume from RUN/results/state.json (a restarted worker).")
    ] = False,
    profile: Annotated[
        str | None,
        typer.Option(
            callback=given_or_none,
            help="Hardware profile: channels, guardrails (default: RUN/profile.yaml, the rig "
            "as the agent runs it).",
        ),
    ] = None,
    plan: Annotated[
        Path | None,
        typer.Option(parser=given_path, help="Plan file with policies (default: RUN/plan.yaml)."),
    ] = None,
    # (None: not given, which a counting worker must know; the analysis worker's defaults)
    seg: Annotated[
        str | None,
        typer.Option(help="Segmentation engine ('' for none).", show_default=WORKER_ENGINES["seg"]),
    ] = None,
    stain: Annotated[
        str | None,
        typer.Option(
            help="Virtual-staining engine ('' for none).", show_default=WORKER_ENGINES["stain"]
        ),
    ] = None,
    states: Annotated[
        str | None,
        typer.Option(
            help="Cell-state engine ('' for none).", show_default=WORKER_ENGINES["states"]
        ),
    ] = None,
    nucleus_diameter_um: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            callback=finite,
            help="Typical nucleus diameter, µm (default: the profile's).",
        ),
    ] = None,
    backend: Annotated[str | None, typer.Option(help="Engine backend (default: best).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Attach to a running agent; with --analyse run the analysis pipeline on its frames.

    Without --analyse it receives and counts frames (drops, per-hop latency);
    the analysis worker's options (--seg, --profile, --resume, ...) are refused.
    With --analyse (or --config) it is the pipeline worker: each field (the
    frames of one position and time point) gets one pass of virtual stain,
    segmentation, tracking and cell states; the plan's policies decide, the
    guardrails check, decisions go to the agent; results go to RUN/results/
    and the live overlay to RUN/overlay.json. It ends when the agent's run has
    ended and every recorded field is analysed.

    Exit status: 0 when it has ended so; 2 when it refuses its options, config or
    input (its supervisor does not restart it before it was ready: it would refuse
    again), or, once ready, when deciding or storing results failed (``deciding
    failed: ...``, a full disk; restarted from its saved state); 75 when the
    engines' runtime failed (a GPU out of memory, a driver error), which a restart
    may get past; 1 for any other failure (a traceback).
    """
    setup_logging(False)
    from livescope.bus import attach

    with user_errors(json_out):
        if policy not in ("every", "latest"):
            fail(f"--policy must be every or latest, not {policy!r}", as_json=json_out)
        if resume and not (analyse or config is not None):  # (counting frames ignored it)
            fail("--resume is for the analysis worker: give --analyse too", as_json=json_out)
        if not (analyse or config is not None):  # (ignored too, even bad values, exit 0)
            given = [
                option
                for option, value in (
                    ("--seg", seg), ("--stain", stain), ("--states", states), ("--plan", plan),
                    ("--profile", profile), ("--backend", backend),
                    ("--nucleus-diameter-um", nucleus_diameter_um),
                )
                if value is not None
            ]  # fmt: skip
            if given:
                fail(
                    f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for the analysis "
                    "worker: give --analyse too",
                    as_json=json_out,
                )
        if config is not None:  # (they were ignored: the config's values were taken)
            _refuse_options_config_sets(ctx, config, as_json=json_out)
        # (a folder under a file can never be made: no agent will start there)
        above = next((p for p in run.parents if p.exists()), None)
        if above is not None and not above.is_dir():
            fail(f"{run}: {above} is a file, so no agent can start a run there", as_json=json_out)
        if analyse or config is not None:
            from livescope.bus import BUS_FILE
            from livescope.pipeline import RESULTS_DIR, PipelineWorker, WorkerConfig
            from livescope.pipeline._results import earlier_results
            from livescope.pipeline._worker import no_agent_error
            from livescope.schema import LivescopeError

            if run.name == BUS_FILE and not run.is_dir():  # (the run's bus.json: its folder)
                run = run.parent

            if policy != "every":  # (the analysis worker takes every frame of every field)
                fail("--policy is for counting frames: the analysis worker takes every frame",
                     as_json=json_out)  # fmt: skip
            seg = WORKER_ENGINES["seg"] if seg is None else seg
            stain = WORKER_ENGINES["stain"] if stain is None else stain
            states = WORKER_ENGINES["states"] if states is None else states
            if config is None:  # its own options now, not once an agent has started
                _check_worker_options(seg, stain, states, backend, profile, plan)
                if maxlen < 16:
                    stderr.print(f"--maxlen {maxlen}: the analysis worker queues at least 16")

            if config is not None:
                try:
                    cfg = WorkerConfig.from_json(config.read_text(encoding="utf-8-sig"))
                except (OSError, ValueError, TypeError, LivescopeError) as exc:
                    fail(f"cannot read worker config {config}: {exc}", as_json=json_out)
                _check_worker_config(cfg, config, as_json=json_out)
                _say_waiting(run)
            else:
                _say_waiting(run)
                # the run's plan (its policies) and profile are read when the worker is
                # made: a worker started before its agent waits for them first (a resumed
                # one too: it ran with the shipped 'sim' profile and no policies)
                # (one whose results hold a state to resume from had its run: it says what
                # is wrong with that state at once, not after a wait)
                waited_from = time.monotonic()
                if not (resume and earlier_results(run / RESULTS_DIR)) and not _wait_for_run(
                    run, ATTACH_WAIT_S
                ):
                    raise no_agent_error(run, ATTACH_WAIT_S)
                if (run / "frames.jsonl").exists():
                    _refuse_run_without_bus(run, ATTACH_WAIT_S - (time.monotonic() - waited_from))
                if profile is None:
                    profile = str((run.parent if run.is_file() else run) / "profile.yaml")
                    if not Path(profile).is_file():
                        stderr.print(
                            f"no profile.yaml in {run}: using the shipped 'sim' profile "
                            "(give the rig's with --profile)",
                            markup=False,
                        )
                        profile = "sim"
                cfg = WorkerConfig(
                    profile=profile,
                    segmenter=seg or None,
                    stain=stain or None,
                    states=states or None,
                    backend=backend,
                    nucleus_diameter_um=nucleus_diameter_um,
                    plan=str(plan) if plan else None,
                    maxlen=max(maxlen, 16),
                    idle_s=idle_s,
                )
            try:
                work = PipelineWorker(run, cfg, resume=resume)
                result = work.run(attach_timeout_s=ATTACH_WAIT_S)
            except LivescopeError as exc:
                if not _runtime_failed(exc):
                    raise  # (its input or config: a user error, status 2)
                _fail_runtime(str(exc), as_json=json_out)
        else:
            _say_waiting(run)
            deadline = time.monotonic() + ATTACH_WAIT_S
            while (
                not (run / "bus.json").exists() and not run.is_file()
                and time.monotonic() < deadline
            ):  # fmt: skip
                if (run / "summary.json").exists():
                    fail(
                        f"the run in {run} has finished: there are no frames to count "
                        "(`livescope worker --analyse` analyses what it recorded)",
                        as_json=json_out,
                    )
                time.sleep(0.1)
            # frames only: counting needs no decision channel (nor its version)
            with attach(run, policy=policy, maxlen=maxlen, decisions=False) as link:  # type: ignore[arg-type]
                wait_s = 5.0 if idle_s is None else idle_s  # (0: only frames already waiting)
                idle_since = time.monotonic()
                while True:
                    frame = link.frames.get(timeout=min(wait_s, 0.1))
                    if frame is not None:
                        frame.release()
                        idle_since = time.monotonic()
                    elif link.frames.ended and not link.frames.pending():
                        break  # the run's end came: no frame after it (its lost ones counted)
                    elif time.monotonic() - idle_since >= wait_s:
                        break
                stats = link.frames.stats()
            result = {"ok": True, "run_id": link.run_id, **stats}
    if json_out:
        emit(result)
    else:
        stderr.print(json.dumps(result, indent=1), markup=False)
