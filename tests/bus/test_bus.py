"""The frame bus: inline and shared-memory frames, policies, drops, security."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import useq
import zmq

from livescope.bus import (
    BusSecurity,
    DecisionServer,
    FramePublisher,
    FrameSubscriber,
    OverlayPublisher,
    ShmReader,
    ShmRing,
    is_loopback,
    local_endpoint,
)
from livescope.schema import FrameInfo, LivescopeError, clock_ns


def info(seq: int, shape: tuple[int, ...] = (64, 64)) -> FrameInfo:
    return FrameInfo(
        seq=seq, index={"t": seq}, position="p0", channel="DAPI", x_um=0.0, y_um=0.0, z_um=0.0,
        exposure_ms=10.0, pixel_size_um=0.65, sample_time_s=0.0, runner_time_ms=0.0,
        t_camera_ns=clock_ns(), hardware_triggered=False, added_by=None, adler32=0,
        shape=shape, dtype="uint16", event={},
    )  # fmt: skip


def frame(seq: int, shape: tuple[int, int] = (256, 256)) -> np.ndarray:
    return (np.arange(shape[0] * shape[1], dtype=np.uint32).reshape(shape) * (seq + 1)).astype(
        np.uint16
    )


@pytest.fixture(params=["inline", "shm"])
def pubsub(request: pytest.FixtureRequest) -> Iterator[tuple[FramePublisher, FrameSubscriber]]:
    pub = FramePublisher(
        "r1", mode=request.param, max_frame_bytes=256 * 256 * 2, ring_bytes=8 * 256 * 256 * 2
    )
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint, maxlen=4)
    time.sleep(0.3)  # let the subscription reach the publisher
    yield pub, sub
    sub.close()
    pub.close()


def test_frames_arrive_intact_with_header(pubsub: tuple[FramePublisher, FrameSubscriber]) -> None:
    pub, sub = pubsub
    for seq in range(20):
        img = frame(seq)
        assert pub.publish(img, info(seq, img.shape), clock_ns())
        got = sub.get(timeout=2)
        assert got is not None
        with got:
            assert got.seq == seq
            assert got.header["run_id"] == "r1"
            assert got.header["payload"] == pub.mode
            assert got.array.dtype == np.uint16
            assert np.array_equal(got.array, img)
            assert not got.array.flags.writeable
            assert got.valid()
    stats = sub.stats()
    assert stats["received"] == 20
    assert stats["drops"] == 0
    assert set(stats["latency"]) >= {"camera_to_agent", "agent_to_sent", "sent_to_received"}


def test_every_policy_drops_oldest_and_counts(
    pubsub: tuple[FramePublisher, FrameSubscriber],
) -> None:
    pub, sub = pubsub
    for seq in range(12):  # nobody reads: the queue of 4 keeps the newest
        assert pub.publish(frame(seq), info(seq), clock_ns())
        time.sleep(0.02)  # the receiver thread releases dropped frames' slots meanwhile
    time.sleep(0.5)
    got = []
    while (f := sub.get(timeout=0.2)) is not None:
        got.append(f.seq)
        f.release()
    assert got == [8, 9, 10, 11]
    stats = sub.stats()
    assert stats["dropped_queue"] == 8
    assert stats["max_depth"] == 4
    # shared-memory slots of dropped frames were given back: the ring is free again
    for seq in range(12, 30):
        assert pub.publish(frame(seq), info(seq), clock_ns())
        f = sub.get(timeout=2)
        assert f is not None
        f.release()
    assert pub.stats()["dropped_no_slot"] == 0


def test_latest_policy_conflates() -> None:
    pub = FramePublisher("r1")
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint, policy="latest")
    time.sleep(0.3)
    for seq in range(10):
        pub.publish(frame(seq), info(seq), clock_ns())
    time.sleep(0.3)
    f = sub.get(timeout=1)
    assert f is not None
    assert f.seq == 9
    assert sub.get(timeout=0.2) is None
    assert sub.stats()["replaced"] == 9
    sub.close()
    pub.close()


def test_gaps_in_sequence_are_counted_as_upstream_drops() -> None:
    pub = FramePublisher("r1")
    sub = FrameSubscriber(pub.endpoint)
    time.sleep(0.3)
    for seq in (0, 1, 5, 6):
        pub.publish(frame(seq), info(seq), clock_ns())
    for _ in range(4):
        f = sub.get(timeout=2)
        assert f is not None
        f.release()
    assert sub.stats()["dropped_upstream"] == 3
    sub.close()
    pub.close()


def test_shm_ring_drops_when_all_slots_are_held_and_reaps_dead_readers() -> None:
    ring = ShmRing(3, 1024, dead_after_s=0.3)
    reader = ShmReader(ring.geometry, *ring.register_reader())
    for _ in range(3):
        slot = ring.claim(100)
        assert slot is not None
        ring.write(slot, np.ones(50, np.uint16))
        ring.publish(slot)
    assert ring.claim(100) is None  # the reader holds all three
    time.sleep(0.4)  # the reader stops beating: declared dead, its holds dropped
    assert ring.claim(100) is not None
    assert ring.readers_declared_dead == 1
    assert not reader.registered  # it finds out, and touches the ring no more
    assert not reader.heartbeat()
    other = ShmReader(ring.geometry, *ring.register_reader())  # takes the freed place
    slot = ring.claim(100)
    assert slot is not None
    gen = ring.publish(slot)
    assert other.holds(slot, gen)
    reader.release_all()  # the dead reader's release must not free the new reader's hold
    reader.close()
    assert other.holds(slot, gen)
    other.close()
    ring.close()


def test_shm_generation_detects_reuse() -> None:
    ring = ShmRing(2, 64)
    reader = ShmReader(ring.geometry, *ring.register_reader())
    slot = ring.claim(8)
    assert slot is not None
    ring.write(slot, np.arange(4, dtype=np.uint16))
    gen = ring.publish(slot)
    assert reader.holds(slot, gen)
    view = reader.view(slot, (4,), "uint16")
    assert view.tolist() == [0, 1, 2, 3]
    reader.release(slot)
    ring.write(slot, np.zeros(4, np.uint16))
    ring.publish(slot)
    assert reader.generation(slot) != gen
    assert not reader.holds(slot, gen)
    del view
    reader.close()
    ring.close()


def test_frames_too_large_for_the_ring_are_refused() -> None:
    ring = ShmRing(2, 64)
    with pytest.raises(LivescopeError, match="exceeds"):
        ring.claim(65)
    ring.close()


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True),
        ("ipc:///tmp/x", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://192.168.1.10:5555", False),
    ],
)
def test_loopback_detection(endpoint: str, loopback: bool) -> None:
    assert is_loopback(endpoint) is loopback


def test_network_bind_needs_curve_keys() -> None:
    with pytest.raises(LivescopeError, match="without CURVE keys"):
        FramePublisher("r1", endpoint="tcp://0.0.0.0:*")


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("tcp://127.0.0.1:abc", "Invalid argument"),
        ("ipc:///no/such/folder/frames", "No such file or directory"),
    ],
)
def test_an_endpoint_that_cannot_be_bound_is_named(endpoint: str, why: str) -> None:
    with pytest.raises(LivescopeError, match=f"cannot listen on {endpoint}: {why}"):
        FramePublisher("r1", endpoint=endpoint)


@pytest.mark.parametrize("endpoint", ["notanendpoint", "127.0.0.1:5555", "udp://127.0.0.1:5"])
def test_what_is_not_an_endpoint_is_said_to_be_none(endpoint: str) -> None:
    with pytest.raises(LivescopeError, match=f"'{endpoint}' is not a ZeroMQ endpoint: give tcp"):
        FramePublisher("r1", endpoint=endpoint)


def test_an_endpoint_in_use_is_named_and_the_agent_writes_nothing(tmp_path: Path) -> None:
    from livescope.schema import load_profile
    from livescope.scope import ScopeAgent, SimulatedMicroscope

    taken = zmq.Context.instance().socket(zmq.REP)
    port = taken.bind_to_random_port("tcp://127.0.0.1")
    try:
        prof = load_profile("sim")
        seq = useq.MDASequence(channels=["DAPI"], time_plan={"interval": 0, "loops": 2})
        in_use = f"cannot listen on tcp://127.0.0.1:{port}: Address already in use"
        with SimulatedMicroscope(prof) as sim, pytest.raises(LivescopeError, match=in_use):
            ScopeAgent(sim.core, prof, seq, tmp_path / "run", sim=sim, bus="inline",
                       endpoints={"decisions": f"tcp://127.0.0.1:{port}"})  # fmt: skip
    finally:
        taken.close(0)
    assert not (tmp_path / "run").exists()  # no half-made recording to refuse a rerun


def test_curve_refuses_a_client_without_the_right_key() -> None:
    server_public, server_secret = BusSecurity.generate()
    client_public, client_secret = BusSecurity.generate()
    server = BusSecurity(server_public, server_secret, allowed_clients=(client_public,))
    pub = FramePublisher(
        "r1", endpoint="tcp://0.0.0.0:*", control_endpoint="tcp://0.0.0.0:*", security=server
    )
    port = pub.endpoint.rsplit(":", 1)[1]
    cport = pub.control_endpoint.rsplit(":", 1)[1]
    good = FrameSubscriber(
        f"tcp://127.0.0.1:{port}",
        control_endpoint=f"tcp://127.0.0.1:{cport}",
        security=BusSecurity(
            server_public, client_public=client_public, client_secret=client_secret
        ),
    )
    other_public, _ = BusSecurity.generate()
    # right server key but a client key the server does not allow
    stranger = FrameSubscriber(
        f"tcp://127.0.0.1:{port}",
        security=BusSecurity(server_public, client_public=other_public, client_secret=_),
    )
    # no CURVE at all
    ctx = zmq.Context()
    plain = ctx.socket(zmq.SUB)
    plain.setsockopt(zmq.SUBSCRIBE, b"")
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.5)
    for seq in range(5):
        pub.publish(frame(seq), info(seq), clock_ns())
        time.sleep(0.02)
    f = good.get(timeout=2)
    assert f is not None
    f.release()
    assert stranger.get(timeout=0.5) is None
    assert plain.poll(500) == 0
    plain.close()
    ctx.term()
    for s in (good, stranger):
        s.close()
    pub.close()
    server.close()


def test_unreleased_frames_are_released_when_collected() -> None:
    import gc

    pub = FramePublisher("r1", mode="shm", max_frame_bytes=64 * 64 * 2, ring_bytes=4 * 64 * 64 * 2)
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint, maxlen=64)
    time.sleep(0.3)
    for seq in range(12):  # 4 slots: only works if forgotten frames give theirs back
        assert pub.publish(frame(seq, (64, 64)), info(seq, (64, 64)), clock_ns()), seq
        f = sub.get(timeout=2)
        assert f is not None
        del f
        gc.collect()
    sub.close()
    pub.close()


@pytest.mark.skipif(not local_endpoint("x").startswith("ipc://"), reason="no ipc on this platform")
def test_closing_the_bus_removes_its_socket_files() -> None:
    pub = FramePublisher("r1")
    server = DecisionServer(lambda decision, t_rx_ns: pytest.fail("no decision was sent"))
    overlay = OverlayPublisher("r1")
    files = [
        Path(e.removeprefix("ipc://"))
        for e in (pub.endpoint, pub.control_endpoint, server.endpoint, overlay.endpoint)
    ]
    assert all(f.exists() for f in files)
    for closable in (pub, server, overlay):
        closable.close()
    assert not any(f.exists() for f in files)


_BIND_AND_HANG = """
import os, sys, time, zmq
path = sys.argv[1].replace("PID", str(os.getpid()))
sock = zmq.Context().socket(zmq.PUB)
sock.bind("ipc://" + path)
print(path, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not local_endpoint("x").startswith("ipc://"), reason="no ipc on this platform")
def test_socket_files_of_killed_processes_are_removed_and_live_ones_kept() -> None:
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    from livescope.bus._endpoints import STALE_AFTER_S, remove_stale_ipc_files

    folder = tempfile.mkdtemp(prefix="ls-")  # (its own: another run's sweep stays out; short)

    def bound_by_a_process(name: str) -> tuple[subprocess.Popen[str], Path]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _BIND_AND_HANG, os.path.join(folder, name)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        return proc, Path(proc.stdout.readline().strip())

    def kill(proc: subprocess.Popen[str]) -> None:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()

    old = time.time() - STALE_AFTER_S - 5
    named = "livescope-sweeptest-PID-0123456789ab"  # as local_endpoint names them
    killed, killed_file = bound_by_a_process(named)
    kill(killed)
    unnamed, unnamed_file = bound_by_a_process("livescope-sweeptest-0123456789ab")  # (older)
    kill(unnamed)
    young, young_file = bound_by_a_process(named)
    kill(young)
    live, live_file = bound_by_a_process(named)
    plain_file = Path(folder) / "livescope-sweeptest-plain"
    plain_file.write_text("not a socket")
    try:
        for f in (killed_file, unnamed_file, live_file, plain_file):
            os.utime(f, (old, old))
        assert killed_file.exists()  # ZeroMQ leaves it behind when killed
        removed = remove_stale_ipc_files(folder=folder)
        assert sorted(removed) == sorted([str(killed_file), str(unnamed_file)])
        assert not killed_file.exists()
        assert young_file.exists()  # too young to tell: may be binding right now
        assert live_file.exists()  # its process lives (and listens on it)
        assert plain_file.exists()  # not a socket
        with zmq.Context() as ctx, ctx.socket(zmq.SUB) as sub:  # the live one still works
            sub.connect(f"ipc://{live_file}")
    finally:
        kill(live)
        shutil.rmtree(folder, ignore_errors=True)


