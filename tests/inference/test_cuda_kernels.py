"""The GPU post-processing's CUDA kernels, checked without a GPU.

Their source is compiled here as C++ (a C++ compiler is all it takes) and each
launch is run one thread index at a time: every thread reads the previous
step's buffer and writes the other one, so the order does not matter. The
cupy branch of `labels_from_maps_gpu` then runs on them, with numpy arrays,
and must give exactly the labels of its numpy steps. (On a GPU,
tools/gpu_check.py compares the same two on the device.)
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from livescope.inference import _postprocess as post

from ..conftest import skip_unless_required

CXX = shutil.which("g++") or shutil.which("c++")


@pytest.fixture(autouse=True)
def _compiler() -> None:
    # (CI installs one and requires it: a plain skip there hid the kernels' test for good)
    if CXX is None:
        skip_unless_required("cxx", "no C++ compiler to build the kernels with")


HARNESS = """
#include <algorithm>
#include <cmath>
using std::max;
using std::min;
struct Index {{ int x; }};
static Index blockIdx, blockDim, threadIdx;
#define __global__
{kernels}
// one launch: every thread of the grid, one at a time (those past the frame return at once)
#define LAUNCH(call) \\
    blockDim.x = block; \\
    for (int g = 0; g < grid; ++g) \\
        for (int k = 0; k < block; ++k) {{ blockIdx.x = g; threadIdx.x = k; call; }}
extern "C" void run_dilate_min(int grid, int block, const float* a, float* out, int* changed,
                               int h, int w, const float* d) {{
    LAUNCH(dilate_min(a, out, changed, h, w, d))
}}
extern "C" void run_flood(int grid, int block, const int* a, int* out, int* changed, int h,
                          int w, const bool* mask, const float* dist, float t) {{
    LAUNCH(flood(a, out, changed, h, w, mask, dist, t))
}}
"""
# each kernel's arguments after the two buffers, the flag and (h, w), as the GPU gets them
EXTRA = {"dilate_min": (np.float32,), "flood": (np.bool_, np.float32, "float32 scalar")}
BUFFER = {"dilate_min": np.float32, "flood": np.int32}


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    folder = tmp_path_factory.mktemp("kernels")
    src, lib = folder / "kernels.cpp", folder / "kernels.so"
    src.write_text(HARNESS.format(kernels=post._KERNELS), encoding="utf-8")
    assert CXX is not None
    subprocess.run([CXX, "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return ctypes.CDLL(str(lib))


def _ptr(a: np.ndarray) -> ctypes.c_void_p:
    assert a.flags.c_contiguous
    return a.ctypes.data_as(ctypes.c_void_p)


def _launcher(lib: ctypes.CDLL, name: str, launches: list[str]) -> Any:
    """A stand-in for the compiled cupy kernel: checks each argument's type as the GPU reads it."""

    def launch(grid: tuple[int], block: tuple[int], args: tuple[Any, ...]) -> None:
        a, out, changed, h, w, *extra = args
        assert a.dtype == out.dtype == BUFFER[name]
        assert a.shape == out.shape == (h, w)
        assert changed.dtype == np.int32
        assert changed.shape == (1,)
        assert type(h) is np.int32
        assert type(w) is np.int32
        assert grid[0] * block[0] >= h * w > (grid[0] - 1) * block[0]
        typed: list[Any] = [ctypes.c_int(grid[0]), ctypes.c_int(block[0])]
        typed += [_ptr(a), _ptr(out), _ptr(changed), ctypes.c_int(h), ctypes.c_int(w)]
        for x, want in zip(extra, EXTRA[name], strict=True):
            if want == "float32 scalar":
                assert type(x) is np.float32  # a Python float would go as a double
                typed.append(ctypes.c_float(x))
            else:
                assert x.dtype == want
                assert x.shape == (h, w)
                typed.append(_ptr(x))
        getattr(lib, f"run_{name}")(*typed)
        launches.append(name)

    return launch


