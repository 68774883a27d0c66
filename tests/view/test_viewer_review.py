"""The live viewer as a microscopist uses it: closing it, switching positions, wrong folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livescope.bus import OverlayPublisher, OverlaySubscriber
from livescope.schema import LivescopeError

from .test_viewer import display as display
from .test_viewer import napari_viewer as napari_viewer
from .test_viewer import pytestmark  # noqa: F401 (the marks)
from .test_viewer_robustness import deliver, layer, message


@pytest.fixture
def overlay_viewer(napari_viewer: Any, tmp_path: Path) -> Iterator[Any]:
    from livescope.view import OverlayViewer

    ov = OverlayViewer(f"ipc://{tmp_path}/none", viewer=napari_viewer)  # nothing publishes
    try:
        yield ov
    finally:
        ov.close()


def cell(track: int, y: float, x: float) -> dict[str, Any]:
    return {"label": track, "track": track, "y": y, "x": x, "state": None, "p_mitosis": None}


def test_closing_the_napari_window_then_the_viewer_ends_cleanly(
    display: None, tmp_path: Path
) -> None:
    """`livescope view`: the user closes the window, napari.run returns, the viewer is closed."""
    import napari
    from qtpy.QtCore import QTimer

    from livescope.view import OverlayViewer

    ov = OverlayViewer(f"ipc://{tmp_path}/none")  # its own napari window, as the CLI's
    ov.start(interval_ms=20)
    QTimer.singleShot(0, ov.viewer.window._qt_window.close)  # the window's close button
    napari.run()
    ov.close()  # (raised "Internal C++ object (QtViewer) already deleted")
    assert not ov.stats()["alive"]
    ov.close()  # twice: nothing more to do


def test_switching_to_a_position_without_results_shows_none_of_the_previous_one(
    overlay_viewer: Any,
) -> None:
    ov = overlay_viewer
    full = {
        "raw:DAPI": np.full((16, 16), 9, np.uint16),
        "labels": np.ones((16, 16), np.int32),
        "stain": np.ones((16, 16), np.float32),
    }
    decided = [{"rule": "mitosis", "y": 5.0, "x": 5.0, "accepted": True, "reason": "ok"}]
    deliver(ov, message(1, "A1", arrays=full, cells=[cell(3, 5, 5)],
                        tails={"3": [[4, 4], [5, 5]]}, decisions=decided))  # fmt: skip
    ov.show_position("A1")
    assert ov.refresh()
    assert len(layer(ov, "cells").data) == 1
    ov.show_position("B2")  # nothing from B2 yet (or its last results were let go)
    assert not ov.refresh()
    assert "B2" in ov.viewer.text_overlay.text
    # A1's frame, contours, cells and decision would pass for B2's
    for name in ("raw:DAPI", "labels", "stain"):
        assert not np.any(layer(ov, name).data), name
    for name in ("cells", "tails", "decisions"):
        assert len(layer(ov, name).data) == 0, name
    deliver(ov, message(2, "B2", arrays=full, cells=[cell(4, 8, 8)]))
    assert ov.refresh()
    assert np.all(layer(ov, "raw:DAPI").data == 9)
    assert list(layer(ov, "cells").text.values) == ["4"]


def test_a_decision_fired_on_the_whole_field_does_not_lose_the_field(tmp_path: Path) -> None:
    """A rule on a field-wide trigger (a cell count, a lost track) fires with no y, x."""
    header = {
        "seq": 1, "position": "p0", "t": 0, "cells": None, "tails": None,  # (null: none)
        "decisions": [
            {"rule": "crowded", "y": None, "x": None, "accepted": True, "reason": "ok"},
            {"rule": "mitosis", "y": 4.0, "x": 5.0, "accepted": False, "reason": "light dose"},
        ],
    }  # fmt: skip
    arrays = {"raw:DAPI": np.ones((8, 8), np.uint16)}
    with OverlayPublisher("run-r", run_dir=tmp_path) as pub, OverlaySubscriber(tmp_path) as sub:
        while not sub.counts["messages"]:  # (until the subscription reaches the publisher)
            pub.publish(header, arrays)
            sub._stop.wait(0.02)
        assert sub.counts["rejected"] == 0, sub._rejected
        msg = sub.latest("p0")
        assert msg is not None
    assert [d["rule"] for d in msg.header["decisions"]] == ["mitosis"]  # placed on the frame
    assert msg.header["field_decisions"] == [{"rule": "crowded", "accepted": True, "reason": "ok"}]


def test_a_decision_fired_on_the_whole_field_is_said_in_the_caption(overlay_viewer: Any) -> None:
    ov = overlay_viewer
    fired = [{"rule": "crowded", "accepted": False, "reason": "light dose"}]
    deliver(ov, message(1, arrays={"raw:DAPI": np.ones((8, 8), np.uint16)},
                        field_decisions=fired))  # fmt: skip
    ov.show_position("p0")
    assert ov.refresh()
    assert "crowded (rejected: light dose)" in ov.viewer.text_overlay.text
    assert len(layer(ov, "decisions").data) == 0
    # (unknown header fields are not checked by the decoder: odd ones are left out)
    deliver(ov, message(2, arrays={"raw:DAPI": np.ones((8, 8), np.uint16)},
                        field_decisions=[7, {"rule": 3}]))  # fmt: skip
    assert ov.refresh()
    assert "frame 2" in ov.viewer.text_overlay.text


def test_attaching_to_the_folder_that_holds_the_runs_names_them(tmp_path: Path) -> None:
    (tmp_path / "run-a").mkdir()
    with (
        OverlayPublisher("run-a", run_dir=tmp_path / "run-a"),
        pytest.raises(LivescopeError, match="run-a") as err,
    ):
        OverlaySubscriber(tmp_path, timeout_s=0)
    assert "holds run folders" in str(err.value)


def test_attaching_to_a_folder_inside_a_run_names_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run-a"
    (run / "results").mkdir(parents=True)
    (run / "frames.jsonl").write_text("", encoding="utf-8")  # a run, its worker not started
    with pytest.raises(LivescopeError, match="inside the run folder") as err:
        OverlaySubscriber(run / "results", timeout_s=0)
    assert str(run) in str(err.value)


def test_a_channel_taken_every_few_frames_gets_a_colour_of_its_own(overlay_viewer: Any) -> None:
    """Channels of names without a known colour get them in turn, not by their place in a field."""
    ov = overlay_viewer
    frame = np.ones((8, 8), np.uint16)
    deliver(ov, message(1, arrays={"raw:mNeonGreen": frame}))  # mScarlet: every 5th time point
    ov.show_position("p0")
    assert ov.refresh()
    deliver(ov, message(2, arrays={"raw:mScarlet": frame, "raw:mNeonGreen": frame}))
    assert ov.refresh()
    first = layer(ov, "raw:mNeonGreen").colormap.name
    added = layer(ov, "raw:mScarlet").colormap.name
    assert first != added, f"both channels drawn in {first}, added up into one"


@pytest.mark.parametrize(
    ("channel", "free"),
    [("Phase", True), ("BF", True), ("label free", True), ("Label-free", True),
     ("label_free", True), ("LabelFree 20x", True), ("DIC", True), ("nuclear label", False),
     ("Label 488", False), ("DAPI", False), ("mScarlet", False)],
)  # fmt: skip
def test_a_channel_named_a_label_is_fluorescence_not_label_free(channel: str, free: bool) -> None:
    # "label" alone made a "nuclear label" channel a grey label-free layer
    from livescope.view._viewer import channel_is_label_free

    assert channel_is_label_free(channel) is free