def test_local_endpoints_name_their_process() -> None:
    import os

    endpoint = local_endpoint("frames", transport="ipc")
    assert Path(endpoint.removeprefix("ipc://")).name.startswith(f"livescope-frames-{os.getpid()}-")


@pytest.mark.skipif(not local_endpoint("x").startswith("ipc://"), reason="no ipc on this platform")
def test_the_transport_of_local_endpoints_can_be_chosen_by_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIVESCOPE_TRANSPORT", "TCP ")
    assert local_endpoint("frames") == "tcp://127.0.0.1:*"
    pub = FramePublisher("r1")  # (bound: its port chosen)
    try:
        assert pub.endpoint.startswith("tcp://127.0.0.1:")
        assert not pub.endpoint.endswith(":*")
    finally:
        pub.close()
    assert local_endpoint("frames", transport="ipc").startswith("ipc://")  # (an argument wins)
    monkeypatch.setenv("LIVESCOPE_TRANSPORT", "udp")
    with pytest.raises(LivescopeError, match=r"transport 'udp' \(from the LIVESCOPE_TRANSPORT"):
        local_endpoint("frames")
    monkeypatch.setenv("LIVESCOPE_TRANSPORT", "")
    assert local_endpoint("frames").startswith("ipc://")


def test_pending_counts_the_frames_waiting_to_be_taken() -> None:
    pub = FramePublisher("r1")
    sub = FrameSubscriber(pub.endpoint, maxlen=8)
    try:
        time.sleep(0.3)
        assert sub.pending() == 0
        for seq in range(3):
            img = frame(seq, (16, 16))
            assert pub.publish(img, info(seq, img.shape), clock_ns())
        deadline = time.monotonic() + 2
        while sub.pending() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sub.pending() == 3
        got = sub.get(timeout=1)
        assert got is not None
        got.release()
        assert sub.pending() == 2
    finally:
        sub.close()
        pub.close()


