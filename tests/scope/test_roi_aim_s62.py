"""A camera ROI off the sensor's centre: frames record where they sit, and cells are aimed by it.

The stage position is the whole sensor's centre. A frame of a ROI off it was
taken as centred there, and every close-up and recentring on a cell in it missed
by the ROI's offset (ROI 0, 0, 256, 256 of the 512² sensor: 120 µm).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq

from livescope.pipeline import FrameResult
from livescope.pipeline._jobs import Field
from livescope.pipeline._observe import observe, roi_offset_um
from livescope.policy import Observation
from livescope.schema import HeaderError, check_header, decode_header, encode_header
from livescope.scope import LivescopeEngine, ScopeAgent, SimulatedMicroscope, demo_sequence
from livescope.scope._engine import META_ROI_OFFSET, roi_offset_px
from livescope.tracking import OnlineTracker, measure_objects

ROIS = [
    pytest.param((0, 0, 256, 256), (-128.0, -128.0), id="top-left-quarter"),
    pytest.param((300, 40, 200, 120), (144.0, -156.0), id="off-centre-oblong"),
    pytest.param((128, 128, 256, 256), (0.0, 0.0), id="centred"),
    pytest.param(None, (0.0, 0.0), id="whole-sensor"),
]


def _run(sim: SimulatedMicroscope, run: Path, roi: tuple[int, int, int, int] | None) -> list[Any]:
    """Run 1 position x 2 time points with ``roi`` set; return each frame's engine metadata."""
    if roi is not None:
        sim.core.setROI(*roi)
    metas: list[Any] = []
    sim.core.mda.events.frameReady.connect(lambda _img, _ev, meta: metas.append(meta))
    seq = demo_sequence(sim.profile, timepoints=2, positions=1, interval_s=60.0)
    agent = ScopeAgent(sim.core, sim.profile, seq, run, sim=sim, bus="off")
    assert agent.run()["ok"]
    return metas


def _misses_um(
    sim: SimulatedMicroscope, meta: Any, roi: tuple[int, int, int, int] | None
) -> list[float]:
    """How far from each cell whole in the frame its aim (`Observation.stage_xy`) is, µm."""
    t, (x, y) = meta["livescope.sample_time_s"], (meta["position"]["x"], meta["position"]["y"])
    px = meta["pixel_size_um"]
    truth = sim.ground_truth(t, x, y, pixel_size_um=px, roi=roi)
    h, w = truth.labels.shape
    header = {"x_um": x, "y_um": y, "pixel_size_um": px, "roi_offset_px": meta[META_ROI_OFFSET]}
    obs = Observation(
        run_id="r", seq=0, position="p0", t=0, sample_time_s=t, pixel_size_um=px, shape=(h, w),
        stage_um=(x, y, None), roi_offset_um=roi_offset_um(header, px),
    )  # fmt: skip
    state = sim.sample.state_at(t)
    at = {int(i): k for k, i in enumerate(state.ids.tolist())}
    misses = []
    for cid in truth.cell_ids:
        rr, cc = np.nonzero(truth.labels == cid)
        if rr.min() == 0 or cc.min() == 0 or rr.max() == h - 1 or cc.max() == w - 1:
            continue  # (cut by the frame's edge: its centroid is not the cell's)
        sx, sy = obs.stage_xy(float(rr.mean()), float(cc.mean()))
        k = at[cid]
        misses.append(float(np.hypot(sx - state.x_um[k], sy - state.y_um[k])))
    return misses


@pytest.mark.parametrize(("roi", "offset"), ROIS)
def test_a_cell_in_a_roi_off_the_sensors_centre_is_aimed_at_where_it_is(
    sim: SimulatedMicroscope,
    tmp_path: Path,
    roi: tuple[int, int, int, int] | None,
    offset: tuple[float, float],
) -> None:
    # each frame's metadata says where it sits on the sensor; a cell's aim from it (as a
    # close-up's or a recentring's) is on the cell, not the ROI's offset away
    metas = _run(sim, tmp_path / "run", roi)
    assert len(metas) == 4  # (1 position x 2 time points x 2 channels)
    for meta in metas:
        assert tuple(meta[META_ROI_OFFSET]) == offset
    misses = [miss for meta in metas for miss in _misses_um(sim, meta, roi)]
    assert len(misses) >= 4
    assert max(misses) < 2.0, misses  # (a nucleus is ~12 µm across; 0.65 µm pixels)


def test_a_roi_changed_between_frames_is_read_for_the_next(sim: SimulatedMicroscope) -> None:
    # the ROI is read for every frame (worked out again only when it changed)
    engine = LivescopeEngine(sim.core, sim.profile, sim)
    event = useq.MDAEvent()
    offsets: list[Any] = []
    for roi in [None, (0, 0, 256, 256), (0, 0, 256, 256), None]:
        sim.core.setROI(*roi) if roi else sim.core.clearROI()
        offsets.append(dict(engine.get_frame_metadata(event))[META_ROI_OFFSET])
    assert offsets == [(0.0, 0.0), (-128.0, -128.0), (-128.0, -128.0), (0.0, 0.0)]


