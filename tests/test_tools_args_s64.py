"""The training scripts in tools/ keep off the card's held-out simulator seeds, and record
a command that gives back exactly the arguments they ran with.

Session 64's review: ``train_cellstate.py --seeds 100,...`` trained on the very fields
(``simulated_views(n, seed=100)`` starts with the same ones for every n) that
``cellstate_card.py`` then scored as "held out", and ``train_stain.py --seed 100`` drew
its simulated pairs from them; nothing refused or flagged it. And the recorded command
rounded float options to 6 significant digits (``--gamma 0.33333333`` became 0.333333),
so the card's ``training.command`` did not reproduce the run.

The scripts are loaded from their files and their ``main`` run with stand-ins for
whatever would load data, train or measure, as in test_tools_inputs_s61.py.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from .conftest import ROOT
from .test_tools_inputs_s61 import Trained, _never, _tool, _torch_tool

# ------------------------------------------------------------------ the shared check (no torch)


def test_held_out_seeds_are_found_among_training_seeds() -> None:
    cards = _tool("_cards")
    held = list(cards.HELD_OUT_SEEDS)
    assert held  # (the card scripts validate on them)
    assert cards.held_out([0, held[-1], 5, held[0], held[0]]) == sorted({held[0], held[-1]})
    assert cards.held_out([s for s in range(max(held) + 5) if s not in held]) == []


def test_refuse_held_out_is_a_usage_error_naming_the_seeds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cards = _tool("_cards")
    seed = cards.HELD_OUT_SEEDS[0]
    ap = argparse.ArgumentParser(prog="train_x.py")
    with pytest.raises(SystemExit) as exc:
        cards.refuse_held_out(ap, f"--seeds 0,{seed}", [0, seed])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--seeds 0,{seed}: simulator seed {seed} is held out" in err
    assert f"HELD_OUT_SEEDS {list(cards.HELD_OUT_SEEDS)}" in err
    cards.refuse_held_out(ap, "--seeds 0,1", [0, 1])  # (no error)


def test_card_refuses_a_record_of_training_on_held_out_seeds(tmp_path: Path) -> None:
    cards = _tool("_cards")
    seeds = [3, *cards.HELD_OUT_SEEDS]
    with pytest.raises(SystemExit) as exc:
        cards.require_unseen(tmp_path, f"sim_seeds {seeds}", seeds)
    said = str(exc.value.code)
    assert f"{tmp_path / 'train.json'}: sim_seeds {seeds}" in said
    assert f"simulator seeds {', '.join(map(str, cards.HELD_OUT_SEEDS))} are held out" in said
    cards.require_unseen(tmp_path, "sim_seeds [3]", [3])  # (no error)


# ------------------------------------------------------------------ training scripts


def _stand_ins(script: ModuleType, monkeypatch: pytest.MonkeyPatch, root: Path) -> list[Any]:
    """Replace what would seed torch, load data, train and export; the records written
    are appended to the returned list."""
    records: list[Any] = []
    nothing = lambda *a, **k: None  # noqa: E731
    for name, stand_in in {
        "seeded": nothing, "fit": lambda *a, **k: [], "export_onnx": nothing,
        "write_record": lambda out, record, t0: records.append(record),
        "data_root": lambda: root,
        "isl_files": lambda r: ({z: r / f"z{z}" for z in range(13)}, r / "dapi"),
        "load_isl": lambda *a: [], "load_sim": lambda *a: [], "load_real": lambda *a, **k: [],
        "make_sim": lambda *a: [], "Sampler": nothing, "StainUNet": nothing,
        "NucleiUNet": nothing, "CellStateNet": nothing,
        "collect": lambda *a: (np.zeros((1, 2, 48, 48), np.float32), np.zeros(1, np.int64)),
    }.items():  # fmt: skip
        if hasattr(script, name):
            monkeypatch.setattr(script, name, stand_in)
    return records


def _record(
    trainer: str, argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, Any]:
    script = _torch_tool(trainer)
    records = _stand_ins(script, monkeypatch, tmp_path)
    monkeypatch.setattr(sys, "argv", [f"{trainer}.py", *argv])
    assert script.main() == 0
    (record,) = records
    return record  # type: ignore[no-any-return]


@pytest.mark.parametrize("at", [0, -1])
def test_train_cellstate_refuses_held_out_seeds(
    at: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _torch_tool("train_cellstate")
    held = _tool("_cards").HELD_OUT_SEEDS
    seeds = f"0,1,{held[at]}"
    monkeypatch.setattr(script, "seeded", _never)
    monkeypatch.setattr(script, "collect", _never)
    monkeypatch.setattr(sys, "argv", ["train_cellstate.py", "--seeds", seeds])
    with pytest.raises(SystemExit) as exc:
        script.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--seeds {seeds}: simulator seed {held[at]} is held out" in err
    assert "HELD_OUT_SEEDS" in err


def test_train_cellstate_takes_seeds_beside_the_held_out_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = _torch_tool("train_cellstate")
    held = _tool("_cards").HELD_OUT_SEEDS
    seeds = f"{min(held) - 1},{max(held) + 1}"
    monkeypatch.setattr(script, "seeded", _never)
    monkeypatch.setattr(sys, "argv", ["train_cellstate.py", "--seeds", seeds])
    with pytest.raises(Trained):
        script.main()


def test_train_stain_refuses_a_seed_whose_simulated_fields_are_held_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # (the simulated pairs are the fields of simulated_views(--sim-images, seed=--seed))
    script = _torch_tool("train_stain")
    seed = _tool("_cards").HELD_OUT_SEEDS[1]
    _stand_ins(script, monkeypatch, tmp_path)
    monkeypatch.setattr(script, "seeded", _never)
    monkeypatch.setattr(sys, "argv", ["train_stain.py", "--seed", str(seed)])
    with pytest.raises(SystemExit) as exc:
        script.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--seed {seed}" in err
    assert f"simulator seed {seed} is held out" in err
    assert script.sim_seeds(48, seed) == [seed]


def test_train_stain_without_simulated_pairs_may_take_any_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _torch_tool("train_stain")
    seed = _tool("_cards").HELD_OUT_SEEDS[1]
    _stand_ins(script, monkeypatch, tmp_path)
    monkeypatch.setattr(script, "seeded", _never)
    monkeypatch.setattr(sys, "argv", ["train_stain.py", "--seed", str(seed), "--sim-images", "0"])
    with pytest.raises(Trained):
        script.main()


@pytest.mark.parametrize(
    ("trainer", "argv", "options"),
    [
        pytest.param(
            "train_seg",
            ["--gamma", "0.33333333", "--dim-share", "0.123456789", "--crowd-share",
             "0.1000001", "--contact-weight", "2.0000001", "--stretch", "1.23456789",
             "--offsets", "--offset-weight", "0.77777777"],
            ["gamma", "dim_share", "crowd_share", "contact_weight", "stretch", "offset_weight"],
            id="seg",
        ),
        pytest.param("train_stain", ["--sim-share", "0.33333333"], ["sim_share"], id="stain"),
    ],
)  # fmt: skip
def test_recorded_command_gives_back_the_float_options_exactly(
    trainer: str, argv: list[str], options: list[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    record = _record(trainer, argv, monkeypatch, tmp_path)
    command = shlex.split(record["command"])
    assert command[:2] == ["python", f"tools/{trainer}.py"]
    given = dict(itertools.pairwise(argv))
    for option in options:
        flag = "--" + option.replace("_", "-")
        recorded = command[command.index(flag) + 1]
        assert float(recorded) == float(given[flag]), f"{flag} {given[flag]} recorded as {recorded}"
    # and the command, run again, records the same command
    assert _record(trainer, command[2:], monkeypatch, tmp_path)["command"] == record["command"]


@pytest.mark.parametrize(
    ("trainer", "engine"),
    [
        pytest.param("train_seg", "segmentation/nuclei-unet", id="seg"),
        pytest.param("train_stain", "virtual_stain/nuclei-stain", id="stain"),
        pytest.param("train_cellstate", "classification/cell-state", id="cellstate"),
    ],
)
def test_shipped_cards_commands_are_recorded_as_they_are(
    trainer: str, engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = yaml.safe_load((ROOT / "engines" / engine / "card.yaml").read_text())
    command = card["training"]["command"]
    record = _record(trainer, shlex.split(command)[2:], monkeypatch, tmp_path)
    assert record["command"] == command


# ------------------------------------------------------------------ card scripts


def _card_script(
    name: str, train: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ModuleType:
    script = _torch_tool(name)
    monkeypatch.setattr(script, "engine_and_record", lambda doc: (tmp_path, train))
    monkeypatch.setattr(script, "new_card", _never)
    return script


def _cellstate_train(seeds: list[int]) -> dict[str, Any]:
    return {"sim_seeds": seeds, "views": len(seeds), "class_counts": {}, "base": 16}


def test_cellstate_card_refuses_a_model_trained_on_held_out_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = _tool("_cards").HELD_OUT_SEEDS
    seeds = [0, held[0]]
    script = _card_script("cellstate_card", _cellstate_train(seeds), tmp_path, monkeypatch)
    with pytest.raises(SystemExit) as exc:
        script.main()
    said = str(exc.value.code)
    assert f"{tmp_path / 'train.json'}: sim_seeds {seeds}" in said
    assert f"simulator seed {held[0]} is held out" in said


def test_cellstate_card_measures_a_model_trained_beside_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _card_script("cellstate_card", _cellstate_train([0, 1, 2]), tmp_path, monkeypatch)
    with pytest.raises(Trained):
        script.main()


@pytest.mark.parametrize(("images", "refused"), [(48, True), (0, False)])
def test_stain_card_refuses_a_model_whose_simulated_pairs_were_held_out(
    images: int, refused: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = _tool("_cards").HELD_OUT_SEEDS[2]
    train = {"seed": seed, "train_images_sim": images, "isl_slices": [4, 5, 6],
             "isl_train_cols": [0, 736], "depth": 4, "base": 16}  # fmt: skip
    script = _card_script("stain_card", train, tmp_path, monkeypatch)
    if not refused:  # (no simulated pairs: the seed drew no field)
        with pytest.raises(Trained):
            script.main()
        return
    with pytest.raises(SystemExit) as exc:
        script.main()
    said = str(exc.value.code)
    assert f"{tmp_path / 'train.json'}: seed {seed}" in said
    assert f"simulator seed {seed} is held out" in said
