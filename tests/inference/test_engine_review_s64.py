"""Engines (review s64): channel counts at load, wide frames zoomed, `engines build|check`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from numpy.typing import NDArray
from typer.testing import CliRunner

import livescope.inference as inference
from livescope.cli._app import app
from livescope.inference import Engine, EngineError, SegmentationEngine, _backend_base, _backends
from livescope.inference._backends import OnnxRuntimeBackend, TensorRTBackend, _OrtSession
from livescope.schema import EngineCard

from ..conftest import ROOT

pytest.importorskip("onnxruntime")

SHIPPED_SEG = ROOT / "engines" / "segmentation" / "nuclei-unet"
PROFILE = ROOT / "hardware_profiles" / "spinning-disk-3200-scmos.yaml"


def _edited_card(tmp_path: Path, edit: Any) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(SHIPPED_SEG, folder)
    card = yaml.safe_load((folder / "card.yaml").read_text())
    edit(card)
    (folder / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return folder


def _backends_here() -> list[Any]:
    found: list[Any] = [OnnxRuntimeBackend()]
    if _backend_base._has("torch") and _backend_base._has("onnx"):
        found.append(_backends.TorchBackend())
    return found


# ----------------------------------------------------------------- channel counts at load


@pytest.mark.parametrize("backend", _backends_here(), ids=lambda b: b.name)
def test_a_card_naming_other_input_channels_than_the_model_is_refused_at_load(
    tmp_path: Path, backend: Any
) -> None:
    # it loaded, and then every camera frame was refused, blaming the frame:
    # "frame has shape (512, 512), expected (3, H, W)"
    folder = _edited_card(tmp_path, lambda c: c["input"].update(channels=3))
    for cls in (Engine, SegmentationEngine):
        with pytest.raises(EngineError) as info:
            cls(folder, backend=backend)
        said = str(info.value)
        assert said.startswith("engine nuclei-unet: ")
        assert "the card's input 'image' has 3 channel(s), the model's has 1" in said
        assert f"fix input.channels in {folder / 'card.yaml'}" in said


@pytest.mark.parametrize("backend", _backends_here(), ids=lambda b: b.name)
def test_a_card_naming_other_output_channels_than_the_model_is_refused_at_load(
    tmp_path: Path, backend: Any
) -> None:
    folder = _edited_card(
        tmp_path, lambda c: c["outputs"][0].update(channels=["foreground", "distance", "extra"])
    )
    with pytest.raises(EngineError) as info:
        Engine(folder, backend=backend)
    said = str(info.value)
    assert said.startswith("engine nuclei-unet: the model gives 2 output channels, the card ")
    assert "names 3 (foreground, distance, extra): card and model do not match" in said
    assert f"fix outputs[0].channels in {folder / 'card.yaml'}" in said


def test_a_session_that_does_not_know_the_channels_is_not_refused_for_them() -> None:
    # (TensorRT's plan, a backend of one's own: checked per tile, as before)
    class Unknowing:
        name = "unknowing"

        def available(self) -> tuple[bool, str]:
            return True, "cpu"

        def priority(self) -> int:
            return 99

        def load(
            self,
            model: Path,
            card: EngineCard,
            *,
            precision: str = "fp32",
            shapes: Sequence[tuple[int, int]] = (),
        ) -> Any:
            s = _OrtSession(model, ["CPUExecutionProvider"], card.outputs[0].name)
            for known in ("input_channels", "output_channels"):
                vars(s).pop(known, None)
            return s

    with Engine("nuclei-unet", backend=Unknowing()) as e:
        assert e.infer(np.full((64, 64), 100, np.uint16)).shape == (2, 64, 64)


def test_engines_check_names_the_card_field_that_does_not_match_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _edited_card(tmp_path, lambda c: c["input"].update(channels=3))
    monkeypatch.setattr(inference, "backend_status", list)  # (the reference's load alone)
    res = CliRunner().invoke(app, ["engines", "check", str(folder), "--json"])
    assert res.exit_code == 1, res.output
    (row,) = json.loads(res.stdout)["results"]
    assert row["status"] == "error"
    assert "has 3 channel(s), the model's has 1" in row["detail"]
    assert "frame has shape" not in row["detail"]


# ----------------------------------------------------------------- wide frames, zoomed


@pytest.fixture(scope="module")
def counts() -> NDArray[np.int64]:
    from livescope.scope import simulated_views

    view = simulated_views(1, seed=3, objectives=("20x",))[0].fluorescence
    return np.asarray(view[:256, :256], dtype=np.int64)


@pytest.fixture(scope="module")
def engine() -> Any:
    with Engine("nuclei-unet", backend=OnnxRuntimeBackend()) as e:
        yield e


@pytest.mark.parametrize(
    ("offset", "dtype"),
    [
        pytest.param(2**31, np.uint32, id="uint32+2**31"),
        pytest.param(2**40, np.int64, id="int64+2**40"),
    ],
)
def test_infer_scaled_keeps_a_wide_frame_s_signal_as_infer_does(
    engine: Engine, counts: NDArray[np.int64], offset: int, dtype: Any
) -> None:
    # cast to fp32 before the zoom, the offset swallowed the nuclei (0 found, 23 unzoomed)
    wide = (counts + offset).astype(dtype)
    plain = counts.astype(np.uint16)
    assert np.abs(engine.infer(wide) - engine.infer(plain)).max() < 1e-3  # (what infer keeps)
    for scale in (0.8, 1.5):
        got = engine.infer_scaled(wide, scale)
        want = engine.infer_scaled(plain, scale)
        assert np.abs(got - want).max() < 1e-3, scale


def _old_infer_scaled(e: Engine, frame: NDArray[Any], scale: float) -> NDArray[np.float32]:
    """`infer_scaled` as it was, zooming every frame in fp32 (what narrow frames still get)."""
    from scipy import ndimage

    x = np.asarray(frame, dtype=np.float32)
    if scale < 1:
        s = 0.5 * (1 / scale - 1)
        x = ndimage.gaussian_filter(x, sigma=(s, s))
    small = ndimage.zoom(x, (scale, scale), order=1, grid_mode=True, mode="nearest")
    maps = e.infer(small)
    zoom = (x.shape[0] / maps.shape[1], x.shape[1] / maps.shape[2])
    return np.stack([ndimage.zoom(m, zoom, order=1, grid_mode=True, mode="nearest") for m in maps])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("scale", [0.8, 1.5])
def test_infer_scaled_of_a_narrow_frame_is_as_it_was(
    engine: Engine, counts: NDArray[np.int64], dtype: Any, scale: float
) -> None:
    frame = (counts // 16 if dtype is np.uint8 else counts).astype(dtype)
    np.testing.assert_array_equal(
        engine.infer_scaled(frame, scale), _old_infer_scaled(engine, frame, scale)
    )


def test_segment_with_an_object_diameter_finds_the_nuclei_of_a_wide_frame(
    counts: NDArray[np.int64],
) -> None:
    backend = OnnxRuntimeBackend()
    with SegmentationEngine("nuclei-unet", backend=backend, object_diameter_px=23.25) as s:
        assert abs(s.scale - 1.0) > 1e-3  # (the zoomed path)
        plain = int(s.segment(counts.astype(np.uint16)).labels.max())
        wide = int(s.segment(counts + 2**40).labels.max())
    assert plain > 0
    assert abs(wide - plain) <= 1


# ----------------------------------------------------------------- engines build --profile


class _FakeTensorRT:
    """A TensorRT backend that records the tile shapes it is asked to build for (runs on ORT)."""

    name = "tensorrt"

    def __init__(self) -> None:
        self.shapes: list[list[int]] | None = None

    def available(self) -> tuple[bool, str]:
        return True, "fake GPU"

    def priority(self) -> int:
        return 10

    def load(
        self,
        model: Path,
        card: EngineCard,
        *,
        precision: str = "fp32",
        shapes: Sequence[tuple[int, int]] = (),
    ) -> Any:
        self.shapes = [[int(h), int(w)] for h, w in shapes]
        return _OrtSession(model, ["CPUExecutionProvider"], card.outputs[0].name)


@pytest.mark.parametrize("name", ["nuclei-stain", "nuclei-unet"])
def test_engines_build_reports_the_tiles_the_plan_was_built_for(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # nuclei-stain (a card with a pixel size, zoomed call by call) was built for any
    # frame's tiles and reported the profile's
    fake = _FakeTensorRT()
    monkeypatch.setattr(TensorRTBackend, "installed", lambda self: True)
    monkeypatch.setattr(inference, "select_backend", lambda *a, **k: fake)
    res = CliRunner().invoke(app, ["engines", "build", name, "--profile", str(PROFILE), "--json"])
    assert res.exit_code == 0, res.output
    said = json.loads(res.stdout)
    assert fake.shapes is not None
    assert said["tile_shapes"] == (fake.shapes or "any")
    if name == "nuclei-unet":  # (no pixel size: the profile's tiles, as asked)
        assert fake.shapes


# ----------------------------------------------------------------- engines check's reference


def _rig_with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime as onnxruntime-gpu on a rig with an NVIDIA driver says it (faked)."""
    import onnxruntime as ort

    have = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: have)
    monkeypatch.setattr(_backend_base, "_cuda_driver", lambda: True)


def test_the_cpu_only_onnxruntime_backend_asks_for_the_cpu_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _rig_with_cuda(monkeypatch)
    assert OnnxRuntimeBackend()._providers()[0] == "CUDAExecutionProvider"  # (the default's)
    assert OnnxRuntimeBackend(cpu_only=True)._providers() == ["CPUExecutionProvider"]


def test_engines_check_compares_with_onnxruntime_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # its reference asked for CUDAExecutionProvider first on a GPU rig, while it said "CPU"
    _rig_with_cuda(monkeypatch)
    asked: list[list[str]] = []

    class Recording(_OrtSession):
        def __init__(self, model: Path, providers: list[str], output: str | None = None) -> None:
            asked.append(list(providers))
            super().__init__(model, ["CPUExecutionProvider"], output)  # (no CUDA here)

    monkeypatch.setattr(_backends, "_OrtSession", Recording)
    monkeypatch.setattr(inference, "backend_status", list)  # (the reference alone)
    monkeypatch.setattr(_backends.TensorRTRTXBackend, "installed", lambda self: False)
    res = CliRunner().invoke(app, ["engines", "check", "nuclei-unet", "--json"])
    assert res.exit_code == 0, res.output
    assert asked == [["CPUExecutionProvider"]]
