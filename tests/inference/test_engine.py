"""Engines: loading checks, frame checks, tiling, backends, parity."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from livescope.inference import (
    BACKENDS,
    BackendUnavailable,
    Engine,
    EngineError,
    OnnxRuntimeBackend,
    SegmentationEngine,
    TensorRTRTXBackend,
    TilePlan,
    available_backends,
    builtin_engines,
    labels_from_maps,
    labels_from_maps_gpu,
    match_counts,
    normalize_percentile,
    scores,
    select_backend,
    sha256_file,
)
from livescope.schema import EngineCard, EngineCardError, LivescopeError

from ..conftest import skip_unless_required

ENGINE = "nuclei-unet"


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    from livescope.scope import simulated_frames

    return simulated_frames(1, size=512, objective="10x")[0][0]


@pytest.fixture(scope="module")
def engine() -> SegmentationEngine:
    return SegmentationEngine(ENGINE, backend="onnxruntime")


def _copy_engine(tmp_path: Path) -> Path:
    dst = tmp_path / ENGINE
    shutil.copytree(builtin_engines()[ENGINE], dst)
    return dst


def test_shipped_engine_is_listed_and_its_card_is_complete() -> None:
    folder = builtin_engines()[ENGINE]
    card = EngineCard.from_file(folder / "card.yaml")
    assert card.task == "segmentation"
    assert card.training.command.startswith("python tools/train_seg.py")
    assert "nuclei-mnfinder/validation" in card.metrics
    assert (folder / "model.onnx").stat().st_size < 5_000_000


def test_segments_a_simulated_frame(engine: SegmentationEngine, frame: np.ndarray) -> None:
    res = engine.segment(frame)
    assert res.labels.shape == frame.shape
    assert res.labels.max() > 10
    assert res.ms_engine > 0
    assert res.ms_post > 0


def test_onnx_runtime_on_the_cpu_plans_no_memory_pattern(engine: SegmentationEngine) -> None:
    # the pattern held a block beside the arena from a session's second run: the
    # demo's worker ~1.52 GB instead of ~1.06 GB, for the same speed (see the backend)
    sess = engine.session._sess  # type: ignore[union-attr]
    if sess.get_providers()[0] != "CPUExecutionProvider":
        pytest.skip("ONNX Runtime runs on a GPU here: its memory pattern is left as it is")
    assert sess.get_session_options().enable_mem_pattern is False


def test_a_gpu_provider_that_does_not_start_is_said_and_the_session_runs_as_on_the_cpu(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # asked for CUDA where ONNX Runtime cannot start it (here: a CPU-only build; on a
    # PC: e.g. no cuDNN), it falls back to the CPU by itself: say so, and plan no
    # memory pattern there either
    import onnxruntime as ort

    from livescope.inference._backends import _OrtSession

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("ONNX Runtime has a CUDA provider here")
    model = builtin_engines()[ENGINE] / "model.onnx"
    with (
        caplog.at_level(logging.WARNING, logger="livescope"),
        pytest.warns(UserWarning, match="'CUDAExecutionProvider' is not in available provider"),
    ):
        sess = _OrtSession(model, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert sess.device == "CPUExecutionProvider"
    assert "could not start CUDAExecutionProvider; it runs on the CPU" in caplog.text
    assert sess._sess.get_session_options().enable_mem_pattern is False


def test_without_a_cuda_driver_loading_engines_does_not_import_torch() -> None:
    # torch is imported only to ask it for a GPU: where no driver can give one, a
    # CPU worker is spared its ~0.18 GB and import time (a fresh process: this one
    # may have imported torch for other tests)
    from livescope.inference._backends import _cuda_driver

    if _cuda_driver():
        pytest.skip("this machine has a CUDA driver: torch is imported to look for a GPU")
    if importlib.util.find_spec("torch") is None:
        skip_unless_required("torch", "torch is not installed: nothing to keep from importing")
    code = (
        "import sys\n"
        "from livescope.pipeline._analyzer import FrameAnalyzer\n"
        "a = FrameAnalyzer(segmenter='nuclei-unet', stain='nuclei-stain', states='cell-state')\n"
        "a.warm_up((64, 64))\n"
        "print(sorted(a.engine_hashes()), 'torch' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LIVESCOPE_BACKEND"}  # best one chosen
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split()[-1] == "False", out.stdout


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    folder = _copy_engine(tmp_path)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[-100] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(
        EngineError, match=r"nuclei-unet: model.onnx has sha256 .* changed or corrupted"
    ):
        Engine(folder)


def test_a_model_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    folder = _copy_engine(tmp_path)
    (folder / "model.onnx").write_bytes(b"not an onnx model")  # and a card that vouches for it
    card = (folder / "card.yaml").read_text()
    old = EngineCard.from_file(folder / "card.yaml").sha256
    (folder / "card.yaml").write_text(card.replace(old, sha256_file(folder / "model.onnx")))
    with pytest.raises(LivescopeError, match=r"model.onnx: ONNX Runtime cannot load it as an ONNX"):
        Engine(folder, backend="onnxruntime")


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(
        EngineError, match="nuclei-unet: precision must be fp32 or fp16, not 'fp64'"
    ):
        Engine(ENGINE, backend="onnxruntime", precision="fp64")


def test_missing_model_is_refused(tmp_path: Path) -> None:
    folder = _copy_engine(tmp_path)
    (folder / "model.onnx").unlink()
    with pytest.raises(EngineError, match=r"nuclei-unet: model file .* is missing"):
        Engine(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"input": {"name": "pixels"}}, "card and model do not match", id="input-name"),
        pytest.param(
            {"outputs": [{"name": "probs", "channels": ["foreground", "distance"]}]},
            "not among the model's outputs",
            id="output-name",
        ),
    ],
)
def test_card_that_does_not_match_the_model(tmp_path: Path, change: dict, message: str) -> None:
    folder = _copy_engine(tmp_path)
    card = yaml.safe_load((folder / "card.yaml").read_text())
    for key, value in change.items():
        card[key] = {**card[key], **value} if isinstance(value, dict) else value
    (folder / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(EngineError, match=message):
        Engine(folder)


def test_card_naming_more_output_channels_than_the_model_gives(
    tmp_path: Path, frame: np.ndarray
) -> None:
    folder = _copy_engine(tmp_path)
    card = yaml.safe_load((folder / "card.yaml").read_text())
    channels = card["outputs"][0]["channels"]
    card["outputs"][0]["channels"] = [*channels, "extra"]
    (folder / "card.yaml").write_text(yaml.safe_dump(card))
    # refused when it loads (the model's output shape names its channels), not at the
    # first frame, which it was, blaming the frame
    with pytest.raises(EngineError, match=f"gives {len(channels)} output channels.*do not match"):
        Engine(folder)


@pytest.mark.parametrize(
    ("postprocess", "message"),
    [
        pytest.param(
            {"kind": "centre_votes"}, r"offset_y.*centre_votes post-processing needs them",
            id="centre_votes",
        ),
        pytest.param(
            {"neighbour_weight": 1.0},
            r"'neighbour'.*distance_watershed with neighbour_weight post-processing needs them",
            id="neighbour_weight",
        ),
    ],
)  # fmt: skip
def test_post_processing_needs_its_output_channels(
    tmp_path: Path, postprocess: dict[str, object], message: str
) -> None:
    folder = _copy_engine(tmp_path)
    card = yaml.safe_load((folder / "card.yaml").read_text())
    card["outputs"][0]["channels"] = ["foreground", "distance"]
    card["postprocess"].update(postprocess)
    (folder / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(EngineError, match=message):
        SegmentationEngine(folder)


@pytest.mark.parametrize("gamma", [pytest.param(0.5, id="sqrt"), pytest.param(0.7, id="0.7")])
def test_card_gamma_raises_the_normalised_frame_to_its_power(
    tmp_path: Path, frame: np.ndarray, gamma: float
) -> None:
    folder = _copy_engine(tmp_path)
    card = yaml.safe_load((folder / "card.yaml").read_text())
    card["normalisation"]["gamma"] = gamma
    (folder / "card.yaml").write_text(yaml.safe_dump(card))
    x = Engine(folder).normalise(frame)
    linear = normalize_percentile(frame)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, np.clip(linear, 0, None) ** gamma, rtol=1e-5, atol=1e-6)
    assert x.min() == 0.0  # below the low percentile: clipped, not NaN
    card["normalisation"]["gamma"] = 1.5
    (folder / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(EngineCardError, match="gamma"):
        Engine(folder)


def test_invalid_card_names_the_field(tmp_path: Path) -> None:
    folder = _copy_engine(tmp_path)
    card = yaml.safe_load((folder / "card.yaml").read_text())
    card["sha256"] = "xyz"
    (folder / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(EngineCardError, match="sha256"):
        Engine(folder)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        pytest.param(np.zeros((64, 64), bool), "dtype bool", id="bool"),
        pytest.param(np.zeros((64, 64), complex), "dtype complex128", id="complex"),
        pytest.param(
            np.zeros((2, 64, 64), np.uint16), r"shape \(2, 64, 64\), expected \(H, W\)", id="3d"
        ),
        pytest.param(np.zeros(64, np.uint16), r"shape \(64,\)", id="1d"),
        pytest.param(np.full((64, 64), np.nan, np.float32), "NaN", id="nan"),
        pytest.param([[1, 2], [3, 4]], "numpy array", id="list"),
    ],
)
def test_bad_frames_are_refused(engine: SegmentationEngine, bad: object, message: str) -> None:
    with pytest.raises(EngineError, match=f"engine nuclei-unet: .*{message}"):
        engine.segment(bad)  # type: ignore[arg-type]


def test_tile_plan_covers_every_pixel_once() -> None:
    plan = TilePlan((1100, 1300), 512, 128)
    cover = np.zeros((1100, 1300), int)
    for src, keep in plan.regions():
        ys = slice(src[0].start + keep[0].start, src[0].start + keep[0].stop)
        xs = slice(src[1].start + keep[1].start, src[1].start + keep[1].stop)
        cover[ys, xs] += 1
    assert (cover == 1).all()
    assert all(src[0].start % 8 == 0 and src[1].start % 8 == 0 for src, _ in plan.regions())
    # the last tiles (516 px) as the model runs them, padded to the pooling grid
    assert plan.tile_shapes() == [(512, 512), (512, 520), (520, 512), (520, 520)]


def _frame_engines() -> list[str]:
    """Shipped engines that take whole frames (not crops)."""
    return [
        n for n, f in builtin_engines().items()
        if EngineCard.from_file(f / "card.yaml").task in ("segmentation", "virtual_stain")
    ]  # fmt: skip


@pytest.mark.parametrize("name", _frame_engines())
def test_shipped_card_pads_frames_as_deep_as_its_unet_pools(name: str) -> None:
    card = EngineCard.from_file(builtin_engines()[name] / "card.yaml")
    depth = int(card.torch_kwargs.get("depth", 0))
    assert depth > 0
    assert card.input.multiple_of % 2**depth == 0


@pytest.mark.parametrize("name", _frame_engines())
@pytest.mark.parametrize("shape", [pytest.param((100, 75), id="small"),
                                   pytest.param((1100, 1052), id="tiled")])  # fmt: skip
def test_shipped_engines_take_frames_of_any_size(
    name: str, shape: tuple[int, int], frame: np.ndarray
) -> None:
    # sides that are not multiples of 16 (cropped or binned cameras, rescaled frames)
    big = np.tile(frame, (3, 3))[: shape[0], : shape[1]]
    with Engine(name, backend="onnxruntime") as e:
        maps = e.infer(big)
    assert maps.shape[1:] == shape
    assert np.isfinite(maps).all()


@pytest.mark.parametrize(
    ("backend", "runtime"),
    [
        pytest.param("onnxruntime", "onnxruntime", id="onnxruntime"),
        pytest.param("torch", r"torch \(cpu\)", id="torch"),
    ],
)
def test_card_padding_less_than_its_unet_needs_names_the_setting(
    tmp_path: Path, backend: str, runtime: str
) -> None:
    ok, why = next(b for b in BACKENDS if b.name == backend).available()
    if not ok:
        skip_unless_required(backend, f"{backend} cannot run here: {why}")
    dst = tmp_path / "nuclei-stain"
    shutil.copytree(builtin_engines()["nuclei-stain"], dst)
    card = yaml.safe_load((dst / "card.yaml").read_text())
    card["input"]["multiple_of"] = 8  # the depth-4 U-Net needs 16
    (dst / "card.yaml").write_text(yaml.safe_dump(card))
    with (
        Engine(dst, backend=backend) as e,
        pytest.raises(
            EngineError,
            match=rf"nuclei-stain: {runtime} failed on input \(1, 1, 520, 520\).*"
            r"multiples of 8, the card's input.multiple_of",
        ),
    ):
        e.infer(np.ones((520, 520), np.uint16))
    with Engine(dst, backend=backend) as e, pytest.raises(EngineError, match=r"nuclei-stain: "):
        e.run(np.ones((1, 1, 520, 520), np.float32))  # a batch straight through: same error


@pytest.mark.parametrize("name", _frame_engines())
def test_tiled_inference_has_no_seams(tmp_path: Path, frame: np.ndarray, name: str) -> None:
    # each shipped card's own overlap, in tiles of 448 px: every tile computes what the
    # whole frame would (the stain U-Net, 4 poolings deep, needs 192 px: at 128 its
    # output differed by up to 1 % of its range along each cut, until session 53)
    big = np.tile(frame, (2, 3))[:900, :1300]
    folders = []
    for part, tile in (("whole", 4096), ("tiled", 448)):
        folder = tmp_path / part / name
        shutil.copytree(builtin_engines()[name], folder)
        card = yaml.safe_load((folder / "card.yaml").read_text())
        overlap = card["tiling"]["overlap_px"]
        card["tiling"]["tile_px"] = tile
        (folder / "card.yaml").write_text(yaml.safe_dump(card))
        folders.append(folder)
    whole = Engine(folders[0], backend="onnxruntime")
    tiled = Engine(folders[1], backend="onnxruntime")
    assert len(TilePlan(big.shape, 448, overlap).regions()) > 4
    a, b = whole.infer(big), tiled.infer(big)
    assert np.max(np.abs(a - b)) <= 1e-5 * max(1.0, float(np.abs(a).max()))


def test_normalisation_is_fp32_for_large_counts() -> None:
    img = np.array([[0, 42000], [65000, 42001]], np.uint16)
    x = normalize_percentile(img, 0, 100)
    assert x.dtype == np.float32
    assert x[0, 1] != x[1, 1]  # fp16 would round 42000 and 42001 together


def _two_domes(x1: int, x2: int, peak1: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and distance maps of two cone-shaped nuclei (radius 14) on row 32."""
    yy, xx = np.mgrid[:64, :96]
    d1 = np.clip(peak1 - np.hypot(yy - 32, xx - x1) / 14, 0, 1)
    d2 = np.clip(1 - np.hypot(yy - 32, xx - x2) / 14, 0, 1)
    dist = np.maximum(d1, d2).astype(np.float32)
    return (dist > 0).astype(np.float32), dist


