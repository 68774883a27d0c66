"""What the card scripts in tools/ share: the engine folder and its train.json, the
common head of a card, its training record, and writing card.yaml; and the simulator
seeds the cards validate on, which the training scripts refuse."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from livescope.inference import sha256_file

HELD_OUT_SEEDS = (100, 101, 102)
"""Simulator seeds whose fields the card scripts score as held out (cellstate_card.py,
stain_card.py). No training may draw fields from them: ``simulated_views(n, seed=s)``
starts with the same fields for every ``n``, so a model trained on seed 100 would be
scored on its own training fields and its fit reported as generalisation."""


def held_out(seeds: Iterable[int]) -> list[int]:
    """Those of the simulator ``seeds`` that are `HELD_OUT_SEEDS`, in order, once each."""
    return sorted(set(seeds) & set(HELD_OUT_SEEDS))


def _held_out_said(used: list[int]) -> str:
    seeds = ", ".join(map(str, used))
    return (
        f"simulator seed{'s' * (len(used) > 1)} {seeds} {'are' if len(used) > 1 else 'is'} "
        f"held out for the card's validation (HELD_OUT_SEEDS {list(HELD_OUT_SEEDS)} in "
        "tools/_cards.py)"
    )


def refuse_held_out(ap: argparse.ArgumentParser, given: str, seeds: Iterable[int]) -> None:
    """A usage error (status 2) where a training script would draw simulated fields from
    `HELD_OUT_SEEDS`; ``given`` is the option as written (``--seeds 0,100``)."""
    if used := held_out(seeds):
        ap.error(f"{given}: {_held_out_said(used)}; train on other seeds")


def require_unseen(folder: Path, recorded: str, seeds: Iterable[int]) -> None:
    """Exit naming ``folder``'s train.json where its training drew simulated fields from
    `HELD_OUT_SEEDS` (``seeds``; ``recorded``: how train.json says them), which the card
    would score as held out.

    Raises
    ------
    SystemExit
        with the message, before anything is measured or written.
    """
    if used := held_out(seeds):
        raise SystemExit(
            f"{folder / 'train.json'}: {recorded}: {_held_out_said(used)}, so its held-out "
            "metrics would be measured on training fields; train again on other seeds"
        )


def engine_and_record(doc: str | None) -> tuple[Path, dict[str, Any]]:
    """Parse ``ENGINE_FOLDER`` from the command line; return it and its train.json.

    Exits with a usage error (status 2) where the folder has no train.json: the
    training script writes it, and a card is written only for what was trained.
    """
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("engine", type=Path)
    folder: Path = ap.parse_args().engine
    if not (folder / "train.json").is_file():
        # (stain_card.py's engine comes from train_stain.py, and so on)
        kind = ap.prog.removesuffix(".py").removesuffix("_card")
        trainer = f"tools/train_{kind}.py" if ap.prog.endswith("_card.py") else "tools/train_*.py"
        ap.error(f"{folder} has no train.json: run {trainer} --out {folder} first")
    return folder, json.loads((folder / "train.json").read_text())


def new_card(
    folder: Path,
    train: dict[str, Any],
    *,
    task: str,
    description: str,
    input_name: str,
    channels: int,
    outputs: list[dict[str, Any]],
    data: list[dict[str, Any]],
    augmentation: str,
    multiple_of: int = 8,
    **fields: Any,
) -> dict[str, Any]:
    """A card (metrics still empty): the common head, ``fields`` in order, the training record.

    ``multiple_of``: what H and W of the model's input must be multiples of
    (``2 ** depth`` for a U-Net: each pooling halves them).

    Raises
    ------
    ValueError
        when the card would not describe ``folder/model.onnx``: another input name,
        channel count or output, or a ``torch_module``/``torch_kwargs`` that does not
        build a network with exactly the ONNX file's weights (see `check_against_onnx`).
    """
    card = {
        "name": folder.name,
        "task": task,
        "version": "1",
        "description": description,
        "model": "model.onnx",
        "sha256": sha256_file(folder / "model.onnx"),
        "opset": onnx_opset(folder / "model.onnx"),
        "input": {"name": input_name, "axes": "NCYX", "dtype": "float32", "channels": channels,
                  "multiple_of": multiple_of},
        "normalisation": {"kind": "percentile", "low": 1.0, "high": 99.8},
        "outputs": outputs,
        **fields,
        "training": {
            "command": train["command"],
            "seed": train["seed"],
            "seconds": train["seconds"],
            "data": data,
            "augmentation": augmentation,
        },
        "metrics": {},
    }  # fmt: skip
    check_against_onnx(folder / "model.onnx", card)
    return card


def onnx_opset(model: Path) -> int:
    """The default-domain opset ``model`` was exported with."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def check_against_onnx(model: Path, card: dict[str, Any]) -> None:
    """Raise ValueError where ``card`` says something of ``model`` that its graph contradicts.

    Checked: the one image input's name, rank, float32 dtype and (where the graph
    fixes them) channel count and H, W (multiples of ``input.multiple_of``; the
    card's ``crop_px``); the outputs' names and channel counts; and that the card's
    ``torch_module`` built with its ``torch_kwargs`` has exactly the ONNX weights
    (names and shapes), which is how the torch backend rebuilds the network. Each
    of these was written by hand in a card script, apart from the export.
    """
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    graph = proto.graph
    weights = {w.name: tuple(w.dims) for w in graph.initializer}

    def dims(value: Any) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    problems = []
    inputs = [i for i in graph.input if i.name not in weights]
    spec = card["input"]
    if [i.name for i in inputs] != [spec["name"]]:
        problems.append(f"input {spec['name']!r}, the ONNX graph's {[i.name for i in inputs]}")
    else:
        shape = dims(inputs[0])
        if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"input dtype {spec['dtype']}, the ONNX graph's is not float32")
        if len(shape) != 4:
            problems.append(f"input axes {spec['axes']}, the ONNX input has shape {shape}")
        else:
            if isinstance(shape[1], int) and shape[1] != spec["channels"]:
                problems.append(f"{spec['channels']} input channels, the ONNX graph's {shape[1]}")
            for n in shape[2:]:
                if isinstance(n, int) and n % spec["multiple_of"]:
                    problems.append(f"input.multiple_of {spec['multiple_of']}, the ONNX H, W {n}")
                if isinstance(n, int) and "crop_px" in card and n != card["crop_px"]:
                    problems.append(f"crop_px {card['crop_px']}, the ONNX input's H, W {n}")
    outputs = {o.name: dims(o) for o in graph.output}
    if [o["name"] for o in card["outputs"]] != list(outputs):
        problems.append(f"outputs {[o['name'] for o in card['outputs']]}, the ONNX {list(outputs)}")
    else:
        for o in card["outputs"]:
            shape = outputs[o["name"]]
            if len(shape) > 1 and isinstance(shape[1], int) and shape[1] != len(o["channels"]):
                problems.append(
                    f"output {o['name']} with {len(o['channels'])} channels, the ONNX {shape[1]}"
                )
    if card.get("torch_module"):
        problems += _torch_mismatch(card["torch_module"], card.get("torch_kwargs", {}), weights)
    if problems:
        raise ValueError(
            f"the card for {model} does not describe it: it says "
            + "; ".join(problems)
            + " (the card script's fields disagree with what the training script exported)"
        )


