"""Write the card of a trained virtual-staining engine (sha256, data, metrics).

    python tools/stain_card.py engines/virtual_stain/nuclei-stain

Metrics are measured with ONNX Runtime: on the held-aside columns of the ISL
field (x >= 768; one row per phase slice the model was trained with, and the
card's headline on slice 6, the middle of the shipped engine's 4-8, or on the
middle of the model's own slices where it was not trained on 6), and on
simulated fields from seeds the training never used (`HELD_OUT_SEEDS` of
tools/_cards.py; a model whose simulated pairs came from one, its train.json
``seed`` with ``train_images_sim`` above 0, is refused, as train_stain.py
refuses it), where the predicted stain is also segmented by nuclei-unet and
scored against the true nuclei. The card is written once its metrics are:
where they fail, the card that was in the folder before is put back.
"""

from __future__ import annotations

import sys
from pathlib import Path

from livescope.inference import StainEngine, evaluate_stain, parse_crop
from livescope.pipeline import score_stain_simulated, views_for_seeds
from livescope.schema import require_data_root as data_root

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cards import (
    HELD_OUT_SEEDS,
    draft_card,
    engine_and_record,
    new_card,
    require_unseen,
    write_card,
)
from train_stain import ISL, ISL_VALIDATION, PIXEL_UM, isl_files, sim_seeds

VIEWS_PER_SEED = 8
HEADLINE_SLICE = 6


def headline_slice(slices: list[int]) -> int:
    """The phase slice of the card's headline metrics: `HEADLINE_SLICE` where the model
    was trained on it, else the middle of ``slices`` (the lower one of two)."""
    if HEADLINE_SLICE in slices:
        return HEADLINE_SLICE
    ordered = sorted(slices)
    return ordered[(len(ordered) - 1) // 2]


def measure(folder: Path, slices: list[int]) -> dict[str, dict[str, float]]:
    """The card's metrics of the engine in ``folder``, trained on the ISL phase ``slices``."""
    metrics: dict[str, dict[str, float]] = {}
    head_z = headline_slice(slices)
    engine = StainEngine(folder, backend="onnxruntime")
    phase, dapi = isl_files(data_root())
    crop = parse_crop(ISL_VALIDATION)
    per_slice = {}
    for z in slices:
        r = evaluate_stain(engine, phase[z], dapi, crop=crop)
        per_slice[z] = r
        print(f"ISL held-aside, slice {z}: {r['pearson']} {r['ssim']} {r['psnr']}", flush=True)
    head = per_slice[head_z]
    metrics[f"{ISL}/held-aside (cols 768-1023), z_depth-{head_z}"] = {
        k: head[k] for k in ("pearson", "ssim", "psnr")
    }
    metrics[f"{ISL}/held-aside, pearson by slice"] = {
        f"z{z}": r["pearson"] for z, r in per_slice.items()
    }
    r_train = evaluate_stain(engine, phase[head_z], dapi, crop=parse_crop("0:1024,0:736"))
    metrics[f"{ISL}/training columns (fit, for reference)"] = {
        k: r_train[k] for k in ("pearson", "ssim", "psnr")
    }
    views = views_for_seeds(HELD_OUT_SEEDS, VIEWS_PER_SEED)
    sim = score_stain_simulated(engine, views, segmenter="nuclei-unet")
    print("simulated, held-out seeds:", sim, flush=True)
    metrics[f"simulated seeds {','.join(map(str, HELD_OUT_SEEDS))} (held out)"] = {
        k: float(sim[k]) for k in ("pearson", "ssim", "psnr", "seg_f1", "seg_ap50")
    }
    engine.close()
    return metrics


def main() -> int:
    folder, train = engine_and_record(__doc__)
    n_sim = int(train["train_images_sim"])
    require_unseen(
        folder, f"seed {train['seed']} (of its {n_sim} simulated pairs)",
        sim_seeds(n_sim, int(train["seed"])),
    )  # fmt: skip
    card = new_card(
        folder, train, task="virtual_stain",
        description="Virtual nuclear stain: a small U-Net predicts the nuclear (DAPI) "
        "fluorescence from one phase-contrast frame, in the target's normalised units.",
        input_name="image", channels=1,
        outputs=[{"name": "stain", "channels": ["nuclear_stain"]}],
        data=[
            {"name": ISL, "split": f"phase z-slices {train['isl_slices']}, columns "
             f"{train['isl_train_cols'][0]}-{train['isl_train_cols'][1] - 1} (held aside: "
             f"rows,cols {ISL_VALIDATION})", "images": len(train["isl_slices"]),
             "licence": "CC BY 4.0 (Christiansen et al., Cell 2018)"},
            {"name": "simulated microscope (livescope sim profile, Phase -> DAPI)",
             "split": f"generated, seed {train['seed']}", "images": train["train_images_sim"],
             "licence": "generated here"},
        ],
        augmentation="scale 0.7-1.4x, rot90/flip, gain 0.7-1.3, offset +-0.1, blur sigma "
        "0.5-1.5 (30%), signal-dependent Gaussian noise, random phase slice",
        # (192: the 4-pooling U-Net's reach; at 128 its output differed along each cut)
        tiling={"tile_px": 1024, "overlap_px": 192},
        pixel_size_um=PIXEL_UM,
        target_normalisation={"kind": "percentile", "low": 1.0, "high": 99.8},
        torch_module="livescope.models:StainUNet",
        multiple_of=2 ** int(train["depth"]),
        torch_kwargs={"base": int(train["base"]), "depth": int(train["depth"])},
    )  # fmt: skip
    # (the engine loads its card from the folder: a draft without metrics, until they are in)
    with draft_card(folder, card):
        card["metrics"] = measure(folder, train["isl_slices"])
    write_card(folder, card)
    print(f"wrote {folder / 'card.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
