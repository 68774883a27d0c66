"""``livescope view``: clear errors when it cannot open (the viewer itself: tests/view)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

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


@pytest.mark.skipif(find_spec("napari") is None, reason="napari not installed")
def test_view_without_an_overlay_fails_clearly(tmp_path: Path) -> None:
    res = run_cli("view", str(tmp_path), "--timeout-s", "0.2", "--json")
    assert res.returncode == 2, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] is False
    assert "no overlay.json" in out["error"]
    res = run_cli("view", str(tmp_path / "typo"), "--timeout-s", "0.2", "--json")
    assert res.returncode == 2, res.stderr
    assert "typo does not exist (no run was started there" in json.loads(res.stdout)["error"]


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
    assert "pip install 'livescope[viewer]'" in out["error"]
