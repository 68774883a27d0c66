"""Score the virtual-staining and cell-state engines against ground truth.

The simulated scores use `simulated_views` (random fields from simulator
seeds, every objective), so a held-out seed is data the engines never saw.
Each field's pixel size goes to the engine, which zooms it to the size it was
trained at. `flag_divisions_ctc` checks the classifier on an annotated Cell
Tracking Challenge sequence.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from livescope.inference import (
    MITOTIC_CLASSES,
    CellStateEngine,
    EngineError,
    MatchCounts,
    SegmentationEngine,
    StainEngine,
    apply_normalisation,
    match_counts,
    read_image,
    scores,
    stain_scores,
)
from livescope.record import read_ctc
from livescope.schema import LivescopeError, Normalisation
from livescope.scope import CellState, SimulatedView, simulated_views

__all__ = ["score_stain_simulated", "score_states_simulated", "views_for_seeds"]

_MITOTIC = {CellState.PROPHASE, CellState.METAPHASE, CellState.ANAPHASE}


def views_for_seeds(seeds: Sequence[int], views_per_seed: int) -> list[SimulatedView]:
    """``views_per_seed`` random fields from each simulator seed."""
    return [v for s in seeds for v in simulated_views(views_per_seed, seed=int(s))]


def score_stain_simulated(
    engine: StainEngine,
    views: Sequence[SimulatedView],
    *,
    segmenter: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Pearson r / SSIM / PSNR of the stain predicted from each phase frame vs its DAPI frame.

    With ``segmenter`` (a segmentation engine, rescaled to each field's
    nucleus size) the predicted stain is also segmented and scored against the true nuclei
    (``seg_f1``, ``seg_ap50`` at IoU 0.5). Fields without cells are skipped
    for the stain scores (Pearson r is undefined there): with none left, the
    scores are None (``ms`` too, with no view).
    """
    tn = engine.card.target_normalisation or Normalisation()  # (none: 1st/99.8th percentiles)
    rows: list[dict[str, float]] = []
    seg_total = MatchCounts()
    segs: dict[float, SegmentationEngine] = {}  # by nucleus diameter, px
    ms: list[float] = []
    try:
        for i, v in enumerate(views):
            res = engine.predict(v.phase, pixel_size_um=v.pixel_um)
            ms.append(res.ms)
            if v.states:
                target = apply_normalisation(v.fluorescence, tn)  # (its gamma too)
                rows.append(stain_scores(res.image, target))
            if segmenter is not None:
                diameter_px = 2 * v.nucleus_radius_um / v.pixel_um
                if diameter_px not in segs:
                    segs[diameter_px] = SegmentationEngine(
                        segmenter, backend=engine.backend, object_diameter_px=diameter_px
                    )
                seg = segs[diameter_px]
                found = seg.segment(res.image, normalised=True)  # as the pipeline does
                seg_total.add(match_counts(v.labels, found.labels))
            if progress is not None:
                progress(i + 1, len(views))
    finally:
        for seg in segs.values():
            seg.close()
    # (None with no field to score: no view, or none with cells; NaN is no JSON)
    out: dict[str, Any] = {
        k: round(float(np.mean([r[k] for r in rows])), 4) if rows else None
        for k in ("pearson", "ssim", "psnr")
    }
    out["ms"] = round(float(np.mean(ms)), 2) if ms else None
    out["frames"] = len(rows)
    if segs:
        s = scores(seg_total)
        out.update(seg_f1=s["f1"], seg_ap50=s["ap50"], seg_n_true=s["n_true"])
    return out


