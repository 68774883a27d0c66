"""The overlay bus: publisher → subscriber over real sockets, latest wins, bad messages."""

from __future__ import annotations

import json
import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from livescope.bus import (
    OVERLAY_FILE,
    OverlayMessage,
    OverlayPublisher,
    OverlaySubscriber,
    decode_overlay,
)
from livescope.schema import HeaderError, LivescopeError
from tests.conftest import wait_for


def header(seq: int, position: str = "p0", **extra: Any) -> dict[str, Any]:
    return {"seq": seq, "position": position, "t": seq, "sample_time_s": 60.0 * seq, **extra}


def arrays(seq: int, shape: tuple[int, int] = (256, 256)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seq)
    return {
        "raw:DAPI": rng.integers(0, 4096, shape, dtype=np.uint16),
        "raw:Phase": rng.integers(0, 65535, (8, 8), dtype=np.uint16),  # < 64 KiB: copied by pyzmq
        "labels": rng.integers(0, 50, shape, dtype=np.int32),
        "stain": rng.random(shape, dtype=np.float32).astype(np.float16),
    }


def connected(pub: OverlayPublisher, sub: OverlaySubscriber) -> None:
    """Publish pings until the subscription has reached the publisher (slow joiner)."""

    def ping() -> bool:
        pub.publish(header(0, "ping"), {})
        return sub.latest("ping") is not None

    wait_for(ping)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[OverlayPublisher, OverlaySubscriber]]:
    with OverlayPublisher("run-1", run_dir=tmp_path) as pub, OverlaySubscriber(tmp_path) as sub:
        connected(pub, sub)
        yield pub, sub


def test_round_trip_keeps_arrays_and_header(
    pair: tuple[OverlayPublisher, OverlaySubscriber],
) -> None:
    pub, sub = pair
    sent = arrays(7)
    cells = [
        {"label": 3, "track": 12, "y": 10.5, "x": 20.0, "state": "metaphase", "p_mitosis": 0.9},
        {"label": np.int32(4), "track": 13, "y": np.float32(30.0), "x": 1, "state": None,
         "p_mitosis": None},
    ]  # fmt: skip
    tails = {"12": np.array([[8.0, 18.0], [10.5, 20.0]]), "13": [[30.0, 1.0]]}
    decisions = [{"rule": "zoom-on-mitosis", "y": 10.5, "x": 20.0, "accepted": True, "reason": ""}]
    assert pub.publish(header(7, "p1", cells=cells, tails=tails, decisions=decisions), sent)
    msg = wait_for(lambda: sub.latest("p1"))
    assert isinstance(msg, OverlayMessage)
    assert msg.seq == 7
    assert msg.position == "p1"
    h = msg.header
    assert (h["v"], h["run_id"], h["t"], h["sample_time_s"]) == (1, "run-1", 7, 420.0)
    assert [a["name"] for a in h["arrays"]] == list(sent)
    assert h["cells"][1] == {"label": 4, "track": 13, "y": 30.0, "x": 1, "state": None,
                             "p_mitosis": None}  # fmt: skip
    assert h["tails"] == {"12": [[8.0, 18.0], [10.5, 20.0]], "13": [[30.0, 1.0]]}
    assert h["decisions"] == decisions
    assert set(msg.arrays) == set(sent)
    for name, arr in sent.items():
        got = msg.arrays[name]
        assert got.dtype == arr.dtype
        assert np.array_equal(got, arr)
        assert not got.flags.writeable
    assert sub.latest() is msg  # the newest of any position
    assert pub.stats()["subscribed"]


