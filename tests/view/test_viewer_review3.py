"""The live viewer, third review: a long run watched for hours (contrast, colours, positions)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .test_viewer import display as display
from .test_viewer import napari_viewer as napari_viewer
from .test_viewer import pytestmark  # noqa: F401 (the marks)
from .test_viewer_review import cell
from .test_viewer_review2 import overlay_viewer as overlay_viewer
from .test_viewer_robustness import deliver, layer, message


def test_contrast_limits_napari_chose_from_a_dark_first_frame_follow_the_data(
    overlay_viewer: Any,
) -> None:
    """The shutter still closed: 0..1 from the first frame, every later one a white mask."""
    ov = overlay_viewer
    deliver(ov, message(1, arrays={"raw:DAPI": np.zeros((32, 32), np.uint16)}))
    assert ov.refresh()
    dapi = layer(ov, "raw:DAPI")
    bright = np.zeros((32, 32), np.uint16)
    bright[8:16, 8:16] = 3000
    deliver(ov, message(2, arrays={"raw:DAPI": bright}))
    assert ov.refresh()
    assert tuple(dapi.contrast_limits) == (0, 3000)  # (was 0..1)
    dapi.contrast_limits = (100, 900)  # the user's choice stays from now on
    deliver(ov, message(3, arrays={"raw:DAPI": bright * 2}))
    assert ov.refresh()
    assert tuple(dapi.contrast_limits) == (100, 900)
    assert tuple(dapi.contrast_limits_range) == (0, 6000)


def _nuclei(order: list[int]) -> np.ndarray:
    """Two nuclei, left and right, numbered in ``order`` (the segmenter's own numbering)."""
    labels = np.zeros((32, 32), np.int32)
    labels[8:16, 4:12] = order[0]
    labels[8:16, 20:28] = order[1]
    return labels


def test_a_cells_outline_keeps_its_tracks_colour_when_the_segmenter_renumbers(
    overlay_viewer: Any,
) -> None:
    """Labels are numbered anew each frame: outlines coloured by number swapped colours."""
    from livescope.view._viewer import track_colors

    ov = overlay_viewer
    frame = np.full((32, 32), 5, np.uint16)
    left, right = {"track": 7, "y": 12.0, "x": 8.0}, {"track": 9, "y": 12.0, "x": 24.0}
    colours = []
    for seq, order in enumerate(([1, 2], [2, 1], [1, 2]), start=1):
        cells = [{**cell(0, 0, 0), **left, "label": order[0]},
                 {**cell(0, 0, 0), **right, "label": order[1]}]  # fmt: skip
        arrays = {"raw:DAPI": frame, "labels": _nuclei(order)}
        deliver(ov, message(seq, arrays=arrays, cells=cells))
        assert ov.refresh()
        labels = layer(ov, "labels")
        colours.append([np.asarray(labels.get_color(n)) for n in order])
    for left_colour, right_colour in colours:
        assert np.allclose(left_colour, track_colors(np.array([7]))[0])  # its tail's colour
        assert np.allclose(right_colour, track_colors(np.array([9]))[0])
    labels.new_colormap(seed=3)  # the user shuffles the colours: theirs stay
    shuffled = labels.colormap
    deliver(ov, message(4, arrays={"raw:DAPI": frame, "labels": _nuclei([2, 1])}, cells=cells))
    assert ov.refresh()
    assert labels.colormap is shuffled


def test_page_down_and_page_up_switch_between_the_positions_seen(overlay_viewer: Any) -> None:
    """Only --position chose what was shown: another position took a restart of the viewer."""
    from napari.utils.key_bindings import KeymapHandler

    ov = overlay_viewer
    for seq, position in enumerate(("A1", "B2", "C3"), start=1):
        frame = np.full((16, 16), seq, np.uint16)
        deliver(ov, message(seq, position=position, arrays={"raw:DAPI": frame}))
    ov.show_position("A1")
    assert ov.refresh()
    keys = KeymapHandler()
    keys.keymap_providers = [ov.viewer]
    keys.press_key("PageDown")
    assert ov.position == "B2"
    assert np.all(layer(ov, "raw:DAPI").data == 2)  # drawn at once, not at the next tick
    assert "B2" in ov.viewer.text_overlay.text
    keys.press_key("PageUp")
    keys.press_key("PageUp")  # (wraps around)
    assert ov.position == "C3"
    assert np.all(layer(ov, "raw:DAPI").data == 3)
    ov.close()  # the user's viewer lives on: its keys no longer reach a closed viewer
    keys.press_key("PageDown")
    assert ov.position == "C3"
