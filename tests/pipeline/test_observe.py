"""What the policies see of a field: per-cell measurements in the tracks' order."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from livescope.pipeline import FrameResult
from livescope.pipeline._jobs import Field
from livescope.pipeline._observe import observe
from livescope.tracking import OnlineTracker, measure_objects


def _field_result(stain: bool) -> tuple[Field, FrameResult, np.ndarray, np.ndarray, OnlineTracker]:
    rng = np.random.default_rng(3)
    labels = np.zeros((96, 128), np.int32)
    # labels out of order and with gaps; one cell on the frame's edge
    for lab, (y, x, r) in zip((12, 3, 7, 40), ((20, 30, 8), (60, 90, 10), (70, 20, 6), (5, 120, 7)),
                              strict=True):  # fmt: skip
        labels[disk((y, x), r, shape=labels.shape)] = lab
    nuclear = rng.uniform(50, 500, labels.shape).astype(np.uint16)
    stain_map = rng.uniform(0, 1, labels.shape).astype(np.float32)
    tracker = OnlineTracker()
    objects = measure_objects(labels, nuclear)
    res = FrameResult(
        "A", 0, labels=labels, tracks=tracker.update(objects, frame=0),
        stain=stain_map if stain else None, objects=objects,
    )  # fmt: skip
    fld = Field("A", 0, {("DAPI", 0): nuclear}, {"seq": 1, "x_um": 0.0, "y_um": 0.0}, 0)
    return fld, res, nuclear, stain_map, tracker


@pytest.mark.parametrize("stain", [pytest.param(True, id="stain"), pytest.param(False, id="none")])
def test_cells_carry_their_own_mean_signal_and_stain(stain: bool) -> None:
    fld, res, nuclear, stain_map, tracker = _field_result(stain)
    obs = observe(
        fld, res, nuclear_frame=nuclear, pixel_size_um=0.5, run_id="r", engines={},
        tracker=tracker.snapshot(),
    )  # fmt: skip
    cells = obs.cells
    assert res.tracks is not None
    assert res.labels is not None
    assert cells.labels.tolist() == res.tracks.labels.tolist()
    assert sorted(cells.labels.tolist()) == [3, 7, 12, 40]
    for k, lab in enumerate(cells.labels.tolist()):
        mask = res.labels == lab
        assert cells.area[k] == mask.sum()
        assert cells.intensity[k] == pytest.approx(nuclear[mask].mean())
        if stain:
            assert cells.stain[k] == pytest.approx(float(stain_map[mask].mean()), rel=1e-6)
        else:
            assert np.isnan(cells.stain[k])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param({"sample_time_s": 600.0, "t_camera_ns": 5_000_000_000}, 600.0, id="stamped"),
        # a publisher of one's own may leave it out (wire protocol v1): the camera's clock,
        # in s, not the time index (a cooldown of 600 s would have lasted 600 time points)
        pytest.param({"sample_time_s": None, "t_camera_ns": 7_250_000_000}, 7.25, id="camera"),
        pytest.param({"t_camera_ns": 7_250_000_000}, 7.25, id="absent"),
    ],
)
def test_a_field_is_timed_by_its_sample_time_else_its_camera_stamp(
    header: dict[str, float | None], expected: float
) -> None:
    fld, res, nuclear, _, tracker = _field_result(False)
    fld = Field("A", 3, fld.frames, {**fld.header, **header}, 0)
    obs = observe(
        fld, res, nuclear_frame=nuclear, pixel_size_um=0.5, run_id="r", engines={},
        tracker=tracker.snapshot(),
    )  # fmt: skip
    assert obs.sample_time_s == expected


def test_a_z_stack_field_is_placed_at_the_middle_of_its_planes() -> None:
    # the header a field keeps is its last frame's: a z-stack's last plane; a close-up's
    # own z-stack centred there sat half a stack off the cells
    fld, res, nuclear, _, tracker = _field_result(False)
    stack = Field("A", 0, {}, {}, 0)
    for k, z in enumerate((9.0, 10.0, 11.0)):
        h = {"seq": 1 + k, "x_um": 0.0, "y_um": 0.0, "z_um": z, "index": {"t": 0, "z": k}}
        stack.frames[("DAPI", k)], stack.header = nuclear, h
        stack.note(h)
    obs = observe(
        stack, res, nuclear_frame=nuclear, pixel_size_um=0.5, run_id="r", engines={},
        tracker=tracker.snapshot(),
    )  # fmt: skip
    assert stack.header["z_um"] == 11.0
    assert obs.stage_um == (0.0, 0.0, 10.0)
    # one plane: its z; none given: none
    one = Field("A", 0, fld.frames, {**fld.header, "z_um": 4.0}, 0)
    assert one.z_centre_um() == 4.0
    assert fld.z_centre_um() is None


def test_a_cell_the_classifier_did_not_score_has_no_state() -> None:
    # its probabilities are NaN: argmax named the first NaN's class, so cells.csv and the
    # policies (a rule on state) had an unscored cell in interphase
    from livescope.inference import CellStates

    fld, res, nuclear, _, tracker = _field_result(False)
    classes = ("interphase", "prophase", "metaphase", "anaphase", "dead")
    probs = np.full((4, len(classes)), 0.05, np.float32)
    probs[:, 2] = 0.8  # (metaphase, where scored)
    probs[1] = np.nan  # label 7: not scored
    res.states = CellStates(np.array([3, 7, 12, 40]), probs, classes, ms=1.0)
    obs = observe(
        fld, res, nuclear_frame=nuclear, pixel_size_um=0.5, run_id="r", engines={},
        tracker=tracker.snapshot(),
    )  # fmt: skip
    state = dict(zip(obs.cells.labels.tolist(), obs.cells.state, strict=True))
    assert state == {3: "metaphase", 7: "", 12: "metaphase", 40: "metaphase"}
