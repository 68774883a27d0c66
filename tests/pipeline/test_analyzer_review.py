"""Review of the pipeline worker's analysis, results store and observations (real components)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq
from skimage.draw import disk

from livescope.bus import OverlaySubscriber
from livescope.pipeline import FrameAnalyzer, FrameResult, PipelineWorker, WorkerConfig
from livescope.pipeline._jobs import DecideJob, Field
from livescope.policy import Firing, Observation
from livescope.schema import load_profile
from livescope.scope import demo_sequence, run_simulated
from livescope.tracking import OnlineTracker, measure_objects
from tests.conftest import wait_for


def test_the_overlay_shows_the_z_plane_that_was_segmented(tmp_path: Path) -> None:
    # a z-stack field's labels come from its middle plane; the overlay's raw frames were the
    # last plane of each channel (a dict keyed by channel kept the last one): the nuclei
    # were outlined over a plane 4 µm above the one they were found in
    prof = load_profile("sim")
    run = tmp_path / "run"
    seq = demo_sequence(prof, timepoints=1, positions=1)
    seq = seq.model_copy(update={"z_plan": useq.ZRangeAround(range=8.0, step=4.0)})
    run_simulated(prof, seq, run, seed=3)
    records = [json.loads(line) for line in (run / "frames.jsonl").read_text().splitlines()]
    first = records[0]
    fld = Field(first["position"], 0, {}, first, 0, live=False)
    fld.note(first)
    cfg = WorkerConfig(segmenter="nuclei-unet", stain=None, states=None, backend="onnxruntime")
    w = PipelineWorker(run, cfg)
    try:
        w._complete(fld)  # every plane of both channels, read back from the recording
        assert len(fld.frames) == 6
        w.store.open_overlay("r", run)
        with OverlaySubscriber(run) as sub:

            def ping() -> bool:
                w.store.overlay.publish({"seq": 0, "position": "ping", "t": 0}, {})
                return sub.latest("ping") is not None

            wait_for(ping)
            w._analyse_field(fld)
            w._drain_decisions()
            w._drain_store()
            msg = wait_for(lambda: sub.latest(fld.position))
            raw = {k: np.array(a) for k, a in msg.arrays.items()}
    finally:
        summary = w._finish()
    assert summary["ok"] is True
    labels = raw["labels"]
    assert labels.max() > 3
    # which plane gave these labels: each DAPI plane segmented on its own
    px = float(first["pixel_size_um"])
    planes = sorted(z for (ch, z) in fld.frames if ch == "DAPI")
    assert prof.simulation is not None
    diameter = 2 * prof.simulation.nucleus_radius_um  # (the worker's, with none configured)
    with FrameAnalyzer(backend="onnxruntime", nucleus_diameter_um=diameter) as fa:
        own = {z: fa.analyse(fluorescence=fld.frames[("DAPI", z)], position=f"z{z}",
                             pixel_size_um=px).labels for z in planes}  # fmt: skip
    segmented = [z for z in planes if np.array_equal(np.asarray(own[z]), labels)]
    assert len(segmented) == 1
    (z,) = segmented
    np.testing.assert_array_equal(raw["raw:DAPI"], fld.frames[("DAPI", z)])
    np.testing.assert_array_equal(raw["raw:Phase"], fld.frames[("Phase", z)])


class EveryCell:
    """A Python policy that fires on each cell, recording what ``inputs(obs, i)`` gives."""

    def __init__(self, name: str, inputs: Callable[[Observation, int], dict[str, Any]]) -> None:
        self.name, self.inputs = name, inputs

    def decide(self, obs: Observation) -> list[Firing]:
        c = obs.cells
        return [
            Firing(self.name, "cell", obs.position, None, track=int(c.tracks[i]),
                   y=float(c.y[i]), x=float(c.x[i]), inputs=self.inputs(obs, i))
            for i in range(len(c))
        ]  # fmt: skip


def _no_nan(token: str) -> None:
    raise ValueError(f"{token} is not JSON")


def test_policy_log_lines_are_json_when_a_cells_value_is_nan(tmp_path: Path) -> None:
    # Cells documents NaN for a stage that did not run (no virtual stain here): a policy
    # logging what it saw wrote bare NaN into policy.jsonl, which is not JSON (jq, a
    # browser's JSON.parse and strict parsers refuse the line); its decision, as sent, says null
    cfg = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)
    stain_log = EveryCell("stain-log", lambda obs, i: {"stain": float(obs.cells.stain[i])})
    w = PipelineWorker(tmp_path, cfg, policies=[stain_log])
    labels = np.zeros((96, 128), np.int32)
    for i, (y, x) in enumerate(((30, 30), (70, 90)), 1):
        labels[disk((y, x), 6, shape=labels.shape)] = i
    nuclear = np.where(labels > 0, 500, 100).astype(np.uint16)
    tracker = w.analyzer.trackers.setdefault("p0", OnlineTracker())
    objects = measure_objects(labels, nuclear)
    res = FrameResult("p0", 0, labels=labels, tracks=tracker.update(objects, frame=0),
                      objects=objects)  # fmt: skip
    header = {"seq": 0, "x_um": 0.0, "y_um": 0.0, "sample_time_s": 0.0}
    fld = Field("p0", 0, {("DAPI", 0): nuclear}, header, 0, live=False)
    w._decide(DecideJob(fld, res, nuclear, 0.5, 0, 0, 0, tracker.snapshot()))
    assert w._finish()["ok"] is True
    lines = (tmp_path / "results" / "policy.jsonl").read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        rec = json.loads(line, parse_constant=_no_nan)
        assert rec["inputs"] == {"stain": None}


def test_a_frame_without_a_pixel_size_is_placed_by_the_profiles_objective(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a frame from a publisher of one's own without pixel_size_um: the policies took 1 µm per
    # pixel, so a close-up or recentring moved the stage by pixels (a cell 40 px off centre
    # was placed 40 µm away, not 40 x 0.65)
    cfg = WorkerConfig(segmenter=None, stain=None, states=None, overlay=False)
    # (each cell's stage place, and the field's µm per pixel)
    place_log = EveryCell(
        "place-log",
        lambda obs, i: {
            "px": obs.pixel_size_um,
            "xy": obs.stage_xy(obs.cells.y[i], obs.cells.x[i]),
        },
    )
    w = PipelineWorker(tmp_path, cfg, policies=[place_log])
    px = w.profile.objective.pixel_size_um
    assert px != 1.0
    labels = np.zeros((96, 128), np.int32)
    labels[disk((30, 30), 6, shape=labels.shape)] = 1
    nuclear = np.where(labels > 0, 500, 100).astype(np.uint16)
    tracker = w.analyzer.trackers.setdefault("p0", OnlineTracker())
    for t in (0, 1):  # (said once)
        objects = measure_objects(labels, nuclear)
        res = FrameResult("p0", t, labels=labels, tracks=tracker.update(objects, frame=t),
                          objects=objects)  # fmt: skip
        header = {"seq": t, "x_um": 0.0, "y_um": 0.0, "sample_time_s": 60.0 * t}
        fld = Field("p0", t, {("DAPI", 0): nuclear}, header, t, live=False)
        w._decide(DecideJob(fld, res, nuclear, None, t, t, t, tracker.snapshot()))
    assert w._finish()["ok"] is True
    lines = (tmp_path / "results" / "policy.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert [r["inputs"]["px"] for r in recs] == [px, px]
    x_um, y_um = recs[0]["inputs"]["xy"]  # (the cell: row 30, column 30 of a 96 x 128 field)
    assert (abs(x_um), abs(y_um)) == pytest.approx(((63.5 - 30) * px, (47.5 - 30) * px), rel=0.05)
    assert caplog.text.count("frames carry no pixel size") == 1
