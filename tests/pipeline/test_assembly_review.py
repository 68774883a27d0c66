"""Review of the field assembly: frames off a real bus put together into fields, and analysed."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from livescope.bus import BUS_FILE, FramePublisher, FrameSubscriber
from livescope.pipeline import FrameAnalyzer, WorkerConfig
from livescope.pipeline._assembly import FieldAssembler
from livescope.pipeline._jobs import Field
from livescope.pipeline._recorded import RecordedFields
from livescope.schema import FrameInfo, clock_ns
from tests.conftest import wait_for

PRIME = "prime"
"""Position of the frames sent until the subscription is through."""


def _info(
    seq: int, position: str, t: int, channel: str, z: int = 0, added_by: str | None = None
) -> FrameInfo:
    return FrameInfo(
        seq=seq, index={"t": t, "z": z}, position=position, channel=channel, x_um=0.0,
        y_um=0.0, z_um=float(z), exposure_ms=10.0, pixel_size_um=0.65, sample_time_s=0.0,
        runner_time_ms=0.0, t_camera_ns=clock_ns(), hardware_triggered=False,
        added_by=added_by, adler32=0, shape=(4, 4), dtype="uint16", event={},
    )  # fmt: skip


class Bus:
    """A real publisher and subscriber; `send` publishes frames with consecutive ``seq``."""

    def __init__(self) -> None:
        self.pub = FramePublisher("r1", mode="inline")
        self.sub = FrameSubscriber(self.pub.endpoint, control_endpoint=self.pub.control_endpoint,
                                   maxlen=256)  # fmt: skip
        # (a subscription reaches the publisher a little later: frames sent before are
        # lost; frames are sent until one comes through, and taken off before the test's)
        self.seq = 0
        while self.sub.get(timeout=0.02) is None:
            self._publish(PRIME, 0, "c0", 0, None)
        while self.sub.get(timeout=0.2) is not None:
            pass
        self.seq = self.sent = 0  # (the test's frames are the run's first)

    def _publish(self, pos: str, t: int, ch: str, z: int, added_by: str | None) -> None:
        img = np.full((4, 4), self.seq, np.uint16)
        assert self.pub.publish(img, _info(self.seq, pos, t, ch, z, added_by), clock_ns())
        self.seq += 1

    def send(self, *frames: tuple[Any, ...], added_by: str | None = None) -> None:
        """Publish frames (position, t, channel[, z]) in this order."""
        for f in frames:
            pos, t, ch, *z = f
            self._publish(pos, t, ch, z[0] if z else 0, added_by)
            self.sent += 1

    def skip(self, n: int = 1) -> None:
        """Lose ``n`` frames on the way (their seq is never sent)."""
        self.seq += n

    def close(self) -> None:
        self.sub.close()
        self.pub.close()


@pytest.fixture
def bus() -> Iterator[Bus]:
    b = Bus()
    yield b
    b.close()


def _assembler(
    tmp_path: Path, bus: Bus, expected: dict[tuple[str, int], int], *, analyse_added: bool = False
) -> tuple[FieldAssembler, collections.Counter[str]]:
    (tmp_path / BUS_FILE).write_text("{}")  # the agent runs while it is there
    counts: collections.Counter[str] = collections.Counter()
    cfg = WorkerConfig(analyse_added=analyse_added)
    recorded = RecordedFields(tmp_path, expected, 2, analyse_added=analyse_added)
    asm = FieldAssembler(
        SimpleNamespace(frames=bus.sub), tmp_path, cfg, recorded, {}, counts,
        threading.Lock(), threading.Event(),
    )  # fmt: skip
    asm.start()
    return asm, counts


def _fields(
    tmp_path: Path, bus: Bus, asm: FieldAssembler, counts: collections.Counter[str]
) -> list[Field]:
    """End the run (the agent's bus file gone) once every frame sent is in; every field queued."""
    wait_for(lambda: counts["frames_received"] >= bus.sent)
    (tmp_path / BUS_FILE).unlink()
    out: list[Field] = []
    while (item := asm.fields.get(timeout=10)) is not None:
        assert isinstance(item, Field), item
        out.append(item)
    asm.stop()
    return out


BOTH = [("c0", 0), ("c1", 0)]


def _summary(fields: list[Field]) -> list[tuple[str, int, list[tuple[str, int]]]]:
    return [(f.position, f.t, sorted(f.frames)) for f in fields]


def test_a_field_that_lost_a_frame_is_queued_at_the_next_fields_first_frame(
    tmp_path: Path, bus: Bus
) -> None:
    # a frame lost on the bus: its field is queued as soon as the next field begins (it is
    # completed from the recording), not held until a later time point
    asm, counts = _assembler(tmp_path, bus, {(p, 0): 2 for p in "AB"})
    bus.send(("A", 0, "c0"))
    bus.skip()  # A/c1
    bus.send(("B", 0, "c0"))
    first = asm.fields.get(timeout=10)
    assert isinstance(first, Field)
    assert (first.position, first.t, sorted(first.frames)) == ("A", 0, [("c0", 0)])
    assert first.next_seq == bus.seq - 1  # (the frame after the lost one)
    bus.send(("B", 0, "c1"))
    fields = _fields(tmp_path, bus, asm, counts)
    assert _summary(fields) == [("B", 0, BOTH)]


def test_a_field_short_of_its_planned_frames_is_queued_when_the_next_field_begins(
    tmp_path: Path, bus: Bus
) -> None:
    # a plan that counts more frames than come (an autofocus event counted as a frame) in
    # the usual axis order: a field is not held until the next time point
    asm, counts = _assembler(tmp_path, bus, {(p, 0): 3 for p in "AB"})
    bus.send(("A", 0, "c0"), ("A", 0, "c1"), ("B", 0, "c0"))
    first = asm.fields.get(timeout=10)
    assert isinstance(first, Field)
    assert (first.position, first.t, sorted(first.frames)) == ("A", 0, BOTH)
    bus.send(("B", 0, "c1"))
    assert _summary(_fields(tmp_path, bus, asm, counts)) == [("B", 0, BOTH)]


def test_an_incomplete_field_at_the_end_of_the_run_is_queued(tmp_path: Path, bus: Bus) -> None:
    asm, counts = _assembler(tmp_path, bus, {("A", 0): 3})
    bus.send(("A", 0, "c0"), ("A", 0, "c1"))
    fields = _fields(tmp_path, bus, asm, counts)
    assert _summary(fields) == [("A", 0, BOTH)]
    assert fields[0].next_seq is None


def test_a_field_of_an_unknown_plan_is_queued_at_the_next_fields_first_frame(
    tmp_path: Path, bus: Bus
) -> None:
    # no plan: how many frames a field has is a guess (2 here); a field of fewer is queued
    # when the next one begins, not held until the next time point
    asm, counts = _assembler(tmp_path, bus, {})
    bus.send(("A", 0, "c0"), ("B", 0, "c0"))
    first = asm.fields.get(timeout=10)
    assert isinstance(first, Field)
    assert (first.position, first.t, sorted(first.frames)) == ("A", 0, [("c0", 0)])
    fields = _fields(tmp_path, bus, asm, counts)
    assert _summary(fields) == [("B", 0, [("c0", 0)])]


def test_a_stain_of_another_shape_than_the_labels_is_left_out_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a label-free channel binned otherwise than the fluorescence one: the virtual stain
    # (its shape) was measured under labels of the other shape, pixel by pixel: each cell
    # read the stain of another place (or the decision thread failed on an index)
    rng = np.random.default_rng(0)
    fluo = rng.integers(100, 200, (64, 64)).astype(np.uint16)
    free = rng.integers(100, 200, (128, 128)).astype(np.uint16)
    with FrameAnalyzer(stain="nuclei-stain", states=None, backend="onnxruntime") as fa:
        for t in range(2):
            res = fa.analyse(fluorescence=fluo, label_free=free, position="A", frame=t)
            assert res.stain is None
            assert res.labels is not None
            assert res.labels.shape == fluo.shape
        said = [r.getMessage() for r in caplog.records if "virtual stain" in r.getMessage()]
        assert len(said) == 1  # (once per position)
        assert "(64, 64)" in said[0]
        assert "(128, 128)" in said[0]
        # a field whose only nuclear signal is the stain is stained as before
        assert fa.analyse(label_free=free, position="B", frame=0).stain is not None


def test_an_autofocus_event_is_no_frame_of_its_field() -> None:
    # (counted, every field of a plan with an autofocus_plan waited for a frame that never
    # came, and was analysed incomplete, read back from the recording)
    import useq

    from livescope.scope import frames_in_plan

    seq = useq.MDASequence(
        channels=["Phase", "DAPI"],
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A")],
        time_plan={"interval": 1, "loops": 2},
        autofocus_plan=useq.AxesBasedAF(autofocus_device_name="Z", axes=("t",)),
    )
    assert frames_in_plan(seq) == {("A", 0): 2, ("A", 1): 2}
