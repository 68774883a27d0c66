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

CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler to build the kernels with")

HARNESS = """
#include <algorithm>
#include <cmath>
using std::max;
using std::min;
struct Index {{ int x; }};
static Index blockIdx, blockDim, threadIdx;
#define __global__
{kernels}
extern "C" void run_dilate_min(const float* a, float* out, int* changed, int h, int w,
                               const float* d) {{
    blockDim.x = 1; threadIdx.x = 0;
    for (int i = 0; i < h * w; ++i) {{ blockIdx.x = i; dilate_min(a, out, changed, h, w, d); }}
}}
extern "C" void run_flood(const int* a, int* out, int* changed, int h, int w,
                          const bool* mask, const float* dist, float t) {{
    blockDim.x = 1; threadIdx.x = 0;
    for (int i = 0; i < h * w; ++i) {{
        blockIdx.x = i; flood(a, out, changed, h, w, mask, dist, t);
    }}
}}
"""


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    folder = tmp_path_factory.mktemp("kernels")
    src, lib = folder / "kernels.cpp", folder / "kernels.so"
    src.write_text(HARNESS.format(kernels=post._KERNELS), encoding="utf-8")
    assert CXX is not None
    subprocess.run([CXX, "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return ctypes.CDLL(str(lib))


def _ptr(a: np.ndarray) -> ctypes.c_void_p:
    return a.ctypes.data_as(ctypes.c_void_p)


def _fixpoint_on_cpu(lib: ctypes.CDLL) -> Any:
    """`_cuda_fixpoint` with the compiled kernels and numpy buffers (same loop, same checks)."""

    def fixpoint(name: str, a: Any, *args: Any, check_every: int = 8) -> Any:
        a = np.array(a, order="C")
        out, changed = np.empty_like(a), np.zeros(1, np.int32)
        h, w = a.shape
        extra = [np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x for x in args]
        fn = getattr(lib, f"run_{name}")
        steps = 0
        while True:
            changed[0] = 0
            for _ in range(check_every):
                arrays = [_ptr(a), _ptr(out), _ptr(changed), ctypes.c_int(h), ctypes.c_int(w)]
                fn(*arrays, *[_ptr(x) if isinstance(x, np.ndarray) else ctypes.c_float(x)
                              for x in extra])  # fmt: skip
                a, out = out, a
                steps += 1
            if changed[0] == 0:
                fixpoint.steps += steps  # type: ignore[attr-defined]
                return a

    fixpoint.steps = 0  # type: ignore[attr-defined]
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

    fixpoint = _fixpoint_on_cpu(kernels)
    monkeypatch.setattr(post, "_cuda_fixpoint", fixpoint)
    monkeypatch.setattr(post, "_modules", lambda a, xp: (xp, ndimage))
    got = post.labels_from_maps_gpu(fg, dist, xp=_NotNumpy(), **kw)
    assert fixpoint.steps > 0  # the kernels ran (not the numpy steps)
    np.testing.assert_array_equal(got, expected)


def test_the_h_dome_kernel_matches_the_reconstruction_on_its_own(
    kernels: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, dist = _touching_nuclei(3)
    d = np.where(dist > 0.2, dist, np.float32(-1)).astype(np.float32)
    expected = post._h_dome(d, 0.3, np, ndimage)
    monkeypatch.setattr(post, "_cuda_fixpoint", _fixpoint_on_cpu(kernels))
    got = post._h_dome(d, 0.3, _NotNumpy(), ndimage)
    np.testing.assert_array_equal(got, expected)
    assert (got >= 0.3).any()  # some h-maxima