def test_post_processing_splits_touching_nuclei() -> None:
    fg, dist = _two_domes(30, 56)
    labels = labels_from_maps(fg, dist, fg_threshold=0.5, seed_threshold=0.5)
    assert labels.max() == 2
    assert labels[32, 30] != labels[32, 56]


def test_small_objects_are_dropped_and_the_rest_numbered_without_gaps() -> None:
    """A speck under min_size_px goes; the nuclei after it keep consecutive ids (1..N)."""
    fg, dist = _two_domes(20, 76)
    dist[10:13, 48:51] = 1.0  # a 9-pixel speck between the two nuclei, seeded first
    fg[10:13, 48:51] = 1.0
    for post in (labels_from_maps, labels_from_maps_gpu):
        kept = post(fg, dist, fg_threshold=0.5, seed_threshold=0.5, min_size_px=0)
        assert kept.max() == 3, post.__name__
        labels = post(fg, dist, fg_threshold=0.5, seed_threshold=0.5, min_size_px=20)
        assert sorted(np.unique(labels).tolist()) == [0, 1, 2], post.__name__
        assert labels[11, 49] == 0
        assert labels[32, 20] != labels[32, 76]


def test_objects_of_low_foreground_probability_are_dropped() -> None:
    """min_score: an object whose mean foreground probability is under it goes, on both paths."""
    fg, dist = _two_domes(20, 76)
    fg[:, 48:] *= 0.7  # the right nucleus: mean foreground probability 0.7
    for post in (labels_from_maps, labels_from_maps_gpu):
        both = post(fg, dist, fg_threshold=0.5, seed_threshold=0.5, min_score=0.6)
        assert both.max() == 2, post.__name__
        sure = post(fg, dist, fg_threshold=0.5, seed_threshold=0.5, min_score=0.8)
        assert sorted(np.unique(sure).tolist()) == [0, 1], post.__name__
        assert sure[32, 20] == 1
        assert sure[32, 76] == 0


