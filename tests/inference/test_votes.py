"""Instances from centre votes: each foreground pixel votes, along its offset, for a centre."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livescope.inference import (
    Engine,
    builtin_engines,
    instance_labels,
    labels_from_maps,
    labels_from_votes,
    match_counts,
    scores,
)
from livescope.schema import PostProcess


def _touching_pair(
    x1: int = 34, x2: int = 56, r: int = 12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two discs on row 32 that overlap, with one dome of distance over both.

    Returns the foreground, the (merged) distance map, and offsets that point
    from each pixel to the centre of the disc it is nearer to.
    """
    yy, xx = np.mgrid[:64, :96].astype(np.float32)
    d1, d2 = np.hypot(yy - 32, xx - x1), np.hypot(yy - 32, xx - x2)
    fg = ((d1 <= r) | (d2 <= r)).astype(np.float32)
    # a distance map with no valley at the contact: what a model unsure of the split predicts
    dist = np.clip(1 - np.hypot(yy - 32, (xx - (x1 + x2) / 2) / 2) / r, 0, 1) * fg
    cx = np.where(d1 <= d2, x1, x2).astype(np.float32)
    offsets = np.stack([(32 - yy) * fg, (cx - xx) * fg]).astype(np.float32)
    return fg, dist.astype(np.float32), offsets


def test_votes_split_touching_nuclei_that_one_distance_dome_merges() -> None:
    fg, dist, offsets = _touching_pair()
    merged = labels_from_maps(fg, dist, fg_threshold=0.5, seed_threshold=0.2, seed_h=0.1)
    assert merged.max() == 1
    labels = labels_from_votes(fg, offsets, fg_threshold=0.5, min_votes=1.0)
    assert labels.dtype == np.int32
    assert labels.max() == 2
    assert labels[32, 34] != labels[32, 56]
    assert not np.any(labels[fg <= 0.5])  # only the foreground is labelled
    truth = np.zeros(fg.shape, np.int32)
    truth[fg > 0.5] = np.where(np.arange(96) < 45, 1, 2)[None, :].repeat(64, 0)[fg > 0.5]
    assert scores(match_counts(truth, labels))["map"] >= 0.95


def test_noisy_offsets_still_give_one_centre_per_nucleus() -> None:
    """Votes scattered by 1 px of noise: smoothing gathers them, one centre each."""
    fg, _, offsets = _touching_pair()
    rng = np.random.default_rng(0)
    noisy = offsets + rng.normal(0, 1.0, offsets.shape).astype(np.float32) * fg
    labels = labels_from_votes(fg, noisy, fg_threshold=0.5, vote_sigma=0.15, peak_radius=0.25)
    assert labels.max() == 2
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.min() > 0.4 * fg.sum() / 2


def test_weak_vote_peaks_and_small_objects_are_dropped() -> None:
    fg, _, offsets = _touching_pair(x1=20, x2=76, r=8)
    fg[5:7, 40:42] = 1.0  # 4 pixels voting for themselves: a density of at most 1 vote/px
    strict = labels_from_votes(fg, offsets, fg_threshold=0.5, min_votes=2.0, min_size_px=0)
    assert strict.max() == 2
    assert not strict[5:7, 40:42].any()  # not joined to a far nucleus either
    lax = labels_from_votes(fg, offsets, fg_threshold=0.5, min_votes=0.1, min_size_px=0)
    assert lax.max() == 3
    sized = labels_from_votes(fg, offsets, fg_threshold=0.5, min_votes=0.1, min_size_px=12)
    assert sized.max() == 2
    assert sorted(np.unique(sized).tolist()) == [0, 1, 2]  # numbered without gaps


def test_stray_votes_join_no_far_nucleus() -> None:
    """A noisy patch voting for itself is left out, not added to the nearest nucleus."""
    from scipy import ndimage

    fg, _, offsets = _touching_pair(x1=20, x2=76, r=8)
    fg[2:6, 2:6] = 1.0
    labels = labels_from_votes(fg, offsets, min_size_px=0)
    assert labels.max() == 2
    assert not labels[2:6, 2:6].any()
    for i in (1, 2):  # each nucleus one connected part
        assert ndimage.label(labels == i)[1] == 1


def test_empty_maps_give_empty_labels() -> None:
    empty = np.zeros((32, 40), np.float32)
    labels = labels_from_votes(empty, np.zeros((2, 32, 40), np.float32))
    assert labels.shape == (32, 40)
    assert labels.dtype == np.int32
    assert labels.max() == 0


