"""The worker's reading of the recording for fields the bus did not deliver."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from livescope.pipeline._recorded import RecordedFields


def _log(run: Path, seqs: range, t: int) -> None:
    """Log frames ``seqs`` (two per time point, from ``t`` on) in one write."""
    lines = [json.dumps({"seq": seq, "position": "p0", "index": {"t": t + k // 2},
                         "channel": ("Phase", "DAPI")[k % 2]}) + "\n"
             for k, seq in enumerate(seqs)]  # fmt: skip
    with (run / "frames.jsonl").open("a", encoding="utf-8") as f:
        f.write("".join(lines))


def test_a_recorder_behind_the_field_at_hand_is_waited_for(tmp_path: Path) -> None:
    # the bus lost t=1; the worker has t=2 (frames 4-5) in hand. The recorder logs frames
    # in the order they were taken: until it reaches frame 5 it is behind, not missing
    # t=1, and giving up after the 0.5 s wait left t=1 unanalysed for good
    _log(tmp_path, range(0, 2), 0)
    rec = RecordedFields(tmp_path, {("p0", t): 2 for t in range(3)}, 2)
    writer = threading.Timer(1.5, lambda: _log(tmp_path, range(2, 6), 1))  # (t=1, then t=2)
    writer.start()
    try:
        t0 = time.monotonic()
        fields = rec.logged_until([("p0", 1)], 0.5, until_seq=5, behind_s=30)
        waited = time.monotonic() - t0
    finally:
        writer.cancel()
    assert len(fields[("p0", 1)]) == 2
    assert waited >= 1.5
    assert rec.last_seq == 5


@pytest.mark.parametrize("why", ["the run has ended", "the log has passed it"])
def test_a_field_not_logged_is_missing_after_the_short_wait(tmp_path: Path, why: str) -> None:
    _log(tmp_path, range(0, 2), 0)  # t=1 was never taken (its event failed, or the run ended)
    if why == "the run has ended":
        (tmp_path / "summary.json").write_text("{}")
    else:
        _log(tmp_path, range(4, 6), 2)
    rec = RecordedFields(tmp_path, {("p0", t): 2 for t in range(3)}, 2)
    t0 = time.monotonic()
    fields = rec.logged_until([("p0", 1)], 0.3, until_seq=5, behind_s=30)
    assert ("p0", 1) not in fields
    assert time.monotonic() - t0 < 5  # not the 30 s kept for a recorder still behind


def test_a_run_that_ends_while_the_log_is_read_is_read_again(tmp_path: Path) -> None:
    # the recorder caught up and the run ended between a read of the log and the check
    # for the run's end: that stale read was returned, the field given up on
    _log(tmp_path, range(0, 2), 0)
    rec = RecordedFields(tmp_path, {("p0", t): 2 for t in range(3)}, 2)
    real, reads = rec.logged, []

    def logged():  # type: ignore[no-untyped-def]
        out = real()
        if not reads:  # right after the first read: the rest is logged, the run ends
            _log(tmp_path, range(2, 6), 1)
            (tmp_path / "summary.json").write_text("{}")
        reads.append(len(out))
        return out

    rec.logged = logged  # type: ignore[method-assign]
    fields = rec.logged_until([("p0", 1)], 0.0, until_seq=5, behind_s=30)
    assert len(fields[("p0", 1)]) == 2
    assert len(reads) == 2
