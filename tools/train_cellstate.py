"""Train the cell-state classifier (interphase / prophase / metaphase / anaphase / apoptotic).

    python tools/train_cellstate.py --out engines/classification/cell-state --seed 0 \\
        --seeds 0,1,2,3,4,5 --views 60 --iters 1500 --batch 64 --base 16 --threads 1

made the shipped engine (its card's ``training.command``; the defaults alone take
--threads 2, which need not give the same weights).

Needs the ``train`` extra (torch, onnx). Trains on cells of the simulated
microscope, whose renderer draws each state (condensing chromatin in prophase,
a bright plate in metaphase, small separating masses in anaphase/telophase,
shrunken condensed nuclei in apoptosis) and whose ground truth gives every
cell's state. Fields come from seeds ``--seeds`` (default 0-5), at all three
objectives, zoomed to the card's pixel size (0.325 µm) as the engine does;
the card's held-out seeds (`HELD_OUT_SEEDS`, tools/_cards.py), whose fields
tools/cellstate_card.py validates on, are refused.
Crops are cut by the engine's own `cell_crops`; augmentation: rotation/flip,
gain/offset, noise, the mask grown or shrunk by a pixel (segmentation error),
and, on half the crops, what real nuclei look like but simulated ones do not
(size 0.85-1.2x, grainy chromatin, dark nucleoli), so that real interphase
nuclei are not taken for condensing ones. Classes are sampled in proportion to the square root of their counts.
Seeded: the same command on the same machine gives the same weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from livescope.inference import cell_crops, normalize_percentile
from livescope.models import CellStateNet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cards import HELD_OUT_SEEDS, refuse_held_out
from _training import export_onnx, fit, seeded, write_record

CLASSES = ("interphase", "prophase", "metaphase", "anaphase", "apoptotic")
PIXEL_UM = 0.325
CROP = 48


def view_crops(views) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, CROP, CROP) crops and their class indices, from simulated views."""
    xs, ys = [], []
    for v in views:
        scale = v.pixel_um / PIXEL_UM
        ids, crops = cell_crops(
            normalize_percentile(v.fluorescence), v.labels, CROP,
            scale=scale if abs(scale - 1) > 0.1 else 1.0,
        )  # fmt: skip
        keep = [i for i, cid in enumerate(ids.tolist()) if int(cid) in v.states]
        xs.append(crops[keep])
        ys.extend(int(v.states[int(ids[i])][0]) for i in keep)
    return np.concatenate(xs), np.asarray(ys, np.int64)


def collect(seeds: list[int], views_per_seed: int) -> tuple[np.ndarray, np.ndarray]:
    from livescope.scope import simulated_views

    parts = [view_crops(simulated_views(views_per_seed, seed=s)) for s in seeds]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _zoom_about_centre(a: np.ndarray, z: float, order: int) -> np.ndarray:
    """Zoom a square crop by ``z`` about its centre, keeping its size."""
    n = a.shape[0]
    c = (n - 1) / 2
    return ndimage.affine_transform(
        a, np.eye(2) / z, offset=c - c / z, output_shape=a.shape, order=order, mode="constant"
    )


