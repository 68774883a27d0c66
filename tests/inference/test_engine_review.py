"""Review of the engine runtime: tile shapes for compiled plans, sparse frames' normalisation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from livescope.inference import (
    Engine,
    SegmentationEngine,
    TilePlan,
    builtin_engines,
    normalize_percentile,
)
from livescope.schema import EngineCard

SEG = "nuclei-unet"


@pytest.fixture(scope="module")
def seg() -> SegmentationEngine:
    return SegmentationEngine(SEG, backend="onnxruntime")


# ------------------------------------------------------------ tile shapes


def _card(name: str) -> EngineCard:
    return EngineCard.from_file(builtin_engines()[name] / "card.yaml")


@pytest.mark.parametrize("name", ["nuclei-unet", "nuclei-stain"])
@pytest.mark.parametrize(
    "shape",
    [
        (1100, 1400),  # last tile 1028 px: the model runs it padded to 1032
        (1031, 1037),  # one tile a few px over the tile size, another just over it
        (500, 500),  # smaller than a tile, not a multiple of the pooling grid
        (9, 1925),  # a strip
        (2048, 2048),  # every tile a multiple of the grid: nothing padded
    ],
)
def test_tile_shapes_hold_the_padded_shapes_the_model_runs(
    name: str, shape: tuple[int, int]
) -> None:
    """A compiled plan's profile (built from `tile_shapes`) must admit every tile as run.

    `Engine._run_padded` pads each tile to the card's ``input.multiple_of``, so that
    is the shape the session sees; a profile built from the unpadded sizes refused
    frames whose sides (or last tile) are not multiples of it.
    """
    card = _card(name)
    m = card.input.multiple_of
    plan = TilePlan(shape, card.tiling.tile_px, card.tiling.overlap_px, m)
    allowed = set(plan.tile_shapes())
    run = {
        (-(-(src[0].stop - src[0].start) // m) * m, -(-(src[1].stop - src[1].start) // m) * m)
        for src, _ in plan.regions()
    }
    assert run <= allowed, f"tiles run as {sorted(run - allowed)}, plan admits {sorted(allowed)}"
    # the profile's bounds (TensorRT takes min and max of each axis) as run
    assert max(h for h, _ in allowed) == max(h for h, _ in run)
    assert max(w for _, w in allowed) == max(w for _, w in run)


# ------------------------------------------------------------ sparse frames


def _disc_frame(background: float, value: float, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """A 512² frame, flat but for one nucleus (radius 9 px, under 0.2 % of the pixels)."""
    yy, xx = np.mgrid[:512, :512]
    disc = (yy - 200) ** 2 + (xx - 300) ** 2 < 81
    frame: np.ndarray = np.full((512, 512), background, dtype)
    frame[disc] = value
    return frame, disc


@pytest.mark.parametrize(
    ("background", "value", "dtype"),
    [(0, 1000, np.uint16), (100, 600, np.uint16), (0, 40, np.uint8), (0.0, 0.3, np.float32)],
)
def test_one_nucleus_on_a_flat_background_is_one_label(
    seg: SegmentationEngine, background: float, value: float, dtype: Any
) -> None:
    """A background-subtracted frame with a single nucleus gives that nucleus, no more.

    Its 1st and 99.8th percentiles are both the background, so the frame used to
    be stretched by 1/eps (the nucleus at ~1e9): the model's maps blew up and the
    frame gave three "nuclei" covering 26 times the nucleus' area.
    """
    frame, disc = _disc_frame(background, value, dtype)
    x = seg.normalise(frame)
    assert float(x.min()) >= 0.0
    assert float(x.max()) <= 1.0 + 1e-6
    labels = seg.segment(frame).labels
    assert labels.max() == 1
    area = int((labels > 0).sum())
    assert 0.5 * disc.sum() <= area <= 2 * disc.sum()
    assert (labels[disc] == 1).mean() > 0.9


def test_a_simulated_nucleus_alone_in_a_background_subtracted_frame(
    seg: SegmentationEngine,
) -> None:
    """A real-looking nucleus (the simulated scope's), cut out onto a zero background."""
    from livescope.scope import simulated_frames

    full = simulated_frames(1, size=512, objective="10x", seed=3)[0][0]
    labels = seg.segment(full).labels
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    pick = int(np.argsort(sizes)[len(sizes) // 2])  # a nucleus of middling size
    inside = labels == pick
    background = float(np.median(full[labels == 0]))
    frame = np.zeros_like(full)
    signal = np.clip(full[inside].astype(np.float64) - background, 0, None)
    frame[inside] = signal.astype(full.dtype)
    assert inside.mean() < 0.002  # the nucleus is under the high percentile's share
    got = seg.segment(frame).labels
    assert got.max() == 1
    overlap = (got > 0) & inside
    assert overlap.sum() / ((got > 0) | inside).sum() > 0.6


def test_normalize_percentile_of_a_flat_frame_with_dark_spots_stays_in_range() -> None:
    """A saturated frame with a few dark pixels maps into [0, 1], not to -1e8."""
    frame = np.full((256, 256), 4095, np.uint16)
    frame[10:14, 20:24] = 200
    x = normalize_percentile(frame, 1.0, 99.8)
    assert float(x.min()) >= 0.0
    assert float(x.max()) <= 1.0
    assert x[12, 22] == 0.0
    assert x[100, 100] == pytest.approx(1.0)


@pytest.mark.parametrize("value", [0, 7, 65535])
def test_a_constant_frame_still_normalises_to_zero_and_gives_no_nuclei(
    seg: SegmentationEngine, value: int
) -> None:
    frame = np.full((256, 320), value, np.uint16)
    assert not seg.normalise(frame).any()
    assert seg.segment(frame).labels.max() == 0


def test_stain_engine_normalises_a_sparse_frame_into_range() -> None:
    """The same normalisation serves the virtual-stain engine's input."""
    frame, _ = _disc_frame(50, 3000, np.uint16)
    with Engine("nuclei-stain", backend="onnxruntime") as eng:
        x = eng.normalise(frame)
    assert float(x.min()) >= 0.0
    assert float(x.max()) <= 1.0 + 1e-6


def test_hot_pixels_on_a_flat_dark_frame_are_no_nuclei(seg: SegmentationEngine) -> None:
    """A dark frame at the camera's offset with two hot pixels holds no nucleus.

    Stretched by 1/eps the two pixels became three "nuclei" of ~6800 px in all.
    """
    frame = np.full((512, 512), 100, np.uint16)
    frame[200, 300] = frame[10, 10] = 4000
    assert seg.segment(frame).labels.max() == 0
