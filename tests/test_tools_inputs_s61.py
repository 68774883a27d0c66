"""The training and card scripts in tools/ refuse what would fail later, before any training.

Session 61's review: ``train_seg.py --gamma 1.5`` trained in full, then its card was
refused by the engine; ``train_stain.py --isl-slices 4,20`` died with ``KeyError: 20``;
``stain_card.py`` for a model trained without slice 6 died with ``KeyError: 6`` after
measuring, leaving a card without metrics; a card script pointed at a folder without
train.json raised a bare FileNotFoundError.

The scripts are loaded from their files (tools/ is no package) and their ``main`` run
with a command line; whatever would train or measure is replaced by a stand-in, so
nothing is trained, no data is read and no model is run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from .conftest import ROOT, skip_unless_required

HAVE_TORCH = importlib.util.find_spec("torch") is not None


class Trained(Exception):
    """Raised by the stand-in for the first step of training: the arguments were accepted."""


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"s61_{name}", ROOT / "tools" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_tool(name: str) -> ModuleType:
    """A script that imports torch at its top (the ``train`` extra)."""
    if not HAVE_TORCH:
        skip_unless_required("torch", "torch (the train extra) is not installed")
    return _tool(name)


def _never(*args: Any, **kwargs: Any) -> Any:
    raise Trained


# ------------------------------------------------------------------ card scripts: train.json


@pytest.mark.parametrize(
    ("prog", "trainer"),
    [
        pytest.param("stain_card.py", "tools/train_stain.py", id="stain"),
        pytest.param("seg_card.py", "tools/train_seg.py", id="seg"),
        pytest.param("cellstate_card.py", "tools/train_cellstate.py", id="cellstate"),
    ],
)
def test_card_script_without_train_json_says_which_training_makes_it(
    prog: str, trainer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    cards = _tool("_cards")
    folder = tmp_path / "nuclei-stain"
    folder.mkdir()
    monkeypatch.setattr(sys, "argv", [prog, str(folder)])
    with pytest.raises(SystemExit) as exc:
        cards.engine_and_record("doc")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"{folder} has no train.json: run {trainer} --out {folder} first" in err


# ------------------------------------------------------------------ train_seg.py --gamma


@pytest.mark.parametrize("gamma", ["1.5", "0", "-0.5", "nan"])
def test_train_seg_refuses_a_gamma_the_card_cannot_hold(
    gamma: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # (the card's normalisation.gamma: 0 < gamma <= 1)
    script = _torch_tool("train_seg")
    monkeypatch.setattr(script, "seeded", _never)
    monkeypatch.setattr(sys, "argv", ["train_seg.py", "--gamma", gamma])
    with pytest.raises(SystemExit) as exc:
        script.main()
    assert exc.value.code == 2
    assert f"--gamma must be > 0 and <= 1 (1: none, 0.5: square root), got {gamma}" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("gamma", ["0.5", "1"])
def test_train_seg_takes_a_gamma_the_card_can_hold(
    gamma: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _torch_tool("train_seg")
    monkeypatch.setattr(script, "seeded", _never)
    monkeypatch.setattr(sys, "argv", ["train_seg.py", "--gamma", gamma])
    with pytest.raises(Trained):
        script.main()


# ------------------------------------------------------------------ train_stain.py --isl-slices


@pytest.fixture
def isl_root(tmp_path: Path) -> Path:
    """A data root whose ISL field has phase slices 0-12 (empty files: only names are read)."""
    folder = tmp_path / "virtual-staining-isl-condB"
    folder.mkdir()
    for z in range(13):
        (folder / f"well-A4,z_depth-{z},channel-PHASE_CONTRAST,is_mask-false.png").touch()
    (folder / "well-A4,channel-DAPI_CONFOCAL,is_mask-false.png").touch()
    return tmp_path


@pytest.mark.parametrize(
    ("slices", "says"),
    [
        pytest.param(
            "4,20", "--isl-slices 4,20: the ISL field (virtual-staining-isl-condB) has no phase "
            "slice 20; its slices are 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12", id="missing",
        ),
        pytest.param(
            "4,x", "--isl-slices takes z indices separated by commas (e.g. 4,5,6), got '4,x'",
            id="not-a-number",
        ),
    ],
)  # fmt: skip
def test_train_stain_refuses_slices_the_field_lacks(
    slices: str, says: str, isl_root: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    script = _torch_tool("train_stain")
    monkeypatch.setattr(script, "data_root", lambda: isl_root)
    monkeypatch.setattr(script, "seeded", _never)
    monkeypatch.setattr(script, "load_isl", _never)
    monkeypatch.setattr(sys, "argv", ["train_stain.py", "--isl-slices", slices])
    with pytest.raises(SystemExit) as exc:
        script.main()
    assert exc.value.code == 2
    assert says in capsys.readouterr().err


def test_train_stain_takes_slices_the_field_has(
    isl_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _torch_tool("train_stain")
    monkeypatch.setattr(script, "data_root", lambda: isl_root)
    monkeypatch.setattr(script, "seeded", _never)
    monkeypatch.setattr(sys, "argv", ["train_stain.py", "--isl-slices", "0,4,12"])
    with pytest.raises(Trained):
        script.main()


# ------------------------------------------------------------------ stain_card.py


class _Engine:
    """Stands in for StainEngine: it loads the card from the folder, as the real one does."""

    def __init__(self, folder: Path, **kwargs: Any) -> None:
        self.card = yaml.safe_load((folder / "card.yaml").read_text())

    def close(self) -> None:
        pass


def _stain_card(
    folder: Path, slices: list[int], monkeypatch: pytest.MonkeyPatch, *, fail: bool = False
) -> ModuleType:
    """stain_card.py with its model runs replaced: each metric is the slice's z (and +0.5
    on the training columns), so that the card shows which slice was measured."""
    script = _torch_tool("stain_card")
    folder.mkdir(exist_ok=True)
    train = {"isl_slices": slices, "isl_train_cols": [0, 736], "seed": 0, "train_images_sim": 1,
             "depth": 4, "base": 16}  # fmt: skip

    def evaluate(engine: _Engine, phase: str, dapi: str, *, crop: Any) -> dict[str, float]:
        if fail:
            raise RuntimeError("the measurement failed")
        z = float(phase.removeprefix("phase-z"))
        on_training_columns = crop[1].stop == 736
        return dict.fromkeys(("pearson", "ssim", "psnr"), z + 0.5 * on_training_columns)

    monkeypatch.setattr(script, "engine_and_record", lambda doc: (folder, train))
    monkeypatch.setattr(script, "new_card", lambda *a, **k: {"name": folder.name, "metrics": {}})
    monkeypatch.setattr(script, "StainEngine", _Engine)
    monkeypatch.setattr(script, "data_root", lambda: folder.parent)
    monkeypatch.setattr(
        script, "isl_files", lambda root: ({z: f"phase-z{z}" for z in range(13)}, "dapi")
    )
    monkeypatch.setattr(script, "evaluate_stain", evaluate)
    monkeypatch.setattr(script, "views_for_seeds", lambda seeds, n: [])
    monkeypatch.setattr(
        script, "score_stain_simulated",
        lambda engine, views, segmenter: dict.fromkeys(
            ("pearson", "ssim", "psnr", "seg_f1", "seg_ap50"), 1.0
        ),
    )  # fmt: skip
    return script


@pytest.mark.parametrize(
    ("slices", "headline"),
    [
        pytest.param([4, 5, 6, 7, 8], 6, id="shipped-4-8"),
        pytest.param([4, 5], 4, id="without-6"),
        pytest.param([9, 7, 8], 8, id="middle-of-unsorted"),
        pytest.param([6, 10], 6, id="6-at-an-end"),
    ],
)
def test_stain_card_headline_is_slice_6_or_the_middle_of_the_trained_slices(
    slices: list[int], headline: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "nuclei-stain"
    script = _stain_card(folder, slices, monkeypatch)
    assert script.main() == 0
    metrics = yaml.safe_load((folder / "card.yaml").read_text())["metrics"]
    isl = "virtual-staining-isl-condB"
    assert metrics[f"{isl}/held-aside (cols 768-1023), z_depth-{headline}"]["pearson"] == headline
    assert metrics[f"{isl}/held-aside, pearson by slice"] == {f"z{z}": z for z in slices}
    assert metrics[f"{isl}/training columns (fit, for reference)"]["pearson"] == headline + 0.5


@pytest.mark.parametrize(
    "before",
    [
        pytest.param(None, id="no-card-before"),
        pytest.param("name: nuclei-stain\nmetrics: {earlier: 1}\n", id="a-card-before"),
    ],
)
def test_stain_card_leaves_no_card_without_metrics(
    before: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "nuclei-stain"
    script = _stain_card(folder, [4, 5, 6], monkeypatch, fail=True)
    if before is not None:
        (folder / "card.yaml").write_text(before)
    with pytest.raises(RuntimeError, match="the measurement failed"):
        script.main()
    card = folder / "card.yaml"
    assert (card.read_text() if card.exists() else None) == before
