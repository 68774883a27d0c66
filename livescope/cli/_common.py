"""Shared plumbing of the commands: JSON output, logging and error reporting."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from livescope.schema import ConfigError, LivescopeError, format_validation_error, json_safe

__all__ = [
    "BenchJsonOpt",
    "JsonOpt",
    "PortOpt",
    "ProfileOpt",
    "SeedOpt",
    "VerboseOpt",
    "emit",
    "exit_if_interrupted",
    "exit_unless_as_planned",
    "fail",
    "finite",
    "given",
    "given_path",
    "positive_size",
    "progress_bar",
    "refuse_unknown_backend",
    "report",
    "setup_logging",
    "shared_closeups",
    "stderr",
    "user_errors",
]

stderr = Console(stderr=True, soft_wrap=True)

EXIT_USER_ERROR = 2

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
"""The ``--json`` option every command takes."""

VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages to stderr.")]
"""The ``--verbose`` option of the long-running commands."""

BenchJsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Benchmarks always print one JSON object on stdout; the flag is accepted for scripts.",
        show_default=False,
    ),
]
"""``--json`` of the benchmarks, whose output is JSON either way (errors too)."""


def _at_most_the_cores(value: int | None) -> int | None:
    """Refuse more engine threads than this PC has cores (a callback).

    ``--threads 100000`` started a worker of some 32,000 threads, which used up the
    machine's threads (every later thread start failed, "Resource temporarily
    unavailable") and ran on after its replay had stopped.
    """
    cores = os.cpu_count() or 1
    if value is not None and value > cores:
        raise typer.BadParameter(f"{value} is more than this PC's {cores} cores")
    return value


ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        callback=_at_most_the_cores,
        help="CPU threads per engine in the worker, at most the cores (default: half of them).",
    ),
]
"""``--threads`` of the commands that start a pipeline worker."""


def finite(value: float | None) -> float | None:
    """Refuse an infinite float option (a callback; its ``min`` refuses NaN, not infinity).

    Raises
    ------
    typer.BadParameter
        a usage error (exit 2) that names the option.

    """
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, not {value}")
    return value


def positive_size(option: str, value: float | None, what: str, unit: str) -> None:
    """Refuse a size option that is not a finite number above 0, naming it (before any work).

    A check in the command, not a callback, so that ``--json`` gets its JSON
    error: ``--pixel-size -1`` was refused by the engine, once loaded, as an
    image's fault, and ``--diameter inf`` as "must be > 0 px, got inf".

    Raises
    ------
    LivescopeError
        naming ``option`` and its value.

    """
    if value is None:
        return
    if not math.isfinite(value):
        raise LivescopeError(f"{option} {value}: must be a finite number ({what}, {unit})")
    if value <= 0:
        raise LivescopeError(f"{option} {value:g}: {what} must be > 0 {unit}")


def given(value: str) -> str:
    """Refuse an empty text option (a callback), e.g. ``--profile ""`` from an unset variable.

    Raises
    ------
    typer.BadParameter
        a usage error (exit 2) that names the option.

    """
    if not value.strip():
        raise typer.BadParameter("is empty")
    return value


def given_or_none(value: str | None) -> str | None:
    """Refuse an empty optional text option (a callback; unset, it is None).

    An empty ``--run-id ""`` or endpoint (an unset variable in a script) was
    taken for "not given": the run got another id, the bus a default endpoint.
    """
    return None if value is None else given(value)


def given_path(value: str) -> Path:
    """Parse a path option or argument, refusing an empty one (a parser).

    ``Path("")`` is the current folder: an empty ``--out ""`` (an unset
    variable in a script) would put a run's files there, an empty plan or
    profile would be reported as the folder ".".

    Raises
    ------
    typer.BadParameter
        a usage error (exit 2) that names the option.

    """
    return Path(given(value))


ProfileOpt = Annotated[
    str, typer.Option(callback=given, help="Hardware profile: a shipped name or a YAML path.")
]
"""``--profile`` of the commands that run or check a plan on a rig (`agent`, `demo`,
`run`, `plan check`)."""

SeedOpt = Annotated[int | None, typer.Option(min=0, help="Simulation seed (simulated profiles).")]
"""``--seed`` of `agent` and `run`."""

PortOpt = Annotated[
    int, typer.Option(min=1, max=65535, help="pycromanager: Micro-Manager's server port.")
]
"""``--port`` of the commands that can acquire with pycromanager (`agent`, `run`)."""


def refuse_unknown_backend(backend: str, *, as_json: bool) -> None:
    """Exit 2 with a clear message when ``backend`` is no acquisition backend (``--backend``)."""
    from livescope.scope import BACKENDS

    if backend not in BACKENDS:
        fail(f"unknown acquisition backend {backend!r}; use mda or pycromanager", as_json=as_json)


def accelerated(profile: Any, time_acceleration: float | None, *, as_json: bool) -> Any:
    """Return ``profile`` with its simulation's ``time_acceleration`` set (None: as it is).

    A clear error (exit 2) when the profile is not a simulated one.
    """
    if time_acceleration is None:
        return profile
    if profile.simulation is None:
        fail("--time-acceleration applies to simulated profiles only", as_json=as_json)
    sim = profile.simulation.replace(time_acceleration=time_acceleration)
    return profile.replace(simulation=sim.model_dump())


def refuse_replay_profile(profile: Any, command: str, *, as_json: bool) -> None:
    """Exit 2 with a clear message when ``profile`` is a replay profile (no rig to drive)."""
    if profile.kind == "replay":
        fail(
            f"profile {profile.name!r} is kind 'replay': it serves recorded data to "
            f"`livescope replay`; `livescope {command}` drives a simulated or micromanager rig "
            "(e.g. --profile sim)",
            as_json=as_json,
        )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record to ``sys.stderr`` as it is when the record is logged.

    A handler holding the stream it was made with writes to a closed file once
    whoever called the command in-process (a test runner, a notebook, an
    application embedding livescope) has put its own stderr back.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stderr


def setup_logging(verbose: bool = False) -> None:
    """Log livescope to stderr (stdout is kept for results and ``--json``)."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("livescope")
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.propagate = False


