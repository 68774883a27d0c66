"""Train the nuclei segmentation engine and export it to ONNX.

    python tools/train_seg.py --out engines/segmentation/nuclei-unet --seed 0 --iters 3000 \\
        --batch 8 --base 16 --sim-images 36 --threads 2 --contact-weight 5 --dim-share 0.5

made the shipped engine (its card's ``training.command``; the defaults alone give
no --dim-share, so another model).

Needs the ``train`` extra (torch, onnx) and the real data in ../shared/data (or
$LIVESCOPE_DATA). Trains on nuclei-mnfinder/train plus simulated nuclei from
the simulated microscope, with scale, intensity, blur and noise augmentation;
nuclei-mnfinder/validation and nuclei-dsb2018 are never trained on. Seeded: the
same command on the same machine gives the same weights. Writes model.onnx and
the training record (train.json) used for the card.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from scipy import ndimage

from livescope.inference import apply_gamma, normalize_percentile
from livescope.models import NucleiUNet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _training import export_onnx, fit, float_arg, seeded, write_record

from livescope.schema import require_data_root as data_root

PATCH = 192
SCALE_RANGE = (0.35, 1.4)  # augmentation: apparent object size x this


def distance_target(labels: np.ndarray) -> np.ndarray:
    """Per-nucleus distance to its border, divided by the nucleus' maximum."""
    out = np.zeros(labels.shape, np.float32)
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        obj = labels[sl] == i
        d = ndimage.distance_transform_edt(obj)
        if d.max() > 0:
            out[sl][obj] = (d[obj] / d.max()).astype(np.float32)
    return out


def neighbour_target(labels: np.ndarray, reach_px: float = 3.0) -> np.ndarray:
    """Per nucleus: closeness to the nearest other nucleus, 1 at the contact, 0 at the far side.

    Inside a nucleus that comes within ``reach_px`` of another, the distance to
    the nearest other nucleus' pixel, divided by that distance's largest value
    in the nucleus, is inverted and cubed (high only near the contact: the
    neighbour distance of Scherr et al., PLoS ONE 2020). Nuclei that touch none
    are 0.
    """
    out = np.zeros(labels.shape, np.float32)
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        m = int(reach_px) + 1
        sl = tuple(slice(max(s.start - m, 0), s.stop + m) for s in sl)
        crop = labels[sl]
        obj = crop == i
        other = (crop > 0) & ~obj
        if not other.any():
            continue
        d = ndimage.distance_transform_edt(~other)[obj]
        if d.min() > reach_px:
            continue
        big = max(float(d.max()), 1.0)
        out[sl][obj] = ((1.0 - d / big) ** 3).astype(np.float32)
    return out


def centre_offsets(labels: np.ndarray) -> np.ndarray:
    """(2, H, W): the vector (dy, dx) from each nucleus pixel to its nucleus' centroid, in px.

    Each connected part of a label is a nucleus of its own (a pasted nucleus can
    cut an earlier one in two; some label files reuse ids).
    """
    from skimage.measure import label as connected

    labels = connected(labels, background=0, connectivity=1)
    n = int(labels.max()) + 1
    flat = labels.ravel()
    yy, xx = np.indices(labels.shape, dtype=np.float64)
    count = np.maximum(np.bincount(flat, minlength=n), 1)
    cy = np.bincount(flat, weights=yy.ravel(), minlength=n) / count
    cx = np.bincount(flat, weights=xx.ravel(), minlength=n) / count
    inside = labels > 0
    oy = np.where(inside, cy[labels] - yy, 0.0)
    ox = np.where(inside, cx[labels] - xx, 0.0)
    return np.stack([oy, ox]).astype(np.float32)


