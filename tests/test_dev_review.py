"""dev.py, the set-up script users run: Python check, repairing .venv, stamp, Ctrl+C, exit codes.

Nothing here installs anything: .venv is either an empty one (``venv --without-pip``) or a
stand-in whose ``python`` runs ``fake_python.py`` below, which logs how it was called.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import ROOT

posix_only = pytest.mark.skipif(os.name == "nt", reason="the stand-in python is a sh script")

# not TOML: a pip install of it fails at once, offline
PYPROJECT = b"[project\nname = 'not-livescope'\n"

FAKE_PYTHON = r"""
import json, os, signal, subprocess, sys, time
args = sys.argv[1:]
if args[0] == "-c" and "importlinter" not in args[1]:  # dev.py's look at .venv
    sys.exit(subprocess.run([sys.executable, *args]).returncode)
with open(os.environ["FAKE_LOG"], "a", encoding="utf-8") as f:
    f.write(json.dumps({"args": args, "cwd": os.getcwd()}) + "\n")
if args[:2] == ["-m", os.environ.get("FAKE_CTRL_C", "-")]:
    # the console's Ctrl+C reaches dev.py too, while it waits for this command
    while open(f"/proc/{os.getppid()}/wchan").read().strip() != "do_wait":
        time.sleep(0.01)
    os.kill(os.getppid(), signal.SIGINT)
    sys.exit(130)
if args[:2] == ["-m", "livescope"] and "FAKE_SIGNAL" in os.environ:
    os.kill(os.getpid(), int(os.environ["FAKE_SIGNAL"]))
