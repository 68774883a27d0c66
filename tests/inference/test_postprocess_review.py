"""Post-processing on maps a model can give beyond its training: NaN, inf, gaps in the ids."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from livescope.inference import (
    drop_weak_objects,
    labels_from_maps,
    labels_from_maps_gpu,
    labels_from_votes,
    match_counts,
    scores,
)

CENTRES = ((20, 22), (44, 70), (70, 30))


def _shipped() -> dict[str, float]:
    """The shipped nuclei-unet card's distance_watershed settings."""
    from livescope.inference import find_engine
    from livescope.schema import EngineCard

    pp = EngineCard.from_file(find_engine("nuclei-unet") / "card.yaml").postprocess
    keys = ("fg_threshold", "seed_threshold", "min_size_px", "seed_h", "smooth_px", "min_score")
    return {k: getattr(pp, k) for k in keys}


SHIPPED = _shipped()


def _nuclei(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Foreground, noisy normalised distance and centre offsets of three separate discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    mask = np.zeros(yy.shape, bool)
    off = np.zeros((2, *yy.shape), np.float32)
    for cy, cx in CENTRES:
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 10**2
        mask |= disc
        off[0][disc], off[1][disc] = (cy - yy)[disc], (cx - xx)[disc]
    dist = ndimage.distance_transform_edt(mask).astype(np.float32)
    dist /= float(dist.max())
    dist += rng.normal(0, 0.01, dist.shape).astype(np.float32)
    fg = np.where(mask, 0.95, 0.05).astype(np.float32)
    return fg, dist, off


def _cpu(fg: np.ndarray, dist: np.ndarray, **kw: Any) -> np.ndarray:
    return labels_from_maps(fg, dist, **kw)


def _gpu_steps(fg: np.ndarray, dist: np.ndarray, **kw: Any) -> np.ndarray:
    return labels_from_maps_gpu(fg, dist, xp=np, **kw)  # (the GPU path's steps, in numpy)


PATHS = [pytest.param(_cpu, id="cpu"), pytest.param(_gpu_steps, id="gpu-steps")]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_offsets_cast_no_vote_and_the_frame_is_still_labelled(bad: float) -> None:
    fg, _, off = _nuclei()
    clean = labels_from_votes(fg, off)
    assert clean.max() == len(CENTRES)
    broken = off.copy()
    broken[0, 20, 22] = bad  # a centre pixel: fp16 overflow in the model
    broken[1, 40:43, 66:69] = bad
    labels = labels_from_votes(fg, broken)  # one NaN made the radius NaN: ValueError
    assert labels[20, 22] == 0
    assert not labels[40:43, 66:69].any()  # pointing nowhere: no nucleus to join
    assert scores(match_counts(clean, labels))["f1"] == 1.0


@pytest.mark.parametrize("path", PATHS)
def test_a_nan_distance_pixel_does_not_blank_its_nucleus(path: Any) -> None:
    fg, dist, _ = _nuclei()
    clean = path(fg, dist, **SHIPPED)
    assert clean.max() == len(CENTRES)
    dist[20, 22] = np.nan  # smoothed, it spread over the nucleus' seed region
    labels = path(fg, dist, **SHIPPED)
    assert labels.max() == len(CENTRES)
    assert scores(match_counts(clean, labels))["f1"] == 1.0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("smooth_px", [0.0, 2.0])
def test_an_infinite_distance_peak_seeds_its_nucleus_on_both_paths(
    path: Any, smooth_px: float
) -> None:
    fg, dist, _ = _nuclei()
    dist[20, 22] = np.inf  # on the CPU the h-maxima took inf - inf: its part had no seed
    labels = path(fg, dist, **{**SHIPPED, "smooth_px": smooth_px})
    assert labels.max() == len(CENTRES)
    assert labels[20, 22] > 0


def test_an_all_nan_distance_map_gives_no_objects() -> None:
    fg, dist, _ = _nuclei()
    dist[:] = np.nan
    for path in (_cpu, _gpu_steps):
        labels = path(fg, dist, **SHIPPED)
        assert labels.shape == fg.shape
        assert not labels.any()


def test_ids_never_skip_a_number_even_with_nothing_to_drop() -> None:
    # the docstring's promise; a card's min_size_px of 0 (or one that rounds to 0 on a
    # zoomed frame) and min_score 0 returned the ids as given, gaps included
    labels = np.array([[0, 2, 2], [5, 5, 0]], np.int32)
    fg = np.ones(labels.shape, np.float32)
    out = drop_weak_objects(labels, fg, 0, 0.0, np)
    np.testing.assert_array_equal(out, [[0, 1, 1], [2, 2, 0]])
    assert out.dtype == np.int32


def test_an_empty_label_image_has_no_objects_to_drop() -> None:
    empty = np.zeros((0, 5), np.int32)
    out = drop_weak_objects(empty, np.zeros((0, 5), np.float32), 12, 0.5, np)
    assert out.shape == (0, 5)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("smooth_px", [0.0, 2.0])
@pytest.mark.parametrize("seed_h", [0.3, None])
def test_a_nucleus_lying_at_45_degrees_is_one_object(
    path: Any, smooth_px: float, seed_h: float | None
) -> None:
    # its distance ridge is a diagonal line: 8-connected only. Seeds labelled 4-connected
    # cut it into strips (6 on the CPU, 2 on the GPU path)
    yy, xx = np.mgrid[:64, :64]
    band = (np.abs(yy - xx) <= 4) & (yy + xx > 20) & (yy + xx < 100)
    dist = ndimage.distance_transform_edt(band).astype(np.float32)
    dist /= float(dist.max())
    fg = np.where(band, 0.95, 0.05).astype(np.float32)
    labels = path(fg, dist, **{**SHIPPED, "smooth_px": smooth_px, "seed_h": seed_h})
    assert labels.max() == 1
    assert (labels == 1).sum() == band.sum()
