"""The simulator's tracking truth over time points that were not acquired.

A time point the rig refused is an empty frame in the truth and in the worker's
result. The truth cut every track there (its gap of 2 frames was over
``max_link_gap=1``) while the result links it, so a perfect result scored each
of those links as a redundant edge (TRA 0.98, LNK 0.78).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.record import CtcTrack, read_ctc, relabel_for_ctc, rewrite_ctc_result
from livescope.schema import FrameInfo
from livescope.scope import GroundTruthWriter, SimulatedMicroscope
from livescope.tracking import evaluate_tracking


def _frame(*blobs: tuple[int, int]) -> np.ndarray:
    f = np.zeros((40, 40), np.uint16)
    for obj, c in blobs:
        f[5 + 10 * obj : 10 + 10 * obj, c : c + 5] = obj
    return f


def _info(seq: int, t: int, interval_s: float) -> FrameInfo:
    return FrameInfo(
        seq=seq, index={"t": t}, position="p0", channel="DAPI", x_um=0.0, y_um=0.0,
        z_um=0.0, exposure_ms=20.0, pixel_size_um=0.65, sample_time_s=interval_s * t,
        runner_time_ms=0.0, t_camera_ns=0, hardware_triggered=False, added_by=None,
        adler32=0, shape=(512, 512), dtype="uint16", event={},
    )  # fmt: skip


def test_perfect_result_scores_one_over_a_time_point_not_acquired(
    sim: SimulatedMicroscope, tmp_path: Path
) -> None:
    # t=3 refused by the rig: the truth's cell ids as they were acquired, made a result as
    # the worker makes one, must score as the truth itself
    writer = GroundTruthWriter(sim, tmp_path / "truth")
    for seq, t in enumerate((0, 1, 2, 4, 5)):
        writer.write(np.zeros((512, 512), np.uint16), _info(seq, t, 60.0))
    writer.close()
    raw = tmp_path / "raw"
    raw.mkdir()
    for p in sorted((tmp_path / "truth" / "p0" / "cell_ids").glob("t*.tif")):
        shutil.copy(p, raw / f"mask{int(p.stem[1:]):03d}.tif")
    parent_of = {r.cell_id: r.parent_id for r in sim.lineage()}
    rewrite_ctc_result(raw, parent_of, out=tmp_path / "res")
    scores = evaluate_tracking(tmp_path / "res", tmp_path / "truth" / "p0")
    assert (scores["tra"], scores["det"], scores["lnk"]) == (1.0, 1.0, 1.0)
    frames, tracks = read_ctc(tmp_path / "truth" / "p0", kind="gt")
    assert len(frames) == 6
    assert not frames[3].any()
    assert any(t.end == 2 for t in tracks)  # (cells in view on both sides of the gap)
    assert all(t.parent for t in tracks if t.begin == 4)


def test_gap_over_frames_not_acquired_links_like_the_result(tmp_path: Path) -> None:
    # frame 3 not acquired: cells 1 and 2 go on after it as the worker's result has them
    ids = [_frame((1, 2 + t), (2, 20)) if t != 3 else _frame() for t in range(6)]
    _, tracks, _ = relabel_for_ctc(ids, {}, max_link_gap=1, not_acquired={3})
    for f, frame in enumerate(ids):
        if f != 3:
            tifffile.imwrite(tmp_path / f"mask{f:03d}.tif", frame)
    assert tracks == rewrite_ctc_result(tmp_path, {}, out=tmp_path / "res")
    assert tracks == [
        CtcTrack(1, 0, 2, 0),
        CtcTrack(2, 0, 2, 0),
        CtcTrack(3, 4, 5, 1),
        CtcTrack(4, 4, 5, 2),
    ]


@pytest.mark.parametrize(
    ("ids", "parent_of", "not_acquired", "linked"),
    [
        pytest.param(
            [_frame((1, 2)), _frame(), _frame((2, 2)), _frame((2, 3))],
            {2: 1}, {1}, True, id="daughter-after-a-time-point-not-acquired",
        ),
        pytest.param(
            [_frame((1, 2)), _frame(), _frame(), _frame((1, 3))],
            {}, {1}, False, id="cell-also-absent-from-an-acquired-frame",
        ),
        pytest.param(
            [_frame((1, 2)), _frame(), _frame(), _frame((2, 3))],
            {2: 1}, {2}, False, id="daughter-also-absent-from-an-acquired-frame",
        ),
        pytest.param(
            [_frame((1, 2)), _frame(), _frame(), _frame((1, 3))],
            {}, {1, 2}, True, id="two-time-points-not-acquired",
        ),
    ],
)  # fmt: skip
def test_gap_counts_acquired_frames_only(
    ids: list[np.ndarray], parent_of: dict[int, int], not_acquired: set[int], linked: bool
) -> None:
    # a cell that left the view (or a daughter that drifted in) in an acquired frame is
    # still cut: no tracker could have seen it there
    _, tracks, _ = relabel_for_ctc(ids, parent_of, max_link_gap=1, not_acquired=not_acquired)
    assert [t.parent for t in tracks] == [0, 1 if linked else 0]
