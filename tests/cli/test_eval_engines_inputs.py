"""``livescope eval``, ``engines`` and ``track`` (review): inputs checked first, progress said."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from livescope.cli._app import app


def _no_engine(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("an engine was loaded before the command's inputs were checked")


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command loads an engine (its inputs are refused before)."""
    for name in ("Engine", "SegmentationEngine", "StainEngine", "CellStateEngine"):
        monkeypatch.setattr(f"livescope.inference.{name}", _no_engine)


def _refused(args: list[str]) -> tuple[str, str]:
    """Run a command that must be refused (exit 2): its JSON error, and its stderr."""
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 2, res.stdout + res.stderr
    return json.loads(res.stdout)["error"], res.stderr


def _frames(folder: Path, names: list[str], *, labels: bool = False) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        if labels:
            img = np.zeros((64, 64), np.uint16)
            img[10:20, 10:20], img[30:45, 30:40] = 1, 2
        else:  # (an intensity image: neighbouring pixels differ almost everywhere)
            img = rng.integers(100, 4000, (64, 64)).astype(np.uint16)
        tifffile.imwrite(folder / name, img)
    return folder


@pytest.mark.parametrize(
    ("command", "option", "value", "message"),
    [
        pytest.param(["eval", "stain", "--engine", "nuclei-stain", "--input", "{d}", "--target",
                      "{d}"], "--pixel-size", "-1", "pixel size must be > 0 µm", id="stain-neg"),
        pytest.param(["eval", "stain", "--engine", "nuclei-stain", "--input", "{d}", "--target",
                      "{d}"], "--pixel-size", "inf", "must be a finite number", id="stain-inf"),
        pytest.param(["eval", "states", "--engine", "cell-state", "--simulated", "100"],
                     "--pixel-size", "0", "pixel size must be > 0 µm", id="states-zero"),
        pytest.param(["eval", "states", "--engine", "cell-state", "--simulated", "100"],
                     "--pixel-size", "nan", "must be a finite number", id="states-nan"),
        pytest.param(["eval", "seg", "--engine", "nuclei-unet", "--images", "{d}", "--labels",
                      "{d}"], "--diameter", "inf", "must be a finite number", id="seg-inf"),
        pytest.param(["eval", "seg", "--engine", "nuclei-unet", "--images", "{d}", "--labels",
                      "{d}"], "--diameter", "-3", "object diameter must be > 0 px", id="seg-neg"),
        pytest.param(["track", "{d}", "--out", "{d}/out"], "--diameter", "inf",
                     "must be a finite number", id="track-inf"),
    ],
)  # fmt: skip
def test_a_size_option_out_of_range_is_refused_naming_it_before_an_engine_loads(
    tmp_path: Path, no_engine: None, command: list[str], option: str, value: str, message: str
) -> None:
    # --pixel-size -1 was refused by the engine, once loaded, as an image's fault ("a0.tif:
    # engine nuclei-stain: pixel size must be > 0 µm"); --diameter inf as "must be > 0 px"
    folder = _frames(tmp_path / "seq", ["t000.tif", "t001.tif"])
    args = [a.replace("{d}", str(folder)) for a in command]
    error, _ = _refused([*args, option, value])
    assert error.startswith(f"{option} {value}: ")
    assert message in error


def test_eval_states_says_ctc_frames_are_named_tTTT_and_what_it_found(
    tmp_path: Path, no_engine: None
) -> None:
    # "imgs has 0 frames, gt annotates 3": nothing said of how frames are found
    images = _frames(tmp_path / "imgs", ["a0.tif", "a1.tif", "a2.tif", "a3.tif"])
    (tmp_path / "gt").mkdir()
    error, _ = _refused(["eval", "states", "--engine", "cell-state", "--images", str(images),
                         "--gt", str(tmp_path / "gt")])  # fmt: skip
    assert error.startswith(f"--images {images}: no frame named tTTT.tif")
    assert "it holds a0.tif, a1.tif, a2.tif, …" in error


