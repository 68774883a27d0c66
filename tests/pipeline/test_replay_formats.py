"""Replay of each dataset format through the full pipeline (issue 8).

One small recording of the simulated microscope (2 positions × 3 time points ×
phase + DAPI) is written again as NDTiff (ndstorage, as pycromanager writes),
OME-TIFF and OME-Zarr (NGFF 0.5, bioformats2raw layout). Each is replayed with
the supervised worker and the real engines: the same pixels in any container
must give the same per-cell results. A copy of the recording cut mid-write
replays up to its last logged frame and says so; a Cell Tracking Challenge
folder (real GOWT1 frames) goes through ``livescope replay``.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from livescope.pipeline import run_replay
from livescope.record import open_dataset
from livescope.schema import load_profile
from livescope.scope import demo_sequence, run_simulated
from livescope.tracking import evaluate_tracking
from livescope.view import write_report

from ..conftest import run_cli, shared_subfolder, write_ndtiff

pytestmark = pytest.mark.slow

T, P, CHANNELS = 3, 2, ("Phase", "DAPI")


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rec") / "run"
    prof = load_profile("sim")
    run_simulated(prof, demo_sequence(prof, timepoints=T, positions=P), out, seed=5)
    return out


@pytest.fixture(scope="module")
def planes(recording: Path) -> np.ndarray:
    """The recording's pixels as (position, t, channel, y, x)."""
    with open_dataset(recording) as ds:
        first = ds.frames[0]
        out = np.zeros((P, T, len(CHANNELS), *first.shape), first.dtype)
        for f in ds.frames:
            out[int(f.key.position[1:]), f.key.t, CHANNELS.index(f.key.channel)] = ds.read(f.key)
    return out


def _ome_tiff(path: Path, planes: np.ndarray, channels: tuple[str, ...] = CHANNELS) -> Path:
    with tifffile.TiffWriter(path, ome=True) as tw:
        for p in range(P):
            tw.write(planes[p][:, :, None], photometric="minisblack", metadata={
                "axes": "TCZYX", "Name": f"p{p}", "Channel": {"Name": list(channels)},
                "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65, "TimeIncrement": 120.0,
            })  # fmt: skip
    return path


def _ome_zarr(path: Path, planes: np.ndarray) -> Path:
    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.attrs["ome"] = {"version": "0.5", "bioformats2raw.layout": 3}
    for p in range(P):
        image = root.create_group(str(p))
        image.attrs["ome"] = {
            "version": "0.5",
            "multiscales": [{
                "axes": [{"name": "t", "type": "time", "unit": "second"},
                         {"name": "c", "type": "channel"},
                         {"name": "y", "type": "space", "unit": "micrometer"},
                         {"name": "x", "type": "space", "unit": "micrometer"}],
                "datasets": [{"path": "0", "coordinateTransformations": [
                    {"type": "scale", "scale": [120.0, 1.0, 0.65, 0.65]}]}],
            }],
            "omero": {"channels": [{"label": c} for c in CHANNELS]},
        }  # fmt: skip
        arr = image.create_array(
            "0", shape=planes[p].shape, chunks=(1, 1, *planes.shape[-2:]), dtype=planes.dtype
        )
        arr[...] = planes[p]
    return path


