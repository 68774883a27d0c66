"""Turn an engine's foreground and distance maps into instance labels.

Seeds are the connected regions where the normalised distance exceeds
``seed_threshold`` inside the foreground, or, with ``seed_h``, the distance
map's h-maxima (peaks at least ``seed_h`` above the saddle to any higher peak:
two touching nuclei whose distance ridges join above the threshold still get
one seed each); a watershed on the distance grows them to the foreground mask.
All steps are vectorised (scipy / scikit-image).

`labels_from_votes` serves engines that also predict each pixel's offset to
its nucleus' centre: every foreground pixel votes for a centre, the peaks of
the vote density are the nuclei, and each pixel joins the peak nearest to
where it voted. Touching nuclei whose distance maps merge into one dome still
draw their votes to two places. The same code runs with numpy and cupy.

`labels_from_maps_gpu` is the GPU path (cupy): the same seeds, grown by flooding
the distance map in a few levels from the top down, with a geodesic dilation
inside each level (an approximation of the watershed that needs only
element-wise operations and 3x3 filters). It is written against an array
module, so the same steps run with numpy here and with cupy on a GPU, where
the two iterated 3x3 steps (the h-maxima's reconstruction and the flood) are
each one small CUDA kernel per iteration, checked for convergence every 8
iterations (as separate cupy filters and element-wise operations they cost
about 50 ms per frame whatever its size, most of it launches and syncs).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from livescope.schema import Normalisation, PostProcess

__all__ = [
    "apply_gamma",
    "as_working_float",
    "drop_weak_objects",
    "instance_labels",
    "labels_from_maps",
    "labels_from_maps_gpu",
    "labels_from_votes",
    "normalize_percentile",
]


def as_working_float(image: NDArray[Any]) -> NDArray[Any]:
    """Return ``image`` as float32, or float64 where float32 cannot hold it exactly.

    float64, and 32/64-bit integers, are kept in float64 (cast to float32 first,
    a large offset, int64 counts from 2**40, swallowed the signal); every other
    frame is float32 (float64 for the wide ones only: ~2 ms more at 1024²).
    """
    a = np.asarray(image)
    wide = a.dtype.itemsize > 4 or (a.dtype.kind in "iu" and a.dtype.itemsize == 4)
    return a.astype(np.float64) if wide else np.asarray(a, dtype=np.float32)


def normalize_percentile(
    image: NDArray[Any],
    low: float = 1.0,
    high: float = 99.8,
    eps: float = 1e-6,
    *,
    high_at_least: float | None = None,
) -> NDArray[np.float32]:
    """Scale camera counts so the ``low``/``high`` percentiles map to 0/1, in fp32.

    Always computed in fp32 (never fp16): large uint16 counts lose precision in fp16.
    Percentiles come from a strided subsample of large frames (same result to
    within a count, much faster). A frame whose two percentiles are equal (flat
    but for a few pixels: one nucleus on a background-subtracted frame) is scaled
    from its minimum to its maximum instead, not stretched by ``1 / eps``; a
    constant frame becomes zeros. Two values are equal when they are within
    ``eps`` and within float32's resolution at their magnitude: a float frame in
    physical units whose whole range is under ``eps`` is scaled by that range (it
    was divided by ``eps``, and its nuclei vanished). A frame wider than fp32
    holds exactly (float64, 32/64-bit integers) is scaled in float64 and then
    cast: cast first, a large offset (int64 counts from 2**40) swallowed its
    signal. ``high_at_least``: the value mapped to 1 is at least this one (the
    cell-state engine's floor for sparse frames, `CellStateEngine.classify`);
    where the ``high`` percentile is already as high, the result is unchanged
    to the bit.
    """
    x = as_working_float(image)
    step = max(1, int(np.sqrt(x.size / 262144)))
    sample = x[::step, ::step] if x.ndim == 2 else x
    lo, hi = np.percentile(sample, [low, high])
    if high_at_least is not None and high_at_least > hi:  # (not where equal: bit for bit)
        hi = high_at_least
    if float(hi - lo) <= _flat_within(float(lo), float(hi), eps):
        lo, hi = float(x.min()), float(x.max())
    span = float(hi - lo)
    kind = x.dtype.type
    out = x - kind(lo)
    out *= kind(1.0 / (span if span > _flat_within(float(lo), float(hi), eps) else eps))
    result: NDArray[np.float32] = out.astype(np.float32, copy=False)  # (float32: no copy)
    return result


def _flat_within(lo: float, hi: float, eps: float) -> float:
    """Return the largest range of ``lo`` to ``hi`` taken as none (the two as equal).

    ``eps``, or less for values so small that float32 resolves finer ranges (a
    float frame in physical units): a few units in their last place, and never a
    range whose inverse overflows float32.
    """
    f32 = np.finfo(np.float32)
    resolution = max(4 * float(f32.eps) * max(abs(lo), abs(hi)), float(f32.tiny))
    return min(eps, resolution)


def apply_gamma(x: NDArray[np.float32], gamma: float) -> NDArray[np.float32]:
    """``max(x, 0) ** gamma`` in fp32 (a card's normalisation ``gamma``; 0.5 is the square root)."""
    out: NDArray[np.float32] = np.maximum(x, np.float32(0.0))
    if gamma == 0.5:
        np.sqrt(out, out=out)
    else:
        np.power(out, np.float32(gamma), out=out)
    return out


def apply_normalisation(
    frame: NDArray[Any], n: Normalisation, *, high_at_least: float | None = None
) -> NDArray[np.float32]:
    """``frame`` in fp32 after a card's normalisation ``n`` (percentiles or fixed, then gamma).

    ``high_at_least``: a floor on the value a percentile normalisation maps to 1
    (`normalize_percentile`); a fixed one ignores it.
    """
    out: NDArray[np.float32]
    if n.kind == "percentile":
        out = normalize_percentile(frame, n.low, n.high, high_at_least=high_at_least)
    else:
        out = np.asarray(frame, dtype=np.float32) - np.float32(n.offset)
        out *= np.float32(1.0 / n.scale)
    if n.gamma != 1.0:
        out = apply_gamma(out, n.gamma)
    return out


def instance_labels(maps: Any, postprocess: PostProcess, scale: float = 1.0) -> Any:
    """Instance labels from a segmentation engine's maps (C, H, W), as its card says.

    ``scale``: the zoom the frame had when the model ran (sizes in the card are
    the model's). numpy maps are labelled on the CPU (watershed or votes);
    cupy maps on the GPU, and the labels stay there.
    """
    kw = postprocess.label_kwargs(scale)
    if postprocess.kind == "centre_votes":
        return labels_from_votes(maps[0], maps[2:4], **kw)
    xp = _array_module(maps)
    dist = maps[1]
    if postprocess.neighbour_weight > 0:  # channel 2: closeness to a touching nucleus
        dist = xp.clip(dist - xp.float32(postprocess.neighbour_weight) * maps[2], 0.0, 1.0)
    if xp is np:
        return labels_from_maps(maps[0], dist, **kw)
    return labels_from_maps_gpu(maps[0], dist, **kw)


def labels_from_maps(
    fg: NDArray[np.float32],
    dist: NDArray[np.float32],
    *,
    fg_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size_px: int = 12,
    seed_h: float | None = None,
    smooth_px: float = 0.0,
    min_score: float = 0.0,
) -> NDArray[np.int32]:
    """Instance labels (0 = background, then 1..N) from foreground and distance maps.

    ``seed_h``: seed at the distance map's h-maxima of that height (above
    ``seed_threshold``) instead of at every region above ``seed_threshold``;
    ``smooth_px``: Gaussian sigma applied to the distance map first. Objects
    under ``min_size_px`` pixels, or whose mean foreground probability is
    under ``min_score``, are dropped. NaN and -inf distances count as 0, +inf
    as the map's largest finite distance.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    mask = fg > fg_threshold
    dist = _finite_distance(np.asarray(dist, np.float32), np)
    if smooth_px > 0:
        dist = ndimage.gaussian_filter(dist, smooth_px)
    seed_mask = (dist > seed_threshold) & mask
    if seed_h is not None:
        seed_mask = _h_maxima_cpu(np.asarray(dist, np.float32), seed_mask, seed_h)
    # seeds 8-connected, as the h-maxima are: 4-connected, the diagonal ridge of a nucleus
    # lying at 45 degrees was one seed per pixel, the nucleus cut into strips
    seeds, n = ndimage.label(seed_mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(fg.shape, np.int32)
    labels: NDArray[np.int32] = watershed(-dist, seeds, mask=mask)
    labels = labels.astype(np.int32, copy=False)
    return drop_weak_objects(labels, fg, min_size_px, min_score, np)  # type: ignore[no-any-return]


def labels_from_maps_gpu(
    fg: Any,
    dist: Any,
    *,
    fg_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size_px: int = 12,
    seed_h: float | None = None,
    smooth_px: float = 0.0,
    min_score: float = 0.0,
    levels: int = 6,
    xp: Any = None,
) -> Any:
    """Instance labels like `labels_from_maps`, computed where the maps live.

    ``fg`` and ``dist`` may be cupy arrays (labels stay on the GPU) or numpy
    arrays; ``xp`` forces the array module (``numpy`` or ``cupy``). Seeds are
    identical to `labels_from_maps`; borders between touching nuclei can differ
    from the CPU watershed by a pixel or two.
    """
    xp, ndi = _modules(fg, xp)
    fg = xp.asarray(fg, dtype=xp.float32)
    dist = _finite_distance(xp.asarray(dist, dtype=xp.float32), xp)
    mask = fg > fg_threshold
    if smooth_px > 0:
        dist = ndi.gaussian_filter(dist, smooth_px)
    seed_mask = (dist > seed_threshold) & mask
    if seed_h is not None:
        seed_mask &= _h_dome(xp.where(seed_mask, dist, -1), seed_h, xp, ndi) >= seed_h
    labels, n = ndi.label(seed_mask, structure=xp.ones((3, 3), bool))  # as labels_from_maps
    if int(n) == 0:
        return xp.zeros(fg.shape, xp.int32)
    labels = labels.astype(xp.int32, copy=False)
    # flood from the seeds downwards: level k admits pixels with dist above its threshold
    steps = np.linspace(seed_threshold, 0.0, levels + 1)[1:].tolist()
    steps[-1] = -np.inf
    for t in steps:
        if xp is not np:  # the kernel's types: int32 labels, bool mask, float32 distances
            labels = _cuda_fixpoint("flood", labels.astype(xp.int32, copy=False),
                                    mask.astype(bool, copy=False),
                                    dist.astype(xp.float32, copy=False), np.float32(t))  # fmt: skip
            continue
        allowed = mask & (dist > t) & (labels == 0)
        while True:
            grown = ndi.grey_dilation(labels, size=(3, 3))
            new = allowed & (grown > 0)
            if not bool(new.any()):
                break
            labels = xp.where(new, grown, labels)
            allowed &= ~new
    return drop_weak_objects(labels, fg, min_size_px, min_score, xp)


def labels_from_votes(
    fg: Any,
    offsets: Any,
    *,
    fg_threshold: float = 0.5,
    min_votes: float = 2.0,
    vote_sigma: float = 0.2,
    peak_radius: float = 0.25,
    min_size_px: int = 12,
    min_score: float = 0.0,
    reach: float = 0.5,
    xp: Any = None,
) -> Any:
    """Instance labels (0 = background, then 1..N) from foreground and centre offsets.

    ``offsets`` is (2, H, W): the predicted vector (dy, dx), in pixels, from
    each pixel to its nucleus' centre. Each pixel with ``fg > fg_threshold``
    casts one vote where its vector points. The votes, smoothed by a Gaussian,
    make a density (votes per pixel) whose local maxima of at least
    ``min_votes`` are the centres; every voting pixel takes the label of the
    centre nearest to its vote, if that centre is within ``reach`` (else the
    pixel stays background: it voted where no nucleus was found). Objects
    under ``min_size_px`` pixels, or whose mean foreground probability is
    under ``min_score``, are dropped. A pixel whose offset is NaN or infinite
    casts no vote and stays background.

    The Gaussian's sigma (``vote_sigma``), the half-width of the square within
    which a centre must be the densest point (``peak_radius``, at least 1 px)
    and ``reach`` are in units of the frame's typical nucleus radius, taken
    from the offsets themselves (sqrt 2 times the median length of the
    foreground's vectors: a disc's pixels lie a median R/sqrt 2 from its
    centre). A nucleus' votes spread in proportion to its size, so one setting
    serves frames of nuclei of 4 and of 20 px radius, and the density at a
    centre does not depend on the size either. The radius is one per frame:
    in a frame of large nuclei, one far smaller (a micronucleus, a cell in
    anaphase) spreads its votes over the large nuclei's sigma, and under
    ``min_votes`` it is lost.

    Runs where the maps live: numpy arrays give numpy labels, cupy arrays cupy
    labels (``xp`` forces one).
    """
    xp, ndi = _modules(fg, xp)
    fg = xp.asarray(fg, dtype=xp.float32)
    h, w = fg.shape
    off = xp.asarray(offsets, dtype=xp.float32)
    # a pixel whose vector is NaN or infinite (a model's fp16 overflow) points nowhere: it
    # casts no vote and stays background (one NaN made the median radius NaN: a crash)
    ys, xs = xp.nonzero((fg > fg_threshold) & xp.isfinite(off[0]) & xp.isfinite(off[1]))
    if ys.size == 0:
        return xp.zeros((h, w), xp.int32)
    dy, dx = off[0][ys, xs], off[1][ys, xs]
    radius = max(float(np.sqrt(2.0) * float(xp.median(xp.hypot(dy, dx)))), 1.0)
    vy = xp.clip(xp.rint(ys + dy), 0, h - 1).astype(xp.int64)
    vx = xp.clip(xp.rint(xs + dx), 0, w - 1).astype(xp.int64)
    votes = xp.bincount(vy * w + vx, minlength=h * w).astype(xp.float32).reshape(h, w)
    sigma = vote_sigma * radius
    if sigma >= 0.3:
        votes = ndi.gaussian_filter(votes, sigma, mode="constant")
    size = 2 * max(round(peak_radius * radius), 1) + 1
    peaks = (votes >= ndi.maximum_filter(votes, size=size, mode="constant")) & (votes >= min_votes)
    centres, n = ndi.label(peaks, structure=xp.ones((3, 3), bool))
    if int(n) == 0:
        return xp.zeros((h, w), xp.int32)
    centres = centres.astype(xp.int32, copy=False)
    # the nearest centre to every pixel, read at each pixel's vote; a vote farther than
    # ``reach`` radii from every centre found none, and its pixel stays background
    iy, ix = ndi.distance_transform_edt(centres == 0, return_distances=False, return_indices=True)
    cy, cx = iy[vy, vx], ix[vy, vx]
    near = (vy - cy) ** 2 + (vx - cx) ** 2 <= (reach * radius) ** 2
    labels = xp.zeros((h, w), xp.int32)
    labels[ys[near], xs[near]] = centres[cy[near], cx[near]]
    return drop_weak_objects(labels, fg, min_size_px, min_score, xp)


def drop_weak_objects(labels: Any, fg: Any, min_size_px: int, min_score: float, xp: Any) -> Any:
    """Objects under ``min_size_px`` pixels or ``min_score`` mean foreground removed.

    The rest are numbered 1..N again, so ids never skip a number. ``xp`` is the
    array module of ``labels`` and ``fg`` (numpy, or cupy on the GPU).
    """
    flat = labels.ravel()
    sizes = xp.bincount(flat, minlength=1)  # (an empty frame has no id 0 to count)
    keep = sizes >= max(min_size_px, 1)
    if min_score > 0:
        total = xp.bincount(flat, weights=xp.asarray(fg, dtype=xp.float64).ravel(), minlength=1)
        keep &= total >= min_score * sizes
    keep[0] = False
    if bool(keep[1:].all()):
        return labels
    lut = xp.zeros(sizes.size, xp.int32)
    lut[keep] = xp.arange(1, int(keep.sum()) + 1, dtype=xp.int32)
    return lut[labels]


def _finite_distance(dist: Any, xp: Any) -> Any:
    """``dist`` with NaN and -inf as 0 and +inf as its largest finite value (a copy if any).

    A model's fp16 overflow can leave such pixels: smoothed, one NaN blanked a
    whole nucleus' seed, and a +inf peak left its part with no h-maximum (the
    reconstruction's inf - inf is NaN). Finite maps are returned as they are.
    """
    finite = xp.isfinite(dist)
    if bool(finite.all()):
        return dist
    top = float(dist[finite].max()) if bool(finite.any()) else 0.0
    return xp.nan_to_num(dist, nan=0.0, posinf=top, neginf=0.0)


def _eps(d: Any, xp: Any) -> Any:
    """Float rounding allowance (as scikit-image's h_maxima): keeps d - h - eps below d - h."""
    return 2 * np.finfo(np.float32).resolution * xp.abs(d)


def _h_maxima_cpu(d: NDArray[np.float32], region: NDArray[np.bool_], h: float) -> Any:
    """Find the h-maxima of ``d`` within each connected part of ``region`` (the seeds).

    The same seeds as `_h_dome` on ``where(region, d, -1)``, computed part by
    part: a part with one peak seeds at its maximum; only parts with several
    peaks need the (scikit-image) reconstruction, on their own bounding box.
    """
    from scipy import ndimage
    from skimage.morphology import reconstruction

    eight = np.ones((3, 3), bool)  # as the reconstruction's 3x3 steps
    parts, n = ndimage.label(region, structure=eight)
    if n == 0:
        return region
    img = np.where(region, d, np.float32(-1))
    peaks = region & (img >= ndimage.maximum_filter(img, size=3))
    peak_labels, k = ndimage.label(peaks, structure=eight)
    part_of_peak = np.zeros(k + 1, np.int64)
    part_of_peak[peak_labels[peaks]] = parts[peaks]
    n_peaks = np.bincount(part_of_peak[1:], minlength=n + 1)
    top = np.full(n + 1, -np.inf, np.float32)
    np.maximum.at(top, parts[region], img[region])
    top[0] = np.finfo(np.float32).max  # the background never seeds
    seeds: NDArray[np.bool_] = img >= (top - _eps(top, np))[parts]
    boxes = ndimage.find_objects(parts)
    for i in np.flatnonzero(n_peaks > 1):
        sl = boxes[i - 1]
        sub = np.where(parts[sl] == i, img[sl], np.float32(-1))
        rec = reconstruction(sub - np.float32(h) - _eps(sub, np), sub, method="dilation")
        seeds[sl] |= (parts[sl] == i) & ((sub - rec) >= h)
    return seeds


def _h_dome(d: Any, h: float, xp: Any, ndi: Any, check_every: int = 8) -> Any:
    """``d`` minus its grey reconstruction by dilation from ``d - h`` (3x3 steps).

    Element-wise operations and 3x3 dilations only, so it runs where ``d`` lives
    (the GPU path; pixels outside the seed region are set to -1 first, so each
    part is reconstructed on its own, as `_h_maxima_cpu` does).
    """
    rec = d - xp.float32(h) - _eps(d, xp)
    if xp is not np:  # the kernel takes float32
        d, rec = d.astype(xp.float32, copy=False), rec.astype(xp.float32, copy=False)
        return d - _cuda_fixpoint("dilate_min", rec, d, check_every=check_every)
    while True:
        prev = rec
        for _ in range(check_every):
            rec = xp.minimum(ndi.grey_dilation(rec, size=(3, 3)), d)
        if np.array_equal(rec, prev, equal_nan=True):  # (a NaN is never == itself)
            return d - rec


_KERNELS = r"""
extern "C" __global__ void dilate_min(const float* a, float* out, int* changed, int h, int w,
                                      const float* d) {
    // one step of the reconstruction by dilation: min(3x3 max of a, d)
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
    int y = i / w, x = i % w;
    float m = a[i];
    for (int dy = -1; dy <= 1; ++dy) {
        int yy = min(max(y + dy, 0), h - 1);  // clamped: the filters' 'reflect' for a 3x3 max
        for (int dx = -1; dx <= 1; ++dx) m = fmaxf(m, a[yy * w + min(max(x + dx, 0), w - 1)]);
    }
    m = fminf(m, d[i]);
    out[i] = m;
    if (m != a[i]) changed[0] = 1;
}

extern "C" __global__ void flood(const int* a, int* out, int* changed, int h, int w,
                                 const bool* mask, const float* dist, float t) {
    // one step of a level's flood: an unlabelled pixel in the mask, above t, takes the
    // largest label around it (as a 3x3 grey dilation of the labels)
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
    int v = a[i];
    if (v == 0 && mask[i] && dist[i] > t) {
        int y = i / w, x = i % w;
        for (int dy = -1; dy <= 1; ++dy) {
            int yy = min(max(y + dy, 0), h - 1);
            for (int dx = -1; dx <= 1; ++dx) v = max(v, a[yy * w + min(max(x + dx, 0), w - 1)]);
        }
        if (v > 0) changed[0] = 1;
    }
    out[i] = v;
}
"""


@functools.cache
def _cuda_kernel(name: str) -> Any:
    import cupy

    return cupy.RawModule(code=_KERNELS).get_function(name)


def _cuda_fixpoint(
    name: str, a: Any, *args: Any, check_every: int = 8, xp: Any = None, kernel: Any = None
) -> Any:
    """Iterate kernel ``name`` on cupy array ``a`` (2-D) until it changes nothing.

    Each launch reads ``a`` and writes the other buffer (every pixel sees the
    previous step, as with the numpy filters); a flag set by any changed pixel
    is read back every ``check_every`` steps. ``xp`` and ``kernel`` (cupy and
    the compiled kernel by default) let the tests run the same loop on the
    kernels' source compiled for the CPU.
    """
    if xp is None:
        import cupy

        xp = cupy
    if kernel is None:
        kernel = _cuda_kernel(name)
    a = xp.array(a, order="C")  # a copy: the caller's array is not overwritten
    if a.size == 0:
        return a
    args = tuple(xp.ascontiguousarray(x) if isinstance(x, xp.ndarray) else x for x in args)
    h, w = a.shape
    out = xp.empty_like(a)
    changed = xp.zeros(1, xp.int32)
    block = 256
    grid = ((h * w + block - 1) // block,)
    while True:
        changed.fill(0)
        for _ in range(check_every):
            kernel(grid, (block,), (a, out, changed, np.int32(h), np.int32(w), *args))
            a, out = out, a
        if int(changed[0]) == 0:
            return a


def _modules(a: Any, xp: Any) -> tuple[Any, Any]:
    """Return the array module (``xp``, else that of ``a``) and its ndimage (scipy or cupyx)."""
    if xp is None:
        xp = _array_module(a)
    if xp is np:
        from scipy import ndimage
    else:
        from cupyx.scipy import ndimage
    return xp, ndimage


def _array_module(a: Any) -> Any:
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        import cupy

        return cupy
    return np
