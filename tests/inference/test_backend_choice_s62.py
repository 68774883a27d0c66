"""Which backend an engine gets, and what a backend that cannot run it says.

No GPU here: where a test needs one, the GPU probe (`_cuda_device`) is set to a
named GPU and the known backends to torch and ONNX Runtime; torch refuses a card
without ``torch_module`` before it touches the GPU.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from livescope.inference import Engine, EngineError, _backend_base, builtin_engines
from livescope.inference import _backends as B
from livescope.schema import EngineCard, LivescopeError
from tests.conftest import skip_unless_required

H100 = "NVIDIA H100 80GB HBM3"


def _card(name: str) -> EngineCard:
    return EngineCard.from_file(builtin_engines()[name] / "card.yaml")


@pytest.fixture
def no_torch_module(tmp_path: Path) -> Path:
    """nuclei-unet with a card that names no torch_module (optional in the schema)."""
    folder = tmp_path / "nuclei-unet"
    shutil.copytree(builtin_engines()["nuclei-unet"], folder)
    card = yaml.safe_load((folder / "card.yaml").read_text())
    card.pop("torch_module")
    card.pop("torch_kwargs", None)
    (folder / "card.yaml").write_text(yaml.safe_dump(card))
    return folder


@pytest.fixture
def cuda_with_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA GPU torch sees, torch and onnx installed, no TensorRT: torch comes first."""
    has = _backend_base._has
    monkeypatch.setattr(_backend_base, "_has", lambda m: m in ("torch", "onnx") or has(m))
    monkeypatch.setattr(_backend_base, "_cuda_device", lambda: (True, H100))
    monkeypatch.setattr(B, "BACKENDS", (B.TorchBackend(), B.OnnxRuntimeBackend()))
    monkeypatch.delenv("LIVESCOPE_BACKEND", raising=False)
    assert B.select_backend().name == "torch"


@pytest.mark.usefixtures("cuda_with_torch")
def test_a_card_without_torch_module_gets_the_next_backend_when_none_is_named(
    no_torch_module: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="livescope"), Engine(no_torch_module) as eng:
        assert eng.backend.name == "onnxruntime"
    assert "backend torch passed over: the card names no torch_module" in caplog.text


@pytest.mark.usefixtures("cuda_with_torch")
def test_a_card_no_backend_can_run_lists_the_backend_passed_over(
    monkeypatch: pytest.MonkeyPatch, no_torch_module: Path
) -> None:
    monkeypatch.setattr(B, "BACKENDS", (B.TorchBackend(),))
    card = EngineCard.from_file(no_torch_module / "card.yaml")
    with pytest.raises(B.BackendUnavailable, match=r"\n  torch: cannot run this engine: the card"):
        B.select_backend(card=card)
    with pytest.raises(EngineError, match=r"engine nuclei-unet: no inference backend") as info:
        Engine(no_torch_module)
    assert isinstance(info.value.__cause__, B.BackendUnavailable)


@pytest.mark.usefixtures("cuda_with_torch")
@pytest.mark.parametrize(
    ("env", "said"),
    [
        pytest.param(False, "backend 'torch' cannot", id="argument"),
        pytest.param(True, "backend 'torch' \\(from the LIVESCOPE_BACKEND", id="environment"),
    ],
)
def test_torch_named_for_a_card_without_torch_module_is_an_engine_error(
    monkeypatch: pytest.MonkeyPatch, no_torch_module: Path, env: bool, said: str
) -> None:
    if env:
        monkeypatch.setenv("LIVESCOPE_BACKEND", "torch")
    with pytest.raises(EngineError, match=f"^engine nuclei-unet: {said}") as info:
        Engine(no_torch_module, backend=None if env else "torch")
    assert "cannot run this engine: the card names no torch_module" in str(info.value)


@pytest.mark.parametrize("env", [False, True], ids=["argument", "environment"])
def test_a_backend_that_cannot_run_here_names_the_engine(
    monkeypatch: pytest.MonkeyPatch, env: bool
) -> None:
    monkeypatch.setattr(_backend_base, "_cuda_device", lambda: (False, "no CUDA GPU here"))
    monkeypatch.delenv("LIVESCOPE_BACKEND", raising=False)
    if env:
        monkeypatch.setenv("LIVESCOPE_BACKEND", "tensorrt")
    with pytest.raises(
        EngineError, match=r"^engine nuclei-unet: backend 'tensorrt'.* cannot run here: "
    ) as info:
        Engine("nuclei-unet", backend=None if env else "tensorrt")
    assert isinstance(info.value, B.BackendUnavailable)  # (what it raised before: still caught)
    assert isinstance(info.value.__cause__, B.BackendUnavailable)


@pytest.mark.parametrize(
    ("engine", "change", "said"),
    [
        pytest.param(
            "cell-state", {"name": "wrong"}, "the card's input is 'wrong', the model's is 'crops'",
            id="name",
        ),
        pytest.param(
            "nuclei-unet", {"channels": 2}, "the card's input 'image' has 2 channel(s), the "
            "model's has 1", id="channels",
        ),
    ],
)  # fmt: skip
def test_tensorrt_refuses_a_card_that_does_not_match_the_model_before_building(
    engine: str, change: dict[str, object], said: str
) -> None:
    if importlib.util.find_spec("tensorrt_rtx") is None:
        skip_unless_required("tensorrt-rtx", "tensorrt-rtx is not installed")
    import tensorrt_rtx

    card = _card(engine)
    card = card.model_copy(update={"input": card.input.model_copy(update=change)})
    model = builtin_engines()[engine] / card.model
    with pytest.raises(LivescopeError) as info:
        B.build_plan(
            tensorrt_rtx, model, card, precision="fp32", shapes=[],
            compute_capabilities=["SM89"],
        )  # fmt: skip
    # (in `Engine._check_io`'s words, which the other backends' sessions are refused in)
    assert str(info.value) == f"engine {engine}: {said} (card and model do not match)"
