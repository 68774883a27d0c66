"""A frame wider than fp32 (float64, 64-bit counts) with a large offset keeps its signal."""

from __future__ import annotations

import numpy as np
import pytest

from livescope.inference._postprocess import normalize_percentile


@pytest.mark.parametrize(
    ("dtype", "offset"),
    [(np.int64, 2**40), (np.uint64, 2**40), (np.float64, 1e9), (np.int32, 2**30)],
)
def test_an_offset_the_cast_to_fp32_would_round_away_leaves_the_scaling_unchanged(dtype, offset):
    rng = np.random.default_rng(0)
    counts = rng.integers(100, 4000, size=(64, 64)).astype(np.uint16)
    expected = normalize_percentile(counts)
    got = normalize_percentile(counts.astype(dtype) + dtype(offset))
    assert got.dtype == np.float32
    # (fp32 holds 24 bits: 2**40 + a count rounds to a multiple of 2**17, which flattened
    # the frame to a few levels before the offset was taken off in float64)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_a_flat_float64_frame_stays_flat() -> None:
    # (rounding-level noise on a blank frame at 1000: as a float32 frame, zeros; taking the
    # minimum off first stretched it to a range of ~1.5, which a segmenter reads as nuclei)
    flat = 1000.0 + np.random.default_rng(1).normal(0.0, 1e-10, (64, 64))
    assert float(np.ptp(normalize_percentile(flat))) < 1e-2


def test_one_infinite_pixel_of_a_float64_frame_spoils_that_pixel_only() -> None:
    frame = np.random.default_rng(2).integers(100, 4000, (64, 64)).astype(np.float64)
    frame[3, 3] = -np.inf
    assert int(np.count_nonzero(~np.isfinite(normalize_percentile(frame)))) == 1
