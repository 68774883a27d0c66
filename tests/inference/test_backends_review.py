"""Review of the inference backends: plan cache, TensorRT dtypes, torch threads.

Runs without a GPU: TensorRT-RTX builds ahead of time, and the pure-Python parts of
the TensorRT backend (plan keys, the plan cache, dtypes) are run on their own.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from livescope.inference import _backends as B
from livescope.inference import builtin_engines
from livescope.schema import EngineCard, LivescopeError

from ..conftest import skip_unless_required

needs_rtx = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt-rtx not installed"
)


def _card(name: str) -> EngineCard:
    return EngineCard.from_file(builtin_engines()[name] / "card.yaml")


@needs_rtx
def test_tensorrt_rtx_builds_without_the_timing_cache_it_does_not_have(tmp_path: Path) -> None:
    # (TensorRT-RTX's timing-cache calls are deprecated no-ops: each warned, which the
    # tests' filterwarnings turns into an error; TensorRTRTXBackend.load passes one)
    import tensorrt_rtx

    card = _card("nuclei-unet")
    model = builtin_engines()["nuclei-unet"] / card.model
    timing = tmp_path / "timing.cache"
    plan = B.build_plan(
        tensorrt_rtx, model, card, precision="fp32", shapes=[(512, 512)],
        compute_capabilities=["SM89"], timing_cache=timing,
    )  # fmt: skip
    assert len(plan) > 100_000
    assert not timing.exists()


def test_plan_key_changes_with_the_crop_size_of_a_classifier() -> None:
    card = _card("cell-state")
    assert card.crop_px is not None
    other = card.replace(crop_px=card.crop_px + 16)  # same ONNX file, other profile
    args = ("NVIDIA H100 80GB HBM3", "10.9.0", "fp16", [(512, 512)])
    assert B._plan_key(card, *args) != B._plan_key(other, *args)


def test_plan_key_is_the_same_for_the_same_shapes_however_written() -> None:
    import numpy as np

    card = _card("nuclei-unet")
    ints = B._plan_key(card, "gpu", "10.9.0", "fp32", [(512, 512), (256, 512)])
    same = [(np.int64(256), np.int64(512)), [512, 512]]  # (numpy ints; a list from YAML)
    assert B._plan_key(card, "gpu", "10.9.0", "fp32", same) == ints  # type: ignore[arg-type]


@needs_rtx
def test_tensorrt_tensors_get_buffers_of_their_own_dtype() -> None:
    import tensorrt_rtx as trt

    try:
        import torch
    except ImportError:  # (the core install and `python dev.py test` have no torch: CI has)
        skip_unless_required("torch", "torch is not installed")

    session = B._TrtSession.__new__(B._TrtSession)  # (no GPU: only its dtype table)
    session._torch = torch
    want = {
        trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
        trt.int32: torch.int32, trt.int64: torch.int64, trt.int8: torch.int8,
        trt.uint8: torch.uint8, trt.bool: torch.bool,
    }  # fmt: skip
    for dt, expected in want.items():
        assert session._torch_dtype(trt, dt) == expected, dt
    with pytest.raises(LivescopeError, match=r"(?i)fp4"):  # (no torch buffer of its own)
        session._torch_dtype(trt, trt.fp4)


def test_a_cached_plan_that_does_not_load_is_built_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "plans" / "x.plan"
    path.parent.mkdir()
    path.write_bytes(b"half a pl")  # (a writer that died, or another TensorRT build)
    built: list[int] = []

    def build() -> bytes:
        built.append(1)
        return b"a whole plan"

    def load(plan: bytes) -> bytes:
        if plan != b"a whole plan":
            raise LivescopeError("cannot deserialize the plan")
        return plan

    with caplog.at_level(logging.WARNING, logger="livescope"):
        assert B._cached_plan(path, build, load) == b"a whole plan"
    assert built == [1]
    assert "x.plan" in caplog.text
    assert path.read_bytes() == b"a whole plan"
    assert B._cached_plan(path, build, load) == b"a whole plan"
    assert built == [1]  # (read from the cache this time)
    assert not [p for p in path.parent.iterdir() if p != path]  # (no temporary file left)


def test_a_plan_cache_that_cannot_be_written_still_loads_the_plan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING, logger="livescope"):
        out = B._cached_plan(blocker / "plans" / "x.plan", lambda: b"plan", lambda p: p)
    assert out == b"plan"
    assert "x.plan" in caplog.text


def test_torch_on_the_cpu_keeps_to_livescope_threads() -> None:
    if B._can_run(B.TorchBackend())[0] is False:
        pytest.skip("torch cannot run here")
    code = (
        "import torch\n"
        "from livescope.inference import Engine\n"
        "n = torch.get_num_threads()\n"
        "with Engine('nuclei-unet', backend='torch') as e:\n"
        "    print(n, torch.get_num_threads())\n"
    )
    env = {**os.environ, "LIVESCOPE_THREADS": "1"}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    before, after = int(out[0]), int(out[1])
    if before == 1:
        pytest.skip("torch uses one thread here anyway")
    assert after == 1


def test_a_backend_from_the_environment_that_cannot_run_says_where_it_came_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cannot = [b.name for b in B.BACKENDS if not B._can_run(b)[0]]
    if not cannot:
        pytest.skip("every backend can run here")
    monkeypatch.setenv("LIVESCOPE_BACKEND", cannot[0])
    with pytest.raises(B.BackendUnavailable, match="LIVESCOPE_BACKEND") as info:
        B.select_backend()
    assert f"backend {cannot[0]!r} (from the" in str(info.value)
    assert "cannot run here: " in str(info.value)
    with pytest.raises(B.BackendUnavailable) as named:  # (named by the caller: not said)
        B.select_backend(cannot[0])
    assert "LIVESCOPE_BACKEND" not in str(named.value)


@pytest.mark.parametrize(
    ("parts", "name"),
    [
        (("nuclei/v2", "tensorrt", "ab12"), "nuclei_v2-tensorrt-ab12.plan"),
        (("..", "tensorrt-rtx-aot", "SM89"), "_-tensorrt-rtx-aot-SM89.plan"),
        (("C:\\x", "tensorrt"), "C__x-tensorrt.plan"),
        (("noyaux µ", "tensorrt"), "noyaux__-tensorrt.plan"),
    ],
)
def test_plan_files_stay_in_the_plan_cache_whatever_the_engine_is_named(
    parts: tuple[str, ...], name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an engine's card names it freely ("nuclei/v2"): the plan's file name is made of it
    monkeypatch.setenv("LIVESCOPE_CACHE", str(tmp_path))
    path = B.plan_file(*parts)
    assert path.parent == B.plan_cache_dir()
    assert path.name == name
    timing = B.plan_file("timing", "tensorrt", "10.13", "NVIDIA H100 80GB HBM3", suffix=".cache")
    assert timing.name == "timing-tensorrt-10.13-NVIDIA_H100_80GB_HBM3.cache"


def _covers(profile: tuple[tuple[int, int, int, int], ...], h: int, w: int) -> bool:
    (_, _, h0, w0), _, (_, _, h1, w1) = profile
    return h0 <= h <= h1 and w0 <= w <= w1


@pytest.mark.parametrize("name", ["nuclei-unet", "nuclei-stain"])
def test_a_plan_built_without_a_frame_shape_takes_every_tile_of_any_frame(name: str) -> None:
    # the worker loads its engines without a frame shape (and a segmenter given the
    # nuclei's size zooms each frame first): the plan was built for 512x512 tiles only,
    # and TensorRT refused every other frame as outside its optimisation profile
    from livescope.inference import TilePlan

    card = _card(name)
    t = card.tiling
    profile = B.input_profile(card, [])
    zoomed = round(2048 * 0.37)  # (a 2048² frame zoomed to the nuclei's size)
    shapes = [(512, 512), (256, 256), (1024, 1024), (2048, 2048), (1200, 1600), (519, 519),
              (333, 77), (8, 8), (zoomed, zoomed)]  # fmt: skip
    for shape in shapes:
        plan = TilePlan(shape, t.tile_px, t.overlap_px, card.input.multiple_of)
        for h, w in plan.tile_shapes():
            assert _covers(profile, h, w), (shape, (h, w), profile)
    # a frame shape given: its tiles only (a tight profile)
    sized = B.input_profile(card, TilePlan((512, 512), t.tile_px, t.overlap_px).tile_shapes())
    assert sized[0][2:] == sized[2][2:]


def test_a_classifier_plan_is_the_same_for_every_frame_shape() -> None:
    # its crops do not depend on the frame: one plan, not one per camera shape
    card = _card("cell-state")
    args = ("NVIDIA H100 80GB HBM3", "10.9.0", "fp16")
    assert B._plan_key(card, *args, [(512, 512)]) == B._plan_key(card, *args, [(2048, 2048)])
    assert B.input_profile(card, [(512, 512)]) == B.input_profile(card, [])
