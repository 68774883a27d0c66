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
