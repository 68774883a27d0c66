from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livescope.record import CtcTrack, read_ctc, relabel_for_ctc, write_ctc
from livescope.schema import LivescopeError


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


def test_live_track_masks_are_rewritten_as_a_valid_ctc_result(tmp_path: Path) -> None:
    """A live tracker's masks: track 5 is missed in frame 2 (gap closed), 5 divides
    into 7 and 8, frame 4 was never analysed (no file)."""
    import tifffile

    from livescope.record import rewrite_ctc_result
    from livescope.tracking import evaluate_tracking

    def frame(*ids: int) -> np.ndarray:
        m = np.zeros((16, 48), np.uint16)
        for k, i in enumerate(ids):
            m[4:10, 2 + 10 * k : 8 + 10 * k] = i
        return m

    live = {0: frame(5, 6), 1: frame(5, 6), 2: frame(0, 6), 3: frame(5, 6), 5: frame(7, 6, 8)}
    res = tmp_path / "res"
    res.mkdir()
    for t, m in live.items():
        tifffile.imwrite(res / f"mask{t:03d}.tif", m)
    tracks = rewrite_ctc_result(res, {7: 5, 8: 5})
    assert tracks == [
        CtcTrack(1, 0, 1, 0),  # 5 before its gap
        CtcTrack(2, 0, 3, 0),  # 6 before the frame that was never analysed
        CtcTrack(3, 3, 3, 1),  # 5 after its gap: a new track, its parent itself
        CtcTrack(4, 5, 5, 2),  # 6 after the missing frame
        CtcTrack(5, 5, 5, 3),  # the daughters of 5
        CtcTrack(6, 5, 5, 3),
    ]
    masks = sorted(p.name for p in res.glob("mask*.tif"))
    assert masks == [f"mask{t:03d}.tif" for t in range(6)]
    assert not tifffile.imread(res / "mask004.tif").any()
    assert tifffile.imread(res / "mask003.tif").max() == 3
    gt = tmp_path / "gt" / "TRA"  # the result as its own ground truth: TRA 1 when valid
    gt.mkdir(parents=True)
    for m in masks:
        (gt / m.replace("mask", "man_track")).write_bytes((res / m).read_bytes())
    (gt / "man_track.txt").write_text((res / "res_track.txt").read_text())
    scores = evaluate_tracking(res, gt.parent)  # py-ctcmetrics refuses an invalid result
    assert scores["tra"] == pytest.approx(1.0)


@pytest.mark.parametrize("label", [70000, -1])
def test_labels_a_ctc_mask_cannot_hold_are_refused_not_wrapped(tmp_path: Path, label: int) -> None:
    frame = np.zeros((8, 8), np.int32)
    frame[2:4, 2:4] = label
    with pytest.raises(LivescopeError, match=rf"frame 1 holds labels .*{label}.*0\.\.65535"):
        write_ctc(tmp_path, [np.zeros((8, 8), np.int32), frame], [CtcTrack(label, 1, 1, 0)])
    assert not list(tmp_path.iterdir())  # nothing written