@pytest.mark.parametrize(
    ("kind", "function"),
    [
        pytest.param("centre_votes", labels_from_votes, id="centre_votes"),
        pytest.param("distance_watershed", labels_from_maps, id="distance_watershed"),
    ],
)
def test_instance_labels_follow_the_cards_kind(kind: str, function: object) -> None:
    fg, dist, offsets = _touching_pair(x1=20, x2=76)
    maps = np.concatenate([fg[None], dist[None], offsets])
    pp = PostProcess(kind=kind, seed_threshold=0.3)  # type: ignore[arg-type]
    got = instance_labels(maps, pp)
    if kind == "centre_votes":
        want = labels_from_votes(fg, offsets, **pp.label_kwargs())
    else:
        want = labels_from_maps(fg, dist, **pp.label_kwargs())
    np.testing.assert_array_equal(got, want)
    assert got.max() == 2


def test_a_neighbour_map_parts_touching_nuclei_that_one_distance_dome_merges() -> None:
    """distance_watershed with ``neighbour_weight``: the dome minus the contact splits in two."""
    fg, dist, _ = _touching_pair()
    xx = np.arange(96, dtype=np.float32)[None, :].repeat(64, 0)
    # closeness to the other nucleus: 1 at the contact (x = 45), 0 from 8 px away
    neighbour = (np.clip(1 - np.abs(xx - 45) / 8, 0, 1) ** 2 * fg).astype(np.float32)
    maps = np.stack([fg, dist, neighbour])
    alone = PostProcess(seed_threshold=0.2, seed_h=0.1)
    assert instance_labels(maps, alone).max() == 1  # the third channel is not read
    parted = instance_labels(maps, alone.replace(neighbour_weight=1.0))
    assert parted.max() == 2
    assert parted[32, 34] != parted[32, 56]
    assert not np.any(parted[fg <= 0.5])
    truth = np.zeros(fg.shape, np.int32)
    truth[fg > 0.5] = np.where(xx < 45, 1, 2)[fg > 0.5]
    assert scores(match_counts(truth, parted))["map"] >= 0.9


def test_sizes_in_the_card_scale_with_the_frames_zoom() -> None:
    """Sizes in model pixels scale; those relative to the nuclei's radius do not."""
    pp = PostProcess(
        kind="centre_votes", min_size_px=40, vote_sigma=0.2, peak_radius=0.3, min_votes=1.5
    )
    kw = pp.label_kwargs(2.0)  # the model saw the frame zoomed 2x: its pixels are half ours
    assert kw == {
        "fg_threshold": 0.5,
        "min_size_px": 10,
        "min_score": 0.0,
        "min_votes": 1.5,
        "vote_sigma": 0.2,
        "peak_radius": 0.3,
    }


@pytest.mark.parametrize("zoom", [pytest.param(1, id="r12"), pytest.param(3, id="r4")])
def test_one_setting_serves_small_and_large_nuclei(zoom: int) -> None:
    """The same pair of touching nuclei at radius 12 and radius 4 px: two nuclei each time."""
    fg, _, offsets = _touching_pair(x1=34 // zoom + 8, x2=56 // zoom + 8, r=12 // zoom)
    rng = np.random.default_rng(1)
    noisy = offsets + rng.normal(0, 0.1 * 12 / zoom, offsets.shape).astype(np.float32) * fg
    labels = labels_from_votes(fg, noisy, min_size_px=0)
    assert labels.max() == 2


@pytest.mark.parametrize("scale", [pytest.param(0.5, id="shrunk"), pytest.param(2.0, id="zoomed")])
def test_offsets_come_back_in_the_frames_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scale: float
) -> None:
    """A frame zoomed by ``scale`` for the model: its vectors are divided by ``scale``."""
    import shutil

    import yaml

    folder = tmp_path / "votes"
    shutil.copytree(builtin_engines()["nuclei-unet"], folder)
    card = yaml.safe_load((folder / "card.yaml").read_text())
    card["outputs"][0]["channels"] = ["foreground", "distance", "offset_y", "offset_x"]
    (folder / "card.yaml").write_text(yaml.safe_dump(card))
    # (a card of four maps over a model of two, refused at load: the maps are faked below)
    monkeypatch.setattr(Engine, "_check_io", lambda self: None)
    engine = Engine(folder)

    def fake_infer(frame: np.ndarray, *, normalised: bool = False) -> np.ndarray:  # model maps
        maps = np.ones((4, *frame.shape), np.float32)
        maps[2], maps[3] = 3.0, -2.0
        return maps

    monkeypatch.setattr(engine, "infer", fake_infer)
    out = engine.infer_scaled(np.ones((64, 64), np.uint16), scale)
    assert out.shape == (4, 64, 64)
    np.testing.assert_allclose(out[:2], 1.0)
    np.testing.assert_allclose(out[2], 3.0 / scale)
    np.testing.assert_allclose(out[3], -2.0 / scale)
