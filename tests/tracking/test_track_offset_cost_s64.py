"""``livescope track`` on a folder whose frames start late (t0500): the empty masks before the
first frame cost one encoded image, not a label image, a relabelling and a compression each
(from t1500, 3 frames of 1024² px took 109 s and 3.1 GB)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

import livescope.record
from livescope.record import read_ctc

FIRST, N, SHAPE = 500, 3, (24, 32)


def _labels(k: int) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint16)
    lab[3 + k : 9 + k, 4:10] = 7
    if k != 1:  # missed at t0501: a track of its own after the gap, its parent the first
        lab[14:20, 20 + k : 26 + k] = 9
    return lab


def test_track_from_t0500_relabels_and_encodes_only_the_given_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from livescope.cli._app import app

    src = tmp_path / "in"
    src.mkdir()
    for k in range(N):
        tifffile.imwrite(src / f"t{FIRST + k:04d}.tif", _labels(k))

    relabelled: list[tuple[int, int]] = []  # (frames given, frames returned) per call
    relabel = livescope.record.relabel_for_ctc

    def counting_relabel(id_frames: Any, *args: Any, **kwargs: Any) -> Any:
        out = relabel(id_frames, *args, **kwargs)
        relabelled.append((len(id_frames), len(out[0])))
        return out

    encoded: list[tuple[int, ...]] = []  # shape of each image tifffile encodes
    imwrite = tifffile.imwrite

    def counting_imwrite(file: Any, data: Any = None, *args: Any, **kwargs: Any) -> Any:
        encoded.append(np.shape(data))
        return imwrite(file, data, *args, **kwargs)

    monkeypatch.setattr(livescope.record, "relabel_for_ctc", counting_relabel)
    monkeypatch.setattr(tifffile, "imwrite", counting_imwrite)
    out = tmp_path / "res"
    r = CliRunner().invoke(app, ["track", str(src), "--out", str(out), "--from-labels"])
    monkeypatch.undo()
    assert r.exit_code == 0, r.output

    # the padding frames are neither relabelled nor encoded one by one
    assert relabelled == [(N, N)], f"relabel_for_ctc got/returned {relabelled} frames, not {N}"
    assert len(encoded) <= N + 1, (
        f"{len(encoded)} masks encoded for {N} frames from t{FIRST}: one each, plus one empty"
    )

    masks = sorted(p.name for p in out.glob("mask*.tif"))
    assert masks == [f"mask{f:03d}.tif" for f in range(FIRST + N)]
    empty = (out / "mask000.tif").read_bytes()
    assert all((out / f"mask{f:03d}.tif").read_bytes() == empty for f in range(FIRST)), (
        "the masks before the first frame differ"
    )
    frames, tracks = read_ctc(out)
    assert len(frames) == FIRST + N
    assert (frames[0].shape, frames[0].dtype) == (SHAPE, np.dtype(np.uint16))
    assert not frames[0].any()
    for k in range(N):  # the given frames keep their numbers (and their objects' places)
        assert np.array_equal(frames[FIRST + k] > 0, _labels(k) > 0), f"mask{FIRST + k:03d}"
    assert sorted((t.begin, t.end) for t in tracks) == [
        (FIRST, FIRST),
        (FIRST, FIRST + 2),
        (FIRST + 2, FIRST + 2),
    ]
    # the track after the gap continues the one before it
    after = next(t for t in tracks if t.begin == FIRST + 2)
    before = next(t for t in tracks if (t.begin, t.end) == (FIRST, FIRST))
    assert after.parent == before.label
