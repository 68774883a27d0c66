"""Train the virtual-staining engine (phase contrast -> nuclear stain) and export it to ONNX.

    python tools/train_stain.py --out engines/virtual_stain/nuclei-stain --seed 0 \\
        --iters 2000 --batch 8 --base 16 --depth 4 --isl-slices 4,5,6,7,8 \\
        --sim-images 48 --sim-share 0.4 --threads 1

made the shipped engine (its card's ``training.command``; the defaults alone take
--threads 2, which need not give the same weights).

Needs the ``train`` extra (torch, onnx) and the real data in ../shared/data (or
$LIVESCOPE_DATA). Trains on two sources:

* the in-silico-labeling field (virtual-staining-isl-condB): one phase-contrast
  slice in, the confocal DAPI max-projection out. The field is split by
  columns: x < 736 is trained on, x >= 768 is held aside for validation
  (`ISL_VALIDATION`), with a 32 px gap so no training patch sees it;
* simulated pairs (phase contrast and DAPI snapped at the same instant on the
  simulated microscope, random objective, focus, exposure, time and place),
  zoomed to the card's pixel size (0.325 µm). The source of the ISL field does
  not state its pixel size; its nuclei are about 2/3 the size of the simulated
  ones at 0.325 µm, inside the scale augmentation.

Half the patches are centred on a nucleus. Loss: MSE + 0.5 (1 - Pearson r)
per patch. Each patch is rescaled (0.7-1.4x), rotated/flipped and given intensity, blur
and noise augmentation; the training picks a random phase slice from
``--isl-slices`` so the model does not depend on one focal plane. Inputs and
targets are normalised per frame (1st/99.8th percentiles to 0/1), as the card
states, and each input patch again after its intensity augmentation (without
that second step, session 42: held-aside r 0.711 instead of 0.684, SSIM 0.52
instead of 0.73, simulated pairs 0.918; see docs/design/model-trials.md).
Seeded: the same command on the same machine gives the same weights.
Writes model.onnx and train.json; tools/stain_card.py then writes the card.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from livescope.inference._postprocess import normalize_percentile
from livescope.models import StainUNet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cards import refuse_held_out
from _training import export_onnx, fit, float_arg, seeded, write_record

from livescope.schema import require_data_root as data_root

PATCH = 160
PIXEL_UM = 0.325  # the card's pixel size: simulated fields are zoomed to it
SCALE_RANGE = (0.7, 1.4)
ISL = "virtual-staining-isl-condB"
ISL_TRAIN_COLS = (0, 736)
ISL_VALIDATION = "0:1024,768:1024"  # rows, cols held aside (the --crop of livescope eval stain)


def isl_files(root: Path) -> tuple[dict[int, Path], Path]:
    """Phase slices by z index, and the DAPI target, of the ISL field.

    Raises SystemExit naming the folder when it lacks either (a partial copy of the data).
    """
    folder = root / ISL
    phase = {
        int(m.group(1)): p
        for p in folder.glob("*PHASE_CONTRAST*.png")
        if (m := re.search(r"z_depth-(\d+),", p.name))
    }
    dapi = sorted(folder.glob("*channel-DAPI_CONFOCAL*.png"))
    missing = [
        what
        for what, found in (("phase-contrast z slices", phase), ("DAPI confocal target", dapi))
        if not found
    ]
    if missing:
        raise SystemExit(
            f"{folder}: no {' and no '.join(missing)} of the ISL field (files named "
            "*PHASE_CONTRAST*z_depth-N,*.png and *channel-DAPI_CONFOCAL*.png); see "
            "../shared/data/README.md for the data set and LIVESCOPE_DATA"
        )
    return phase, dapi[0]


def load_isl(root: Path, slices: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    from skimage.io import imread

    phase, dapi = isl_files(root)
    c0, c1 = ISL_TRAIN_COLS
    target = normalize_percentile(imread(dapi))[:, c0:c1]
    return [(normalize_percentile(imread(phase[z]))[:, c0:c1], target) for z in slices]


def sim_seeds(n: int, seed: int) -> list[int]:
    """The simulator seeds whose fields `load_sim` draws ``n`` pairs from: ``seed``'s own
    (none without pairs). train.json records ``seed`` and ``train_images_sim``, from
    which stain_card.py finds them."""
    return [seed] if n > 0 else []


def load_sim(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Simulated pairs at all objectives, zoomed to the card's pixel size as the engine does."""
    from livescope.scope import simulated_views

    out = []
    views = [v for s in sim_seeds(n, seed) for v in simulated_views(n, seed=s)]
    for v in views:
        pair = [normalize_percentile(v.phase), normalize_percentile(v.fluorescence)]
        scale = v.pixel_um / PIXEL_UM
        if abs(scale - 1) > 0.1:
            pair = [ndimage.zoom(a, scale, order=1, grid_mode=True, mode="nearest") for a in pair]
        out.append((pair[0], pair[1]))
    return out


