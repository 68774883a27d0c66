"""The precision an engine reports, and keys its TensorRT plans by, is the one it runs in.

TensorRT >= 11 and TensorRT-RTX build in the ONNX graph's precision whatever is
asked, and torch runs fp16 on a CUDA GPU only. No GPU here: the plan key and a
TensorRT session are checked with a stand-in TensorRT (and torch's CUDA device
probes set to a named GPU); torch on the CPU and the CLI run for real.
"""

from __future__ import annotations

import enum
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from livescope.cli._app import app
from livescope.inference import _backends as B
from livescope.inference import builtin_engines
from livescope.schema import EngineCard

needs_rtx = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt-rtx not installed"
)
H100 = "NVIDIA H100 80GB HBM3"


def _card(name: str) -> EngineCard:
    return EngineCard.from_file(builtin_engines()[name] / "card.yaml")


def _cpu_torch() -> Any:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: torch runs fp16 on it")
    return torch


# ---------------------------------------------------------------- the plan cache key


@pytest.mark.parametrize(
    ("library", "version", "one_plan"),
    [
        pytest.param("tensorrt_rtx", "1.7.1.116", True, id="rtx"),
        pytest.param("tensorrt", "11.0.0", True, id="trt11"),
        pytest.param("tensorrt", "10.13.3", False, id="trt10-fp16-flag"),
    ],
)
def test_a_plan_is_keyed_by_the_precision_it_is_built_in(
    library: str, version: str, one_plan: bool
) -> None:
    # fp16 and fp32 asked of TensorRT-RTX (or TensorRT 11) built two identical plans in
    # the graph's precision, minutes each; TensorRT 10 builds the one asked (its flag)
    card = _card("nuclei-unet")
    fp16 = B._plan_key(card, H100, version, "fp16", [(512, 512)], library=library)
    fp32 = B._plan_key(card, H100, version, "fp32", [(512, 512)], library=library)
    assert (fp16 == fp32) is one_plan
    # (still one key per model: the graph's precision is the model's)
    other = card.replace(sha256="0" * 64)
    assert B._plan_key(other, H100, version, "fp16", [(512, 512)], library=library) != fp16


def test_tensorrt_10_plans_keep_their_cached_keys() -> None:
    # (only the keys of the libraries that take the graph's precision changed)
    card = _card("nuclei-unet")
    for precision in ("fp16", "fp32"):
        assert B._plan_key(card, H100, "10.13.3", precision, [], library="tensorrt") == (
            B._plan_key(card, H100, "10.13.3", precision, [])
        )


# ---------------------------------------------------------------- a TensorRT session


class _DataType(enum.Enum):
    FLOAT = 0
    HALF = 1


class _PlanEngine:
    """A deserialized plan with an input ``image`` of ``dtype`` and an fp32 output."""

    num_io_tensors = 2

    def __init__(self, dtype: _DataType) -> None:
        self.dtype = dtype

    def create_execution_context(self) -> object:
        return object()

    def get_tensor_name(self, i: int) -> str:
        return ("image", "logits")[i]

    def get_tensor_mode(self, name: str) -> str:
        return "input" if name == "image" else "output"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, 1, -1, -1)

    def get_tensor_dtype(self, name: str) -> _DataType:
        return self.dtype if name == "image" else _DataType.FLOAT


def _trt(library: str, version: str, dtype: _DataType) -> Any:
    """A TensorRT module (``library``, ``version``) whose plans' input is of ``dtype``."""

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            pass

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, plan: bytes) -> _PlanEngine:
            return _PlanEngine(dtype)

    class TensorIOMode:
        INPUT = "input"

    class Module:
        pass

    trt = Module()
    trt.__name__ = library
    vars(trt).update(__version__=version, Logger=Logger, Runtime=Runtime,
                     TensorIOMode=TensorIOMode, float32=_DataType.FLOAT,
                     float16=_DataType.HALF)  # fmt: skip
    return trt


