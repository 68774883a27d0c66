"""Engines fed what a rig or a hand-edited card can give: refused with the engine's name."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from livescope.inference import (
    BACKENDS,
    BackendUnavailable,
    CellStateEngine,
    Engine,
    EngineError,
    SegmentationEngine,
    StainEngine,
    builtin_engines,
)
from livescope.schema import EngineCard, LivescopeError

from ..conftest import skip_unless_required

ENGINE = "nuclei-unet"


def _engine_with_card(tmp_path: Path, change: dict[str, Any], name: str = ENGINE) -> Path:
    """A copy of a shipped engine whose card has ``change`` (section -> fields) applied."""
    dst = tmp_path / name
    shutil.copytree(builtin_engines()[name], dst)
    card = yaml.safe_load((dst / "card.yaml").read_text())
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(card.get(key), dict):
            card[key].update(value)
        else:
            card[key] = value
    (dst / "card.yaml").write_text(yaml.safe_dump(card))
    return dst


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # a tile narrower than the model's pooling grid left gaps between tiles (ValueError
        # while stitching); an overlap as wide as the tile cut a frame into thousands of tiles
        pytest.param({"tiling": {"tile_px": 4, "overlap_px": 0}},
                     r"tiling.tile_px 4 is under input.multiple_of 8", id="tile-under-grid"),
        pytest.param({"tiling": {"tile_px": 256, "overlap_px": 256}},
                     r"tiling.overlap_px 256 must be under tiling.tile_px 256", id="overlap-eq"),
        pytest.param({"tiling": {"tile_px": 256, "overlap_px": 400}},
                     r"tiling.overlap_px 400 must be under tiling.tile_px 256", id="overlap-gt"),
        # inverted percentiles turned every nucleus dark: no objects, no error
        pytest.param({"normalisation": {"low": 99.8, "high": 1.0}},
                     r"normalisation.low 99.8 must be under normalisation.high 1", id="low>high"),
        pytest.param({"normalisation": {"low": 50.0, "high": 50.0}},
                     r"normalisation.low 50 must be under normalisation.high 50", id="low=high"),
        pytest.param({"normalisation": {"kind": "fixed", "scale": float("inf")}},
                     r"normalisation.scale inf", id="scale-inf"),
        pytest.param({"normalisation": {"kind": "fixed", "offset": float("nan")}},
                     r"normalisation.offset nan", id="offset-nan"),
    ],
)  # fmt: skip
def test_card_fields_out_of_range_are_refused_at_load(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    folder = _engine_with_card(tmp_path, change)
    with pytest.raises(EngineError, match=f"engine nuclei-unet: .*{message}"):
        SegmentationEngine(folder, backend="onnxruntime")


def test_shipped_cards_pass_the_load_checks() -> None:
    for name in builtin_engines():
        Engine(name, backend="onnxruntime").close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"torch_module": "livescope.nope:Net"}, r"livescope.nope:Net", id="no-module"),
        pytest.param({"torch_module": "livescope.models:Nope"}, r"livescope.models:Nope",
                     id="no-class"),
        pytest.param({"torch_module": "livescope.models"}, r"'package.module:Class'",
                     id="no-colon"),
        pytest.param({"torch_kwargs": {"base": 16, "depth": 3, "wings": 2}}, r"torch_kwargs",
                     id="unknown-kwarg"),
        pytest.param({"torch_kwargs": {"base": 8, "depth": 3}}, r"do not fit",
                     id="weights-do-not-fit"),
    ],
)  # fmt: skip
def test_a_card_whose_torch_module_cannot_be_built_is_named(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    # ModuleNotFoundError, AttributeError, TypeError, RuntimeError came out as they were
    ok, why = next(b for b in BACKENDS if b.name == "torch").available()
    if not ok:
        skip_unless_required("torch", f"torch cannot run here: {why}")
    folder = _engine_with_card(tmp_path, change)
    with pytest.raises(LivescopeError, match=f"engine nuclei-unet: .*{message}"):
        Engine(folder, backend="torch")


@pytest.fixture(scope="module")
def seg() -> SegmentationEngine:
    return SegmentationEngine(ENGINE, backend="onnxruntime")


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(np.full((64, 64), 1e300), id="float64-beyond-fp32"),
        pytest.param(np.full((64, 64), -1e39), id="float64-below-fp32"),
    ],
)
def test_float_frames_beyond_fp32_are_refused(seg: SegmentationEngine, frame: Any) -> None:
    # cast to fp32 they became inf, the maps NaN, and the frame came back with no nuclei
    with pytest.raises(EngineError, match=r"engine nuclei-unet: .*float32"):
        seg.segment(frame)


def test_cell_states_refuse_float_frames_beyond_fp32() -> None:
    labels = np.zeros((64, 64), np.int32)
    labels[20:30, 20:30] = 1
    with (
        CellStateEngine("cell-state", backend="onnxruntime") as e,
        pytest.raises(EngineError, match=r"engine cell-state: .*float32"),
    ):
        e.classify(np.full((64, 64), 1e300), labels)


def test_cell_states_refuse_uint64_label_ids_beyond_int64() -> None:
    # (a ValueError from bincount: the ids wrapped to negative numbers)
    labels = np.zeros((64, 64), np.uint64)
    labels[10:20, 10:20] = 2**63 + 5
    labels[40:50, 40:50] = 7
    frame = np.where(labels > 0, 1000, 100).astype(np.uint16)
    with (
        CellStateEngine("cell-state", backend="onnxruntime") as e,
        pytest.raises(EngineError, match=r"engine cell-state: label ids reach .* beyond int64"),
    ):
        e.classify(frame, labels)


def test_a_closed_engine_refuses_frames_that_need_no_model() -> None:
    # a constant frame (no stain to predict) or a frame without cells came back as a
    # result from an engine already closed
    stain = StainEngine("nuclei-stain", backend="onnxruntime")
    stain.close()
    with pytest.raises(EngineError, match="engine nuclei-stain is closed"):
        stain.predict(np.zeros((64, 64), np.uint16))
    cells = CellStateEngine("cell-state", backend="onnxruntime")
    cells.close()
    with pytest.raises(EngineError, match="engine cell-state is closed"):
        cells.classify(np.zeros((64, 64), np.uint16), np.zeros((64, 64), np.int32))


class _OneAtATimeSession:
    """A session that, like a TensorRT context or a torch CUDA graph's static buffers,
    must not run two batches at once; it records whether it ever did."""

    backend = "fake"
    device = "cuda"
    input_name = "image"
    input_rank = 4
    output_names = ["prob"]  # noqa: RUF012

    def __init__(self) -> None:
        self.busy = 0
        self.overlapped = False
        self.closed_while_running = False
        self.runs = 0
        self.delay_s = 0.02
        self.started = threading.Event()

    def run(self, x: Any) -> Any:
        self.busy += 1
        self.overlapped |= self.busy > 1
        self.started.set()
        time.sleep(self.delay_s)
        self.runs += 1
        self.busy -= 1
        return np.zeros((x.shape[0], 2, *x.shape[2:]), np.float32)

    def close(self) -> None:
        self.closed_while_running |= self.busy > 0


class _FakeBackend:
    name = "fake"

    def __init__(self) -> None:
        self.session = _OneAtATimeSession()

    def available(self) -> tuple[bool, str]:
        return True, "test"

    def priority(self) -> int:
        return 0

    def load(
        self,
        model: Path,
        card: EngineCard,
        *,
        precision: str = "fp32",
        shapes: Sequence[tuple[int, int]] = (),
    ) -> Any:
        return self.session


def test_two_threads_calling_infer_never_run_the_session_at_once() -> None:
    backend = _FakeBackend()
    engine = Engine(ENGINE, backend=backend)  # type: ignore[arg-type]
    frame = np.random.default_rng(0).poisson(100, (64, 64)).astype(np.uint16)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                engine.infer(frame)
        except BaseException as exc:  # noqa: BLE001 (handed to the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert backend.session.runs == 15
    assert not backend.session.overlapped


def test_close_waits_for_a_run_in_flight_and_later_calls_are_refused() -> None:
    backend = _FakeBackend()
    engine = Engine(ENGINE, backend=backend)  # type: ignore[arg-type]
    frame = np.ones((64, 64), np.uint16)
    backend.session.delay_s = 0.2
    t = threading.Thread(target=engine.infer, args=(frame,))
    t.start()
    assert backend.session.started.wait(5)
    engine.close()
    t.join()
    assert not backend.session.closed_while_running
    with pytest.raises(EngineError, match="engine nuclei-unet is closed"):
        engine.infer(frame)


class _BrokenInstallBackend:
    """A backend whose library is installed but fails to import (e.g. a missing libcudnn)."""

    name = "broken"

    def available(self) -> tuple[bool, str]:
        raise ImportError("libcudnn.so.9: cannot open shared object file\nmore detail")

    def priority(self) -> int:
        raise ImportError("libcudnn.so.9: cannot open shared object file")

    def load(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover (never chosen)
        raise AssertionError


def test_a_backend_that_fails_to_import_is_skipped_and_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # asking a broken torch or TensorRT install whether it could run raised its ImportError
    # out of select_backend: no engine loaded, not even on ONNX Runtime
    from livescope.inference import (
        OnnxRuntimeBackend,
        _backends,
        available_backends,
        select_backend,
    )

    monkeypatch.delenv("LIVESCOPE_BACKEND", raising=False)
    monkeypatch.setattr(_backends, "BACKENDS", (_BrokenInstallBackend(), OnnxRuntimeBackend()))
    assert select_backend().name == "onnxruntime"
    with pytest.raises(BackendUnavailable, match=r"'broken' cannot run here: .*libcudnn.so.9"):
        select_backend("broken")
    broken = next(b for b in available_backends() if b[0] == "broken")
    assert broken[1] is False
    assert "ImportError: libcudnn.so.9: cannot open shared object file" in broken[2]


def test_engines_check_lists_a_backend_that_fails_to_import(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import livescope.inference
    from livescope.cli._engines import engines_check
    from livescope.inference import OnnxRuntimeBackend, _backends

    backends = (_BrokenInstallBackend(), OnnxRuntimeBackend())
    monkeypatch.setattr(_backends, "BACKENDS", backends)
    monkeypatch.setattr(livescope.inference, "BACKENDS", backends)
    engines_check([ENGINE], json_out=True)
    rows = json.loads(capsys.readouterr().out)["results"]
    broken = next(r for r in rows if r["backend"] == "broken")
    assert broken["status"] == "unavailable"
    assert "libcudnn.so.9" in broken["detail"]


@pytest.mark.parametrize(
    ("label_names", "message"),
    [
        # the message named only the image: the labels were there, saved as PNG
        pytest.param(["a.png", "b.png"], r"a.png for a.tif, b.png for b.tif", id="other-suffix"),
        pytest.param(["a_mask.tif", "b_mask.tif"], r"holds a_mask.tif, b_mask.tif",
                     id="other-names"),
        pytest.param([], r"holds no images", id="no-images"),
    ],
)  # fmt: skip
def test_images_and_labels_that_do_not_pair_say_what_the_labels_folder_holds(
    tmp_path: Path, label_names: list[str], message: str
) -> None:
    import tifffile

    from livescope.inference import paired_files

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(images / name, np.zeros((16, 16), np.uint16))
    for name in label_names:
        (labels / name).write_bytes(b"")
    with pytest.raises(LivescopeError, match=rf"no label file in .* for: a.tif, b.tif.*{message}"):
        paired_files(images, labels)


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(np.full((4, 4), 7, np.uint16), id="4x4"),
        pytest.param(np.full((32, 32), 1e300), id="beyond-fp32"),
    ],
)
def test_eval_names_the_image_an_engine_refuses(
    tmp_path: Path, seg: SegmentationEngine, image: Any
) -> None:
    # the engine's refusal came without the file's name: which of a folder's images?
    import tifffile

    from livescope.inference import evaluate_segmentation

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    ok = np.zeros((64, 64), np.uint16)
    ok[20:30, 20:30] = 1000
    tifffile.imwrite(images / "a.tif", ok + 50)
    tifffile.imwrite(labels / "a.tif", (ok > 0).astype(np.uint16))
    tifffile.imwrite(images / "b.tif", image)
    tifffile.imwrite(labels / "b.tif", np.zeros(image.shape, np.uint16))
    with pytest.raises(LivescopeError, match=r"[/\\]b\.tif: engine nuclei-unet: frame "):
        evaluate_segmentation(seg, images, labels)


def test_eval_stain_names_the_input_the_engine_refuses(tmp_path: Path) -> None:
    import tifffile

    from livescope.inference import evaluate_stain

    inp, target = tmp_path / "input", tmp_path / "target"
    inp.mkdir()
    target.mkdir()
    tifffile.imwrite(inp / "a.tif", np.full((32, 32), 1e300))
    tifffile.imwrite(target / "a.tif", np.random.default_rng(0).random((32, 32), np.float32))
    with (
        StainEngine("nuclei-stain", backend="onnxruntime") as e,
        pytest.raises(LivescopeError, match=r"^a.tif: engine nuclei-stain: frame holds values"),
    ):
        evaluate_stain(e, inp, target)


@pytest.mark.parametrize(
    ("value", "chosen"),
    [
        pytest.param(
            "onnxruntime\r\n", "onnxruntime", id="line-end"
        ),  # (a .env written on Windows)
        pytest.param(" onnxruntime ", "onnxruntime", id="spaces"),
        pytest.param("  ", None, id="blank"),
    ],
)
def test_livescope_backend_is_read_without_surrounding_whitespace(
    monkeypatch: pytest.MonkeyPatch, value: str, chosen: str | None
) -> None:
    from livescope.inference import select_backend

    monkeypatch.setenv("LIVESCOPE_BACKEND", value)
    best = select_backend().name
    monkeypatch.delenv("LIVESCOPE_BACKEND")
    assert best == (chosen or select_backend().name)


def test_livescope_backend_set_to_garbage_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIVESCOPE_BACKEND", "garbage")
    with pytest.raises(
        BackendUnavailable,
        match=r"unknown backend 'garbage' \(from the LIVESCOPE_BACKEND environment variable\); "
        r"known: tensorrt, tensorrt-rtx, torch, onnxruntime",
    ):
        Engine(ENGINE)


def test_labels_of_more_objects_than_uint16_holds_do_not_wrap() -> None:
    from livescope.inference import labels_from_maps

    fg = np.zeros((1040, 1040), np.float32)
    fg[::4, ::4] = fg[1::4, ::4] = fg[::4, 1::4] = fg[1::4, 1::4] = 1.0  # 67,600 2x2 nuclei
    fg[:4, :4] = 0.0  # (one gone: ids must still run 1..N)
    for min_size in (0, 2):  # (kept as they are / renumbered after dropping)
        labels = labels_from_maps(fg, fg, min_size_px=min_size, smooth_px=0.0)
        assert labels.dtype == np.int32
        assert labels.max() == 260 * 260 - 1 > np.iinfo(np.uint16).max
        assert np.unique(labels).size == 260 * 260


@pytest.mark.parametrize("shape", [(1033, 1041), (64, 1500), (17, 900), (255, 257)])
def test_tiles_on_odd_frames_give_the_whole_frames_objects(
    tmp_path: Path, shape: tuple[int, int]
) -> None:
    # post-processing runs on the stitched maps: no object cut, dropped or doubled at a seam
    from livescope.scope import simulated_frames

    frame = np.tile(simulated_frames(1, size=512, objective="10x")[0][0], (3, 3))
    frame = frame[: shape[0], : shape[1]]
    tiled = _engine_with_card(tmp_path, {"tiling": {"tile_px": 256, "overlap_px": 128}})
    with (
        SegmentationEngine(ENGINE, backend="onnxruntime") as whole,
        SegmentationEngine(tiled, backend="onnxruntime") as tiles,
    ):
        assert np.array_equal(tiles.segment(frame).labels, whole.segment(frame).labels)
