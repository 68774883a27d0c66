"""Hardware that stalls or fails during a run: the event fails, is counted, and the run goes on."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import useq

from livescope.record import read_frames
from livescope.schema import LivescopeError
from livescope.scope import ScopeAgent, SimulatedMicroscope


def _summary(run: Path) -> dict[str, Any]:
    return json.loads((run / "summary.json").read_text())  # type: ignore[no-any-return]


def test_a_device_still_busy_at_the_cores_timeout_fails_its_event_not_the_run(
    sim: SimulatedMicroscope, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pymmcore-plus's engine waits for every device after setting up an event: a stage
    # still moving at the core's timeout raised TimeoutError, which ended the run at B's
    # first frame (frames_failed 0, every later event of every position lost)
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A"),
                         useq.Position(x=300, y=0, z=0, name="B"),
                         useq.Position(x=-300, y=0, z=0, name="C")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=60, loops=2),
    )  # fmt: skip
    xy, move = sim._xy, sim._xy.set_position_um
    busy_until = [0.0]

    def slow_to_b(x: float, y: float) -> None:  # (busy for 0.5 s after a move to B)
        move(x, y)
        busy_until[0] = time.perf_counter() + (0.5 if x == 300 else 0.0)

    monkeypatch.setattr(xy, "set_position_um", slow_to_b)
    monkeypatch.setattr(xy, "busy", lambda: time.perf_counter() < busy_until[0])
    sim.core.setTimeoutMs(100)
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path, sim=sim, bus="off")
    refused = r"event t=0, p=1, c=0: the hardware set-up failed: .*'XY'.* timed out"
    with pytest.raises(LivescopeError, match=r"2 frame\(s\) could not be acquired; the first, "
                       + refused):  # fmt: skip
        agent.run()
    frames = read_frames(tmp_path)
    assert [(f["position"], f["index"]["t"]) for f in frames] == [
        ("A", 0), ("C", 0), ("A", 1), ("C", 1)
    ]  # fmt: skip
    summary = _summary(tmp_path)
    assert not summary["ok"]
    assert summary["frames_failed"] == 2
    assert summary["events"]["left"] == 0


@pytest.mark.parametrize(
    ("stall", "why"),
    [pytest.param(True, "no image came in time: Acquisition timed out", id="camera-stalls"),
     pytest.param(False, "no image came", id="ends-early")],
)  # fmt: skip
def test_a_burst_whose_camera_stops_fails_its_missing_frames_not_the_run(
    sim: SimulatedMicroscope,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stall: bool,
    why: str,
) -> None:
    # a camera that stalls after 4 frames of a hardware-timed burst: pymmcore-plus raised
    # TimeoutError at its deadline, which ended the run with frames_failed 0; one whose
    # burst ends early was counted, but the log named no event ("... for event ")
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=0, loops=10),
    )
    cam, start = sim._camera, sim._camera.start_sequence
    released = threading.Event()

    def dropped_trigger(
        n: int | None, get_buffer: Callable[[Sequence[int], Any], Any]
    ) -> Iterator[Mapping[str, Any]]:
        for k, meta in enumerate(start(n, get_buffer)):
            if n is not None and n > 1 and k == 4:
                if stall:
                    released.wait(30)
                return
            yield meta

    monkeypatch.setattr(cam, "start_sequence", dropped_trigger)
    agent = ScopeAgent(sim.core, sim.profile, seq, tmp_path, sim=sim, bus="off")
    agent.engine.timeout_base = 0.5  # (pymmcore-plus waits 5 s for a frame)
    assert agent.engine.use_hardware_sequencing
    try:
        with (
            caplog.at_level(logging.ERROR, logger="livescope"),
            pytest.raises(
                LivescopeError,
                match=r"6 frame\(s\) could not be acquired; the "
                rf"first, event t=4, p=0, c=0: {why}",
            ),  # fmt: skip
        ):
            agent.run()
    finally:
        released.set()
    assert f"6 of 10 images missing, the first for event t=4, p=0, c=0: {why}" in caplog.text
    assert [f["index"]["t"] for f in read_frames(tmp_path)] == [0, 1, 2, 3]
    assert not sim.core.isSequenceRunning()
    summary = _summary(tmp_path)
    assert not summary["ok"]
    assert summary["frames_failed"] == 6


def _af_plan() -> useq.MDASequence:
    return useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=0, name="A"),
                         useq.Position(x=300, y=0, z=0, name="B")],
        channels=[useq.Channel(config="Phase", exposure=5.0)],
        time_plan=useq.TIntervalLoops(interval=60, loops=2),
        autofocus_plan=useq.AxesBasedAF(autofocus_device_name="Z", axes=("p",)),
    )  # fmt: skip


def test_a_plan_with_autofocus_is_refused_on_a_core_without_an_autofocus_device(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # pymmcore-plus's engine warned at each autofocus event and imaged at whatever focus
    # the rig had: the run said ok
    assert not sim.core.getAutoFocusDevice()
    with pytest.raises(LivescopeError, match="no autofocus device; set Core-AutoFocus"):
        ScopeAgent(sim.core, sim.profile, _af_plan(), tmp_path / "run", sim=sim, bus="off")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "error",
    [pytest.param(RuntimeError, id="device-error"), pytest.param(TimeoutError, id="timeout")],
)
def test_a_failed_autofocus_is_counted_and_its_frames_kept(
    sim: SimulatedMicroscope,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: type[Exception],
) -> None:
    # pymmcore-plus's engine catches a failed autofocus and warns: the run said ok (and a
    # device that timed out there, TimeoutError, ended the run)
    core = sim.core
    monkeypatch.setattr(core, "getAutoFocusDevice", lambda: "AF")
    monkeypatch.setattr(core, "enableContinuousFocus", lambda on: None)

    def full_focus() -> None:
        if core.getXPosition() == 300:  # (B: out of the autofocus's range)
            raise error("focus not found")

    monkeypatch.setattr(core, "fullFocus", full_focus)
    agent = ScopeAgent(core, sim.profile, _af_plan(), tmp_path, sim=sim, bus="off")
    with caplog.at_level(logging.WARNING, logger="livescope"):
        summary = agent.run()
    assert len(read_frames(tmp_path)) == 4  # (taken at the focus the rig had)
    assert summary["frames_failed"] == 0
    assert summary["autofocus_failed"] == 2
    assert not summary["ok"]
    assert summary["error"] == (
        "2 autofocus event(s) failed; the first, at position B, time index 0 "
        "(event t=0, p=1, c=0): focus not found"
    )
    assert "autofocus failed at position B, time index 1 (event t=1, p=1, c=0)" in caplog.text
    assert _summary(tmp_path) == summary
