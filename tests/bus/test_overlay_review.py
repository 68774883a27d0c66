"""The overlay bus: what the publisher refuses, what the decoder rejects, the run's last field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livescope.bus import OverlayPublisher, OverlaySubscriber, decode_overlay
from livescope.schema import HeaderError, LivescopeError
from tests.conftest import wait_for


def header(seq: int = 1, **over: Any) -> dict[str, Any]:
    return {"seq": seq, "position": "p0", "t": 0, "sample_time_s": 1.5, **over}


def good_raw(**over: Any) -> bytes:
    h = {
        "v": 1, "run_id": "run-1", "seq": 5, "position": "p0", "t": 2, "sample_time_s": None,
        "arrays": [{"name": "labels", "dtype": "int32", "shape": [4, 4]}],
        "cells": [], "tails": {}, "decisions": [],
    }  # fmt: skip
    return json.dumps({**h, **over}).encode()


# ---------------------------------------------------------------- publisher


@pytest.mark.parametrize(
    ("hdr", "arrs", "match"),
    [
        pytest.param(header(position=7), {}, "position", id="position not a string"),
        pytest.param(header(position="A1" * 200), {}, "position", id="position too long"),
        pytest.param(header(seq=-1), {}, "seq", id="negative seq"),
        pytest.param(header(seq=2.0), {}, "seq", id="float seq"),
        pytest.param(header(t=True), {}, "t is", id="bool t"),
        pytest.param(header(sample_time_s="soon"), {}, "sample_time_s", id="sample time text"),
        pytest.param(
            header(), {"profile": np.zeros(70_000, np.uint8)}, "shape", id="side over MAX_SIDE"
        ),
        pytest.param(header(), {"": np.zeros(4, np.uint8)}, "names", id="empty array name"),
        pytest.param(
            header(), {"n" * 300: np.zeros(4, np.uint8)}, "names", id="array name too long"
        ),
        pytest.param(
            header(),
            {1: np.zeros(4, np.uint8), "1": np.zeros(4, np.uint8)},
            "names",
            id="array names alike as text",
        ),
        pytest.param(
            header(),
            {f"a{i}": np.zeros(1, np.uint8) for i in range(65)},
            "arrays",
            id="too many arrays",
        ),
    ],
)
def test_publisher_refuses_what_every_viewer_would_reject(
    hdr: dict[str, Any], arrs: dict[Any, np.ndarray], match: str
) -> None:
    # (such a message was sent and counted as published, then rejected by every viewer)
    with OverlayPublisher("run-1") as pub:
        with pytest.raises(LivescopeError, match=f"every viewer would reject.*{match}"):
            pub.publish(hdr, arrs)
        assert pub.stats()["published"] == 0


def test_publisher_refuses_a_run_id_the_viewers_reject() -> None:
    with OverlayPublisher("r" * 129) as pub, pytest.raises(LivescopeError, match="run_id"):
        pub.publish(header(), {})


def test_publisher_still_sends_numpy_fields_and_big_frames(tmp_path: Path) -> None:
    with OverlayPublisher("run-1", run_dir=tmp_path) as pub, OverlaySubscriber(tmp_path) as sub:
        h = header(seq=np.int64(3), t=np.int32(2), sample_time_s=np.float32(0.5), position="A1")
        frame = {"raw:DAPI": np.ones((4, 65536), np.uint8)}  # (a side of MAX_SIDE: allowed)
        msg = wait_for(lambda: pub.publish(h, frame) and sub.latest("A1"))
        assert (msg.seq, msg.header["t"], msg.header["sample_time_s"]) == (3, 2, 0.5)
        assert msg.arrays["raw:DAPI"].shape == (4, 65536)


# ---------------------------------------------------------------- decoder


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        pytest.param(good_raw(v=True), "version", id="version true"),
        pytest.param(good_raw(v=1.0), "version", id="version 1.0"),
        pytest.param(good_raw(tails={"99999999999999999999": [[1, 2]]}), "track ids",
                     id="tail id past int64"),
        pytest.param(good_raw(tails={"-9223372036854775809": []}), "track ids",
                     id="tail id below int64"),
    ],
)  # fmt: skip
def test_decode_rejects_what_viewers_cannot_use(raw: bytes, match: str) -> None:
    with pytest.raises(HeaderError, match=match):
        decode_overlay(raw, [bytes(64)])


def test_decode_accepts_int64_tail_ids() -> None:
    tails = {"9223372036854775807": [[1.0, 2.0]], "-9223372036854775808": [], "0": []}
    msg = decode_overlay(good_raw(tails=tails), [bytes(64)])
    assert msg.header["tails"] == tails


# ---------------------------------------------------------------- close


def test_close_delivers_the_runs_last_field(tmp_path: Path) -> None:
    # (closed without linger, the field published just before the run ended, the one a
    # viewer left open shows for good, was thrown away while still queued)
    pub = OverlayPublisher("run-1", run_dir=tmp_path)
    try:
        with OverlaySubscriber(tmp_path) as sub:
            wait_for(lambda: pub.publish(header(0, position="ping"), {}) and sub.latest("ping"))
            last = {"raw:DAPI": np.full((2048, 2048), 7, np.uint16)}  # (8 MiB: still queued)
            assert pub.publish(header(42), last)
            pub.close()
            msg = wait_for(lambda: sub.latest("p0"))
            assert msg.seq == 42
            assert np.array_equal(msg.arrays["raw:DAPI"], last["raw:DAPI"])
    finally:
        pub.close()


def test_decode_accepts_a_header_without_arrays() -> None:
    raw = json.loads(good_raw())
    del raw["arrays"], raw["cells"], raw["tails"], raw["decisions"]
    msg = decode_overlay(json.dumps(raw).encode(), [])
    assert msg.arrays == {}
    assert msg.seq == 5


def test_a_receiver_socket_that_cannot_be_made_is_an_error_at_once() -> None:
    # (made outside the receiver's try: the thread died, the constructor waited 5 s and
    # returned a subscriber that would never receive anything)
    with pytest.raises(LivescopeError, match="cannot attach to the overlay bus"):
        OverlaySubscriber("tcp://127.0.0.1:5", rcvhwm=-1)


def test_a_receiver_that_stopped_on_an_error_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (link_problem went on saying "connected": the viewer showed the last field for good)
    def broken(self: OverlaySubscriber, monitor: Any) -> None:
        raise RuntimeError("receiver bug")

    monkeypatch.setattr(OverlaySubscriber, "_watch", broken)
    with OverlayPublisher("run-1", run_dir=tmp_path), OverlaySubscriber(tmp_path) as sub:
        wait_for(lambda: not sub._thread.is_alive())
        problem = sub.link_problem(grace_s=0)
        assert problem is not None
        assert "the overlay receiver stopped on an error: RuntimeError('receiver bug')" in problem


def test_a_header_larger_than_the_viewers_take_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (sent and counted as published; every viewer refused it unseen)
    from livescope.bus import _overlay

    monkeypatch.setattr(_overlay, "MAX_HEADER_BYTES", 4096)
    cells = [{"label": i, "track": i, "y": 1.0, "x": 2.0, "state": None, "p_mitosis": None}
             for i in range(1, 200)]  # fmt: skip
    with OverlayPublisher("run-1", run_dir=tmp_path) as pub:
        with pytest.raises(LivescopeError, match=r"header of \d+ bytes is larger than 4096"):
            pub.publish({**header(), "cells": cells}, {})
        assert pub.stats()["published"] == 0
        assert pub.publish({**header(), "cells": cells[:5]}, {})


def test_a_new_run_in_the_folder_is_said_when_the_old_one_has_stopped(tmp_path: Path) -> None:
    # (a viewer of the old run said only "the worker stopped publishing", for good, while
    # the new run's worker published beside it)
    old = OverlayPublisher("run-1", run_dir=tmp_path)
    with OverlaySubscriber(tmp_path) as sub:
        wait_for(lambda: old.publish(header(0), {}) and sub.latest("p0"))
        old.close()
        wait_for(lambda: (sub.link_problem(grace_s=0) or "").startswith("the worker stopped"))
        with OverlayPublisher("run-2", run_dir=tmp_path):
            problem = wait_for(lambda: "another run" in (p := sub.link_problem(grace_s=0) or "")
                               and p)  # fmt: skip
        assert "another run (run-2) now publishes in this folder" in problem
        assert sub.run_id == "run-1"  # (not followed: its overlay is another run's)
