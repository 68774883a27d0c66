"""Helpers of the pipeline's tests: supervisors whose workers are scripts, damaged-line warnings."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from livescope.pipeline import WorkerConfig
from tests.pipeline.test_supervisor_review import _Scripted


@pytest.fixture
def supervisors(tmp_path: Path) -> Iterator[Callable[..., _Scripted]]:
    """Make supervisors of ``tmp_path/run``; each is stopped at the end (no worker left).

    ``make(kind=_Scripted, **kwargs)``: ``kind`` a `_Scripted` class, ``kwargs`` its own.
    """
    made: list[_Scripted] = []

    def make(kind: type[_Scripted] = _Scripted, **kwargs: object) -> _Scripted:
        sup = kind(tmp_path / "run", WorkerConfig(), **kwargs)
        made.append(sup)
        return sup

    yield make
    for sup in made:
        sup.stop_grace_s = 0.5
        sup.stop()


def said_damaged(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    """The warnings ``caplog`` holds about damaged lines of the log ``name``."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and name in r.getMessage() and "damaged" in r.getMessage()
    ]
