"""Review of the cell-state classifier and the virtual stain: edge cases of cells, pixel sizes."""

from __future__ import annotations

import numpy as np
import pytest

from livescope.inference import CellStateEngine, EngineError, StainEngine, cell_crops
from livescope.inference._cellstate import MAX_BATCH
from livescope.scope import SimulatedView, simulated_views

STATES = "cell-state"


@pytest.fixture(scope="module")
def states() -> CellStateEngine:
    return CellStateEngine(STATES, backend="onnxruntime")


@pytest.fixture(scope="module")
def view() -> SimulatedView:
    return simulated_views(1, seed=7, objectives=("20x",))[0]


def _specks() -> tuple[np.ndarray, np.ndarray]:
    """A field whose only labelled objects are 1-px specks (debris)."""
    rng = np.random.default_rng(3)
    frame = rng.normal(200, 10, (96, 96)).clip(0, None).astype(np.uint16)
    labels = np.zeros(frame.shape, np.int32)
    for k, (y, x) in enumerate([(10, 12), (50, 45), (28, 38)], start=1):
        labels[y, x] = 10 * k
        frame[y, x] += 500
    return frame, labels


def test_a_field_whose_cells_all_vanish_in_the_zoom_out_has_no_states(
    states: CellStateEngine,
) -> None:
    # at 0.1 µm/px the frame is zoomed by ~0.31 to the card's 0.325 µm: 1-px specks fall
    # between the zoomed pixels, as they would zooming the whole frame
    frame, labels = _specks()
    card_px = states.card.pixel_size_um
    assert card_px is not None
    px = 0.1
    scale = states.pixel_scale(px)
    ids, _ = cell_crops(frame.astype(np.float32), labels, states.crop_px, scale=scale)
    assert ids.size == 0  # (what the case is about: none survives the zoom)
    res = states.classify(frame, labels, pixel_size_um=px)
    assert len(res) == 0
    assert res.probs.shape == (0, len(states.classes))
    assert res.p_mitosis.shape == (0,)
    assert res.labels == []
    # the same specks at the card's pixel size are classified (one row each)
    assert states.classify(frame, labels, pixel_size_um=card_px).ids.tolist() == [10, 20, 30]


@pytest.mark.parametrize(
    ("pixel", "message"),
    [(-1.0, "pixel size must be > 0"), (float("nan"), "pixel size must be > 0"),
     (6.5, "refusing to rescale")],
)  # fmt: skip
def test_a_bad_pixel_size_is_refused_with_or_without_cells(
    states: CellStateEngine, view: SimulatedView, pixel: float, message: str
) -> None:
    # as the stain engine does: whether a field happens to hold cells must not decide
    # whether a wrong pixel size passes
    with pytest.raises(EngineError, match=message):
        states.classify(view.fluorescence, view.labels, pixel_size_um=pixel)
    with pytest.raises(EngineError, match=message):
        states.classify(view.fluorescence, np.zeros_like(view.labels), pixel_size_um=pixel)


@pytest.mark.parametrize("max_batch", [0, -4, MAX_BATCH + 1])
def test_a_batch_size_the_engine_cannot_run_is_refused_when_loading(max_batch: int) -> None:
    with pytest.raises(EngineError, match=f"max_batch must be 1..{MAX_BATCH}"):
        CellStateEngine(STATES, backend="onnxruntime", max_batch=max_batch)


def test_cells_in_several_batches_with_sparse_shuffled_ids_keep_their_rows(
    states: CellStateEngine, view: SimulatedView
) -> None:
    # ids beyond 65535, gaps, an order unrelated to position; batches of 4 cells
    ref = states.classify(view.fluorescence, view.labels, pixel_size_um=view.pixel_um)
    assert len(ref) > 8
    rng = np.random.default_rng(5)
    new = np.zeros(int(view.labels.max()) + 1, np.int64)
    new[ref.ids] = rng.permutation(len(ref)) * 70_001 + 65_536
    relabelled = new[view.labels]
    small = CellStateEngine(STATES, backend="onnxruntime", max_batch=4)
    try:
        res = small.classify(view.fluorescence, relabelled, pixel_size_um=view.pixel_um)
    finally:
        small.close()
    order = np.argsort(new[ref.ids])
    np.testing.assert_array_equal(res.ids, new[ref.ids][order])
    np.testing.assert_allclose(res.probs, ref.probs[order], atol=1e-5)


def test_a_cell_at_each_corner_is_cut_zero_padded_around_its_centroid() -> None:
    labels = np.zeros((40, 30), np.int64)
    labels[0:3, 0:3] = 1  # centroid (1, 1)
    labels[37:40, 27:30] = 70_000  # centroid (38, 28)
    image = np.arange(1, 40 * 30 + 1, dtype=np.float32).reshape(40, 30)
    for size in (16, 15):
        ids, crops = cell_crops(image, labels, size)
        assert ids.tolist() == [1, 70_000]
        half = size // 2
        for k, (cy, cx) in enumerate([(1, 1), (38, 28)]):
            ref = np.zeros((size, size), np.float32)
            y0, x0 = cy - half, cx - half
            for dy in range(size):
                for dx in range(size):
                    if 0 <= y0 + dy < 40 and 0 <= x0 + dx < 30:
                        ref[dy, dx] = image[y0 + dy, x0 + dx]
            np.testing.assert_array_equal(crops[k, 0], ref)
            assert crops[k, 1].sum() == 9
            assert crops[k, 1, half, half] == 1


def test_stain_of_a_constant_frame_at_another_pixel_size_is_zero_at_its_size() -> None:
    with StainEngine("nuclei-stain", backend="onnxruntime") as stain:
        blank = np.full((120, 90), 7, np.uint16)
        res = stain.predict(blank, pixel_size_um=0.65)
        assert res.scale == pytest.approx(2.0)
        assert res.image.shape == blank.shape
        assert res.image.dtype == np.float32
        assert not res.image.any()


def test_mitosis_scores_are_undefined_not_zero_without_a_mitotic_cell(
    states: CellStateEngine, view: SimulatedView
) -> None:
    # fields whose scored cells are all interphase: recall has nothing to count, so it
    # (and F1) is undefined; 0.0 would read as a classifier that misses every mitosis
    from dataclasses import replace

    from livescope.pipeline import score_states_simulated
    from livescope.scope import CellState

    calm = {k: v for k, v in view.states.items() if v[0] == CellState.INTERPHASE}
    assert calm  # (what the case is about: some interphase cells, no mitotic one)
    seen: list[tuple[int, int]] = []
    out = score_states_simulated(
        states, [replace(view, states=calm)], progress=lambda k, n: seen.append((k, n))
    )
    assert out["mitotic_cells"] == 0
    assert out["cells"] == len(calm)
    assert out["mitosis_recall"] is None
    assert out["mitosis_f1"] is None
    # precision is undefined too unless an interphase cell was flagged (then it is 0.0)
    assert out["mitosis_precision"] in (None, 0.0)
    assert seen == [(1, 1)]
