"""Review of the worker's bus API (`livescope.bus.attach`) and its reading of the recording."""

from __future__ import annotations

import doctest
import json
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import livescope.bus._worker as worker_module
from livescope.bus import BUS_FILE, BusInfo, DecisionServer, FramePublisher, attach
from livescope.pipeline._recorded import RecordedFields
from livescope.record import FRAMES_FILE, ZARR_NAME, OmeZarrWriter
from livescope.schema import Decision, DecisionAck, FrameInfo, LivescopeError, StopRun, clock_ns

SHAPE = (8, 8)


def _info(seq: int, position: str, t: int) -> FrameInfo:
    return FrameInfo(
        seq=seq, index={"t": t, "z": 0}, position=position, channel="DAPI", x_um=0.0,
        y_um=0.0, z_um=0.0, exposure_ms=10.0, pixel_size_um=0.65, sample_time_s=0.0,
        runner_time_ms=0.0, t_camera_ns=clock_ns(), hardware_triggered=False, added_by=None,
        adler32=0, shape=SHAPE, dtype="uint16", event={},
    )  # fmt: skip


def _record(run: Path, frames: list[tuple[str, int, int]]) -> None:
    """Record ``frames`` (position, t, pixel value), in that order, as one run in ``run``."""
    with OmeZarrWriter(run, channels=["DAPI"], pixel_size_um=0.65) as writer:
        for seq, (position, t, value) in enumerate(frames):
            writer.write(np.full(SHAPE, value, np.uint16), _info(seq, position, t))


def _pixel(rec: RecordedFields, key: tuple[str, int]) -> int:
    frames: dict[tuple[str, int], np.ndarray] = {}
    assert rec.read_into(rec.logged()[key], frames) == 1
    return int(frames[("DAPI", 0)][0, 0])


@pytest.mark.parametrize(
    "second_run",
    [
        pytest.param([("B", 0, 200), ("A", 0, 100)], id="a log as long"),
        pytest.param(
            [("B", 0, 200), ("A", 0, 100), ("B", 1, 201), ("A", 1, 101), ("B", 2, 202)],
            id="a longer log",
        ),
        pytest.param([("B", 0, 200)], id="a shorter log"),
    ],
)
def test_a_new_run_in_the_same_folder_is_read_as_its_own(
    tmp_path: Path, second_run: list[tuple[str, int, int]]
) -> None:
    # the folder emptied and a new run recorded in it, its positions in another order: the
    # reader kept the old run's position -> group numbers (B's frames were read from A's
    # group: A's pixels, without a word), and a log no shorter than the part already read
    # was read on from the old offset (the new run's first lines skipped, or a line cut)
    _record(tmp_path, [("A", 0, 10), ("B", 0, 20), ("A", 1, 11), ("B", 1, 21)])
    rec = RecordedFields(tmp_path, {}, 1)
    assert _pixel(rec, ("B", 0)) == 20
    shutil.rmtree(tmp_path / ZARR_NAME)
    (tmp_path / FRAMES_FILE).unlink()
    _record(tmp_path, second_run)
    assert _pixel(rec, ("B", 0)) == 200
    assert rec.last_seq == len(second_run) - 1
    assert sum(len(v) for v in rec.logged().values()) == len(second_run)


def test_frames_of_a_recording_not_there_are_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the docstring's promise: a frame that cannot be read is a warning; a log without its
    # recording (moved away) raised out of read_into, and the worker stopped
    _record(tmp_path, [("A", 0, 10)])
    shutil.rmtree(tmp_path / ZARR_NAME)
    rec = RecordedFields(tmp_path, {}, 1)
    frames: dict[tuple[str, int], np.ndarray] = {}
    with caplog.at_level(logging.WARNING, logger="livescope"):
        assert rec.read_into(rec.logged()[("A", 0)], frames) == 0
    assert frames == {}
    assert "no recording at" in caplog.text


@pytest.mark.parametrize(
    "damaged",
    [
        pytest.param({"seq": 1, "index": {"t": 0}, "channel": "DAPI"}, id="no position"),
        pytest.param({"seq": 1, "position": "A", "index": [0], "channel": "DAPI"}, id="index"),
        pytest.param({"seq": "x", "position": "A", "index": {"t": 0}}, id="seq no number"),
        pytest.param({"seq": 1, "position": "A", "index": {"t": None}}, id="t no number"),
    ],
)
def test_a_damaged_frame_record_is_named_and_the_lines_after_it_not_lost(
    tmp_path: Path, damaged: dict[str, object]
) -> None:
    # it raised a bare KeyError/TypeError (no file, no line), and the read had already moved
    # past every line read with it: a caller that went on lost the lines after it unread
    good = {"seq": 0, "position": "A", "index": {"t": 0}, "channel": "DAPI"}
    after = {"seq": 2, "position": "A", "index": {"t": 1}, "channel": "DAPI"}
    (tmp_path / FRAMES_FILE).write_text("".join(json.dumps(r) + "\n" for r in (good, damaged)))
    rec = RecordedFields(tmp_path, {}, 1)
    with pytest.raises(LivescopeError, match=r"frames\.jsonl, line 2: not a frame record"):
        rec.logged()
    with (tmp_path / FRAMES_FILE).open("a") as f:
        f.write(json.dumps(after) + "\n")
    with pytest.raises(LivescopeError, match="line 2"):  # (again: not skipped)
        rec.logged()
    assert rec.last_seq == 0  # (the line before it taken)


