"""The live viewer and its subscriber under what a microscopist meets: odd data, odd options."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livescope.bus import OverlayMessage, OverlayPublisher, OverlaySubscriber
from livescope.schema import LivescopeError

from .test_viewer import display, pytestmark  # noqa: F401 (a fixture, the marks)
from .test_viewer import napari_viewer as napari_viewer


def message(
    seq: int, position: str = "p0", arrays: dict[str, np.ndarray] | None = None, **extra: Any
) -> OverlayMessage:
    header = {"v": 1, "run_id": "run-r", "seq": seq, "position": position, "t": seq,
              "sample_time_s": None, "cells": [], "tails": {}, "decisions": [],
              **extra}  # fmt: skip
    return OverlayMessage(header, dict(arrays or {}))


def deliver(ov: Any, msg: OverlayMessage) -> None:
    """Hand ``msg`` to the viewer's subscriber as its receiver thread would."""
    sub = ov.subscriber
    with sub._lock:
        sub._latest[msg.position] = msg
        sub._seen.setdefault(msg.position)
        sub._newest = msg


@pytest.fixture
def overlay_viewer(
    napari_viewer: Any,
    tmp_path: Path,
) -> Iterator[Any]:
    from livescope.view import OverlayViewer

    ov = OverlayViewer(f"ipc://{tmp_path}/none", viewer=napari_viewer)  # nothing publishes
    try:
        yield ov
    finally:
        ov.close()


def layer(ov: Any, name: str) -> Any:
    return next(lyr for lyr in ov.viewer.layers if lyr.name == name)