sys.exit(int(os.environ.get("FAKE_STATUS", "0")))
"""


def import_dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("livescope_dev_script", ROOT / "dev.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_dev(root: Path) -> ModuleType:
    """A fresh dev.py module whose project folder is ``root`` (with a stand-in pyproject)."""
    mod = import_dev()
    (root / "pyproject.toml").write_bytes(PYPROJECT)
    mod.ROOT = root
    mod.VENV = root / ".venv"
    mod.STAMP = mod.VENV / ".livescope-installed"
    return mod


@pytest.fixture
def dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # never the network, whatever happens
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    root = tmp_path / "Lab User" / "livescope"
    root.mkdir(parents=True)
    return load_dev(root)


def stamp_key(root: Path) -> str:
    return hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()


def fake_venv(root: Path, stamp_extras: str | None) -> None:
    """A .venv whose python is FAKE_PYTHON (run by this test's Python), stamped as installed."""
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (root / "fake_python.py").write_text(FAKE_PYTHON, encoding="utf-8")
    py = bin_dir / "python"
    py.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{root / "fake_python.py"}" "$@"\n')
    py.chmod(0o755)
    if stamp_extras is not None:
        stamp = f"{stamp_key(root)} {stamp_extras}"
        (root / ".venv" / ".livescope-installed").write_text(stamp, encoding="utf-8")


def older_python() -> str | None:
    """An interpreter of Python 3.7-3.10 on this machine, if any."""
    names = [shutil.which(f"python3.{m}") for m in (10, 9, 8)]
    names += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[0]*/bin/python3")))
    for name in filter(None, names):
        try:
            out = subprocess.run(
                [name, "-c", "import sys; print(sys.version_info[:2] < (3, 11))"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.strip() == "True":
            return name
    return None


def run_dev(root: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """``python dev.py ARGS`` with dev.py copied into ``root``, run from ``root``'s parent."""
    shutil.copy(ROOT / "dev.py", root / "dev.py")
    full_env = {**os.environ, "FAKE_LOG": str(root / "calls.jsonl"), **env}
    return subprocess.run(
        [sys.executable, str(root / "dev.py"), *args],
        cwd=root.parent,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        # (Ctrl+C as a console gives it: a test run started in the background by a shell
        # has SIGINT ignored, which dev.py would inherit, and it never saw the Ctrl+C)
        preexec_fn=_sigint_default if os.name == "posix" else None,
    )


def _sigint_default() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def calls(root: Path) -> list[dict[str, object]]:
    log = root / "calls.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------ Python version


def test_python_3_10_is_refused_before_anything_is_made(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "version_info", (3, 10, 13, "final", 0))
    monkeypatch.setattr(sys, "argv", ["dev.py", "demo"])
    with pytest.raises(SystemExit, match=r"needs Python >= 3\.11; this is Python 3\.10"):
        dev.main()
    assert not dev.VENV.exists()


def test_real_older_python_is_refused_with_a_message(tmp_path: Path) -> None:
    old = older_python()
    if old is None:
        pytest.skip("no Python older than 3.11 on this machine")
    root = tmp_path / "Lab User"
    root.mkdir()
    (root / "pyproject.toml").write_bytes(PYPROJECT)
    shutil.copy(ROOT / "dev.py", root / "dev.py")
    proc = subprocess.run(
        [old, str(root / "dev.py"), "demo"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "needs Python >= 3.11" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (root / ".venv").exists()


# ------------------------------------------------------------------ a .venv that cannot work


def test_venv_problem_names_each_unusable_venv(tmp_path: Path) -> None:
    dev = import_dev()
    bin_name = "Scripts/python.exe" if os.name == "nt" else "bin/python"

    assert "missing" in dev.venv_problem(tmp_path / "none" / bin_name)
    venv.create(tmp_path / "no pip", with_pip=False)  # a first run stopped half-way
    assert "no pip" in dev.venv_problem(tmp_path / "no pip" / bin_name)
    if importlib.util.find_spec("pip") is not None:
        assert dev.venv_problem(Path(sys.executable)) is None
    old = older_python()
    if old is not None:
        subprocess.run([old, "-m", "venv", "--without-pip", str(tmp_path / "old")], check=True)
        assert "made by Python 3." in dev.venv_problem(tmp_path / "old" / bin_name)


def test_second_run_remakes_a_venv_left_without_pip(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    pip_spec = importlib.util.find_spec("pip")
    if pip_spec is None or pip_spec.origin is None:
        pytest.skip("this Python has no pip to lend the new .venv")
    venv.create(dev.VENV, with_pip=False)  # what a first run stopped in ensurepip leaves
    made: list[bool] = []
    real_create = venv.create

    def create_fast(path: Path, clear: bool = False, with_pip: bool = False) -> None:
        # ensurepip takes several seconds: the new .venv borrows this Python's pip instead
        made.append(clear)
        real_create(path, clear=clear, with_pip=False)
        (site,) = [
            *Path(path).glob("lib/python3.*/site-packages"),
            *Path(path).glob("Lib/site-packages"),
        ]
        (site / "_pip.pth").write_text(str(Path(pip_spec.origin).parents[1]), encoding="utf-8")

    monkeypatch.setattr(venv, "create", create_fast)
    with pytest.raises(SystemExit, match="installing livescope failed"):
        dev.ensure_env("core")  # made again, then the stand-in pyproject fails pip
    assert made == [True]
    has_pip = subprocess.run([str(dev.venv_python()), "-c", "import pip"], check=False)
    assert has_pip.returncode == 0


def test_ctrl_c_while_the_venv_is_made_says_so_and_the_next_run_makes_it_again(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_create = venv.create

    def create_interrupted(path: Path, clear: bool = False, with_pip: bool = False) -> None:
        real_create(path, clear=clear, with_pip=False)  # then Ctrl+C in ensurepip
        raise KeyboardInterrupt

    monkeypatch.setattr(venv, "create", create_interrupted)
    with pytest.raises(SystemExit, match="was interrupted: the next run makes it again"):
        dev.ensure_env("core")
    assert "no pip" in dev.venv_problem(dev.venv_python())  # (so the next run remakes it)


# ------------------------------------------------------------------ the install stamp


@posix_only
def test_failed_install_leaves_no_stamp_claiming_an_install(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_venv(dev.ROOT, stamp_extras="core")
    monkeypatch.setenv("FAKE_LOG", str(dev.ROOT / "calls.jsonl"))
    monkeypatch.setenv("FAKE_STATUS", "1")  # pip fails half-way through adding the test tools
    assert dev.ensure_env("core") == dev.venv_python()  # installed: nothing to do
    with pytest.raises(SystemExit, match="installing livescope failed"):
        dev.ensure_env("dev")
    # what pip left may lack a core package it was replacing: installed again, not trusted
    with pytest.raises(SystemExit, match="installing livescope failed"):
        dev.ensure_env("core")
    assert [c["args"][:3] for c in calls(dev.ROOT)] == [["-m", "pip", "install"]] * 2


# ------------------------------------------------------------------ running: args, Ctrl+C, exit


@posix_only
def test_arguments_reach_pytest_and_the_demo_as_given(tmp_path: Path) -> None:
    root = tmp_path / "Lab User" / "livescope"
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_bytes(PYPROJECT)
    fake_venv(root, stamp_extras="dev")
    args = ["-k", "profile and not 'slow'", 'say "hi"', "C:\\Users\\Lab User\\x"]
    assert run_dev(root, ["test", *args]).returncode == 0
    assert calls(root)[-1]["args"] == ["-m", "pytest", *args]
    assert run_dev(root, ["demo", "--out", "runs/try 1"]).returncode == 0
    assert calls(root)[-1] == {
        "args": ["-m", "livescope", "demo", "--out", "runs/try 1"],
        "cwd": str(root.parent),
    }


@pytest.mark.skipif(
    not os.path.exists(f"/proc/{os.getpid()}/wchan"), reason="needs Linux's /proc/PID/wchan"
)
def test_ctrl_c_during_test_stops_the_remaining_checks(tmp_path: Path) -> None:
    root = tmp_path / "Lab User" / "livescope"
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_bytes(PYPROJECT)
    fake_venv(root, stamp_extras="dev")
    proc = run_dev(root, ["test"], FAKE_CTRL_C="ruff")
    assert [c["args"] for c in calls(root)] == [["-m", "ruff", "check", "."]]
    assert proc.returncode == 130
    assert "interrupted during ruff (lint)" in proc.stderr
    assert "Traceback" not in proc.stderr


@posix_only
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({"FAKE_STATUS": "3"}, 3, id="status"),
        pytest.param({"FAKE_SIGNAL": str(int(signal.SIGTERM))}, 128 + 15, id="killed-SIGTERM"),
    ],
)
def test_demo_exit_status_is_passed_back(
    tmp_path: Path, env: dict[str, str], expected: int
) -> None:
    root = tmp_path / "livescope"
    root.mkdir()
    (root / "pyproject.toml").write_bytes(PYPROJECT)
    fake_venv(root, stamp_extras="core")
    assert run_dev(root, ["demo"], **env).returncode == expected


# ------------------------------------------------------------------ .ci/run


def test_ci_installs_every_program_a_test_skips_without() -> None:
    """A test that skips when a program is missing must not skip in CI for want of it.

    Each `shutil.which("NAME")` in the tests (alternatives on one line: any of them) must be
    named in .ci/run, which installs it in a fresh clone.
    """
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    wanted = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for line in path.read_text(encoding="utf-8").splitlines():
            names = re.findall(r"shutil\.which\(\"([^\"]+)\"\)", line)
            if names and path.name != Path(__file__).name:
                wanted.append((path.relative_to(ROOT).as_posix(), names))
    assert wanted, "no test looks for a program: the check below checks nothing"
    missing = [(p, n) for p, n in wanted if not any(f"command -v {name} " in ci for name in n)]
    assert missing == []
