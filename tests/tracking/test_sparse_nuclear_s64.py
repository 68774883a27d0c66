"""A nuclear channel imaged every few time points (``acquire_every``), and `livescope track`
on a folder whose frames do not start at 0."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from livescope.pipeline import FrameAnalyzer
from livescope.record import read_ctc
from livescope.schema import LivescopeError
from livescope.tracking import OnlineTracker
from tests.tracking.test_tracker import disks

SHAPE = (128, 128)
EVERY = 4  # the nuclear channel's acquire_every


def _cells(t: int) -> list[tuple[float, float, float]]:
    """Four cells drifting 1.5 px per time point (6 px between two nuclear frames)."""
    return [(25.0 + 1.5 * t, 25.0, 6.0), (25.0, 95.0 - 1.5 * t, 6.0),
            (95.0, 30.0 + 1.5 * t, 6.0), (90.0 - 1.5 * t, 90.0, 6.0)]  # fmt: skip


def _analyzer() -> FrameAnalyzer:
    """A FrameAnalyzer without engines whose "segmentation" reads the discs back from the frame."""
    fa = FrameAnalyzer(segmenter=None, stain=None, states=None)

    def segment(img: np.ndarray, normalised: bool = False) -> SimpleNamespace:
        from scipy import ndimage

        return SimpleNamespace(labels=ndimage.label(img > 50)[0].astype(np.int32))

    fa.segmenter_name = "discs"
    fa._segmenter = lambda px: SimpleNamespace(segment=segment)  # type: ignore[method-assign,assignment,return-value]
    return fa


def _run(fa: FrameAnalyzer, times: list[int], nuclear: set[int]) -> dict[int, set[int]]:
    """Analyse Phase at every time point of ``times``, DAPI too at those of ``nuclear``.

    Returns the track ids of each time point that was segmented.
    """
    ids: dict[int, set[int]] = {}
    for t in times:
        phase = np.full(SHAPE, 7, np.uint16)
        dapi = (disks(SHAPE, _cells(t)) > 0).astype(np.uint16) * 100 + 10
        dapi_or_none = dapi if t in nuclear else None
        res = fa.analyse(fluorescence=dapi_or_none, label_free=phase, position="p0", frame=t)
        if res.tracks is not None:
            assert res.frame == t  # real time points, not the tracker's clock
            assert res.tracks.frame == t
            ids[t] = set(res.tracks.track_ids.tolist())
    return ids


def _kept(ids: dict[int, set[int]]) -> list[int]:
    ts = sorted(ids)
    return [len(ids[a] & ids[b]) for a, b in itertools.pairwise(ts)]


def test_a_nuclear_channel_every_4th_time_point_keeps_its_tracks() -> None:
    """Phase every time point, DAPI every 4th, no virtual stain: each nuclear frame started
    every cell anew (ids kept [0, 0, 0], every track reported lost), max_gap being counted
    in time points the tracker could never have seen a cell on."""
    fa = _analyzer()
    ids = _run(fa, list(range(13)), set(range(0, 13, EVERY)))
    assert sorted(ids) == [0, 4, 8, 12]
    assert _kept(ids) == [4, 4, 4], ids
    tracker = fa.trackers["p0"]
    assert sorted(tracker.spans().values()) == [(0, 12)] * 4  # spans in real time points
    assert tracker.frame == 12


def test_no_track_is_lost_across_the_time_points_without_a_nuclear_frame() -> None:
    fa = _analyzer()
    lost: list[int] = []
    for t in range(13):
        dapi = (disks(SHAPE, _cells(t)) > 0).astype(np.uint16) * 100 + 10
        phase = np.full(SHAPE, 7, np.uint16)
        nuclear = dapi if t % EVERY == 0 else None
        res = fa.analyse(fluorescence=nuclear, label_free=phase, position="p0", frame=t)
        if res.tracks is not None:
            lost.extend(res.tracks.lost)
            if t:
                assert res.tracks.born == ()
    assert lost == []


def test_nuclear_frames_not_analysed_beyond_max_gap_still_end_the_tracks() -> None:
    """DAPI expected at 4, 8 and 12 but those fields were never analysed (dropped): three
    nuclear frames missed, one more than max_gap (3) allows, so the tracks end."""
    fa = _analyzer()
    times = [t for t in range(17) if t not in (4, 8, 12)]
    ids = _run(fa, times, set(range(0, 17, EVERY)))
    assert sorted(ids) == [0, 16]
    assert _kept(ids) == [0]


def test_one_nuclear_frame_not_analysed_is_a_gap_closed_at_its_cost() -> None:
    """Only the field at t=4 missing: one nuclear frame missed, within max_gap."""
    fa = _analyzer()
    times = [t for t in range(13) if t != 4]
    ids = _run(fa, times, set(range(0, 13, EVERY)))
    assert _kept(ids) == [4, 4]


def test_the_gap_counts_only_time_points_that_could_be_segmented() -> None:
    """Directly on the tracker: skipped time points do not count toward max_gap, missed
    ones do (max_gap 3 = up to two missed)."""
    lab = disks(SHAPE, _cells(0))
    tr = OnlineTracker()
    first = set(tr.update(lab, frame=0).track_ids.tolist())
    for t in range(1, 10):
        assert tr.skip(t)
    assert tr.frame == 9
    # 1..9 skipped, 10 and 11 missed: a gap of 3 segmentable frames, still linked
    assert set(tr.update(lab, frame=12).track_ids.tolist()) == first
    for t in range(13, 20):
        tr.skip(t)
    # 20, 21, 22 missed: 4 segmentable frames since 12, over max_gap
    again = tr.update(lab, frame=23)
    assert not set(again.track_ids.tolist()) & first
    assert sorted(again.lost) == sorted(first)


def test_skip_refuses_what_update_refuses() -> None:
    tr = OnlineTracker()
    tr.update(disks(SHAPE, _cells(0)), frame=5)
    assert not tr.skip(5)  # a second time: ignored
    assert not tr.skip(3)  # out of order: ignored
    assert tr.skip(6)
    assert tr.update(disks(SHAPE, _cells(0)), frame=6).ignored  # skipped already
    for bad in (-1, 2.5, True, 2**63):
        with pytest.raises(LivescopeError, match="frame must be a whole number"):
            tr.skip(bad)  # type: ignore[arg-type]
    assert tr.frame == 6
    # the default next frame follows the skipped ones
    assert tr.update(disks(SHAPE, _cells(0))).frame == 7


@pytest.mark.parametrize("how", ["state", "file"])
def test_a_restored_tracker_counts_the_skipped_time_points_as_the_first_did(
    how: str, tmp_path: Path
) -> None:
    """A worker restarted between nuclear frames (its tracker saved after the skips, or
    before some of them) goes on as the one that did not stop."""
    lab = disks(SHAPE, _cells(0))
    tr = OnlineTracker()
    first = set(tr.update(lab, frame=0).track_ids.tolist())
    for t in range(1, 8):
        tr.skip(t)
    if how == "state":
        back = OnlineTracker.from_state(json.loads(json.dumps(tr.state())))
    else:
        tr.save(tmp_path / "tr.json")
        back = OnlineTracker.load(tmp_path / "tr.json")
    assert back.frame == 7
    assert back.state() == tr.state()
    # 1..7 skipped, 8 and 9 missed: still within max_gap; without the skips it was 10
    for t in (tr, back):
        assert set(t.update(lab, frame=10).track_ids.tolist()) == first


def test_a_state_without_skipped_time_points_still_loads() -> None:
    """A state saved before the tracker knew of skipped time points."""
    tr = OnlineTracker()
    tr.update(disks(SHAPE, _cells(0)), frame=0)
    state = tr.state()
    assert state.pop("skipped") == []
    back = OnlineTracker.from_state(state)
    assert back.frame == 0
    assert back.state() == tr.state()


@pytest.mark.parametrize(
    ("skipped", "why"),
    [
        ([[3, 2]], "skipped"),
        ([[2, 3], [3, 5]], "skipped"),
        ([[-1, 2]], "skipped"),
        ([[0, 0]], "skipped"),  # frame 0 was tracked
        ([[1, "a"]], "skipped"),
    ],
)
def test_a_state_with_bad_skipped_time_points_is_refused(skipped: object, why: str) -> None:
    tr = OnlineTracker()
    tr.update(disks(SHAPE, _cells(0)), frame=0)
    state = tr.state()
    state["skipped"] = skipped
    with pytest.raises(LivescopeError, match=why):
        OnlineTracker.from_state(state)


def test_a_restored_analyzer_tracker_keeps_the_ids_across_nuclear_frames() -> None:
    """As a resumed worker does: the analyzer's tracker replaced by one from its saved state
    between two nuclear frames."""
    fa = _analyzer()
    ids = _run(fa, list(range(7)), {0, 4})
    fa.trackers["p0"] = OnlineTracker.from_state(json.loads(json.dumps(fa.trackers["p0"].state())))
    ids.update(_run(fa, list(range(7, 13)), {8, 12}))
    assert _kept(ids) == [4, 4, 4]


# ------------------------------------------------------------- livescope track --from-labels


def _labels_folder(folder: Path, first: int, n: int) -> None:
    folder.mkdir()
    for k in range(n):
        tifffile.imwrite(
            folder / f"t{first + k:03d}.tif", disks(SHAPE, _cells(k)).astype(np.uint16)
        )


def test_track_from_labels_keeps_the_input_frame_numbers(tmp_path: Path) -> None:
    """Frames t010..t014: the result and the state said every track began at 0."""
    from typer.testing import CliRunner

    from livescope.cli._app import app

    _labels_folder(tmp_path / "in", 10, 5)
    out, state = tmp_path / "res", tmp_path / "state.json"
    args = ["track", str(tmp_path / "in"), "--out", str(out), "--from-labels"]
    r = CliRunner().invoke(app, [*args, "--state", str(state), "--json"])
    assert r.exit_code == 0, r.output
    frames, tracks = read_ctc(out)
    assert len(frames) == 15  # CTC numbers from 0: the frames before the first are empty
    assert not any(f.any() for f in frames[:10])
    assert all(f.any() for f in frames[10:])
    assert sorted((t.begin, t.end) for t in tracks) == [(10, 14)] * 4
    saved = OnlineTracker.load(state)
    assert saved.frame == 14
    assert sorted(saved.spans().values()) == [(10, 14)] * 4
    assert json.loads(r.stdout)["frames"] == 5
