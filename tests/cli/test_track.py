"""``livescope track`` and ``livescope eval track`` from the command line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import tifffile

from livescope.record import CtcTrack, write_ctc
from tests.conftest import run_cli


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args)


def _sequence(folder: Path) -> None:
    """Two cells; one divides at frame 4. Written as CTC ground truth."""
    frames, tracks = [], [CtcTrack(1, 0, 3, 0), CtcTrack(2, 0, 7, 0),
                          CtcTrack(3, 4, 7, 1), CtcTrack(4, 4, 7, 1)]  # fmt: skip
    yy, xx = np.mgrid[:96, :96]
    for t in range(8):
        lab = np.zeros((96, 96), np.uint16)
        lab[(yy - 70) ** 2 + (xx - 20 - t) ** 2 <= 36] = 2
        if t < 4:
            lab[(yy - 30) ** 2 + (xx - 48) ** 2 <= 64] = 1
        else:
            lab[(yy - 30) ** 2 + (xx - 40 + 3 * t) ** 2 <= 25] = 3
            lab[(yy - 30) ** 2 + (xx - 56 - 3 * t) ** 2 <= 25] = 4
        frames.append(lab)
    write_ctc(folder, frames, tracks, kind="gt")


def test_track_labels_then_eval(tmp_path: Path) -> None:
    _sequence(tmp_path / "gt")
    out = tmp_path / "res"
    r = cli("track", str(tmp_path / "gt" / "TRA"), "--from-labels", "--out", str(out),
            "--state", str(tmp_path / "state.json"), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["frames"], summary["tracks"], summary["divisions"]) == (8, 4, 1)
    assert json.loads((tmp_path / "state.json").read_text())["frame"] == 7
    r = cli("eval", "track", "--res", str(out), "--gt", str(tmp_path / "gt"), "--json")
    assert r.returncode == 0, r.stderr
    scores = json.loads(r.stdout)
    for key in ("tra", "det", "lnk", "div_precision", "div_recall", "div_f1", "frames", "tracks"):
        assert key in scores
    assert scores["tra"] == 1.0
    assert scores["div_f1"] == 1.0
    assert (scores["frames"], scores["tracks"]) == (8, 4)


def test_track_and_eval_refuse_bad_input(tmp_path: Path) -> None:
    r = cli("track", str(tmp_path / "nowhere"), "--from-labels", "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "is not a folder" in r.stderr
    gaps = tmp_path / "gaps"
    gaps.mkdir()
    for t in (0, 1, 3):
        tifffile.imwrite(gaps / f"t{t:03d}.tif", np.zeros((8, 8), np.uint16))
    r = cli("track", str(gaps), "--from-labels", "--out", str(tmp_path / "o"), "--json")
    assert r.returncode == 2
    assert "not consecutive" in json.loads(r.stdout)["error"]
    floats = tmp_path / "floats"
    floats.mkdir()
    tifffile.imwrite(floats / "t000.tif", np.zeros((8, 8), np.float32))
    r = cli("track", str(floats), "--from-labels", "--out", str(tmp_path / "o2"))
    assert r.returncode == 2
    assert "must be integer" in r.stderr
    _sequence(tmp_path / "gt")
    r = cli("eval", "track", "--res", str(tmp_path / "gt"), "--gt", str(tmp_path / "gt"))
    assert r.returncode == 2
    assert "no res_track.txt" in r.stderr