def test_latest_per_position_wins_after_a_burst(
    pair: tuple[OverlayPublisher, OverlaySubscriber],
) -> None:
    pub, sub = pair
    for seq in range(1, 301):  # (faster than it can read: it misses some, replaces many)
        assert pub.publish(header(seq, f"p{seq % 3}"), arrays(seq % 4, (64, 64)))
    # once it has caught up, the newest of each position is the one it shows
    seq = 301
    while not ((m := sub.latest("sync")) and m.seq == seq):
        seq += 1
        pub.publish(header(seq, "sync"), {})
        time.sleep(0.01)
    last = {f"p{k % 3}": k for k in range(seq + 1, seq + 4)}
    for pos, k in last.items():
        assert pub.publish(header(k, pos), arrays(k % 4, (64, 64)))
    wait_for(lambda: all((m := sub.latest(p)) and m.seq == s for p, s in last.items()))
    assert sub.latest().seq == max(last.values())  # type: ignore[union-attr]
    assert sub.positions() == ["ping", "p1", "p2", "p0", "sync"]
    stats = sub.stats()
    assert stats["replaced"] > 0
    assert stats["rejected"] == stats["errors"] == 0
    got = sub.latest("p1")
    assert got is not None
    assert np.array_equal(got.arrays["labels"], arrays(got.seq % 4, (64, 64))["labels"])


def test_a_viewer_that_stops_reading_blocks_neither_the_publisher_nor_the_others(
    tmp_path: Path,
) -> None:
    # (with XPUB_NODROP a message one viewer had no room for went to none: a viewer that
    # stopped reading, in a debugger or asleep on a network, froze every other viewer)
    with OverlayPublisher("run-1", run_dir=tmp_path) as pub, OverlaySubscriber(tmp_path) as sub:
        ctx = zmq.Context()
        stuck = ctx.socket(zmq.SUB)  # subscribed, never reads
        stuck.setsockopt(zmq.RCVHWM, 1)
        stuck.setsockopt(zmq.SUBSCRIBE, b"")
        stuck.connect(pub.endpoint)
        try:
            seq = 0

            def both_joined() -> bool:  # (the stuck one has taken a message: it is there)
                nonlocal seq
                seq += 1
                pub.publish(header(seq, "ping"), {})
                return stuck.poll(0) != 0

            wait_for(both_joined)
            big = {"raw:DAPI": np.zeros((512, 512), np.uint16)}
            t0 = time.perf_counter()
            for _ in range(200):
                seq += 1
                assert pub.publish(header(seq), big)
            elapsed = time.perf_counter() - t0
            # the stuck one's queue has long been full; the other still gets the newest
            while not ((m := sub.latest("sync")) and m.seq == seq):
                seq += 1
                pub.publish(header(seq, "sync"), {})
                time.sleep(0.01)
            seq += 1
            assert pub.publish(header(seq), big)
            wait_for(lambda: (m := sub.latest("p0")) is not None and m.seq == seq)
        finally:
            stuck.close(0)
            ctx.term()
    assert elapsed < 2.0
    assert pub.stats()["dropped"] == 0


def test_overlay_file_is_written_then_removed(tmp_path: Path) -> None:
    pub = OverlayPublisher("run-9", run_dir=tmp_path)
    info = json.loads((tmp_path / OVERLAY_FILE).read_text(encoding="utf-8"))
    assert info == {"run_id": "run-9", "endpoint": pub.endpoint, "v": 1}
    assert pub.endpoint.startswith(("ipc://", "tcp://127.0.0.1:"))
    assert not list(tmp_path.glob("*.tmp"))
    pub.close()
    assert not (tmp_path / OVERLAY_FILE).exists()
    pub.close()  # idempotent


def test_a_restarted_publisher_removes_the_socket_file_a_killed_one_left(tmp_path: Path) -> None:
    import tempfile
    import uuid

    from livescope.bus import local_endpoint

    run = tmp_path / "run"
    run.mkdir()
    for name, removed in (("livescope-overlay-", True), ("someone-elses-", False)):
        left = Path(tempfile.gettempdir()) / f"{name}{uuid.uuid4().hex[:12]}"
        left.write_text("")  # the socket file of a worker killed without closing
        (run / OVERLAY_FILE).write_text(json.dumps({"run_id": "r", "endpoint": f"ipc://{left}"}))
        pub = OverlayPublisher("r", run_dir=run)
        try:
            assert left.exists() is not removed
            assert json.loads((run / OVERLAY_FILE).read_text())["endpoint"] == pub.endpoint
        finally:
            pub.close()
            left.unlink(missing_ok=True)
    if local_endpoint("overlay").startswith("ipc://"):  # (and its own file goes on close)
        assert not Path(pub.endpoint[len("ipc://") :]).exists()
    (run / OVERLAY_FILE).write_text("not json")  # what cannot be read is only replaced
    OverlayPublisher("r", run_dir=run).close()


