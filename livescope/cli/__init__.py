"""Command-line interface: ``livescope demo``, ``livescope profile check``, ``livescope bench``."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

__all__ = ["main"]


EXIT_INTERRUPTED = 2
"""The exit status of a command a Ctrl+C stopped (as the README says, as a user error's)."""

_TYPER_INTERRUPTED = 130
"""What typer makes of a KeyboardInterrupt while it parses or runs a command (``Exit(130)``;
no command of livescope exits with it)."""


def main() -> None:
    """Entry point of the ``livescope`` command.

    With ``--json`` a usage error (an unknown option, a missing or malformed
    value) also prints one JSON object on stdout, as every other error does;
    so does ``bench`` without it (a benchmark prints JSON with or without it).
    A command group given no command (``livescope bench``) prints its help on
    stderr and says which commands it has.

    A Ctrl+C that no command caught (one as it loads its modules, parses its
    options or starts) says ``error: interrupted`` on stderr, with its JSON on
    stdout under ``--json``, and exits 2, as a caught one does: it exited 130
    with nothing said, with a traceback, or by SIGINT.
    """
    as_json = "--json" in sys.argv[1:] or sys.argv[1:2] == ["bench"]
    try:
        try:
            code = _run(as_json)
        except KeyboardInterrupt:  # (outside typer: the commands' modules loading, this code)
            code = _TYPER_INTERRUPTED
        if code == _TYPER_INTERRUPTED:
            _say_interrupted(as_json=as_json)
            code = EXIT_INTERRUPTED
    finally:
        _forget_caught_interrupts()
    raise SystemExit(code)


def _run(as_json: bool) -> int:
    """Run the command ``sys.argv`` names; return its exit status (130: a Ctrl+C stopped it).

    Raises
    ------
    SystemExit
        on a usage error or a command group given no command (its status, 2).

    """
    from ._app import app

    _exit_if_no_command(app, sys.argv[1:], as_json=as_json)
    if not as_json:
        try:
            app()
        except SystemExit as exc:
            if exc.code == _TYPER_INTERRUPTED:
                return _TYPER_INTERRUPTED
            raise
        return 0
    import typer

    # typer >= 0.2x vendors click (its errors derive from TyperException); older typer
    # raises click's own
    usage: tuple[type[Exception], ...] = tuple(
        t for t in (getattr(typer, "TyperException", None), _click_exception()) if t is not None
    )
    try:
        code = app(standalone_mode=False)
    except typer.Abort:  # (an end of input at a prompt; typer makes a Ctrl+C Exit(130))
        print("Aborted!", file=sys.stderr)
        return 1
    except usage as exc:  # usage errors: the message on stderr, JSON on stdout
        from ._common import emit

        show = getattr(exc, "show", None)
        if show is not None:
            show()
        fmt = getattr(exc, "format_message", None)
        message = fmt() if fmt is not None else str(exc)
        emit({"ok": False, "error": message, "problems": []})
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    return code if isinstance(code, int) else 0


def _say_interrupted(*, as_json: bool) -> None:
    """Say that a Ctrl+C stopped the command, as ``fail("interrupted")`` does.

    With no import: the Ctrl+C may have come while the modules `fail` needs were
    loading.
    """
    sys.stderr.write("error: interrupted\n")
    sys.stderr.flush()
    if as_json:
        sys.stdout.write('{"ok": false, "error": "interrupted", "problems": []}\n')
        sys.stdout.flush()


def _forget_caught_interrupts() -> None:
    """Keep the exit status `main` chose after a Ctrl+C that it or a command caught.

    CPython marks a KeyboardInterrupt that leaves code run by ``exec`` or ``eval``
    of a string as never caught, however it was caught further up: a Ctrl+C while a
    module makes a dataclass or a named tuple (their methods are made so) or runs
    such code. ``python -m livescope`` then ended by SIGINT whatever its status: the
    interrupted JSON printed, and status -2 (killed), not 2. Each run of such code
    clears the mark as it starts; a KeyboardInterrupt that leaves `main` (a second
    Ctrl+C) is marked again after this, and still ends the process by SIGINT.
    """
    exec("pass")


def _click_exception() -> type[Exception] | None:
    try:
        import click
    except ImportError:
        return None
    return click.ClickException


def _exit_if_no_command(app: Any, args: list[str], *, as_json: bool) -> None:
    """Exit 2 when ``args`` name a command group of ``app`` and nothing after it, saying so.

    The group's help goes to stderr, then "missing command: one of ..." (and its
    JSON on stdout with ``as_json``). typer printed the help on stdout and, under
    ``--json`` or ``bench``, an error with no message after it.
    """
    sub = app
    for name in args:  # (a group takes no option but --help: only command names lead to one)
        sub = next((g.typer_instance for g in sub.registered_groups if g.name == name), None)
        if sub is None:
            return
    import typer
    import typer.main

    from ._common import fail

    # (the click commands made only now, to print the help: ~60 ms, too slow for every start)
    group: Any = typer.main.get_command(app)
    ctx = group.context_class(group, info_name=_program_name())
    for name in args:
        group = group.get_command(ctx, name)
        ctx = group.context_class(group, info_name=name, parent=ctx)
    with contextlib.redirect_stdout(sys.stderr):  # (typer's rich help prints on stdout)
        text = ctx.get_help()
    if text:  # (click's plain help is returned instead)
        typer.echo(text, err=True)
    names = [n for n in group.list_commands(ctx) if not group.get_command(ctx, n).hidden]
    try:
        fail(f"missing command: one of {', '.join(names)}", as_json=as_json)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None


def _program_name() -> str:
    """Say how livescope was started, as click does in a usage line (``python -m livescope``)."""
    package = getattr(sys.modules.get("__main__"), "__package__", None)
    if package:  # (python -m livescope; a script or an entry point has none)
        return f"python -m {package}"
    return os.path.basename(sys.argv[0]) or "livescope"
