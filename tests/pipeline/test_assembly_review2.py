"""Second review of the field assembly: frames off a real bus put together into fields."""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from livescope.bus import BUS_FILE, attach
from livescope.pipeline import WorkerConfig
from livescope.pipeline._assembly import FieldAssembler
from livescope.pipeline._jobs import Field
from livescope.pipeline._recorded import RecordedFields
from livescope.schema import LivescopeError
from tests.conftest import wait_for
from tests.pipeline.test_assembly_review import Bus


@pytest.fixture
def bus() -> Iterator[Bus]:
    b = Bus()
    yield b
    b.close()


def _start(
    tmp_path: Path, bus: Bus, expected: dict[tuple[str, int], int], done: dict[str, int]
) -> tuple[FieldAssembler, collections.Counter[str]]:
    (tmp_path / BUS_FILE).write_text("{}")  # the agent runs while it is there
    counts: collections.Counter[str] = collections.Counter()
    asm = FieldAssembler(
        SimpleNamespace(frames=bus.sub), tmp_path, WorkerConfig(),
        RecordedFields(tmp_path, expected, 2), done, counts, threading.Lock(),
        threading.Event(),
    )  # fmt: skip
    asm.start()
    return asm, counts


@pytest.mark.parametrize(
    ("later", "added_by", "done", "count"),
    [
        # a close-up (not analysed) imaged after the time point: the next planned frame
        # comes only at the next time point, a whole interval later
        pytest.param(("A~rule-1", 0, "c0"), "d1", {}, "added_frames_received", id="added"),
        pytest.param(
            ("B", 0, "c0"), None, {"B": 0}, "frames_already_analysed", id="already-analysed"
        ),
    ],
)
def test_a_field_that_lost_its_last_frame_is_queued_at_any_later_fields_frame(
    tmp_path: Path,
    bus: Bus,
    later: tuple[str, int, str],
    added_by: str | None,
    done: dict[str, int],
    count: str,
) -> None:
    # A's last frame was lost on the bus; the frame after it is of another field but one
    # the worker leaves out: A was held until a frame that goes into a field came (the next
    # time point), its analysis and decisions that late
    asm, counts = _start(tmp_path, bus, {("A", 0): 2, ("B", 0): 2}, done)
    try:
        bus.send(("A", 0, "c0"))
        bus.skip()  # A/c1
        bus.send(later, added_by=added_by)
        wait_for(lambda: counts["frames_received"] >= bus.sent)
        try:
            first = asm.fields.get(timeout=2)
        except queue.Empty:
            pytest.fail("field A t=0 is still held after a frame of another field came")
        assert isinstance(first, Field)
        assert (first.position, first.t, sorted(first.frames)) == ("A", 0, [("c0", 0)])
        assert first.next_seq == bus.seq - 1  # (the left-out frame: A's came before it)
        assert counts[count] == 1
    finally:
        (tmp_path / BUS_FILE).unlink()
        asm.stop()


def test_attaching_to_a_finished_run_says_that_it_has_finished(tmp_path: Path) -> None:
    # the agent removes bus.json as it ends: "is an agent running there?" asked about a
    # run that had ended, where the recording is to be read
    (tmp_path / "summary.json").write_text("{}")
    for where in (tmp_path, tmp_path / BUS_FILE):
        with pytest.raises(LivescopeError, match=r"has finished \(its summary.json is there\)"):
            attach(where)
    with pytest.raises(LivescopeError, match="is an agent running there"):
        attach(tmp_path / "elsewhere")  # (no run there at all)


def test_fields_past_the_queued_bytes_are_left_to_the_recording(
    tmp_path: Path, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a worker far behind on large frames queued every field's frames in memory until it
    # died: past the limit a field is left to the recording (read back before the
    # position's next field), and queued again once the engines have caught up
    from livescope.pipeline import _assembly

    monkeypatch.setattr(_assembly, "MAX_QUEUED_BYTES", 100)  # (a field: 2 frames of 32 bytes)
    expected = {("A", t): 2 for t in range(4)}
    asm, counts = _start(tmp_path, bus, expected, {})
    try:
        for t in range(3):
            bus.send(("A", t, "c0"), ("A", t, "c1"))
        wait_for(lambda: counts["frames_received"] >= bus.sent)
        wait_for(lambda: counts["fields_left_to_recording"] == 2)
        first = asm.fields.get(timeout=2)  # (the engines take the field they had)
        assert isinstance(first, Field)
        assert first.t == 0
        assert asm.fields.empty()  # t=1 and t=2 were left to the recording
        bus.send(("A", 3, "c0"), ("A", 3, "c1"))
        latest = asm.fields.get(timeout=2)  # (nothing queued: this one goes in again)
        assert isinstance(latest, Field)
        assert latest.t == 3
        assert counts["fields_left_to_recording"] == 2
    finally:
        asm.stop()
