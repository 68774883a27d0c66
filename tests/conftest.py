from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


def write_ndtiff(
    root: Path, image: Callable[[int, int, int], Any], *, timepoints: int = 3, positions: int = 2
) -> Path:
    """Write an NDTiff dataset as pycromanager does (ndstorage): phase + DAPI, 0.65 µm,
    120 s apart, ``image(t, p, c)`` the pixels of each frame. Returns ``root``."""
    import gc
    import warnings

    from ndstorage import NDTiffDataset

    channels = ["Phase", "DAPI"]
    ds = NDTiffDataset(str(root), name="acq", writable=True)
    ds.initialize({"PixelSize_um": 0.65, "ChNames": channels})
    for t in range(timepoints):
        for p in range(positions):
            for c, name in enumerate(channels):
                ds.put_image(
                    {"time": t, "position": p, "channel": name},
                    image(t, p, c),
                    {"ElapsedTime-ms": 120000.0 * t, "PixelSizeUm": 0.65, "Exposure": 20.0,
                     "XPositionUm": 100.0 * p, "YPositionUm": 0.0},
                )  # fmt: skip
    with warnings.catch_warnings():  # ndstorage's finish() leaves a file unclosed (upstream)
        warnings.simplefilter("ignore", ResourceWarning)
        ds.finish()
        ds.close()
        gc.collect()
    return root
