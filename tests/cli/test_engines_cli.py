"""``livescope engines list|check`` over every shipped engine (segmentation, stain, states)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import run_cli

SHIPPED = {"nuclei-unet": "segmentation", "nuclei-stain": "virtual_stain",
           "cell-state": "classification"}  # fmt: skip


def test_engines_list_shows_every_shipped_engine() -> None:
    p = run_cli("engines", "list", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert {e["name"]: e["task"] for e in out["engines"]} == SHIPPED


@pytest.mark.slow
def test_engines_check_runs_each_engine_on_its_own_kind_of_input() -> None:
    p = run_cli("engines", "check", "--json")
    out = json.loads(p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    assert out["ok"] is True
    ran = {(r["engine"], r["backend"]) for r in out["results"] if r["status"] == "ok"}
    assert {(name, "onnxruntime") for name in SHIPPED} <= ran
    frame_engines = {n for n, task in SHIPPED.items() if task != "classification"}
    assert {(n, "onnxruntime (frame of any size)") for n in frame_engines} <= ran


def test_command_logging_follows_stderr_when_it_is_swapped_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a command run in-process (a test runner, a notebook) logs to the stderr it was
    # given; once that is closed and the caller's own is back, later warnings go there,
    # not to the closed file ("--- Logging error ---")
    import io
    import logging

    from livescope.cli._common import setup_logging

    during, after = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", during)
    setup_logging()
    logging.getLogger("livescope.test").warning("while the command runs")
    during.close()
    monkeypatch.setattr("sys.stderr", after)
    logging.getLogger("livescope.test").warning("after it")
    assert after.getvalue() == "WARNING livescope.test: after it\n"


def test_json_output_is_strict_json_even_with_nan(capsys: pytest.CaptureFixture[str]) -> None:
    from livescope.cli._common import emit

    emit({"pearson": float("nan"), "ms": [1.5, float("inf")], "nested": {"r": -float("inf")}})
    out = capsys.readouterr().out

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in JSON output")

    assert json.loads(out, parse_constant=refuse) == {
        "pearson": None, "ms": [1.5, None], "nested": {"r": None}
    }  # fmt: skip


def test_eval_stain_refuses_no_seeds_and_no_views() -> None:
    for args, message in ((("--simulated", ""), "names no seed"),
                          (("--simulated", "100", "--views", "0"), "--views")):  # fmt: skip
        p = run_cli("eval", "stain", "--engine", "nuclei-stain", *args, "--json")
        assert p.returncode == 2, p.stdout
        assert message in p.stdout + p.stderr


def test_eval_stain_segments_only_simulated_fields_with_a_segmentation_engine() -> None:
    for args, message in (
        (("--simulated", "100", "--segment-with", "cell-state"),
         "--segment-with cell-state: it is a classification engine, not a segmentation engine"),
        (("--input", "x.tif", "--target", "y.tif", "--segment-with", "nuclei-unet"),
         "--segment-with scores against the simulator's nuclei: give --simulated SEEDS"),
    ):  # fmt: skip
        p = run_cli("eval", "stain", "--engine", "nuclei-stain", *args, "--json")
        assert p.returncode == 2, p.stdout
        assert json.loads(p.stdout)["error"].startswith(message)


def test_usage_errors_with_json_still_print_one_json_object() -> None:
    for args, message in (
        (("eval", "seg", "--engine", "nuclei-unet"), "Missing option '--images'"),
        (("eval", "stain", "--engine", "nuclei-stain", "--views", "x"), "'--views'"),
        (("no-such-command",), "No such command"),
    ):
        p = run_cli(*args, "--json")
        assert p.returncode == 2, p.stdout + p.stderr
        out = json.loads(p.stdout)
        assert out["ok"] is False
        assert message in out["error"]
        assert message in p.stderr  # the usual usage message too
    ok = run_cli("engines", "list", "--json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["engines"]


def test_engines_build_refuses_an_unknown_precision_on_every_path() -> None:
    # the ahead-of-time build takes no precision of its own: it is checked all the same
    for extra in ((), ("--backend", "tensorrt-rtx", "--compute-capability", "SM89")):
        res = run_cli("engines", "build", "nuclei-unet", "--precision", "fp64", *extra, "--json")
        assert res.returncode == 2, res.stderr
        assert json.loads(res.stdout)["error"] == (
            "engine nuclei-unet: precision must be fp32 or fp16, not 'fp64'"
        )


def test_engine_commands_name_each_mistake(tmp_path: Path) -> None:
    import numpy as np
    import tifffile

    frame = tmp_path / "f.tif"
    tifffile.imwrite(frame, np.zeros((64, 64), np.uint16))
    target = tmp_path / "g.tif"  # (not the input itself: that is refused)
    tifffile.imwrite(target, np.zeros((64, 64), np.uint16))
    rgb = tmp_path / "rgb.tif"
    colour = np.zeros((64, 64, 3), np.uint8)
    colour[..., 0], colour[..., 1] = 10, 20  # (two channels with signal, not grey)
    tifffile.imwrite(rgb, colour)
    stain = ("eval", "stain", "--engine", "nuclei-stain", "--input", str(frame), "--target")
    for args, message in (
        (("engines", "build", "nuclei-unet", "--backend", "torch"),
         "engines build makes TensorRT plans: --backend tensorrt or tensorrt-rtx, not 'torch'"),
        (("engines", "build", "nuclei-unet", "--compute-capability", "SM89"),
         "--compute-capability is for tensorrt-rtx's ahead-of-time build"),
        (("eval", "states", "--engine", "cell-state", "--simulated", "100", "--images",
          str(tmp_path), "--gt", str(tmp_path)), "give --simulated SEEDS, or --images and --gt, "
         "not both"),
        (("eval", "states", "--engine", "cell-state", "--images", str(tmp_path / "nope"), "--gt",
          str(tmp_path)), f"--images {tmp_path / 'nope'} does not exist or is not a folder"),
        ((*stain, str(rgb)), "rgb.tif: the image is (64, 64, 3), not one 2-D plane"),
        (("eval", "seg", "--engine", "classical", "--images", str(tmp_path), "--labels",
          str(tmp_path), "--diameter", "12"), "--diameter 12.0: the classical pipeline runs no "
         "engine"),
        (("eval", "seg", "--engine", "nuclei-unet", "--images", str(tmp_path), "--labels",
          str(tmp_path), "--diameter", "0"), "object diameter must be > 0 px"),
        ((*stain, str(target), "--crop", "0:100,0:64"),
         "crop rows 0:100 reach past the 64x64 frame f.tif (rows 0:64)"),
        ((*stain, str(target), "--crop", "-5:10,0:64"),
         "crop '-5:10,0:64': bounds are pixel indices from 0, not negative"),
    ):  # fmt: skip
        p = run_cli(*args, "--json")
        assert p.returncode == 2, p.stdout + p.stderr
        assert "Traceback" not in p.stderr
        assert message in json.loads(p.stdout)["error"], args


def test_an_unknown_backend_from_the_environment_says_where_it_came_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from livescope.inference import BackendUnavailable, select_backend

    monkeypatch.setenv("LIVESCOPE_BACKEND", "bogus")
    with pytest.raises(BackendUnavailable, match="'bogus' \\(from the LIVESCOPE_BACKEND"):
        select_backend()
    with pytest.raises(BackendUnavailable, match="unknown backend 'nope'; known"):
        select_backend("nope")


def test_eval_states_on_a_ctc_sequence_says_which_pixel_size_it_assumed(tmp_path: Path) -> None:
    import numpy as np
    import tifffile

    from livescope.record import CtcTrack, write_ctc

    yy, xx = np.mgrid[:64, :64]
    frames = [((yy - 32) ** 2 + (xx - 20 - 2 * t) ** 2 <= 49).astype(np.uint16) for t in range(3)]
    write_ctc(tmp_path / "gt", frames, [CtcTrack(1, 0, 2, 0)], kind="gt")
    (tmp_path / "images").mkdir()
    for t, lab in enumerate(frames):
        tifffile.imwrite(tmp_path / "images" / f"t{t:03d}.tif", (lab * 900 + 100).astype(np.uint16))
    args = ("eval", "states", "--engine", "cell-state", "--images", str(tmp_path / "images"),
            "--gt", str(tmp_path / "gt"), "--json")  # fmt: skip
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "no --pixel-size: the images are taken to be at the classifier's" in res.stderr
    assert json.loads(res.stdout)["pixel_size_um"] is None
    res = run_cli(*args, "--pixel-size", "0.4")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "no --pixel-size" not in res.stderr
    assert json.loads(res.stdout)["pixel_size_um"] == 0.4


def test_engines_build_makes_by_default_the_plan_the_worker_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the pipeline worker loads its engines in fp32 for any frame's tiles; the build
    # made fp16 plans for the profile's sensor tiles: another key, never used, and the
    # worker built its own on its first run (minutes on a rig's GPU)
    pytest.importorskip("tensorrt_rtx")
    monkeypatch.setenv("LIVESCOPE_CACHE", str(tmp_path))
    args = ("engines", "build", "nuclei-unet", "--backend", "tensorrt-rtx",
            "--compute-capability", "SM89", "--json")  # fmt: skip
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["precision"] == "fp32"
    assert out["tile_shapes"] == "any"  # (the worker's profile: every tile Engine can make)
    sized = json.loads(run_cli(*args[:-1], "--profile", "sim", "--json").stdout)
    assert sized["tile_shapes"] == [[512, 512]]
