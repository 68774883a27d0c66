"""Score a segmentation engine (or the classical baseline) on a folder of images + labels."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray

from livescope.schema import LivescopeError, check_input_folder

from ._classical import classical_segmentation
from ._engine import EngineError, SegmentationEngine
from ._metrics import MatchCounts, match_counts, scores

__all__ = [
    "as_instance_labels",
    "evaluate_segmentation",
    "paired_files",
    "read_image",
    "refuse_label_image",
]

_SUFFIXES = (".tif", ".tiff", ".png")

logger = logging.getLogger(__name__)


def paired_files(images: Path, labels: Path, *, what: str = "label") -> list[tuple[Path, Path]]:
    """Images and label images (or ``what`` the second folder holds) paired by file name.

    A file of the second folder without an image of its name is not scored: a
    warning names it (a misnamed image would otherwise go unscored unseen).

    Raises
    ------
    LivescopeError
        if a folder is missing or empty, or an image has no label file of the same name.

    """
    for d in (images, labels):
        check_input_folder(d)
    imgs = _image_files(images)
    if not imgs:
        raise LivescopeError(f"no images ({', '.join(_SUFFIXES)}) in {images}")
    missing = [p.name for p in imgs if not (labels / p.name).is_file()]
    if missing:
        raise LivescopeError(
            f"no {what} file in {labels} for: {', '.join(missing[:10])}"
            + _pairing_hint(missing, _image_files(labels), labels)
        )
    names = {p.name for p in imgs}
    if unpaired := [p.name for p in _image_files(labels) if p.name not in names]:
        logger.warning(
            "%d %s file(s) in %s without an image of the same name in %s, not scored: %s%s",
            len(unpaired), what, labels, images, ", ".join(unpaired[:5]),
            ", …" if len(unpaired) > 5 else "",
        )  # fmt: skip
    return [(p, labels / p.name) for p in imgs]


def _image_files(folder: Path) -> list[Path]:
    # dot-files are not images (macOS writes "._name.tif" beside each file on shared drives)
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in _SUFFIXES and not p.name.startswith(".")
    )


def _pairing_hint(missing: list[str], others: list[Path], folder: Path) -> str:
    """Say what the second folder holds instead, so a near miss (another suffix) is seen."""
    if not others:
        return f" ({folder} holds no images: {', '.join(_SUFFIXES)})"
    by_stem = {p.stem: p.name for p in others}
    near = [f"{by_stem[Path(m).stem]} for {m}" for m in missing if Path(m).stem in by_stem]
    if near:
        return (
            f" (it holds {', '.join(near[:5])}: files pair by the whole name, suffix "
            "included; save both as the same type)"
        )
    return f" (it holds {', '.join(p.name for p in others[:5])}{', …' if len(others) > 5 else ''})"


def read_image(path: Path, *, labels: bool = False) -> NDArray[Any]:
    """Read an image file (TIFF or PNG) into an array.

    With ``labels=True`` a palette (indexed-colour) PNG, as annotation tools
    save label images, gives its indices (the nuclei's ids), not their colours.
    Axes of length 1 are dropped when two others remain: a single-plane stack
    (1, H, W), as many tools save one plane, is that plane; a real stack is
    returned as it is (callers refuse what is not one 2-D plane, naming its shape),
    and so is a TIFF's every plane of one size where each is a series of its own
    (a z-stack written plane by plane, an OME-TIFF's positions): (N, H, W).

    Raises
    ------
    LivescopeError
        naming the file when it cannot be read (missing, truncated, not an image,
        or compressed with a codec that is not installed).

    """
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image
            from skimage.io import imread

            image = None
            if labels:
                with Image.open(path) as png:
                    if png.mode == "P":
                        image = np.asarray(png)
            if image is None:
                image = np.asarray(imread(path))
        else:
            with tifffile.TiffFile(path) as tf:
                # planes written one by one (imwrite(..., append=True)) are a series each, and so
                # are an OME-TIFF's positions: all of one plane shape and type are read, as the
                # CTC reader counts them, not series 0 alone (a stack's first plane, scored as
                # if it were the image); a pyramid's smaller levels are its series' levels, and a
                # thumbnail's other shape is not a plane of it
                def plane(s: Any) -> tuple[tuple[int, ...], Any]:
                    yx = tuple(int(n) for n, a in zip(s.shape, s.axes, strict=True) if a in "YXS")
                    return yx, s.dtype

                same = [s for s in tf.series if plane(s) == plane(tf.series[0])]
                if len(same) > 1:
                    image = np.concatenate(
                        [np.asarray(s.asarray()).reshape(-1, *plane(s)[0]) for s in same]
                    )
                else:
                    image = np.asarray(tf.asarray())
    except (OSError, ValueError, tifffile.TiffFileError) as exc:  # PIL's errors are OSErrors
        raise LivescopeError(f"{path}: cannot read it as an image ({exc})") from exc
    if image.size == 0:  # (what tifffile makes of a file cut short inside its pixel data)
        raise LivescopeError(f"{path}: no pixels could be read (a truncated or damaged file?)")
    if image.ndim > 2 and sum(n > 1 for n in image.shape) == 2:
        image = np.squeeze(image)
    return grey_plane(image)


def grey_plane(image: NDArray[Any]) -> NDArray[Any]:
    """Return the one plane an RGB(A) image holds without loss, else ``image`` as it is.

    Grey saved as colour (every colour channel the same, as the Data Science
    Bowl's PNGs and many exports are), or a single colour channel with signal
    (e.g. a blue DAPI image) is that plane. An image whose colour channels
    differ, or whose alpha is not one value, is returned unchanged (callers
    refuse what is not one 2-D plane).
    """
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or min(image.shape[:2]) <= 4:
        return image
    colour = image[..., :3]
    if image.shape[-1] == 4 and not (image[..., 3] == image[0, 0, 3]).all():
        return image
    lit = [c for c in range(3) if colour[..., c].any()]
    if len(lit) <= 1:  # (one colour channel with signal, or an all-black frame)
        return np.ascontiguousarray(colour[..., lit[0] if lit else 0])
    grey = len(lit) == 3 and all(np.array_equal(colour[..., 0], colour[..., c]) for c in (1, 2))
    return np.ascontiguousarray(colour[..., 0]) if grey else image


def evaluate_segmentation(
    engine: SegmentationEngine | None,
    images: Path,
    labels: Path,
    *,
    classical: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """AP@0.5, mAP@0.5:0.95, F1/precision/recall@0.5, counts, errors and ms per image.

    The folder's scores are those of its matches, misses and false objects
    summed over the images (an image of many nuclei weighs more), not a mean of
    the per-image scores (``per_image``).

    ``errors``: the objects left unmatched at IoU 0.5 by what went wrong
    and the predictions left unmatched that no such error accounts for
    (merged, split, missed, misdrawn; spurious, fragment; see ``_metrics``).

    With ``classical=True`` (and no engine) scores the Otsu + watershed baseline.

    ``ms_engine`` and ``ms_post``: the mean ms per image in steady state. The
    first image is segmented once untimed before it is timed, through the
    whole path (engine, rescaling, post-processing; or the classical
    pipeline): their first calls pay one-time costs (imports, allocation,
    compiling) that `Engine.warmup`, which runs the model only, does not.
    """
    if images.resolve() == labels.resolve() and images.is_dir():  # (else: which is missing)
        raise LivescopeError(f"--images and --labels are the same folder ({images})")
    if engine is None and not classical:
        raise LivescopeError("evaluate_segmentation needs an engine or classical=True")
    pairs = paired_files(images, labels)
    total = MatchCounts()
    ms_engine: list[float] = []
    ms_post: list[float] = []
    per_image = []
    for i, (img_path, lab_path) in enumerate(pairs):
        frame = read_image(img_path)
        truth = read_image(lab_path, labels=True)
        if frame.ndim != 2:
            raise LivescopeError(
                f"{img_path}: the image is {frame.shape}, not one 2-D plane (save a stack's "
                "planes, or a colour image's nuclear channel, as images of their own; grey saved "
                "as RGB is read as one plane)"
            )
        if truth.shape != frame.shape:
            colour = truth.ndim == 3 and truth.shape[:2] == frame.shape
            raise LivescopeError(
                f"{img_path}: image {frame.shape} and labels {lab_path} {truth.shape} must be the "
                "same 2-D shape"
                + (
                    f" ({lab_path.name} is a colour image, each nucleus a colour? instance labels "
                    "are one plane of whole numbers, one per nucleus, 0 the background)"
                    if colour
                    else ""
                )
            )
        if truth.any() and np.array_equal(frame, truth):  # (an empty tile is no mistake)
            raise LivescopeError(
                f"{img_path}: the image is its own label image (is --images a folder of labels?)"
            )
        truth = as_instance_labels(truth, str(lab_path))
        refuse_label_image(frame, f"{img_path} (--images)", "; is --images a folder of labels?")
        if frame.dtype.kind == "f" and not np.isfinite(frame).all():
            raise LivescopeError(f"{img_path}: the image holds NaN or infinite values")
        if i == 0:
            # once untimed, through the whole path: `Engine.warmup` runs the model only, and
            # the first post-processing (scikit-image's imports) or rescaling takes ~1 s more
            _segment(engine, frame, img_path)
        pred, (ms_e, ms_p) = _segment(engine, frame, img_path)
        ms_engine.append(ms_e)
        ms_post.append(ms_p)
        c = match_counts(truth, pred)
        total.add(c)
        per_image.append({"image": img_path.name, **scores(c), "errors": c.errors})
        if progress is not None:
            progress(i + 1, len(pairs))
    return {
        **scores(total),
        "errors": total.errors,
        "ms_engine": round(float(np.mean(ms_engine)), 2),
        "ms_post": round(float(np.mean(ms_post)), 2),
        "images": len(pairs),
        "per_image": per_image,
    }


def _segment(
    engine: SegmentationEngine | None, frame: NDArray[Any], path: Path
) -> tuple[NDArray[Any], tuple[float, float]]:
    """Segment ``frame`` with ``engine`` (None: the classical pipeline); labels, ms engine, post."""
    if engine is None:
        t0 = time.perf_counter()
        pred = classical_segmentation(frame)
        return pred, (0.0, 1000 * (time.perf_counter() - t0))
    try:
        res = engine.segment(frame)
    except EngineError as exc:  # (which of the folder's images the engine refused)
        raise EngineError(f"{path}: {exc}") from exc
    return res.labels, (res.ms_engine, res.ms_post)


def as_instance_labels(
    truth: NDArray[Any], name: str, hint: str = ": were --images and --labels swapped?"
) -> NDArray[Any]:
    """Return a label image as integer instance labels, or refuse what is none.

    Refused, naming ``name`` (the file): fractional or negative values, an
    intensity image (neighbouring pixels differ almost everywhere; in labels
    only along borders; ``hint`` ends that message: what to do instead) and a
    binary mask (a boolean image with any object, or one value over several
    separate objects).

    Raises
    ------
    LivescopeError
        saying which of these it is.

    """
    if truth.dtype.kind == "b":
        if truth.any():  # (true/false holds no ids: even one region may be nuclei merged)
            raise LivescopeError(
                f"{name}: the labels are a binary mask (true/false), not instance labels, one "
                "whole number per nucleus (0 the background); label its connected components "
                "first, e.g. skimage.measure.label"
            )
        truth = truth.astype(np.uint8)
    elif truth.dtype.kind == "f":
        if not (np.isfinite(truth).all() and np.array_equal(truth, np.round(truth))):
            raise LivescopeError(
                f"{name}: the labels hold fractional values ({truth.dtype}); instance "
                "labels are whole numbers, one per nucleus (0 = background)"
            )
        truth = truth.astype(np.int64)
    elif truth.dtype.kind not in "iu":
        raise LivescopeError(f"{name}: labels of type {truth.dtype} are not instance labels")
    if truth.size and truth.min() < 0:
        raise LivescopeError(
            f"{name}: the labels hold negative values; instance labels are 0 (background) "
            "or a positive id per nucleus"
        )
    pairs, changed = _neighbours_differ(truth)
    if pairs >= 100 and changed > 0.5:
        raise LivescopeError(
            f"{name}: this looks like an intensity image, not instance labels "
            f"(neighbouring pixels differ in {changed:.0%} of pairs; in labels only where two "
            f"nuclei touch){hint}"
        )
    _refuse_binary_mask(truth, name)
    return truth


def refuse_label_image(frame: NDArray[Any], name: str, hint: str = "") -> None:
    """Refuse a frame to segment that is an instance label image already.

    In a label image the background is 0, each nucleus is one value over one
    connected region without holes, and neighbouring pixels differ only along
    borders. In a camera frame each grey level lies in many regions (on this
    project's data: 100-1000x as many regions as values, even in a dim 8-bit
    frame whose neighbours are mostly equal, against 1.0x in every label
    image); in a smooth, noise-free frame on a background of 0 each level may
    be one region, but a ring around the levels above it. ``hint`` ends the
    message (what to do instead).

    Raises
    ------
    LivescopeError
        naming ``name`` and how many objects it holds.

    """
    if frame.ndim != 2 or frame.dtype.kind not in "iu":
        return
    zero = frame == 0
    values = np.unique(frame[~zero])
    if values.size < 2 or not zero.any():  # empty, a mask, or no background of 0
        return
    pairs, changed = _neighbours_differ(frame)
    if pairs == 0 or changed > 0.2:
        return
    from skimage.measure import label, regionprops

    # regions of equal value (connected in 8 directions), 0 the background
    lab = label(frame, background=0, connectivity=2)  # type: ignore[no-untyped-call]
    regions = int(lab.max())
    if regions > 1.5 * values.size:
        return
    # the rings of a smooth frame enclose the levels above them; a nucleus' label encloses none
    holed = sum(r.euler_number < 1 for r in regionprops(lab))  # type: ignore[no-untyped-call]
    if holed > 0.25 * regions:
        return
    raise LivescopeError(
        f"{name}: this is an instance label image, not a frame to segment ({values.size} "
        f"objects on a background of 0, each value one connected region)" + hint
    )


def _neighbours_differ(img: NDArray[Any]) -> tuple[int, float]:
    """Return how many pairs of side-by-side non-zero pixels there are, and the share that differ.

    In labels neighbours differ only where two nuclei touch; in an intensity
    image almost everywhere.
    """
    left, right = img[:, :-1], img[:, 1:]
    both = (left != 0) & (right != 0)
    pairs = int(both.sum())
    return pairs, float((left != right)[both].mean()) if pairs else 0.0


def _refuse_binary_mask(truth: NDArray[Any], name: str) -> None:
    """Refuse ground truth that is a binary mask (one value over many separate objects).

    Scored as it is, it would be one object, and every prediction wrong.
    """
    values = np.unique(truth)
    values = values[values != 0]
    if values.size != 1:
        return
    from scipy import ndimage

    _, n = ndimage.label(truth != 0)
    if n > 1:
        raise LivescopeError(
            f"{name}: the labels look like a binary mask (one value, {values[0]}, over {n} "
            "separate objects); instance labels give each nucleus its own id "
            "(e.g. skimage.measure.label)"
        )