def score_states_simulated(
    engine: CellStateEngine,
    views: Sequence[SimulatedView],
    *,
    threshold: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Mitosis precision/recall (P(mitosis) >= ``threshold``) and per-class accuracy.

    Cells are the true nuclei of each field (the classifier is scored apart
    from segmentation errors); the frame is the fluorescence channel.
    """
    classes = engine.classes
    names = {s: s.name.lower() for s in CellState}
    tp = fp = fn = 0
    confusion = np.zeros((len(CellState), len(classes)), np.int64)
    n_cells = 0
    for i, v in enumerate(views):
        res = engine.classify(v.fluorescence, v.labels, pixel_size_um=v.pixel_um)
        p_mit = res.p_mitosis
        best = np.argmax(res.probs, axis=1) if len(res) else np.zeros(0, np.int64)
        for j, cid in enumerate(res.ids.tolist()):
            if int(cid) not in v.states:
                continue
            state = v.states[int(cid)][0]
            truth = state in _MITOTIC
            said = bool(p_mit[j] >= threshold)
            tp += truth and said
            fp += said and not truth
            fn += truth and not said
            confusion[int(state), int(best[j])] += 1
            n_cells += 1
        if progress is not None:
            progress(i + 1, len(views))
    # (None where undefined: no cell flagged, or no mitotic cell among the fields; 0.0
    # would read as a classifier that flags wrongly or misses every mitosis)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    per_class = {}
    for s in CellState:
        row = confusion[int(s)]
        name = names[s]
        if row.sum() and name in classes:
            per_class[name] = round(float(row[classes.index(name)] / row.sum()), 4)
    return {
        "mitosis_precision": None if precision is None else round(precision, 4),
        "mitosis_recall": None if recall is None else round(recall, 4),
        "mitosis_f1": _f1(precision, recall),
        "mitotic_cells": tp + fn,
        "cells": n_cells,
        "class_recall": per_class,
        "mitotic_classes": list(MITOTIC_CLASSES),
        "confusion": {names[s]: confusion[int(s)].tolist() for s in CellState},
        "classes": list(classes),
    }


def _f1(precision: float | None, recall: float | None) -> float | None:
    """Their harmonic mean, rounded (None where either is undefined)."""
    if precision is None or recall is None:
        return None
    return round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0


def flag_divisions_ctc(
    engine: CellStateEngine,
    images: Path,
    gt: Path,
    *,
    pixel_size_um: float | None = None,
    frames_before: int = 5,
    threshold: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Check whether the classifier flags each annotated mother cell before it splits.

    Cells are the ground-truth masks of a Cell Tracking Challenge sequence
    (``images``: ``tTTT.tif``; ``gt``: ``TRA/man_trackTTT.tif`` + ``man_track.txt``).
    A division is a track with two daughters (a track with one child is an
    object seen again after a gap). It counts as flagged when the mother has
    P(mitosis) >= ``threshold`` in at least one of its last ``frames_before``
    frames. ``other_flag_rate`` is the share of all other cell-frames (not
    within ``frames_before`` of a division, daughters' first frames excluded
    too) that are flagged. A mother's P(mitosis) is None in a frame where the
    classifier gave her none (not scored, or her mask held no pixel).

    Raises
    ------
    LivescopeError
        if ``frames_before`` is below 1, the ground truth cannot be read
        (`read_ctc`), or ``images`` does not hold one ``tTTT.tif`` for each
        annotated frame ``TTT`` (or holds two for one, ``t1.tif`` and ``t001.tif``),
        or an image is not one 2-D plane the size of its frame's masks (naming it).
    EngineError
        naming the image the engine refuses (e.g. NaN or infinite values).

    """
    if frames_before < 1:
        raise LivescopeError(
            f"frames_before must be 1 or more (the mother's last frames looked in), "
            f"not {frames_before}"
        )
    frames, tracks = read_ctc(gt, kind="gt")
    # image tTTT is annotated frame TTT: other files (e.g. "t000 copy.tif") are not images
    numbered: dict[int, Path] = {}
    for image in sorted(Path(images).glob("t*.tif")):
        if (m := re.fullmatch(r"t(\d+)\.tif", image.name)) is None:
            continue
        if (first := numbered.setdefault(int(m.group(1)), image)) != image:
            # (which of the two was classified hung on the order the folder lists them in)
            raise LivescopeError(f"{first} and {image} are both frame {int(m.group(1))}")
    files = [numbered[k] for k in sorted(numbered)]
    if len(files) != len(frames):
        raise LivescopeError(f"{images} has {len(files)} frames, {gt} annotates {len(frames)}")
    if missing := sorted(set(range(len(frames))) - set(numbered)):
        # (paired in order, each image after the gap met another frame's masks)
        raise LivescopeError(
            f"{images}: no image for frame(s) {', '.join(f't{t:03d}' for t in missing[:5])}; "
            f"{gt} annotates frames t000..t{len(frames) - 1:03d}, one image tTTT.tif each"
        )
    # a division is a parent with two (or more) daughters; a parent with one child is
    # the same object going on after frames it was missed in (CTC tracks have no gaps)
    children = Counter(t.parent for t in tracks if t.parent)
    parents = {label for label, n in children.items() if n >= 2}
    by_label = {t.label: t for t in tracks}
    near: set[tuple[int, int]] = set()  # (frame, label) around divisions
    for t in tracks:
        if t.label in parents:
            near.update((f, t.label) for f in range(t.end - frames_before + 1, t.end + 1))
        if t.parent in parents:
            near.update((f, t.label) for f in range(t.begin, t.begin + frames_before))
    p_of: dict[tuple[int, int], float] = {}
    other = other_flagged = 0
    for f, (path, lab) in enumerate(zip(files, frames, strict=True)):
        pixels = read_image(path)
        if pixels.shape != lab.shape:  # (the engine's error would name neither file)
            raise LivescopeError(
                f"{path}: the image is {pixels.shape}, but frame {f}'s masks in {Path(gt) / 'TRA'} "
                f"are {lab.shape}: each image must be one 2-D plane the size of its masks"
            )
        try:
            res = engine.classify(pixels, lab, pixel_size_um=pixel_size_um)
        except EngineError as exc:  # (which of the sequence's images the engine refused)
            raise EngineError(f"{path}: {exc}") from exc
        for cid, p in zip(res.ids.tolist(), res.p_mitosis.tolist(), strict=True):
            if math.isnan(p):  # (not scored: neither flagged nor counted)
                continue
            p_of[(f, int(cid))] = p
            if (f, int(cid)) not in near:
                other += 1
                other_flagged += p >= threshold
        if progress is not None:
            progress(f + 1, len(files))
    divisions = []
    for label in sorted(parents):
        mother = by_label[label]
        window = range(max(mother.begin, mother.end - frames_before + 1), mother.end + 1)
        ps = [None if (f, label) not in p_of else round(p_of[(f, label)], 3) for f in window]
        divisions.append(
            {
                "mother": label,
                "last_frame": mother.end,
                "daughters": sorted(t.label for t in tracks if t.parent == label),
                "p_mitosis_last_frames": ps,
                "flagged": any(p is not None and p >= threshold for p in ps),
            }
        )
    return {
        "divisions": len(divisions),
        "flagged": sum(d["flagged"] for d in divisions),
        "other_cell_frames": other,
        "other_flag_rate": round(other_flagged / other, 4) if other else None,
        "frames_before": frames_before,
        "per_division": divisions,
    }
