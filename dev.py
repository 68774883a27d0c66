#!/usr/bin/env python3
"""Set livescope up in a local virtual environment, then run the demo or the tests.

    python dev.py demo [options of `livescope demo`]    set up, then run the demo
    python dev.py test [options of pytest]              set up, then run every check

The same commands work on Windows, macOS and Linux (Python >= 3.11; on Windows
``py dev.py ...`` works too). The environment lives in ``.venv`` beside this
file and is reinstalled only when ``pyproject.toml`` changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".livescope-installed"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> int:
    """Run a command (in ``cwd``, by default beside this file) and return its exit status.

    A Ctrl+C reaches the command (the console sends it to both): this script
    waits for it to finish on its own (the demo writes its summary when
    interrupted) and returns its status, instead of stopping with a traceback.
    """
    print("+ " + " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue


def ensure_env(extra: str) -> Path:
    """Create .venv and install livescope (editable) with ``extra`` when needed."""
    py = venv_python()
    if not py.exists():
        print(f"creating virtual environment in {VENV}", file=sys.stderr, flush=True)
        venv.create(VENV, with_pip=True)
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    installed = STAMP.read_text(encoding="utf-8").split() if STAMP.exists() else []
    if installed[:1] == [key] and (extra in installed[1:] or extra == "core"):
        return py
    spec = "." if extra == "core" else f".[{extra}]"
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if run([*pip, "-e", spec]) != 0:
        sys.exit("installing livescope failed (see the pip output above)")
    extras = set(installed[1:]) if installed[:1] == [key] else set()
    STAMP.write_text(" ".join([key, *sorted(extras | {extra})]), encoding="utf-8")
    return py


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
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("\nall checks passed", file=sys.stderr)
    return 0


def main() -> int:
    commands = {"demo": cmd_demo, "test": cmd_test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
