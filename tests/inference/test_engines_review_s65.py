"""Engines (review s65): TF32 in fp32 plans, backends that fail to load, the gpu extra.

Runs without a GPU: TensorRT-RTX builds ahead of time (its builder config is read
back), and a backend's load that fails is a real backend whose load hits a real
failure (an allocation no machine can make, a file that is not there).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import re
import shutil
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
import yaml

import livescope.inference
from livescope.inference import (
    Engine,
    EngineError,
    OnnxRuntimeBackend,
    SegmentationEngine,
    TilePlan,
    TorchBackend,
    builtin_engines,
)
from livescope.inference import _backends as B
from livescope.inference import _tensorrt as T
from livescope.schema import EngineCard, LivescopeError

from ..conftest import ROOT, skip_unless_required

ENGINE = "nuclei-unet"

needs_rtx = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt-rtx not installed"
)


def _card(name: str = ENGINE) -> EngineCard:
    return EngineCard.from_file(builtin_engines()[name] / "card.yaml")


def _torch() -> Any:
    try:
        import torch
    except ImportError:  # (the core install and `python dev.py test` have no torch: CI has)
        skip_unless_required("torch", "torch is not installed")
    return torch


# --- fp32 plans are built without TF32 ---------------------------------------------------------


@needs_rtx
def test_an_fp32_plan_is_built_without_tf32() -> None:
    # TensorRT turns TF32 on by default: on Ampere and later an "fp32" plan ran its
    # convolutions in TF32 (10-bit mantissa) and missed the 1e-4 parity torch keeps
    import tensorrt_rtx as trt

    configs: list[Any] = []

    class Builder(trt.Builder):  # type: ignore[misc]
        def create_builder_config(self) -> Any:  # (the config build_plan builds with)
            config = super().create_builder_config()
            configs.append(config)
            return config

    module = SimpleNamespace(**{k: getattr(trt, k) for k in dir(trt) if not k.startswith("__")})
    module.__name__, module.__version__, module.Builder = trt.__name__, trt.__version__, Builder
    card = _card()
    plan = T.build_plan(
        module, builtin_engines()[ENGINE] / card.model, card, precision="fp32",
        shapes=[(512, 512)], compute_capabilities=["SM89"],
    )  # fmt: skip
    assert len(plan) > 100_000
    assert len(configs) == 1
    assert not configs[0].get_flag(trt.BuilderFlag.TF32)


def test_a_plan_cached_with_tf32_is_not_the_one_loaded() -> None:
    # (the key of before: the same text without the TF32 marker; a plan cached under it
    # was built with TF32 on, and would be loaded for an fp32 engine once more)
    card = _card()
    for library, version in (("tensorrt", "10.9.0"), ("tensorrt_rtx", "1.7.1.116")):
        built = "graph" if T._takes_graph_precision(library, version) else "fp32"
        profile = repr((card.input.name, T.input_profile(card, [])))
        text = "|".join([card.sha256, "NVIDIA RTX 4090", version, built, profile])
        before = hashlib.sha256(text.encode()).hexdigest()[:32]
        now = T._plan_key(card, "NVIDIA RTX 4090", version, "fp32", [], library=library)
        assert now != before, library


# --- a backend's load that fails names the engine ----------------------------------------------


class _OutOfMemoryTorch(TorchBackend):
    """The torch backend on a device too small: its load asks for memory none has."""

    def load(
        self,
        model: Path,
        card: EngineCard,
        *,
        precision: str = "fp32",
        shapes: Sequence[tuple[int, int]] = (),
    ) -> Any:
        torch = _torch()
        torch.empty(2**62, dtype=torch.uint8)  # (4 EiB: RuntimeError, "can't allocate memory")
        return super().load(model, card, precision=precision, shapes=shapes)


class _PlanGoneOnnxRuntime(OnnxRuntimeBackend):
    """ONNX Runtime loading a file that is not there (an OSError of the load)."""

    def load(
        self,
        model: Path,
        card: EngineCard,
        *,
        precision: str = "fp32",
        shapes: Sequence[tuple[int, int]] = (),
    ) -> Any:
        (model.parent / "gone.plan").read_bytes()
        return super().load(model, card, precision=precision, shapes=shapes)


@pytest.mark.parametrize(
    ("backend", "cause"),
    [
        pytest.param(_OutOfMemoryTorch, r"RuntimeError: .*can't allocate memory", id="runtime"),
        pytest.param(_PlanGoneOnnxRuntime, r"FileNotFoundError: .*gone.plan", id="os"),
    ],
)  # fmt: skip
def test_a_backend_that_fails_to_load_names_the_engine(backend: Any, cause: str) -> None:
    if backend is _OutOfMemoryTorch:
        _torch()
    with pytest.raises(EngineError, match=rf"engine {ENGINE}: .*{backend.name}.*{cause}") as info:
        SegmentationEngine(ENGINE, backend=backend())
    assert "\n" not in str(info.value)  # (the cause's first line only)
    assert isinstance(info.value.__cause__, RuntimeError | OSError)


def _only(monkeypatch: pytest.MonkeyPatch, backends: tuple[Any, ...]) -> None:
    monkeypatch.setattr(B, "BACKENDS", backends)
    monkeypatch.setattr(livescope.inference, "BACKENDS", backends)


def test_engines_check_reports_a_backend_that_fails_to_load(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # (the load's RuntimeError went out of `engines check --json`: a traceback, no JSON)
    from livescope.cli._engines import engines_check

    _torch()
    _only(monkeypatch, (_OutOfMemoryTorch(), OnnxRuntimeBackend()))
    with pytest.raises(typer.Exit) as exit_:  # (a check failed: exit 1, after the JSON)
        engines_check([ENGINE], json_out=True)
    assert exit_.value.exit_code == 1
    rows = json.loads(capsys.readouterr().out)["results"]
    torch_row = next(r for r in rows if r["backend"] == "torch")
    assert torch_row["status"] == "error"
    assert f"engine {ENGINE}" in torch_row["detail"]
    assert "can't allocate memory" in torch_row["detail"]
    assert next(r for r in rows if r["backend"] == "onnxruntime")["status"] == "ok"


def test_bench_keeps_the_other_backends_when_one_fails_to_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (the load's RuntimeError went out of `bench engines`: every backend's rows lost)
    from livescope.cli._engines import _rows_per_backend

    _torch()
    _only(monkeypatch, (_OutOfMemoryTorch(), OnnxRuntimeBackend()))

    def timed(e: Engine) -> Iterator[dict[str, Any]]:
        yield {"size": 64, "ms": 1.0}

    rows = _rows_per_backend(ENGINE, lambda b: Engine(ENGINE, backend=b), timed)
    failed = next(r for r in rows if r["backend"] == "torch")
    assert failed["available"] is True
    assert f"engine {ENGINE}" in failed["error"]
    assert [r["size"] for r in rows if r["backend"] == "onnxruntime"] == [64]


# --- the gpu extra installs what the TensorRT backend imports ----------------------------------


def _imported_modules() -> set[str]:
    """Top-level modules livescope and its tools import (backends import theirs by name)."""
    found = {m for b in B.BACKENDS if isinstance(m := getattr(b, "module", None), str)}
    for folder in ("livescope", "tools"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found


def test_the_gpu_extra_installs_what_the_tensorrt_backend_needs_and_no_more() -> None:
    # the extra had pycuda, which nothing imports, and not torch, which gives the plans'
    # device buffers: `pip install livescope[gpu]` left "torch is not installed"
    extra = T.TensorRTBackend.extra
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[\s<>=!~;\[]", d)[0].lower() for d in deps["optional-dependencies"][extra]}
    assert {T.TensorRTBackend.module, "torch"} <= names
    assert names <= _imported_modules(), names - _imported_modules()


# --- gpu_check's reference is ONNX Runtime on the CPU ------------------------------------------


def test_gpu_check_references_run_onnx_runtime_on_the_cpu() -> None:
    # (OnnxRuntimeBackend() takes CUDA where onnxruntime-gpu is: a GPU compared with a GPU)
    tree = ast.parse((ROOT / "tools" / "gpu_check.py").read_text(encoding="utf-8"))
    calls = [
        n for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "OnnxRuntimeBackend"
    ]  # fmt: skip
    assert calls
    for call in calls:
        kw = {k.arg: k.value for k in call.keywords}
        cpu_only = kw.get("cpu_only")
        assert isinstance(cpu_only, ast.Constant), f"line {call.lineno}"
        assert cpu_only.value is True, f"line {call.lineno}"


# --- a plan's tensor without a torch buffer names the engine and the tensor --------------------


class _Plan:
    """A deserialized plan (TensorRT's ICudaEngine, which needs a GPU) with an fp8 output."""

    def __init__(self, trt: Any, card: EngineCard) -> None:
        self._mode = trt.TensorIOMode
        self._tensors = {
            card.input.name: (trt.TensorIOMode.INPUT, trt.DataType.FLOAT),
            card.outputs[0].name: (trt.TensorIOMode.OUTPUT, trt.DataType.FP8),
        }
        self.num_io_tensors = len(self._tensors)

    def create_execution_context(self) -> object:
        return object()

    def get_tensor_name(self, i: int) -> str:
        return list(self._tensors)[i]

    def get_tensor_mode(self, name: str) -> Any:
        return self._tensors[name][0]

    def get_tensor_dtype(self, name: str) -> Any:
        return self._tensors[name][1]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, 1, -1, -1)


