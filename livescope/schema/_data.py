"""Where the real annotated data lives (never in the repository, never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import LivescopeError

__all__ = ["data_root", "require_data_root"]


def data_root() -> Path | None:
    """``$LIVESCOPE_DATA`` if set, else ``../shared/data`` beside the checkout; None if absent.

    A ``LIVESCOPE_DATA`` that names no folder is not replaced by the default:
    data from somewhere else than the user said would be a silent surprise.
    A leading ``~`` is the user's home folder (a CI ``env:`` block or an IDE's run
    settings pass it on unexpanded); a relative path is from the working folder.
    """
    env = os.environ.get("LIVESCOPE_DATA")
    path = _env_path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    return path if path.is_dir() else None


def _env_path(env: str) -> Path:
    try:
        return Path(env).expanduser()
    except RuntimeError:  # (no home folder to expand ~ to: the path as written)
        return Path(env)


def require_data_root() -> Path:
    """`data_root`, or a clear error saying how to point livescope at the data."""
    root = data_root()
    if root is None:
        env = os.environ.get("LIVESCOPE_DATA")
        if env:
            path = _env_path(env).absolute()
            why = "a file" if path.exists() else "not there"
            if len(env) > 1 and env[0] == env[-1] and env[0] in "\"'":
                # (Windows' `set LIVESCOPE_DATA="C:\data"` keeps the quotes in the value)
                why += "; the quotes are part of the value: set it without them"
            raise LivescopeError(
                f"LIVESCOPE_DATA is {env}, which is not a folder ({path} is {why}): set it to "
                "the shared data folder (the one holding nuclei-mnfinder/, "
                "ctc-Fluo-N2DH-GOWT1/, ...)"
            )
        raise LivescopeError(
            "real data not found: set LIVESCOPE_DATA to the shared data folder "
            "(the one holding nuclei-mnfinder/, ctc-Fluo-N2DH-GOWT1/, ...)"
        )
    return root
