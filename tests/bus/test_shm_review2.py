"""Shared-memory frame bus, second review: no block unmapped, no slot freed, under its user."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

from livescope.bus._shm import ShmReader, ShmRing
from tests.conftest import ROOT

# (in a fresh interpreter: the old code killed the process with SIGSEGV)
_MAPPED = """
import gc, os
def mapped(name):  # (Linux: whether this process still maps, or keeps open, the block)
    if not os.path.isdir("/proc/self/fd"):
        return "n/a"
    fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
           if os.path.islink(f"/proc/self/fd/{fd}")]
    with open("/proc/self/maps") as maps:
        return any(name in p for p in fds) or name in maps.read()
"""

_KEEP_AFTER_SUBSCRIBER_CLOSE = (
    _MAPPED
    + """
import time
import numpy as np
from livescope.bus import FramePublisher, FrameSubscriber
from livescope.schema import FrameInfo, clock_ns

pub = FramePublisher("r1", mode="shm", max_frame_bytes=64, ring_bytes=4 * 64)
sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint)
name = pub.ring.name
got, seq, deadline = None, 0, time.monotonic() + 10
while got is None and time.monotonic() < deadline:  # (until the subscription is made)
    info = FrameInfo(seq=seq, index={"t": seq}, position="p0", channel="DAPI", x_um=0.0,
        y_um=0.0, z_um=0.0, exposure_ms=10.0, pixel_size_um=0.65, sample_time_s=0.0,
        runner_time_ms=0.0, t_camera_ns=clock_ns(), hardware_triggered=False,
        added_by=None, adler32=0, shape=(8, 8), dtype="uint8", event={})
    pub.publish(np.full((8, 8), 100 + seq, np.uint8), info, clock_ns())
    got = sub.get(timeout=0.05)
    seq += 1
arr = got.array[2:, 2:]  # a view of the frame kept by the user
sub.close()
pub.close()
print("after close", int(arr.sum()) == 36 * (100 + got.seq), flush=True)
del got, arr
gc.collect()
print("unmapped", mapped(name) in (False, "n/a"), flush=True)
"""
)

_KEEP_AFTER_RING_CLOSE = (
    _MAPPED
    + """
import numpy as np
from livescope.bus import ShmRing

ring = ShmRing(4, 64)
name = ring.name
slot = ring.claim(64)
ring.write(slot, np.full(64, 7, np.uint8))
ring.publish(slot)
kept = ring.v.data[slot, :64]  # (as a `write` on the publishing thread holds one)
ring.close()
print("unlinked", not os.path.exists(os.path.join("/dev/shm", name)), flush=True)
print("after close", int(kept.sum()) == 7 * 64, flush=True)
del kept
gc.collect()
print("unmapped", mapped(name) in (False, "n/a"), flush=True)
"""
)


def run_script(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_a_frames_array_kept_after_the_subscriber_closes_stays_readable() -> None:
    """`FrameSubscriber.close` (also a re-registration) unmapped the ring under the frames'
    arrays a user still kept (np.ndarray over a buffer holds no export, so `close` did not
    refuse): reading one killed the process with SIGSEGV. The block stays mapped until the
    last of them is freed, then is unmapped and its descriptor closed."""
    done = run_script(_KEEP_AFTER_SUBSCRIBER_CLOSE)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split("\n")[:2] == ["after close True", "unmapped True"], done.stdout
    assert "Exception ignored" not in done.stderr, done.stderr[-2000:]


def test_closing_the_ring_under_a_live_array_unlinks_it_and_keeps_the_array_readable() -> None:
    """The writer's `ShmRing.close` unmapped the block under an array still over it (a write on
    the publishing thread): reading it was a SIGSEGV. The name is removed at once; the block
    is unmapped when the array is freed."""
    done = run_script(_KEEP_AFTER_RING_CLOSE)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split("\n")[:3] == ["unlinked True", "after close True", "unmapped True"]
    assert "Exception ignored" not in done.stderr, done.stderr[-2000:]


class StalledReader(ShmReader):
    """A real reader whose process stalls once, right after it checked that its place is its
    own: ``stall`` runs there (what other processes do meanwhile)."""

    stall: Callable[[], None] | None = None

    @property
    def registered(self) -> bool:
        mine = super().registered
        if self.stall is not None:
            stall, self.stall = self.stall, None
            stall()
        return mine


def put(ring: ShmRing, value: int) -> tuple[int, int]:
    slot = ring.claim(64)
    assert slot is not None
    ring.write(slot, np.full(64, value, np.uint8))
    return slot, ring.publish(slot)


@pytest.mark.parametrize(
    "late_write",
    [
        pytest.param(lambda r, slot: r.release(slot), id="release"),
        pytest.param(lambda r, slot: r.release_all(), id="release-all"),
        pytest.param(lambda r, slot: r.sweep(set(), older_than_s=0.0), id="sweep"),
    ],
)
def test_a_reader_declared_dead_in_its_check_does_not_free_the_next_readers_slots(
    late_write: Callable[[ShmReader, int], object],
) -> None:
    """A reader stalled (swapped out, stopped) between checking that its place is its own and
    giving slots back, long enough to be declared dead, its place given to the next reader
    and both slots published for that one: resumed, it cleared the holder bytes of the place,
    now the next reader's, and the writer overwrote that reader's frames in use."""
    ring = ShmRing(2, 64)
    try:
        place, token = ring.register_reader()
        stalled = StalledReader(ring.geometry, place, token)
        slot, gen = put(ring, 1)
        assert stalled.holds(slot, gen)
        nxt: list[tuple[ShmReader, list[tuple[int, int]]]] = []

        def declared_dead_and_replaced() -> None:
            ring.unregister_reader(place)  # (as `_reap_dead` does)
            again, token2 = ring.register_reader()
            assert again == place
            nxt.append((ShmReader(ring.geometry, again, token2), [put(ring, 2), put(ring, 3)]))

        stalled.stall = declared_dead_and_replaced
        late_write(stalled, slot)
        reader, frames = nxt[0]
        assert all(reader.holds(s, g) for s, g in frames)
        assert ring.claim(64) is None  # both slots still held: nothing overwritten
        assert not stalled.registered
        reader.close()
        stalled.close()
    finally:
        ring.close()
