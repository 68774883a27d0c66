"""The live viewer, second review: contrast, odd arrays, ROI changes, channel colours, tails."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .test_viewer import display as display
from .test_viewer import napari_viewer as napari_viewer
from .test_viewer import pytestmark  # noqa: F401 (the marks)
from .test_viewer import screenshot_1to1 as screenshot_1to1
from .test_viewer_review import cell
from .test_viewer_robustness import deliver, layer, message


@pytest.fixture
def overlay_viewer(napari_viewer: Any, tmp_path: Path) -> Iterator[Any]:
    from livescope.view import OverlayViewer

    ov = OverlayViewer(f"ipc://{tmp_path}/none", viewer=napari_viewer)  # nothing publishes
    ov.show_position("p0")
    try:
        yield ov
    finally:
        ov.close()


def test_a_brighter_frame_than_the_first_is_in_reach_of_the_contrast_slider(
    overlay_viewer: Any,
) -> None:
    """The first field was dim (out of focus, lamp off): later ones were saturated for good."""
    ov = overlay_viewer
    dim = np.full((32, 32), 100, np.uint16)
    dim[0, 0] = 200
    deliver(ov, message(1, arrays={"raw:DAPI": dim, "stain": np.full((32, 32), 0.1, np.float16)}))
    assert ov.refresh()
    dapi = layer(ov, "raw:DAPI")
    dapi.contrast_limits = (110, 190)  # the user's choice
    bright = np.zeros((32, 32), np.uint16)
    bright[8:16, 8:16] = 5000
    stain = np.zeros((32, 32), np.float16)
    stain[8:16, 8:16] = np.nan  # (a stain's NaN changes nothing)
    stain[0, 0] = 3.0
    deliver(ov, message(2, arrays={"raw:DAPI": bright, "stain": stain}))
    assert ov.refresh()
    assert tuple(dapi.contrast_limits_range) == (0, 5000)  # (was stuck at 100..200)
    assert tuple(dapi.contrast_limits) == (110, 190)  # the user's limits stay
    assert layer(ov, "stain").contrast_limits_range[1] == 3.0
    assert np.isfinite(layer(ov, "stain").contrast_limits_range).all()


def test_a_1d_array_is_said_not_drawn_and_the_rest_of_the_field_is_drawn(
    overlay_viewer: Any,
) -> None:
    """The wire allows 1-D arrays; napari's add_image raised and the whole field was lost."""
    ov = overlay_viewer
    frame = np.full((16, 16), 9, np.uint16)
    deliver(ov, message(1, arrays={"raw:DAPI": frame, "labels": np.ones((16, 16), np.int32)}))
    assert ov.refresh()
    odd = {
        "raw:line": np.ones(16, np.uint16),
        "raw:DAPI": frame * 2,
        "labels": np.ones(16, np.int32),
    }
    deliver(ov, message(2, arrays=odd, cells=[cell(3, 5, 5)]))
    ov._tick()
    assert ov.refresh_errors == 0
    assert ov.frames_shown == 2
    assert np.all(layer(ov, "raw:DAPI").data == 18)
    assert not np.any(layer(ov, "labels").data)  # (not the previous field's)
    assert len(layer(ov, "cells").data) == 1
    assert "raw:line" not in [lyr.name for lyr in ov.viewer.layers]
    text = ov.viewer.text_overlay.text
    assert "frame 2" in text
    assert "not drawn" in text
    assert "raw:line, labels" in text


def test_a_field_of_another_shape_leaves_no_layer_and_no_view_of_the_old_shape(
    overlay_viewer: Any,
) -> None:
    """Another ROI (or a position imaged with one): emptied layers and the view follow it."""
    ov = overlay_viewer
    big = {
        "raw:Phase": np.full((256, 256), 7, np.uint16),
        "raw:DAPI": np.full((256, 256), 9, np.uint16),
        "labels": np.ones((256, 256), np.int32),
    }
    deliver(ov, message(1, arrays=big))
    assert ov.refresh()
    ov.viewer.camera.center = (200.0, 200.0)  # the user looks at a corner
    ov.viewer.camera.zoom = 8.0
    deliver(ov, message(2, arrays={"raw:Phase": np.full((32, 48), 7, np.uint16)}))
    assert ov.refresh()
    for name in ("raw:DAPI", "labels"):
        assert layer(ov, name).data.shape == (32, 48), name  # emptied, in this field's shape
        assert not np.any(layer(ov, name).data), name
    assert np.array_equal(ov.viewer.layers.extent.world[1], (31, 47))  # (was 255, 255)
    assert np.allclose(ov.viewer.camera.center[-2:], (15.5, 23.5))
    zoom = ov.viewer.camera.zoom
    ov.viewer.camera.zoom = zoom * 3  # the user zooms in: a field of the same shape keeps it
    deliver(ov, message(3, arrays={"raw:Phase": np.full((32, 48), 8, np.uint16)}))
    assert ov.refresh()
    assert ov.viewer.camera.zoom == zoom * 3


