"""Virtual staining: a nuclear-stain image predicted from a label-free frame.

`StainEngine.predict` returns the predicted fluorescence in the units of the
card's ``target_normalisation`` (the training targets' 1st/99.8th percentiles at
0/1), so it can be shown as an overlay or segmented like a real stain.

Pixel size: a frame whose pixel size (when the caller knows it) differs from
the card's by more than ``pixel_size_tolerance`` is rescaled to the card's pixel
size, run, and the prediction resized back; a ratio beyond 8x either way is
refused (`Engine.pixel_scale`). A frame with no contrast (constant, e.g. the
shutter closed) yields an all-zero stain without running the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import LivescopeError

from ._engine import Engine, EngineError
from ._evaluate import paired_files, read_image
from ._postprocess import apply_normalisation

__all__ = ["StainEngine", "StainResult", "evaluate_stain", "parse_crop", "stain_scores"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StainResult:
    """A predicted stain (H, W) float32 at the frame's size, and the engine time.

    ``ms`` is the engine's time; ``scale`` the zoom that brought the frame to the
    card's pixel size (1.0: none).
    """

    image: NDArray[np.float32]
    ms: float
    scale: float


class StainEngine(Engine):
    """An engine that maps a label-free frame to a nuclear-stain image."""

    def __init__(
        self, name_or_path: str | Path, *, pixel_size_tolerance: float = 0.1, **kwargs: Any
    ) -> None:
        """Load a virtual-staining engine (``task: virtual_stain`` in its card)."""
        super().__init__(name_or_path, **kwargs)
        with self._closed_if_refused():
            if self.card.task != "virtual_stain":
                raise EngineError(
                    f"engine {self.name} is a {self.card.task} engine, not virtual_stain"
                )
            if not 0 <= pixel_size_tolerance < 1:
                raise EngineError(
                    f"engine {self.name}: pixel size tolerance must be in [0, 1), "
                    f"got {pixel_size_tolerance}"
                )
            self.pixel_size_tolerance = pixel_size_tolerance

    def predict(self, frame: NDArray[Any], *, pixel_size_um: float | None = None) -> StainResult:
        """Predicted stain for one label-free frame (rescaled as described in the module).

        Any thread may call it (the model runs one tile at a time).

        Raises
        ------
        EngineError
            if the engine is closed, the frame is unfit (not (H, W), or (C, H, W) for
            a card of C planes; under 8 px; NaN or infinite values), or the pixel size
            is not > 0 or more than 8x off the card's, whether or not the frame has contrast.

        """
        f = self.check_frame(frame)
        self._session()  # (a closed engine refuses even a frame without contrast)
        scale = self.pixel_scale(pixel_size_um, self.pixel_size_tolerance)
        t0 = time.perf_counter()
        if f.size == 0 or float(f.max()) == float(f.min()):
            image = np.zeros(f.shape[-2:], np.float32)
        else:
            image = self.infer_scaled(f, scale)[0]
        return StainResult(image, 1000 * (time.perf_counter() - t0), scale)


def parse_crop(text: str | None) -> tuple[slice, slice] | None:
    """``"r0:r1,c0:c1"`` (either part may be ``:``) to a pair of slices.

    Raises
    ------
    LivescopeError
        if the text is not of that form.

    """
    if text is None:
        return None
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        out = []
        for part in parts:
            a, sep, b = part.strip().partition(":")
            if not sep:
                raise ValueError
            out.append(slice(int(a) if a else None, int(b) if b else None))
    except ValueError:
        raise LivescopeError(
            f"crop {text!r} is not 'ROW0:ROW1,COL0:COL1' (e.g. '0:1024,768:1024')"
        ) from None
    if any(v is not None and v < 0 for sl in out for v in (sl.start, sl.stop)):
        raise LivescopeError(f"crop {text!r}: bounds are pixel indices from 0, not negative")
    return out[0], out[1]


def _check_crop(crop: tuple[slice, slice], shape: tuple[int, ...], name: str) -> None:
    """Refuse a crop that reaches past the frame (it would be cut back without a word)."""
    for sl, n, axis in zip(crop, shape[-2:], ("rows", "columns"), strict=True):
        for v in (sl.start, sl.stop):
            if v is not None and v > n:
                raise LivescopeError(
                    f"crop {axis} {sl.start or 0}:{n if sl.stop is None else sl.stop} reach past "
                    f"the {shape[-2]}x{shape[-1]} frame {name} ({axis} 0:{n})"
                )


def stain_scores(
    pred: NDArray[np.floating[Any]], target: NDArray[np.floating[Any]]
) -> dict[str, float]:
    """Pearson r, SSIM and PSNR of a prediction against a target in the same units.

    SSIM and PSNR use the target's range as the data range. SSIM is scikit-image's
    default: a 7x7 uniform window with sample covariances (Wang et al. 2004 use an
    11x11 Gaussian of sigma 1.5, which gives other figures).
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    p = np.asarray(pred, np.float64)
    t = np.asarray(target, np.float64)
    if p.shape != t.shape:
        raise LivescopeError(f"prediction {p.shape} and target {t.shape} differ in shape")
    if min(p.shape) < 7:
        raise LivescopeError(f"{p.shape} px is too small to score: SSIM needs at least 7x7 px")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise LivescopeError("prediction or target holds NaN or infinite values")
    rng = float(t.max() - t.min())
    if p.std() == 0 or t.std() == 0 or rng == 0:
        raise LivescopeError("prediction or target is constant: Pearson r is undefined")
    r = float(np.corrcoef(p.ravel(), t.ravel())[0, 1])
    ssim = float(structural_similarity(t, p, data_range=rng))  # type: ignore[no-untyped-call]
    psnr = float(peak_signal_noise_ratio(t, p, data_range=rng))  # type: ignore[no-untyped-call]
    return {"pearson": r, "ssim": ssim, "psnr": psnr}


