"""Faulty input never crashes the tracker nor corrupts its lineage (hypothesis).

Sequences of drifting, sometimes dividing cells, with faults mixed in: empty
frames, one huge object merging everything, label ids that skip numbers or are
shuffled, and frames that come twice or out of order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livescope.tracking import OnlineTracker

SHAPE = (64, 64)
FAULTS = ("none", "empty", "merged", "sparse_ids", "twice", "back")


def _paint(cells: list[tuple[float, float]], ids: list[int]) -> np.ndarray:
    lab = np.zeros(SHAPE, np.int32)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    for (y, x), i in zip(cells, ids, strict=True):
        lab[(yy - y) ** 2 + (xx - x) ** 2 <= 16] = i
    return lab


@st.composite
def sequences(draw: Any) -> list[tuple[int, np.ndarray, str]]:
    """(frame index, labels, fault) per call, from a seeded random walk of cells."""
    seed = draw(st.integers(0, 2**16))
    faults = draw(st.lists(st.sampled_from(FAULTS), min_size=4, max_size=14))
    rng = np.random.default_rng(seed)
    cells = [tuple(rng.uniform(8, 56, 2)) for _ in range(int(rng.integers(0, 6)))]
    out: list[tuple[int, np.ndarray, str]] = []
    t = 0
    for fault in faults:
        cells = [(float(np.clip(y + rng.normal(0, 1.5), 4, 60)),
                  float(np.clip(x + rng.normal(0, 1.5), 4, 60))) for y, x in cells]  # fmt: skip
        if cells and rng.uniform() < 0.15:  # a division: the mother becomes two daughters
            y, x = cells.pop(int(rng.integers(len(cells))))
            cells += [(y - 5.0, x), (y + 5.0, x)]
        ids = list(range(1, len(cells) + 1))
        if fault in ("twice", "back") and out:
            frame = out[-1][0] if fault == "twice" else max(0, out[-1][0] - 2)
            out.append((frame, out[-1][1].copy(), fault))
            continue
        if fault == "empty":
            lab = np.zeros(SHAPE, np.int32)
        elif fault == "merged":
            lab = np.zeros(SHAPE, np.int32)
            lab[2:62, 2:62] = 7
        elif fault == "sparse_ids":
            lab = _paint(cells, [int(i) for i in rng.permutation(len(cells)) * 13 + 5])
        else:
            lab = _paint(cells, ids)
        out.append((t, lab, fault))
        t += 1
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=sequences())
def test_faulty_sequences_keep_a_sound_lineage(seq: list[tuple[int, np.ndarray, str]]) -> None:
    tr = OnlineTracker()
    last = -1
    for frame, lab, _fault in seq:
        before = tr.state()
        up = tr.update(lab, frame=frame)
        objects = sorted(set(np.unique(lab).tolist()) - {0})
        assert up.labels.tolist() == objects
        if frame <= last:  # out of order or twice: ignored, nothing changes
            assert up.ignored
            assert not up.track_ids.any()
            assert tr.state() == before
            continue
        last = frame
        assert not up.ignored
        ids = up.track_ids.tolist()
        assert all(i > 0 for i in ids)
        assert len(set(ids)) == len(ids)  # one track per object
    # the lineage is a forest: parents started earlier, at most two daughters each
    lineage, spans = tr.lineage, tr.spans()
    daughters: dict[int, int] = {}
    for child, parent in lineage.items():
        assert spans[child][0] <= spans[child][1]
        if parent:
            assert parent in lineage
            assert spans[parent][0] < spans[child][0]
            daughters[parent] = daughters.get(parent, 0) + 1
    assert all(n <= 2 for n in daughters.values())


@pytest.mark.parametrize("fault", ["empty", "merged"])
def test_a_fault_frame_between_good_ones_does_not_break_the_tracks(fault: str) -> None:
    cells = [(16.0, 16.0), (16.0, 48.0), (48.0, 32.0)]
    good = _paint(cells, [1, 2, 3])
    bad = np.zeros(SHAPE, np.int32)
    if fault == "merged":
        bad[2:62, 2:62] = 1
    tr = OnlineTracker()
    first = tr.update(good).mapping()
    tr.update(bad)
    after = tr.update(good).mapping()
    assert after == first  # the gap is closed: same cells, same tracks


def test_a_sequence_of_one_frame_is_refused_with_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # (py-ctcmetrics raised "need at least one array to concatenate" on one frame)
    import tifffile

    from livescope.schema import LivescopeError
    from livescope.tracking import evaluate_tracking

    mask = np.zeros((16, 16), np.uint16)
    mask[4:9, 4:9] = 1
    (tmp_path / "res").mkdir()
    (tmp_path / "gt" / "TRA").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "res" / "mask000.tif", mask)
    tifffile.imwrite(tmp_path / "gt" / "TRA" / "man_track000.tif", mask)
    for f in (tmp_path / "res" / "res_track.txt", tmp_path / "gt" / "TRA" / "man_track.txt"):
        f.write_text("1 0 0 0\n")
    with pytest.raises(LivescopeError, match="has 1 frame: tracking is scored on 2 frames or more"):
        evaluate_tracking(tmp_path / "res", tmp_path / "gt")
