"""Command-line interface: ``livescope demo``, ``livescope profile check``, ``livescope bench``."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``livescope`` command.

    With ``--json`` a usage error (an unknown option, a missing or malformed
    value) also prints one JSON object on stdout, as every other error does;
    so does ``bench`` without it (a benchmark prints JSON with or without it).
    """
    from ._app import app

    if "--json" not in sys.argv[1:] and sys.argv[1:2] != ["bench"]:
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
