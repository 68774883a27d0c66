"""The shared-memory ring in ``/dev/shm``: room for it, rings left by killed processes, and a
worker that cannot map the agent's ring."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from livescope.bus import FramePublisher, FrameSubscriber
from livescope.schema import LivescopeError

SHM = Path("/dev/shm")

linux_only = pytest.mark.skipif(
    sys.platform != "linux" or not SHM.is_dir(), reason="Linux keeps shared memory in /dev/shm"
)


def own_rings() -> set[str]:
    return {p.name for p in SHM.glob(f"lvs_{os.getpid()}_*")}


@linux_only
def test_a_ring_larger_than_the_free_shared_memory_is_refused_with_the_remedies() -> None:
    """A ring larger than /dev/shm's free space (Docker's 64 MiB) killed the process with
    SIGBUS when its pages were touched; it is refused before anything is allocated."""
    st = os.statvfs(SHM)
    if st.f_blocks == 0:
        pytest.skip("/dev/shm has no size limit here")
    free = st.f_bavail * st.f_frsize
    before = own_rings()
    t0 = time.monotonic()
    # 4 slots of a quarter of the free space and a byte: the ring needs more than is free
    with pytest.raises(LivescopeError) as err:
        FramePublisher("r1", mode="shm", max_frame_bytes=free // 4 + 1)
    assert time.monotonic() - t0 < 5  # (refused, not filled page by page)
    message = str(err.value)
    assert re.search(r"ring needs \d+ MiB but /dev/shm has \d+ MiB free", message), message
    assert "--bus inline" in message
    assert "docker run --shm-size" in message
    assert own_rings() == before  # nothing made, nothing left


@linux_only
def test_a_worker_that_cannot_map_the_ring_says_why_and_gives_its_place_back() -> None:
    """A worker in another container or namespace than the agent finds no ring of that name;
    it used to fail with a bare FileNotFoundError, keeping a reader place it never used."""
    pub = FramePublisher("r1", mode="shm", max_frame_bytes=64)
    try:
        assert pub.ring is not None
        (SHM / pub.ring.name).unlink()  # what a worker in another namespace sees: no such block
        for _ in range(pub.ring.v.max_readers + 1):  # (places given back: never "all taken")
            with pytest.raises(LivescopeError) as err:
                FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint)
            message = str(err.value)
            assert f"cannot map the agent's shared memory '{pub.ring.name}'" in message
            assert "bus mode shm" in message
            assert "--bus inline" in message
            assert not pub.ring.v.readers[:, 1].any()  # its place is free again
    finally:
        pub.close()


_MAKE_RING_AND_HANG = """
import time
from livescope.bus import ShmRing
ring = ShmRing(2, 4096)
print(ring.name, flush=True)
time.sleep(600)
"""


@linux_only
def test_the_ring_of_a_killed_process_group_is_removed_by_the_next_process() -> None:
    """Python's resource tracker unlinks the ring of a killed process, unless it is killed
    with it (the process group: a closed terminal, SIGKILL): the ring stayed in /dev/shm."""
    from livescope.bus._endpoints import STALE_AFTER_S

    maker = subprocess.Popen(
        [sys.executable, "-c", _MAKE_RING_AND_HANG],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert maker.stdout is not None
    name = maker.stdout.readline().strip()
    left = SHM / name
    try:
        os.killpg(maker.pid, signal.SIGKILL)  # the maker and its resource tracker
        maker.wait()
        maker.stdout.close()
        time.sleep(0.2)
        assert left.exists()  # nobody was left to unlink it
        old = time.time() - STALE_AFTER_S - 5
        os.utime(left, (old, old))
        subprocess.run(
            [sys.executable, "-c", "from livescope.bus import ShmRing; ShmRing(2, 64).close()"],
            check=True, timeout=60,
        )  # fmt: skip
        assert not left.exists()  # the first ring of the next process removed it
        assert name.startswith(f"lvs_{maker.pid}_")  # (named after its maker)
    finally:
        if maker.poll() is None:
            os.killpg(maker.pid, signal.SIGKILL)
            maker.wait()
        left.unlink(missing_ok=True)


@linux_only
def test_the_sweep_takes_only_old_unlocked_rings_of_ended_processes(tmp_path: Path) -> None:
    import fcntl

    from livescope.bus._endpoints import STALE_AFTER_S
    from livescope.bus._shm import remove_stale_rings

    ended = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # (no process has it)
    old = time.time() - STALE_AFTER_S - 5

    def ring(name: str, *, age: float | None = old) -> Path:
        path = tmp_path / name
        path.write_bytes(b"\0" * 64)
        if age is not None:
            os.utime(path, (age, age))
        return path

    stale = ring(f"lvs_{ended}_0123456789abcdef")
    young = ring(f"lvs_{ended}_1123456789abcdef", age=None)  # its maker may not lock it yet
    live = ring(f"lvs_{os.getpid()}_2123456789abcdef")
    locked = ring(f"lvs_{ended}_3123456789abcdef")  # a maker in another PID namespace
    older_style = ring("lvs_4123456789abcdef")  # (livescope before the maker's id)
    other = ring(f"xyz_{ended}_5123456789abcdef")
    folder = tmp_path / f"lvs_{ended}_6123456789abcdef"
    folder.mkdir()
    os.utime(folder, (old, old))
    fd = os.open(locked, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        assert remove_stale_rings(folder=str(tmp_path)) == [str(stale)]
    finally:
        os.close(fd)
    assert not stale.exists()
    assert all(p.exists() for p in (young, live, locked, older_style, other, folder))