def test_a_record_without_channel_is_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _record(tmp_path, [("A", 0, 10)])
    rec = RecordedFields(tmp_path, {}, 1)
    infos = [{k: v for k, v in i.items() if k != "channel"} for i in rec.logged()[("A", 0)]]
    frames: dict[tuple[str, int], np.ndarray] = {}
    with caplog.at_level(logging.WARNING, logger="livescope"):
        assert rec.read_into(infos, frames) == 0
    assert "names no channel" in caplog.text


# ------------------------------------------------------------ the bus API


class _Agent:
    """A publisher and a decision server with a ``bus.json`` in ``run`` (an agent's bus)."""

    def __init__(self, run: Path) -> None:
        nbytes = SHAPE[0] * SHAPE[1] * 2
        self.pub = FramePublisher("r1", mode="shm", max_frame_bytes=nbytes, ring_bytes=8 * nbytes)
        self.decided: list[Decision] = []
        self.srv = DecisionServer(self._answer)
        BusInfo("r1", self.pub.endpoint, self.pub.control_endpoint, self.srv.endpoint,
                "shm").write(run)  # fmt: skip

    def _answer(self, d: Decision, t_ns: int) -> DecisionAck:
        self.decided.append(d)
        return DecisionAck(decision_id=d.decision_id, run_id=d.run_id, type=d.type, accepted=True)

    def close(self) -> None:
        self.pub.close()
        self.srv.close()


def test_the_module_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the example used StopRun without importing it: NameError at the first bright frame
    examples = doctest.DocTestParser().get_examples(worker_module.__doc__ or "")
    source = "".join(e.source for e in examples).replace("timeout=5", "timeout=0.5")
    assert "link.decide(StopRun(" in source
    run = tmp_path / "runs" / "my-run"
    run.mkdir(parents=True)
    agent = _Agent(run)
    stop = threading.Event()

    def camera() -> None:  # bright frames until the worker, subscribed, has decided
        seq = 0
        while not stop.is_set() and not agent.decided and seq < 500:
            agent.pub.publish(np.full(SHAPE, 2000, np.uint16), _info(seq, "A", seq), clock_ns())
            seq += 1
            stop.wait(0.01)

    monkeypatch.chdir(tmp_path)
    thread = threading.Thread(target=camera)
    thread.start()
    try:
        exec(source, {})  # (the module's own example, as a user runs it)
    finally:
        stop.set()
        thread.join()
        agent.close()
    assert agent.decided
    assert all(isinstance(d, StopRun) and d.rule == "too bright" for d in agent.decided)


def test_a_bus_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    # (a folder by that name here; a file without read permission alike): a bare OSError
    (tmp_path / BUS_FILE).mkdir()
    with pytest.raises(LivescopeError, match=r"cannot read .*bus\.json"):
        attach(tmp_path)


def test_deciding_on_a_closed_link_says_so(tmp_path: Path) -> None:
    # a decision sent after the `with attach(...)` block raised zmq's "Socket operation on
    # non-socket"
    agent = _Agent(tmp_path)
    try:
        with attach(tmp_path) as link:
            pass
        with pytest.raises(LivescopeError, match="r1 is closed"):
            link.decide(StopRun(run_id="r1"))
    finally:
        agent.close()
    assert agent.decided == []


def test_a_run_that_has_ended_is_not_waited_for(tmp_path: Path) -> None:
    # "once the run has ended, every frame it took is logged: no longer wait", but a field
    # short in the ended run's log was waited for (the 2 s of recording_wait_s a field: a
    # run stopped mid-time-point kept the worker 2 s per position after its end)
    _record(tmp_path, [("A", 0, 10)])  # (A t=0's second channel never taken)
    (tmp_path / "summary.json").write_text("{}")
    rec = RecordedFields(tmp_path, {("A", 0): 2}, 2)
    real, reads = rec.logged, []

    def logged() -> dict[tuple[str, int], list[dict[str, object]]]:
        reads.append(1)
        return real()

    rec.logged = logged  # type: ignore[method-assign]
    fields = rec.logged_until([("A", 0)], 1.0, until_seq=0)
    assert len(fields[("A", 0)]) == 1
    assert len(reads) == 1
