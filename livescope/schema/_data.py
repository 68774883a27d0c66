"""Where the real annotated data lives (never in the repository, never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import LivescopeError

__all__ = ["data_root", "require_data_root"]


def data_root() -> Path | None:
    """``$LIVESCOPE_DATA``, else ``../shared/data`` beside the checkout; None if absent."""
    env = os.environ.get("LIVESCOPE_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    return next((p for p in candidates if p.is_dir()), None)


def require_data_root() -> Path:
    """`data_root`, or a clear error saying how to point livescope at the data."""
    root = data_root()
    if root is None:
        raise LivescopeError(
            "real data not found: set LIVESCOPE_DATA to the shared data folder "
            "(the one holding nuclei-mnfinder/, ctc-Fluo-N2DH-GOWT1/, ...)"
        )
    return root
