"""Second review of the per-field analysis (real engines on small synthetic fields)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from skimage.draw import disk

from livescope.inference import CellStates
from livescope.pipeline import FrameAnalyzer, FrameResult
from livescope.schema import LivescopeError
from livescope.tracking import OnlineTracker, measure_objects


def _field(px: float, seed: int, shape: tuple[int, int] = (256, 256)) -> np.ndarray:
    """A 3x3 grid of 12 µm nuclei, 25 µm apart, centred on the field, at ``px`` µm/pixel."""
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 3, shape)
    for dy in (-25, 0, 25):
        for dx in (-25, 0, 25):
            centre = (shape[0] / 2 + dy / px, shape[1] / 2 + dx / px)
            img[disk(centre, 6.0 / px, shape=shape)] += 700
    return np.asarray(img.clip(0, None), np.uint16)


def test_tracks_are_not_continued_across_a_change_of_objective() -> None:
    # the same nine nuclei at 10x, again at 10x, then at 20x (the stage did not move): in
    # pixels the middle one sits where it was, and the tracker continued its 10x track with
    # a cell twice the size, while the other eight were born anew
    with FrameAnalyzer(backend="onnxruntime", nucleus_diameter_um=12) as fa:
        a = fa.analyse(fluorescence=_field(0.65, 0), pixel_size_um=0.65)
        again = fa.analyse(fluorescence=_field(0.65, 1), pixel_size_um=0.65)
        unknown = fa.analyse(fluorescence=_field(0.65, 2))  # (no pixel size: no change)
        b = fa.analyse(fluorescence=_field(0.325, 3), pixel_size_um=0.325)
        lineage = fa.trackers["p0"].lineage
    assert a.tracks is not None
    assert again.tracks is not None
    assert unknown.tracks is not None
    assert b.tracks is not None
    before = set(a.tracks.track_ids.tolist())
    assert len(before) == 9
    # the same view: every track goes on
    assert set(again.tracks.track_ids.tolist()) == before == set(unknown.tracks.track_ids.tolist())
    after = b.tracks.track_ids.tolist()
    assert len(after) == 9
    assert not before & set(after)  # no 20x cell continues a 10x track
    assert min(after) > max(before)  # (new ids: none reused)
    assert set(b.tracks.born) == set(after)
    assert set(b.tracks.lost) == before  # the 10x tracks end here
    assert before <= set(lineage)  # their lineage is kept


def _counted(calls: list[str], name: str, real: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return real(*args, **kwargs)

    return call


def test_a_warm_up_at_40x_gives_the_classifier_cells() -> None:
    # the warm-up's discs were 16 px whatever the objective: at 40x, shrunk 4x to the
    # segmentation's nucleus size, none was found and the classifier was never run
    with FrameAnalyzer(states="cell-state", backend="onnxruntime", nucleus_diameter_um=12) as fa:
        calls: list[str] = []
        assert fa.states is not None
        fa.states.classify = _counted(calls, "classify", fa.states.classify)  # type: ignore[method-assign]
        fa.warm_up((256, 256), 0.1625)
    assert calls == ["classify"]


def test_a_cell_the_classifier_did_not_score_has_no_state_in_the_cell_table() -> None:
    # NaN probabilities: argmax named the first NaN's class (interphase) and p_mitosis NaN
    labels = np.zeros((64, 64), np.int32)
    labels[disk((20, 20), 5, shape=labels.shape)] = 1
    labels[disk((44, 44), 5, shape=labels.shape)] = 2
    objects = measure_objects(labels)
    tracks = OnlineTracker().update(objects, frame=0)
    classes = ("interphase", "prophase", "metaphase", "anaphase", "dead")
    probs = np.array([[np.nan] * 5, [0.1, 0.6, 0.1, 0.1, 0.1]], np.float32)
    states = CellStates(np.array([1, 2], np.int64), probs, classes, 0.0)
    res = FrameResult("p0", 0, labels=labels, tracks=tracks, states=states, objects=objects)
    rows = {row["label"]: row for row in res.cell_table()}
    assert set(rows) == {1, 2}
    assert "state" not in rows[1]
    assert "p_mitosis" not in rows[1]
    assert rows[2]["state"] == "prophase"
    assert rows[2]["p_mitosis"] == pytest.approx(0.8, abs=1e-4)


@pytest.mark.parametrize(
    "shape",
    [pytest.param((0, 64), id="no-rows"), pytest.param((0, 0), id="no-pixels")],
)
def test_a_frame_without_pixels_is_refused_by_name(shape: tuple[int, int]) -> None:
    with (
        FrameAnalyzer(backend="onnxruntime") as fa,
        pytest.raises(LivescopeError, match="fluorescence frame has no pixels"),
    ):
        fa.analyse(fluorescence=np.zeros(shape, np.uint16))


@pytest.mark.parametrize(
    "px",
    [
        pytest.param(0.0, id="zero (Micro-Manager uncalibrated)"),
        pytest.param(math.nan, id="nan"),
        pytest.param(-0.65, id="negative"),
    ],
)
def test_a_pixel_size_that_is_no_size_is_refused_by_name(px: float) -> None:
    # 0 was taken as unknown by the segmentation (nuclei at the wrong scale, silently);
    # NaN or a negative one was blamed on the nucleus diameter
    with (
        FrameAnalyzer(backend="onnxruntime", nucleus_diameter_um=12) as fa,
        pytest.raises(LivescopeError, match=r"pixel size must be a number > 0 µm.*None"),
    ):
        fa.analyse(fluorescence=_field(0.65, 0), pixel_size_um=px)


def test_a_cell_state_engine_that_does_not_load_closes_the_stain_engine() -> None:
    # the stain engine loaded first kept its session (device memory) for as long as the
    # half-made analyser lived: in a notebook, the traceback kept it
    with pytest.raises(LivescopeError) as info:
        FrameAnalyzer(stain="nuclei-stain", states="no-such-engine", backend="onnxruntime")
    tb = info.tb
    made = []
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, FrameAnalyzer):
            made.append(owner)
        tb = tb.tb_next
    assert made, "the half-made analyser is in the traceback"
    assert made[0].stain is not None
    assert made[0].stain.session is None


@pytest.mark.parametrize(
    "diameter",
    [pytest.param(0.0, id="zero"), pytest.param(math.nan, id="nan"), pytest.param(-12, id="neg")],
)
def test_a_nucleus_diameter_that_is_no_size_is_refused_before_any_field(diameter: float) -> None:
    # it was taken as given: a field without a pixel size ignored it, one with a pixel size
    # failed on "object diameter must be > 0 px", the pixel diameter the user never gave
    with pytest.raises(LivescopeError, match=r"nucleus diameter must be a number > 0 µm"):
        FrameAnalyzer(backend="onnxruntime", nucleus_diameter_um=diameter)
