"""Instance-segmentation scores: matching by IoU, AP, F1, precision, recall.

Objects are matched one-to-one by the assignment that maximises total IoU among
pairs above the threshold (as StarDist's ``matching``). AP at a threshold is
``TP / (TP + FP + FN)`` (the Data Science Bowl 2018 definition); ``map`` is its
mean over IoU 0.5, 0.55, ..., 0.95. Scores over a set sum TP, FP and FN first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["IOU_THRESHOLDS", "MatchCounts", "match_counts", "scores"]

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass
class MatchCounts:
    """True positives per IoU threshold, and object counts."""

    tp: dict[float, int] = field(default_factory=lambda: dict.fromkeys(IOU_THRESHOLDS, 0))
    n_true: int = 0
    n_pred: int = 0

    def add(self, other: MatchCounts) -> None:
        """Accumulate another image's counts."""
        for t in self.tp:
            self.tp[t] += other.tp[t]
        self.n_true += other.n_true
        self.n_pred += other.n_pred


def _iou(true: NDArray[Any], pred: NDArray[Any]) -> tuple[NDArray[np.float64], int, int]:
    t_ids, t_inv = np.unique(true, return_inverse=True)
    p_ids, p_inv = np.unique(pred, return_inverse=True)
    t_inv, p_inv = t_inv.ravel(), p_inv.ravel()
    nt, np_ = len(t_ids), len(p_ids)
    inter = np.bincount(t_inv * np_ + p_inv, minlength=nt * np_).reshape(nt, np_).astype(float)
    area_t = inter.sum(1, keepdims=True)
    area_p = inter.sum(0, keepdims=True)
    iou = inter / np.maximum(area_t + area_p - inter, 1)
    t_fg = t_ids != 0
    p_fg = p_ids != 0
    return iou[t_fg][:, p_fg], int(t_fg.sum()), int(p_fg.sum())


def match_counts(true: NDArray[Any], pred: NDArray[Any]) -> MatchCounts:
    """Match the objects of two label images of the same shape."""
    from scipy.optimize import linear_sum_assignment

    if true.shape != pred.shape:
        raise ValueError(f"label images differ in shape: {true.shape} vs {pred.shape}")
    iou, nt, np_ = _iou(true, pred)
    out = MatchCounts(n_true=nt, n_pred=np_)
    if nt == 0 or np_ == 0:
        return out
    for t in IOU_THRESHOLDS:
        cost = np.where(iou >= t, -iou, 0.0)
        rows, cols = linear_sum_assignment(cost)
        out.tp[t] = int((iou[rows, cols] >= t).sum())
    return out


def scores(c: MatchCounts) -> dict[str, float | int]:
    """AP@0.5, mean AP over 0.5:0.95, F1, precision and recall at 0.5, counts."""

    def ap(t: float) -> float:
        tp = c.tp[t]
        denom = tp + (c.n_pred - tp) + (c.n_true - tp)
        return tp / denom if denom else 1.0

    tp = c.tp[0.5]
    nothing = c.n_pred == 0 and c.n_true == 0  # nothing to find and nothing found: perfect
    precision = tp / c.n_pred if c.n_pred else float(nothing)
    recall = tp / c.n_true if c.n_true else float(nothing)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "ap50": round(ap(0.5), 4),
        "map": round(float(np.mean([ap(t) for t in IOU_THRESHOLDS])), 4),
        "f1": round(f1, 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "n_true": c.n_true,
        "n_pred": c.n_pred,
    }