def _cells(run: Path) -> list[tuple]:
    with (run / "results" / "cells.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r.pop("seq")
    return sorted(tuple(r.values()) for r in rows)


@pytest.fixture(scope="module")
def replayed(recording: Path, planes: np.ndarray, tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("formats")
    cut = base / "cut"
    shutil.copytree(recording, cut)
    lines = (cut / "frames.jsonl").read_text().splitlines(keepends=True)
    (cut / "frames.jsonl").write_text("".join(lines[:9]) + lines[9][:30])  # killed mid-line
    (cut / "summary.json").unlink()
    sources = {
        "livescope": recording,
        "cut": cut,
        "ndtiff": write_ndtiff(base / "nd", lambda t, p, c: planes[p, t, c]),
        "ome-tiff": _ome_tiff(base / "a.ome.tif", planes),
        "ome-zarr": _ome_zarr(base / "a.ome.zarr", planes),
    }
    out = {}
    for name, src in sources.items():
        run = base / f"replay-{name}"
        # the rig it was recorded on (its profile knows the nuclei's size); a livescope
        # recording names its own
        summary = run_replay(src, run, profile=None if src in (recording, cut) else "sim")
        summary["report"] = str(write_report(run))
        out[name] = (summary, run)
    return out


@pytest.mark.parametrize("fmt", ["livescope", "ndtiff", "ome-tiff", "ome-zarr"])
def test_each_format_replays_through_the_pipeline(replayed, fmt: str) -> None:
    summary, run = replayed[fmt]
    assert summary["format"] == fmt
    assert summary["profile"] == "sim"
    assert summary["frames_served"] == T * P * len(CHANNELS)
    assert summary["frames_analysed"] == T * P * len(CHANNELS)
    assert summary["fields_analysed"] == T * P
    assert summary["deterministic"] is True
    assert summary["warnings"] == []
    assert Path(summary["report"]).is_file()
    assert (run / "results" / "ctc" / "p1" / "res_track.txt").is_file()
    cells = _cells(run)
    assert len(cells) >= T * P * 5  # the simulated fields hold dozens of nuclei
    # the same pixels, pixel size, times and channels in another container: same results
    assert cells == _cells(replayed["livescope"][1])


def test_the_channel_whose_target_is_nuclei_is_segmented(replayed, planes, tmp_path) -> None:
    # a GFP channel showing something else (here: noise) comes before DAPI in the file
    # and in the profile: the pipeline must still segment DAPI, not the first fluorescence
    gfp = np.random.default_rng(1).poisson(20, planes[:, :, :1].shape).astype(planes.dtype)
    three = np.concatenate([planes[:, :, :1], gfp, planes[:, :, 1:]], axis=2)
    src = _ome_tiff(tmp_path / "gfp.ome.tif", three, ("Phase", "GFP", "DAPI"))
    sim = Path(__file__).parents[2] / "hardware_profiles" / "sim.yaml"
    text = sim.read_text(encoding="utf-8").replace(
        "    - {name: DAPI,",
        "    - {name: GFP, kind: fluorescence, light_source: LED 470, target: cytoplasm}\n"
        "    - {name: DAPI,",
    )
    profile = tmp_path / "sim-gfp.yaml"
    profile.write_text(text, encoding="utf-8")
    run = tmp_path / "replay"
    summary = run_replay(src, run, profile=str(profile))
    assert summary["fields_analysed"] == T * P
    cells = _cells(run)
    assert len(cells) >= T * P * 5
    assert cells == _cells(replayed["ome-tiff"][1])  # the same nuclei, tracks and states


def test_a_recording_cut_mid_write_replays_up_to_its_last_frame_and_says_so(replayed) -> None:
    summary, run = replayed["cut"]
    assert summary["frames_served"] == 9
    assert summary["frames_not_recorded"] == T * P * len(CHANNELS) - 9
    text = " ".join(summary["warnings"])
    assert "did not finish" in text
    assert "replaying its 9 logged frames" in text
    assert "not in the recording and were skipped" in text
    full = _cells(replayed["livescope"][1])
    cut = _cells(run)
    done = {(r[0], r[1]) for r in cut}
    assert len(done) == 5  # 4 whole fields and the phase frame of the fifth
    assert cut[:1]
    assert all(r in full for r in cut if (r[0], r[1]) != ("p0", "2"))


def test_a_ctc_folder_replays_through_the_command(tmp_path: Path) -> None:
    seq = shared_subfolder("ctc-Fluo-N2DH-GOWT1/01")
    short = tmp_path / "01"
    short.mkdir()
    for t in range(4):
        shutil.copy(seq / f"t{t:03d}.tif", short / f"t{t:03d}.tif")
    out = tmp_path / "replay"
    res = run_cli("replay", str(short), "--out", str(out), "--interval-s", "300", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert summary["format"] == "ctc"
    assert summary["frames_analysed"] == 4
    assert Path(summary["report"]).is_file()
    masks = sorted((out / "results" / "ctc" / "p0").glob("mask*.tif"))
    assert [m.name for m in masks] == [f"mask{t:03d}.tif" for t in range(4)]
    assert int(tifffile.imread(masks[0]).max()) >= 10  # GOWT1 frames hold ~20 nuclei
    # a valid CTC result: scored against itself, py-ctcmetrics accepts it (TRA 1)
    gt = tmp_path / "gt" / "TRA"
    gt.mkdir(parents=True)
    for m in masks:
        shutil.copy(m, gt / m.name.replace("mask", "man_track"))
    shutil.copy(masks[0].parent / "res_track.txt", gt / "man_track.txt")
    assert evaluate_tracking(masks[0].parent, gt.parent)["tra"] == pytest.approx(1.0)
    assert any("'Fluo'" in w for w in summary["warnings"]) is False  # CTC names its channel


def test_a_missing_or_unreadable_dataset_is_a_clear_error(tmp_path: Path) -> None:
    res = run_cli("replay", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--json")
    assert res.returncode == 2
    assert json.loads(res.stdout)["error"] == f"{tmp_path / 'nope'}: no such file or folder"
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00")
    res = run_cli("replay", str(bad), "--out", str(tmp_path / "o2"), "--json")
    assert res.returncode == 2
    assert json.loads(res.stdout)["error"].startswith(f"{bad}: not a readable TIFF")
    # frames of another size: refused before the run, not a frame lost mid-run
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for t, side in enumerate((64, 32)):
        tifffile.imwrite(mixed / f"t{t:03d}.tif", np.zeros((side, side), np.uint16))
    res = run_cli("replay", str(mixed), "--out", str(tmp_path / "o3"), "--json")
    assert res.returncode == 2, res.stderr
    assert json.loads(res.stdout)["error"] == (
        f"{mixed}: frame t001.tif is 32x32 px uint16, the first (t000.tif) 64x64 px uint16; "
        "a replay serves frames of one size and type"
    )


def test_a_worker_that_refuses_its_settings_fails_the_replay_at_once(tmp_path: Path) -> None:
    # 11 µm nuclei at 0.01 µm/px would be rescaled ~60x, and the stain engine's frames 30x:
    # the worker refuses (exit 2) as it warms up at the recording's pixel size. It is not
    # restarted over and over, and the replay does not wait out its gate per time point
    seq = tmp_path / "01"
    seq.mkdir()
    rng = np.random.default_rng(0)
    for t in range(3):
        tifffile.imwrite(seq / f"t{t:03d}.tif", rng.integers(0, 200, (128, 128), np.uint16))
    res = run_cli("replay", str(seq), "--out", str(tmp_path / "o"), "--pixel-size", "0.01",
                  "--nucleus-diameter-um", "11", "--json")  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    error = json.loads(res.stdout)["error"]
    # the worker's own reason, not just "see the log"
    assert "the frame's pixel size 0.01 µm" in error
    assert "refusing to rescale by more than 8x" in error
    assert error.startswith("the pipeline worker did not start")  # at once
    # the supervisor gave up on the first refusal (a restart would refuse again)
    failed = (tmp_path / "o" / "results" / "worker.failed").read_text(encoding="utf-8")
    assert "refusing to rescale by more than 8x" in failed


def test_a_replay_plan_with_a_misspelt_key_bad_rule_or_no_rules_is_refused_first(
    tmp_path: Path,
) -> None:
    seq = tmp_path / "01"
    seq.mkdir()
    tifffile.imwrite(seq / "t000.tif", np.zeros((64, 64), np.uint16))
    for name, text, message in (
        ("typo", "policy:\n  - {name: a, when: {division: {}}, do: {record: {}}}\n",
         "policy: unknown field"),
        ("rule", "policies:\n  - {name: a, when: {divison: {}}, do: {record: {}}}\n",
         "'when' must be one of"),
        # no policies: the user may think its acquisition drives the replay (it does not)
        ("none", "channels: [{config: GFP}]\ntime_plan: {interval: 1, loops: 2}\n",
         "has no policies: a replay takes only the policies of --plan"),
    ):  # fmt: skip
        plan = tmp_path / f"{name}.yaml"
        plan.write_text(text)
        out = tmp_path / f"out-{name}"
        res = run_cli("replay", str(seq), "--plan", str(plan), "--out", str(out), "--json")
        assert res.returncode == 2, res.stdout + res.stderr
        assert message in json.loads(res.stdout)["error"]
        assert not out.exists()  # refused before the output folder was made


def test_a_nucleus_size_without_a_pixel_size_is_warned_about(tmp_path: Path) -> None:
    seq = tmp_path / "01"
    seq.mkdir()
    for t in range(2):
        tifffile.imwrite(seq / f"t{t:03d}.tif", np.zeros((64, 64), np.uint16))
    res = run_cli("replay", str(seq), "--out", str(tmp_path / "o"), "--nucleus-diameter-um", "11",
                  "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    warnings = " ".join(json.loads(res.stdout)["warnings"])
    assert "states no pixel size" in warnings
    assert "pass --pixel-size" in warnings


def test_the_replay_profile_takes_the_recordings_frame_shape_and_pixel_size(
    tmp_path: Path,
) -> None:
    # the replay profile's 1024² px at 1 µm/px are placeholders: the guardrails' fields
    # (which positions overlap), the worker's warm-up and the bus take the recording's
    seq = tmp_path / "01"
    seq.mkdir()
    for t in range(2):
        tifffile.imwrite(seq / f"t{t:03d}.tif", np.zeros((64, 48), np.uint16))
    out = tmp_path / "o"
    res = run_cli("replay", str(seq), "--out", str(out), "--pixel-size", "0.5", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    prof = load_profile(out / "profile.yaml")
    assert prof.name == "replay"
    assert prof.camera.sensor_shape_px == (64, 48)
    assert prof.objective.pixel_size_um == 0.5
    assert prof.field_of_view_um == (32.0, 24.0)
    # a rig's profile is kept as given
    res = run_cli("replay", str(seq), "--out", str(tmp_path / "o2"), "--profile", "sim", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    assert load_profile(tmp_path / "o2" / "profile.yaml") == load_profile("sim")
    assert not any("pixel size" in w for w in json.loads(res.stdout)["warnings"])

    # (and where the recording says another pixel size, that the guardrails go by the rig's)
    def warnings(pixel_size: str) -> str:
        res = run_cli("replay", str(seq), "--out", str(tmp_path / f"o-{pixel_size}"), "--profile",
                      "sim", "--pixel-size", pixel_size, "--json")  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        return " ".join(json.loads(res.stdout)["warnings"])

    assert f"{seq}: its pixel size is 0.9 µm, profile 'sim'" in warnings("0.9")
    assert "pixel size" not in warnings("1.3")  # sim's 10x (0.65 µm) at binning 2
    assert "is 0.4875 µm (objective '40x' at binning 3), profile 'sim'" in warnings("0.4875")


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT as a POSIX terminal does")
def test_an_interrupted_replay_reports_what_it_served(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    seq = tmp_path / "01"
    seq.mkdir()
    for t in range(5):
        tifffile.imwrite(seq / f"t{t:03d}.tif", np.zeros((64, 64), np.uint16))
    out = tmp_path / "o"
    proc = subprocess.Popen(  # real time at 300 s apart: stopped after its first frame
        [sys.executable, "-m", "livescope", "replay", str(seq), "--out", str(out),
         "--interval-s", "300", "--speed", "1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not ((out / "frames.jsonl").is_file() and (out / "frames.jsonl").read_text()):
        assert time.monotonic() < deadline, "the replay did not start"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr[-2000:]
    summary = json.loads(stdout)
    assert (summary["ok"], summary["interrupted"]) == (False, True)
    assert summary["frames_served"] == summary["frames_analysed"] == 1
    assert summary["format"] == "ctc"  # (the replay's own keys, completed after the stop)
    assert Path(summary["report"]).is_file()
