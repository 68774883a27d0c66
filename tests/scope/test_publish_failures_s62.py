"""Frames whose publishing fails are recorded, counted, and logged a few times, not each.

A position name every subscriber refuses (now refused at publish) failed every frame of
its position, each logged with a traceback, for the whole run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import useq

from livescope.bus import FramePublisher
from livescope.schema import HardwareProfile
from livescope.scope import FrameFanout, demo_sequence, run_simulated

from .test_fanout import ListSink


def test_publish_failures_are_counted_and_only_the_first_few_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pub = FramePublisher("r1", mode="inline")
    sink = ListSink()
    fan = FrameFanout([sink], publisher=pub)
    long_name = "p" * 300  # (a name no subscriber takes: refused at publish, naming it)
    try:
        with caplog.at_level(logging.WARNING, "livescope"):
            for t in range(10):
                event = useq.MDAEvent(index={"t": t, "c": 0}, channel={"config": "DAPI"},
                                      pos_name=long_name)  # fmt: skip
                fan.on_frame(np.full((16, 16), t, np.uint16), event, {"pixel_size_um": 0.5})
            fan.finish()
    finally:
        pub.close()
    assert (fan.frames_acquired, fan.frames_written) == (10, 10)  # (all recorded)
    assert (fan.bus_published, fan.bus_dropped, fan.publish_failures) == (0, 10, 10)
    said = [r for r in caplog.records if "publishing frame" in r.getMessage()]
    assert len(said) == 3
    assert all(r.exc_info is not None for r in said)
    assert "further failures are counted (the summary's bus.publish_failures), not logged" in (
        said[-1].getMessage()
    )


def test_the_run_summary_counts_the_frames_whose_publishing_failed(
    tmp_path: Path, sim_profile: HardwareProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (the log says the failures past the third are counted: in the summary, by that name)
    def publish(self: FramePublisher, *args: object, **kwargs: object) -> bool:
        raise RuntimeError("the bus is broken")

    monkeypatch.setattr(FramePublisher, "publish", publish)
    seq = demo_sequence(sim_profile, timepoints=2, positions=1)
    summary = run_simulated(sim_profile, seq, tmp_path / "run", seed=1, bus="inline")
    n = summary["frames_acquired"]
    assert n >= 2
    assert summary["frames_written"] == n
    assert (summary["bus"]["publish_failures"], summary["bus"]["dropped_in_agent"]) == (n, n)