def test_a_frame_of_another_dtype_gets_a_contrast_range_that_fits(overlay_viewer: Any) -> None:
    ov = overlay_viewer
    deliver(ov, message(1, arrays={"raw:DAPI": np.full((32, 32), 200, np.uint8)}))
    assert ov.refresh()
    frame = np.zeros((48, 40), np.uint16)
    frame[10:20, 10:20] = 4000
    deliver(ov, message(2, arrays={"raw:DAPI": frame}))  # a 16-bit camera mode, another ROI
    assert ov.refresh()
    dapi = layer(ov, "raw:DAPI")
    assert dapi.data.shape == (48, 40)
    assert dapi.contrast_limits_range[1] >= 4000
    assert dapi.contrast_limits[1] > 255  # not saturated at the 8-bit frame's 255
    dapi.contrast_limits = (0, 3000)  # the user's choice stays while the dtype does
    deliver(ov, message(3, arrays={"raw:DAPI": frame // 2}))
    assert ov.refresh()
    assert tuple(dapi.contrast_limits) == (0, 3000)


def test_float_labels_are_drawn_and_a_bad_message_is_not_retried(overlay_viewer: Any) -> None:
    ov = overlay_viewer
    labels = np.zeros((16, 16), np.float32)
    labels[4:8, 4:8] = 3
    deliver(ov, message(1, arrays={"labels": labels}))  # the wire allows float32 labels
    assert ov.refresh()
    assert layer(ov, "labels").data.dtype.kind in "iu"
    assert layer(ov, "labels").data[5, 5] == 3

    def broken(_msg: OverlayMessage) -> None:
        raise RuntimeError("napari could not draw it")

    ov._draw = broken
    deliver(ov, message(2, arrays={"labels": labels}))
    ov._tick()
    ov._tick()
    ov._tick()
    assert ov.refresh_errors == 1  # logged once, not on every tick until a new frame comes


def test_layers_a_field_lacks_are_emptied_not_left_from_an_older_field(
    overlay_viewer: Any,
) -> None:
    ov = overlay_viewer
    full = {
        "raw:Phase": np.full((16, 16), 7, np.uint16),
        "raw:DAPI": np.full((16, 16), 9, np.uint16),
        "labels": np.ones((16, 16), np.int32),
        "stain": np.ones((16, 16), np.float32),
    }
    deliver(ov, message(1, arrays=full))
    assert ov.refresh()
    # the worker fell behind and left out this field's stain (stains_skipped_behind)
    deliver(ov, message(2, arrays={k: v for k, v in full.items() if k != "stain"}))
    assert ov.refresh()
    assert not np.any(layer(ov, "stain").data)
    # another position with a label-free channel only
    deliver(ov, message(3, "p1", arrays={"raw:Phase": full["raw:Phase"]}))
    ov.show_position("p1")
    assert ov.refresh()
    assert not np.any(layer(ov, "raw:DAPI").data)
    assert not np.any(layer(ov, "labels").data)
    assert np.array_equal(layer(ov, "raw:Phase").data, full["raw:Phase"])
    deliver(ov, message(4, "p1", arrays=full))  # and back when they come
    assert ov.refresh()
    assert np.all(layer(ov, "stain").data == 1)


def test_an_unknown_position_says_what_it_waits_for(overlay_viewer: Any) -> None:
    ov = overlay_viewer
    ov.show_position("A1-typo")
    deliver(ov, message(1, "A1", arrays={"raw:DAPI": np.ones((8, 8), np.uint16)}))
    deliver(ov, message(2, "B2", arrays={"raw:DAPI": np.ones((8, 8), np.uint16)}))
    assert not ov.refresh()
    text = ov.viewer.text_overlay.text
    assert "A1-typo" in text
    assert "A1, B2" in text
    assert ov.viewer.text_overlay.visible


@pytest.mark.parametrize("interval_ms", [0, -5, 2**31, math.nan])
def test_start_refuses_an_interval_qt_cannot_keep(overlay_viewer: Any, interval_ms: float) -> None:
    with pytest.raises(ValueError, match="interval_ms"):
        overlay_viewer.start(interval_ms)  # type: ignore[arg-type]
    assert overlay_viewer._timer is None


# ------------------------------------------------------------------ the subscriber (no napari)


def test_subscriber_refuses_a_nan_timeout_instead_of_waiting_forever(tmp_path: Path) -> None:
    raised: list[BaseException] = []

    def attach() -> None:
        try:
            OverlaySubscriber(tmp_path, timeout_s=math.nan).close()
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            raised.append(exc)

    thread = threading.Thread(target=attach, daemon=True)  # (left behind if it hangs)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "waited forever for overlay.json"
    assert isinstance(raised[0], LivescopeError)
    assert "timeout" in str(raised[0])


def test_receiver_survives_an_overlay_file_it_cannot_read_or_use(tmp_path: Path) -> None:
    header = {"seq": 1, "position": "p0", "t": 0}
    arrays = {"labels": np.ones((8, 8), np.int32)}
    with OverlayPublisher("run-r", run_dir=tmp_path) as pub, OverlaySubscriber(tmp_path) as sub:
        file = tmp_path / "overlay.json"
        file.unlink()
        file.mkdir()  # unreadable for a while (IsADirectoryError; PermissionError on Windows)
        time.sleep(1.2)
        assert sub.stats()["alive"]
        file.rmdir()
        bad = {"run_id": "run-r", "endpoint": "nonsense://x", "v": 1}
        file.write_text(json.dumps(bad), encoding="utf-8")  # an endpoint that cannot connect
        time.sleep(1.2)
        assert sub.stats()["alive"]
        file.write_text(json.dumps({**bad, "endpoint": pub.endpoint}), encoding="utf-8")
        deadline = time.monotonic() + 10
        while sub.latest("p0") is None and time.monotonic() < deadline:
            pub.publish(header, arrays)
            time.sleep(0.05)
        assert sub.latest("p0") is not None
        assert sub.stats()["alive"]


def test_a_viewer_says_when_nothing_publishes_where_overlay_json_points(
    overlay_viewer: Any,
) -> None:
    ov = overlay_viewer  # its endpoint: nothing binds it (a worker killed, its file left)
    time.sleep(1.5)
    assert not ov.refresh()
    text = ov.viewer.text_overlay.text
    assert "waiting for the first results" in text
    assert "nothing publishes at" in text
    assert ov.viewer.text_overlay.visible


def test_a_position_let_go_for_memory_says_it_waits_for_its_next_results(
    overlay_viewer: Any,
) -> None:
    ov = overlay_viewer
    deliver(ov, message(1, "A1", arrays={"raw:DAPI": np.ones((8, 8), np.uint16)}))
    ov.show_position("A1")
    assert ov.subscriber.pinned == "A1"  # the shown position is never let go
    with ov.subscriber._lock:
        ov.subscriber._seen.setdefault("B2")  # B2 came, and was let go
    ov.show_position("B2")
    assert ov.subscriber.pinned == "B2"
    assert not ov.refresh()
    assert "next results of position 'B2'" in ov.viewer.text_overlay.text
