"""Review of the engine runtime: which output a session gives, the graph's input type,
shape profiles of zoomed frames, the padding hint, external weights, small-unit frames.

No GPU here: the TensorRT session runs on a stand-in TensorRT and torch (as in
test_engine_precision), the shape profile on an ONNX Runtime session that refuses
inputs outside it, as a TensorRT plan does.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

from livescope.inference import (
    Engine,
    EngineError,
    OnnxRuntimeBackend,
    SegmentationEngine,
    StainEngine,
    TilePlan,
    builtin_engines,
    normalize_percentile,
)
from livescope.inference import _backends as B
from livescope.inference._backend_base import BackendRunError
from livescope.inference._tensorrt import input_profile
from livescope.schema import EngineCard

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

SEG, STAIN, STATES = "nuclei-unet", "nuclei-stain", "cell-state"


def _nuclei(h: int = 128, w: int = 128, n: int = 8, seed: int = 0) -> np.ndarray:
    """A float frame of Gaussian nuclei on a noisy background, in camera counts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    f = 200 + 20 * rng.standard_normal((h, w))
    for cy, cx in rng.integers(0, [h, w], size=(n, 2)):
        f += 3000 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 6**2))
    return f


def _engine_copy(
    tmp_path: Path,
    name: str,
    edit: Callable[[Any], None] | None = None,
    card_change: dict[str, Any] | None = None,
    **save: Any,
) -> Path:
    """A shipped engine's copy: its ONNX graph edited, saved with ``save``, the card resealed."""
    dst = tmp_path / name
    shutil.copytree(builtin_engines()[name], dst)
    if edit is not None or save:
        model = onnx.load(str(dst / "model.onnx"))
        if edit is not None:
            edit(model)
        onnx.save(model, str(dst / "model.onnx"), **save)
    card = yaml.safe_load((dst / "card.yaml").read_text())
    for key, value in (card_change or {}).items():
        card[key].update(value)
    card["sha256"] = hashlib.sha256((dst / "model.onnx").read_bytes()).hexdigest()
    (dst / "card.yaml").write_text(yaml.safe_dump(card))
    return dst


# ------------------------------------------------------------ the card's output


def _logits_first(model: Any) -> None:
    """Give the classifier's logits as a first output, before its probabilities."""
    model.graph.node.append(helper.make_node("Identity", ["/head/Gemm_output_0"], ["logits"]))
    model.graph.output.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, None))


def test_onnx_runtime_gives_the_output_the_card_names_not_the_first(tmp_path: Path) -> None:
    # an export giving logits, then probabilities: the classifier returned the logits
    folder = _engine_copy(tmp_path, STATES, _logits_first)
    crops = np.random.default_rng(0).random((6, 2, 48, 48), dtype=np.float32)
    with (
        Engine(STATES, backend="onnxruntime") as shipped,
        Engine(folder, backend="onnxruntime") as two,
    ):
        assert two.session is not None
        assert two.session.output_names == ["logits", "probs"]
        np.testing.assert_array_equal(two.run(crops), shipped.run(crops))


class _DataType(enum.Enum):
    FLOAT = 0
    HALF = 1


class _Plan:
    """A deserialized plan: input ``image``, then outputs ``logits`` and ``probs``."""

    names = ("crops", "logits", "probs")
    num_io_tensors = 3

    def __init__(self, dtype: _DataType) -> None:
        self.dtype = dtype

    def create_execution_context(self) -> _Context:
        return _Context()

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return "input" if name == "crops" else "output"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, 2, 48, 48) if name == "crops" else (-1, 5)

    def get_tensor_dtype(self, name: str) -> _DataType:
        return self.dtype if name == "crops" else _DataType.FLOAT


