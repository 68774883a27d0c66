"""dev.py keeps .venv importing livescope from this folder; a crash status reaches the shell.

A .venv moved or renamed with its folder imports the old folder's livescope (and its
programs start the old python); on Windows, Python 3.11 and 3.12 skip the installed .pth
when the folder's name has letters outside the ANSI code page, and find only the shipped
engines and profiles copied into site-packages. Nothing here installs anything: .venv is a
venv made without pip (an empty ``pip`` package stands in), and what ``pip install -e .``
leaves (its PEP 610 record, the .pth that points at the folder) is written by the test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import venv
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import ROOT

PYPROJECT = b"[project\nname = 'not-livescope'\n"  # (never installed: run() is replaced)


def load_dev(root: Path) -> ModuleType:
    """A fresh dev.py module whose project folder is ``root``."""
    spec = importlib.util.spec_from_file_location("livescope_dev_setup", ROOT / "dev.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.ROOT = root
    mod.VENV = root / ".venv"
    mod.STAMP = mod.VENV / ".livescope-installed"
    return mod


@pytest.fixture
def dev(tmp_path: Path) -> ModuleType:
    root = (tmp_path / "Lab J\u00fcrgen" / "livescope").resolve()
    (root / "livescope").mkdir(parents=True)
    (root / "livescope" / "__init__.py").write_text("", encoding="utf-8")
    (root / "pyproject.toml").write_bytes(PYPROJECT)
    return load_dev(root)


def site_packages(env: Path) -> Path:
    (site,) = [*env.glob("lib/python3.*/site-packages"), *env.glob("Lib/site-packages")]
    return site


def small_venv(dev: ModuleType) -> Path:
    """dev.VENV made in a moment: no pip, an empty ``pip`` package for dev.py's look at it."""
    venv.create(dev.VENV, with_pip=False)
    pip = site_packages(dev.VENV) / "pip"
    pip.mkdir()
    (pip / "__init__.py").write_text("", encoding="utf-8")
    py: Path = dev.venv_python()
    return py


def pip_install_e(env: Path, source: Path, pth_text: str | None = None) -> None:
    """What ``pip install -e SOURCE`` leaves in ``env`` (hatchling's .pth; ``pth_text``: as read).

    The force-included engines are copied into site-packages/livescope/, as hatchling does.
    """
    site = site_packages(env)
    dist = site / "livescope-0.1.0.dist-info"
    dist.mkdir(exist_ok=True)
    record = {"url": source.as_uri(), "dir_info": {"editable": True}}
    (dist / "direct_url.json").write_text(json.dumps(record), encoding="utf-8")
    pth = str(source) if pth_text is None else pth_text
    (site / "_editable_impl_livescope.pth").write_text(pth, encoding="utf-8")
    (site / "livescope" / "_engines").mkdir(parents=True, exist_ok=True)


def stamp(dev: ModuleType, extras: str = "core") -> None:
    key = dev.hashlib.sha256((dev.ROOT / "pyproject.toml").read_bytes()).hexdigest()
    dev.STAMP.write_text(f"{key} {extras}", encoding="utf-8")


def record_runs(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch, then: object = None
) -> list[list[str]]:
    """Replace dev.run (pip): record each command, call ``then()``, and succeed."""
    runs: list[list[str]] = []

    def fake_run(cmd: Sequence[object], *args: object, **kwargs: object) -> int:
        runs.append([str(c) for c in cmd])
        if callable(then):
            then()
        return 0

    monkeypatch.setattr(dev, "run", fake_run)
    return runs


# ------------------------------------------------------------------ a moved or renamed folder


