"""Many replays over a Dask distributed cluster (``livescope replay --cluster``).

Each dataset is one task: `run_replay` (agent, supervised worker process,
engines, policies) in a Dask worker process, writing to its own folder
``OUT/<dataset name>/``. A task that fails is retried (its partial folder is
moved aside to ``<name>.failed-<n>`` first, so outputs never mix) and, if it
still fails, reported with its error: never silently lost (a Ctrl+C reports
the finished ones, and the others as interrupted). Without a cluster
address a local one is started: ``workers`` processes of one thread each,
with engines limited to ``threads`` threads (``LIVESCOPE_THREADS``), so that
replays run side by side instead of fighting over the cores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from livescope.bus import machine_info
from livescope.record import OME_TIFF_SUFFIXES, DatasetError
from livescope.schema import (
    ConfigError,
    LivescopeError,
    check_output_folder,
    install_command,
    safe_folder_name,
)

__all__ = ["ReplaySpec", "bench_replay_cluster", "replay_many", "run_replay_task"]

logger = logging.getLogger("livescope")


@dataclasses.dataclass(frozen=True)
class ReplaySpec:
    """One replay task: a dataset, its output folder and `run_replay`'s options."""

    dataset: str
    out: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


def run_replay_task(
    spec: ReplaySpec, *, finish: Callable[[Path, dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run one replay (in a Dask worker process); return a short summary.

    A folder left by an earlier attempt is moved to ``<out>.failed-<n>``.
    ``finish(out, summary)`` runs after the replay (e.g. to write the report).
    """
    from ._replay import run_replay

    out = Path(spec.out)
    _move_aside(out)
    t0 = time.perf_counter()
    summary = run_replay(spec.dataset, out, **spec.options)
    if finish is not None:
        finish(out, summary)
    return {
        "dataset": spec.dataset,
        "out": str(out.resolve()),
        # (a replay that ran to its end but not as planned: frames not served, decisions
        # not logged, a worker that failed; `replay_many` lists it as failed)
        "ok": summary.get("ok", True),
        "error": summary.get("error"),
        "frames_analysed": summary.get("frames_analysed"),
        "fields_analysed": summary.get("fields_analysed"),
        "decisions": summary.get("decisions"),
        "deterministic": summary.get("deterministic"),
        "replay_overhead": summary.get("replay_overhead"),
        "report": summary.get("report"),
        "warnings": summary.get("warnings", []),
        "task_s": round(time.perf_counter() - t0, 2),
        "pid": os.getpid(),
    }


def _move_aside(out: Path) -> None:
    """Move a folder an earlier attempt wrote to to ``<out>.failed-<n>`` (outputs never mix)."""
    if out.exists() and any(out.iterdir()):
        n = 1
        while out.with_name(f"{out.name}.failed-{n}").exists():
            n += 1
        shutil.move(str(out), str(out.with_name(f"{out.name}.failed-{n}")))


_BAD_INPUT = "livescope.bad_input"
"""Key of a task's result whose dataset cannot be replayed (not retried)."""


def _run_task(task: Callable[[ReplaySpec], dict[str, Any]], spec: ReplaySpec) -> dict[str, Any]:
    """Run ``task(spec)``; bad input is a result, not an exception.

    A dataset that cannot be read, or a plan, profile or engine card that does
    not fit it (`ConfigError`): another attempt would fail the same way, so
    Dask must not retry it (nor print its traceback from the worker). The
    folder of an earlier attempt is moved aside first, whatever the task.
    """
    _move_aside(Path(spec.out))
    try:
        return task(spec)
    except (DatasetError, ConfigError) as exc:
        return {_BAD_INPUT: f"{type(exc).__name__}: {exc}"}


def _warm_up() -> None:
    """Import what a replay task needs (once per worker process)."""
    import onnxruntime  # noqa: F401

    import livescope.pipeline
    import livescope.scope  # noqa: F401


_DATASET_SUFFIXES = tuple(
    f"{ome}{s}" for ome in (".ome", "") for s in (*OME_TIFF_SUFFIXES, ".zarr")
)
"""How the files and folders `livescope.record.open_dataset` reads end (longest first)."""


def _warm_up_workers(client: Any) -> None:
    """Run `_warm_up` on each of ``client``'s workers (in the caller's thread).

    Raises
    ------
    LivescopeError
        naming the first worker that cannot import livescope or what a replay
        needs (an environment without them: the error came as a traceback of
        Dask's own).

    """
    # (errors returned, not raised: one that the worker could not even unpickle the
    # function for comes back as a bare `Exception` holding the error's text)
    results = client.run(_warm_up, on_error="return")
    for worker, res in sorted(results.items()):
        if isinstance(res, BaseException):
            from livescope import __version__

            error = str(res) if type(res) is Exception else f"{type(res).__name__}: {res}"
            raise LivescopeError(
                f"the cluster's workers cannot import livescope or what a replay needs "
                f"({worker}: {error}): install livescope {__version__} (with its cluster "
                "extra) in their environment"
            )


def _close_local_cluster(local: Any) -> None:
    """Close the local cluster ``local``; a Ctrl+C meanwhile kills its workers instead.

    Closing takes seconds (each worker process is asked to stop, then waited
    for): a second Ctrl+C then must not throw away the summary of the replays
    that finished. Its worker processes are killed without waiting; the
    scheduler and nannies live in this process and end with it.
    """
    try:
        local.close()
    except KeyboardInterrupt:
        pids = [pid for nanny in dict(local.workers).values() if (pid := nanny.pid)]
        logger.error("interrupted while the local cluster closed: killing its %d worker "
                     "process(es)", len(pids))  # fmt: skip
        kill = getattr(signal, "SIGKILL", signal.SIGTERM)  # (on Windows: TerminateProcess)
        for pid in pids:
            with contextlib.suppress(OSError):  # (ended meanwhile)
                os.kill(pid, kill)


def _out_names(datasets: Sequence[str | Path]) -> list[str]:
    """One folder name per dataset (its name; repeated names get -2, -3, ...).

    A dataset's name is its file or folder name less a dataset suffix
    (``.ome.tif``, ``.zarr``, ...: `_DATASET_SUFFIXES`); other dots are kept
    ("2024.01.05 HeLa", "siRNA.v2"). A folder named by digits only is a CTC
    sequence (01, 02, ...) and is named after its dataset folder too. Names are
    compared ignoring case: "Rec" and "rec" are one folder on Windows and macOS.
    """
    names: list[str] = []
    taken: set[str] = set()
    for d in datasets:
        p = Path(d).absolute()  # (a relative "01" names its dataset folder too)
        suffix = next((s for s in _DATASET_SUFFIXES if p.name.lower().endswith(s)), "")
        # (a name no folder here can have: a leading dot, a trailing one on Windows, ...)
        base = safe_folder_name(p.name[: len(p.name) - len(suffix)] or "dataset")
        if p.is_dir() and base.isdigit():  # CTC sequences: 01, 02 of a dataset folder
            base = f"{p.parent.name}-{base}"
        name, k = base, 2
        while name.casefold() in taken:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
        taken.add(name.casefold())
    return names


def _reach_scheduler(address: str) -> None:
    """Connect to the scheduler at ``address`` once, within Dask's connect timeout.

    `distributed.Client` waits for the scheduler's handshake without a timeout:
    a server that accepts connections but is no scheduler (the dashboard's
    port, say) would keep it waiting forever.

    Raises
    ------
    OSError
        if nothing answers as a Dask scheduler in time.
    ValueError
        if ``address`` is not an address (no port, an unknown scheme).

    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import dask
    from dask.utils import parse_timedelta
    from distributed.comm.core import connect
    from distributed.security import Security

    timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s") or 30
    tls = Security().get_connection_args("client")  # (as the client: from Dask's config)

    async def handshake() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout, **tls), timeout)
        await comm.close()

    try:  # (in a thread of its own: the caller may be running an event loop, e.g. Jupyter)
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, handshake()).result()
    except TimeoutError:
        raise OSError(f"no Dask scheduler answered there within {timeout:g} s") from None


def _moved_aside(out: str) -> list[str]:
    """List the folders earlier attempts of the task writing ``out`` were moved to (in order)."""
    p, n, found = Path(out), 1, []
    while (q := p.with_name(f"{p.name}.failed-{n}")).exists():
        found.append(str(q))
        n += 1
    return found


def replay_many(
    datasets: Sequence[str | Path],
    out_dir: str | Path,
    *,
    cluster: str | None = None,
    workers: int = 2,
    threads: int = 1,
    retries: int = 2,
    task: Callable[[ReplaySpec], dict[str, Any]] = run_replay_task,
    options: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    worker_timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Replay every dataset as one task on a Dask cluster; return the summary.

    ``cluster``: a scheduler address (``tcp://host:8786``); None starts a local
    cluster of ``workers`` processes. The summary lists ``done`` and ``failed``
    tasks (dataset, error, attempts; ``earlier_attempts``: the folders failed
    attempts were moved to); ``ok`` is False when any failed. A replay that ran
    to its end but not as planned (its summary's ``ok`` false) is failed with its
    error and ``report``, not retried. A task that fails
    is tried ``retries`` more times, except one whose dataset cannot be read
    (missing, not a recording: `DatasetError`) or whose plan, profile or card
    does not fit it (`ConfigError`), which would fail again. A Ctrl+C cancels
    the tasks not finished, lists them as failed and returns the summary with
    ``interrupted`` true.

    Raises
    ------
    LivescopeError
        if dask.distributed is not installed, the output folder is in use, a
        local cluster cannot start (or ``workers`` < 1), the scheduler cannot be reached (or
        ``cluster`` is not an address), or it has no worker within
        ``worker_timeout_s``.

    """
    try:
        from distributed import CancelledError, Client, LocalCluster, as_completed
        from distributed.scheduler import KilledWorker
    except ImportError:
        raise LivescopeError(
            f"replaying on a cluster needs dask.distributed: {install_command('cluster')}"
        ) from None
    if cluster is None and workers < 1:  # (its tasks would wait for a worker for ever)
        raise LivescopeError(f"a local cluster needs at least 1 worker process, not {workers}")
    out = Path(out_dir)
    check_output_folder(out, empty=True)
    out.mkdir(parents=True, exist_ok=True)
    opts = {**(options or {}), "threads": threads}
    specs = [
        ReplaySpec(str(Path(d).resolve()), str((out / name).resolve()), opts)
        for d, name in zip(datasets, _out_names(datasets), strict=True)
    ]
    t0 = time.perf_counter()
    local = None
    done: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    interrupted = False
    try:
        try:
            if cluster is None:
                local = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    # (its scheduler serves HTTP even so, on 8787 by default: the port of any
                    # Dask dashboard already open, which it warned about)
                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                    env={"LIVESCOPE_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)},
                )
            else:
                _reach_scheduler(cluster)
            client = Client(local if local is not None else cluster)
        except (OSError, ValueError, RuntimeError) as err:  # (a timeout too): nothing listens
            # there, or a firewall; ValueError: not an address (http://, no port); RuntimeError:
            # a local cluster's workers failed to start
            raise LivescopeError(
                f"cannot reach the Dask scheduler at {cluster}: {err}"
                if cluster is not None
                else f"cannot start a local Dask cluster: {err}"
            ) from err
        with client:
            if cluster is not None:  # (tasks sent to a scheduler without workers wait for ever)
                try:
                    client.wait_for_workers(1, timeout=worker_timeout_s)
                except TimeoutError:
                    raise LivescopeError(
                        f"the Dask scheduler at {cluster} has no worker (waited "
                        f"{worker_timeout_s:g} s): start one there with `dask worker {cluster}`"
                    ) from None
            _warm_up_workers(client)  # imports and engine runtimes, before the clock starts
            t_submit = time.perf_counter()
            # keys of this call's own: a scheduler shared with others returns the result
            # of any task it holds under the same key instead of running ours
            run_id = uuid.uuid4().hex[:12]
            futures = {
                client.submit(_run_task, task, s, key=f"replay-{i}-{Path(s.out).name}-{run_id}",
                              retries=retries, pure=False): s
                for i, s in enumerate(specs)
            }  # fmt: skip
            ended: set[Any] = set()

            def fail(fut: Any, error: str, attempts: int | None, **more: Any) -> None:
                spec = futures[fut]
                failed.append({
                    "dataset": spec.dataset, "out": spec.out, "key": str(fut.key),
                    "error": error, "attempts": attempts,
                    "earlier_attempts": _moved_aside(spec.out), **more,
                })  # fmt: skip

            try:
                for fut in as_completed(futures):
                    spec = futures[fut]
                    ended.add(fut)
                    if fut.status == "finished" and _BAD_INPUT in (res := fut.result()):
                        fail(fut, res[_BAD_INPUT], 1)
                        logger.error("cannot replay %s: %s", spec.dataset, res[_BAD_INPUT])
                    elif fut.status == "finished" and res.get("ok") is False:
                        # (ran to its end, not as planned: not retried, as a run is not; its
                        # folder and report are kept, named with the error)
                        error = f"the replay did not end as planned: {res.get('error')}"
                        fail(fut, error, 1, report=res.get("report"))
                        logger.error("replay of %s: %s", spec.dataset, error)
                    elif fut.status == "finished":
                        done.append({**res, "earlier_attempts": _moved_aside(spec.out)})
                    elif fut.cancelled():  # (the scheduler lost or restarted, or it was
                        # cancelled there): its exception() is None; result() raises why
                        why = "unknown"
                        try:
                            fut.result()
                        except CancelledError as err:
                            why = str(err)
                        fail(fut, f"cancelled: {why}", None)
                        logger.error("replay of %s was cancelled: %s", spec.dataset, why)
                    elif isinstance(exc := fut.exception(), KilledWorker):  # (not `retries`:
                        # the scheduler's allowed-failures deaths, each on another worker)
                        n = exc.allowed_failures + 1
                        fail(fut, f"KilledWorker: the worker process replaying it died, "
                                  f"{n} times on {n} workers (out of memory? killed?): see the "
                                  f"workers' logs", n)  # fmt: skip
                        logger.error("replay of %s killed its worker %d times", spec.dataset, n)
                    else:
                        fail(fut, f"{type(exc).__name__}: {exc}", retries + 1)
                        logger.error("replay of %s failed: %s", spec.dataset, exc)
                    if progress is not None:
                        progress(len(done) + len(failed), len(specs))
            except KeyboardInterrupt:  # (the finished ones are kept: the caller prints them)
                interrupted = True
                rest = [f for f in futures if f not in ended]
                client.cancel(rest, force=True)
                for fut in rest:
                    fail(fut, "interrupted (Ctrl+C) before it finished", None)
                logger.error("interrupted: %d replay(s) cancelled", len(rest))
            wall = time.perf_counter() - t_submit
    finally:
        if local is not None:
            _close_local_cluster(local)
    return {
        "ok": not failed,
        "interrupted": interrupted,
        "datasets": len(specs),
        "done": sorted(done, key=lambda d: d["dataset"]),
        "failed": failed,
        "cluster": cluster or f"local ({workers} worker processes × 1 thread)",
        "engine_threads": threads,
        "wall_s": round(wall, 2),
        "total_s": round(time.perf_counter() - t0, 2),
        "out": str(out.resolve()),
    }


BENCH_MAX_SIZE = 4096
"""Largest ``size`` of `bench_replay_cluster` (a 4096² sCMOS frame; 8 datasets of larger
simulated frames would take the benchmark's memory and time, not measure replays)."""

BENCH_MARKER = ".livescope-bench"
"""The file that marks a ``keep`` folder as `bench_replay_cluster`'s: only in a folder
holding it are its ``rec-<i>`` and ``replay-<n>w`` folders removed and made again."""


def bench_replay_cluster(
    *,
    datasets: int = 8,
    timepoints: int = 12,
    size: int = 512,
    workers: Sequence[int] = (1, 2),
    threads: int = 1,
    keep: str | Path | None = None,
) -> dict[str, Any]:
    """Throughput of replays on a local Dask cluster of 1 and of 2 worker processes.

    Records ``datasets`` simulated sequences (one position, phase + DAPI,
    ``size``², ``timepoints`` time points; different seeds), then replays all of
    them at full speed with each cluster size, engines limited to ``threads``
    threads per task. Returns fields per second for each and the ratio, measured
    side by side in one run, with per-task times.

    With ``keep``, the recordings and replays stay in that folder, and a
    recording kept there by an earlier run is replayed again only if it ended
    well with the same frame size, time points and seed; any other is recorded
    again (``recordings_reused`` counts those replayed again). ``frame`` is the
    frame size read from the recordings' frame logs. A new or empty ``keep`` is
    marked with a `BENCH_MARKER` file; one that holds anything else is refused, so
    that no file of the user's is removed.

    Raises
    ------
    LivescopeError
        for a ``size`` outside 64 to `BENCH_MAX_SIZE`, a ``keep`` that is a file
        or a folder not empty and not marked (checked before anything runs), or a
        replay that failed.
    KeyboardInterrupt
        when a Ctrl+C stopped the replays.

    """
    import json
    import tempfile

    from livescope.record import read_frames
    from livescope.schema import load_profile
    from livescope.scope import demo_sequence, run_simulated

    if not 64 <= size <= BENCH_MAX_SIZE:
        raise LivescopeError(f"bench frame size must be 64 to {BENCH_MAX_SIZE} pixels, got {size}")
    if keep is not None:  # (a folder of an earlier run's recordings is reused)
        if Path(keep).exists() and not Path(keep).is_dir():
            raise LivescopeError(f"--keep {keep} is a file; give a folder (new, or of a run)")
        check_output_folder(Path(keep))
        held = sorted(p.name for p in Path(keep).iterdir()) if Path(keep).is_dir() else []
        if held and BENCH_MARKER not in held:  # (its rec-<i> and replay-<n>w would be removed)
            shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
            raise LivescopeError(
                f"--keep {keep} holds {shown} and is not a bench folder (no {BENCH_MARKER} "
                "file): give a new or empty folder, or one an earlier --keep made"
            )

    def made_as_asked(rec: Path, seed: int) -> bool:
        """Whether ``rec`` holds a recording that ended well, made as this run asks."""
        try:
            summary = json.loads((rec / "summary.json").read_text(encoding="utf-8"))
            shapes = {tuple(f["shape"]) for f in read_frames(rec)}
        except (OSError, ValueError, LivescopeError, KeyError, TypeError):
            return False  # (none, or cut short or damaged)
        return (
            isinstance(summary, dict)
            and summary.get("ok") is True
            and summary.get("frames_failed") == 0
            and (summary.get("timepoints"), summary.get("seed")) == (timepoints, seed)
            and shapes == {(size, size)}
        )

    base = Path(keep) if keep is not None else Path(tempfile.mkdtemp(prefix="livescope-bench-"))
    runs: dict[str, Any] = {}
    try:  # (from here on: a temp folder goes, whatever stops the run, recording included)
        base.mkdir(parents=True, exist_ok=True)
        (base / BENCH_MARKER).touch()  # (this folder's rec-<i>, replay-<n>w are the bench's)
        prof = load_profile("sim").with_square_sensor(size)
        seq = demo_sequence(prof, timepoints=timepoints, positions=1)
        recs = []
        reused = 0
        for i in range(datasets):
            rec = base / f"rec-{i}"
            if made_as_asked(rec, 100 + i):
                reused += 1
            else:
                shutil.rmtree(rec, ignore_errors=True)
                run_simulated(prof, seq, rec, seed=100 + i)
            recs.append(rec)
        # (the size replayed, as the recordings' frame logs have it)
        shapes = sorted({tuple(f["shape"]) for rec in recs for f in read_frames(rec)})
        for n in workers:
            out = base / f"replay-{n}w"
            shutil.rmtree(out, ignore_errors=True)
            res = replay_many(recs, out, workers=n, threads=threads)
            if res.get("interrupted"):  # (a Ctrl+C, not a failure: the CLI says "interrupted")
                raise KeyboardInterrupt
            if not res["ok"]:
                lines = "\n  ".join(
                    f"{Path(f['dataset']).name}: {f['error']}" for f in res["failed"]
                )
                raise LivescopeError(f"bench replay with {n} worker(s) failed:\n  {lines}")
            fields = sum(int(d["fields_analysed"] or 0) for d in res["done"])
            tasks = [d["task_s"] for d in res["done"]]
            runs[f"{n}_workers"] = {
                "wall_s": res["wall_s"],
                "fields": fields,
                "fields_per_s": round(fields / res["wall_s"], 3),
                "task_s_median": round(sorted(tasks)[len(tasks) // 2], 2),
                "task_s": tasks,
                "replay_overhead_median": sorted(
                    (d["replay_overhead"] or {}).get("share", 0.0) for d in res["done"]
                )[len(tasks) // 2],
            }
    finally:
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)
    result: dict[str, Any] = {
        "bench": "replay-cluster",  # (as every benchmark's JSON names itself)
        "datasets": datasets,
        "timepoints": timepoints,
        "frame": list(shapes[0]) if len(shapes) == 1 else [list(s) for s in shapes],
        "recordings_reused": reused,
        "engine_threads": threads,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "machine": machine_info(),  # (timed once the runs are done)
        **runs,
    }
    if len(workers) >= 2:
        a, b = (runs[f"{n}_workers"]["fields_per_s"] for n in workers[:2])
        result["throughput_ratio"] = round(b / a, 3) if a else None
        result["target_ratio"] = 1.6
    return result
