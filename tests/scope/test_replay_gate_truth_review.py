"""Replay gate on datasets with frames missing; ground truth read back for scoring.

Found by an independent review: a field whose recording lacks a frame was never
waited for (the replay ran ahead of the worker there), and a damaged ground
truth was scored into an error that named no file.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.pipeline import evaluate_triggers
from livescope.record import open_dataset
from livescope.schema import LivescopeError, load_profile
from livescope.scope import (
    ReplayEngine,
    ReplayGate,
    ReplayMicroscope,
    ReplaySource,
    frames_in_plan,
    map_channels,
    replay_sequence,
)
from livescope.scope._fanout import position_name

from ..conftest import write_ndtiff
from ..pipeline.test_trigger_scoring import made_up_run


def _ndtiff(root: Path, timepoints: tuple[int, ...], lacking: set[tuple[int, int, str]]) -> Path:
    """Write an NDTiff dataset (2 positions, phase + DAPI, 16² px) without ``lacking`` frames.

    ``lacking``: (t, position, channel) of the frames the acquisition did not take.
    """
    return write_ndtiff(
        root,
        lambda t, p, c: np.full((16, 16), 10 * t + p, np.uint16),
        timepoints=timepoints,
        interval_s=60.0,
        lacking=lacking,
    )


class _Worker:
    """What the pipeline worker has analysed, as it would have by each served frame.

    The worker's field assembly expects the plan's frames of a field: it analyses
    a field once they are all in, or once a frame of another field arrives (the
    field's other frames never came). Each field it is given is logged at once
    (``results/latency.jsonl``), except ``slow`` ones, which it never finishes.
    """

    def __init__(self, run: Path, expected: dict[tuple[str, int], int], slow: set) -> None:
        self.log = run / "results" / "latency.jsonl"
        self.log.parent.mkdir(parents=True)
        self.log.touch()
        self.expected, self.slow = expected, slow
        self.pending: tuple[str, int] | None = None
        self.frames = 0

    def frame(self, key: tuple[str, int]) -> None:
        if self.pending is not None and self.pending != key:
            self._analyse(self.pending)
        if self.pending != key:
            self.pending, self.frames = key, 0
        self.frames += 1
        if self.frames >= self.expected[key]:
            self._analyse(key)
            self.pending = None

    def end(self) -> None:
        if self.pending is not None:
            self._analyse(self.pending)

    def _analyse(self, key: tuple[str, int]) -> None:
        if key not in self.slow:
            with self.log.open("a") as fh:
                fh.write(json.dumps({"position": key[0], "t": key[1], "live": True}) + "\n")


def _replay_gated(data: Path, run: Path, slow: set) -> ReplayGate:
    """Serve every planned frame of ``data`` through a gated `ReplayEngine`; return its gate."""
    prof = load_profile("replay")
    with open_dataset(data) as ds:
        channels = map_channels(ds, prof)
        plan = replay_sequence(ds, prof, channels)
        expected = frames_in_plan(plan)  # (the worker's: the plan's frames)
        worker = _Worker(run, expected, slow)
        # a short timeout: a wait on a field the log lacks ends in a counted timeout
        gate = ReplayGate(run, timeout_s=0.05)
        source = ReplaySource(ds, channels)
        with ReplayMicroscope(prof, source) as scope:
            engine = ReplayEngine(scope.core, prof, source, gate=gate, expected=expected)
            for event in engine.event_iterator(plan):
                engine.setup_event(event)  # (the gate waits here, before the frame is served)
                worker.frame((position_name(event), int(event.index.get("t", 0))))
            engine.drain()
            worker.end()
    return gate


def test_a_field_lacking_a_frame_is_waited_for_once_the_worker_has_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # p1 lacks its DAPI frame at t = 1: the worker analyses (p1, 1) once (p0, 2)'s first
    # frame arrives; the gate never waited for it (the replay ran ahead of the worker
    # there, and the field's decisions came in wherever the host's timing put them)
    data = _ndtiff(tmp_path / "nd", (0, 1, 2, 3), {(1, 1, "DAPI")})
    with caplog.at_level(logging.WARNING, logger="livescope"):
        gate = _replay_gated(data, tmp_path / "run", slow={("p1", 1)})
    assert gate.timeouts >= 1
    assert any("('p1', 1)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("timepoints", "lacking"),
    [
        pytest.param((0, 1, 2, 3), {(1, 1, "DAPI")}, id="a channel missing mid-run"),
        pytest.param((0, 1, 2, 3), {(3, 1, "DAPI")}, id="the last field lacks a frame"),
        pytest.param((0, 1, 3, 4), {(1, 1, "DAPI")}, id="then a whole time point missing"),
        pytest.param((0, 1, 2), {(1, 0, "DAPI"), (1, 1, "Phase")}, id="each position one"),
    ],
)
def test_the_gate_never_waits_for_a_field_the_worker_cannot_have_yet(
    tmp_path: Path, timepoints: tuple[int, ...], lacking: set[tuple[int, int, str]]
) -> None:
    # a field lacking a frame that no other field's frame followed yet is still
    # waiting, in the worker, for its missing frame: waited for, the gate held back
    # the very frame that would let the worker go on (a timeout each time)
    data = _ndtiff(tmp_path / "nd", timepoints, lacking)
    gate = _replay_gated(data, tmp_path / "run", slow=set())
    assert gate.timeouts == 0


def _lineage(text: str) -> Callable[[Path], Path]:
    def damage(truth: Path) -> Path:
        (truth / "lineage.json").write_text(text)
        return truth / "lineage.json"

    return damage


def _cut_mask(truth: Path) -> Path:
    path = truth / "p0" / "cell_ids" / "t0002.tif"
    path.write_bytes(path.read_bytes()[:200])  # (cut short while written)
    return path


def _stack_mask(truth: Path) -> Path:
    path = truth / "p0" / "cell_ids" / "t0001.tif"
    tifffile.imwrite(path, np.ones((2, 32, 32), np.uint16))
    return path


_OLD_CELL = {"cell_id": 1, "parent_id": 0, "end_s": None, "mitosis_onset_s": 100.0}


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        pytest.param(_lineage('[{"cell_id": 1, "par'), r"cannot be read as JSON", id="cut short"),
        pytest.param(
            _lineage(json.dumps([_OLD_CELL])),
            r"cell 0 has no birth_s",
            id="another version's (no birth_s)",
        ),
        pytest.param(
            _lineage(json.dumps({"1": _OLD_CELL})), r"not a list of cells", id="not a list"
        ),
        pytest.param(
            _lineage(json.dumps([{**_OLD_CELL, "birth_s": 0.0, "mitosis_onset_s": "soon"}])),
            r"cell 0 has mitosis_onset_s 'soon', not a number",
            id="a time not a number",
        ),
        pytest.param(_cut_mask, r"cannot be read \(", id="a mask cut short"),
        pytest.param(_stack_mask, r"is 2-D, this one \(2, 32, 32\)", id="a mask not 2-D"),
    ],
)
def test_damaged_ground_truth_is_named_with_what_is_wrong(
    tmp_path: Path, damage: Callable[[Path], Path], says: str
) -> None:
    # (it was a bare JSONDecodeError, KeyError 'birth_s', TiffFileError or ValueError
    # from deep inside the scoring: the run's summary said neither file nor problem)
    # cell 1 enters mitosis at 100 s, a trigger on it at t = 2 (its true cell ids
    # compressed as the simulator writes them: a mask cut short is damaged zlib data)
    run = made_up_run(tmp_path, [(2, 15, 15)], compression="zlib")
    ev = evaluate_triggers(run, load_profile("sim"))  # (the undamaged truth scores)
    assert (ev["precision"], ev["recall"]) == (1.0, 1.0)
    path = damage(run / "ground_truth")
    with pytest.raises(LivescopeError, match=rf"^{re.escape(str(path))}: .*{says}"):
        evaluate_triggers(run, load_profile("sim"))
