"""Write the card of a trained cell-state classifier (sha256, data, metrics).

    python tools/cellstate_card.py engines/classification/cell-state

Metrics are measured with ONNX Runtime on simulated fields from seeds the
training never used (`HELD_OUT_SEEDS` of tools/_cards.py, 20 fields each, true
nuclei as the cells; a model whose train.json ``sim_seeds`` include one is
refused, as train_cellstate.py refuses them), and on
the annotated GOWT1 sequence 01: how many of its divisions the classifier flags
in the mother's last 5 frames, and how often it flags any other cell-frame.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from livescope.inference import CellStateEngine
from livescope.pipeline import flag_divisions_ctc, score_states_simulated, views_for_seeds
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
from train_cellstate import CLASSES, CROP, PIXEL_UM

VIEWS_PER_SEED = 20
GOWT1_PIXEL_UM = 0.240  # Cell Tracking Challenge dataset description for Fluo-N2DH-GOWT1


def main() -> int:
    folder, train = engine_and_record(__doc__)
    require_unseen(folder, f"sim_seeds {train['sim_seeds']}", train["sim_seeds"])
    card = new_card(
        folder, train, task="classification",
        description="Cell state from a crop of the nuclear signal centred on each cell and the "
        "cell's mask: interphase, prophase (early mitosis), metaphase and anaphase/telophase "
        "(late mitosis), apoptotic. P(mitosis) is the sum of the three mitotic classes.",
        input_name="crops", channels=2,
        outputs=[{"name": "probs", "channels": list(CLASSES)}],
        data=[
            {"name": "simulated microscope (livescope sim profile, DAPI, true nuclei)",
             "split": f"seeds {train['sim_seeds']}", "images": train["views"],
             "licence": "generated here"},
        ],
        augmentation="rot90/flip, gain 0.7-1.4, offset +-0.05, Gaussian noise, mask grown "
            "or shrunk by 1 px; on half the crops (unless --no-realism) size 0.85-1.2x, grainy "
            "chromatin and dark nucleoli; classes sampled by the square root of their counts "
            f"(cells: {train['class_counts']})",
        crop_px=CROP,
        pixel_size_um=PIXEL_UM,
        torch_module="livescope.models:CellStateNet",
        # (train.json records --base since session 55; the shipped engine's was 16)
        torch_kwargs={"n_classes": len(CLASSES), "base": int(train.get("base", 16))},
    )  # fmt: skip
    # (the engine loads its card from the folder: a draft without metrics, until they are in)
    with draft_card(folder, card):
        engine = CellStateEngine(folder, backend="onnxruntime")
        views = views_for_seeds(HELD_OUT_SEEDS, VIEWS_PER_SEED)
        sim = score_states_simulated(engine, views)
        print("simulated, held-out seeds:", json.dumps(sim), flush=True)
        key = f"simulated seeds {','.join(map(str, HELD_OUT_SEEDS))} (held out, true nuclei)"
        card["metrics"][key] = {
            k: float(sim[k])
            for k in ("mitosis_precision", "mitosis_recall", "mitosis_f1", "mitotic_cells", "cells")
        } | {f"recall_{k}": float(v) for k, v in sim["class_recall"].items()}  # type: ignore[index]
        gowt1 = data_root() / "ctc-Fluo-N2DH-GOWT1"
        div = flag_divisions_ctc(
            engine, gowt1 / "01", gowt1 / "01_GT", pixel_size_um=GOWT1_PIXEL_UM
        )
        print("GOWT1 01:", json.dumps(div), flush=True)
        card["metrics"]["ctc-Fluo-N2DH-GOWT1/01 (GT masks, 0.240 um/px)"] = {
            "divisions": float(div["divisions"]),
            "flagged_in_last_5_frames": float(div["flagged"]),
            "other_cell_frames_flagged": float(div["other_flag_rate"]),
        }  # type: ignore[index]
        engine.close()
    write_card(folder, card)
    print(f"wrote {folder / 'card.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
