"""Second review of the inference backends: plan keys, which backend can run, TensorRT errors.

No GPU here: where a test needs one, the GPU probes (`_cuda_device`, `_gpu_sm`) are
set to a named GPU; the libraries themselves are the real ones (or, for a TensorRT
that does not load, a stand-in package that fails as a broken install does).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livescope.inference import _backend_base, builtin_engines
from livescope.inference import _backends as B
from livescope.schema import EngineCard, LivescopeError

needs_rtx = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt-rtx not installed"
)
H100 = "NVIDIA H100 80GB HBM3"


def _card(name: str) -> EngineCard:
    return EngineCard.from_file(builtin_engines()[name] / "card.yaml")


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda c: c.replace(tiling=c.tiling.replace(tile_px=2048)), id="tile_px"),
        pytest.param(lambda c: c.replace(input=c.input.replace(multiple_of=32)), id="multiple_of"),
    ],
)
def test_a_card_edit_that_changes_the_plan_changes_its_key(edit: Any) -> None:
    # the worker loads engines without a frame shape: the plan's profile then comes from
    # the card's tiling (not in the ONNX file). The key left it out: after tile_px went
    # from 1024 to 2048 the cached plan (tiles up to 1032 px) was loaded and refused
    # every 2048 px tile as outside its optimisation profile
    card = _card("nuclei-unet")
    edited = edit(card)
    assert edited.sha256 == card.sha256  # (same model file)
    assert B.input_profile(edited, []) != B.input_profile(card, [])  # (another plan)
    assert B._plan_key(edited, H100, "10.9.0", "fp16", []) != B._plan_key(
        card, H100, "10.9.0", "fp16", []
    )


def test_plan_keys_still_tell_shapes_and_classifiers_apart() -> None:
    unet, cls = _card("nuclei-unet"), _card("cell-state")
    key = B._plan_key
    assert key(unet, H100, "10.9.0", "fp16", [(512, 512)]) != key(
        unet, H100, "10.9.0", "fp16", [(1024, 1024)]
    )
    assert key(unet, H100, "10.9.0", "fp16", [(512, 512)]) != key(
        unet, H100, "10.9.0", "fp32", [(512, 512)]
    )
    assert key(cls, H100, "10.9.0", "fp16", [(512, 512)]) == key(cls, H100, "10.9.0", "fp16", [])


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the GPU probes report a GPU of the given compute capability (e.g. "SM90")."""
    monkeypatch.delenv("LIVESCOPE_BACKEND", raising=False)

    def set_gpu(name: str, sm: str) -> None:
        monkeypatch.setattr(_backend_base, "_cuda_device", lambda: (True, name))
        monkeypatch.setattr(_backend_base, "_gpu_sm", lambda: sm)

    return set_gpu


def test_a_tensorrt_that_does_not_load_is_passed_over(
    gpu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a tensorrt wheel whose CUDA libraries are missing: installed, but fails on import.
    # It was chosen first (priority 10) and Engine() then failed with a bare OSError
    if "tensorrt" in sys.modules or importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("a real tensorrt is installed here")
    pkg = tmp_path / "tensorrt"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "raise OSError('libnvinfer.so.10: cannot open shared object file')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    gpu(H100, "SM90")
    ok, why, _ = B._can_run(B.TensorRTBackend())
    assert not ok
    assert "libnvinfer.so.10" in why
    assert B.select_backend().name != "tensorrt"
    with pytest.raises(B.BackendUnavailable, match=r"'tensorrt' cannot run here: .*libnvinfer"):
        B.select_backend("tensorrt")


@needs_rtx
def test_tensorrt_rtx_is_not_chosen_for_a_gpu_it_cannot_build_for(gpu: Any) -> None:
    # TensorRT-RTX has no Hopper kernels: on an H100 it was chosen (priority 12, before
    # torch's 15) and the plan then failed to build, where torch could have run
    gpu(H100, "SM90")
    ok, why = B.TensorRTRTXBackend().available()
    assert not ok
    assert f"{H100} (SM90)" in why
    assert "SM89" in why  # (the GPUs it does build for)
    assert B.select_backend().name != "tensorrt-rtx"
    gpu("NVIDIA GeForce RTX 4090", "SM89")
    assert B.TensorRTRTXBackend().available() == (True, "NVIDIA GeForce RTX 4090")


class _Dims(tuple):  # type: ignore[type-arg]
    """TensorRT's Dims: a sequence of ints."""


class _Context:
    """A TensorRT execution context as far as a refused input shape goes."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes.append(shape)
        return False  # (outside the profile, as TensorRT answers)


class _Engine:
    def get_tensor_profile_shape(self, name: str, profile: int) -> list[_Dims]:
        return [_Dims((1, 1, 8, 8)), _Dims((1, 1, 1024, 1024)), _Dims((4, 1, 1032, 1032))]


def test_an_input_outside_the_tensorrt_profile_names_the_profile() -> None:
    # the message said "outside the plan's optimisation profile" without saying what the
    # profile is (a batch of 8 tiles, or a tile too big: which?), and the input had
    # already been copied to the GPU for nothing
    torch = pytest.importorskip("torch")
    session = B._TrtSession.__new__(B._TrtSession)  # (no GPU: the shape check only)
    session._torch = torch
    session._context = _Context()
    session._engine = _Engine()
    session.input_name, session.backend = "image", "tensorrt"
    with pytest.raises(B.BackendRunError, match=r"\(8, 1, 512, 512\) is outside") as info:
        session.run(np.zeros((8, 1, 512, 512), np.float32))
    assert "(1, 1, 8, 8) to (4, 1, 1032, 1032)" in str(info.value)
    assert session._context.shapes == [(8, 1, 512, 512)]


class _FakeTrt:
    """TensorRT as far as a plan whose execution context cannot be made (no GPU memory)."""

    __name__ = "tensorrt"

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            pass

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, plan: bytes) -> Any:
            return _NoMemoryEngine()


class _NoMemoryEngine:
    def create_execution_context(self) -> None:
        return None  # (what TensorRT gives when it cannot allocate the context's memory)


def test_a_plan_without_gpu_memory_for_its_context_says_so_and_is_not_built_again(
    tmp_path: Path,
) -> None:
    # TensorRT answers None, not an error: the engine loaded, and its first frame failed
    # with "'NoneType' object has no attribute 'set_input_shape'" (no EngineError). Nor is
    # a plan rebuilt (minutes) for what a new build would hit just the same
    pytest.importorskip("torch")
    card = _card("nuclei-unet")
    path = tmp_path / "x.plan"
    path.write_bytes(b"a whole plan")
    built: list[int] = []

    def build() -> bytes:
        built.append(1)
        return b"a whole plan"

    with pytest.raises(
        LivescopeError, match=r"nuclei-unet: tensorrt cannot make an execution context .*memory"
    ):
        B._cached_plan(path, build, lambda p: B._TrtSession(_FakeTrt, p, card, "tensorrt"))
    assert built == []


def test_onnx_runtime_falls_back_to_the_cpu_only_where_livescope_says_so() -> None:
    # ONNX Runtime's own fallback (on by default) re-made a session whose GPU provider
    # failed mid-run on the CPU, printing to stdout (into --json output) while the engine
    # still said it ran on CUDA; livescope falls back at load only, with a warning
    from livescope.inference import Engine, OnnxRuntimeBackend

    eng = Engine("cell-state", backend=OnnxRuntimeBackend())
    try:
        assert eng.session is not None
        assert eng.session._sess._enable_fallback is False  # (ORT's attribute)
    finally:
        eng.close()
