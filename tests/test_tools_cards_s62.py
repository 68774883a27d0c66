"""``seg_card.py`` and ``cellstate_card.py`` leave no card without metrics when measuring fails.

Both wrote the new card (metrics empty) for the engine to load, then measured: a
failure (a missing data set, Ctrl-C) left that draft in place of the shipped card,
which `stain_card.py` no longer did (`_cards.draft_card`, session 61).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .test_tools_inputs_s61 import _torch_tool


class _Fails:
    """Stands in for the engine: it finds the draft card, then the measurement fails."""

    def __init__(self, folder: Path, **kwargs: Any) -> None:
        assert (folder / "card.yaml").is_file()  # (the draft is there to be loaded)
        raise RuntimeError("the measurement failed")


@pytest.mark.parametrize(
    ("tool", "engine"),
    [
        pytest.param("seg_card", "SegmentationEngine", id="seg"),
        pytest.param("cellstate_card", "CellStateEngine", id="cellstate"),
    ],
)
@pytest.mark.parametrize(
    "before",
    [
        pytest.param(None, id="no-card-before"),
        pytest.param("name: shipped\nmetrics: {earlier: 1}\n", id="a-card-before"),
    ],
)
def test_a_failed_measurement_leaves_the_card_that_was_there(
    tool: str, engine: str, before: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _torch_tool(tool)
    folder = tmp_path / "engine"
    folder.mkdir()
    if before is not None:
        (folder / "card.yaml").write_text(before)
    train = {"base": 16, "depth": 3, "views": 1, "sim_seeds": [0], "class_counts": {},
             "train_images_real": 1, "train_images_sim": 1}  # fmt: skip
    monkeypatch.setattr(script, "engine_and_record", lambda doc: (folder, train))
    monkeypatch.setattr(script, "new_card", lambda *a, **k: {
        "name": "new", "metrics": {}, "postprocess": {}, "normalisation": {}})  # fmt: skip
    monkeypatch.setattr(script, engine, _Fails)
    with pytest.raises(RuntimeError, match="the measurement failed"):
        script.main()
    card = folder / "card.yaml"
    assert (card.read_text() if card.exists() else None) == before
