"""A damaged lineage.jsonl is named when a restarted worker refuses to resume from it.

The worker's error said "cannot read worker state .../state.json: Expecting value: line 1
column 1" for a damaged line of lineage.jsonl: the file to restore or look at was not named.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from livescope.pipeline import PipelineWorker
from livescope.schema import LivescopeError
from livescope.tracking import OnlineTracker
from tests.pipeline.test_state_growth_s61 import NO_ENGINES, _churning_frames


def _saved_with_ended_tracks(run: Path) -> Path:
    """A worker's results whose lineage.jsonl holds two or more lines; returns that file."""
    w = PipelineWorker(run, NO_ENGINES)
    tracker = OnlineTracker()
    try:
        for t, objs in _churning_frames(20):
            tracker.update(objs, t)
            w._tracker_states["p0"] = tracker.snapshot()
            w._decided_done["p0"] = t
            w._save_state(w._snapshot())
    finally:
        w._finish(failed=True)
    lineage = w.results / "lineage.jsonl"
    assert len(lineage.read_bytes().splitlines()) >= 2
    return lineage


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        pytest.param(lambda lines: [lines[0], b"{" + lines[1][1:-1]], "Expecting", id="not-json"),
        pytest.param(lambda lines: [lines[0], b'{"tracks": []}'], "no 'position'", id="no-key"),
        pytest.param(lambda lines: [lines[0], b"[1, 2]"], "list indices", id="not-an-object"),
        pytest.param(lambda lines: [lines[0], b"\xff" * (len(lines[1]))], "utf-8", id="bytes"),
    ],
)
def test_a_damaged_lineage_line_is_named_with_its_file_and_line(
    tmp_path: Path, damage: object, said: str
) -> None:
    lineage = _saved_with_ended_tracks(tmp_path)
    lines = lineage.read_bytes().splitlines()
    size = lineage.stat().st_size
    new = b"\n".join(damage(lines)) + b"\n"  # type: ignore[operator]
    # (the state counts the file's bytes: a damaged file of another length is refused as short)
    lineage.write_bytes(new.ljust(size, b" ")[:size] if len(new) < size else new[:size])
    with pytest.raises(LivescopeError) as info:
        PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    text = str(info.value)
    assert re.search(rf"{re.escape(str(lineage))} line 2 is damaged \(.*{said}", text), text
    assert "state.json" in text  # (the state that counts it, which a user may delete)


def test_an_intact_lineage_resumes(tmp_path: Path) -> None:
    _saved_with_ended_tracks(tmp_path)
    again = PipelineWorker(tmp_path, NO_ENGINES, resume=True)
    try:
        assert again.analyzer.trackers["p0"].lineage
    finally:
        again._finish(failed=True)