def emit(obj: dict[str, Any]) -> None:
    """Print one JSON object on stdout (strict JSON: a NaN or infinity is written as null)."""
    sys.stdout.write(json.dumps(json_safe(obj), default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


def shared_closeups(decisions: dict[str, Any]) -> str:
    """Say how many firings shared another's close-up, made or not ('' when none did)."""
    parts = []
    if n := decisions.get("shared"):
        parts.append(f"{n} firing(s) shared a close-up")
    if n := decisions.get("shared_not_imaged"):
        parts.append(f"{n} shared one that was refused or not sent")
    return ", ".join(parts)


def exit_if_interrupted(summary: dict[str, Any]) -> None:
    """Exit 2, saying so, after printing the summary of a run a Ctrl+C stopped.

    A Ctrl+C that came as the run ended, once every frame was recorded (the
    summary's ``interrupted_while_closing``, its ``interrupted`` false), exits 2
    too: it exited 0, as if none had come.
    """
    if summary.get("interrupted"):
        stderr.print("interrupted: the run stopped early (its report covers what was acquired)")
        raise typer.Exit(EXIT_USER_ERROR)
    if summary.get("interrupted_while_closing"):
        stderr.print("interrupted: the Ctrl+C came as the run ended (every frame was recorded)")
        raise typer.Exit(EXIT_USER_ERROR)


def exit_unless_as_planned(summary: dict[str, Any], what: str = "run") -> None:
    """Exit as a printed run summary says: 2 if a Ctrl+C stopped it, 1 if not as planned.

    ``ok`` false (e.g. decisions not logged) is said with its error; it exited 0,
    and a script went on as if all were well.
    """
    exit_if_interrupted(summary)
    if summary.get("ok") is False:
        stderr.print(
            f"error: the {what} did not end as planned: {summary.get('error')}",
            highlight=False, markup=False,
        )  # fmt: skip
        raise typer.Exit(1)


def report(obj: dict[str, Any], json_out: bool) -> None:
    """Print a command's result: JSON on stdout, else for people on stderr.

    For people it is YAML: one key per line, nested ones indented (a dict's
    repr on one wrapped line was hard to read).
    """
    if json_out:
        emit(obj)
        return
    import yaml

    plain = json.loads(json.dumps(json_safe(obj), default=str))
    text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, width=100)
    stderr.print(text.rstrip(), highlight=False, markup=False)


def fail(message: str, *, as_json: bool, problems: list[str] | None = None) -> NoReturn:
    """Report a user error (stderr, and one JSON object on stdout with ``--json``) and exit 2."""
    # (escaped: a path or value in the message may hold "[...]", which rich would eat or refuse)
    stderr.print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True
    )
    if as_json:
        emit({"ok": False, "error": message, "problems": problems or []})
    raise typer.Exit(EXIT_USER_ERROR)


@contextmanager
def user_errors(as_json: bool) -> Iterator[None]:
    """Turn livescope's and pydantic's errors into a clear message and exit code 2.

    So are file-system errors that name a path (a folder that cannot be made,
    a file that cannot be read or written); other errors keep their traceback.
    """
    try:
        yield
    except ConfigError as exc:
        fail(str(exc), as_json=as_json, problems=exc.problems)
    except ValidationError as exc:
        problems = format_validation_error(exc)
        fail("invalid input:\n  - " + "\n  - ".join(problems), as_json=as_json, problems=problems)
    except LivescopeError as exc:
        fail(str(exc), as_json=as_json)
    except KeyboardInterrupt:
        fail("interrupted", as_json=as_json)
    except OSError as exc:  # a file or folder the system refused, e.g. an --out it cannot make
        if exc.filename is None:
            raise
        logging.getLogger("livescope").debug("file system error", exc_info=True)
        where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
        fail(f"cannot use {where}: {exc.strerror or exc}", as_json=as_json)


@contextmanager
def progress_bar(description: str, *, json_out: bool) -> Iterator[tuple[Any, Any]]:
    """Show a transient progress bar on stderr (off with ``--json`` or no terminal): (bar, task)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        disable=json_out or not stderr.is_terminal,
    ) as bar:
        yield bar, bar.add_task(description, total=None)
