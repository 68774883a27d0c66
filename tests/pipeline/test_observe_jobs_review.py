"""Review of the worker's per-field observation and its config read from JSON."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.draw import disk

from livescope.inference import CellStates
from livescope.pipeline import FrameResult, WorkerConfig
from livescope.pipeline._jobs import Field
from livescope.pipeline._observe import observe
from livescope.schema import LivescopeError
from livescope.tracking import OnlineTracker, measure_objects

# ---------------------------------------------------------------- the config from JSON


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param('{"maxlen": "256"}', "maxlen", id="int-as-text"),
        pytest.param('{"maxlen": true}', "maxlen", id="int-as-bool"),
        pytest.param('{"maxlen": 2.5}', "maxlen", id="int-as-float"),
        pytest.param('{"overlay": "false"}', "overlay", id="bool-as-text"),
        pytest.param('{"watch_parent": 1}', "watch_parent", id="bool-as-int"),
        pytest.param('{"segmenter": 3}', "segmenter", id="text-as-int"),
        pytest.param('{"decision_timeout_s": "2"}', "decision_timeout_s", id="float-as-text"),
        pytest.param('{"decision_timeout_s": null}', "decision_timeout_s", id="null-not-allowed"),
        pytest.param('{"idle_s": NaN}', "idle_s", id="float-nan"),
    ],
)
def test_a_worker_config_value_of_the_wrong_type_is_an_error_naming_its_key(
    text: str, key: str
) -> None:
    # (a hand-written "overlay": "false" was taken as it was: the overlay ran, a truthy
    # string; "maxlen": "256" failed deep in the bus with no word of the config)
    with pytest.raises(LivescopeError, match=rf"worker config: {key} must be"):
        WorkerConfig.from_json(text)


@pytest.mark.parametrize(
    "text",
    [pytest.param('["maxlen"]', id="list"), pytest.param('"maxlen"', id="text")],
)
def test_a_worker_config_that_is_no_json_object_is_an_error(text: str) -> None:
    with pytest.raises(LivescopeError, match="must be a JSON object"):
        WorkerConfig.from_json(text)


def test_a_worker_config_takes_whole_numbers_for_seconds_and_round_trips() -> None:
    cfg = WorkerConfig.from_json('{"idle_s": 5, "decision_timeout_s": 1, "plan": null}')
    assert cfg.idle_s == 5.0
    assert isinstance(cfg.idle_s, float)
    assert cfg.decision_timeout_s == 1.0
    assert isinstance(cfg.decision_timeout_s, float)
    odd = WorkerConfig(profile="rig.yaml", stain=None, maxlen=64, idle_s=2.5, overlay=False)
    assert WorkerConfig.from_json(odd.to_json()) == odd


# ---------------------------------------------------------------- the observation


def _segmented(
    shape: tuple[int, int], cells: list[tuple[int, int, int, int]]
) -> tuple[FrameResult, np.ndarray, OnlineTracker]:
    labels = np.zeros(shape, np.int32)
    for lab, y, x, r in cells:
        labels[disk((y, x), r, shape=shape)] = lab
    nuclear = np.full(shape, 300, np.uint16)
    tracker = OnlineTracker()
    objects = measure_objects(labels, nuclear)
    res = FrameResult("A", 0, labels=labels, tracks=tracker.update(objects, frame=0),
                      objects=objects)  # fmt: skip
    return res, nuclear, tracker


def test_a_cell_is_placed_on_the_stage_by_its_labels_frame_not_the_fields_first() -> None:
    # a label-free channel binned 2x (256²) acquired before the 512² DAPI frame that was
    # segmented: the field's shape was its first frame's, and a cell at the DAPI frame's
    # middle was put 128 px (here 64 µm) off the stage position, as every close-up on it
    res, nuclear, tracker = _segmented((512, 512), [(1, 256, 256, 12)])
    phase = np.zeros((256, 256), np.uint16)
    fld = Field("A", 0, {("Phase", 0): phase, ("DAPI", 0): nuclear},
                {"seq": 2, "x_um": 1000.0, "y_um": 2000.0}, 0)  # fmt: skip
    obs = observe(fld, res, nuclear_frame=nuclear, pixel_size_um=0.5, run_id="r", engines={},
                  tracker=tracker.snapshot())  # fmt: skip
    assert obs.shape == (512, 512)
    (y,), (x,) = obs.cells.y.tolist(), obs.cells.x.tolist()
    sx, sy = obs.stage_xy(y, x)
    assert sx == pytest.approx(1000.0 + (x - 255.5) * 0.5)
    assert sy == pytest.approx(2000.0 + (y - 255.5) * 0.5)
    assert abs(sx - 1000.0) < 1
    assert abs(sy - 2000.0) < 1


def test_a_cell_the_classifier_did_not_score_has_no_p_mitosis() -> None:
    # a probability row with a NaN gives no state (argmax would name the NaN's class):
    # nor may it give a p_mitosis, or a mitosis rule fired on a cell the results store
    # (`FrameResult.cell_table`) says was not scored
    res, nuclear, tracker = _segmented((96, 96), [(1, 30, 30, 8), (2, 60, 60, 8)])
    classes = ("interphase", "prophase", "metaphase", "anaphase", "dead")
    probs = np.array([[np.nan, 0.3, 0.4, 0.2, 0.0], [0.1, 0.3, 0.4, 0.2, 0.0]], np.float32)
    res.states = CellStates(np.array([1, 2], np.int64), probs, classes, 0.0)
    fld = Field("A", 0, {("DAPI", 0): nuclear}, {"seq": 1}, 0)
    obs = observe(fld, res, nuclear_frame=nuclear, pixel_size_um=0.5, run_id="r", engines={},
                  tracker=tracker.snapshot())  # fmt: skip
    by_label = dict(zip(obs.cells.labels.tolist(), obs.cells.p_mitosis.tolist(), strict=True))
    states = dict(zip(obs.cells.labels.tolist(), obs.cells.state, strict=True))
    table = {row["label"]: row for row in res.cell_table()}
    assert states == {1: "", 2: "metaphase"}
    assert math.isnan(by_label[1])
    assert "p_mitosis" not in table[1]
    assert by_label[2] == pytest.approx(0.9) == table[2]["p_mitosis"]
