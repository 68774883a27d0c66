"""Review of the model definitions and the training/card helpers in tools/.

The helpers are loaded from their files (tools/ is no package); tiny networks
are exported here, so nothing is trained or downloaded.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from livescope.inference import builtin_engines

from ..conftest import ROOT, skip_unless_required

HAVE_TRAIN = all(importlib.util.find_spec(m) is not None for m in ("torch", "onnx"))


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"review_{name}", ROOT / "tools" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if HAVE_TRAIN:
    import torch

    from livescope.models import CellStateNet, NucleiUNet, StainUNet

    training = _tool("_training")
    cards = _tool("_cards")


@pytest.fixture(autouse=True)
def _train_extra() -> None:
    if not HAVE_TRAIN:
        skip_unless_required("torch", "the train extra (torch, onnx) is not installed")


TRAIN = {"command": "python tools/train_x.py --seed 0", "seed": 0, "seconds": 1.0}


def _exported(
    folder: Path, net: Any, shape: tuple[int, ...], names: tuple[str, str], axes: dict[int, str]
) -> Path:
    with _torchscript_exporter():
        training.export_onnx(net.eval(), folder, shape, names[0], names[1], axes)
    return folder


@contextlib.contextmanager
def _torchscript_exporter() -> Iterator[None]:
    # the scripts export with torch's TorchScript exporter (the shipped engines were
    # made with it), which warns that it is deprecated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _trained(net: Any) -> Any:
    """``net`` with weights as after training: no two tensors equal.

    (The exporter stores equal tensors once, and every fresh BatchNorm has the same ones.)
    """
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5)
    return net


def _card(folder: Path, **changes: Any) -> dict[str, Any]:
    """new_card for a CellStateNet(base=8) exported with 16 px crops, with ``changes``."""
    kwargs: dict[str, Any] = {
        "task": "classification", "description": "test", "input_name": "crops",
        "channels": 2, "outputs": [{"name": "probs", "channels": list("abcde")}],
        "data": [], "augmentation": "none", "crop_px": 16,
        "torch_module": "livescope.models:CellStateNet",
        "torch_kwargs": {"n_classes": 5, "base": 8},
    }  # fmt: skip
    return cards.new_card(folder, TRAIN, **(kwargs | changes))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def states_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cell-state")
    torch.manual_seed(0)
    net = _trained(CellStateNet(n_classes=5, base=8))
    return _exported(folder, net, (2, 2, 16, 16), ("crops", "probs"), {0: "n"})


# ------------------------------------------------------------------ fit


@pytest.mark.parametrize("iters", [1, 9, 10, 11])
def test_fit_runs_any_number_of_iterations(iters: int) -> None:
    # --iters 10 (a natural smoke run) made OneCycleLR divide by zero, after the data
    # had been loaded
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    x = torch.ones(4, 3)
    log = training.fit(net, iters, lambda it: (net(x) ** 2).mean(), t0=0.0, log_every=1)
    assert [r["iter"] for r in log] == list(range(iters))
    assert all(np.isfinite(r["loss"]) for r in log)


def test_fit_refuses_no_iterations() -> None:
    net = torch.nn.Linear(3, 1)
    with pytest.raises(ValueError, match=r"--iters must be at least 1, got 0"):
        training.fit(net, 0, lambda it: net(torch.ones(1, 3)).sum(), t0=0.0)


# ------------------------------------------------------------------ cards against the ONNX file


def test_a_card_that_describes_its_onnx_file_is_written(states_folder: Path) -> None:
    card = _card(states_folder)
    assert card["input"]["channels"] == 2
    assert card["opset"] == 17


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # cellstate_card.py writes base 16 whatever --base the model was trained with
        pytest.param({"torch_kwargs": {"n_classes": 5, "base": 16}}, r"torch_kwargs",
                     id="torch-kwargs"),
        pytest.param({"torch_module": "livescope.models:StainUNet", "torch_kwargs": {"base": 8}},
                     r"StainUNet", id="torch-module"),
        pytest.param({"channels": 1}, r"1 input channels, the ONNX graph's 2", id="channels"),
        pytest.param({"input_name": "image"}, r"input 'image'", id="input-name"),
        pytest.param({"outputs": [{"name": "prob", "channels": list("abcde")}]},
                     r"outputs \['prob'\]", id="output-name"),
        pytest.param({"outputs": [{"name": "probs", "channels": list("abcd")}]},
                     r"4 channels, the ONNX 5", id="output-channels"),
        pytest.param({"crop_px": 48}, r"crop_px 48, the ONNX input's H, W 16", id="crop-px"),
        pytest.param({"multiple_of": 32}, r"multiple_of 32", id="multiple-of"),
    ],
)  # fmt: skip
def test_a_card_that_contradicts_its_onnx_file_is_refused(
    states_folder: Path, changes: dict[str, Any], message: str
) -> None:
    # each of these fields is written by hand in a card script: a card that says
    # otherwise than the exported file made the torch backend fail at load, or
    # misled whoever read it
    with pytest.raises(ValueError, match=message):
        _card(states_folder, **changes)


def test_the_cards_opset_is_the_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _trained(CellStateNet(n_classes=5, base=8)).eval()
    with _torchscript_exporter():
        torch.onnx.export(
            net, (torch.zeros(2, 2, 16, 16),), str(tmp_path / "model.onnx"),
            input_names=["crops"], output_names=["probs"], dynamic_axes={"crops": {0: "n"}},
            opset_version=18, do_constant_folding=False, dynamo=False,
        )  # fmt: skip
    assert _card(tmp_path)["opset"] == 18


@pytest.mark.parametrize("name", ["nuclei-unet", "nuclei-stain", "cell-state"])
def test_the_shipped_cards_describe_their_onnx_files(name: str) -> None:
    folder = builtin_engines()[name]
    card = yaml.safe_load((folder / "card.yaml").read_text())
    cards.check_against_onnx(folder / "model.onnx", card)
    assert card["opset"] == cards.onnx_opset(folder / "model.onnx")


# ------------------------------------------------------------------ the U-Nets


@pytest.mark.parametrize("shape", [(25, 24), (24, 20), (3, 8)])
def test_a_unet_names_a_size_off_its_multiple(shape: tuple[int, int]) -> None:
    net = NucleiUNet(base=4, depth=3).eval()
    # (a RuntimeError, as torch's own shape errors: the torch backend reports those)
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"multiples of 8, got"):
        net(torch.zeros(1, 1, *shape))


def test_the_exported_unet_keeps_h_and_w_free(tmp_path: Path) -> None:
    # the size check must stay out of the traced graph: the engines run other sizes
    # than the export's example
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = StainUNet(base=4, depth=2)
    _exported(tmp_path, net, (1, 1, 32, 32), ("image", "stain"), {0: "n", 2: "h", 3: "w"})
    x = np.random.default_rng(0).random((1, 1, 40, 24), dtype=np.float32)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x})
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


# ------------------------------------------------------------------ documented commands


@pytest.mark.parametrize(
    ("script", "name"),
    [
        ("train_seg", "nuclei-unet"),
        ("train_stain", "nuclei-stain"),
        ("train_cellstate", "cell-state"),
    ],
)
def test_each_training_script_shows_its_engines_command(script: str, name: str) -> None:
    # the docstrings showed a short command whose defaults do not make the shipped
    # engine (segmentation: no --dim-share; the others: --threads 2, not 1)
    doc = ast.get_docstring(ast.parse((ROOT / "tools" / f"{script}.py").read_text()))
    assert doc is not None
    shown = doc.split("\n\n")[1].replace("\\\n", " ")
    card = yaml.safe_load((builtin_engines()[name] / "card.yaml").read_text())
    assert shown.split() == card["training"]["command"].split()
