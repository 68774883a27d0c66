"""The worker reads the frame log as it grows, each line once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livescope.pipeline._recorded import RecordedFields
from livescope.schema import LivescopeError


def _line(seq: int, position: str, t: int, channel: str, added_by: str | None = None) -> str:
    return json.dumps({"seq": seq, "position": position, "index": {"t": t, "z": 0},
                       "channel": channel, "added_by": added_by}) + "\n"  # fmt: skip


def test_the_log_is_read_as_it_grows_each_line_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (the whole log was parsed again at every read, every 20 ms while a field waited for
    # the recorder: 1.3 s a read at 50,000 frames, the worker's main thread pinned)
    log = tmp_path / "frames.jsonl"
    rec = RecordedFields(tmp_path, {("A", 0): 2}, 2)
    assert rec.logged() == {}  # (no log yet)
    log.write_text(_line(0, "A", 0, "Phase") + '{"seq": 1, "posi')  # (a line being written)
    parsed: list[bytes] = []
    real_loads = json.loads

    def counting(raw: bytes) -> object:
        parsed.append(raw)
        return real_loads(raw)

    monkeypatch.setattr(json, "loads", counting)
    fields = rec.logged()
    assert [i["channel"] for i in fields[("A", 0)]] == ["Phase"]
    assert rec.last_seq == 0
    with log.open("a") as f:  # the line finished, and more
        f.write('tion": "A", "index": {"t": 0, "z": 0}, "channel": "DAPI", "added_by": null}\n')
        f.write(_line(2, "A~close", 0, "DAPI", added_by="d1"))
        f.write(_line(3, "A", 1, "Phase"))
    fields = rec.logged()
    assert [i["channel"] for i in fields[("A", 0)]] == ["Phase", "DAPI"]
    assert [i["seq"] for i in fields[("A", 1)]] == [3]
    assert ("A~close", 0) not in fields  # (added frames: not analysed)
    assert rec.last_seq == 3
    assert len(parsed) == 4  # each complete line once
    assert rec.logged_until([("A", 0)], 0.0) is fields


def test_a_damaged_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "frames.jsonl").write_text(_line(0, "A", 0, "Phase") + "[1, 2]\n")
    with pytest.raises(LivescopeError, match=r"frames\.jsonl, line 2: a frame record is a JSON"):
        RecordedFields(tmp_path, {}, 2).logged()