def test_h_maxima_seeds_split_nuclei_whose_ridges_join_above_the_threshold() -> None:
    """Two overlapping domes (peaks 0.95, 1): the saddle (0.55) is above any useful threshold."""
    fg, dist = _two_domes(35, 47, peak1=0.95)
    merged = labels_from_maps(fg, dist, fg_threshold=0.5, seed_threshold=0.5)
    assert merged.max() == 1  # the threshold seeds see one nucleus
    for post in (labels_from_maps, labels_from_maps_gpu):
        labels = post(fg, dist, fg_threshold=0.5, seed_threshold=0.2, seed_h=0.3)
        assert len(np.unique(labels[labels > 0])) == 2, post.__name__
        assert labels[32, 35] != labels[32, 47]
        # a peak less than h above its saddle (0.95 - 0.55) is not a seed of its own
        shallow = post(fg, dist, fg_threshold=0.5, seed_threshold=0.2, seed_h=0.45)
        assert len(np.unique(shallow[shallow > 0])) == 1, post.__name__


def test_h_maxima_seeds_are_the_same_on_both_paths(
    engine: SegmentationEngine, frame: np.ndarray
) -> None:
    """The part-by-part CPU seeds equal the GPU path's global reconstruction (run with numpy)."""
    from scipy import ndimage

    from livescope.inference._postprocess import _h_dome, _h_maxima_cpu

    maps = engine.infer(frame)
    for h, smooth in ((0.1, 0.0), (0.3, 2.0)):
        d = ndimage.gaussian_filter(maps[1], smooth) if smooth else maps[1]
        region = (d > 0.2) & (maps[0] > 0.4)
        cpu = _h_maxima_cpu(d, region, h)
        xp_path = region & (_h_dome(np.where(region, d, np.float32(-1)), h, np, ndimage) >= h)
        assert cpu.any()
        np.testing.assert_array_equal(cpu, xp_path)


