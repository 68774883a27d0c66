"""What `eval seg`, `eval stain`, `eval track` and `eval states` make of unusual input files."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from livescope.inference import (
    CellStateEngine,
    StainEngine,
    builtin_engines,
    evaluate_segmentation,
    evaluate_stain,
    normalize_percentile,
    read_image,
    stain_scores,
)
from livescope.pipeline import score_stain_simulated
from livescope.record import CtcTrack, write_ctc
from livescope.schema import LivescopeError
from livescope.scope import simulated_views


def _nuclei(shape: tuple[int, int] = (48, 48)) -> np.ndarray:
    """Instance labels: two separate square nuclei and one wide blob."""
    lab = np.zeros(shape, np.uint16)
    lab[4:12, 4:12] = 1
    lab[4:12, 30:38] = 2
    lab[24:40, 6:40] = 3
    return lab


def _seg_folders(tmp_path: Path, labels: np.ndarray, image: np.ndarray | None = None) -> Path:
    for d in ("images", "labels"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    frame = _nuclei() * 300 + 100 if image is None else image
    tifffile.imwrite(tmp_path / "images" / "a.tif", frame.astype(np.uint16))
    tifffile.imwrite(tmp_path / "labels" / "a.tif", labels)
    return tmp_path


# --- (a) a binary mask given as labels ---------------------------------------------------------


@pytest.mark.parametrize(
    "mask",
    [
        # one region: it was scored as one nucleus, silently
        pytest.param(_nuclei()[20:] > 0, id="one region"),
        pytest.param(_nuclei() > 0, id="several regions"),
    ],
)
def test_a_boolean_label_image_is_refused_as_a_binary_mask(
    tmp_path: Path, mask: np.ndarray
) -> None:
    labels = np.zeros((48, 48), bool)
    labels[-mask.shape[0] :] = mask
    root = _seg_folders(tmp_path, labels)
    assert read_image(root / "labels" / "a.tif", labels=True).dtype == bool  # (as saved)
    with pytest.raises(LivescopeError, match=r"a\.tif: the labels are a binary mask") as err:
        evaluate_segmentation(None, root / "images", root / "labels", classical=True)
    assert "skimage.measure.label" in str(err.value)


def test_an_empty_boolean_label_image_is_an_empty_tile(tmp_path: Path) -> None:
    root = _seg_folders(tmp_path, np.zeros((48, 48), bool), np.full((48, 48), 100))
    out = evaluate_segmentation(None, root / "images", root / "labels", classical=True)
    assert out["n_true"] == 0


# --- (b) a single-plane stack (1, H, W) ----------------------------------------------------------


def test_a_single_plane_stack_is_scored_as_its_plane(tmp_path: Path) -> None:
    flat = _seg_folders(tmp_path / "flat", _nuclei())
    stacked = _seg_folders(tmp_path / "stacked", _nuclei()[None])
    tifffile.imwrite(stacked / "images" / "a.tif", (_nuclei() * 300 + 100)[None, :, :, None])
    assert tifffile.imread(stacked / "images" / "a.tif").shape == (1, 48, 48, 1)
    want = evaluate_segmentation(None, flat / "images", flat / "labels", classical=True)
    got = evaluate_segmentation(None, stacked / "images", stacked / "labels", classical=True)
    assert want["n_true"] == 3
    assert {k: got[k] for k in ("n_true", "n_pred", "f1", "map")} == {
        k: want[k] for k in ("n_true", "n_pred", "f1", "map")
    }


def test_a_real_stack_is_still_refused_naming_its_shape(tmp_path: Path) -> None:
    root = _seg_folders(tmp_path, _nuclei())
    tifffile.imwrite(root / "images" / "a.tif", np.stack([_nuclei() + 100] * 2)[None])
    assert read_image(root / "images" / "a.tif").shape == (1, 2, 48, 48)
    with pytest.raises(LivescopeError, match=r"a\.tif: the image is \(1, 2, 48, 48\), not one 2-D"):
        evaluate_segmentation(None, root / "images", root / "labels", classical=True)


@pytest.fixture(scope="module")
def stain() -> Iterator[StainEngine]:
    with StainEngine("nuclei-stain", backend="onnxruntime") as engine:
        yield engine


def _stain_pair(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    phase = (rng.random((64, 64)) * 1000 + 200).astype(np.uint16)
    target = (rng.random((64, 64)) * 3000).astype(np.uint16)
    return phase, target


def test_eval_stain_takes_single_plane_stacks(tmp_path: Path, stain: StainEngine) -> None:
    phase, target = _stain_pair(tmp_path)
    for name, p, t in (("flat", phase, target), ("stacked", phase[None], target[None])):
        tifffile.imwrite(tmp_path / f"{name}-in.tif", p)
        tifffile.imwrite(tmp_path / f"{name}-target.tif", t)
    want = evaluate_stain(stain, tmp_path / "flat-in.tif", tmp_path / "flat-target.tif")
    got = evaluate_stain(stain, tmp_path / "stacked-in.tif", tmp_path / "stacked-target.tif")
    assert got["frames"] == 1
    assert [got[k] for k in ("pearson", "ssim", "psnr")] == [
        want[k] for k in ("pearson", "ssim", "psnr")
    ]
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([target, target]))
    with pytest.raises(LivescopeError, match=r"stack\.tif: the image is \(2, 64, 64\), not one"):
        evaluate_stain(stain, tmp_path / "flat-in.tif", tmp_path / "stack.tif")


# --- (c) the target is normalised once, as the card states -------------------------------------


def test_eval_stain_scores_the_prediction_against_the_target_normalised_once(
    tmp_path: Path, stain: StainEngine
) -> None:
    # (a guard: the prediction is in the target's normalised units already; normalising
    # either again would change SSIM and PSNR, not Pearson r)
    phase, target = _stain_pair(tmp_path)
    tifffile.imwrite(tmp_path / "in.tif", phase)
    tifffile.imwrite(tmp_path / "target.tif", target)
    got = evaluate_stain(stain, tmp_path / "in.tif", tmp_path / "target.tif")
    tn = stain.card.target_normalisation
    assert tn is not None
    once = stain_scores(stain.predict(phase).image, normalize_percentile(target, tn.low, tn.high))
    assert [got[k] for k in ("pearson", "ssim", "psnr")] == [round(once[k], 4) for k in once]


# --- (d) errors of eval states' CTC check and eval track name the file -------------------------


def _ctc(tmp_path: Path, kinds: tuple[str, ...] = ("gt",)) -> Path:
    """A 4-frame CTC sequence: cell 1 divides into 2 and 3 at frame 2; images t000-t003."""
    frames = []
    for t in range(4):
        m = np.zeros((64, 64), np.uint16)
        if t < 2:
            m[20:30, 20:30] = 1
        else:
            m[15:22, 20:30] = 2
            m[28:35, 20:30] = 3
        frames.append(m)
    tracks = [CtcTrack(1, 0, 1, 0), CtcTrack(2, 2, 3, 1), CtcTrack(3, 2, 3, 1)]
    for kind in kinds:
        write_ctc(tmp_path / kind, frames, tracks, kind=kind)  # type: ignore[arg-type]
    (tmp_path / "img").mkdir()
    for t in range(4):
        tifffile.imwrite(tmp_path / "img" / f"t{t:03d}.tif", np.full((64, 64), 100, np.uint16))
    return tmp_path


@pytest.fixture(scope="module")
def classifier() -> Iterator[CellStateEngine]:
    with CellStateEngine("cell-state") as engine:
        yield engine


@pytest.mark.parametrize(
    ("image", "error"),
    [
        pytest.param(
            np.zeros((32, 32), np.uint16),
            r"t002\.tif: the image is \(32, 32\), but frame 2's masks in .*TRA are \(64, 64\)",
            id="another size",
        ),
        pytest.param(
            np.where(np.eye(64, dtype=bool), np.nan, 1.0).astype(np.float32),
            r"t002\.tif: engine cell-state: frame holds NaN",
            id="NaN",
        ),
    ],
)
def test_an_image_the_ctc_check_cannot_classify_is_named(
    tmp_path: Path, classifier: CellStateEngine, image: np.ndarray, error: str
) -> None:
    from livescope.pipeline import flag_divisions_ctc

    root = _ctc(tmp_path)
    tifffile.imwrite(root / "img" / "t002.tif", image)
    with pytest.raises(LivescopeError, match=error):
        flag_divisions_ctc(classifier, root / "img", root / "gt", frames_before=2)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        pytest.param(b"not a tiff", r"man_track002\.tif: cannot read it as a TIFF", id="damaged"),
        pytest.param(
            np.zeros((64, 64), np.float32),
            r"man_track002\.tif: a mask must hold integer labels, not float32",
            id="floats",
        ),
        pytest.param(
            np.zeros((32, 32), np.uint16),
            r"man_track002\.tif is \(32, 32\) px but man_track000\.tif is \(64, 64\) px",
            id="another size",
        ),
    ],
)
def test_a_ground_truth_marker_eval_track_cannot_use_is_named(
    tmp_path: Path, content: bytes | np.ndarray, error: str
) -> None:
    from livescope.tracking import evaluate_tracking

    root = _ctc(tmp_path, ("gt", "res"))
    marker = root / "gt" / "TRA" / "man_track002.tif"
    if isinstance(content, bytes):
        marker.write_bytes(content)
    else:
        tifffile.imwrite(marker, content)
    with pytest.raises(LivescopeError, match=error) as err:
        evaluate_tracking(root / "res", root / "gt")
    assert str(marker.parent) in str(err.value)


def _gamma_target_engine(tmp_path: Path) -> Path:
    """A copy of nuclei-stain whose card states its targets' gamma 0.5."""
    eng = shutil.copytree(builtin_engines()["nuclei-stain"], tmp_path / "stain-g")
    card = yaml.safe_load((eng / "card.yaml").read_text(encoding="utf-8"))
    card["name"] = "stain-g"
    card["target_normalisation"]["gamma"] = 0.5
    (eng / "card.yaml").write_text(yaml.safe_dump(card), encoding="utf-8")
    return eng


