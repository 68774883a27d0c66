"""``livescope track`` and ``livescope eval track`` from the command line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
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
    assert f"{tmp_path / 'nowhere'} does not exist" in r.stderr
    (tmp_path / "a-file").write_text("")
    r = cli("track", str(tmp_path / "a-file"), "--from-labels", "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "a-file is not a folder" in r.stderr
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
    raw = tmp_path / "raw"  # camera frames given as labels: every grey level an "object"
    raw.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(raw / "t000.tif", rng.integers(100, 4000, (32, 32)).astype(np.uint16))
    r = cli("track", str(raw), "--from-labels", "--out", str(tmp_path / "o3"), "--json")
    assert r.returncode == 2, r.stderr
    error = json.loads(r.stdout)["error"]
    assert "looks like an intensity image, not instance labels" in error
    assert error.endswith("; to segment them, drop --from-labels")  # (track has no --labels)
    _sequence(tmp_path / "gt")
    r = cli("track", str(tmp_path / "gt" / "TRA"), "--out", str(tmp_path / "o4"),
            "--engine", "no-such-engine", "--json")  # fmt: skip
    assert r.returncode == 2, r.stderr  # label images to segment: refused before the engine loads
    err = json.loads(r.stdout)["error"]
    assert (
        "man_track000.tif: this is an instance label image, not a frame to segment (2 objects"
        in err
    )
    assert err.endswith("to track label images as they are, add --from-labels")
    assert not (tmp_path / "o4").exists()
    r = cli("eval", "track", "--res", str(tmp_path / "gt"), "--gt", str(tmp_path / "gt"))
    assert r.returncode == 2
    assert "no res_track.txt" in r.stderr


def test_track_refuses_unreadable_resized_and_clashing_frames_and_bad_paths(
    tmp_path: Path,
) -> None:
    def refused(folder: Path, *extra: str) -> str:
        r = cli("track", str(folder), "--from-labels", "--out", str(tmp_path / "o"), *extra,
                "--json")  # fmt: skip
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        return str(json.loads(r.stdout)["error"])

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    tifffile.imwrite(corrupt / "t000.tif", np.zeros((8, 8), np.uint16))
    (corrupt / "t001.tif").write_bytes(b"not a tiff at all")
    assert "t001.tif: cannot read it as an image" in refused(corrupt)
    resized = tmp_path / "resized"
    resized.mkdir()
    for t, side in enumerate((30, 24, 30)):
        tifffile.imwrite(resized / f"t{t:03d}.tif", np.zeros((side, side), np.uint16))
    assert "t001.tif: frame of 24x24 px, the sequence's first is 30x30" in refused(resized)
    clash = tmp_path / "clash"
    clash.mkdir()
    for name in ("t000.tif", "t000.tiff", "t001.tif"):
        tifffile.imwrite(clash / name, np.zeros((8, 8), np.uint16))
    assert "have the same frame number" in refused(clash)
    _sequence(tmp_path / "gt")
    state = tmp_path / "no" / "such" / "state.json"
    assert "does not exist" in refused(tmp_path / "gt" / "TRA", "--state", str(state))
    # options for segmenting, with --from-labels (which segments nothing): not ignored silently
    assert refused(tmp_path / "gt" / "TRA", "--engine", "foo", "--backend", "bar") == (
        "--engine, --backend are for segmenting, and --from-labels segments nothing: "
        "drop one or the other"
    )
    assert "--diameter is for segmenting" in refused(tmp_path / "gt" / "TRA", "--diameter", "9")
    r = cli("eval", "seg", "--engine", "classical", "--backend", "foo", "--images",
            str(tmp_path), "--labels", str(tmp_path), "--json")  # fmt: skip
    assert r.returncode == 2
    assert "the classical pipeline runs no engine" in json.loads(r.stdout)["error"]
    assert not (tmp_path / "o").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ("1 0 3 0\n2 4 6 9\n", "line 2: the parent 9 of track 2 is not a track of this file"),
        ("1 0 3 0\n1 4 6 0\n", "line 2: track 1 is listed again (line 1)"),
        ("1 5 3 0\n", "line 1: track 1 begins (frame 5) after it ends (3)"),
        ("1 0 3 1\n", "line 1: track 1 is its own parent"),
        ("0 0 3 0\n", "line 1: label 0 is the background, not a track"),
        ("1 0 3 0\n2 3 6 1\n", "line 2: track 2 begins at frame 3, but its parent 1 ends"),
    ],
)
def test_a_track_file_of_an_impossible_lineage_is_refused_by_line(
    tmp_path: Path, lines: str, error: str
) -> None:
    from livescope.schema import LivescopeError
    from livescope.tracking._evaluate import _check_track_file

    f = tmp_path / "res_track.txt"
    f.write_text(lines)
    with pytest.raises(LivescopeError, match=re.escape(error)):
        _check_track_file(f)
    f.write_text("1 0 3 0\n2 4 6 1\n3 4 9 1\n\n4 2 2 0\n")  # a division, a one-frame track
    _check_track_file(f)


def test_eval_track_refuses_other_frames_and_a_malformed_track_file(tmp_path: Path) -> None:
    _sequence(tmp_path / "gt")
    small = tmp_path / "small"
    small.mkdir()
    for t in range(8):
        tifffile.imwrite(small / f"mask{t:03d}.tif", np.zeros((48, 48), np.uint16))
    (small / "res_track.txt").write_text("")
    r = cli("eval", "track", "--res", str(small), "--gt", str(tmp_path / "gt"), "--json")
    assert r.returncode == 2
    assert "must be the same frames" in json.loads(r.stdout)["error"]
    gt = str(tmp_path / "gt")
    r = cli("eval", "track", "--res", str(tmp_path / "nope"), "--gt", gt, "--json")
    assert r.returncode == 2
    assert json.loads(r.stdout)["error"] == f"{tmp_path / 'nope'} does not exist"
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "gt" / "TRA", bad)
    for p in bad.glob("man_track*.tif"):
        p.rename(bad / p.name.replace("man_track", "mask"))
    (bad / "man_track.txt").rename(bad / "res_track.txt")
    (bad / "res_track.txt").write_text("1 0 3 0\n2 0 x 0\n")
    r = cli("eval", "track", "--res", str(bad), "--gt", str(tmp_path / "gt"), "--json")
    assert r.returncode == 2
    assert (
        "res_track.txt, line 2: '2 0 x 0' is not 'label begin end parent'"
        in (json.loads(r.stdout)["error"])
    )
    # each mask is checked, not only the first: a later one cut short, of floats, not a
    # TIFF; and a result without tracks
    (bad / "res_track.txt").write_text((tmp_path / "gt" / "TRA" / "man_track.txt").read_text())
    shape = tifffile.imread(bad / "mask000.tif").shape
    last = sorted(bad.glob("mask*.tif"))[-1]
    for content, error in (
        (np.zeros((shape[0] // 2, shape[1]), np.uint16), f"{last} is ({shape[0] // 2}, "),
        (np.zeros(shape, np.float32), f"{last}: a mask must hold integer labels, not float32"),
        (b"not a tiff", f"{last}: cannot read it as a TIFF"),
        (None, "res_track.txt lists no tracks: nothing to score"),
    ):
        if content is None:
            tifffile.imwrite(last, np.zeros(shape, np.uint16))
            (bad / "res_track.txt").write_text("")
        elif isinstance(content, bytes):
            last.write_bytes(content)
        else:
            tifffile.imwrite(last, content)
        r = cli("eval", "track", "--res", str(bad), "--gt", str(tmp_path / "gt"), "--json")
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        assert error in json.loads(r.stdout)["error"]


def test_the_tra_folder_given_for_the_ground_truth_says_to_give_its_parent(
    tmp_path: Path,
) -> None:
    from livescope.record import read_ctc
    from livescope.schema import LivescopeError
    from livescope.tracking import evaluate_tracking

    _sequence(tmp_path / "gt")
    tra = tmp_path / "gt" / "TRA"
    hint = f"{tra} is the TRA folder itself: give its parent ({tmp_path / 'gt'})"
    (res := tmp_path / "res").mkdir()
    (res / "res_track.txt").write_text("1 0 3 0\n")
    with pytest.raises(LivescopeError, match=re.escape(hint)):
        evaluate_tracking(res, tra)
    with pytest.raises(LivescopeError, match=re.escape(hint)):  # (eval states reads it so)
        read_ctc(tra, kind="gt")
    assert len(read_ctc(tmp_path / "gt", kind="gt")[0]) == 8


def test_an_invalid_result_is_refused_with_py_ctcmetrics_reasons(tmp_path: Path) -> None:
    from livescope.schema import LivescopeError
    from livescope.tracking import evaluate_tracking

    _sequence(tmp_path / "gt")
    res = tmp_path / "res"
    shutil.copytree(tmp_path / "gt" / "TRA", res)
    for p in res.glob("man_track*.tif"):
        p.rename(res / p.name.replace("man_track", "mask"))
    (res / "man_track.txt").rename(res / "res_track.txt")
    assert evaluate_tracking(res, tmp_path / "gt")["tra"] == 1.0  # the truth scores as truth
    with (res / "res_track.txt").open("a") as f:
        f.write("9 0 1 0\n")  # a track no mask holds
    with pytest.raises(
        LivescopeError, match=r"finds the result invalid: Label 9 in res_track but not in mask"
    ):
        evaluate_tracking(res, tmp_path / "gt")
