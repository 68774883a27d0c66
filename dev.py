#!/usr/bin/env python3
"""Set livescope up in a local virtual environment, then run the demo or the tests.

    python dev.py demo [options of `livescope demo`]    set up, then run the demo
    python dev.py test [options of pytest]              set up, then run every check

The same commands work on Windows, macOS and Linux (Python >= 3.11; on Windows
``py dev.py ...`` works too). The environment lives in ``.venv`` beside this
file and is reinstalled only when ``pyproject.toml`` changes or its python no
longer imports livescope from this folder (made again when it cannot work: left
half-made by an interrupted first run, made by an older Python, or made before
this folder was moved or renamed).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
import venv
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".livescope-installed"
# zarr >= 3.0.8 and numcodecs >= 0.16, core dependencies, have no release for 3.10
MIN_PYTHON = (3, 11)
# set by run() when a Ctrl+C came while a command ran: `test` then stops instead of going on
interrupted = False
# Windows exit statuses (NTSTATUS) of a crash, as livescope.pipeline names them (this script
# imports nothing of livescope: it runs before livescope is installed)
NTSTATUS = {
    0xC0000005: "STATUS_ACCESS_VIOLATION, a crash in native code",
    0xC000001D: "STATUS_ILLEGAL_INSTRUCTION, code built for a newer CPU",
    0xC00000FD: "STATUS_STACK_OVERFLOW, a crash in native code",
    0xC0000135: "STATUS_DLL_NOT_FOUND, a DLL it needs was not found",
    0xC000013A: "STATUS_CONTROL_C_EXIT, a Ctrl+C or its console closed",
    0xC0000374: "STATUS_HEAP_CORRUPTION, a crash in native code",
    0xC0000409: "STATUS_STACK_BUFFER_OVERRUN, a crash in native code or an abort()",
}
# where the venv's python finds livescope (printed with ascii(): a Windows pipe is in the
# ANSI code page, which cannot write every folder name)
FIND_LIVESCOPE = (
    "import importlib.util as u; s = u.find_spec('livescope'); print(ascii(s and s.origin))"
)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(cmd: Sequence[object], env: dict[str, str] | None = None, cwd: Path = ROOT) -> int:
    """Run a command (in ``cwd``, by default beside this file) and return its exit status.

    A Ctrl+C reaches the command (the console sends it to both): this script
    waits for it to finish on its own (the demo writes its summary when
    interrupted) and returns its status, instead of stopping with a traceback;
    ``interrupted`` is then set. A command killed by signal N (POSIX) gives
    128 + N, as a shell says it: passed to sys.exit, -N would exit with 256 - N.
    A Windows NTSTATUS (a crash: 3221225477 is 0xC0000005) is named here and
    gives 1: sys.exit cannot pass on a status >= 2**31 before Python 3.12.8
    (it exited with -1, or 0xFFFFFFFF).
    """
    global interrupted
    print("+ " + " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env)
    while True:
        try:
            status = proc.wait()
            break
        except KeyboardInterrupt:
            interrupted = True
    if status >= 2**31:
        name = NTSTATUS.get(status)
        print(
            f"{cmd[0]} ended with status 0x{status:08X}" + (f" ({name})" if name else ""),
            file=sys.stderr,
        )
        return 1
    return 128 - status if status < 0 else status


def ask_python(
    py: Path, code: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str] | str:
    """Run ``code`` with the python ``py``; its output, or why it does not start (a str)."""
    try:
        # (errors replaced: a Windows launcher's message may come in another code page)
        return subprocess.run(
            [str(py), "-c", code],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{py} does not start ({exc})"


def venv_problem(py: Path) -> str | None:
    """Why ``.venv`` cannot be used as it is (``py``, its python), None where it can.

    A first run stopped while the environment was made (Ctrl+C, a full disk) leaves a
    python without pip; a .venv made by an older Python cannot install livescope, and
    one whose Python was removed or upgraded since (Homebrew's, a conda environment's)
    does not start. One made before this folder was moved or renamed (pip's record
    names the old folder) imports livescope from there, and its programs (pip,
    Windows' Scripts\\*.exe) start the python there. Each would fail at every run: it
    is made again instead.
    """
    if not py.exists():  # a dangling link too: the Python it was made from is gone
        return f"{py} is missing"
    check = "import sys; print(*sys.version_info[:2]); import pip"
    proc = ask_python(py, check)
    if isinstance(proc, str):
        return proc
    version = tuple(int(v) for v in proc.stdout.split() if v.isdigit())
    if len(version) != 2:
        return f"{py} does not start ({(proc.stderr.strip().splitlines() or ['?'])[-1]})"
    if version < MIN_PYTHON:
        return f"it was made by Python {version[0]}.{version[1]}"
    if proc.returncode != 0:
        return "it has no pip (a first set-up stopped half-way?)"
    sources = installed_from(py.parents[1])
    if sources and ROOT not in sources:
        return f"it was made for {sources[0]} (this folder was moved or renamed since)"
    return None


def installed_from(env: Path) -> list[Path]:
    """The folders livescope was installed from into the environment ``env``, as pip says.

    pip writes where each package came from in its ``direct_url.json`` (PEP 610): for
    ``pip install -e .``, the folder it ran in. Empty where there is none (livescope not
    installed, or by a tool that keeps no such record): nothing to compare with.
    """
    sources = []
    records = [
        *env.glob("lib/*/site-packages/livescope-*.dist-info/direct_url.json"),
        *env.glob("Lib/site-packages/livescope-*.dist-info/direct_url.json"),
    ]
    for record in records:
        try:
            parts = urlsplit(json.loads(record.read_text(encoding="utf-8"))["url"])
            if parts.scheme != "file":
                continue
            # (a UNC path, file://server/share/..., keeps its server)
            where = (
                parts.path if parts.netloc in ("", "localhost") else f"//{parts.netloc}{parts.path}"
            )
            sources.append(Path(url2pathname(where)).resolve())
        except (OSError, ValueError, KeyError, TypeError):
            continue  # (a record pip left half-written says nothing)
    return sources


def import_problem(py: Path) -> str | None:
    """Why ``py`` (the venv's python) does not import livescope from this folder; None if it does.

    Run where the user may run it, outside this folder. A venv moved with this folder
    imports the old folder's livescope; on Windows, Python 3.11 and 3.12 read the
    installed ``.pth`` that points here in the ANSI code page, not in the UTF-8 it was
    written in, and skip a folder name with other letters (C:\\Users\\Jürgen): only the
    shipped engines and profiles copied into site-packages are found, as an empty
    package. Not checked (None) where pip left no record of installing livescope.
    """
    if not installed_from(py.parents[1]):
        return None
    # (the user's PYTHONPATH is no part of the install; the venv's own folder holds no
    # livescope/ that `-c` would find there)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = ask_python(py, FIND_LIVESCOPE, cwd=py.parents[1], env=env)
    if isinstance(proc, str):
        return proc
    try:
        origin = ast.literal_eval((proc.stdout.strip().splitlines() or ["?"])[-1])
    except (ValueError, SyntaxError):
        return f"{py} does not start ({(proc.stderr.strip().splitlines() or ['?'])[-1]})"
    if origin is None:
        # no package, or only the folder of the shipped engines and profiles (a namespace)
        return "`import livescope` finds no livescope package with code"
    if Path(origin).resolve() != (ROOT / "livescope" / "__init__.py").resolve():
        return f"`import livescope` loads {origin}"
    return None


def make_venv(clear: bool) -> None:
    """Create .venv (``clear``: empty it first) with pip; exit with a message if that fails."""
    try:
        venv.create(VENV, clear=clear, with_pip=True)
    except subprocess.CalledProcessError as exc:
        # ensurepip's output says why (Debian and Ubuntu ship it apart: python3-venv)
        sys.exit(
            f"creating the virtual environment in {VENV} failed:\n{exc.output or exc}\n"
            "On Debian or Ubuntu, install the python3-venv package (e.g. "
            '"sudo apt install python3.11-venv"), then run this again.'
        )
    except KeyboardInterrupt:
        # (Ctrl+C in ensurepip, which takes a while: a traceback told nothing; what it left,
        # a python without pip, is made again by the next run)
        sys.exit(
            f"creating the virtual environment in {VENV} was interrupted: the next run makes "
            "it again"
        )
    except OSError as exc:
        sys.exit(
            f"creating the virtual environment in {VENV} failed ({exc}): close the programs "
            "that use it, or delete that folder, then run this again."
        )


def ensure_env(extra: str) -> Path:
    """Create .venv and install livescope (editable) with ``extra`` when needed."""
    py = venv_python()
    if not VENV.exists():
        print(f"creating virtual environment in {VENV}", file=sys.stderr, flush=True)
        make_venv(clear=False)
    else:
        problem = venv_problem(py)
        if problem is not None:
            print(f"making the virtual environment in {VENV} again: {problem}", file=sys.stderr)
            make_venv(clear=True)
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    installed = STAMP.read_text(encoding="utf-8").split() if STAMP.exists() else []
    if installed[:1] == [key] and (extra in installed[1:] or extra == "core"):
        problem = import_problem(py)
        if problem is None:
            return py
        print(f"installing livescope again: {problem}", file=sys.stderr, flush=True)
    spec = "." if extra == "core" else f".[{extra}]"
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    # pip stopped half-way may have removed a package it was replacing: until it succeeds,
    # no stamp claims any install (the next run installs again)
    STAMP.unlink(missing_ok=True)
    if run([*pip, "-e", spec]) != 0:
        if interrupted:
            sys.exit("installing livescope was interrupted: the next run installs it again")
        sys.exit("installing livescope failed (see the pip output above)")
    problem = import_problem(py)
    if problem is not None:
        # no stamp: the next run installs and checks again, instead of running another copy
        sys.exit(
            f"livescope was installed, but {py} does not import it from {ROOT}: {problem}.\n"
            + import_advice()
        )
    extras = set(installed[1:]) if installed[:1] == [key] else set()
    STAMP.write_text(" ".join([key, *sorted(extras | {extra})]), encoding="utf-8")
    return py


def import_advice() -> str:
    """What to do when the venv's python does not import livescope from this folder."""
    if os.name == "nt" and not str(ROOT).isascii():
        return (
            f"Python 3.11 and 3.12 on Windows cannot find a folder whose path has letters such "
            f"as those in {ROOT} (the .pth file pip installed is UTF-8; they read it in the "
            "ANSI code page). Move this folder to a path of plain ASCII letters (e.g. "
            "C:\\src\\livescope), or delete .venv and run this with Python 3.13 or newer."
        )
    return f"Delete {VENV} and run this again."


def cmd_demo(args: list[str]) -> int:
    py = ensure_env("core")
    # in the caller's folder: a relative --out or --plan is where the user means it (and
    # the default runs/ lands there)
    return run([py, "-m", "livescope", "demo", *args], cwd=Path.cwd())


def cmd_test(args: list[str]) -> int:
    py = ensure_env("dev")
    env = dict(os.environ)
    data = ROOT.parent / "shared" / "data"
    if "LIVESCOPE_DATA" not in env and data.is_dir():
        env["LIVESCOPE_DATA"] = str(data)
    steps = [
        ("ruff (lint)", [py, "-m", "ruff", "check", "."]),
        ("ruff (format)", [py, "-m", "ruff", "format", "--check", "."]),
        # (checked as on each platform livescope runs on, wherever this runs: a call that
        # exists on one platform only must sit in a branch of an `if sys.platform ...`;
        # a cache per platform, so that the three do not overwrite each other's)
        *(
            (
                f"mypy (strict on livescope/, as on {platform})",
                [
                    py,
                    "-m",
                    "mypy",
                    "--platform",
                    platform,
                    "--cache-dir",
                    f".mypy_cache/{platform}",
                ],
            )
            for platform in ("linux", "win32", "darwin")
        ),
        (
            "import-linter (layers)",
            [
                py,
                "-c",
                "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())",
            ],
        ),
        ("pytest", [py, "-m", "pytest", *args]),
    ]
    failed = []
    for name, cmd in steps:
        print(f"\n=== {name}", file=sys.stderr, flush=True)
        if run(cmd, env) != 0:
            failed.append(name)
        if interrupted:  # a Ctrl+C stops every check, not only the one running
            print(f"\ninterrupted during {name}", file=sys.stderr)
            return 130
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("\nall checks passed", file=sys.stderr)
    return 0


def main() -> int:
    if sys.version_info < MIN_PYTHON:
        # before anything is made or installed: a .venv of this Python could not install
        # livescope
        sys.exit(
            "livescope needs Python >= {}.{}; this is Python {}.{} ({}). Run this file with a "
            'newer one (python.org or conda), e.g. "py -3.11 dev.py ..." on Windows or '
            '"python3.11 dev.py ..." elsewhere.'.format(
                *MIN_PYTHON, *sys.version_info[:2], sys.executable
            )
        )
    commands = {"demo": cmd_demo, "test": cmd_test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
