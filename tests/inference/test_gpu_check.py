"""tools/gpu_check.py runs here too (CPU backends), so a GPU lent for minutes is not
spent on a script that fails before it measures anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_gpu_check_quick_run_measures_every_engine_together(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--quick", "--out", str(out),
         "--seconds-per-case", "0.2", "--budget-s", "30"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    together = result["together"]
    assert "error" not in together, together
    assert set(together["runtimes"]) == {"nuclei-unet", "nuclei-stain", "cell-state"}
    # the engines' best backend here against ONNX Runtime on the CPU: the same labels
    assert together["labels_f1_vs_ort_cpu"] >= 0.99
    assert {b["name"] for b in result["backends"]} >= {"onnxruntime", "torch"}