def test_gpu_postprocess_agrees_with_watershed(
    engine: SegmentationEngine, frame: np.ndarray
) -> None:
    """The flood used on the GPU, run here with numpy, finds the watershed's nuclei."""
    maps = engine.infer(frame)
    pp = engine.card.postprocess
    assert pp is not None
    kw = pp.label_kwargs()
    cpu = labels_from_maps(maps[0], maps[1], **kw)
    flood = labels_from_maps_gpu(maps[0], maps[1], xp=np, **kw)
    assert isinstance(flood, np.ndarray)
    assert flood.dtype == np.int32
    assert cpu.max() > 10
    s = scores(match_counts(cpu, flood))
    assert s["f1"] == 1.0  # the same nuclei; a pixel or two may differ at a border
    assert s["map"] >= 0.98
    # touching nuclei stay apart, and nothing outside the foreground is labelled
    assert not np.any(flood[maps[0] <= pp.fg_threshold])
    empty = np.zeros((32, 32), np.float32)
    assert labels_from_maps_gpu(empty, empty).max() == 0


def test_metrics_on_known_cases() -> None:
    truth = np.zeros((40, 40), np.int32)
    truth[2:12, 2:12] = 1
    truth[20:30, 20:30] = 2
    assert scores(match_counts(truth, truth))["ap50"] == 1.0
    pred = np.zeros_like(truth)
    pred[2:12, 3:13] = 7  # IoU 9/11 = 0.82
    pred[35:38, 35:38] = 8  # a false positive
    s = scores(match_counts(truth, pred))
    assert (s["n_true"], s["n_pred"]) == (2, 2)
    assert s["precision"] == 0.5
    assert s["recall"] == 0.5
    assert s["ap50"] == pytest.approx(1 / 3, abs=1e-4)  # scores are rounded to 4 places
    empty = np.zeros_like(truth)
    nothing = scores(match_counts(empty, empty))  # nothing to find, nothing found: perfect
    assert (nothing["ap50"], nothing["f1"], nothing["precision"], nothing["recall"]) == (1, 1, 1, 1)
    missed = scores(match_counts(truth, empty))
    assert (missed["ap50"], missed["f1"], missed["precision"], missed["recall"]) == (0, 0, 0, 0)