@pytest.mark.parametrize(
    ("first", "second"),
    [pytest.param("mCherry", "iRFP670", id="mCherry+iRFP"),
     pytest.param("TagRFP", "iRFP720", id="TagRFP+iRFP"),
     pytest.param("GFP", "Cy5", id="GFP+Cy5")],
)  # fmt: skip
def test_a_far_red_protein_is_not_drawn_in_the_red_proteins_colour(first: str, second: str) -> None:
    """ "iRFP" holds "rfp": both were magenta, added up into one colour."""
    from livescope.view._viewer import channel_colormap

    assert channel_colormap(second) == "red"
    assert channel_colormap(first) != channel_colormap(second)


# ------------------------------------------------------------------ tails, as drawn

TAILS = {
    "3": [[10.0, 8.0], [10.0, 40.0], [30.0, 40.0]],  # right, then down
    "8": [[50.0, 10.0], [50.0, 30.0]],
    "21": [[40.0, 55.0]],  # one point: no line yet
}


def tail_pixels(track: str) -> list[tuple[int, int]]:
    """Canvas pixels well inside each step of a tail (ends and corners set aside)."""
    out: list[tuple[int, int]] = []
    points = TAILS[track]
    for (y0, x0), (y1, x1) in itertools.pairwise(points):
        n = int(max(abs(y1 - y0), abs(x1 - x0)))
        out += [(round(y0 + (y1 - y0) * i / n), round(x0 + (x1 - x0) * i / n))
                for i in range(3, n - 2)]  # fmt: skip
    return out


def drawn_tails(ov: Any) -> np.ndarray:
    """Screenshot of the tails layer alone, over black, one canvas pixel per image pixel."""
    for lyr in ov.viewer.layers:
        lyr.visible = lyr.name in ("tails", "raw:DAPI")  # (the frame: black, sets the extent)
    ov.viewer.text_overlay.visible = False
    return screenshot_1to1(ov.viewer, (64, 64))


def test_tails_are_drawn_as_lines_in_their_tracks_colours(overlay_viewer: Any) -> None:
    from livescope.view._viewer import track_colors

    ov = overlay_viewer
    frame = np.zeros((64, 64), np.uint16)
    deliver(ov, message(1, arrays={"raw:DAPI": frame}, tails=TAILS))
    assert ov.refresh()
    tails = layer(ov, "tails")
    shot = drawn_tails(ov)
    lit = shot.max(axis=2) > 30
    drawn: set[tuple[int, int]] = set()
    for track in ("3", "8"):
        want = track_colors(np.array([int(track)]))[0, :3] * tails.opacity * 255
        pixels = tail_pixels(track)
        colours = np.array([shot[p] for p in pixels])
        assert np.abs(colours - want).max() <= 12, f"track {track}'s tail in other colours"
        drawn |= set(pixels)
    assert not lit[38:43, 53:58].any()  # a one-point tail draws nothing
    # lines 1.5 px wide: nothing lit beyond a pixel of the tails' lines
    near = np.zeros_like(lit)
    for track in ("3", "8"):
        for (y0, x0), (y1, x1) in itertools.pairwise(TAILS[track]):
            near[int(min(y0, y1)) - 1 : int(max(y0, y1)) + 2,
                 int(min(x0, x1)) - 1 : int(max(x0, x1)) + 2] = True  # fmt: skip
    assert not (lit & ~near).any()
    assert lit.sum() >= len(drawn)

    # the next field: tails moved on, one gone; drawn anew, nothing left of the old ones
    moved = {"3": [[10.0, 40.0], [30.0, 40.0], [30.0, 20.0]]}
    deliver(ov, message(2, arrays={"raw:DAPI": frame}, tails=moved))
    assert ov.refresh()
    shot = drawn_tails(ov)
    want = track_colors(np.array([3]))[0, :3] * tails.opacity * 255
    assert np.abs(shot[30, 25] - want).max() <= 12  # the new step, leftwards
    assert shot[10, 20].max() <= 30  # the old first step is gone
    assert shot[50, 20].max() <= 30  # and track 8's tail


def test_the_users_tail_width_stays_from_field_to_field(overlay_viewer: Any) -> None:
    """Layers are updated in place so that the user's changes stay: the tails' width too."""
    ov = overlay_viewer
    frame = np.zeros((64, 64), np.uint16)
    deliver(ov, message(1, arrays={"raw:DAPI": frame}, tails=TAILS))
    assert ov.refresh()
    layer(ov, "tails").current_edge_width = 5.0  # the user widens them (the width slider)
    deliver(ov, message(2, arrays={"raw:DAPI": frame}, tails=TAILS))
    assert ov.refresh()
    lit = drawn_tails(ov).max(axis=2) > 30
    # the horizontal step of track 8 (row 50): 5 rows lit, not 1
    assert lit[48:53, 20].all(), f"rows lit at column 20: {np.nonzero(lit[:, 20])[0]}"