def rot_flip(arrs: list[np.ndarray], k: int, flip: bool) -> list[np.ndarray]:
    """Rotate (np.rot90, ``k`` times) and flip (x) maps; the last two are a (dy, dx) field.

    The field's vectors turn with the image: one rot90 maps (dy, dx) to
    (-dx, dy); the flip maps it to (dy, -dx).
    """
    out = [np.rot90(a, k) for a in arrs]
    oy, ox = out[-2], out[-1]
    for _ in range(k % 4):
        oy, ox = -ox, oy
    out[-2], out[-1] = oy, ox
    if flip:
        out = [a[:, ::-1] for a in out]
        out[-1] = -out[-1]
    return [np.ascontiguousarray(a) for a in out]


def contact_weight(labels: np.ndarray, radius: int = 3, weight: float = 5.0) -> np.ndarray:
    """1 everywhere, 1 + ``weight`` within ``radius`` px of two different nuclei.

    Touching nuclei are where seeds merge; weighting the pixels between them
    makes the network keep the distance low there (the U-Net border weight idea).
    """
    size = 2 * radius + 1
    hi = ndimage.grey_dilation(labels, size=(size, size))
    big = np.iinfo(np.int32).max
    lo = -ndimage.grey_dilation(-np.where(labels > 0, labels, big), size=(size, size))
    contact = (hi > 0) & (lo < big) & (hi != lo)
    return (1.0 + weight * contact).astype(np.float32)