def test_eval_stain_applies_the_cards_target_gamma(tmp_path: Path) -> None:
    # (the card's gamma was accepted, then left out: targets scored in other units)
    phase, target = _stain_pair(tmp_path)
    tifffile.imwrite(tmp_path / "in.tif", phase)
    tifffile.imwrite(tmp_path / "target.tif", target)
    with StainEngine(str(_gamma_target_engine(tmp_path)), backend="onnxruntime") as engine:
        got = evaluate_stain(engine, tmp_path / "in.tif", tmp_path / "target.tif")
        tn = engine.card.target_normalisation
        assert tn is not None
        assert tn.gamma == 0.5
        want = np.sqrt(np.maximum(normalize_percentile(target, tn.low, tn.high), 0))
        once = stain_scores(engine.predict(phase).image, want)
    assert [got[k] for k in ("pearson", "ssim", "psnr")] == [round(once[k], 4) for k in once]


def test_simulated_stain_scores_apply_the_cards_target_gamma(tmp_path: Path) -> None:
    view = simulated_views(1, seed=7, objectives=("20x",))[0]
    with StainEngine(str(_gamma_target_engine(tmp_path)), backend="onnxruntime") as engine:
        got = score_stain_simulated(engine, [view])
        tn = engine.card.target_normalisation
        assert tn is not None
        target = np.sqrt(np.maximum(normalize_percentile(view.fluorescence, tn.low, tn.high), 0))
        want = stain_scores(engine.predict(view.phase, pixel_size_um=view.pixel_um).image, target)
    assert got["pearson"] == pytest.approx(want["pearson"], abs=1e-4)
    assert got["ssim"] == pytest.approx(want["ssim"], abs=1e-4)
