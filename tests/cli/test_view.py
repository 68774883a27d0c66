"""``livescope view``: clear errors when it cannot open (the viewer itself: tests/view)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest

from livescope.schema import install_command
from tests.conftest import ROOT, run_cli


def test_view_is_a_command() -> None:
    res = run_cli("view", "--help")
    assert res.returncode == 0, res.stderr
    assert "overlay" in res.stdout


def test_view_of_a_file_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    res = run_cli("view", str(tmp_path / "summary.json"), "--json")
    assert res.returncode == 2, res.stderr
    assert json.loads(res.stdout)["error"] == (
        f"{tmp_path / 'summary.json'} is a file; give the run's folder"
    )


def _view(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """``livescope view ARGS --json`` with ``env`` replacing the display's variables."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "livescope", "view", *args, "--json"],
        capture_output=True, text=True, cwd=ROOT, env={**base, **env}, timeout=timeout,
        check=False,
    )  # fmt: skip


@pytest.mark.skipif(find_spec("napari") is None, reason="napari not installed")
def test_view_without_an_overlay_fails_clearly(tmp_path: Path) -> None:
    # (eglfs draws without a display variable: the display is let through, and overlay.json
    # is waited for)
    res = _view(str(tmp_path), "--timeout-s", "0.2", QT_QPA_PLATFORM="eglfs")
    assert res.returncode == 2, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] is False
    assert "no overlay.json" in out["error"]
    # (no display at all: what is wrong with the run folder is said too, not only the
    # display, which a user fixing that would otherwise hear about in its place)
    res = _view(str(tmp_path / "typo"), "--timeout-s", "0.2")
    assert res.returncode == 2, res.stderr
    error = json.loads(res.stdout)["error"]
    assert "typo does not exist (no run was started there" in error
    if sys.platform.startswith("linux"):
        assert "needs a graphical display and none is set" in error
    (tmp_path / "summary.json").write_text("{}")
    res = _view(str(tmp_path), "--timeout-s", "0.2")
    assert res.returncode == 2, res.stderr
    assert "holds a finished run (summary.json)" in json.loads(res.stdout)["error"]


@pytest.mark.skipif(find_spec("napari") is None, reason="napari not installed")
@pytest.mark.parametrize("qpa", ["offscreen", "minimal"])
def test_view_on_a_qt_platform_without_a_canvas_fails_instead_of_looping(
    tmp_path: Path, qpa: str
) -> None:
    # napari's OpenGL canvas cannot be made there ("QOpenGLWidget is not supported on
    # this platform"): vispy raised at every paint, the command printed tracebacks for
    # ever, drew nothing and had no window to close (only Ctrl+C ended it)
    from livescope.bus import OverlayPublisher

    with OverlayPublisher("r1", run_dir=tmp_path):  # (overlay.json: the run is found)
        try:
            res = _view(str(tmp_path), "--timeout-s", "5", timeout=60, QT_QPA_PLATFORM=qpa)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"livescope view on QT_QPA_PLATFORM={qpa} still ran after {exc.timeout} s")
    assert res.returncode == 2, res.stderr
    error = json.loads(res.stdout)["error"]
    assert f"napari's OpenGL canvas cannot be drawn on Qt's {qpa!r} platform" in error
    assert "xvfb-run livescope view" in error


@pytest.mark.skipif(find_spec("napari") is None, reason="napari not installed")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a desktop always has a display")
def test_view_without_a_display_fails_clearly_instead_of_aborting(tmp_path: Path) -> None:
    from livescope.bus import OverlayPublisher

    with OverlayPublisher("r1", run_dir=tmp_path):  # (the run is found: the display is next)
        res = _view(str(tmp_path), "--timeout-s", "5")  # (Qt would abort the process: exit 134)
    assert res.returncode == 2, res.stderr
    assert "needs a graphical display and none is set" in json.loads(res.stdout)["error"]


@pytest.mark.skipif(find_spec("napari") is None, reason="napari not installed")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a desktop always has a display")
def test_view_without_a_display_says_so_before_waiting_for_the_run(tmp_path: Path) -> None:
    # the viewer is started first and the worker second: without a display the command
    # waited all of --timeout-s for overlay.json, then blamed the worker for it and never
    # said that it could not have shown anything anyway
    started = time.monotonic()
    res = _view(str(tmp_path), "--timeout-s", "20", timeout=60)
    took = time.monotonic() - started
    assert res.returncode == 2, res.stderr
    error = json.loads(res.stdout)["error"]
    assert "needs a graphical display and none is set" in error
    assert "overlay.json" not in error  # (the worker may well not have started yet)
    assert took < 15, f"it said so after {took:.1f} s (--timeout-s 20: it waited for the run)"


