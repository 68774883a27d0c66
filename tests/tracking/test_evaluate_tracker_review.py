"""Review of the division scores, the tracker's frame and state checks, and the peers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from livescope.schema import LivescopeError
from livescope.tracking import OnlineTracker, evaluate_tracking
from livescope.tracking._peers import PEERS, peer_track
from tests.tracking.test_tracker import _dividing_frames, disks

V1_STATE = Path(__file__).parent / "data" / "tracker_state_v1.json"


# --- evaluate_tracking: division scores ---------------------------------------------------


def _write(folder: Path, stem: str, frames: list[np.ndarray], track: str, track_file: str) -> None:
    folder.mkdir(parents=True)
    for t, f in enumerate(frames):
        tifffile.imwrite(folder / f"{stem}{t:03d}.tif", f)
    (folder / track_file).write_text(track)


def _cells(divides: bool) -> tuple[list[np.ndarray], str]:
    """Cell 1 on frames 0-1; on frame 2 cells 2 and 3, daughters of 1 if ``divides``."""
    frames = []
    for t in range(3):
        f: np.ndarray = np.zeros((32, 32), np.uint16)
        if t < 2:
            f[2:10, 2 + 2 * t : 10 + 2 * t] = 1
        else:
            f[2:10, 2:10], f[16:24, 2:10] = 2, 3
        frames.append(f)
    parent = 1 if divides else 0
    return frames, f"1 0 1 0\n2 2 2 {parent}\n3 2 2 {parent}\n"


def _scores(root: Path, *, truth_divides: bool, result_divides: bool) -> dict[str, Any]:
    frames, track = _cells(truth_divides)
    _write(root / "gt" / "TRA", "man_track", frames, track, "man_track.txt")
    frames, track = _cells(result_divides)
    _write(root / "res", "mask", frames, track, "res_track.txt")
    return evaluate_tracking(root / "res", root / "gt", div_tolerance=0)


@pytest.mark.parametrize(
    ("truth_divides", "result_divides", "expected"),
    [
        pytest.param(False, False, (None, None, None), id="no-division-anywhere"),
        pytest.param(True, False, (None, 0.0, 0.0), id="all-missed"),
        pytest.param(False, True, (0.0, None, 0.0), id="all-false"),
        pytest.param(True, True, (1.0, 1.0, 1.0), id="matched"),
    ],
)
def test_division_scores_are_none_where_nothing_was_there_to_score(
    tmp_path: Path, truth_divides: bool, result_divides: bool, expected: tuple[Any, ...]
) -> None:
    """A sequence without divisions scored division precision, recall and F1 1.0 (a test
    never made); nothing found where the truth divides scored precision 0.0."""
    r = _scores(tmp_path, truth_divides=truth_divides, result_divides=result_divides)
    assert (r["div_precision"], r["div_recall"], r["div_f1"]) == expected
    assert r["divisions_true"] == int(truth_divides)
    assert r["divisions_found"] == int(result_divides)


# --- OnlineTracker.update: the frame number --------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [pytest.param(-1, id="minus-one"), pytest.param(-5, id="negative"),
     pytest.param(2.7, id="fraction"), pytest.param(True, id="bool")],
)  # fmt: skip
def test_a_frame_number_that_is_no_frame_is_refused(frame: Any) -> None:
    """frame=-1 was ignored as "frame -1 came after frame -1 (a second time)"; 2.7 was
    taken as frame 2 without a word."""
    tr = OnlineTracker()
    with pytest.raises(LivescopeError, match="frame must be a whole number >= 0"):
        tr.update(_dividing_frames()[0], frame=frame)
    assert tr.frame == -1
    assert tr.update(_dividing_frames()[0], frame=np.int64(3)).frame == 3


# --- OnlineTracker.from_state: version 1 and frame consistency --------------------------------


def _v1() -> dict[str, Any]:
    state: dict[str, Any] = json.loads(V1_STATE.read_text())
    return state


def _live_v1_track(state: dict[str, Any]) -> dict[str, Any]:
    track: dict[str, Any] = next(d for d in state["tracks"] if not d.get("ended"))
    return track


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        pytest.param("nan-position", "a position that is not finite", id="nan-position"),
        pytest.param("negative-area", "an area that is not finite and > 0", id="negative-area"),
        pytest.param("inf-velocity", "a velocity that is not finite", id="inf-velocity"),
        pytest.param("last-seen-ahead", "a last_seen other than", id="last-seen-ahead"),
    ],
)
def test_a_version_1_state_gets_the_checks_of_version_2(fault: str, message: str) -> None:
    """A version-1 state with a NaN position loaded, then every later frame failed with
    scipy's ValueError; a bad area or last_seen loaded without a word."""
    frames = _dividing_frames()
    OnlineTracker.from_state(_v1()).update(frames[10])  # (the good one resumes)
    state = _v1()
    d = _live_v1_track(state)
    if fault == "nan-position":
        d["pos"][-1][1] = float("nan")
    elif fault == "negative-area":
        d["areas"][-1] = -3.0
    elif fault == "inf-velocity":
        d["velocity"][0] = float("inf")
    else:
        d["last_seen"] = d["pos"][-1][0] - 1
    with pytest.raises(LivescopeError, match=f"tracker state: track \\d+ has {message}"):
        OnlineTracker.from_state(state)


