"""What tracking measures of a label image: each object's label, centroid, area, intensity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import LivescopeError

__all__ = ["ObjectTable", "measure_objects"]


@dataclass(frozen=True)
class ObjectTable:
    """Per-object measurements of one label image (rows follow ``labels``)."""

    labels: NDArray[np.int64]
    centroids: NDArray[np.float64]  # (n, 2) row, col
    areas: NDArray[np.float64]
    intensities: NDArray[np.float64] | None = None
    on_border: NDArray[np.bool_] | None = None  # touches the edge of the frame
    shape: tuple[int, int] = (0, 0)  # of the frame

    def __len__(self) -> int:
        return int(self.labels.size)


def measure_objects(
    labels: NDArray[np.integer[Any]], image: NDArray[Any] | None = None
) -> ObjectTable:
    """Label, centroid and area (and mean intensity, given ``image``) of each object.

    Vectorised (one pass of bincount over the pixels), whatever the number of objects.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise LivescopeError(f"tracking needs 2-D label images, got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise LivescopeError(f"tracking needs integer label images, got dtype {lab.dtype}")
    if lab.size and int(lab.min()) < 0:
        raise LivescopeError("label images must not hold negative labels")
    flat = lab.ravel()
    idx = np.flatnonzero(flat != 0)  # foreground only (a bool mask first: ~4x faster)
    ids = flat[idx].astype(np.int64, copy=False)
    lut = None  # compact ids -> the image's own
    if ids.size and int(ids.max()) >= 4 * flat.size:
        # ids far sparser than pixels (e.g. uint32 hashes): count over compact ids, so
        # memory follows the number of objects, not the largest id
        uniq, inverse = np.unique(ids, return_inverse=True)
        ids = inverse.astype(np.int64) + 1
        lut = np.concatenate([np.zeros(1, np.int64), uniq.astype(np.int64)])
    n = int(ids.max()) + 1 if ids.size else 1
    area = np.bincount(ids, minlength=n).astype(np.float64)
    rows = idx // lab.shape[1]
    cols = idx - rows * lab.shape[1]  # ~4x faster than np.divmod
    sr = np.bincount(ids, weights=rows, minlength=n)
    sc = np.bincount(ids, weights=cols, minlength=n)
    present = np.flatnonzero(area > 0)
    present = present[present != 0]
    a = area[present]
    cent = (
        np.stack([sr[present] / a, sc[present] / a], axis=1) if present.size else np.zeros((0, 2))
    )
    own = lut[present] if lut is not None else present  # the image's own ids
    edge = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]).astype(np.int64)
    border = np.isin(own, edge)
    inten = None
    if image is not None:
        img = np.asarray(image)
        if img.shape != lab.shape:
            raise LivescopeError(f"image shape {img.shape} differs from labels {lab.shape}")
        si = np.bincount(ids, weights=img.ravel()[idx].astype(np.float64), minlength=n)
        inten = si[present] / a
    return ObjectTable(own.astype(np.int64), cent, a, inten, border, (lab.shape[0], lab.shape[1]))