def test_subscriber_waits_for_the_overlay_file(tmp_path: Path) -> None:
    with pytest.raises(LivescopeError, match=r"no overlay\.json"):
        OverlaySubscriber(tmp_path, timeout_s=0.2)
    pubs: list[OverlayPublisher] = []
    later = threading.Timer(0.3, lambda: pubs.append(OverlayPublisher("r", run_dir=tmp_path)))
    later.start()
    try:
        with OverlaySubscriber(tmp_path, timeout_s=5) as sub:
            later.join()
            assert sub.run_id == "r"
            assert sub.endpoint == pubs[0].endpoint
            connected(pubs[0], sub)
    finally:
        later.join()
        for p in pubs:
            p.close()
    # a finished run: said at once, not after the wait
    (tmp_path / "summary.json").write_text("{}")
    t0 = time.monotonic()
    with pytest.raises(LivescopeError, match=r"holds a finished run \(summary\.json\).*report"):
        OverlaySubscriber(tmp_path, timeout_s=30)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    ("hdr", "arrs", "match"),
    [
        pytest.param({"seq": 0, "position": "p"}, {}, "lacks t", id="missing t"),
        pytest.param(header(0, cells=[{"p_mitosis": float("nan")}]), {}, "JSON", id="nan"),
        pytest.param(header(0, cells=[object()]), {}, "JSON", id="not json"),
        pytest.param(header(0), {"raw:x": np.zeros((4, 4))}, "float64", id="float64"),
        pytest.param(header(0), {"raw:x": np.zeros((0, 4), np.uint8)}, "supported", id="empty"),
    ],
)
def test_publisher_refuses_what_it_cannot_send(
    hdr: dict[str, Any], arrs: dict[str, np.ndarray], match: str
) -> None:
    with OverlayPublisher("r") as pub, pytest.raises(LivescopeError, match=match):
        pub.publish(hdr, arrs)


# ------------------------------------------------------------------ validation


def raw_message(
    hdr: dict[str, Any] | None = None, bufs: list[bytes] | None = None, **over: Any
) -> list[bytes]:
    h = hdr or {
        "v": 1, "run_id": "run-1", "seq": 5, "position": "p0", "t": 2, "sample_time_s": None,
        "arrays": [{"name": "labels", "dtype": "int32", "shape": [4, 4]}],
        "cells": [{"label": 1, "track": 3, "y": 1.0, "x": 2.0, "state": None, "p_mitosis": 0.1}],
        "tails": {"3": [[1.0, 2.0]]},
        "decisions": [{"rule": "r", "y": 1, "x": 2, "accepted": False, "reason": "budget"}],
    }  # fmt: skip
    h = {**h, **over}
    for key in [k for k, v in over.items() if v is ...]:
        del h[key]
    return [json.dumps(h).encode(), *(bufs if bufs is not None else [bytes(64)])]