@pytest.mark.parametrize(
    ("library", "version", "asked", "plan_input", "warn", "runs", "said"),
    [
        pytest.param("tensorrt_rtx", "1.7.1", "fp16", _DataType.FLOAT, True, "fp32", True,
                     id="rtx-cached-fp16-of-fp32"),
        pytest.param("tensorrt_rtx", "1.7.1", "fp16", _DataType.FLOAT, False, "fp32", False,
                     id="rtx-just-built"),
        pytest.param("tensorrt", "11.0.0", "fp32", _DataType.HALF, True, "fp16", True,
                     id="trt11-fp32-of-fp16"),
        pytest.param("tensorrt", "10.13.3", "fp16", _DataType.FLOAT, True, "fp16", False,
                     id="trt10-fp16-flag"),
        pytest.param("tensorrt_rtx", "1.7.1", "fp32", _DataType.FLOAT, True, "fp32", False,
                     id="rtx-as-asked"),
    ],
)  # fmt: skip
def test_a_tensorrt_session_says_the_precision_its_plan_was_built_in(
    library: str,
    version: str,
    asked: str,
    plan_input: _DataType,
    warn: bool,
    runs: str,
    said: bool,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # it had no precision: Engine.runtime() (and `engines check`, the run's summary)
    # said fp16 of an fp32 plan. A cached plan (one key for both precisions asked) is
    # warned about on loading; one just built was, by build_plan
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: H100)
    monkeypatch.setattr(torch.cuda, "Stream", object)
    trt = _trt(library, version, plan_input)
    card = _card("nuclei-unet")
    with caplog.at_level(logging.WARNING, logger="livescope"):
        session = B._TrtSession(trt, b"plan", card, "tensorrt", precision=asked, warn=warn)
    assert session.precision == runs
    assert [r.getMessage().split(":")[0] for r in caplog.records] == (
        ["engine nuclei-unet"] if said else []
    )
    if said:
        assert f"builds its plan in {runs}, not the {asked} asked" in caplog.records[0].getMessage()


# ---------------------------------------------------------------- torch on the CPU


@pytest.mark.parametrize(("asked", "said"), [("fp16", True), ("fp32", False)])
def test_torch_on_the_cpu_says_it_runs_fp32_when_fp16_is_asked(
    asked: str, said: bool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fp16 was dropped without a word (the engine then said fp32 where asked)
    _cpu_torch()
    monkeypatch.delenv("LIVESCOPE_THREADS", raising=False)  # (torch's pool is the process's)
    card = _card("cell-state")
    model = builtin_engines()["cell-state"] / card.model
    with caplog.at_level(logging.WARNING, logger="livescope"):
        session = B.TorchBackend().load(model, card, precision=asked)
    session.close()
    assert session.precision == "fp32"
    messages = [r.getMessage() for r in caplog.records]
    if said:
        assert len(messages) == 1, messages
        assert messages[0].startswith(
            "engine cell-state: torch on the CPU runs fp32, not the fp16 asked"
        ), messages
    else:
        assert messages == []


# ---------------------------------------------------------------- engines build


@needs_rtx
def test_engines_build_reports_the_precision_the_engine_runs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a build on this GPU said the precision asked (fp16 of a TensorRT-RTX plan in
    # fp32). No GPU here: the backend chosen is torch on the CPU, a real backend that
    # also runs another precision than fp16 asked (fp32)
    _cpu_torch()
    import livescope.inference

    monkeypatch.setenv("LIVESCOPE_CACHE", str(tmp_path))
    monkeypatch.delenv("LIVESCOPE_THREADS", raising=False)
    monkeypatch.setattr(livescope.inference, "select_backend", lambda name: B.TorchBackend())
    res = CliRunner().invoke(app, ["engines", "build", "cell-state", "--backend", "tensorrt-rtx",
                                   "--precision", "fp16", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["precision"] == "fp32", out
    assert out["plan_cache"] == str(tmp_path / "plans")
    assert "engine cell-state: torch on the CPU runs fp32, not the fp16 asked" in res.stderr