def _v2(frames: int = 5) -> dict[str, Any]:
    tr = OnlineTracker()
    for f in _dividing_frames()[:frames]:
        tr.update(f)
    state: dict[str, Any] = json.loads(json.dumps(tr.state()))
    return state


@pytest.mark.parametrize("version", [1, 2])
def test_a_state_whose_tracks_were_seen_after_its_frame_is_refused(version: int) -> None:
    """Every track got a negative gap on the next frame (a NaN gate): every cell became a
    new track, without a word."""
    state = _v1() if version == 1 else _v2()
    good = OnlineTracker.from_state(json.loads(json.dumps(state)))
    frames = _dividing_frames()
    nxt = frames[good.frame + 1]
    assert not good.update(nxt).born  # (every cell continues its track)
    state["frame"] -= 2
    with pytest.raises(LivescopeError, match=r"last seen on frame \d+, after the state's frame"):
        OnlineTracker.from_state(state)


def test_a_state_whose_frame_is_below_minus_one_is_refused() -> None:
    state = _v2()
    state["tracks"] = {c: [] for c in state["tracks"]}
    state["parents"] = state["first_frame"] = state["last_frame"] = [[], []]
    state["next_id"] = 1
    OnlineTracker.from_state({**state, "frame": -1})  # (a fresh tracker's)
    with pytest.raises(LivescopeError, match=r"tracker state: frame -3 \(-1 before the first"):
        OnlineTracker.from_state({**state, "frame": -3})


def test_a_state_whose_lineage_lacks_a_span_is_refused() -> None:
    """A track in parents but not in last_frame loaded, then `spans` raised KeyError."""
    state = _v2()
    ids, values = state["last_frame"]
    state["last_frame"] = [ids[1:], values[1:]]
    with pytest.raises(LivescopeError, match="parents, first_frame and last_frame name different"):
        OnlineTracker.from_state(state)


# --- peer_track -------------------------------------------------------------------------------


def _moving(n: int = 4) -> list[np.ndarray]:
    return [disks((64, 64), [(15 + 2 * k, 15 + 3 * k, 5), (45, 45 - 2 * k, 5)]) for k in range(n)]


@pytest.mark.parametrize("name", PEERS)
def test_a_peer_reads_a_generator_of_frames_once(name: str) -> None:
    """The frames were read twice: a generator gave IndexError (its second pass empty)."""
    pytest.importorskip(name)
    frames = _moving()
    buf = np.zeros_like(frames[0])

    def refilled() -> Iterator[np.ndarray]:  # a reader that refills one buffer
        for f in frames:
            buf[...] = f
            yield buf

    expected = peer_track(name, frames, max_distance=10.0)
    got = peer_track(name, refilled(), max_distance=10.0)
    assert got.maps == expected.maps
    assert expected.n_tracks == 2
    for k in range(len(frames)):
        np.testing.assert_array_equal(got.id_frames[k], expected.id_frames[k])


@pytest.mark.parametrize("name", PEERS)
def test_a_peer_refuses_a_frame_of_another_size(name: str) -> None:
    """A cropped frame was linked in other coordinates, as track_sequence refuses."""
    frames = _moving()
    frames[2] = frames[2][:, :48]
    with pytest.raises(LivescopeError, match=r"frame 2 of the sequence has shape \(64, 48\)"):
        peer_track(name, frames, max_distance=10.0)


def test_trackpy_leaves_its_logger_as_it_was() -> None:
    """trackpy.quiet() set the 'trackpy' logger to WARNING for the whole process."""
    pytest.importorskip("trackpy")
    log = logging.getLogger("trackpy")
    before = log.level
    log.setLevel(logging.INFO)
    try:
        peer_track("trackpy", _moving(), max_distance=10.0)
        assert log.level == logging.INFO
    finally:
        log.setLevel(before)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"daughter_area_max": float("nan")}, id="nan-daughter-area"),
        pytest.param({"split_margin": -1.0}, id="negative-margin"),
        pytest.param({"division_window": 9.5}, id="fraction-of-a-frame"),
        pytest.param({"max_gap": True}, id="bool-gap"),
    ],
)
def test_a_tracker_config_that_would_find_no_division_is_refused(bad: dict) -> None:
    # (a NaN failed every division test without a word; 9.5 frames failed in numpy later)
    from livescope.tracking import TrackerConfig

    with pytest.raises(LivescopeError, match=f"tracker config: {next(iter(bad))} must be"):
        TrackerConfig(**bad)