def test_a_receiver_that_stops_on_an_error_says_so_instead_of_going_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # declared dead by the writer, and registering again fails (faults injected): the
    # worker's assembler used to spin on get() returning None at once, analysing nothing
    pub = FramePublisher("r1", mode="shm", max_frame_bytes=64 * 64 * 2, ring_bytes=4 * 64 * 64 * 2)
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint)
    try:
        time.sleep(0.3)
        pub.publish(frame(0, (64, 64)), info(0), clock_ns())
        f = sub.get(timeout=2)
        assert f is not None
        f.release()

        def refused(ctx):  # type: ignore[no-untyped-def]
            raise LivescopeError("the writer does not answer")

        assert sub.reader is not None
        monkeypatch.setattr(sub, "_hello", refused)
        monkeypatch.setattr(sub.reader, "heartbeat", lambda: False)
        with pytest.raises(LivescopeError, match=r"the frame receiver stopped: .*does not answer"):
            sub.get(timeout=3)
    finally:
        sub.close()
        pub.close()


def test_a_reader_declared_dead_has_its_frames_overwritten_told_and_misses_none_unsaid() -> None:
    """A stalled reader that the writer declared dead (its place given up) while it still
    held a frame: once that slot is reused the frame says it is no longer valid (the worker
    then reads it from the recording), every frame sent meanwhile is either received or
    counted as not held, and the reader registers again."""
    pub = FramePublisher(
        "r1", mode="shm", max_frame_bytes=256 * 256 * 2, ring_bytes=4 * 256 * 256 * 2
    )
    sub = FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint, maxlen=16)
    try:
        time.sleep(0.3)
        assert pub.publish(frame(0), info(0), clock_ns())
        first = sub.get(timeout=2)
        assert first is not None
        assert first.valid()
        assert pub.ring is not None
        assert sub.reader is not None
        pub.ring.unregister_reader(sub.reader.index)  # as the writer does after a stall
        for seq in range(1, 5):  # 4 slots: the first frame's slot is reused
            assert pub.publish(frame(seq), info(seq), clock_ns())
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and (
            sub.counts["received"] + sub.counts["not_held"] < 5
            or sub.reader is None
            or not sub.reader.registered
        ):
            time.sleep(0.01)
        assert not first.valid()
        first.release()  # (a stale frame's release frees nothing of the reader's new place)
        assert sub.counts["received"] + sub.counts["not_held"] == 5  # none lost unsaid
        assert sub.counts["reregistered"] == 1
        assert sub.reader is not None
        assert sub.reader.registered
        assert pub.publish(frame(5), info(5), clock_ns())  # held again under the new place
        got = None
        while (nxt := sub.get(timeout=2)) is not None:
            if nxt.seq == 5:
                got = nxt
                break
            nxt.release()
        assert got is not None
        assert got.valid()
        assert np.array_equal(got.array, frame(5))
        sub.close()  # its receiver thread ends: nothing else touches `reader` now
        sub.reader = None  # as between two registrations: the slot cannot be checked
        assert not got.valid()
        got.release()
    finally:
        sub.close()
        pub.close()


