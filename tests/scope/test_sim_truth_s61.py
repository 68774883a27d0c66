"""The simulator's truth of a frame, drawn later than the frame; trigger scoring at anaphase end.

The truth was drawn with the objective and camera ROI in use when it was asked
for, not the frame's: the ground-truth writer (on the writer thread, behind the
runner) or `truth_for` after the run then gave a mask at another scale (its
correlation with the frame -0.03, 0.93 right after the snap).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from livescope.pipeline import evaluate_triggers
from livescope.schema import FrameInfo, LivescopeError, load_profile
from livescope.scope import ANAPHASE_SHARE, GroundTruthWriter, SimulatedMicroscope

X_UM, Y_UM, WHEN_S = 37.0, -21.0, 600.0
PROFILE = load_profile("sim")
ANAPHASE_S = ANAPHASE_SHARE * PROFILE.simulation.mitosis_duration_s  # type: ignore[union-attr]


def _info(
    seq: int,
    position: str,
    *,
    pixel_size_um: float = 0.65,
    shape: tuple[int, int] = (512, 512),
    sample_time_s: float = WHEN_S,
) -> FrameInfo:
    return FrameInfo(
        seq=seq, index={"t": 0}, position=position, channel="DAPI", x_um=X_UM, y_um=Y_UM,
        z_um=0.0, exposure_ms=20.0, pixel_size_um=pixel_size_um, sample_time_s=sample_time_s,
        runner_time_ms=0.0, t_camera_ns=0, hardware_triggered=False, added_by=None,
        adler32=0, shape=shape, dtype="uint16", event={},
    )  # fmt: skip


def _snap(sim: SimulatedMicroscope, objective: str, roi: tuple[int, int, int, int] | None) -> Any:
    """Snap a frame at (X_UM, Y_UM, WHEN_S); return its info and its truth drawn right then."""
    core = sim.core
    core.setConfig("Objective", objective)
    if roi is None:
        core.clearROI()
    else:
        core.setROI(*roi)
    sim.set_time(WHEN_S)
    core.setXYPosition(X_UM, Y_UM)
    core.snapImage()
    image = np.asarray(core.getImage())
    info = _info(0, "A", pixel_size_um=core.getPixelSizeUm(), shape=image.shape)
    return info, sim.ground_truth()


def _change_optics(sim: SimulatedMicroscope) -> None:
    """The runner goes on: another objective, another ROI."""
    sim.core.setConfig("Objective", "40x")
    sim.core.setROI(10, 20, 300, 100)


@pytest.mark.parametrize(
    ("objective", "roi"),
    [
        pytest.param("10x", None, id="10x-whole-sensor"),
        pytest.param("20x", (100, 50, 256, 200), id="20x-roi"),
    ],
)
def test_truth_for_a_frame_is_its_own_after_the_objective_and_roi_changed(
    sim: SimulatedMicroscope, objective: str, roi: tuple[int, int, int, int] | None
) -> None:
    info, then = _snap(sim, objective, roi)
    assert then.cell_ids  # (cells in view: the comparison means something)
    _change_optics(sim)
    # (a frame's ROI is not recorded, only its shape: where it sat is said here)
    later = sim.truth_for(info) if roi is None else sim.truth_for(info, roi=roi)
    assert later.pixel_um == then.pixel_um
    assert np.array_equal(later.labels, then.labels)


def test_ground_truth_takes_the_frames_pixel_size_and_shape(sim: SimulatedMicroscope) -> None:
    info, then = _snap(sim, "10x", None)
    _change_optics(sim)
    assert (info["pixel_size_um"], info["shape"]) == (0.65, (512, 512))
    later = sim.ground_truth(WHEN_S, X_UM, Y_UM, pixel_size_um=0.65, shape=(512, 512))
    assert np.array_equal(later.labels, then.labels)
    # no keyword: the microscope as it is now (40x, its ROI), as before
    now = sim.ground_truth(WHEN_S, X_UM, Y_UM)
    assert (now.pixel_um, now.labels.shape) == (0.1625, (100, 300))


def test_the_writer_draws_each_frames_truth_with_its_own_objective(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # the writer thread reached the frame after the runner had switched the objective
    info, then = _snap(sim, "10x", None)
    _change_optics(sim)
    writer = GroundTruthWriter(sim, tmp_path)
    writer.write(np.zeros(info["shape"], np.uint16), info)
    written = tifffile.imread(tmp_path / "A" / "cell_ids" / "t0000.tif")
    assert np.array_equal(written, then.labels)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"pixel_size_um": 1.0}, "pixel size 1.0 µm: no objective", id="pixel-size"),
        pytest.param({"shape": (200, 256)}, r"shape \(200, 256\) is neither", id="roi-unknown"),
        pytest.param(
            {"shape": (200, 256), "roi": (0, 0, 256, 100)}, "cannot come from ROI", id="roi-shape"
        ),
        pytest.param({"roi": (400, 0, 256, 100)}, "is not on the 512 x 512", id="roi-off-sensor"),
    ],
)
def test_a_frames_geometry_that_cannot_be_reproduced_is_an_error(
    sim: SimulatedMicroscope, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(LivescopeError, match=match):
        sim.ground_truth(WHEN_S, X_UM, Y_UM, **kwargs)


@pytest.mark.parametrize(
    "failing",
    [
        pytest.param(_info(1, "B", sample_time_s=float("nan")), id="sample-time-nan"),
        pytest.param(_info(1, "B", pixel_size_um=1.0), id="no-objective-gives-it"),
    ],
)
def test_a_failed_truth_write_leaves_the_other_positions_truth_and_the_lineage(
    sim: SimulatedMicroscope, tmp_path: Path, failing: FrameInfo, caplog: pytest.LogCaptureFixture
) -> None:
    # B was listed before its truth was drawn: `close` then failed on it (IndexError) and
    # wrote no lineage.json, nor the truth of any position after it
    writer = GroundTruthWriter(sim, tmp_path)
    writer.write(np.zeros((512, 512), np.uint16), _info(0, "A"))
    with pytest.raises((ValueError, LivescopeError)):
        writer.write(np.zeros((512, 512), np.uint16), failing)
    writer.write(np.zeros((512, 512), np.uint16), _info(2, "C"))
    with caplog.at_level(logging.WARNING, logger="livescope"):
        writer.close()
    assert any(r.getMessage().startswith("B: no ground truth written") for r in caplog.records)
    assert (tmp_path / "lineage.json").is_file()
    assert list(writer.summary["positions"]) == ["A", "C"]
    assert (tmp_path / "C" / "TRA" / "man_track.txt").is_file()


def _daughter_run(tmp_path: Path, when_s: float) -> Path:
    """A daughter (cell 3, born at 1000 s of mother 1) in view at ``when_s``, a trigger on it."""
    truth = tmp_path / "ground_truth"
    (truth / "p0" / "cell_ids").mkdir(parents=True)
    lineage = [
        {"cell_id": 1, "parent_id": 0, "birth_s": -500.0, "end_s": 1000.0, "fate": "divided",
         "mitosis_onset_s": 100.0, "apoptosis_onset_s": None},
        {"cell_id": 3, "parent_id": 1, "birth_s": 1000.0, "end_s": None, "fate": "alive",
         "mitosis_onset_s": None, "apoptosis_onset_s": None},
    ]  # fmt: skip
    (truth / "lineage.json").write_text(json.dumps(lineage))
    m = np.zeros((64, 64), np.uint16)
    m[10:20, 10:20] = 3
    tifffile.imwrite(truth / "p0" / "cell_ids" / "t0000.tif", m)
    frame = {"seq": 0, "position": "p0", "index": {"t": 0}, "added_by": None,
             "sample_time_s": when_s, "channel": "DAPI"}  # fmt: skip
    (tmp_path / "frames.jsonl").write_text(json.dumps(frame) + "\n")
    (tmp_path / "results").mkdir()
    fired = {"rule": "m", "trigger": "mitosis", "position": "p0", "t": 0, "y": 15, "x": 15,
             "sample_time_s": when_s, "verdict": "accepted", "given_back": False}  # fmt: skip
    (tmp_path / "results" / "policy.jsonl").write_text(json.dumps(fired) + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("when_s", "mitotic"),
    [
        pytest.param(1000.0, True, id="at-birth"),
        pytest.param(1000.0 + ANAPHASE_S - 10.0, True, id="10-s-before-anaphase-ends"),
        pytest.param(1000.0 + ANAPHASE_S, False, id="at-anaphase-end"),
    ],
)
def test_a_daughter_is_mitotic_until_the_simulation_turns_it_to_interphase(
    tmp_path: Path, when_s: float, mitotic: bool
) -> None:
    # the simulation turns a daughter back to interphase at birth + anaphase exactly
    # (`>=`); scoring counted it still mitotic then (`<=`), a trigger on it right
    ev = evaluate_triggers(_daughter_run(tmp_path, when_s), PROFILE)
    (trigger,) = ev["triggers"]
    assert trigger["cell_id"] == 3
    assert trigger["ok"] is mitotic
    assert trigger["mitosis_of"] == (1 if mitotic else None)


def test_a_negative_seed_is_refused_naming_the_rule() -> None:
    with pytest.raises(LivescopeError, match=r"seed must be a whole number >= 0, got -1"):
        SimulatedMicroscope(seed=-1)