@pytest.mark.parametrize(
    ("command", "option"),
    [
        pytest.param(["eval", "stain", "--engine", "nuclei-stain", "--input", "{missing}",
                      "--target", "{d}"], "--input", id="stain-input"),
        pytest.param(["eval", "stain", "--engine", "nuclei-stain", "--input", "{d}",
                      "--target", "{missing}"], "--target", id="stain-target"),
        pytest.param(["eval", "seg", "--engine", "nuclei-unet", "--images", "{missing}",
                      "--labels", "{d}"], "--images", id="seg-images"),
        pytest.param(["eval", "seg", "--engine", "classical", "--images", "{d}",
                      "--labels", "{missing}"], "--labels", id="seg-labels"),
    ],
)  # fmt: skip
def test_a_missing_input_is_named_by_its_option_before_an_engine_loads(
    tmp_path: Path, no_engine: None, command: list[str], option: str
) -> None:
    # "nosuch does not exist", after the engine had loaded and warned of --pixel-size
    folder = _frames(tmp_path / "d", ["a.tif"])
    missing = tmp_path / "nosuch"
    args = [a.replace("{d}", str(folder)).replace("{missing}", str(missing)) for a in command]
    error, err = _refused(args)
    assert error == f"{option} {missing}: does not exist"
    assert "no --pixel-size" not in err


def test_eval_seg_with_swapped_folders_names_the_label_file_by_its_path(
    tmp_path: Path, no_engine: None
) -> None:
    # ("a.tif: this looks like an intensity image ...": which folder's a.tif?)
    labels = _frames(tmp_path / "labels", ["a.tif"], labels=True)
    images = _frames(tmp_path / "images", ["a.tif"])
    error, _ = _refused(["eval", "seg", "--engine", "nuclei-unet", "--images", str(labels),
                         "--labels", str(images)])  # fmt: skip
    assert error.startswith(f"{images / 'a.tif'}: this looks like an intensity image")
    assert "were --images and --labels swapped?" in error


def test_eval_stain_simulated_shows_its_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    # seconds a field and nothing said (45 s for the help's own 100,101,102), where
    # eval states --simulated shows a bar
    calls: list[dict[str, Any]] = []

    def score(engine: Any, views: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        kwargs["progress"](1, 1)
        return {"pearson": 0.9}

    monkeypatch.setattr("livescope.pipeline.views_for_seeds", lambda seeds, n: [])
    monkeypatch.setattr("livescope.pipeline.score_stain_simulated", score)
    res = CliRunner().invoke(
        app, ["eval", "stain", "--engine", "nuclei-stain", "--simulated", "100", "--json"]
    )
    assert res.exit_code == 0, res.stdout + res.stderr
    assert callable(calls[0].get("progress"))
    assert json.loads(res.stdout)["simulated_seeds"] == [100]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(["--compute-capability", "banana", "--compute-capability", "SM89"],
                     id="unknown-capability"),
        pytest.param([], id="no-gpu"),
    ],
)  # fmt: skip
def test_engines_build_refuses_what_it_cannot_build_before_saying_building(
    extra: list[str],
) -> None:
    # "building nuclei-unet's tensorrt-rtx plan ... minutes", then the refusal
    pytest.importorskip("tensorrt_rtx")
    from livescope.inference import TensorRTRTXBackend

    if not extra and TensorRTRTXBackend().available()[0]:
        pytest.skip("TensorRT-RTX can build on this machine's GPU")
    args = ["engines", "build", "nuclei-unet", "--backend", "tensorrt-rtx", *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "building" not in res.stderr
    if extra:
        assert "--compute-capability banana: unknown to tensorrt_rtx" in res.stderr
    else:
        assert "cannot run here" in res.stderr


def test_engines_check_says_each_result_as_it_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    # nothing was said until every engine and backend was checked (minutes where TensorRT
    # builds plans); with --json, stdout stays the one JSON object
    from livescope.cli import _engines
    from livescope.inference import OnnxRuntimeBackend, TensorRTRTXBackend

    events: list[str] = []

    class Recording(OnnxRuntimeBackend):
        def load(self, *args: Any, **kwargs: Any) -> Any:
            events.append("load")
            return super().load(*args, **kwargs)

    monkeypatch.setattr(
        "livescope.inference.backend_status",
        lambda: [(Recording(), True, "first"), (Recording(), True, "second")],
    )
    monkeypatch.setattr(TensorRTRTXBackend, "installed", lambda self: False)
    monkeypatch.setattr(_engines.stderr, "print", lambda text, **kw: events.append(str(text)))
    res = CliRunner().invoke(app, ["engines", "check", "cell-state", "--json"])
    assert res.exit_code == 0, res.stdout + res.stderr
    assert [r["detail"] for r in json.loads(res.stdout)["results"]] == ["first", "second"]
    assert events == ["load", "cell-state / onnxruntime: ok 0.0 first",
                      "load", "cell-state / onnxruntime: ok 0.0 second"]  # fmt: skip
