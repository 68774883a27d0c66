"""The run's decision log (``decisions.jsonl``)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from livescope.record import DECISIONS_FILE, DecisionLog, read_decisions
from livescope.schema import LivescopeError


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


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_never_makes_closing_the_log_raise(tmp_path: Path) -> None:
    # the line a failed write left in the buffer failed again when the file closed: the
    # agent's end raised there and wrote no summary
    (tmp_path / "decisions.jsonl").symlink_to("/dev/full")
    log = DecisionLog(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        log.append({"n": 1})  # (the agent counts it)
    log.close()
    assert log.sync_errors == 1


def test_a_damaged_decision_record_is_named_and_a_cut_last_line_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = DecisionLog(tmp_path)
    for i in range(3):
        log.append({"decision": {"decision_id": f"d{i}"}, "ack": {"accepted": True}})
    log.close()
    path = tmp_path / DECISIONS_FILE
    whole = path.read_text(encoding="utf-8")
    path.write_text(whole + '{"decision": {"decision_id": "d3"', encoding="utf-8")  # killed
    with caplog.at_level(logging.WARNING, logger="livescope"):
        ids = [r["decision"]["decision_id"] for r in read_decisions(tmp_path)]
    assert ids == ["d0", "d1", "d2"]
    assert "cut short" in caplog.text
    lines = whole.splitlines()
    lines[1] = lines[1][:-5]  # a complete line damaged (its end lost): never skipped
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(LivescopeError, match=rf"{DECISIONS_FILE}, line 2: not a JSON decision"):
        read_decisions(tmp_path)


def test_a_record_with_no_number_in_it_is_written_as_strict_json(tmp_path: Path) -> None:
    # JSON has no NaN or Infinity: Python wrote them as bare tokens, which jq, a
    # browser's JSON.parse and most JSON readers refuse (the whole log unreadable)
    log = DecisionLog(tmp_path)
    log.append({"inputs": {"p_mitosis": float("nan"), "area": [1.0, float("inf")]}, "n": 1})
    log.close()

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    text = (tmp_path / DECISIONS_FILE).read_text()
    assert [json.loads(line, parse_constant=refuse) for line in text.splitlines()] == [
        {"inputs": {"p_mitosis": None, "area": [1.0, None]}, "n": 1}
    ]
