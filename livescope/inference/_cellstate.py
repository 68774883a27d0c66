"""Cell-state classification: every cell of a frame classified in one engine call.

`CellStateEngine.classify` takes a nuclear-signal frame (a real stain or a
virtual one) and its instance labels, cuts a square crop centred on each cell's
centroid (the frame normalised once, per the card but for the floor below; a
second channel holds the cell's own mask so neighbours are told apart) and runs
all crops as one batch.
Frames at another pixel size than the card's are zoomed to it (only the crops are sampled).
Class names come from the card's output channels; ``p_mitosis`` sums the
mitotic ones (prophase = early mitosis; metaphase and anaphase/telophase = late).
A frame without cells (or whose cells all vanish in the zoom) yields empty results.

The card's normalisation (the frame's 1st/99.8th percentiles at 0/1, as in
training) gets one floor here, for sparse frames: the value mapped to 1 is at
least the labelled pixels' `CELLS_HIGH_Q`-th percentile, ``high = max(frame's
99.8th, cells' 75th)``; the low one is the frame's. In a frame whose cells
(brighter than the background) cover a share c of the pixels, the frame's
99.8th percentile is about the cells' ``100 * (1 - 0.002 / c)``-th: below
c ~ 0.2 % it is background, and nuclei were stretched 2.5-3x past anything
seen in training (8 of 20 cells of a simulated field in a 2048² frame changed
class; with the floor none do, and a whole field's 62-80 cells at c ~ 0.4 % change
2 of 205, not 4). With the floor at the 75th the frame's percentile rules
wherever c is over ~0.8 %: every held-out simulated field and GOWT1 frame the
card is scored on gets the card's input to the bit. The card keeps its rule.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._backends import CROP_BATCH
from ._engine import Engine, EngineError, _float_problem
from ._postprocess import apply_normalisation

__all__ = ["CELLS_HIGH_Q", "MITOTIC_CLASSES", "CellStateEngine", "CellStates", "cell_crops"]

MITOTIC_CLASSES = ("prophase", "metaphase", "anaphase")
CELLS_HIGH_Q = 75.0
"""The percentile of a frame's labelled pixels that its normalisation's high value is at
least (sparse frames). At 76 the floor binds on none of the frames the card is scored on
(held-out simulator seeds 100-102, 20 views each, and GOWT1 01, 92 frames), at 78 on one
held-out field (cells 0.9 % of its pixels: its high value rose 0.5 %), at 90 on three; 75
leaves a margin."""
CELLS_SAMPLE = 262144
"""Labelled pixels the floor's percentile is taken over, at most (a strided subsample)."""
MAX_BATCH = CROP_BATCH[-1]
"""Cells per engine call (a TensorRT plan's optimisation profile covers 1..MAX_BATCH)."""


@dataclass(frozen=True)
class CellStates:
    """Per-cell class probabilities: row i is cell ``ids[i]``."""

    ids: NDArray[np.int64]
    probs: NDArray[np.float32]
    classes: tuple[str, ...]
    ms: float

    @property
    def p_mitosis(self) -> NDArray[np.float32]:
        """P(cell is in mitosis): the sum over the mitotic classes."""
        cols = [i for i, c in enumerate(self.classes) if c in MITOTIC_CLASSES]
        out: NDArray[np.float32] = self.probs[:, cols].sum(axis=1)
        return out

    @property
    def labels(self) -> list[str]:
        """The most likely class of each cell."""
        return [self.classes[i] for i in np.argmax(self.probs, axis=1)] if len(self.ids) else []

    def __len__(self) -> int:
        return int(self.ids.size)


