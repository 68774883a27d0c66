"""Turn an engine's foreground and distance maps into instance labels.

Seeds are the connected regions where the normalised distance exceeds
``seed_threshold`` inside the foreground; a watershed on the distance grows them
to the foreground mask. All steps are vectorised (scipy / scikit-image); with
cupy and cucim present the same steps can run on the GPU (`labels_from_maps_gpu`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["labels_from_maps", "normalize_percentile"]


def normalize_percentile(
    image: NDArray[Any], low: float = 1.0, high: float = 99.8, eps: float = 1e-6
) -> NDArray[np.float32]:
    """Scale camera counts so the ``low``/``high`` percentiles map to 0/1, in fp32.

    Always computed in fp32 (never fp16): large uint16 counts lose precision in fp16.
    Percentiles come from a strided subsample of large frames (same result to
    within a count, much faster).
    """
    x = np.asarray(image, dtype=np.float32)
    step = max(1, int(np.sqrt(x.size / 262144)))
    sample = x[::step, ::step] if x.ndim == 2 else x
    lo, hi = np.percentile(sample, [low, high])
    scale = np.float32(1.0 / max(float(hi - lo), eps))
    out: NDArray[np.float32] = x - np.float32(lo)
    out *= scale
    return out


def labels_from_maps(
    fg: NDArray[np.float32],
    dist: NDArray[np.float32],
    *,
    fg_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size_px: int = 12,
) -> NDArray[np.int32]:
    """Instance labels (0 = background) from foreground and distance maps (same shape)."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    mask = fg > fg_threshold
    seeds, n = ndimage.label((dist > seed_threshold) & mask)
    if n == 0:
        return np.zeros(fg.shape, np.int32)
    labels: NDArray[np.int32] = watershed(-dist, seeds, mask=mask)
    if min_size_px > 0:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size_px
        small[0] = False
        if small.any():
            labels[small[labels]] = 0
    return labels.astype(np.int32, copy=False)
