from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livescope.record import CtcTrack, read_ctc, relabel_for_ctc, write_ctc


def _frame(*blobs: tuple[int, int, int]) -> np.ndarray:
    f = np.zeros((20, 20), np.uint32)
    for obj, r, c in blobs:
        f[r : r + 3, c : c + 3] = obj
    return f


def test_division_links_daughters_to_parent() -> None:
    frames = [
        _frame((100, 2, 2), (7, 10, 10)),
        _frame((100, 2, 3), (7, 10, 11)),
        _frame((201, 2, 2), (202, 6, 6), (7, 10, 12)),
    ]
    out, tracks, object_of = relabel_for_ctc(frames, {201: 100, 202: 100})
    by_obj = {obj: next(t for t in tracks if t.label == lab) for lab, obj in object_of.items()}
    assert by_obj[100] == CtcTrack(by_obj[100].label, 0, 1, 0)
    assert by_obj[201].parent == by_obj[100].label == by_obj[202].parent
    assert by_obj[201].begin == 2
    assert by_obj[7].end == 2
    assert by_obj[7].parent == 0
    assert out[2][3, 3] == by_obj[201].label
    assert all(f.dtype == np.uint16 for f in out)


def test_gap_continues_as_new_track_linked_to_itself() -> None:
    frames = [_frame((5, 1, 1)), _frame(), _frame((5, 1, 1))]
    _, tracks, object_of = relabel_for_ctc(frames, {})
    first = tracks[0].label
    assert [(t.begin, t.end, t.parent) for t in tracks] == [(0, 0, 0), (2, 2, first)]
    assert set(object_of.values()) == {5}
    assert tracks[0].label != tracks[1].label


def test_daughter_appearing_late_links_to_its_parent() -> None:
    # as in CTC ground truth (GOWT1 01: track 18 begins 4 frames after its parent ends)
    frames = [_frame((1, 1, 1)), _frame(), _frame((2, 5, 5))]
    _, tracks, object_of = relabel_for_ctc(frames, {2: 1})
    label = next(lab for lab, obj in object_of.items() if obj == 2)
    parent = next(lab for lab, obj in object_of.items() if obj == 1)
    assert next(t for t in tracks if t.label == label).parent == parent
    _, tracks, object_of = relabel_for_ctc(frames, {2: 1}, max_link_gap=1)
    assert all(t.parent == 0 for t in tracks)


@pytest.mark.parametrize("kind", ["gt", "res"])
def test_write_read_roundtrip(tmp_path: Path, kind: str) -> None:
    frames = [_frame((1, 1, 1), (2, 8, 8)).astype(np.uint16), _frame((1, 2, 2)).astype(np.uint16)]
    tracks = [CtcTrack(1, 0, 1, 0), CtcTrack(2, 0, 0, 0)]
    write_ctc(tmp_path, frames, tracks, kind=kind)  # type: ignore[arg-type]
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    if kind == "gt":
        assert names == ["man_track.txt", "man_track000.tif", "man_track001.tif"]
    else:
        assert names == ["mask000.tif", "mask001.tif", "res_track.txt"]
    back, back_tracks = read_ctc(tmp_path, kind=kind)  # type: ignore[arg-type]
    assert back_tracks == tracks
    assert all(np.array_equal(a, b) for a, b in zip(frames, back, strict=True))


def test_reads_the_official_ctc_fixture(shared_data: Path) -> None:
    frames, tracks = read_ctc(shared_data / "ctc-format-fixture" / "GT", kind="gt")
    assert len(frames) == 6
    labels = {int(v) for f in frames for v in np.unique(f) if v}
    assert labels <= {t.label for t in tracks}
    res_frames, res_tracks = read_ctc(shared_data / "ctc-format-fixture" / "res", kind="res")
    assert len(res_frames) == 6
    assert res_tracks