_SCORES = ("pearson", "ssim", "psnr")


def _unscorable(
    pred: NDArray[np.floating[Any]], target: NDArray[np.floating[Any]], where: str
) -> str | None:
    """Say why a prediction and target cannot be scored (Pearson r undefined), or None."""
    why = {
        "target": "a blank fluorescence frame?",
        "prediction": "a label-free frame without contrast gives an all-zero stain",
    }
    for what, img in (("target", target), ("prediction", pred)):
        if img.size and float(img.max()) == float(img.min()):
            return f"the {what} is constant {where} ({why[what]}): Pearson r is undefined"
    return None


def _pairs(inp: Path, target: Path) -> list[tuple[Path, Path]]:
    if inp.exists() and inp.resolve() == target.resolve():
        # (each frame would be scored against itself: figures that mean nothing, no error)
        raise LivescopeError(
            f"input and target are the same {'folder' if inp.is_dir() else 'file'} ({inp})"
        )
    if inp.is_file() and target.is_file():
        return [(inp, target)]
    if inp.is_dir() and target.is_dir():
        return paired_files(inp, target, what="target")
    for p in (inp, target):
        if not p.exists():
            raise LivescopeError(f"{p} does not exist")
    raise LivescopeError(
        f"input {inp} and target {target} must both be files or both be folders "
        "(folders are paired by file name)"
    )


def evaluate_stain(
    engine: StainEngine,
    inp: Path,
    target: Path,
    *,
    crop: tuple[slice, slice] | None = None,
    pixel_size_um: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Mean Pearson r, SSIM, PSNR and ms per frame over input/target pairs.

    Targets are normalised as the card states (over the whole image), then the
    prediction and target are compared inside ``crop`` (whole image if None).
    A frame whose prediction or target is constant there (Pearson r undefined:
    a blank target, or a label-free frame without contrast) is not scored: it
    is listed in ``unscored`` with why, its ``per_frame`` scores are None and the
    means are over the other frames (``frames`` of them; None if none is left).
    ``ms`` is over every frame.

    Raises
    ------
    LivescopeError
        naming the file, if a pair cannot be read or compared (shapes, NaN in
        the target, a crop past the frame or under 7x7 px), or if input and
        target are the same file or folder.
    EngineError
        naming the file the engine refuses.

    """
    tn = engine.card.target_normalisation
    if tn is None or tn.kind != "percentile":
        raise EngineError(
            f"engine {engine.name}: its card states no percentile target_normalisation"
        )
    pairs = _pairs(inp, target)
    rows: list[dict[str, Any]] = []
    unscored: list[dict[str, str]] = []
    planes = engine.card.input.channels  # the input: one plane, or that many z-slices
    for i, (ip, tp) in enumerate(pairs):
        frame, tgt = read_image(ip), read_image(tp)
        for path, img, ndim in ((ip, frame, 2 if planes == 1 else 3), (tp, tgt, 2)):
            if img.ndim != ndim:
                want = "one 2-D plane" if ndim == 2 else f"a stack of {planes} planes"
                raise LivescopeError(
                    f"{path.name}: the image is {img.shape}, not {want} (an RGB file or a "
                    f"stack?); engine {engine.name} takes "
                    f"{'single-channel 2-D frames' if planes == 1 else f'({planes}, H, W) input'}"
                    " and a 2-D target"
                )
        if crop is not None:
            _check_crop(crop, frame.shape, ip.name)
        if frame.shape[-2:] != tgt.shape:
            raise LivescopeError(
                f"{ip.name}: input {frame.shape} and target {tgt.shape} must have the same "
                "2-D frame size"
            )
        if np.issubdtype(tgt.dtype, np.floating) and not np.isfinite(tgt).all():
            bad = int(np.count_nonzero(~np.isfinite(tgt)))
            raise LivescopeError(
                f"{tp.name}: the target holds {bad} NaN or infinite pixel(s) (e.g. a registration "
                "border); fill or remove them first"
            )
        try:
            res = engine.predict(frame, pixel_size_um=pixel_size_um)
        except EngineError as exc:  # (which of the folder's frames the engine refused)
            raise EngineError(f"{ip.name}: {exc}") from exc
        t = apply_normalisation(tgt, tn)  # (the card's percentiles, then its gamma)
        p = res.image
        if crop is not None:
            p, t = p[crop], t[crop]
            if p.size == 0:
                raise LivescopeError(f"crop leaves nothing of the {frame.shape} frame {ip.name}")
        if why := _unscorable(p, t, "inside the crop" if crop else "over the frame"):
            # one blank frame (shutter closed, a dropped frame) must not cost the folder's scores
            logger.warning("%s: not scored: %s", ip.name, why)
            unscored.append({"input": ip.name, "why": why})
            rows.append({"input": ip.name, **dict.fromkeys(_SCORES), "ms": res.ms})
        else:
            try:
                rows.append({"input": ip.name, **stain_scores(p, t), "ms": res.ms})
            except LivescopeError as exc:  # (which of the folder's frames it is)
                raise LivescopeError(f"{ip.name}: {exc}") from exc
        if progress is not None:
            progress(i + 1, len(pairs))
    scored = [r for r in rows if r["pearson"] is not None]
    # (None with no frame scored: NaN is no JSON)
    mean = {
        k: round(float(np.mean([r[k] for r in scored])), 4) if scored else None for k in _SCORES
    }
    return {
        **mean,
        "ms": round(float(np.mean([r["ms"] for r in rows])), 2),
        "frames": len(scored),
        "unscored": unscored,
        "per_frame": [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows
        ],
    }
