"""Independent review of the evaluation metrics: hand-built cases with hand-computed answers.

Segmentation (``livescope.inference._metrics``) is checked against the StarDist /
DSB2018 convention (AP = TP / (TP + FP + FN) at an IoU threshold, matched one to one);
tracking (``livescope eval track``) against the Cell Tracking Challenge's AOGM
measures (Matula et al. 2015): TRA = 1 - min(AOGM, AOGM_0) / AOGM_0 with weights
NS 5, FN 10, FP 1, ED 1, EA 1.5, EC 1; AOGM_0 = 10 * vertices + 1.5 * edges;
DET from the vertex terms alone, LNK from the edge terms alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.inference._metrics import match_counts, scores
from livescope.schema import LivescopeError
from livescope.tracking import evaluate_tracking

# --- segmentation: the figures agree with the definition on hand-built cases ------------------


def test_iou_exactly_at_a_threshold_counts_and_map_is_the_share_of_thresholds_passed() -> None:
    truth = np.zeros((10, 10), np.uint16)
    truth[:, :] = 7  # one object of 100 px, label not 1, no background
    pred = np.zeros((10, 10), np.int32)
    pred[:, :8] = 3  # 80 px inside it: IoU 80/100 = 0.8 exactly
    s = scores(match_counts(truth, pred))
    # matched at 0.5, 0.55, ..., 0.8 (7 of the 10 thresholds, 0.8 itself included): mAP 0.7
    assert (s["ap50"], s["map"], s["f1"]) == (1.0, 0.7, 1.0)


def test_a_merge_is_one_match_at_iou_one_half() -> None:
    truth = np.zeros((6, 6), np.uint8)
    truth[0:2, 0:2], truth[0:2, 2:4] = 3, 200  # non-consecutive labels
    pred = (truth > 0).astype(np.uint8)  # one object over both: IoU 4/8 = 0.5 with each
    s = scores(match_counts(truth, pred))
    # one-to-one: TP 1, FN 1, FP 0 -> AP 1/2, precision 1, recall 1/2, F1 2/3
    assert (s["ap50"], s["precision"], s["recall"], s["f1"]) == (0.5, 1.0, 0.5, 0.6667)


# --- tracking: CTC result folders built by hand ------------------------------------------------


def _frame(labels: tuple[int, ...], dtype: type) -> np.ndarray:
    f: np.ndarray = np.zeros((32, 32), dtype)
    for k, lab in enumerate(labels):
        f[2 + 14 * k : 10 + 14 * k, 2:10] = lab
    return f


def _ctc(
    root: Path,
    res: list[np.ndarray],
    gt: list[np.ndarray],
    res_track: str,
    gt_track: str,
) -> tuple[Path, Path]:
    (root / "res").mkdir()
    (root / "gt" / "TRA").mkdir(parents=True)
    for t, (r, g) in enumerate(zip(res, gt, strict=True)):
        tifffile.imwrite(root / "res" / f"mask{t:03d}.tif", r)
        tifffile.imwrite(root / "gt" / "TRA" / f"man_track{t:03d}.tif", g)
    (root / "res" / "res_track.txt").write_text(res_track)
    (root / "gt" / "TRA" / "man_track.txt").write_text(gt_track)
    return root / "res", root / "gt"


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16])
def test_result_masks_of_a_narrow_type_are_scored_by_their_labels(
    tmp_path: Path, dtype: type
) -> None:
    """(py-ctcmetrics adds the ground truth's top label + 1 to the result's labels in their own
    type: uint8 masks against ground-truth label 250 wrapped round, and a result that matched
    the truth all but once scored TRA 0.)"""
    gt = [_frame((5, 250), np.uint16) for _ in range(3)]
    res = [_frame((10, 20), dtype), _frame((10, 20), dtype), _frame((10,), dtype)]
    if dtype is np.uint16:  # (top label + offset past 65535 also wraps in uint16)
        res = [np.where(f == 20, 65400, f).astype(dtype) for f in res]
    second = 65400 if dtype is np.uint16 else 20
    r, g = _ctc(tmp_path, res, gt, f"10 0 2 0\n{second} 0 1 0\n", "5 0 2 0\n250 0 2 0\n")
    out = evaluate_tracking(r, g)
    # cell 250 is missed in frame 2: FN 1 and its link 1 -> 2 missing, EA 1.
    # 6 vertices, 4 edges: AOGM_0 = 10*6 + 1.5*4 = 66; AOGM = 10 + 1.5 = 11.5
    # TRA = 1 - 11.5/66 = 0.825757..., DET = 1 - 10/60, LNK = 1 - 1.5/6
    assert (out["tra"], out["det"], out["lnk"]) == (0.82576, 0.83333, 0.75)
    assert out["aogm"]["fp"] == 0.0


def test_stray_tif_files_beside_the_masks_are_not_taken_for_frames(tmp_path: Path) -> None:
    """(py-ctcmetrics reads every name ending .tif as a frame: an AppleDouble '._mask000.tif'
    that macOS writes on shared drives failed the scoring with a bare AssertionError.)"""
    frames = [_frame((1, 2), np.uint16) for _ in range(3)]
    r, g = _ctc(tmp_path, frames, frames, "1 0 2 0\n2 0 2 0\n", "1 0 2 0\n2 0 2 0\n")
    (r / "._mask000.tif").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    tifffile.imwrite(r / "overlay.tif", np.zeros((32, 32), np.uint16))
    tifffile.imwrite(g / "TRA" / "a_preview.tif", np.zeros((32, 32), np.uint16))
    out = evaluate_tracking(r, g)
    # the result is the truth itself: AOGM 0
    assert (out["tra"], out["det"], out["lnk"], out["frames"]) == (1.0, 1.0, 1.0, 3)


def test_ground_truth_without_links_scores_tra_and_det_lnk_undefined(tmp_path: Path) -> None:
    """(LNK's AOGM_0 is 1.5 * 0 links: py-ctcmetrics divided by zero, a bare ZeroDivisionError.)"""
    frames = [_frame((1, 2), np.uint16), _frame((3, 4), np.uint16)]
    track = "1 0 0 0\n2 0 0 0\n3 1 1 0\n4 1 1 0\n"  # four one-frame tracks: no links
    r, g = _ctc(tmp_path, frames, frames, track, track)
    out = evaluate_tracking(r, g)
    # the result is the truth: AOGM 0 over AOGM_0 = 10 * 4 vertices; LNK 0/0, undefined
    assert (out["tra"], out["det"], out["lnk"]) == (1.0, 1.0, None)


def test_empty_ground_truth_is_refused_clearly(tmp_path: Path) -> None:
    """(an empty man_track.txt and empty markers failed inside py-ctcmetrics with a ValueError.)"""
    empty = [np.zeros((32, 32), np.uint16) for _ in range(2)]
    res = [_frame((1,), np.uint16) for _ in range(2)]
    r, g = _ctc(tmp_path, res, empty, "1 0 1 0\n", "")
    with pytest.raises(LivescopeError, match=r"man_track\.txt lists no tracks"):
        evaluate_tracking(r, g)
