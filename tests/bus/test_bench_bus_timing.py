"""`livescope bench bus` times every mode from the publish call, not from a later point.

The shared-memory bus stamps ``t_sent_ns`` once its frame is copied into the
ring (at 2048² about 1 ms, more than the latency then reported), so a latency
timed from there left the copy out of shm's figure but not of the others'.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from livescope.bus import _bench, _publisher
from livescope.bus._publisher import FramePublisher

DELAY_S = 0.03  # (far above a 64² frame's send → receive time on any machine)


def test_the_shm_latency_includes_the_copy_into_the_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    class SlowRing(FramePublisher):
        """A shared-memory publisher whose copy into the ring takes `DELAY_S`."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            assert self.ring is not None
            write = self.ring.write

            def slow_write(*a: Any, **k: Any) -> Any:
                time.sleep(DELAY_S)
                return write(*a, **k)

            self.ring.write = slow_write  # type: ignore[method-assign]

    monkeypatch.setattr(_bench, "FramePublisher", SlowRing)
    r = _bench._run_mode("shm", np.zeros((2, 64, 64), np.uint16), 4)
    assert r["received"] == 4, r
    assert r["latency_p50_ms"] >= DELAY_S * 1e3, (
        f"bench bus: shm latency_p50_ms {r['latency_p50_ms']} leaves out a "
        f"{DELAY_S * 1e3:g} ms copy into the ring (timed from t_sent_ns, not the publish call)"
    )


@pytest.mark.parametrize("mode", ["inline", "shm"])
def test_every_bus_mode_is_timed_from_the_publish_call(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wire = _publisher._wire_array  # (the first step of every publish, in either mode)

    def slow_wire(*a: Any, **k: Any) -> Any:
        time.sleep(DELAY_S)
        return wire(*a, **k)

    monkeypatch.setattr(_publisher, "_wire_array", slow_wire)
    r = _bench._run_mode(mode, np.zeros((2, 64, 64), np.uint16), 4)
    assert r["received"] == 4, r
    assert r["latency_p50_ms"] >= DELAY_S * 1e3, (
        f"bench bus: {mode} latency_p50_ms {r['latency_p50_ms']} leaves out "
        f"{DELAY_S * 1e3:g} ms spent in publish: not timed from the publish call"
    )