def test_hiding_the_points_layers_loses_no_field(overlay_viewer: Any) -> None:
    """The user hides the track ids to see the contours; then a field with fewer cells comes."""
    ov = overlay_viewer
    frame = np.zeros((64, 64), np.uint16)
    decided = [{"rule": "mitosis", "y": 5.0, "x": 5.0, "accepted": True, "reason": "ok"}]
    three = [cell(1, 5, 5), cell(2, 9, 9), cell(3, 20, 20)]
    deliver(ov, message(1, arrays={"raw:DAPI": frame}, cells=three, decisions=decided * 2,
                        tails=TAILS))  # fmt: skip
    assert ov.refresh()
    for name in ("tails", "cells", "decisions"):
        layer(ov, name).visible = False
    deliver(ov, message(2, arrays={"raw:DAPI": frame}, cells=[cell(7, 30, 30)],
                        decisions=decided, tails={"8": TAILS["8"]}))  # fmt: skip
    ov._tick()  # (raised IndexError in napari's drawing of the hidden layer)
    assert ov.refresh_errors == 0
    assert "frame 2" in ov.viewer.text_overlay.text
    deliver(ov, message(3, arrays={"raw:DAPI": frame}, cells=[]))
    ov._tick()
    assert ov.refresh_errors == 0
    deliver(ov, message(4, arrays={"raw:DAPI": frame}, cells=[cell(8, 40, 40), cell(9, 50, 9)]))
    ov._tick()
    layer(ov, "cells").visible = True  # shown again: this field's cells and ids
    layer(ov, "decisions").visible = True
    assert len(layer(ov, "decisions").data) == 0  # not the first field's
    layer(ov, "tails").visible = True
    assert len(layer(ov, "tails").data) == 0
    cells = layer(ov, "cells")
    assert np.array_equal(cells.data, [[40, 40], [50, 9]])
    assert list(cells.text.values) == ["8", "9"]
    assert list(cells._view_text) == ["8", "9"]  # (what napari draws)
    assert ov.refresh_errors == 0


def covered(image: Any) -> np.ndarray:
    """The world area an image layer's pixels cover (its extent: pixel centres)."""
    extent = image.extent
    return np.stack([extent.world[0] - extent.step / 2, extent.world[1] + extent.step / 2])


def test_a_channel_at_another_binning_is_laid_over_the_labels(overlay_viewer: Any) -> None:
    """Phase at binning 1, the nuclear channel (segmented) at binning 2: one field of view."""
    ov = overlay_viewer
    phase = np.zeros((64, 64), np.uint16)
    phase[20:22, 40:42] = 500  # one binned pixel's worth: (10, 20) in the labels' pixels
    dapi = np.zeros((32, 32), np.uint16)
    dapi[10, 20] = 900
    labels = (dapi > 0).astype(np.int32)
    arrays = {"raw:Phase": phase, "raw:DAPI": dapi, "labels": labels}
    deliver(ov, message(1, arrays=arrays, cells=[cell(1, 10, 20)]))
    assert ov.refresh()
    lit = layer(ov, "raw:Phase").data_to_world((20.5, 40.5))  # the middle of the lit square
    assert np.allclose(lit, layer(ov, "labels").data_to_world((10, 20)))
    assert np.allclose(lit, layer(ov, "cells").data_to_world(layer(ov, "cells").data[0]))
    assert np.allclose(covered(layer(ov, "raw:Phase")), covered(layer(ov, "labels")))
    # another ROI, not a binning: left unscaled, and said
    arrays = {"raw:Phase": np.zeros((50, 64), np.uint16), "raw:DAPI": dapi, "labels": labels}
    deliver(ov, message(2, arrays=arrays))
    assert ov.refresh()
    assert np.allclose(layer(ov, "raw:Phase").scale, 1)
    assert "raw:Phase 50x64" in ov.viewer.text_overlay.text
    # all at one binning again
    deliver(ov, message(3, arrays={k: np.zeros((32, 32), a.dtype) for k, a in arrays.items()}))
    assert ov.refresh()
    assert np.allclose(layer(ov, "raw:Phase").scale, 1)
    assert np.allclose(layer(ov, "raw:Phase").translate, 0)
    assert "not laid over" not in ov.viewer.text_overlay.text


def test_drawing_fields_takes_no_reference_to_none_it_did_not_give(napari_viewer: Any) -> None:
    # PySide6 6.12.0 dropped references to None on every layer update (13-21 each): on
    # Python 3.11 a live viewer died of "none_dealloc: deallocating None" after ~10,000
    # updates, and the viewer tests, run in one process, died at their 17th viewer
    # (pyproject's viewer extra leaves that version out)
    import gc
    import sys

    from qtpy.QtWidgets import QApplication

    rng = np.random.default_rng(0)
    image = napari_viewer.add_image(np.zeros((64, 64), np.uint16))
    labels = napari_viewer.add_labels(np.zeros((64, 64), np.int32))
    gc.collect()
    before = sys.getrefcount(None)
    for _ in range(100):
        image.data = rng.integers(0, 4000, (64, 64), dtype=np.uint16)
        labels.data = rng.integers(0, 5, (64, 64), dtype=np.int32)
        QApplication.processEvents()
    gc.collect()
    assert sys.getrefcount(None) - before > -500  # (6.12.0: about -6,700)