def _torch_mismatch(
    spec: str, kwargs: dict[str, Any], weights: dict[str, tuple[int, ...]]
) -> list[str]:
    """What the network ``spec(**kwargs)`` holds other than the ONNX ``weights``."""
    import importlib

    mod_name, _, cls_name = spec.partition(":")
    net = getattr(importlib.import_module(mod_name), cls_name)(**kwargs)
    state = {
        k: tuple(v.shape)
        for k, v in net.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    if state == weights:
        return []
    other = sorted(k for k in state.keys() | weights.keys() if state.get(k) != weights.get(k))
    return [
        f"torch_kwargs {kwargs} for {spec}, whose weights differ from the ONNX file's "
        f"({len(other)} of them, first {other[0]}: {state.get(other[0])} vs "
        f"{weights.get(other[0])})"
    ]


def write_card(folder: Path, card: dict[str, Any]) -> None:
    """Write ``folder/card.yaml`` (keys in the order given)."""
    (folder / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))


@contextlib.contextmanager
def draft_card(folder: Path, card: dict[str, Any]) -> Iterator[None]:
    """Write ``card`` (metrics still empty) for the engine to load while it is measured.

    The engine is loaded from ``folder/card.yaml``, so the card must be there before
    its metrics are. Where the block raises (a failed measurement, Ctrl-C), the card
    that was there before is put back, or the draft removed where there was none:
    a card without metrics is never left behind. The caller writes the complete
    card after the block.
    """
    path = folder / "card.yaml"
    before = path.read_bytes() if path.is_file() else None
    write_card(folder, card)
    try:
        yield
    except BaseException:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)
        raise
