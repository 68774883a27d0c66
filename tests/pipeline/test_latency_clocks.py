"""A field's latency figures on the agent's clock are left out where that clock is not ours."""

from __future__ import annotations

import numpy as np

from livescope.pipeline import FrameResult
from livescope.pipeline._jobs import DecideJob, Field


def _ms(t_camera_ns: int, t_received_ns: int) -> dict[str, float]:
    fld = Field("A", 0, {("DAPI", 0): np.zeros((4, 4), np.uint16)},
                {"seq": 1, "t_camera_ns": t_camera_ns}, t_received_ns)  # fmt: skip
    res = FrameResult("A", 0, ms={"segment": 5.0})
    job = DecideJob(fld, res, None, 0.65, t_start_ns=t_received_ns + 1_000_000,
                    t_analysed_ns=t_received_ns + 7_000_000, busy_ns=0,
                    tracker_state=None)  # fmt: skip
    return job.latency_ms(prepare=0.1, policy=0.2, posting=0.0, posted=0, sent=[],
                          t_handoff_ns=t_received_ns + 7_500_000,
                          t_decided_ns=t_received_ns + 8_000_000)  # fmt: skip


def test_a_frame_taken_on_this_hosts_clock_has_its_way_from_the_camera() -> None:
    ms = _ms(t_camera_ns=1_000_000_000, t_received_ns=1_002_000_000)
    assert ms["camera_to_received"] == 2.0
    assert ms["end_to_end"] == 10.0
    assert ms["overhead"] == 5.0
    assert ms["queue_wait"] == 1.0


def test_a_camera_time_after_the_frame_was_received_gives_no_camera_figures() -> None:
    # (an agent on another machine whose clock is ahead: the end to end and overhead
    # were the two clocks' difference, hours or negative)
    ms = _ms(t_camera_ns=9_000_000_000_000, t_received_ns=1_002_000_000)
    assert "end_to_end" not in ms
    assert "overhead" not in ms
    assert "camera_to_received" not in ms
    assert ms["queue_wait"] == 1.0  # (this host's clock: kept)
    assert ms["engines"] == 5.0
