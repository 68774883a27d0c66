"""The live overlay viewer, rendered for real: napari + Qt + OpenGL, headless.

Qt's ``offscreen`` platform cannot host napari's OpenGL canvas ("QOpenGLWidget
is not supported on this platform"), so on Linux the test starts its own Xvfb
(a virtual X server: ``apt-get install xvfb``) and uses Qt's xcb platform
(``libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0``; Mesa's llvmpipe renders). The
viewer is made with ``show=False`` and its window is then shown with
``WA_DontShowOnScreen``, so nothing appears on any screen but napari draws.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage as ndi

from livescope.bus import OverlayPublisher
from livescope.scope import SimulatedView, simulated_views
from tests.conftest import wait_for

pytestmark = [
    pytest.mark.skipif(
        find_spec("napari") is None, reason='napari not installed: pip install "livescope[viewer]"'
    ),
    # napari's own imports warn (pydantic v1-style models, ...): not ours to fix
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

ACCEPTED = (0.2, 1.0, 0.2)
REJECTED = (1.0, 0.15, 0.15)


# ------------------------------------------------------------------ display and Qt


def _start_xvfb() -> None:
    # Xvfb must outlive Qt, which dies ("XIO: fatal IO error") if its X server goes first:
    # the kernel stops it when this process ends (PR_SET_PDEATHSIG, kept across exec), so it
    # is spawned without a Popen object (which would complain that it outlived the test)
    launch = (
        "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
        "os.execvp('Xvfb', sys.argv[1:])"
    )
    number = next(n for n in range(99, 1000) if not Path(f"/tmp/.X{n}-lock").exists())
    args = ["Xvfb", f":{number}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"]
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
    pid = os.posix_spawn(
        sys.executable, [sys.executable, "-c", launch, *args], os.environ, file_actions=quiet
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
        with socket.socket(socket.AF_UNIX) as sock:
            if sock.connect_ex(f"/tmp/.X11-unix/X{number}") == 0:
                os.environ["DISPLAY"] = f":{number}"
                return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    pytest.fail(f"Xvfb did not start on display :{number}")


def _qt_probe() -> str | None:
    """Start a QApplication in a child process; return why it failed, or None."""
    code = "from qtpy.QtWidgets import QApplication; QApplication([])"
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    return None if res.returncode == 0 else (res.stderr.strip().splitlines() or ["?"])[-1]


@pytest.fixture(scope="session")
def display() -> Iterator[None]:
    """A display napari can draw on: a private Xvfb on Linux, the desktop elsewhere."""
    saved = {k: os.environ.get(k) for k in ("DISPLAY", "QT_QPA_PLATFORM")}
    try:
        if sys.platform.startswith("linux"):
            if shutil.which("Xvfb"):
                _start_xvfb()
            elif not os.environ.get("DISPLAY"):
                pytest.skip(
                    "no X display and no Xvfb (apt-get install xvfb): Qt's offscreen platform "
                    "has no OpenGL for napari"
                )
            os.environ["QT_QPA_PLATFORM"] = "xcb"
            if (why := _qt_probe()) is not None:
                pytest.skip(f"Qt cannot start on X ({why}); see this module's doc for packages")
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def napari_viewer(display: None) -> Iterator[Any]:
    import napari
    from qtpy.QtCore import Qt

    viewer = napari.Viewer(show=False)
    window = viewer.window._qt_window
    window.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen, True)
    window.show()  # drawn, but on no screen
    try:
        yield viewer
    finally:
        viewer.close()


# ------------------------------------------------------------------ data


@pytest.fixture(scope="module")
def field() -> SimulatedView:
    return simulated_views(1, seed=0)[0]


def centroids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    return ids, np.array(ndi.center_of_mass(labels > 0, labels, ids)).reshape(-1, 2)


def overlay_of(view: SimulatedView, seq: int, position: str = "p0") -> tuple[dict[str, Any], ...]:
    labels = view.labels.astype(np.int32)
    ids, yx = centroids(labels)
    cells = [
        {"label": int(i), "track": int(i) % 1000, "y": float(y), "x": float(x),
         "state": None, "p_mitosis": 0.1}
        for i, (y, x) in zip(ids, yx, strict=True)
    ]  # fmt: skip
    tails = {str(c["track"]): [[c["y"] - 6, c["x"] - 6], [c["y"], c["x"]]] for c in cells[:10]}
    decisions = [
        {"rule": "mitosis", "y": 40.0, "x": 40.0, "accepted": True, "reason": "ok"},
        {"rule": "mitosis", "y": 40.0, "x": 470.0, "accepted": False, "reason": "light dose"},
    ]
    stain = (view.fluorescence / view.fluorescence.max()).astype(np.float16)
    header = {"seq": seq, "position": position, "t": seq, "sample_time_s": 60.0 * seq,
              "cells": cells, "tails": tails, "decisions": decisions}  # fmt: skip
    arrays = {
        "raw:Phase": view.phase,
        "raw:DAPI": view.fluorescence,
        "labels": labels,
        "stain": stain,
    }
    return header, arrays


def screenshot_1to1(viewer: Any, shape: tuple[int, int]) -> np.ndarray:
    """Screenshot where canvas pixel (r, c) shows image pixel (r, c)."""
    h, w = shape
    viewer.camera.center = ((h - 1) / 2, (w - 1) / 2)
    viewer.camera.zoom = 1.0
    shot = viewer.screenshot(canvas_only=True, size=(h, w), flash=False)
    assert shot.shape[:2] == shape
    return np.asarray(shot[..., :3], dtype=np.float64)


def boundary_and_interior(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cross = ndi.generate_binary_structure(2, 1)
    edge = ndi.grey_dilation(labels, footprint=cross) != ndi.grey_erosion(labels, footprint=cross)
    boundary = edge & (labels > 0)
    square = np.ones((7, 7), bool)
    inner = ndi.grey_dilation(labels, footprint=square) == ndi.grey_erosion(
        labels, footprint=square
    )
    return boundary, inner & (labels > 0)


def matches_label_colour(shot: np.ndarray, layer: Any, mask: np.ndarray) -> float:
    """Fraction of ``mask`` pixels drawn in the colour of their label."""
    ys, xs = np.nonzero(mask)
    values = layer.data[ys, xs]
    lut = {int(v): np.asarray(layer.get_color(int(v)))[:3] * 255 for v in np.unique(values)}
    want = np.stack([lut[int(v)] for v in values])
    return float(np.mean(np.abs(shot[ys, xs] - want).max(axis=1) <= 12))


# ------------------------------------------------------------------ tests


def test_viewer_draws_label_contours_over_the_live_frame(
    napari_viewer: Any, field: SimulatedView, tmp_path: Path
) -> None:
    from livescope.view import OverlayViewer

    with OverlayPublisher("run-v", run_dir=tmp_path) as pub:
        ov = OverlayViewer(tmp_path, viewer=napari_viewer)
        try:
            header, arrays = overlay_of(field, seq=1)
            wait_for(lambda: pub.publish(header, arrays) and ov.refresh())
            layers = {layer.name: layer for layer in napari_viewer.layers}
            assert list(layers) == [
                "raw:Phase", "raw:DAPI", "stain", "labels", "tails", "cells", "decisions"
            ]  # fmt: skip
            assert layers["raw:Phase"].colormap.name == "gray"
            assert layers["raw:DAPI"].blending == "additive"
            assert layers["labels"].contour >= 1
            assert len(layers["cells"].data) == len(header["cells"])
            assert list(layers["cells"].text.values[:3]) == [
                str(c["track"]) for c in header["cells"][:3]
            ]
            assert len(layers["tails"].data) == 10
            assert np.array_equal(layers["raw:DAPI"].data, field.fluorescence)

            labels = layers["labels"]
            boundary, interior = boundary_and_interior(field.labels.astype(np.int32))
            assert boundary.sum() > 1000
            assert interior.sum() > 1000

            # decisions: accepted and rejected stars, drawn on top in their own colours
            shot = screenshot_1to1(napari_viewer, field.labels.shape)
            assert np.allclose(shot[40, 40] / 255, ACCEPTED, atol=0.06)
            assert np.allclose(shot[40, 470] / 255, REJECTED, atol=0.06)

            # contours over the frame (the markers and text drawn above them set aside)
            for name in ("tails", "cells", "decisions"):
                layers[name].visible = False
            napari_viewer.text_overlay.visible = False
            shot = screenshot_1to1(napari_viewer, field.labels.shape)
            on_edges = matches_label_colour(shot, labels, boundary)
            inside = matches_label_colour(shot, labels, interior)
            assert on_edges > 0.95, f"only {on_edges:.0%} of boundary pixels have label colours"
            assert inside < 0.02, f"{inside:.0%} of nucleus interiors are painted over"

            # the check can fail: hide the contours and the same pixels lose their colours
            labels.visible = False
            hidden = matches_label_colour(screenshot_1to1(napari_viewer, field.labels.shape),
                                          labels, boundary)  # fmt: skip
            assert hidden < 0.2, f"{hidden:.0%} of boundary pixels coloured without contours"
            labels.visible = True

            # the frame itself is drawn pixel for pixel (grey phase image alone)
            for layer in napari_viewer.layers:
                layer.visible = layer.name == "raw:Phase"
            napari_viewer.text_overlay.visible = False
            lo, hi = layers["raw:Phase"].contrast_limits
            want = np.clip((field.phase.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255
            error = np.abs(screenshot_1to1(napari_viewer, field.phase.shape)[..., 0] - want)
            assert np.mean(error <= 2) > 0.99, f"frame drawn off by {error.mean():.1f} grey levels"
        finally:
            ov.close()


def test_viewer_shows_the_latest_frame_and_switches_position(
    napari_viewer: Any, field: SimulatedView, tmp_path: Path
) -> None:
    from livescope.view import OverlayViewer

    with OverlayPublisher("run-v", run_dir=tmp_path) as pub:
        ov = OverlayViewer(tmp_path, viewer=napari_viewer, position=None)
        try:
            header, arrays = overlay_of(field, seq=1)
            wait_for(lambda: pub.publish(header, arrays) and ov.subscriber.latest())
            time.sleep(0.2)  # repeats sent while the subscription was reaching the publisher
            assert ov.refresh()
            assert ov.position == "p0"  # the first position seen
            assert not ov.refresh()  # nothing new
            for seq in range(2, 12):  # a burst: the viewer skips to the newest
                h, a = overlay_of(field, seq)
                pub.publish(h, a)
            wait_for(lambda: (m := ov.subscriber.latest("p0")) and m.seq == 11)
            assert ov.refresh()
            assert ov.frames_shown == 2
            assert "frame 11" in napari_viewer.text_overlay.text

            other = {**header, "seq": 50, "position": "p1", "cells": [], "tails": {},
                     "decisions": []}  # fmt: skip
            flipped = {k: np.ascontiguousarray(v[::-1]) for k, v in arrays.items()}
            wait_for(lambda: pub.publish(other, flipped) and ov.subscriber.latest("p1"))
            assert ov.positions() == ["p0", "p1"]
            ov.show_position("p1")
            assert ov.refresh()
            layers = {layer.name: layer for layer in napari_viewer.layers}
            assert np.array_equal(layers["raw:DAPI"].data, field.fluorescence[::-1])
            assert len(layers["cells"].data) == 0
            assert len(layers["decisions"].data) == 0
            assert ov.next_position() == "p0"
            assert ov.refresh()
            assert len(layers["cells"].data) == len(header["cells"])
            assert ov.stats()["rejected"] == 0
            assert ov.refresh_errors == 0
        finally:
            ov.close()


def test_start_refreshes_on_a_qt_timer(
    napari_viewer: Any, field: SimulatedView, tmp_path: Path
) -> None:
    from qtpy.QtWidgets import QApplication

    from livescope.view import OverlayViewer

    with OverlayPublisher("run-v", run_dir=tmp_path) as pub:
        ov = OverlayViewer(tmp_path, viewer=napari_viewer)
        try:
            ov.start(interval_ms=20)
            header, arrays = overlay_of(field, seq=3)

            def shown() -> bool:
                pub.publish(header, arrays)
                QApplication.processEvents()
                return ov.frames_shown > 0

            wait_for(shown)
            ov.stop()
        finally:
            ov.close()


def test_viewer_attached_to_a_running_demo_draws_its_contours(
    napari_viewer: Any, tmp_path: Path
) -> None:
    """The acceptance check: napari on a live `livescope demo`, label contours over its frame."""
    from livescope.view import OverlayViewer

    run = tmp_path / "run"
    demo = subprocess.Popen(
        [sys.executable, "-m", "livescope", "demo", "--frames", "12", "--positions", "1",
         "--interval-s", "60", "--out", str(run), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ov = OverlayViewer(run, viewer=napari_viewer, timeout_s=120)
        try:
            # a field with cells: the worker's labels, drawn as contours over the raw frame
            wait_for(lambda: ov.refresh() and int(ov.subscriber.latest().arrays["labels"].max()),
                     timeout=120)  # fmt: skip
            layers = {layer.name: layer for layer in napari_viewer.layers}
            labels_layer = layers["labels"]
            labels = np.asarray(labels_layer.data)  # what the worker segmented (no refresh now)
            assert labels.shape == (512, 512)
            assert int(labels.max()) > 5
            assert {"raw:Phase", "raw:DAPI"} <= set(layers)
            for name in ("tails", "cells", "decisions", "stain"):
                if name in layers:
                    layers[name].visible = False
            napari_viewer.text_overlay.visible = False
            boundary, interior = boundary_and_interior(labels)
            assert boundary.sum() > 300
            shot = screenshot_1to1(napari_viewer, labels.shape)
            on_edges = matches_label_colour(shot, labels_layer, boundary)
            inside = matches_label_colour(shot, labels_layer, interior)
            assert on_edges > 0.95, f"only {on_edges:.0%} of boundary pixels have label colours"
            assert inside < 0.02
            raw = layers["raw:DAPI"]
            assert np.asarray(raw.data).shape == labels.shape
            assert int(np.asarray(raw.data).max()) > 500  # a real nuclear-stain frame
        finally:
            ov.close()
        _out, err = demo.communicate(timeout=300)
        assert demo.returncode == 0, err
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
