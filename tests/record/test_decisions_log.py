"""The run's decision log (``decisions.jsonl``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from livescope.record import DecisionLog, read_decisions


def test_a_failed_sync_is_counted_and_the_log_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a sync that failed (a full or lost disk) ended the log's sync thread for good
    real_fsync, calls = os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    log = DecisionLog(tmp_path)
    log.append({"n": 1})
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    log.append({"n": 2})
    log.close()
    assert log.sync_errors == 1
    assert len(calls) >= 2  # synced again after the failure
    assert read_decisions(tmp_path) == [{"n": 1}, {"n": 2}]
