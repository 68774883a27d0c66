from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from livescope.schema import HardwareProfile, data_root, load_profile
from livescope.scope import SimulatedMicroscope

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path | None:
    """Real annotated data (../shared/data or $LIVESCOPE_DATA), None where absent."""
    return data_root()


@pytest.fixture
def shared_data() -> Path:
    path = data_dir()
    if path is None:
        pytest.skip("real data not found: set LIVESCOPE_DATA (CI always does)")
    return path


@pytest.fixture(scope="session")
def sim_profile() -> HardwareProfile:
    return load_profile("sim")


@pytest.fixture
def sim(sim_profile: HardwareProfile) -> Iterator[SimulatedMicroscope]:
    with SimulatedMicroscope(sim_profile) as scope:
        yield scope


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m livescope ARGS`` in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "livescope", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=600,
        check=False,
    )