def load_real(folder: Path, split_parts: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Percentile-normalised images and their labels.

    ``split_parts``: one id per connected nucleus. Some label files reuse an id
    for nuclei far apart (nuclei-mnfinder's 2022-04-14_RPE1__5 has 19 such
    ids); for centre offsets each part needs its own id, or its centre would
    lie between them. (The distance-only engine was trained without the split;
    it stays off there so that its command still reproduces it.)
    """
    from skimage.measure import label as connected

    pairs = []
    for img_path in sorted((folder / "images").glob("*.tif")):
        lab = tifffile.imread(folder / "labels" / img_path.name).astype(np.int32)
        if split_parts:
            lab = connected(lab, background=0, connectivity=1).astype(np.int32)
        pairs.append((normalize_percentile(tifffile.imread(img_path)), lab))
    return pairs


def make_sim(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Simulated DAPI frames and their masks (kept as the shipped model was trained with it)."""
    from livescope.schema import load_profile
    from livescope.scope import SimulatedMicroscope

    rng = np.random.default_rng(seed)
    out = []
    with SimulatedMicroscope(load_profile("sim"), seed=seed) as sim:
        core = sim.core
        core.setConfig("Channel", "DAPI")
        core.setShutterOpen(True)
        for k in range(n):
            core.setConfig("Objective", ["10x", "20x", "40x"][k % 3])
            sim.set_time(float(rng.uniform(0, 7200)))
            core.setXYPosition(float(rng.uniform(-1200, 1200)), float(rng.uniform(-1200, 1200)))
            core.setPosition(float(rng.normal(0, 3)))
            core.setExposure(float(rng.uniform(10, 200)))
            core.snapImage()
            img = np.asarray(core.getImage()).copy()
            lab = sim.ground_truth().labels
            _, lab = np.unique(lab, return_inverse=True)
            out.append((normalize_percentile(img), lab.reshape(img.shape).astype(np.int32)))
    return out


def nucleus_bank(real: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image crop, mask) of every whole real nucleus (not cut by the image edge)."""
    bank = []
    for img, lab in real:
        h, w = lab.shape
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            if sl is None or sl[0].start == 0 or sl[1].start == 0:
                continue
            if sl[0].stop == h or sl[1].stop == w:
                continue
            mask = lab[sl] == i
            if mask.sum() >= 30:
                bank.append((img[sl].copy(), mask))
    return bank


def crowded(
    base: tuple[np.ndarray, np.ndarray], bank: list, rng: np.random.Generator, size: int = 320
) -> tuple[np.ndarray, np.ndarray]:
    """A real crop with more real nuclei pasted so that they touch their neighbours.

    Copy-paste augmentation: each pasted nucleus (rotated/flipped at random)
    lands next to one already there, its centre 0.75-1.05 radii sums away, so
    the network sees many touching pairs with their true split (the later
    paste occludes the earlier; occluded remnants under a third are dropped).
    """
    img, lab = base
    h, w = lab.shape
    y0 = int(rng.integers(0, max(1, h - size + 1)))
    x0 = int(rng.integers(0, max(1, w - size + 1)))
    im = img[y0 : y0 + size, x0 : x0 + size].copy()
    lb = lab[y0 : y0 + size, x0 : x0 + size].copy()
    _, lb = np.unique(lb, return_inverse=True)
    lb = lb.reshape(im.shape).astype(np.int32)
    areas = np.bincount(lb.ravel()).astype(float).tolist()  # pixels per id when placed
    for _ in range(int(rng.integers(8, 24))):
        crop, mask = bank[int(rng.integers(len(bank)))]
        k = int(rng.integers(4))
        crop, mask = np.rot90(crop, k), np.rot90(mask, k)
        if rng.integers(2):
            crop, mask = crop[:, ::-1], mask[:, ::-1]
        r_new = math.sqrt(mask.sum() / math.pi)
        ids = np.flatnonzero(np.bincount(lb.ravel())[1:]) + 1
        if ids.size and rng.uniform() < 0.9:
            j = int(rng.choice(ids))
            yy, xx = np.nonzero(lb == j)
            cy, cx = yy.mean(), xx.mean()
            r_old = math.sqrt(yy.size / math.pi)
            ang = rng.uniform(0, 2 * math.pi)
            d = (r_old + r_new) * rng.uniform(0.75, 1.05)
            cy, cx = cy + d * math.sin(ang), cx + d * math.cos(ang)
        else:
            cy, cx = rng.uniform(0, im.shape[0]), rng.uniform(0, im.shape[1])
        top, left = round(cy - mask.shape[0] / 2), round(cx - mask.shape[1] / 2)
        ys = slice(max(top, 0), min(top + mask.shape[0], im.shape[0]))
        xs = slice(max(left, 0), min(left + mask.shape[1], im.shape[1]))
        if ys.stop <= ys.start or xs.stop <= xs.start:
            continue
        m = mask[ys.start - top : ys.stop - top, xs.start - left : xs.stop - left]
        c = crop[ys.start - top : ys.stop - top, xs.start - left : xs.stop - left]
        new = len(areas)
        im[ys, xs][m] = c[m] * rng.uniform(0.7, 1.3)
        lb[ys, xs][m] = new
        areas.append(float(m.sum()))
    # drop occluded remnants (under a third of what was there) and renumber
    now = np.bincount(lb.ravel(), minlength=len(areas)).astype(float)
    keep = now >= np.maximum(np.asarray(areas) / 3, 1)
    keep[0] = True
    lb = np.where(keep[lb], lb, 0)
    _, lb = np.unique(lb, return_inverse=True)
    return im, lb.reshape(im.shape).astype(np.int32)


def halo_labels(labels: np.ndarray, px: int = 4) -> np.ndarray:
    """Labels grown ``px`` into the background, so a nucleus' glow goes with it."""
    grown = ndimage.grey_dilation(labels, size=(2 * px + 1, 2 * px + 1))
    return np.where(labels > 0, labels, grown).astype(np.int32)


def dim_some(
    img: np.ndarray, halo: np.ndarray, bg: float, rng: np.random.Generator, lowest: float = 0.02
) -> np.ndarray:
    """Each nucleus, at even odds, dimmed: its signal above background x ``lowest``-1.

    The factor is log-uniform; the factor map is smoothed so that edges stay natural.

    Real fields hold nuclei a few per cent as bright as their neighbours (out
    of focus, weakly stained: GOWT1 has nuclei at 3 counts beside ones at 100),
    which a per-patch intensity change never shows the network.
    """
    f = np.ones(int(halo.max()) + 1, np.float32)
    pick = np.flatnonzero(rng.uniform(size=f.size - 1) < 0.5) + 1
    f[pick] = np.exp(rng.uniform(math.log(lowest), 0.0, size=pick.size))
    fmap = ndimage.gaussian_filter(f[halo], 2.0)
    return (bg + (img - bg) * fmap).astype(np.float32)


class Sampler:
    def __init__(
        self, real, sim, seed: int, sim_share: float = 0.3, contact: float = 5.0,
        crowd_share: float = 0.0, gamma: float = 1.0, dim_share: float = 0.0,
        stretch: float = 1.0, neighbours: bool = False,
    ):  # fmt: skip
        self.neighbours = neighbours
        self.items = [
            (
                x,
                (lab > 0).astype(np.float32),
                distance_target(lab),
                contact_weight(lab, weight=contact),
                centre_offsets(lab),
                neighbour_target(lab) if neighbours else np.zeros_like(x, np.float32),
            )
            for x, lab in real + sim
        ]
        self.n_real = len(real)
        self.rng = np.random.default_rng(seed)
        self.sim_share = sim_share if sim else 0.0
        self.contact = contact
        self.crowd_share = crowd_share
        self.gamma = gamma
        self.real = real
        self.bank = nucleus_bank(real) if crowd_share > 0 else []
        self.dim_share = dim_share
        self.stretch = stretch
        self.halos: list[np.ndarray] = []
        self.bgs: list[float] = []  # each image's background level
        if dim_share > 0:
            self.halos = [halo_labels(lab) for _, lab in real + sim]
            self.bgs = [float(np.median(x[lab == 0])) for x, lab in real + sim]

    def patch(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        k = None  # index of a stored item (not a crowded patch)
        if rng.uniform() < self.sim_share:
            k = int(rng.integers(self.n_real, len(self.items)))
        elif self.crowd_share and rng.uniform() < self.crowd_share:
            img, lab = crowded(self.real[int(rng.integers(self.n_real))], self.bank, rng)
            fg = (lab > 0).astype(np.float32)
            dist, wt = distance_target(lab), contact_weight(lab, weight=self.contact)
            off = centre_offsets(lab)
            nb = neighbour_target(lab) if self.neighbours else np.zeros_like(dist)
        else:
            k = int(rng.integers(0, self.n_real))
        halo = None  # set: dim some nuclei of this patch
        if k is not None:
            img, fg, dist, wt, off, nb = self.items[k]
            if self.dim_share and rng.uniform() < self.dim_share:
                halo = self.halos[k]
        scale = math.exp(rng.uniform(math.log(SCALE_RANGE[0]), math.log(SCALE_RANGE[1])))
        size = sy = sx = round(PATCH / scale)
        if self.stretch > 1:  # anisotropic: nuclei longer along one axis than they are
            s = math.exp(rng.uniform(-math.log(self.stretch), math.log(self.stretch)))
            sy, sx = round(size * math.sqrt(s)), round(size / math.sqrt(s))
        h, w = img.shape
        pad = max(0, sy - h), max(0, sx - w)
        if pad[0] or pad[1]:
            img = np.pad(img, ((0, pad[0]), (0, pad[1])), mode="reflect")
            fg = np.pad(fg, ((0, pad[0]), (0, pad[1])))
            dist = np.pad(dist, ((0, pad[0]), (0, pad[1])))
            wt = np.pad(wt, ((0, pad[0]), (0, pad[1])), constant_values=1.0)
            nb = np.pad(nb, ((0, pad[0]), (0, pad[1])))
            off = np.pad(off, ((0, 0), (0, pad[0]), (0, pad[1])))
            if halo is not None:
                halo = np.pad(halo, ((0, pad[0]), (0, pad[1])))
            h, w = img.shape
        y = int(rng.integers(0, h - sy + 1))
        x = int(rng.integers(0, w - sx + 1))
        win = (slice(y, y + sy), slice(x, x + sx))
        im = img[win]
        if halo is not None and k is not None:
            im = dim_some(im, halo[win], self.bgs[k], rng)
        stack = torch.from_numpy(np.stack([im, fg[win], dist[win], wt[win], nb[win]]))
        stack = F.interpolate(
            stack[None], size=(PATCH, PATCH), mode="bilinear", align_corners=False
        )[0]
        # offsets: nearest (interpolating would average two nuclei's vectors at their
        # contact), then in the patch's pixels
        offs = F.interpolate(
            torch.from_numpy(np.ascontiguousarray(off[:, win[0], win[1]]))[None],
            size=(PATCH, PATCH), mode="nearest-exact",
        )[0].numpy() * np.array([PATCH / sy, PATCH / sx], np.float32)[:, None, None]  # fmt: skip
        im, fgt, dt, w, nbt = (
            stack[0].numpy(),
            (stack[1].numpy() > 0.5).astype(np.float32),
            stack[2].numpy(),
            stack[3].numpy(),
            stack[4].numpy(),
        )
        dt = dt * fgt
        nbt = nbt * fgt
        k_rot = int(rng.integers(0, 4))
        flip = bool(rng.integers(0, 2))
        im, fgt, dt, w, nbt, oy, ox = rot_flip([im, fgt, dt, w, nbt, offs[0], offs[1]], k_rot, flip)
        # intensity: gamma, gain/offset, blur, noise
        im = np.clip(im, 0, None) ** rng.uniform(0.6, 1.5)
        if rng.uniform() < 0.3:
            im = ndimage.gaussian_filter(im, rng.uniform(0.5, 2.0))
        im = im * rng.uniform(0.5, 1.5) + rng.uniform(-0.15, 0.15)
        noise = rng.uniform(0, 0.1)
        im = im + noise * rng.standard_normal(im.shape) * (0.3 + np.sqrt(np.clip(im, 0, None)))
        im = normalize_percentile(im)
        if self.gamma != 1.0:  # the card's normalisation gamma, as the engine applies it
            im = apply_gamma(im, self.gamma)
        return im.astype(np.float32), np.stack([fgt, dt, w, oy, ox, nbt]).astype(np.float32)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(self.patch() for _ in range(n)), strict=True)
        return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("engines/segmentation/nuclei-unet"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument(
        "--depth", type=int, default=3, help="U-Net poolings (4 doubles the field of view)"
    )
    ap.add_argument("--sim-images", type=int, default=36)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--contact-weight", type=float, default=5.0,
        help="extra loss weight between touching nuclei (0: none, as the first model)",
    )  # fmt: skip
    ap.add_argument(
        "--crowd-share", type=float, default=0.0,
        help="share of real patches made crowded by pasting real nuclei against each other",
    )  # fmt: skip
    ap.add_argument(
        "--gamma", type=float, default=1.0,
        help="input normalisation gamma (0.5: square root of the percentile-normalised frame)",
    )  # fmt: skip
    ap.add_argument(
        "--dim-share", type=float, default=0.0,
        help="share of patches in which half the nuclei are dimmed (to 2-100 %% of their signal)",
    )  # fmt: skip
    ap.add_argument(
        "--offsets", action="store_true",
        help="also predict each pixel's offset to its nucleus' centre (centre-vote instances; "
        "label ids reused for separate nuclei are split)",
    )  # fmt: skip
    ap.add_argument(
        "--stretch", type=float, default=1.0,
        help="anisotropic scale augmentation: one axis x up to sqrt(S), the other / sqrt(S)",
    )  # fmt: skip
    ap.add_argument("--offset-weight", type=float, default=1.0, help="weight of the offset loss")
    ap.add_argument(
        "--neighbours", action="store_true",
        help="also predict closeness to a touching neighbour (seeds from distance minus it)",
    )  # fmt: skip
    a = ap.parse_args()
    if a.neighbours and a.offsets:
        ap.error("--neighbours and --offsets are two ways to split nuclei: choose one")
    if a.stretch < 1:
        ap.error(f"--stretch must be >= 1 (1: none), got {a.stretch:g}")
    if not 0 < a.gamma <= 1:  # (NaN too) the card's normalisation.gamma, which the engine checks
        ap.error(f"--gamma must be > 0 and <= 1 (1: none, 0.5: square root), got {a.gamma:g}")
    if a.offset_weight != 1.0 and not a.offsets:
        ap.error("--offset-weight needs --offsets")
    seeded(a.seed, a.threads)
    t0 = time.time()
    real = load_real(data_root() / "nuclei-mnfinder" / "train", split_parts=a.offsets)
    sim = make_sim(a.sim_images, a.seed)
    sampler = Sampler(
        real,
        sim,
        a.seed,
        contact=a.contact_weight,
        crowd_share=a.crowd_share,
        gamma=a.gamma,
        dim_share=a.dim_share,
        stretch=a.stretch,
        neighbours=a.neighbours,
    )
    print(
        f"data: {len(real)} real + {len(sim)} simulated images ({time.time() - t0:.0f} s)",
        flush=True,
    )
    model = NucleiUNet(base=a.base, depth=a.depth, offsets=a.offsets, neighbours=a.neighbours)
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")

    def loss_at(it: int) -> torch.Tensor:
        x, y = sampler.batch(a.batch)
        out = model.logits(x)
        w = y[:, 2]
        loss_fg = (w * bce(out[:, 0], y[:, 0])).mean()
        loss_dist = (w * bce(out[:, 1], y[:, 1])).mean()
        if a.neighbours:
            return loss_fg + 2.0 * loss_dist + 2.0 * (w * bce(out[:, 2], y[:, 5])).mean()
        if not a.offsets:
            return loss_fg + 2.0 * loss_dist
        # L1 on the offsets (in the model's output units) over nucleus pixels
        fg = y[:, 0]
        err = (out[:, 2:] - y[:, 3:5] / NucleiUNet.OFFSET_SCALE_PX).abs().sum(1)
        loss_off = (w * fg * err).sum() / (w * fg).sum().clamp(min=1.0)
        return loss_fg + 2.0 * loss_dist + a.offset_weight * loss_off

    log = fit(model, a.iters, loss_at, t0=t0)
    export_onnx(model, a.out, (1, 1, 256, 256), "image", "prob", {0: "n", 2: "h", 3: "w"})
    write_record(a.out, {
        "command": f"python tools/train_seg.py --out {a.out} --seed {a.seed} --iters {a.iters} "
        f"--batch {a.batch} --base {a.base} --sim-images {a.sim_images} --threads {a.threads} "
        f"--contact-weight {float_arg(a.contact_weight)}"
        + (f" --crowd-share {float_arg(a.crowd_share)}" if a.crowd_share else "")
        + (f" --gamma {float_arg(a.gamma)}" if a.gamma != 1.0 else "")
        + (f" --dim-share {float_arg(a.dim_share)}" if a.dim_share else "")
        + (f" --offsets --offset-weight {float_arg(a.offset_weight)}" if a.offsets else "")
        + (f" --stretch {float_arg(a.stretch)}" if a.stretch != 1.0 else "")
        + (" --neighbours" if a.neighbours else "")
        + (f" --depth {a.depth}" if a.depth != 3 else ""),
        "seed": a.seed, "iters": a.iters, "batch": a.batch, "patch": PATCH, "base": a.base,
        "depth": a.depth,
        "contact_weight": a.contact_weight, "crowd_share": a.crowd_share, "gamma": a.gamma,
        "dim_share": a.dim_share, "offsets": a.offsets, "offset_weight": a.offset_weight,
        "stretch": a.stretch, "neighbours": a.neighbours,
        "train_images_real": len(real),
        "train_images_sim": len(sim), "log": log,
    }, t0)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
