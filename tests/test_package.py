"""The package itself: cheap, side-effect-free import; shipped files present."""

from __future__ import annotations

import subprocess
import sys

import pytest

from livescope.schema import builtin_profiles

from .conftest import ROOT

HEAVY = ("torch", "tensorrt", "pycuda", "onnxruntime", "napari", "dask", "cupy", "pycromanager")


@pytest.mark.parametrize("module", ["livescope", "livescope.schema", "livescope.cli"])
def test_import_loads_no_heavy_module(module: str) -> None:
    code = (
        f"import sys, {module}; heavy = {HEAVY!r}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_layout_matches_design() -> None:
    for name in (
        "pyproject.toml",
        "README.md",
        "livescope",
        "engines",
        "tests",
        "hardware_profiles",
        "tools",
        ".ci/run",
        "dev.py",
    ):
        assert (ROOT / name).exists(), name


def test_shipped_profiles_are_found() -> None:
    found = builtin_profiles()
    assert {"sim", "replay"} <= set(found)
    assert len(found) >= 4
