"""Instance-segmentation scores: matching by IoU, AP, F1, precision, recall.

Objects are matched one-to-one by the assignment that maximises total IoU among
pairs above the threshold (as StarDist's ``matching``). AP at a threshold is
``TP / (TP + FP + FN)`` (the Data Science Bowl 2018 definition); ``map`` is its
mean over IoU 0.5, 0.55, ..., 0.95. Scores over a set sum TP, FP and FN first.

What went wrong at IoU 0.5 (`MatchCounts.errors`, `ERROR_KINDS`). Each true
object left unmatched is counted once: ``merged`` (one predicted object holds at
least half of it and half of another true object: two nuclei found as one),
``split`` (no predicted object holds half of it, several together do: one
nucleus cut in parts), ``misdrawn`` (found, but drawn too large for IoU 0.5: one
predicted object holds half of it; or too small: it is the true object that an
unmatched predicted object, lying mostly on the true objects and holding no
half of one, overlaps most, however little of it that covers), ``missed``
(none of these: not found). A predicted object left unmatched that holds no
half of an unmatched true object is counted when no such error accounts for
it: ``spurious`` (it lies mostly, over half, off the true objects: found where
there is none) or ``fragment`` (it lies mostly on the true objects, and the one
it overlaps most was matched to another prediction: an extra piece of a nucleus
that was found). Every unmatched predicted object is thus spurious, a
fragment, or part of an unmatched true object's error (the one holding a merged
or too-large one, a piece of a split one, a too-small one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["ERROR_KINDS", "IOU_THRESHOLDS", "MatchCounts", "match_counts", "scores"]

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
ERROR_KINDS = ("merged", "split", "missed", "misdrawn", "spurious", "fragment")
"""What went wrong with an object left unmatched at IoU 0.5 (see the module)."""


@dataclass
class MatchCounts:
    """True positives per IoU threshold, and object counts."""

    tp: dict[float, int] = field(default_factory=lambda: dict.fromkeys(IOU_THRESHOLDS, 0))
    n_true: int = 0
    n_pred: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    """Objects left unmatched at IoU 0.5, by what went wrong (see the module)."""

    def add(self, other: MatchCounts) -> None:
        """Accumulate another image's counts."""
        for t in self.tp:
            self.tp[t] += other.tp[t]
        for k in self.errors:
            self.errors[k] += other.errors[k]
        self.n_true += other.n_true
        self.n_pred += other.n_pred


def _overlaps(
    true: NDArray[Any], pred: NDArray[Any]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Return the pixels each true object shares with each predicted one, and their areas."""
    t_ids, t_inv = np.unique(true, return_inverse=True)
    p_ids, p_inv = np.unique(pred, return_inverse=True)
    t_inv, p_inv = t_inv.ravel(), p_inv.ravel()
    nt, np_ = len(t_ids), len(p_ids)
    inter = np.bincount(t_inv * np_ + p_inv, minlength=nt * np_).reshape(nt, np_).astype(float)
    area_t, area_p = inter.sum(1), inter.sum(0)
    t_fg, p_fg = t_ids != 0, p_ids != 0
    return inter[t_fg][:, p_fg], area_t[t_fg], area_p[p_fg]


def match_counts(true: NDArray[Any], pred: NDArray[Any]) -> MatchCounts:
    """Match the objects of two label images of the same shape."""
    from scipy.optimize import linear_sum_assignment

    if true.shape != pred.shape:
        raise ValueError(f"label images differ in shape: {true.shape} vs {pred.shape}")
    inter, area_t, area_p = _overlaps(true, pred)
    out = MatchCounts(n_true=len(area_t), n_pred=len(area_p))
    matched_t, matched_p = np.zeros(len(area_t), bool), np.zeros(len(area_p), bool)
    if len(area_t) and len(area_p):
        iou = inter / np.maximum(area_t[:, None] + area_p[None, :] - inter, 1)
        for t in IOU_THRESHOLDS:
            cost = np.where(iou >= t, -iou, 0.0)
            rows, cols = linear_sum_assignment(cost)
            ok = iou[rows, cols] >= t
            out.tp[t] = int(ok.sum())
            if t == 0.5:
                matched_t[rows[ok]] = matched_p[cols[ok]] = True
    out.errors = _error_kinds(inter, area_t, area_p, matched_t, matched_p)
    return out


def _error_kinds(
    inter: NDArray[np.float64],
    area_t: NDArray[np.float64],
    area_p: NDArray[np.float64],
    matched_t: NDArray[np.bool_],
    matched_p: NDArray[np.bool_],
) -> dict[str, int]:
    """Count the objects left unmatched at IoU 0.5 by what went wrong (see the module)."""
    share_t = inter / np.maximum(area_t[:, None], 1)  # of each true object, in each prediction
    holds = share_t >= 0.5  # a prediction holding at least half of a true object
    holds_two = holds.sum(axis=0) >= 2
    # of each prediction, on the true objects, and the true object it overlaps most
    on_true = inter.sum(axis=0) / np.maximum(area_p, 1)
    main = inter.argmax(axis=0) if len(area_t) else np.zeros(len(area_p), int)
    main_matched = matched_t[main] if len(area_t) else np.zeros(len(area_p), bool)
    # unmatched predictions holding no half of an unmatched true object (such a one is
    # that object's error), lying mostly on the true objects / mostly off them
    free = ~matched_p & ~(holds & ~matched_t[:, None]).any(axis=0)
    piece = free & (on_true >= 0.5)
    small = np.zeros(len(area_t), bool)  # unmatched true objects with such a piece on them
    small[main[piece & ~main_matched]] = True
    out = dict.fromkeys(ERROR_KINDS, 0)
    for g in np.flatnonzero(~matched_t):
        if (holds[g] & holds_two).any():
            out["merged"] += 1
        elif holds[g].any():  # (one prediction holds half of it: drawn too large)
            out["misdrawn"] += 1
        elif share_t[g].sum() >= 0.5:  # (half of it in several predictions together)
            out["split"] += 1
        elif small[g]:  # (a prediction lying on it covers under half: drawn too small)
            out["misdrawn"] += 1
        else:
            out["missed"] += 1
    out["spurious"] = int((free & (on_true < 0.5)).sum())
    out["fragment"] = int((piece & main_matched).sum())
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