@needs_rtx
def test_a_plan_tensor_without_a_torch_buffer_names_the_engine_and_tensor() -> None:
    import tensorrt_rtx as trt

    _torch()
    card = _card()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, plan: bytes) -> _Plan:
            return _Plan(trt, card)

    module = SimpleNamespace(**{k: getattr(trt, k) for k in dir(trt) if not k.startswith("__")})
    module.__name__, module.__version__, module.Runtime = trt.__name__, trt.__version__, Runtime
    out = card.outputs[0].name
    with pytest.raises(LivescopeError, match=rf"engine {ENGINE}: .*tensor '{out}'.*FP8"):
        T._TrtSession(module, b"plan", card, "tensorrt-rtx")


# --- a card whose tiles step by less than the pooling grid ------------------------------------


def _engine_with_tiling(tmp_path: Path, tile_px: int, overlap_px: int) -> Path:
    dst = tmp_path / ENGINE
    shutil.copytree(builtin_engines()[ENGINE], dst)
    card = yaml.safe_load((dst / "card.yaml").read_text())
    card["tiling"] = {"tile_px": tile_px, "overlap_px": overlap_px}
    (dst / "card.yaml").write_text(yaml.safe_dump(card))
    return dst


def test_a_card_whose_overlap_leaves_less_than_the_grid_is_refused(tmp_path: Path) -> None:
    # tiles start on the model's grid (multiple_of 8): a step of 64 - 60 = 4 px became 8,
    # the tiles overlapping by 56 px, not 60; at tile_px 8 they did not overlap at all
    m = _card().input.multiple_of
    assert m == 8
    spans = TilePlan((300, 300), 64, 60, m).spans(300)
    assert spans[0][0] + spans[0][1] - spans[1][0] == 56
    folder = _engine_with_tiling(tmp_path, 64, 60)
    with pytest.raises(
        EngineError,
        match=rf"engine {ENGINE}: .*{re.escape(str(folder / 'card.yaml'))}.*tiling.tile_px 64 - "
        r"tiling.overlap_px 60 = 4 is under input.multiple_of 8",
    ):
        SegmentationEngine(folder, backend="onnxruntime")
    shutil.rmtree(folder)
    SegmentationEngine(_engine_with_tiling(tmp_path, 64, 56), backend="onnxruntime").close()