def test_venv_made_before_the_folder_was_moved_is_made_again(
    dev: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    py = small_venv(dev)
    old = tmp_path / "old name" / "livescope"  # where it was installed, then renamed
    (old / "livescope").mkdir(parents=True)
    (old / "livescope" / "__init__.py").write_text("", encoding="utf-8")
    pip_install_e(dev.VENV, old)
    stamp(dev)

    problem = dev.venv_problem(py)
    assert problem is not None
    assert "old name" in problem
    assert "moved or renamed" in problem
    made: list[bool] = []

    def make_venv(clear: bool) -> None:
        made.append(clear)
        raise SystemExit("made again")

    monkeypatch.setattr(dev, "make_venv", make_venv)
    with pytest.raises(SystemExit, match="made again"):
        dev.ensure_env("core")
    assert made == [True]  # emptied: its programs start the old folder's python


def test_venv_installed_from_this_folder_is_kept_as_it_is(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    py = small_venv(dev)
    pip_install_e(dev.VENV, dev.ROOT)
    stamp(dev)
    runs = record_runs(dev, monkeypatch)
    assert dev.venv_problem(py) is None
    assert dev.ensure_env("core") == py
    assert runs == []


# ------------------------------------------------------------------ livescope found elsewhere


def test_stamped_install_that_imports_no_livescope_code_is_installed_again_then_refused(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The .pth as Python 3.11/3.12 on Windows read it (UTF-8 read as cp1252): skipped."""
    py = small_venv(dev)
    pip_install_e(dev.VENV, dev.ROOT, str(dev.ROOT).encode().decode("cp1252"))
    stamp(dev)
    runs = record_runs(dev, monkeypatch)  # pip installs it again, as it was

    with pytest.raises(SystemExit, match=r"does not import it from .*no livescope package"):
        dev.ensure_env("core")
    assert [cmd[1:4] for cmd in runs] == [["-m", "pip", "install"]]
    assert not dev.STAMP.exists()  # the next run installs and checks again
    assert "no livescope package" in dev.import_problem(py)


def test_stamped_install_of_another_copy_is_installed_again(
    dev: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    py = small_venv(dev)
    other = tmp_path / "other copy"
    (other / "livescope").mkdir(parents=True)
    (other / "livescope" / "__init__.py").write_text("", encoding="utf-8")
    pip_install_e(dev.VENV, dev.ROOT, str(other))  # recorded here, imported from there
    stamp(dev)
    # pip puts right what pointed elsewhere
    runs = record_runs(dev, monkeypatch, lambda: pip_install_e(dev.VENV, dev.ROOT))

    assert dev.ensure_env("core") == py
    assert len(runs) == 1
    assert dev.STAMP.exists()
    assert dev.import_problem(py) is None


def test_new_install_is_stamped_only_once_it_imports_from_this_folder(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_venv(dev)
    record_runs(dev, monkeypatch, lambda: pip_install_e(dev.VENV, dev.ROOT))
    assert dev.ensure_env("core") == dev.venv_python()
    assert dev.STAMP.read_text(encoding="utf-8").split()[1:] == ["core"]


def test_advice_on_windows_names_the_folder_name_and_python_3_13(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        m.setattr(os, "name", "nt")
        advice = dev.import_advice()
    assert "ASCII" in advice
    assert "Python 3.13" in advice
    assert "Lab J\u00fcrgen" in advice


# ------------------------------------------------------------------ Windows crash statuses


@pytest.mark.parametrize(
    ("status", "expected", "said"),
    [
        pytest.param(0xC0000005, 1, "0xC0000005 (STATUS_ACCESS_VIOLATION", id="access-violation"),
        pytest.param(0xE0434352, 1, "status 0xE0434352", id="unknown-ntstatus"),
        pytest.param(3, 3, "", id="plain-status"),
    ],
)
def test_windows_crash_status_is_named_and_gives_1(
    dev: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    status: int,
    expected: int,
    said: str,
) -> None:
    """sys.exit(0xC0000005) overflows before Python 3.12.8 (exit status -1)."""

    class Popen:
        def __init__(self, cmd: list[str], **kwargs: object) -> None:
            pass

        def wait(self) -> int:
            return status

    monkeypatch.setattr(subprocess, "Popen", Popen)
    assert dev.run(["python", "-m", "livescope", "demo"]) == expected
    err = capsys.readouterr().err
    assert said in err
    assert ("ended with" in err) == (status != 3)