def _hello_refusal(control: str, security: BusSecurity | None = None, **kw: object) -> str:
    with pytest.raises(LivescopeError) as info:
        FrameSubscriber("tcp://127.0.0.1:1", control_endpoint=control, security=security, **kw)
    return str(info.value)


def test_a_worker_told_why_the_bus_control_does_not_answer() -> None:
    # a CURVE key that does not fit got no answer, said as "no answer" only, as did no agent
    server_public, server_secret = BusSecurity.generate()
    client_public, client_secret = BusSecurity.generate()
    server = BusSecurity(server_public, server_secret, allowed_clients=(client_public,))
    pub = FramePublisher(
        "r1", endpoint="tcp://0.0.0.0:*", control_endpoint="tcp://0.0.0.0:*", security=server
    )
    control = f"tcp://127.0.0.1:{pub.control_endpoint.rsplit(':', 1)[1]}"
    other_public, other_secret = BusSecurity.generate()
    try:
        stranger = BusSecurity(
            server_public, client_public=other_public, client_secret=other_secret
        )
        assert "not among the agent's allowed clients" in _hello_refusal(control, stranger)
        wrong_server = BusSecurity(other_public, client_public=client_public,
                                   client_secret=client_secret)  # fmt: skip
        assert "server public key given is not the agent's" in _hello_refusal(control, wrong_server)
        assert "listens with CURVE keys; give its server public key" in _hello_refusal(control)
    finally:
        pub.close()
        server.close()
    assert "nothing listens there" in _hello_refusal(control)


def test_a_worker_refuses_the_bus_of_another_run() -> None:
    # a bus.json left by an ended run names an address another run's agent now listens at
    pub = FramePublisher("new-run")
    try:
        why = _hello_refusal(pub.control_endpoint, run_id="old-run")
        assert "belongs to run 'new-run', not 'old-run'" in why
        FrameSubscriber(pub.endpoint, control_endpoint=pub.control_endpoint,
                        run_id="new-run").close()  # fmt: skip
    finally:
        pub.close()
