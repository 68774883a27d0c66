"""Review of the GPU paths, checked without a GPU: what tools/gpu_check.py needs to work first
time on a GPU machine lent for minutes.

Where the check imports cupy, a stand-in module runs numpy under cupy's names (the
labels then come from the CPU path); torch and cupy that are installed but fail to
load are made by an import hook that raises what such a library raises.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from livescope.schema import PostProcess
from tests.conftest import ROOT

TOOL = ROOT / "tools" / "gpu_check.py"


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check_paths", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _FailsToLoad(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import hook: these modules are installed (found) but fail to load (a library missing)."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name in self.errors:
            return importlib.util.spec_from_loader(name, self)
        return None

    def exec_module(self, module: ModuleType) -> None:
        raise OSError(self.errors[module.__name__])


@pytest.fixture
def fails_to_load(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(errors: dict[str, str]) -> None:
        for name in errors:
            monkeypatch.delitem(sys.modules, name, raising=False)
        monkeypatch.setattr(sys, "meta_path", [_FailsToLoad(errors), *sys.meta_path])

    return install


def _numpy_as_cupy(refuse: Any = lambda a: False) -> ModuleType:
    """A stand-in for cupy: numpy arrays under cupy's names; ``refuse(a)`` fails a transfer."""
    cupy = ModuleType("cupy")

    def asarray(a: Any, *args: Any, **kwargs: Any) -> Any:
        if refuse(np.asarray(a)):
            raise MemoryError(f"Out of memory allocating {np.asarray(a).nbytes} bytes")
        return np.asarray(a, *args, **kwargs)

    cupy.asarray = asarray  # type: ignore[attr-defined]
    cupy.asnumpy = np.asarray  # type: ignore[attr-defined]
    cupy.cuda = SimpleNamespace(  # type: ignore[attr-defined]
        Device=lambda *a: SimpleNamespace(synchronize=lambda: None)
    )
    cupy.__version__ = "stand-in"  # type: ignore[attr-defined]
    return cupy


def _small_frames(path: Path, sides: dict[int, int], bad: bool = False) -> Path:
    """Frames under each size's key (the check only needs images); ``bad``: unusable ones."""
    rng = np.random.default_rng(0)
    arrays = {}
    for size, side in sides.items():
        frame = (rng.random((side, side)) * 1000).astype(np.float32)
        if bad:  # (beyond float32: every engine refuses it, the reference too)
            frame = np.full((side, side), 1e300)
        arrays[f"s{size}_0"] = frame
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_gpu_info_names_a_torch_that_fails_to_load(fails_to_load: Any) -> None:
    # (gpu_info runs before the JSON is first written: its OSError ended the check with
    # no file at all; it caught ImportError only)
    tool = _load_tool()
    fails_to_load({"torch": "libcudart.so.13: cannot open shared object file"})
    info = tool.gpu_info()
    assert info["torch"] is None
    assert "libcudart.so.13" in info["torch_error"]
    assert tool.left_allocated_mb() is None
    assert tool.peak_memory_mb() is None
    tool.reset_peak()  # (no error: nothing to reset)


def test_a_failing_reference_or_cupy_stops_no_other_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails_to_load: Any
) -> None:
    # a reference that raised outside the cases (here on frames every engine refuses), or
    # a cupy that fails to load, ended the whole check: "finished" never came and the
    # later engines were never run
    tool = _load_tool()
    frames = _small_frames(tmp_path / "frames.npz", {512: 64, 1024: 64, 2048: 64}, bad=True)
    out = tmp_path / "gpu_check.json"
    fails_to_load({"cupy": "libnvrtc.so.12: cannot open shared object file"})
    argv = ["--out", str(out), "--frames", str(frames), "--budget-s", "0",
            "--seconds-per-case", "0"]  # fmt: skip
    assert tool.main(argv) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["finished"] is True
    assert "beyond float32" in result["together"]["error"]
    assert result["machine"]["cupy"] is False
    assert "libnvrtc.so.12" in result["machine"]["cupy_error"]
    errors = {c["engine"]: c["error"] for c in result["cases"] if "error" in c}
    assert set(errors) == {"nuclei-unet", "nuclei-stain"}
    assert all("beyond float32" in e for e in errors.values())
    # the cell-state engine (no frames) still comes: past the budget, its cases named
    assert any(s.startswith("cell-state/onnxruntime/fp32/") for s in result["skipped"])


def test_quick_post_keeps_the_other_sizes_when_one_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one size failing on the GPU (out of memory at 2048², say) lost every size's figures
    # and the tiny frames' check with them
    tool = _load_tool()
    sides = {512: 48, 1024: 64, 2048: 80}
    frames = {size: [np.load(_small_frames(tmp_path / "f.npz", sides))[f"s{size}_0"]]
              for size in sides}  # fmt: skip
    monkeypatch.setitem(sys.modules, "cupy", _numpy_as_cupy(lambda a: a.shape[-1] == 64))
    out = tool.quick_post(frames)
    assert "gpu_post_p50_ms" in out["512"]
    assert out["1024"]["error"].startswith("MemoryError: Out of memory")
    assert "gpu_post_p50_ms" in out["2048"]
    assert set(out["tiny_frames_identical"]) == {"1x1", "1x9", "9x1", "3x17", "0x5"}