class Sampler:
    """Random patches; half of them centred on a nucleus (bright target pixel), as
    nuclei are sparse and mostly-empty patches teach little."""

    def __init__(self, isl, sim, seed: int, sim_share: float, on_nuclei: float = 0.5):
        self.isl, self.sim = isl, sim
        self.rng = np.random.default_rng(seed)
        self.sim_share = sim_share if sim else 0.0
        self.on_nuclei = on_nuclei
        self.bright = {id(t): np.argwhere(t > 0.5) for _, t in isl + sim}

    def patch(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        pool = self.sim if rng.uniform() < self.sim_share else self.isl
        img, tgt = pool[int(rng.integers(0, len(pool)))]
        scale = math.exp(rng.uniform(math.log(SCALE_RANGE[0]), math.log(SCALE_RANGE[1])))
        size = min(round(PATCH / scale), *img.shape)
        bright = self.bright[id(tgt)]
        if len(bright) and rng.uniform() < self.on_nuclei:
            cy, cx = bright[int(rng.integers(0, len(bright)))]
            y = int(
                np.clip(
                    cy - size // 2 + rng.integers(-size // 4, size // 4 + 1), 0, img.shape[0] - size
                )
            )
            x = int(
                np.clip(
                    cx - size // 2 + rng.integers(-size // 4, size // 4 + 1), 0, img.shape[1] - size
                )
            )
        else:
            y = int(rng.integers(0, img.shape[0] - size + 1))
            x = int(rng.integers(0, img.shape[1] - size + 1))
        stack = torch.from_numpy(np.stack([img, tgt])[:, y : y + size, x : x + size].copy())
        stack = F.interpolate(
            stack[None], size=(PATCH, PATCH), mode="bilinear", align_corners=False
        )[0].numpy()
        k_rot = int(rng.integers(0, 4))
        stack = np.rot90(stack, k_rot, axes=(1, 2))
        if rng.integers(0, 2):
            stack = stack[:, :, ::-1]
        im, t = (np.ascontiguousarray(a) for a in stack)
        # label-free intensity: gain/offset, optional blur, signal-dependent noise
        if rng.uniform() < 0.3:
            im = ndimage.gaussian_filter(im, rng.uniform(0.5, 1.5))
        im = im * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1)
        noise = rng.uniform(0, 0.06)
        im = im + noise * rng.standard_normal(im.shape) * (0.5 + np.sqrt(np.clip(im, 0, None)))
        im = normalize_percentile(im)
        return im.astype(np.float32), t.astype(np.float32)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(self.patch() for _ in range(n)), strict=True)
        return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None])


def pearson_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Pearson r per patch (patches without signal contribute ~0), averaged."""
    p = pred.flatten(1) - pred.flatten(1).mean(1, keepdim=True)
    t = target.flatten(1) - target.flatten(1).mean(1, keepdim=True)
    r = (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1) + 1e-3)
    return (1 - r).mean()


def isl_slices(ap: argparse.ArgumentParser, text: str, available: list[int]) -> list[int]:
    """``--isl-slices`` as z indices, each one of the ISL field's ``available`` phase slices;
    a usage error (status 2) otherwise, before anything is loaded or trained."""
    try:
        slices = [int(s) for s in text.split(",")]
    except ValueError:
        ap.error(f"--isl-slices takes z indices separated by commas (e.g. 4,5,6), got {text!r}")
    missing = [z for z in slices if z not in available]
    if missing:
        ap.error(
            f"--isl-slices {text}: the ISL field ({ISL}) has no phase slice "
            f"{', '.join(map(str, missing))}; its slices are {', '.join(map(str, available))}"
        )
    return slices


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("engines/virtual_stain/nuclei-stain"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--isl-slices", default="4,5,6,7,8")
    ap.add_argument("--sim-images", type=int, default=48)
    ap.add_argument("--sim-share", type=float, default=0.4)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    # (the card scores simulated fields of HELD_OUT_SEEDS; --seed picks the training's)
    refuse_held_out(
        ap, f"--seed {a.seed} (the seed of the --sim-images simulated pairs)",
        sim_seeds(a.sim_images, a.seed),
    )  # fmt: skip
    slices = isl_slices(ap, a.isl_slices, sorted(isl_files(data_root())[0]))
    seeded(a.seed, a.threads)
    t0 = time.time()
    isl = load_isl(data_root(), slices)
    sim = load_sim(a.sim_images, a.seed)
    sampler = Sampler(isl, sim, a.seed, a.sim_share)
    print(f"data: {len(isl)} ISL slices + {len(sim)} simulated pairs ({time.time() - t0:.0f} s)")
    model = StainUNet(base=a.base, depth=a.depth)

    def loss_at(it: int) -> torch.Tensor:
        x, y = sampler.batch(a.batch)
        out = model(x)
        return F.mse_loss(out, y) + 0.5 * pearson_loss(out, y)

    log = fit(model, a.iters, loss_at, t0=t0)
    export_onnx(model, a.out, (1, 1, 256, 256), "image", "stain", {0: "n", 2: "h", 3: "w"})
    write_record(a.out, {
        "command": f"python tools/train_stain.py --out {a.out} --seed {a.seed} --iters {a.iters} "
        f"--batch {a.batch} --base {a.base} --depth {a.depth} --isl-slices {a.isl_slices} "
        f"--sim-images {a.sim_images} --sim-share {float_arg(a.sim_share)} --threads {a.threads}",
        "seed": a.seed, "iters": a.iters, "batch": a.batch, "patch": PATCH, "base": a.base,
        "depth": a.depth, "isl_slices": slices, "isl_train_cols": list(ISL_TRAIN_COLS),
        "isl_validation": ISL_VALIDATION, "train_images_sim": len(sim), "log": log,
    }, t0)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