class _Tensor:
    """A torch CUDA tensor as far as `_TrtSession.run` uses one (its address is itself)."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    def to(self, *args: Any) -> _Tensor:
        return self

    def data_ptr(self) -> _Tensor:
        return self

    def float(self) -> _Tensor:
        return self

    def cpu(self) -> _Tensor:
        return self

    def numpy(self) -> np.ndarray:
        return self.a


class _Context:
    """An execution context that writes -1 to ``logits`` and 0.2 to ``probs``."""

    def __init__(self) -> None:
        self.n = 0
        self.addresses: dict[str, _Tensor] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.n = shape[0]
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.n, 5)

    def set_tensor_address(self, name: str, address: _Tensor) -> None:
        self.addresses[name] = address

    def execute_async_v3(self, stream: int) -> bool:
        self.addresses["logits"].a[:] = -1.0
        self.addresses["probs"].a[:] = 0.2
        return True


def _trt(dtype: _DataType) -> Any:
    """TensorRT 11 whose plans are `_Plan` with an input of ``dtype``."""
    return SimpleNamespace(
        __name__="tensorrt",
        __version__="11.0.0",
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity: None}),
        Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda plan: _Plan(dtype)),
        TensorIOMode=SimpleNamespace(INPUT="input"),
        float32=_DataType.FLOAT,
        float16=_DataType.HALF,
    )


def _trt_session(monkeypatch: pytest.MonkeyPatch, dtype: _DataType) -> Any:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "Stream", object)
    card = EngineCard.from_file(builtin_engines()[STATES] / "card.yaml")
    session = B._TrtSession(_trt(dtype), b"plan", card, "tensorrt", warn=False)
    # (torch's CUDA calls, on the host)
    session._torch = SimpleNamespace(
        from_numpy=lambda a: _Tensor(a),
        empty=lambda shape, device, dtype: _Tensor(np.zeros(shape, np.float32)),
        cuda=SimpleNamespace(current_stream=lambda: None, stream=contextlib.nullcontext),
    )
    session._stream = SimpleNamespace(
        wait_stream=lambda other: None, synchronize=lambda: None, cuda_stream=0
    )
    return session


def test_a_tensorrt_session_gives_the_output_the_card_names_not_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = _trt_session(monkeypatch, _DataType.FLOAT)
    assert session.output_names == ["logits", "probs"]
    out = session.run(np.zeros((3, 2, 48, 48), np.float32))
    np.testing.assert_array_equal(out, np.full((3, 5), 0.2, np.float32))


@pytest.mark.parametrize(
    ("dtype", "said"),
    [pytest.param(_DataType.FLOAT, "float32", id="fp32"),
     pytest.param(_DataType.HALF, "float16", id="fp16")],
)  # fmt: skip
def test_a_tensorrt_session_says_its_plans_input_type(
    dtype: _DataType, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = _trt_session(monkeypatch, dtype)
    assert session.input_type == said
    assert said in ("float32", *session.input_casts)


# ------------------------------------------------------------ the graph's input type


def _input_as(elem_type: int) -> Callable[[Any], None]:
    """Make the graph take ``elem_type`` (as a half-precision export does) and cast it inside."""

    def edit(model: Any) -> None:
        inp = model.graph.input[0]
        name = inp.name
        for node in model.graph.node:
            for i, x in enumerate(node.input):
                if x == name:
                    node.input[i] = name + "_f32"
        model.graph.node.insert(
            0, helper.make_node("Cast", [name], [name + "_f32"], to=TensorProto.FLOAT)
        )
        inp.type.tensor_type.elem_type = elem_type

    return edit


def test_an_fp16_graph_under_a_float32_card_is_fed_fp16_by_onnx_runtime(tmp_path: Path) -> None:
    # an fp16 export (what TensorRT >= 11 and -RTX need for an fp16 plan) loaded, said
    # fp16, and failed on every frame with ONNX Runtime's type error
    folder = _engine_copy(tmp_path, SEG, _input_as(TensorProto.FLOAT16))
    frame = _nuclei(256, 256).astype(np.uint16)
    with (
        SegmentationEngine(folder, backend="onnxruntime") as half,
        SegmentationEngine(SEG, backend="onnxruntime") as full,
    ):
        assert half.runtime()["precision"] == "fp16"
        maps, ref = half.infer(frame), full.infer(frame)
        assert np.abs(maps - ref).max() < 2e-2  # (the input rounded to fp16)
        assert half.segment(frame).labels.max() == full.segment(frame).labels.max() > 0


def test_a_graph_input_no_session_can_feed_is_refused_at_load(tmp_path: Path) -> None:
    folder = _engine_copy(tmp_path, SEG, _input_as(TensorProto.DOUBLE))
    with pytest.raises(
        EngineError,
        match=r"engine nuclei-unet: the card's input 'image' is float32, the model's is "
        r"tensor\(double\), which onnxruntime cannot feed",
    ):
        Engine(folder, backend="onnxruntime")


# ------------------------------------------------------------ shape profiles of zoomed frames


class _ProfileBackend(OnnxRuntimeBackend):
    """ONNX Runtime that refuses inputs outside the shape profile asked, as a TensorRT plan."""

    name = "profile-check"

    def load(
        self,
        model: Path,
        card: EngineCard,
        *,
        precision: str = "fp32",
        shapes: Sequence[tuple[int, int]] = (),
    ) -> Any:
        session = super().load(model, card, precision=precision, shapes=shapes)
        self.shapes = list(shapes)
        lo, _, hi = input_profile(card, shapes)
        run = session.run

        def checked(x: np.ndarray) -> np.ndarray:
            if not all(a <= n <= b for a, n, b in zip(lo, x.shape, hi, strict=True)):
                raise BackendRunError(f"input {x.shape} is outside the plan's profile {lo}-{hi}")
            return run(x)

        session.run = checked
        return session


def test_a_segmentation_engines_profile_is_for_its_zoomed_frames() -> None:
    # the profile was built for the frame's own tiles: rescaled to its nuclei's size,
    # every frame fell outside it on TensorRT
    backend = _ProfileBackend()
    frame = _nuclei(256, 256).astype(np.uint16)
    with SegmentationEngine(
        SEG, backend=backend, frame_shape=(256, 256), object_diameter_px=9.0
    ) as seg:
        zoomed = (round(256 * seg.scale), round(256 * seg.scale))
        card = seg.card
        assert (
            backend.shapes
            == TilePlan(
                zoomed, card.tiling.tile_px, card.tiling.overlap_px, card.input.multiple_of
            ).tile_shapes()
        )
        assert seg.segment(frame).labels.max() > 0


def test_a_stain_engines_profile_takes_frames_zoomed_to_its_pixel_size() -> None:
    # the pixel size comes with each frame: any frame's tiles
    backend = _ProfileBackend()
    with StainEngine(STAIN, backend=backend, frame_shape=(128, 128)) as stain:
        assert backend.shapes == []
        res = stain.predict(_nuclei(128, 128).astype(np.uint16), pixel_size_um=0.65)
        assert res.image.shape == (128, 128)
        assert res.scale == pytest.approx(2.0)


# ------------------------------------------------------------ the padding hint


class _FailingSession:
    backend = "fake"
    device = "cuda"
    input_name = "image"
    input_rank = 4
    output_names = ["prob"]  # noqa: RUF012

    def run(self, x: Any) -> Any:
        raise BackendRunError("fake failed on input (1, 1, 64, 64): CUDA out of memory")

    def close(self) -> None:
        pass


class _FailingBackend:
    name = "fake"

    def available(self) -> tuple[bool, str]:
        return True, "test"

    def priority(self) -> int:
        return 0

    def load(self, model: Path, card: EngineCard, **kwargs: Any) -> Any:
        return _FailingSession()


def test_a_run_error_other_than_a_size_mismatch_has_no_padding_hint() -> None:
    eng = Engine(SEG, backend=_FailingBackend())  # type: ignore[arg-type]
    with eng, pytest.raises(EngineError) as info:
        eng.infer(np.ones((64, 64), np.uint16))
    assert str(info.value) == (
        "engine nuclei-unet: fake failed on input (1, 1, 64, 64): CUDA out of memory"
    )


def test_a_size_mismatch_names_the_tile_and_its_frame(tmp_path: Path) -> None:
    # a card padding to 4 for a U-Net that halves three times: the second tile (64x66,
    # padded to 64x68) fails inside the model
    folder = _engine_copy(
        tmp_path,
        SEG,
        card_change={"input": {"multiple_of": 4}, "tiling": {"tile_px": 64, "overlap_px": 16}},
    )
    with Engine(folder, backend="onnxruntime") as eng, pytest.raises(EngineError) as info:
        eng.infer(_nuclei(102, 102).astype(np.uint16))
    assert "Non concat axis dimensions must match" in str(info.value)
    assert str(info.value).endswith(
        "(tile 64x66 of frame 102x102, padded to multiples of 4, the card's "
        "input.multiple_of; a U-Net needs 2**depth)"
    )


# ------------------------------------------------------------ external weights


def test_a_model_with_external_weights_is_refused(tmp_path: Path) -> None:
    # the card's sha256 covers model.onnx only: damaged weights beside it loaded silently
    # (and a TensorRT plan keyed by it would have been reused)
    folder = _engine_copy(
        tmp_path, SEG, save_as_external_data=True, all_tensors_to_one_file=True,
        location="weights.bin", size_threshold=0,
    )  # fmt: skip
    with pytest.raises(
        EngineError,
        match=r"engine nuclei-unet: model.onnx keeps weights in an external file "
        r"\('weights.bin'\), which the card's sha256 does not cover",
    ):
        Engine(folder, backend="onnxruntime")


def test_external_data_is_found_in_subgraphs_and_only_there() -> None:
    from livescope.inference._onnx_scan import _external_data

    inner = helper.make_tensor("w", TensorProto.FLOAT, [4], np.arange(4, dtype=np.float32))
    inner.data_location = TensorProto.EXTERNAL
    entry = inner.external_data.add()
    entry.key, entry.value = "location", "w.bin"
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=inner)], "then", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )  # fmt: skip
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )  # fmt: skip
    data = helper.make_model(graph).SerializeToString()
    assert _external_data(data) == "w.bin"
    for name in (SEG, STAIN, STATES):  # weights inside, some bytes of which look like tags
        assert _external_data((builtin_engines()[name] / "model.onnx").read_bytes()) is None
    assert _external_data(data[: len(data) // 2]) is None  # (not protobuf: ONNX Runtime says)


# ------------------------------------------------------------ frames in small units


@pytest.mark.parametrize("units", [1e-10, 1e-12, 1e-20])
def test_a_float_frame_in_small_units_is_normalised_as_in_counts(units: float) -> None:
    # its range under eps (1e-6), it was divided by eps: 0 to 0.004, and its nuclei vanished
    frame = _nuclei()
    ref = normalize_percentile(frame.astype(np.float32))
    small = normalize_percentile((frame * units).astype(np.float32))
    np.testing.assert_allclose(small, ref, rtol=1e-3, atol=1e-3)


def test_segmentation_finds_the_nuclei_of_a_frame_in_small_units() -> None:
    frame = _nuclei(n=6)
    with SegmentationEngine(SEG, backend="onnxruntime") as seg:
        n = seg.segment(frame.astype(np.float32)).labels.max()
        assert n > 0
        assert seg.segment((frame * 1e-12).astype(np.float32)).labels.max() == n


@pytest.mark.parametrize("value", [0.0, 3e-9, 1000.0])
def test_a_constant_frame_still_becomes_zeros(value: float) -> None:
    out = normalize_percentile(np.full((32, 32), value, np.float32))
    np.testing.assert_array_equal(out, np.zeros((32, 32), np.float32))


def _old_normalize(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """normalize_percentile before frames in small units were scaled by their range."""
    x = np.asarray(image, dtype=np.float32)
    step = max(1, int(np.sqrt(x.size / 262144)))
    sample = x[::step, ::step] if x.ndim == 2 else x
    lo, hi = np.percentile(sample, [low, high])
    if float(hi - lo) <= 1e-6:
        lo, hi = float(x.min()), float(x.max())
    out = x - np.float32(lo)
    out *= np.float32(1.0 / max(float(hi - lo), 1e-6))
    return out


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(_nuclei().astype(np.uint16), id="counts"),
        pytest.param(np.full((64, 64), 100, np.uint16), id="constant"),
        pytest.param(np.pad(np.full((4, 4), 900, np.uint16), 30, constant_values=100),
                     id="one-nucleus-on-flat"),
        pytest.param((_nuclei() / 4096).astype(np.float32), id="float-0-1"),
        pytest.param(np.random.default_rng(1).poisson(3, (700, 900)).astype(np.uint16),
                     id="dim-large"),
    ],
)  # fmt: skip
def test_ordinary_frames_are_normalised_bit_for_bit_as_before(frame: np.ndarray) -> None:
    np.testing.assert_array_equal(normalize_percentile(frame), _old_normalize(frame))