def _fixpoint_on_cpu(lib: ctypes.CDLL, launches: list[str]) -> Any:
    """`_cuda_fixpoint` itself, with numpy buffers and the kernels compiled for the CPU."""
    real = post._cuda_fixpoint

    def fixpoint(name: str, a: Any, *args: Any, **kw: Any) -> Any:
        return real(name, a, *args, xp=np, kernel=_launcher(lib, name, launches), **kw)

    return fixpoint


class _NotNumpy:
    """numpy under another name: takes `labels_from_maps_gpu`'s cupy branch."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


def _touching_nuclei(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and normalised distance maps of discs, some touching, at the border too."""
    rng = np.random.default_rng(seed)
    h, w = 96, 112
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), bool)
    for _ in range(12):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 11)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    dist = ndimage.distance_transform_edt(mask).astype(np.float32)
    dist /= max(float(dist.max()), 1.0)
    dist += rng.normal(0, 0.02, dist.shape).astype(np.float32)  # ridges and plateaus break up
    fg = np.where(mask, 0.95, 0.05).astype(np.float32)
    return fg, dist


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_cuda_kernels_give_the_numpy_steps_labels(
    kernels: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    fg, dist = _touching_nuclei(seed)
    kw = {
        "fg_threshold": 0.5,
        "seed_threshold": 0.2,
        "min_size_px": 12,
        "seed_h": 0.3,
        "smooth_px": 2.0,
        "min_score": 0.8,
    }  # fmt: skip  (the shipped card's settings)
    expected = post.labels_from_maps_gpu(fg, dist, xp=np, **kw)
    assert expected.max() >= 5  # enough nuclei, several of them touching

    launches: list[str] = []
    monkeypatch.setattr(post, "_cuda_fixpoint", _fixpoint_on_cpu(kernels, launches))
    monkeypatch.setattr(post, "_modules", lambda a, xp: (xp, ndimage))
    got = post.labels_from_maps_gpu(fg, dist, xp=_NotNumpy(), **kw)
    assert {"dilate_min", "flood"} <= set(launches)  # the kernels ran, not the numpy steps
    np.testing.assert_array_equal(got, expected)


def test_the_h_dome_kernel_matches_the_reconstruction_on_its_own(
    kernels: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, dist = _touching_nuclei(3)
    d = np.where(dist > 0.2, dist, np.float32(-1)).astype(np.float32)
    expected = post._h_dome(d, 0.3, np, ndimage)
    launches: list[str] = []
    monkeypatch.setattr(post, "_cuda_fixpoint", _fixpoint_on_cpu(kernels, launches))
    got = post._h_dome(d, 0.3, _NotNumpy(), ndimage)
    assert "dilate_min" in launches  # the kernel ran, not the numpy reconstruction
    np.testing.assert_array_equal(got, expected)
    assert (got >= 0.3).any()  # some h-maxima


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 2), (3, 17), (0, 5)])
def test_the_kernels_on_frames_one_pixel_wide_or_empty(
    kernels: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int]
) -> None:
    rng = np.random.default_rng(sum(shape))
    dist = rng.random(shape).astype(np.float32)
    fg = (rng.random(shape) > 0.3).astype(np.float32)
    kw = {"fg_threshold": 0.5, "seed_threshold": 0.2, "min_size_px": 0, "seed_h": 0.1}
    expected = post.labels_from_maps_gpu(fg, dist, xp=np, **kw)
    monkeypatch.setattr(post, "_cuda_fixpoint", _fixpoint_on_cpu(kernels, []))
    monkeypatch.setattr(post, "_modules", lambda a, xp: (xp, ndimage))
    got = post.labels_from_maps_gpu(fg, dist, xp=_NotNumpy(), **kw)
    np.testing.assert_array_equal(got, expected)
    assert got.shape == shape
