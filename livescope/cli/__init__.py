"""Command-line interface: ``livescope demo``, ``livescope profile check``, ``livescope bench``."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``livescope`` command.

    With ``--json`` a usage error (an unknown option, a missing or malformed
    value) also prints one JSON object on stdout, as every other error does;
    so does ``bench`` without it (a benchmark prints JSON with or without it).
    A command group given no command (``livescope bench``) prints its help on
    stderr and says which commands it has.
    """
    from ._app import app

    as_json = "--json" in sys.argv[1:] or sys.argv[1:2] == ["bench"]
    _exit_if_no_command(app, sys.argv[1:], as_json=as_json)
    if not as_json:
        app()
        return
    import typer

    # typer >= 0.2x vendors click (its errors derive from TyperException); older typer
    # raises click's own
    usage: tuple[type[Exception], ...] = tuple(
        t for t in (getattr(typer, "TyperException", None), _click_exception()) if t is not None
    )
    try:
        code = app(standalone_mode=False)
    except typer.Abort:  # Ctrl-C
        print("Aborted!", file=sys.stderr)
        raise SystemExit(1) from None
    except usage as exc:  # usage errors: the message on stderr, JSON on stdout
        from ._common import emit

        show = getattr(exc, "show", None)
        if show is not None:
            show()
        fmt = getattr(exc, "format_message", None)
        message = fmt() if fmt is not None else str(exc)
        emit({"ok": False, "error": message, "problems": []})
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    raise SystemExit(code if isinstance(code, int) else 0)


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
