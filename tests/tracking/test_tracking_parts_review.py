"""Review of the tracker's parts: sequences, peers, the saved track table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from livescope.schema import LivescopeError
from livescope.tracking import OnlineTracker, TrackerConfig, track_sequence
from livescope.tracking._peers import PEERS, peer_track
from tests.tracking.test_tracker import disks


def _moving(n: int = 4) -> list[np.ndarray]:
    return [disks((64, 64), [(15 + 2 * k, 15 + 3 * k, 5), (45, 45 - 2 * k, 5)]) for k in range(n)]


@pytest.mark.parametrize(
    ("dtype", "offset"),
    [pytest.param(np.uint16, 0, id="uint16"), pytest.param(np.uint64, 2**40, id="uint64-huge")],
)
def test_a_sequence_read_into_one_reused_buffer_keeps_every_frame(
    dtype: type[np.unsignedinteger[Any]], offset: int
) -> None:
    """A reader that refills one buffer per frame: the sequence kept a view of it, and
    every id frame came out as the last one (labels already compact were not copied)."""
    frames = [np.where(f > 0, f.astype(dtype) + dtype(offset), 0).astype(dtype) for f in _moving()]
    buf = np.zeros_like(frames[0])

    def refilled() -> Iterator[np.ndarray]:
        for f in frames:
            buf[...] = f
            yield buf

    expected = track_sequence([f.copy() for f in frames])
    got = track_sequence(refilled())
    assert got.maps == expected.maps
    for k in range(len(frames)):
        np.testing.assert_array_equal(got.id_frames[k], expected.id_frames[k])


def test_a_frame_of_another_size_is_refused() -> None:
    """A cropped frame in the middle was linked to the tracks in other coordinates."""
    frames = _moving()
    frames[2] = frames[2][:, :48]
    with pytest.raises(LivescopeError, match=r"frame 2 of the sequence has shape \(64, 48\)"):
        track_sequence(frames)


def test_a_config_the_given_tracker_would_ignore_is_refused() -> None:
    """With ``tracker``, ``config`` was dropped without a word."""
    tr = OnlineTracker()
    tr.update(_moving()[0])
    with pytest.raises(LivescopeError, match="config differs from the given tracker"):
        track_sequence(_moving()[1:], tracker=tr, config=TrackerConfig(max_gap=1))
    assert tr.frame == 0  # (refused before a frame was given)
    same = track_sequence(_moving()[1:], tracker=tr, config=TrackerConfig())
    assert len(same.maps) == 3


@pytest.mark.parametrize("name", PEERS)
def test_a_peer_on_frames_without_objects_gives_no_tracks(name: str) -> None:
    """laptrack raised ValueError, trackpy IndexError, on a sequence with no cells."""
    pytest.importorskip(name)
    empty = [np.zeros((32, 32), np.uint16) for _ in range(3)]
    seq = peer_track(name, empty, max_distance=5.0)
    assert seq.maps == [{}, {}, {}]
    assert seq.n_tracks == 0
    assert all(not f.any() for f in seq.id_frames)


def _set(state: dict[str, Any], column: str, value: Any) -> None:
    col = state["tracks"][column]
    if column == "hp":
        col[0][-1][0] = value
    elif column in ("vel",):
        col[0][1] = value
    elif column == "ha":
        col[0][-1] = value
    else:
        col[0] = value


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        pytest.param("hp", float("nan"), "a position that is not finite", id="nan-position"),
        pytest.param("vel", float("inf"), "a velocity that is not finite", id="inf-velocity"),
        pytest.param("ha", -5.0, "an area that is not finite and > 0", id="negative-area"),
        pytest.param("ha", float("nan"), "an area that is not finite and > 0", id="nan-area"),
        pytest.param("last_seen", 99, "a last_seen other than", id="last-seen-ahead"),
    ],
)
def test_a_state_whose_tracks_could_not_link_is_refused(
    column: str, value: Any, message: str
) -> None:
    """A NaN position or velocity was loaded and broke every later frame (scipy's
    ValueError); a bad area or last_seen left the track unable to link, silently."""
    frames = _moving(6)
    tr = OnlineTracker()
    for f in frames[:3]:
        tr.update(f)
    good = json.loads(json.dumps(tr.state()))
    resumed = OnlineTracker.from_state(json.loads(json.dumps(good)))
    assert [resumed.update(f).mapping() for f in frames[3:]] == [
        tr.update(f).mapping() for f in frames[3:]
    ]
    bad = json.loads(json.dumps(good))
    _set(bad, column, value)
    with pytest.raises(LivescopeError, match=f"tracker state: track \\d+ has {message}"):
        OnlineTracker.from_state(json.loads(json.dumps(bad)))
