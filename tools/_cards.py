"""What the card scripts in tools/ share: the engine folder and its train.json, the
common head of a card, its training record, and writing card.yaml."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from livescope.inference import sha256_file


def engine_and_record(doc: str | None) -> tuple[Path, dict[str, Any]]:
    """Parse ``ENGINE_FOLDER`` from the command line; return it and its train.json."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("engine", type=Path)
    folder: Path = ap.parse_args().engine
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
    """
    return {
        "name": folder.name,
        "task": task,
        "version": "1",
        "description": description,
        "model": "model.onnx",
        "sha256": sha256_file(folder / "model.onnx"),
        "opset": 17,
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


def write_card(folder: Path, card: dict[str, Any]) -> None:
    """Write ``folder/card.yaml`` (keys in the order given)."""
    (folder / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
