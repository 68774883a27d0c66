"""``livescope view``: napari attached to a running run's overlay bus."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from livescope.schema import install_command

from ._common import (
    JsonOpt,
    VerboseOpt,
    emit,
    fail,
    finite,
    given_or_none,
    given_path,
    setup_logging,
    user_errors,
)

__all__ = ["view"]

_DRAW_WITHOUT_DISPLAY = ("eglfs",)
"""Qt platforms that need no display variable and can host napari's OpenGL canvas."""

_NO_CANVAS = {
    "offscreen": "it shows no window, and without an X display has no OpenGL either",
    "minimal": "it shows no window and has no OpenGL",
    "vnc": "it has no OpenGL",
    "linuxfb": "it has no OpenGL",
}
"""Qt platforms that start without a display but cannot show napari's canvas, and why."""

_WHAT_TO_DO = (
    "unset QT_QPA_PLATFORM on a desktop, use xcb with an X display (DISPLAY, e.g. over "
    "ssh -X), or run it on a virtual display such as Xvfb: xvfb-run livescope view RUN"
)


def _platform_can_start(platform: str, env: Mapping[str, str]) -> bool:
    """Whether one Qt platform plugin (``xcb``, ``wayland:args``...) has what it needs."""
    name = platform.split(":")[0].strip().lower()
    if name in _DRAW_WITHOUT_DISPLAY or name in _NO_CANVAS:
        return True
    if name.startswith("wayland"):
        return bool(env.get("WAYLAND_DISPLAY"))
    if name == "xcb":
        return bool(env.get("DISPLAY"))
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))  # (Qt's own choice)


def no_display_reason(env: Mapping[str, str], platform: str = sys.platform) -> str | None:
    """Say why napari could not open a window here, or None if it can try.

    On Linux and the BSDs Qt needs an X11 display (``DISPLAY``) or a Wayland
    one (``WAYLAND_DISPLAY``), unless ``QT_QPA_PLATFORM`` names a platform that
    draws without one (``eglfs``); without it Qt aborts the process instead of
    raising. Qt's ``offscreen``, ``minimal``, ``vnc`` and ``linuxfb`` start
    without one but cannot show napari's OpenGL canvas (vispy then raises at
    every paint, for ever). ``QT_QPA_PLATFORM`` may list platforms to try in turn
    (``wayland;xcb``): Qt takes the first that can start. Windows and macOS
    always have a desktop.
    """
    if platform.startswith(("win", "darwin", "cygwin")):
        return None
    qpa = env.get("QT_QPA_PLATFORM", "")
    # (a list, "wayland;xcb", is what many desktops set: Qt goes on to xcb in an X11
    # session, and refusing it there for want of a WAYLAND_DISPLAY was wrong)
    tried = [p for p in qpa.split(";") if p.strip()] or [""]
    for p in tried:
        name = p.split(":")[0].strip().lower()
        if name in _NO_CANVAS:  # (it always starts: the platforms after it are never tried)
            return (
                f"napari's OpenGL canvas cannot be drawn on Qt's {name!r} platform "
                f"(QT_QPA_PLATFORM={qpa!r}: {_NO_CANVAS[name]}): {_WHAT_TO_DO}"
            )
        if _platform_can_start(p, env):
            return None
    if not qpa.strip():
        return (
            "livescope view needs a graphical display and none is set (no DISPLAY or "
            "WAYLAND_DISPLAY): run it on the microscope PC's desktop, or over ssh -X"
        )
    # (a display of the other kind may be set: "no DISPLAY" would be untrue)
    has = [f"only {k} is set" for k in ("DISPLAY", "WAYLAND_DISPLAY") if env.get(k)]
    return (
        f"livescope view needs a graphical display and none is set for QT_QPA_PLATFORM={qpa!r} "
        f"({', '.join(has) or 'no DISPLAY or WAYLAND_DISPLAY'}): unset QT_QPA_PLATFORM or "
        "name your display's platform (xcb for DISPLAY, wayland for WAYLAND_DISPLAY), or run "
        "it on the microscope PC's desktop"
    )


