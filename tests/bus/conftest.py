"""Fixtures shared by the bus tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder short enough for ipc socket files (pytest's own may not be)."""
    with tempfile.TemporaryDirectory(prefix="lvs") as folder:
        yield Path(folder)