def augment(x: np.ndarray, rng: np.random.Generator, realism: bool = True) -> np.ndarray:
    """Rotation/flip, gain/offset, noise and mask errors; with ``realism``, half the
    crops also get looks of real nuclei the simulator does not draw: size
    0.85-1.2x, grainy chromatin (smoothed multiplicative noise), dark nucleoli."""
    out = np.empty_like(x)
    n = x.shape[-1]
    yy, xx = np.mgrid[0:n, 0:n]
    for i, c in enumerate(x):
        img, mask = c[0].copy(), c[1] > 0.5
        if realism and rng.uniform() < 0.5:
            z = float(np.exp(rng.uniform(np.log(0.85), np.log(1.2))))
            img = _zoom_about_centre(img, z, 1)
            mask = _zoom_about_centre(mask.astype(np.float32), z, 0) > 0.5
            grain = ndimage.gaussian_filter(rng.standard_normal(img.shape), rng.uniform(0.5, 1.2))
            img = img * (1 + rng.uniform(0, 0.25) * grain / max(float(grain.std()), 1e-6))
            if rng.uniform() < 0.5 and mask.any():
                ys, xs = np.nonzero(mask)
                for _ in range(int(rng.integers(1, 4))):
                    k = int(rng.integers(0, len(ys)))
                    r = rng.uniform(1.5, 5)
                    blob = np.exp(-((yy - ys[k]) ** 2 + (xx - xs[k]) ** 2) / (2 * r * r))
                    img = img * (1 - rng.uniform(0.3, 0.7) * blob)
        r = int(rng.integers(-1, 2))
        if r > 0:
            mask = ndimage.binary_dilation(mask)
        elif r < 0 and mask.sum() > 20:
            mask = ndimage.binary_erosion(mask)
        img = img * rng.uniform(0.7, 1.4) + rng.uniform(-0.05, 0.05)
        img = img + rng.uniform(0, 0.04) * rng.standard_normal(img.shape)
        stack = np.rot90(np.stack([img, mask.astype(np.float32)]), int(rng.integers(0, 4)), (1, 2))
        if rng.integers(0, 2):
            stack = stack[:, :, ::-1]
        out[i] = stack
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("engines/classification/cell-state"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--seeds", default="0,1,2,3,4,5",
        help="simulator seeds to train on (not the card's held-out "
        f"{','.join(map(str, HELD_OUT_SEEDS))})",
    )  # fmt: skip
    ap.add_argument("--views", type=int, default=60, help="fields per simulator seed")
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--no-realism", action="store_true",
        help="only the basic augmentation (no size, chromatin grain or nucleoli), as model 1",
    )  # fmt: skip
    a = ap.parse_args()
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds takes simulator seeds separated by commas (e.g. 0,1,2), got {a.seeds!r}")
    # (the card scores the fields of HELD_OUT_SEEDS as held out)
    refuse_held_out(ap, f"--seeds {a.seeds}", seeds)
    seeded(a.seed, a.threads)
    rng = np.random.default_rng(a.seed)
    t0 = time.time()
    x_all, y_all = collect(seeds, a.views)
    counts = np.bincount(y_all, minlength=len(CLASSES))
    print(f"data: {len(y_all)} cells {dict(zip(CLASSES, counts.tolist(), strict=True))} "
          f"({time.time() - t0:.0f} s)", flush=True)  # fmt: skip
    w_class = np.where(counts > 0, 1 / np.sqrt(np.maximum(counts, 1)), 0)
    p_cell = w_class[y_all] / w_class[y_all].sum()
    model = CellStateNet(n_classes=len(CLASSES), base=a.base)

    def loss_at(it: int) -> torch.Tensor:
        idx = rng.choice(len(y_all), size=a.batch, p=p_cell)
        x = torch.from_numpy(augment(x_all[idx], rng, realism=not a.no_realism))
        return F.cross_entropy(model.logits(x), torch.from_numpy(y_all[idx]))

    log = fit(model, a.iters, loss_at, t0=t0, log_every=100)
    export_onnx(model, a.out, (2, 2, CROP, CROP), "crops", "probs", {0: "n"})
    write_record(a.out, {
        "command": f"python tools/train_cellstate.py --out {a.out} --seed {a.seed} "
        f"--seeds {a.seeds} --views {a.views} --iters {a.iters} --batch {a.batch} "
        f"--base {a.base} --threads {a.threads}" + (" --no-realism" if a.no_realism else ""),
        "realism": not a.no_realism, "seed": a.seed, "sim_seeds": seeds, "base": a.base,
        "views": a.views * len(seeds), "cells": len(y_all),
        "class_counts": dict(zip(CLASSES, counts.tolist(), strict=True)), "crop_px": CROP,
        "pixel_size_um": PIXEL_UM, "log": log,
    }, t0)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
