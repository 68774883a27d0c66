"""Independent review of the scoring against ground truth (tracking evaluation, engine scores).

The tracking cases are CTC folders built by hand; a result that is the ground truth
itself scores TRA, DET and LNK 1 (AOGM 0), whatever its files are named.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.schema import LivescopeError
from livescope.tracking import evaluate_tracking


def _moving(t: int) -> np.ndarray:
    """Two cells that move 3 px a frame: frame t differs from every other frame."""
    f: np.ndarray = np.zeros((32, 64), np.uint16)
    f[2:10, 2 + 3 * t : 10 + 3 * t] = 1
    f[16:24, 2 + 3 * t : 10 + 3 * t] = 2
    return f


def _ctc(
    root: Path,
    frames: list[np.ndarray],
    *,
    res_name: Callable[[int], str] = "mask{:03d}.tif".format,
    gt_name: Callable[[int], str] = "man_track{:03d}.tif".format,
) -> tuple[Path, Path]:
    """A result folder and a ground-truth folder that both hold ``frames`` (two full tracks)."""
    res, tra = root / "res", root / "gt" / "TRA"
    res.mkdir()
    tra.mkdir(parents=True)
    for t, f in enumerate(frames):
        tifffile.imwrite(res / res_name(t), f)
        tifffile.imwrite(tra / gt_name(t), f)
    last = len(frames) - 1
    (res / "res_track.txt").write_text(f"1 0 {last} 0\n2 0 {last} 0\n")
    (tra / "man_track.txt").write_text(f"1 0 {last} 0\n2 0 {last} 0\n")
    return res, root / "gt"


@pytest.mark.parametrize(
    ("res_name", "gt_name"),
    [
        pytest.param("mask{}.tif".format, "man_track{:03d}.tif".format, id="unpadded-result"),
        pytest.param("mask{:03d}.tif".format, "man_track{}.tif".format, id="unpadded-truth"),
        pytest.param("mask{}.tif".format, "man_track{}.tif".format, id="both-unpadded"),
    ],
)
def test_frames_are_paired_by_their_number_not_their_name_order(
    tmp_path: Path, res_name: Callable[[int], str], gt_name: Callable[[int], str]
) -> None:
    """(py-ctcmetrics takes the files in name order: mask10.tif came before mask2.tif, and a
    result that is the truth itself scored TRA 0.08.)"""
    frames = [_moving(t) for t in range(12)]
    r, g = _ctc(tmp_path, frames, res_name=res_name, gt_name=gt_name)
    out = evaluate_tracking(r, g)
    assert (out["tra"], out["det"], out["lnk"], out["frames"]) == (1.0, 1.0, 1.0, 12)


def test_a_result_missing_a_frame_is_refused_not_paired_with_the_next(tmp_path: Path) -> None:
    """(mask005.tif missing and a mask012.tif beside the rest: as many files as the truth has
    frames, so every result frame from 5 on was scored against the truth's frame before it.)"""
    frames = [_moving(t) for t in range(13)]
    r, g = _ctc(tmp_path, frames)
    (r / "mask005.tif").unlink()
    (g / "TRA" / "man_track012.tif").unlink()
    with pytest.raises(LivescopeError, match=r"mask.*missing for 1 of frames 0\.\.12 \(5\)"):
        evaluate_tracking(r, g)


def test_a_frame_named_twice_is_refused(tmp_path: Path) -> None:
    frames = [_moving(t) for t in range(3)]
    r, g = _ctc(tmp_path, frames)
    tifffile.imwrite(r / "mask1.tif", frames[1])
    with pytest.raises(LivescopeError, match=r"mask001\.tif and .*mask1\.tif are both frame 1"):
        evaluate_tracking(r, g)


def test_a_copy_of_a_mask_beside_the_masks_is_not_a_frame(tmp_path: Path) -> None:
    """(``mask000 copy.tif`` was counted as a mask: '4 masks but ... 3 frames'.)"""
    frames = [_moving(t) for t in range(3)]
    r, g = _ctc(tmp_path, frames)
    tifffile.imwrite(r / "mask000 copy.tif", frames[2])
    out = evaluate_tracking(r, g)
    assert (out["tra"], out["det"], out["lnk"], out["frames"]) == (1.0, 1.0, 1.0, 3)


def test_an_invalid_result_with_unpadded_names_is_said_with_the_users_file_names(
    tmp_path: Path,
) -> None:
    frames = [_moving(t) for t in range(12)]
    r, g = _ctc(tmp_path, frames, res_name="mask{}.tif".format)
    tifffile.imwrite(r / "mask10.tif", np.where(frames[10] == 2, 0, frames[10]))
    with pytest.raises(LivescopeError, match=r"Label 2 in res_track but not in mask .*mask10\.tif"):
        evaluate_tracking(r, g)


def _division(root: Path, truth_marker_1: int) -> tuple[Path, Path]:
    """Cell 1 (frames 0-1) divides into 2 and 3 (frame 2); the truth's frame 1 holds
    ``truth_marker_1`` where the result holds 1."""
    res, tra = root / "res", root / "gt" / "TRA"
    res.mkdir()
    tra.mkdir(parents=True)
    for t in range(3):
        f: np.ndarray = np.zeros((32, 32), np.uint16)
        if t < 2:
            f[2:10, 2:10] = 1
        else:
            f[2:10, 2:10], f[16:24, 2:10] = 2, 3
        tifffile.imwrite(res / f"mask{t:03d}.tif", f)
        tifffile.imwrite(
            tra / f"man_track{t:03d}.tif", np.where(f == 1, truth_marker_1, f) if t == 1 else f
        )
    track = "1 0 1 0\n2 2 2 1\n3 2 2 1\n"
    (res / "res_track.txt").write_text(track)
    (tra / "man_track.txt").write_text(track)
    return res, root / "gt"


def test_a_division_matched_exactly_scores_one(tmp_path: Path) -> None:
    out = evaluate_tracking(*_division(tmp_path, truth_marker_1=1), div_tolerance=0)
    assert (out["tra"], out["divisions_true"], out["divisions_matched"]) == (1.0, 1, 1)


def test_truth_markers_without_a_linked_parent_are_named(tmp_path: Path) -> None:
    """(man_track.txt says cell 1 ends at frame 1 and divides; its marker there was erased:
    py-ctcmetrics raised a bare IndexError.)"""
    with pytest.raises(LivescopeError, match=r"links track 2 to its parent 1, but "
                       r"man_track001\.tif holds no label 1"):  # fmt: skip
        evaluate_tracking(*_division(tmp_path, truth_marker_1=0))


def test_truth_markers_without_any_cell_are_named(tmp_path: Path) -> None:
    """(man_track.txt lists tracks, its markers are empty: a bare ValueError from numpy.)"""
    frames = [_moving(t) for t in range(3)]
    r, g = _ctc(tmp_path, frames)
    for f in (g / "TRA").glob("man_track*.tif"):
        tifffile.imwrite(f, np.zeros((32, 64), np.uint16))
    with pytest.raises(LivescopeError, match=r"markers \(man_trackTTT\.tif\) hold no cell"):
        evaluate_tracking(r, g)


# --- engine scoring: flag_divisions_ctc ------------------------------------------------------


def test_two_images_for_one_annotated_frame_are_refused(tmp_path: Path) -> None:
    """(t1.tif beside t001.tif: one of the two was classified, whichever the folder listed
    first, without a word.)"""
    from livescope.inference import CellStateEngine
    from livescope.pipeline import flag_divisions_ctc
    from livescope.record import CtcTrack, write_ctc

    frames = [_moving(t)[:, :32] for t in range(3)]
    write_ctc(tmp_path / "gt", frames, [CtcTrack(1, 0, 2, 0), CtcTrack(2, 0, 2, 0)], kind="gt")
    img = tmp_path / "img"
    img.mkdir()
    for t in range(3):
        tifffile.imwrite(img / f"t{t:03d}.tif", np.full((32, 32), 100, np.uint16))
    tifffile.imwrite(img / "t1.tif", np.full((32, 32), 900, np.uint16))
    with (
        CellStateEngine("cell-state") as engine,
        pytest.raises(LivescopeError, match=r"t001\.tif and .*t1\.tif are both frame 1"),
    ):
        flag_divisions_ctc(engine, img, tmp_path / "gt", frames_before=1)