def cell_crops(
    image: NDArray[np.float32], labels: NDArray[Any], size: int, *, scale: float = 1.0
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Ids and (N, 2, size, size) crops centred on each labelled cell's centroid.

    Channel 0 is ``image`` (zero outside the frame), channel 1 is 1 on the
    cell's own pixels. Centroids come from bincounts over the cells' pixels (no
    per-cell loop), and only the crops' pixels are read: memory follows the cells.
    With ``scale`` != 1, the crops are those of image (linear) and labels
    (nearest) zoomed by it, but only the crops are sampled (`_zoomed_crops`).
    """
    lab = np.asarray(labels)
    if np.shape(image) != lab.shape:  # (the crops are cut at the labels' flat offsets)
        raise EngineError(f"image {np.shape(image)} and labels {lab.shape} differ in shape")
    own = None  # compact ids -> the image's own
    if lab.size and int(lab.max()) >= 4 * lab.size:
        # ids far sparser than pixels: bincounts over compact ids (memory follows the cells)
        own, inverse = np.unique(lab, return_inverse=True)
        own = own.astype(np.int64, copy=False)  # (ids are int64, whatever the labels' type)
        lab = inverse.reshape(lab.shape).astype(np.int64)
        if own[0] != 0:  # no background pixel: compact id 0 must not be a cell
            own, lab = np.concatenate([np.zeros(1, np.int64), own]), lab + 1
    if scale != 1.0:
        ids, crops = _zoomed_crops(image, lab.astype(np.int64, copy=False), size, scale)
        return (own[ids] if own is not None else ids), crops
    # only the cells' pixels are counted and only the crops' pixels read: a frame-sized
    # int64 copy, two frame-sized weights and two padded copies of the frame cost 30 bytes
    # per pixel (1.6 GB and 2.5 s for two cells in an 8192² mosaic), whatever the cells
    h, w = lab.shape
    flat = lab.ravel()
    where = np.flatnonzero(flat)
    which = flat[where].astype(np.int64, copy=False)
    counts = np.bincount(which)
    ids = np.flatnonzero(counts)  # (no 0: background pixels are not counted)
    if ids.size == 0:
        return ids, np.zeros((0, 2, size, size), np.float32)
    # (the same sums, in the same order, as over every pixel: the same centroids)
    cy = np.bincount(which, weights=where // w)[ids] / counts[ids]
    cx = np.bincount(which, weights=where % w)[ids] / counts[ids]
    offs = np.arange(size) - size // 2
    rows = np.round(cy).astype(np.int64)[:, None] + offs
    cols = np.round(cx).astype(np.int64)[:, None] + offs
    in_r, in_c = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    rows, cols = np.clip(rows, 0, h - 1) * w, np.clip(cols, 0, w - 1)
    img = np.asarray(image).ravel()
    own_ids = ids.astype(lab.dtype)  # (compared in the labels' type: uint64 with int64 is float)
    out = np.empty((ids.size, 2, size, size), np.float32)
    step = 1024  # cells at a time: the index arrays stay small with 10,000 cells
    for s in range(0, ids.size, step):
        idx = rows[s : s + step, :, None] + cols[s : s + step, None, :]
        inside = in_r[s : s + step, :, None] & in_c[s : s + step, None, :]
        out[s : s + step, 0] = np.where(inside, img.take(idx), 0)  # zero outside the frame
        out[s : s + step, 1] = (flat.take(idx) == own_ids[s : s + step, None, None]) & inside
    return (own[ids] if own is not None else ids), out


def _zoom_axis(n: int, scale: float) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Map each pixel of an axis of ``n`` zoomed by ``scale`` to its source.

    As `scipy.ndimage.zoom` with ``grid_mode=True, mode="nearest"`` does: the
    source pixel it takes with order 0, and its source coordinate for order 1
    (the zoom of the indices themselves).
    """
    from scipy import ndimage

    index = np.arange(n, dtype=np.float64)
    nearest = ndimage.zoom(np.arange(n), scale, order=0, grid_mode=True, mode="nearest")
    coord = ndimage.zoom(index, scale, order=1, grid_mode=True, mode="nearest")
    return nearest.astype(np.int64), coord


def _zoomed_crops(
    image: NDArray[np.float32], lab: NDArray[np.int64], size: int, scale: float
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """`cell_crops` of image and labels zoomed by ``scale``, without zooming the frame.

    Zooming a whole frame to cut a few hundred crops from it took most of the
    classifier's time (60 of 64 ms for a 512² frame at 2x). Both zooms are
    separable, so each zoomed row and column is mapped to its source: the
    labels' zoomed areas and centroids come from bincounts weighted by how many
    zoomed rows and columns each source pixel becomes (integer sums: the same
    centroids as on the zoomed labels), and only the crops' pixels are sampled.
    """
    h, w = lab.shape
    src_r, coord_r = _zoom_axis(h, scale)
    src_c, coord_c = _zoom_axis(w, scale)
    hz, wz = src_r.size, src_c.size
    n_r = np.bincount(src_r, minlength=h).astype(np.float64)  # zoomed rows per source row
    n_c = np.bincount(src_c, minlength=w).astype(np.float64)
    sum_r = np.bincount(src_r, weights=np.arange(hz, dtype=np.float64), minlength=h)
    sum_c = np.bincount(src_c, weights=np.arange(wz, dtype=np.float64), minlength=w)
    flat = lab.ravel()
    area = np.bincount(flat, weights=np.outer(n_r, n_c).ravel())
    ids = np.flatnonzero(area)
    ids = ids[ids > 0]
    if ids.size == 0:
        return ids, np.zeros((0, 2, size, size), np.float32)
    cy = np.bincount(flat, weights=np.outer(sum_r, n_c).ravel())[ids] / area[ids]
    cx = np.bincount(flat, weights=np.outer(n_r, sum_c).ravel())[ids] / area[ids]
    offs = np.arange(size) - size // 2
    rows = np.round(cy).astype(np.int64)[:, None] + offs  # zoomed coordinates
    cols = np.round(cx).astype(np.int64)[:, None] + offs
    in_r, in_c = (rows >= 0) & (rows < hz), (cols >= 0) & (cols < wz)
    rows, cols = np.clip(rows, 0, hz - 1), np.clip(cols, 0, wz - 1)
    inside = in_r[:, :, None] & in_c[:, None, :]
    out = np.empty((ids.size, 2, size, size), np.float32)
    # bilinear, as order 1 (coordinates lie within the frame: "nearest" clamped them)
    y, x = coord_r[rows], coord_c[cols]
    r0, c0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    fy, fx = (y - r0).astype(np.float32)[:, :, None], (x - c0).astype(np.float32)[:, None, :]
    r0, r1 = (r0 * w)[:, :, None], (np.minimum(r0 + 1, h - 1) * w)[:, :, None]  # flat
    c0, c1 = c0[:, None, :], np.minimum(c0 + 1, w - 1)[:, None, :]
    img = np.asarray(image, np.float32).ravel()
    p00, p01 = img.take(r0 + c0), img.take(r0 + c1)
    top = p00 + fx * (p01 - p00)
    p10, p11 = img.take(r1 + c0), img.take(r1 + c1)
    top += fy * (p10 + fx * (p11 - p10) - top)
    out[:, 0] = np.where(inside, top, np.float32(0))
    flat_src = (src_r[rows] * w)[:, :, None] + src_c[cols][:, None, :]
    out[:, 1] = (flat.take(flat_src) == ids[:, None, None]) & inside
    return ids, out


class CellStateEngine(Engine):
    """An engine that classifies every labelled cell of a frame."""

    def __init__(
        self, name_or_path: str | Path, *, max_batch: int = MAX_BATCH, **kwargs: Any
    ) -> None:
        """Load a cell-state engine (``task: classification`` with ``crop_px`` in its card)."""
        super().__init__(name_or_path, **kwargs)
        with self._closed_if_refused():
            if self.card.task != "classification" or self.card.crop_px is None:
                raise EngineError(
                    f"engine {self.name} is a {self.card.task} engine without crop_px, "
                    "not a cell classifier"
                )
            if self.card.input.channels != 2:
                raise EngineError(
                    f"engine {self.name}: a cell classifier takes 2 channels (signal, mask), the "
                    f"card says {self.card.input.channels}"
                )
            if not 1 <= max_batch <= MAX_BATCH:
                raise EngineError(
                    f"engine {self.name}: max_batch must be 1..{MAX_BATCH} cells per call (a "
                    f"TensorRT plan's batch range), got {max_batch}"
                )
            self.classes = tuple(self.card.outputs[0].channels)
            self.crop_px = int(self.card.crop_px)
            self.max_batch = max_batch

    def warm_up_batches(self, max_cells: int = 256) -> None:
        """Run each batch size the classifier pads to, up to ``max_cells`` (torch CUDA only).

        Each size is a CUDA graph of its own, captured on its first call (tens
        of ms): a worker does it before the run, not on its first fields.
        """
        if getattr(self.session, "device", None) != "cuda":
            return
        c = self.card.input.channels
        size = 16
        while size <= min(max_cells, self.max_batch):
            self.run(np.zeros((size, c, self.crop_px, self.crop_px), np.float32))
            size *= 2

    def _run_bucketed(self, crops: NDArray[np.float32]) -> NDArray[np.float32]:
        """Run crops; on torch CUDA pad the batch to a power of two (one CUDA graph per size)."""
        n = len(crops)
        if getattr(self.session, "device", None) != "cuda":
            return self.run(crops)
        size = min(max(16, 1 << (n - 1).bit_length()), self.max_batch)
        padded = np.zeros((size, *crops.shape[1:]), np.float32)
        padded[:n] = crops
        return self.run(padded)[:n]

    def normalised(self, frame: NDArray[Any], labels: NDArray[Any]) -> NDArray[np.float32]:
        """``frame`` as the classifier's input, ``labels`` its cells (the same shape).

        The card's normalisation, with its high value at least the labelled pixels'
        `CELLS_HIGH_Q`-th percentile (a sparse frame's 99.8th percentile is background;
        see the module's docstring). A frame without labelled pixels, or whose card
        fixes its scale, is normalised as the card says.
        """
        cells = np.asarray(frame)[np.asarray(labels) > 0]
        if self.card.normalisation.kind != "percentile" or cells.size == 0:
            return self.normalise(frame)
        step = -(-cells.size // CELLS_SAMPLE)  # (ceil: at most CELLS_SAMPLE pixels)
        floor = float(np.percentile(cells[::step], CELLS_HIGH_Q))
        return apply_normalisation(frame, self.card.normalisation, high_at_least=floor)

    def classify(
        self, frame: NDArray[Any], labels: NDArray[Any], *, pixel_size_um: float | None = None
    ) -> CellStates:
        """Class probabilities of every cell in ``labels`` (same 2-D shape as ``frame``).

        With ``pixel_size_um`` (the frame's), frame and labels are first zoomed
        to the card's pixel size when they differ by more than 10%; a cell
        that vanishes in a zoom out (a few pixels, between the zoomed ones) has
        no row, as zooming the whole label image would lose it.

        Raises
        ------
        EngineError
            if frame or labels are unfit, or the pixel size is not positive or
            more than 8x off the card's (whether or not the frame holds cells).

        """
        f = np.asarray(frame)
        if not isinstance(frame, np.ndarray) or f.ndim != 2:
            raise EngineError(
                f"engine {self.name}: frame must be a 2-D array, got "
                f"{getattr(frame, 'shape', type(frame).__name__)}"
            )
        lab = np.asarray(labels)
        if lab.shape != f.shape or lab.dtype.kind not in "iu":
            raise EngineError(
                f"engine {self.name}: labels must be an integer array of the frame's shape "
                f"{f.shape}, got {lab.dtype} {lab.shape}"
            )
        if f.dtype.kind not in "uif":
            raise EngineError(f"engine {self.name}: frame dtype {f.dtype} is not camera counts")
        if lab.size and int(lab.min()) < 0:
            raise EngineError(f"engine {self.name}: labels must not be negative")
        if lab.size and int(lab.max()) > np.iinfo(np.int64).max:  # (uint64 ids; cells' are int64)
            raise EngineError(
                f"engine {self.name}: label ids reach {int(lab.max())}, beyond int64; number "
                "the cells from 1 (e.g. skimage.segmentation.relabel_sequential)"
            )
        if problem := _float_problem(f):
            raise EngineError(f"engine {self.name}: frame {problem}")
        self._session()  # (a closed engine refuses even a frame without cells)
        scale = self.pixel_scale(pixel_size_um)  # (and so does a wrong pixel size)
        t0 = time.perf_counter()
        empty = np.zeros((0, len(self.classes)), np.float32)
        if not lab.any():
            return CellStates(np.zeros(0, np.int64), empty, self.classes, 0.0)
        x = self.normalised(f, lab)
        ids, crops = cell_crops(x, lab, self.crop_px, scale=scale)
        if ids.size == 0:  # every cell lost in the zoom out: nothing to run
            ms = 1000 * (time.perf_counter() - t0)
            return CellStates(ids.astype(np.int64), empty, self.classes, ms)
        step = self.max_batch
        probs = np.concatenate(
            [self._run_bucketed(crops[i : i + step]) for i in range(0, len(crops), step)]
        ).astype(np.float32, copy=False)
        if probs.shape != (len(ids), len(self.classes)):
            raise EngineError(
                f"engine {self.name}: model returned {probs.shape}, expected "
                f"({len(ids)}, {len(self.classes)}) (one row per cell, one column per class)"
            )
        return CellStates(ids, probs, self.classes, 1000 * (time.perf_counter() - t0))
