"""A Ctrl+C as an adaptive run starts its stall probe closes the worker's log.

The supervisor had opened ``results/worker.log``; the interrupt came before the run's
``try``, whose handler stops the supervisor, so the file was left open (a
ResourceWarning, and on Windows a folder that cannot be removed until exit).
"""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import pytest

from livescope.bus import StallMonitor
from livescope.pipeline import run_adaptive
from livescope.schema import load_profile
from livescope.scope import demo_sequence


def test_a_ctrl_c_as_the_stall_probe_starts_leaves_no_log_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: StallMonitor) -> StallMonitor:
        raise KeyboardInterrupt

    monkeypatch.setattr(StallMonitor, "start", interrupted)
    prof = load_profile("sim")
    seq = demo_sequence(prof, timepoints=2, positions=1)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(KeyboardInterrupt):
            run_adaptive(prof, seq, tmp_path / "run", seed=1)
        gc.collect()
    left = [str(w.message) for w in said if issubclass(w.category, ResourceWarning)]
    assert not [w for w in left if "worker.log" in w], left
