"""``livescope view``: clear errors when it cannot open (the viewer itself: tests/view)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def _view(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``livescope view ARGS --json`` with ``env`` replacing the display's variables."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "livescope", "view", *args, "--json"],
        capture_output=True, text=True, cwd=ROOT, env={**base, **env}, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.skipif(find_spec("napari") is None, reason="napari not installed")
def test_view_without_an_overlay_fails_clearly(tmp_path: Path) -> None:
    res = _view(str(tmp_path), "--timeout-s", "0.2", QT_QPA_PLATFORM="offscreen")
    assert res.returncode == 2, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] is False
    assert "no overlay.json" in out["error"]
    res = _view(str(tmp_path / "typo"), "--timeout-s", "0.2", QT_QPA_PLATFORM="offscreen")
    assert res.returncode == 2, res.stderr
    assert "typo does not exist (no run was started there" in json.loads(res.stdout)["error"]


@pytest.mark.skipif(find_spec("napari") is None, reason="napari not installed")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a desktop always has a display")
def test_view_without_a_display_fails_clearly_instead_of_aborting(tmp_path: Path) -> None:
    res = _view(str(tmp_path), "--timeout-s", "0.2")  # (Qt would abort the process: exit 134)
    assert res.returncode == 2, res.stderr
    assert "needs a graphical display and none is set" in json.loads(res.stdout)["error"]


def test_which_platforms_need_a_display_variable() -> None:
    from livescope.cli._view import no_display_reason

    for env in ({}, {"QT_QPA_PLATFORM": "xcb"}, {"QT_QPA_PLATFORM": "wayland"},
                {"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "wayland-0"}):  # fmt: skip
        assert no_display_reason(env, "linux") is not None, env  # (Qt would abort)
    for env in ({"DISPLAY": ":0"}, {"WAYLAND_DISPLAY": "wayland-0"},
                {"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":1"}, {"QT_QPA_PLATFORM": "offscreen"},
                {"QT_QPA_PLATFORM": "wayland-egl", "WAYLAND_DISPLAY": "w"}):  # fmt: skip
        assert no_display_reason(env, "linux") is None, env
    assert no_display_reason({}, "win32") is None
    assert no_display_reason({}, "darwin") is None


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