BAD = [
    pytest.param([b"{not json", bytes(64)], "not JSON", id="bad json"),
    pytest.param([pickle.dumps({"v": 1}), bytes(64)], "not JSON", id="pickle"),
    pytest.param([b"[1, 2]", bytes(64)], "JSON object", id="not an object"),
    pytest.param(raw_message(v=2), "version", id="wrong version"),
    pytest.param(raw_message(seq=...), "seq", id="missing seq"),
    pytest.param(raw_message(position=7), "position", id="position not str"),
    pytest.param(raw_message(t=-1), "t is", id="negative t"),
    pytest.param(raw_message(seq=True), "seq", id="bool seq"),
    pytest.param(raw_message(sample_time_s="soon"), "sample_time_s", id="bad sample time"),
    pytest.param(raw_message(bufs=[bytes(63)]), "buffer is 63 bytes", id="short buffer"),
    pytest.param(raw_message(bufs=[]), "carries 0 buffers", id="missing buffer"),
    pytest.param(raw_message(bufs=[bytes(64)] * 2), "carries 2", id="extra buffer"),
    pytest.param(
        raw_message(arrays=[{"name": "labels", "dtype": "object", "shape": [4, 4]}]),
        "dtype",
        id="unknown dtype",
    ),
    pytest.param(
        raw_message(arrays=[{"name": "labels", "dtype": "int32", "shape": [4, 0]}]),
        "shape",
        id="zero side",
    ),
    pytest.param(raw_message(cells=[{"label": 1}]), "cells", id="cell missing fields"),
    pytest.param(raw_message(cells={"label": 1}), "cells", id="cells not a list"),
    pytest.param(raw_message(tails={"x": [[1, 2]]}), "track ids", id="tail key not an id"),
    pytest.param(raw_message(tails={"3": [[1, 2, 3]]}), "points", id="tail point 3d"),
    pytest.param(
        raw_message(decisions=[{"rule": "r", "y": 1, "x": 2, "accepted": 1, "reason": ""}]),
        "decisions",
        id="accepted not bool",
    ),
]


@pytest.mark.parametrize(("parts", "match"), BAD)
def test_decode_rejects_bad_messages(parts: list[bytes], match: str) -> None:
    with pytest.raises(HeaderError, match=match):
        decode_overlay(parts[0], parts[1:])


def test_decode_accepts_a_good_message_without_copying() -> None:
    buf = bytearray(np.arange(16, dtype=np.int32).tobytes())
    msg = decode_overlay(raw_message(bufs=[])[0], [buf])
    assert msg.arrays["labels"][3, 3] == 15
    buf[-4:] = np.int32(99).tobytes()
    assert msg.arrays["labels"][3, 3] == 99  # a view of the message buffer
    assert decode_overlay(raw_message(tails={"-1": []}, extra_field=1)[0], [bytes(64)])


def test_bad_messages_are_counted_not_fatal(tmp_path: Path) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    endpoint = pub.getsockopt(zmq.LAST_ENDPOINT).decode()  # type: ignore[union-attr]
    info = {"run_id": "run-1", "endpoint": endpoint, "v": 1}
    (tmp_path / OVERLAY_FILE).write_text(json.dumps(info), encoding="utf-8")
    try:
        with OverlaySubscriber(tmp_path) as sub:
            wait_for(lambda: pub.send_multipart(raw_message(seq=0)) or sub.latest())
            bad = [p.values[0] for p in BAD] + [raw_message(run_id="another-run")]
            for parts in bad:
                pub.send_multipart(parts)
            pub.send_multipart(raw_message(seq=9))
            wait_for(lambda: (m := sub.latest("p0")) and m.seq == 9)  # in order: after the bad
            stats = sub.stats()
            assert stats["rejected"] == len(bad)
            assert stats["errors"] == 0
            assert stats["alive"]
            assert stats["messages"] == stats["received"] + len(bad)
            assert wait_for(lambda: sub.stats()["link"] == "connected")
            assert sub.link_problem(grace_s=0.0) is None  # the newest was taken
            # a worker of another protocol version: the viewer says why it shows nothing
            pub.send_multipart(raw_message(seq=10, v=2))
            said = wait_for(lambda: sub.link_problem(grace_s=0.0))
            assert said.startswith(f"{len(bad) + 1} overlay message(s) from {endpoint} rejected")
            assert "protocol version 2 is not 1" in said
            pub.send_multipart(raw_message(seq=11))  # taken again: nothing to say
            wait_for(lambda: (m := sub.latest("p0")) and m.seq == 11)
            assert sub.link_problem(grace_s=0.0) is None
    finally:
        pub.close(0)
        ctx.term()