def canvas_problem(wait_s: float = 2.0) -> str | None:
    """Say why napari's shown canvas has no OpenGL context, or None if it has one.

    The safety net behind `no_display_reason`: on a platform that starts but
    gives the canvas no OpenGL, vispy raises at every paint and napari goes on
    for ever, drawing nothing. Qt makes the canvas's context as its window is
    shown; events are processed for up to ``wait_s`` seconds in case it comes
    later. A canvas that is no ``QOpenGLWidget`` (an older vispy) cannot be told
    about: None.
    """
    from qtpy.QtOpenGLWidgets import QOpenGLWidget
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + wait_s
    while True:
        shown = [
            canvas
            for window in QApplication.topLevelWidgets()
            for canvas in window.findChildren(QOpenGLWidget)
            if canvas.isVisible() and not canvas.size().isEmpty()
        ]
        if all(canvas.isValid() for canvas in shown):
            return None
        if time.monotonic() >= deadline:
            break
        QApplication.processEvents()
        time.sleep(0.02)
    name = QApplication.platformName()
    return (
        f"napari's canvas got no OpenGL context on Qt's {name!r} platform (QT_QPA_PLATFORM="
        f"{os.environ.get('QT_QPA_PLATFORM', '')!r}), so nothing can be drawn: {_WHAT_TO_DO}"
    )


def _not_started(run: Path) -> bool:
    """Whether ``run`` holds no overlay.json and no finished run: one waiting may mend.

    A folder that does not exist yet is one (the worker makes it). What cannot
    be looked at (no permission) is not: `OverlaySubscriber` says why at once.
    """
    from livescope.bus import OVERLAY_FILE

    try:
        return not (run / OVERLAY_FILE).exists() and not (run / "summary.json").is_file()
    except OSError:
        return False


def view(
    # (an empty RUN, an unset variable in a script, was the current folder)
    run: Annotated[
        Path,
        typer.Argument(
            parser=given_path,
            help="Folder of a running run (where the worker writes overlay.json).",
        ),
    ],
    # (an empty --position, an unset variable in a script, is refused: no field comes from
    # a position "", and the viewer waited on it for ever)
    position: Annotated[
        str | None,
        typer.Option(
            callback=given_or_none, help="Position to show (default: the first that arrives)."
        ),
    ] = None,
    timeout_s: Annotated[
        float,
        typer.Option(
            min=0, callback=finite, help="Seconds to wait for RUN/overlay.json to appear."
        ),
    ] = 30.0,
    interval_ms: Annotated[
        int, typer.Option(min=10, max=86_400_000, help="Refresh interval of the viewer, ms.")
    ] = 100,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Show a running run live in napari: the newest frame of a position with its overlay.

    Label contours, track ids and tails, the virtual stain and the decisions of
    each analysed frame. The acquisition never waits for the viewer: it shows
    the newest results and skips what it had no time to draw. Needs the
    ``viewer`` extra. PageDown and PageUp show the next and the previous
    position. Blocks until the napari window is closed; with ``--json`` then
    prints the viewer's counters.
    """
    setup_logging(verbose)
    with user_errors(json_out):
        # (as a path "tcp://h:p" is "tcp:/h:p", on Windows "tcp:\h:p")
        if re.match(r"(tcp|ipc|inproc):[/\\]", str(run), re.IGNORECASE):
            scheme = str(run).split(":", 1)[0].lower()
            # (it was waited for as a folder, then said not to exist)
            fail(
                f"livescope view takes the run's folder (where the worker writes overlay.json), "
                f"not an endpoint (a {scheme}:// address); in Python, OverlayViewer(endpoint) "
                "attaches to one",
                as_json=json_out,
            )
        if run.exists() and not run.is_dir():
            fail(f"{run} is a file; give the run's folder", as_json=json_out)
        try:
            import napari
        except ImportError as exc:
            fail(f"napari is not installed ({exc}): {install_command('viewer')}", as_json=json_out)
        from livescope.bus import OverlaySubscriber
        from livescope.view import OverlayViewer

        # (what the run folder holds now is looked at first, needing no window: a finished
        # run or a bad overlay.json is said before a missing display, and with none; a run
        # not started yet is waited for only once the display is known: the viewer is
        # usually started before the worker, and without a display it waited all of
        # --timeout-s to blame the worker instead)
        if not _not_started(run):
            OverlaySubscriber(run, timeout_s=timeout_s).close()  # (at once: the file is there)
        if (why := no_display_reason(os.environ)) is not None:
            if not run.exists():  # (a typo'd path, or a run the worker has yet to make)
                why = (
                    f"{run} does not exist (no run was started there yet): check the run "
                    f"folder's path; and {why}"
                )
            fail(why, as_json=json_out)
        try:
            # (overlay.json is waited for here: a run that ended meanwhile is said to have)
            viewer = OverlayViewer(run, position=position, timeout_s=timeout_s)
        except ImportError as exc:  # napari present, but no Qt binding or OpenGL
            fail(f"napari cannot start ({exc}): {install_command('viewer')}", as_json=json_out)
        stats: dict[str, Any]
        try:
            if (why := canvas_problem()) is not None:
                fail(why, as_json=json_out)
            viewer.start(interval_ms)
            napari.run()
        finally:
            stats = viewer.stats()
            viewer.close()
    if json_out:
        emit({"ok": True, **stats})
