"""A field's latency figures on the agent's clock are left out where that clock is not ours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from livescope.pipeline import FrameResult
from livescope.pipeline._jobs import DecideJob, Field
from livescope.pipeline._results import behind_from_log


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


def test_how_far_behind_the_worker_was_leaves_out_fields_of_no_camera_time(
    tmp_path: Path,
) -> None:
    # a field without the camera's figure (an agent's clock ahead of ours) made the
    # worker's and the run's summary fail with a KeyError: 'camera_to_received'
    log = tmp_path / "latency.jsonl"
    ok = _ms(t_camera_ns=1_000_000_000, t_received_ns=1_002_000_000)
    ahead = _ms(t_camera_ns=9_000_000_000_000, t_received_ns=1_002_000_000)
    log.write_text("".join(json.dumps({"live": True, "ms": ms}) + "\n" for ms in (ok, ahead)))
    assert behind_from_log(log) == {"max": 0.003, "last": 0.003}