def test_a_frame_zoomed_below_the_smallest_input_names_the_users_frame() -> None:
    e = SegmentationEngine(ENGINE, backend="onnxruntime", object_diameter_px=100)
    with pytest.raises(EngineError, match=r"frame 30x40 px zoomed 0\.186x .* under 8 px"):
        e.segment(np.ones((30, 40), np.uint16))


@pytest.mark.parametrize("diameter", [0.001, 1e6, float("inf"), float("nan"), -3.0])
def test_object_diameters_beyond_the_rescale_limit_are_refused(diameter: float) -> None:
    with pytest.raises(EngineError, match=r"nuclei-unet: (nuclei of|object diameter must be)"):
        SegmentationEngine(ENGINE, backend="onnxruntime", object_diameter_px=diameter)


def test_backend_selection_reports_why(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [n for n, _, _ in available_backends()]
    assert names == ["tensorrt", "tensorrt-rtx", "torch", "onnxruntime"]
    with pytest.raises(BackendUnavailable, match="unknown backend 'tflite'"):
        select_backend("tflite")
    monkeypatch.setenv("LIVESCOPE_BACKEND", "onnxruntime")
    assert select_backend().name == "onnxruntime"
    for blank in ("", "  "):  # (`--backend ''`, or a config's empty value: not the default)
        with pytest.raises(BackendUnavailable, match="an empty backend name; known: tensorrt"):
            select_backend(blank)
    assert select_backend(" onnxruntime\r").name == "onnxruntime"  # (from a Windows file)
    unavailable = [b for b in BACKENDS if not b.available()[0]]
    for b in unavailable:
        with pytest.raises(BackendUnavailable, match=f"backend '{b.name}' cannot run here: "):
            select_backend(b.name)


@pytest.mark.parametrize(
    "backend", [b for b in BACKENDS if b.name != "onnxruntime"], ids=lambda b: b.name
)
def test_backend_parity_with_onnxruntime_cpu(backend, frame: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    ok, why = backend.available()
    if not ok:  # (torch's CPU build runs anywhere: CI requires it)
        skip_unless_required(backend.name, f"{backend.name} cannot run here: {why}")
    ref = Engine(ENGINE, backend=OnnxRuntimeBackend()).infer(frame)
    with Engine(ENGINE, backend=backend) as e:
        out = e.infer(frame)
    rel = np.max(np.abs(out - ref)) / np.max(np.abs(ref))
    assert rel <= 1e-4


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt-rtx not installed"
)
def test_tensorrt_rtx_builds_every_shipped_engine_ahead_of_time() -> None:
    rtx = TensorRTRTXBackend()
    for name, folder in builtin_engines().items():
        card = EngineCard.from_file(folder / "card.yaml")
        plan = rtx.build_ahead_of_time(
            folder / card.model, card, [(512, 512), (1024, 1024)], ["SM89"]
        )
        assert len(plan) > 100_000, name
    card = EngineCard.from_file(builtin_engines()[ENGINE] / "card.yaml")
    with pytest.raises(LivescopeError, match="unknown compute capability SM999; tensorrt_rtx"):
        rtx.build_ahead_of_time(builtin_engines()[ENGINE] / card.model, card, [(512, 512)],
                                ["SM999"])  # fmt: skip


def test_closed_engine_cannot_run(frame: np.ndarray) -> None:
    e = Engine(ENGINE, backend="onnxruntime")
    e.close()
    with pytest.raises(EngineError, match="closed"):
        e.infer(frame)


def test_an_engine_says_where_and_how_it_runs() -> None:
    # the run summary's engine_runtimes: what really runs, not what was asked for
    with Engine("nuclei-unet", backend="onnxruntime", precision="fp16") as eng:
        assert eng.runtime() == {
            "backend": "onnxruntime",
            "device": "CPUExecutionProvider",
            "precision": "fp32",  # the ONNX graph's own: ONNX Runtime does not cast it
        }
    assert eng.runtime()["device"] == "closed"
