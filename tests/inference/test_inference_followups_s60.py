"""Follow-ups of the engine review: `eval seg` names each bad file with its folder; the
torch backend refuses at load a card naming an output its ONNX graph lacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from livescope.inference import (
    Engine,
    EngineError,
    SegmentationEngine,
    builtin_engines,
    evaluate_segmentation,
)
from livescope.inference import _backends as B
from livescope.schema import LivescopeError

from ..conftest import skip_unless_required
from .test_eval_inputs import _nuclei

# ------------------------------------------------ eval seg: which folder's file is meant


_FRAME = (_nuclei() * 300 + 100).astype(np.uint16)
_NOISE = np.random.default_rng(0).integers(100, 4000, (48, 48)).astype(np.uint16)
_NAN = _FRAME.astype(np.float32)
_NAN[0, 0] = np.nan
_COLOUR = np.zeros((48, 48, 3), np.uint8)  # (each nucleus a colour of its own)
for _id in (1, 2, 3):
    _COLOUR[_nuclei() == _id, _id - 1] = 255


@pytest.mark.parametrize(
    ("image", "labels", "named"),
    [
        pytest.param(np.stack([_FRAME] * 3), _nuclei(), ["images"], id="a stack"),
        pytest.param(_FRAME, _nuclei((40, 40)), ["images", "labels"], id="another size"),
        pytest.param(_FRAME, _COLOUR, ["images", "labels"], id="colour labels"),
        pytest.param(_FRAME, _NOISE, ["labels"], id="labels an intensity image"),
        pytest.param(_FRAME, _nuclei() / 2, ["labels"], id="fractional labels"),
        pytest.param(_FRAME, _nuclei() > 0, ["labels"], id="a binary mask"),
        pytest.param(_nuclei(), _nuclei() * 2, ["images"], id="the image a label image"),
        pytest.param(_nuclei(), _nuclei(), ["images"], id="the image its own labels"),
        pytest.param(_NAN, _nuclei(), ["images"], id="NaN in the image"),
    ],
)  # fmt: skip
def test_eval_seg_names_the_bad_file_with_its_folder(
    tmp_path: Path, image: np.ndarray, labels: np.ndarray, named: list[str]
) -> None:
    # images/ and labels/ hold files of the same names: a bare "b.tif" does not say which
    _folders(tmp_path, image, labels)
    with pytest.raises(LivescopeError) as info:
        evaluate_segmentation(None, tmp_path / "images", tmp_path / "labels", classical=True)
    for folder in named:
        assert str(tmp_path / folder / "b.tif") in str(info.value)


def test_eval_seg_names_the_image_the_engine_refuses_with_its_folder(tmp_path: Path) -> None:
    _folders(tmp_path, np.full((4, 4), 7, np.uint16), np.zeros((4, 4), np.uint16))
    with (
        SegmentationEngine("nuclei-unet", backend="onnxruntime") as seg,
        pytest.raises(EngineError, match=r"is too small") as info,
    ):
        evaluate_segmentation(seg, tmp_path / "images", tmp_path / "labels")
    assert str(info.value).startswith(f"{tmp_path / 'images' / 'b.tif'}: engine nuclei-unet: ")


def _folders(root: Path, image: np.ndarray, labels: np.ndarray) -> None:
    """images/ and labels/, each with a good a.tif and ``image`` / ``labels`` as b.tif."""
    for d in ("images", "labels"):
        (root / d).mkdir()
    tifffile.imwrite(root / "images" / "a.tif", _FRAME)
    tifffile.imwrite(root / "labels" / "a.tif", _nuclei())
    for folder, pixels in (("images", image), ("labels", labels)):
        colour = "rgb" if pixels.ndim == 3 and pixels.shape[-1] == 3 else "minisblack"
        tifffile.imwrite(root / folder / "b.tif", pixels, photometric=colour)


# ------------------------------------------------ torch: the card's output among the graph's


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_a_card_naming_an_output_the_model_lacks_is_refused_at_load(
    tmp_path: Path, backend: str
) -> None:
    ok, why, _ = B._can_run(next(b for b in B.BACKENDS if b.name == backend))
    if not ok:
        skip_unless_required(backend, f"{backend} cannot run here: {why}")
    dst = tmp_path / "cell-state"
    shutil.copytree(builtin_engines()["cell-state"], dst)
    card = yaml.safe_load((dst / "card.yaml").read_text())
    card["outputs"][0]["name"] = "logits"  # (the model gives "probs" only)
    (dst / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(EngineError, match=r"output 'logits' is not among the model's outputs"):
        Engine(dst, backend=backend)
    with Engine("cell-state", backend=backend) as shipped:
        assert shipped.session is not None
        assert shipped.session.output_names == ["probs"]  # (the graph's)
