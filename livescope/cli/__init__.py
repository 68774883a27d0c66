"""Command-line interface: ``livescope demo``, ``livescope profile check``, ``livescope bench``."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``livescope`` command."""
    from ._app import app

    app()