def test_the_numpy_steps_compared_with_the_gpu_take_the_neighbour_map_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a card with neighbour_weight: the GPU labels (instance_labels) take the neighbour
    # channel off the distance, the numpy steps they were compared with did not, so the
    # check said the kernels disagreed where they did not
    tool = _load_tool()
    yy, xx = np.mgrid[:64, :96]
    mask = np.zeros(yy.shape, bool)
    for cy, cx in ((20, 20), (40, 70)):
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < 9**2
    dist = ndimage.distance_transform_edt(mask).astype(np.float32)
    dist /= float(dist.max())
    neighbour = np.where(xx > 48, np.float32(1), np.float32(0))  # (the second disc: no seed)
    maps = np.stack([np.where(mask, 0.95, 0.05), dist, neighbour]).astype(np.float32)
    pp = PostProcess(kind="distance_watershed", seed_threshold=0.5, min_size_px=12,
                     neighbour_weight=1.0)  # fmt: skip
    monkeypatch.setitem(sys.modules, "cupy", _numpy_as_cupy())
    labels = tool.instance_labels(maps, pp)
    assert labels.max() == 1  # the neighbour map took the second disc's seed
    out = tool.gpu_postprocess(maps, labels, pp)
    assert out["gpu_post_f1_vs_cpu"] == 1.0
    assert out["gpu_post_identical_to_numpy_steps"] is True


HANG = """
import importlib.util, sys, threading
sys.modules["torch"] = None  # (no torch: its import here would take the seconds under test)
spec = importlib.util.spec_from_file_location("gpu_check", sys.argv[1])
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)
tool.engines_together = lambda frames: threading.Event().wait()  # a call that never returns
sys.exit(tool.main(sys.argv[2:]))
"""


def test_a_step_that_hangs_is_stopped_and_the_json_names_it(tmp_path: Path) -> None:
    # nothing bounded the check: a hung CUDA call or a TensorRT build that ran on held the
    # GPU machine to its command's limit, and the JSON did not say which step it was in
    frames = _small_frames(tmp_path / "frames.npz", {512: 32, 1024: 32, 2048: 32})
    out = tmp_path / "gpu_check.json"
    res = subprocess.run(
        [sys.executable, "-c", HANG, str(TOOL), "--out", str(out), "--frames", str(frames),
         "--stop-after-s", "2"],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 3, res.stderr[-2000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["finished"] is False
    assert result["stopped"] == {"after_s": 2.0, "during": "engines together"}
    assert {b["name"] for b in result["backends"]} >= {"onnxruntime"}  # (saved before)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(
            "raise ImportError('libnvrtc.so.12: cannot open shared object file')",
            "ImportError: libnvrtc.so.12",
            id="cannot-import",
        ),
        pytest.param("import numpy\narange = numpy.arange", None, id="works"),
    ],
)
def test_a_cupy_that_cannot_run_is_said_once_and_the_cpu_takes_over(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    body: str,
    problem: str | None,
) -> None:
    # (a cupy installed for another CUDA, or without NVRTC, made every segment() fail at
    # its first call: only find_spec was asked whether cupy was there)
    from livescope.inference import _engine

    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text(body + "\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(_engine, "_CUPY_PROBE", [])
    try:
        with caplog.at_level("WARNING", logger="livescope"):
            for _ in range(2):
                found = _engine.cupy_problem()
                assert (found or "").startswith(problem or "")
                assert (found is None) == (problem is None)
    finally:  # (the stand-in imported stays in sys.modules: dask then took it for cupy)
        sys.modules.pop("cupy", None)
    said = caplog.text.count("cupy is installed but cannot run here")
    assert said == (0 if problem is None else 1)


@pytest.mark.parametrize(
    ("backend", "device", "on_gpu"),
    [
        pytest.param("tensorrt", "NVIDIA H200", True, id="tensorrt"),
        pytest.param("tensorrt-rtx", "NVIDIA RTX A4000", True, id="tensorrt-rtx"),
        pytest.param("onnxruntime", "CUDAExecutionProvider", True, id="onnxruntime-cuda"),
        pytest.param("onnxruntime", "TensorrtExecutionProvider", True, id="onnxruntime-trt"),
        pytest.param("torch", "cuda", True, id="torch-cuda"),
        pytest.param("onnxruntime", "CPUExecutionProvider", False, id="onnxruntime-cpu"),
        pytest.param("onnxruntime", "DmlExecutionProvider", False, id="directml"),
        pytest.param("torch", "cpu", False, id="torch-cpu"),
    ],
)
def test_every_backend_on_an_nvidia_gpu_post_processes_there_where_cupy_runs(
    monkeypatch: pytest.MonkeyPatch, backend: str, device: str, on_gpu: bool
) -> None:
    # (only torch's "cuda" was taken for a GPU: TensorRT, which names the GPU, and ONNX
    # Runtime, which names its provider, post-processed on the CPU)
    from livescope.inference import EngineError, SegmentationEngine, _engine

    engine = SegmentationEngine("nuclei-unet", backend="onnxruntime")
    try:
        monkeypatch.setattr(_engine, "_has", lambda module: module == "cupy")
        monkeypatch.setattr(_engine, "cupy_problem", lambda: None)
        monkeypatch.setattr(engine, "session", SimpleNamespace(backend=backend, device=device))
        assert engine._want_gpu_post(None) is on_gpu
        if not on_gpu:
            with pytest.raises(EngineError, match="needs a CUDA backend"):
                engine._want_gpu_post(True)
    finally:
        monkeypatch.undo()
        engine.close()


def test_a_tensorrt_missing_names_the_extra_that_installs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (both said "the gpu extra"; TensorRT-RTX comes with the rtx one)
    from livescope.inference import _backend_base, _backends

    monkeypatch.setattr(_backend_base, "_has", lambda module: False)
    assert _backends.TensorRTBackend().available() == (
        False, "tensorrt is not installed (the gpu extra)"
    )  # fmt: skip
    assert _backends.TensorRTRTXBackend().available() == (
        False, "tensorrt_rtx is not installed (the rtx extra)"
    )  # fmt: skip