def test_subscriber_follows_a_restarted_publisher(tmp_path: Path) -> None:
    import numpy as np

    from livescope.bus import OverlayPublisher, OverlaySubscriber

    header = {"seq": 1, "position": "p0", "t": 0, "sample_time_s": 0.0, "cells": [],
              "tails": {}, "decisions": []}  # fmt: skip
    arrays = {"labels": np.ones((8, 8), np.int32)}
    first = OverlayPublisher("run-x", run_dir=tmp_path)
    with OverlaySubscriber(tmp_path) as sub:
        old = sub.endpoint
        first.close()  # the worker dies ...
        with OverlayPublisher("run-x", run_dir=tmp_path) as second:  # ... and is restarted
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                second.publish({**header, "seq": 2}, arrays)
                msg = sub.latest("p0")
                if msg is not None and msg.header["seq"] == 2:
                    break
                time.sleep(0.05)
            assert sub.endpoint != old
            assert sub.latest("p0").header["seq"] == 2
            assert sub.stats()["reconnected"] == 1


# ---------------------------------------------------------------- is a publisher there


def test_a_killed_workers_overlay_file_is_said_to_name_nothing(tmp_path: Path) -> None:
    from livescope.bus import local_endpoint

    endpoint = local_endpoint("overlay")  # nothing binds it: the worker was killed
    (tmp_path / OVERLAY_FILE).write_text(
        json.dumps({"run_id": "run-k", "endpoint": endpoint, "v": 1}), encoding="utf-8"
    )
    with OverlaySubscriber(tmp_path) as sub:
        assert sub.link_problem(grace_s=60.0) is None  # (not said while it may still connect)
        said = wait_for(lambda: sub.link_problem(grace_s=0.5))
        assert "nothing publishes at" in said
        assert str(tmp_path / OVERLAY_FILE) in said
        assert sub.stats()["link"] == "nothing"


def test_a_worker_that_stops_publishing_is_said_to_have_stopped(tmp_path: Path) -> None:
    pub = OverlayPublisher("run-s", run_dir=tmp_path)
    with OverlaySubscriber(tmp_path) as sub:
        try:
            connected(pub, sub)
            time.sleep(0.3)
            assert sub.link_problem(grace_s=0.1) is None  # a publisher is there
            assert sub.stats()["link"] == "connected"
        finally:
            pub.close()  # the run ends (or the worker is killed)
        said = wait_for(lambda: sub.link_problem(grace_s=0.2))
        assert "stopped publishing at" in said
        assert sub.latest("ping") is not None  # what came stays shown


def test_positions_received_longest_ago_are_let_go_past_max_bytes(tmp_path: Path) -> None:
    field = {"labels": np.ones((64, 64), np.int32)}  # 16 KiB
    with (
        OverlayPublisher("run-m", run_dir=tmp_path) as pub,
        OverlaySubscriber(tmp_path, max_bytes=3 * 16384) as sub,
    ):
        connected(pub, sub)  # (ping: no arrays)
        sub.pinned = "A1"  # the position a viewer shows
        for seq, position in enumerate(["A1", "A2", "A3", "A4", "A5"], start=1):
            assert pub.publish(header(seq, position), field)
            wait_for(lambda p=position: sub.latest(p))  # type: ignore[misc]
        assert sub.positions() == ["ping", "A1", "A2", "A3", "A4", "A5"]  # all still named
        kept = [p for p in sub.positions() if sub.latest(p) is not None]
        assert kept == ["ping", "A1", "A4", "A5"]  # the shown one and the newest ones
        assert [p for p in sub.positions() if sub.was_let_go(p)] == ["A2", "A3"]
        assert sub.stats()["let_go"] == 2
        assert pub.publish(header(9, "A2"), field)  # a position let go comes back with its next
        wait_for(lambda: sub.latest("A2"))
        assert not sub.was_let_go("A2")
        assert sub.was_let_go("A4")
