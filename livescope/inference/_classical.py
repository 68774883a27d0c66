"""The classical baseline: Otsu threshold + distance-transform watershed (scikit-image)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._postprocess import normalize_percentile

__all__ = ["classical_segmentation"]


def classical_segmentation(
    frame: NDArray[Any], *, smooth_px: float = 1.0, min_distance_px: int = 4, min_size_px: int = 12
) -> NDArray[np.int32]:
    """Segment nuclei without learning, as a microscopist's script would."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    x = ndimage.gaussian_filter(normalize_percentile(frame), smooth_px)
    mask = x > threshold_otsu(x)
    mask = ndimage.binary_opening(mask, iterations=1)
    dist = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=min_distance_px, labels=ndimage.label(mask)[0])
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels: NDArray[np.int32] = watershed(-dist, markers, mask=mask)
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size_px
    small[0] = False
    labels[small[labels]] = 0
    return labels.astype(np.int32)
