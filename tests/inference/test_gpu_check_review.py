"""Review of tools/gpu_check.py: what a GPU machine lent for minutes needs of it.

The check is run in this process on small frames with no time budget left, so
every measured case is skipped and it takes seconds: the engines together, the
backends' table, the skipped cases and the JSON written along the way.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from livescope.inference import _backends
from tests.conftest import ROOT


class _BrokenBackend:
    """A backend whose library is installed but fails to load (torch missing a CUDA library)."""

    name = "broken-gpu"

    def available(self) -> tuple[bool, str]:
        raise OSError("libcudart.so.13: cannot open shared object file")

    def priority(self) -> int:
        return 5

    def load(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a backend that cannot load is never asked to")


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("gpu_check")
    rng = np.random.default_rng(0)
    frames = tmp / "frames.npz"
    # small frames under every size's key: the check only needs images to run on
    np.savez(frames, **{f"s{s}_0": rng.random((64, 64)).astype(np.float32)
                        for s in (512, 1024, 2048)})  # fmt: skip
    out = tmp / "gpu_check.json"
    tool = _load_tool()
    seen: dict[str, Any] = {}

    def demo_reads_the_file(folder: Path, timeout_s: float) -> dict:
        # (where the adaptive demo would run for minutes: what a kill then would leave)
        seen["before_demo"] = json.loads(out.read_text(encoding="utf-8")) if out.exists() else None
        return {"exit": 0}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_backends, "BACKENDS", (*_backends.BACKENDS, _BrokenBackend()))
        mp.setattr(tool, "BACKENDS", _backends.BACKENDS, raising=False)  # (the tool's own name)
        mp.setattr(tool, "run_demo", demo_reads_the_file)
        argv = ["--out", str(out), "--frames", str(frames), "--budget-s", "0",
                "--seconds-per-case", "0", "--demo", str(tmp / "demo")]  # fmt: skip
        mp.setattr(sys, "argv", ["gpu_check.py", *argv])
        seen["exit"] = tool.main()
    seen["final"] = json.loads(out.read_text(encoding="utf-8"))
    return seen


def test_a_backend_that_fails_to_load_is_listed_not_a_crash(checked: dict[str, Any]) -> None:
    assert checked["exit"] == 0
    broken = [b for b in checked["final"]["backends"] if b["name"] == "broken-gpu"]
    assert len(broken) == 1
    assert broken[0]["available"] is False
    assert "OSError" in broken[0]["detail"]
    assert "error" not in checked["final"]["together"], checked["final"]["together"]


def test_the_json_is_written_as_it_goes_and_says_when_it_is_finished(
    checked: dict[str, Any],
) -> None:
    before = checked["before_demo"]
    assert before is not None, "nothing written before the demo: a kill there loses every figure"
    assert before["finished"] is False
    assert before["together"] == checked["final"]["together"]
    assert before["skipped"] == checked["final"]["skipped"]
    assert checked["final"]["finished"] is True
    assert checked["final"]["demo"] == {"exit": 0}


def test_every_case_past_the_time_budget_is_named_as_skipped(checked: dict[str, Any]) -> None:
    skipped = checked["final"]["skipped"]
    assert checked["final"]["cases"] == []
    # the stain and cell-state engines' cases too, each by name (not left out unsaid)
    for engine in ("nuclei-unet", "nuclei-stain", "cell-state"):
        assert any(s.startswith(f"{engine}/onnxruntime/fp32/") for s in skipped), skipped
    assert not any("broken-gpu" in s for s in skipped)


def test_a_second_demo_goes_to_a_fresh_folder_beside_the_first(tmp_path: Path) -> None:
    # (livescope demo refuses a folder that holds a recording: a rerun on the warm GPU
    # machine with the same --demo DIR would lose its demo)
    tool = _load_tool()
    first = tmp_path / "demo"
    assert tool.fresh_folder(first) == first  # new
    first.mkdir()
    assert tool.fresh_folder(first) == first  # empty
    (first / "recording.zarr").mkdir()
    (tmp_path / "demo-2").mkdir()
    (tmp_path / "demo-2" / "summary.json").write_text("{}", encoding="utf-8")
    again = tool.fresh_folder(first)
    assert again == tmp_path / "demo-3"
    assert not again.exists()


def test_a_demo_that_prints_no_summary_is_said_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (json.loads raised at the check's last step: "finished" never came)
    import subprocess

    tool = _load_tool()

    def no_json(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 0, stdout="Traceback? no: a warning\n", stderr="")

    monkeypatch.setattr(subprocess, "run", no_json)
    res = tool.run_demo(tmp_path / "demo", 10.0)
    assert res["error"] == "the demo exited 0 but printed no JSON summary"
    assert res["stdout_tail"].startswith("Traceback? no")


def test_an_engine_whose_case_fails_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    # a case that raised after its engine was made left the engine open: on a GPU its
    # device memory stayed taken for the rest of the check (later cases' memory figures
    # and 2048² cases out of memory)
    tool = _load_tool()
    closed: list[str] = []

    class Recorded(tool.Engine):  # type: ignore[name-defined,misc]
        def close(self) -> None:
            closed.append(self.name)
            super().close()

    def parity_fails(*args: Any) -> dict:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(tool, "Engine", Recorded)
    monkeypatch.setattr(tool, "parity", parity_fails)
    monkeypatch.setattr(tool.Report, "save", lambda self: None)
    report = tool.Report(Path("unused.json"), {"cases": [], "skipped": []})
    frames = {512: [np.zeros((64, 64), np.float32)]}
    ort = _backends.OnnxRuntimeBackend()
    made_before = len(closed)
    tool.other_engine_cases("nuclei-stain", "regression", frames, 0.0, [ort], 1e18, report)
    cases = report.result["cases"]
    assert [c.get("error") for c in cases] == [
        "RuntimeError: CUDA error: an illegal memory access was encountered"
    ]
    # the reference engine and the failed case's engine, both closed
    assert closed[made_before:] == ["nuclei-stain", "nuclei-stain"]