def test_which_platforms_need_a_display_variable() -> None:
    from livescope.cli._view import no_display_reason

    for env in ({}, {"QT_QPA_PLATFORM": "xcb"}, {"QT_QPA_PLATFORM": "wayland"},
                {"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "wayland-0"}):  # fmt: skip
        assert no_display_reason(env, "linux") is not None, env  # (Qt would abort)
    for env in ({"DISPLAY": ":0"}, {"WAYLAND_DISPLAY": "wayland-0"},
                {"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":1"}, {"QT_QPA_PLATFORM": "eglfs"},
                {"QT_QPA_PLATFORM": "wayland-egl", "WAYLAND_DISPLAY": "w"}):  # fmt: skip
        assert no_display_reason(env, "linux") is None, env
    assert no_display_reason({}, "win32") is None
    assert no_display_reason({}, "darwin") is None


@pytest.mark.parametrize(
    ("env", "name"),
    [
        pytest.param({"QT_QPA_PLATFORM": "offscreen"}, "offscreen", id="offscreen"),
        # (with an X display offscreen draws, but in no window anyone sees or can close)
        pytest.param(
            {"QT_QPA_PLATFORM": "offscreen", "DISPLAY": ":0"}, "offscreen", id="with-display"
        ),
        pytest.param({"QT_QPA_PLATFORM": "minimal"}, "minimal", id="minimal"),
        pytest.param({"QT_QPA_PLATFORM": "vnc"}, "vnc", id="vnc"),
        pytest.param({"QT_QPA_PLATFORM": "linuxfb:fb=/dev/fb0"}, "linuxfb", id="linuxfb"),
        # (Qt takes the first platform of a list that starts: offscreen always does)
        pytest.param({"QT_QPA_PLATFORM": "wayland;offscreen"}, "offscreen", id="after-wayland"),
        pytest.param(
            {"QT_QPA_PLATFORM": "offscreen;xcb", "DISPLAY": ":0"}, "offscreen", id="before-xcb"
        ),
    ],
)
def test_a_qt_platform_that_cannot_draw_napari_is_refused(env: dict[str, str], name: str) -> None:
    from livescope.cli._view import no_display_reason

    why = no_display_reason(env, "linux")
    assert why is not None
    assert f"napari's OpenGL canvas cannot be drawn on Qt's {name!r} platform" in why
    assert f"QT_QPA_PLATFORM={env['QT_QPA_PLATFORM']!r}" in why
    assert "xvfb-run livescope view" in why  # (what to do)


@pytest.mark.skipif(find_spec("napari") is None, reason="napari not installed")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Qt's offscreen: Linux only here")
def test_a_canvas_without_opengl_is_told_apart() -> None:
    # the safety net behind no_display_reason: a platform it lets through whose canvas
    # gets no OpenGL context is refused instead of failing at every paint for ever
    code = (
        "import napari\n"
        "from livescope.cli._view import canvas_problem\n"
        "viewer = napari.Viewer(title='probe')\n"
        "print('PROBLEM:', canvas_problem(0.5))\n"
        "viewer.close()\n"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    runs = {"offscreen": [sys.executable, "-c", code]}
    if shutil.which("xvfb-run"):  # (a virtual X display: the canvas gets its OpenGL)
        runs["xcb"] = ["xvfb-run", "-a", sys.executable, "-c", code]
    said = {}
    for qpa, args in runs.items():
        res = subprocess.run(
            args, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
            env={**base, "QT_QPA_PLATFORM": qpa},
        )  # fmt: skip
        lines = [line for line in res.stdout.splitlines() if line.startswith("PROBLEM:")]
        assert lines, (qpa, res.stdout, res.stderr[-2000:])
        said[qpa] = lines[0].removeprefix("PROBLEM: ")
    assert "napari's canvas got no OpenGL context" in said["offscreen"]
    assert "xvfb-run livescope view" in said["offscreen"]
    if "xcb" in said:
        assert said["xcb"] == "None"


def test_view_without_napari_says_what_to_install(tmp_path: Path) -> None:
    fake = tmp_path / "site" / "napari"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'napari'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), str(ROOT)])}
    res = subprocess.run(
        [sys.executable, "-m", "livescope", "view", str(tmp_path), "--json"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    out = json.loads(res.stdout)
    assert install_command("viewer") in out["error"]  # (this Python's pip, this checkout)