@pytest.mark.parametrize(
    ("roi", "binning", "offset"),
    [
        pytest.param((0, 0, 512, 512), 1, (0.0, 0.0), id="whole"),
        pytest.param((0, 0, 256, 256), 2, (0.0, 0.0), id="whole-binned"),
        pytest.param((0, 0, 128, 128), 2, (-64.0, -64.0), id="binned-quarter"),
        pytest.param((10, 20, 101, 51), 1, (-195.5, -210.5), id="odd-size"),
        pytest.param((0, 0, 170, 170), 3, (0.0, 0.0), id="binning-3-whole"),  # (512 // 3)
        pytest.param((300, 0, 256, 256), 1, None, id="off-the-sensor"),
        pytest.param((0, 0, 300, 300), 2, None, id="larger-than-binned-sensor"),
    ],
)
def test_the_roi_offset_is_in_the_frames_binned_pixels(
    roi: tuple[int, int, int, int], binning: int, offset: tuple[float, float] | None
) -> None:
    # Micro-Manager's ROI is in the camera's pixels at its binning; the sensor's centre too
    assert roi_offset_px(roi, binning, (512, 512)) == offset


def test_observe_aims_by_the_headers_roi_offset_in_its_own_pixels() -> None:
    # a cell at the middle of a frame whose ROI centre is 100 columns right and 40 rows up
    # of the sensor's: 50 µm, -20 µm from the stage position at 0.5 µm per pixel
    labels = np.zeros((128, 128), np.int32)
    labels[60:68, 60:68] = 1
    nuclear = np.full(labels.shape, 300, np.uint16)
    tracker = OnlineTracker()
    objects = measure_objects(labels, nuclear)
    res = FrameResult("A", 0, labels=labels, tracks=tracker.update(objects, frame=0),
                      objects=objects)  # fmt: skip
    header = {"seq": 1, "x_um": 1000.0, "y_um": 2000.0, "pixel_size_um": 0.5,
              "roi_offset_px": [100.0, -40.0]}  # fmt: skip
    fld = Field("A", 0, {("DAPI", 0): nuclear}, header, 0)
    obs = observe(fld, res, nuclear_frame=nuclear, pixel_size_um=0.5, run_id="r", engines={},
                  tracker=tracker.snapshot())  # fmt: skip
    assert obs.roi_offset_um == (50.0, -20.0)
    (y,), (x,) = obs.cells.y.tolist(), obs.cells.x.tolist()
    assert obs.stage_xy(y, x) == pytest.approx((1050.0, 1980.0))
    # turned as the pixels are: the frame's columns along -y, rows along +x
    turned = Observation(**{**obs.__dict__, "orientation": (0.0, 1.0, -1.0, 0.0)})
    assert turned.stage_xy(y, x) == pytest.approx((980.0, 1950.0))


@pytest.mark.parametrize(
    ("header", "offset"),
    [
        pytest.param({}, (0.0, 0.0), id="recorded-before"),
        pytest.param({"roi_offset_px": None}, (0.0, 0.0), id="none"),
        pytest.param({"roi_offset_px": [1.0]}, (0.0, 0.0), id="one-number"),
        pytest.param({"roi_offset_px": ["a", 1]}, (0.0, 0.0), id="text"),
        pytest.param({"roi_offset_px": [float("nan"), 1.0]}, (0.0, 0.0), id="nan"),
        pytest.param({"roi_offset_px": [2, -4]}, (1.0, -2.0), id="the-frames-own-pixel-size"),
        pytest.param(
            {"roi_offset_px": [2, -4], "pixel_size_um": 0.0}, (2.0, -4.0), id="else-the-cells"
        ),
    ],
)
def test_a_frame_without_a_usable_roi_offset_is_taken_as_centred(
    header: dict[str, Any], offset: tuple[float, float]
) -> None:
    assert roi_offset_um({"pixel_size_um": 0.5, **header}, 1.0) == offset


def _header(**extra: Any) -> dict[str, Any]:
    return {
        "v": 1, "run_id": "r", "seq": 0, "index": {"t": 0}, "channel": "DAPI",
        "position": "A", "x_um": 0.0, "y_um": 0.0, "z_um": None, "exposure_ms": 10.0,
        "pixel_size_um": 0.65, "t_camera_ns": 1, "t_agent_ns": 2, "t_sent_ns": 3,
        "shape": [4, 4], "dtype": "uint16", "payload": "inline", "shm": None,
        "sample_time_s": 0.0, "added_by": None, **extra,
    }  # fmt: skip


def test_a_header_carries_the_roi_offset_and_one_without_it_is_as_before() -> None:
    got = decode_header(json.dumps(_header(roi_offset_px=[-128, 64.5])).encode(), 32)
    assert got["roi_offset_px"] == [-128.0, 64.5]
    assert "roi_offset_px" not in decode_header(json.dumps(_header()).encode(), 32)
    header = decode_header(json.dumps(_header(roi_offset_px=None)).encode(), 32)
    assert "roi_offset_px" not in header
    check_header({**got, "roi_offset_px": (1.0, 2.0)})  # (a sender may build a tuple)
    assert decode_header(encode_header(got), 32) == got


@pytest.mark.parametrize(
    "bad",
    [[1.0], [1.0, 2.0, 3.0], "12", [True, 0], [1e300, 0], [0, 10**400], {"x": 1}],
    ids=["one", "three", "text", "bool", "huge", "huge-int", "object"],
)
def test_a_header_with_a_bad_roi_offset_is_refused(bad: Any) -> None:
    with pytest.raises(HeaderError, match="roi_offset_px"):
        decode_header(json.dumps(_header(roi_offset_px=bad)).encode(), 32)
