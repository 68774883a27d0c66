"""Review of the engines' scoring against ground truth (`livescope.pipeline._scoring`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.inference import CellStateEngine, StainEngine
from livescope.pipeline import flag_divisions_ctc, score_stain_simulated
from livescope.record import CtcTrack, write_ctc
from livescope.schema import LivescopeError
from livescope.scope import SimulatedView


def test_stain_scores_of_fields_without_cells_are_null_not_nan() -> None:
    # Pearson r is undefined on a field without cells, so such fields are skipped; with no
    # field left the means were NaN (numpy's warning; NaN in the JSON output, which no
    # JSON reader takes): undefined is null, as for the cell-state scores
    rng = np.random.default_rng(0)
    empty = SimulatedView(
        rng.random((64, 64)).astype(np.float32), rng.random((64, 64)).astype(np.float32),
        np.zeros((64, 64), np.uint32), {}, 0.65, 4.0,
    )  # fmt: skip
    with StainEngine("nuclei-stain") as engine:
        out = score_stain_simulated(engine, [empty])
        none = score_stain_simulated(engine, [])
    assert (out["pearson"], out["ssim"], out["psnr"], out["frames"]) == (None, None, None, 0)
    assert isinstance(out["ms"], float)  # (the engine did run on the field)
    assert (none["pearson"], none["ms"], none["frames"]) == (None, None, 0)
    json.dumps(out, allow_nan=False)  # (valid JSON)


def _ctc_division(tmp_path: Path) -> Path:
    """A 4-frame CTC ground truth: cell 1 divides into 2 and 3 at frame 2."""
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
    write_ctc(tmp_path / "gt", frames, tracks, kind="gt")
    (tmp_path / "img").mkdir()
    return tmp_path / "img"


@pytest.fixture(scope="module")
def classifier() -> CellStateEngine:
    with CellStateEngine("cell-state") as e:
        yield e  # type: ignore[misc]


def test_a_stray_file_among_the_ctc_images_is_ignored(
    tmp_path: Path, classifier: CellStateEngine
) -> None:
    # a copy a file manager made beside the images ("t000 copy.tif") failed the check
    # with a bare ValueError (int(" copy")); CTC's reader ignores such files
    img = _ctc_division(tmp_path)
    for t in range(4):
        tifffile.imwrite(img / f"t{t:03d}.tif", np.full((64, 64), 100, np.uint16))
    tifffile.imwrite(img / "t000 copy.tif", np.zeros((64, 64), np.uint16))
    out = flag_divisions_ctc(classifier, img, tmp_path / "gt", frames_before=2)
    assert out["divisions"] == 1
    assert len(out["per_division"][0]["p_mitosis_last_frames"]) == 2


@pytest.mark.parametrize(
    "numbers",
    [pytest.param((0, 1, 3, 4), id="a gap"), pytest.param((1, 2, 3, 4), id="from t001")],
)
def test_ctc_images_that_do_not_match_the_frames_numbers_are_refused(
    tmp_path: Path, classifier: CellStateEngine, numbers: tuple[int, ...]
) -> None:
    # four images for four annotated frames, but t002 missing (or numbered from 1): each
    # image after it was classified against the masks of another frame, without a word
    img = _ctc_division(tmp_path)
    for t in numbers:
        tifffile.imwrite(img / f"t{t:03d}.tif", np.full((64, 64), 100, np.uint16))
    with pytest.raises(LivescopeError, match=r"t000\.\.t003") as err:
        flag_divisions_ctc(classifier, img, tmp_path / "gt", frames_before=2)
    assert str(img) in str(err.value)


@pytest.mark.parametrize("frames_before", [0, -1])
def test_no_frame_before_a_split_is_refused(
    tmp_path: Path, classifier: CellStateEngine, frames_before: int
) -> None:
    # no frame to look in: every division came out "not flagged", which reads as a
    # classifier that misses them
    img = _ctc_division(tmp_path)
    for t in range(4):
        tifffile.imwrite(img / f"t{t:03d}.tif", np.full((64, 64), 100, np.uint16))
    with pytest.raises(LivescopeError, match="frames_before"):
        flag_divisions_ctc(classifier, img, tmp_path / "gt", frames_before=frames_before)
