"""``livescope engines list|check|build`` (review): broken engines, missing TensorRT, plan names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from livescope.cli._app import app
from livescope.schema import install_command

from ..conftest import ROOT, run_cli

SHIPPED_SEG = ROOT / "engines" / "segmentation" / "nuclei-unet"


def _livescope(*args: str, cwd: Path, pythonpath: Path | None = None, code: str = "") -> Any:
    """Run the CLI in a fresh interpreter: ``code`` first (e.g. hiding a module), then ``args``."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    script = f"{code}\nfrom livescope.cli import main\nmain()"
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=False,
    )  # fmt: skip


def _copy_engine(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(SHIPPED_SEG, folder)
    return folder


def test_engines_check_reports_each_engine_that_does_not_load_and_exits_1(
    tmp_path: Path,
) -> None:
    # a tampered ONNX stopped the whole check (exit 2, as a mistake in the command):
    # the engines named after it were never checked, and none was reported
    tampered = _copy_engine(tmp_path, "tampered")
    with (tampered / "model.onnx").open("ab") as f:
        f.write(b"\0")
    mismatched = _copy_engine(tmp_path, "mismatched")
    card = mismatched / "card.yaml"
    card.write_text(card.read_text().replace("name: image", "name: pixels"))
    res = run_cli("engines", "check", str(tampered), str(mismatched), "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] is False
    details = {r["engine"]: r["detail"] for r in out["results"] if r["status"] == "error"}
    assert "model.onnx has sha256" in details[str(tampered)]
    assert "changed or corrupted" in details[str(tampered)]
    assert "the card's input is 'pixels', the model's is 'image'" in details[str(mismatched)]


def test_engines_check_says_which_engines_failed_without_json(tmp_path: Path) -> None:
    tampered = _copy_engine(tmp_path, "tampered")
    with (tampered / "model.onnx").open("ab") as f:
        f.write(b"\0")
    res = run_cli("engines", "check", str(tampered))
    assert res.returncode == 1, res.stderr
    assert f"failed: {tampered} (exit 1)" in res.stderr


def test_engines_check_refuses_a_name_that_is_no_engine_before_any_work() -> None:
    res = run_cli("engines", "check", "nuclei-unet", "nuclei-unt", "--json")
    assert res.returncode == 2, res.stdout + res.stderr
    assert json.loads(res.stdout)["error"] == (
        "no engine 'nuclei-unt': not a folder with card.yaml, and not a shipped engine "
        "(shipped: cell-state, nuclei-stain, nuclei-unet)"
    )


def test_engines_list_lists_an_engine_whose_card_does_not_load(tmp_path: Path) -> None:
    # a card in engines/ that does not load (one added by hand) was a traceback, with
    # no engine listed and no JSON; the list is of the engines/ beside the package,
    # so the package is run from a copy beside a folder of our own
    shutil.copytree(ROOT / "livescope", tmp_path / "livescope",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    good = tmp_path / "engines" / "segmentation" / "nuclei-unet"
    good.mkdir(parents=True)
    shutil.copy(SHIPPED_SEG / "card.yaml", good / "card.yaml")
    bad = tmp_path / "engines" / "segmentation" / "mine"
    bad.mkdir()
    (bad / "card.yaml").write_text("name: mine\n")
    res = _livescope("engines", "list", "--json", cwd=tmp_path, pythonpath=tmp_path)
    assert res.returncode == 0, res.stderr
    engines = {e["name"]: e for e in json.loads(res.stdout)["engines"]}
    assert engines["nuclei-unet"]["task"] == "segmentation"
    assert engines["nuclei-unet"]["folder"] == str(good)
    assert engines["mine"]["task"] is None
    assert "task: required field is missing" in engines["mine"]["error"]
    plain = _livescope("engines", "list", cwd=tmp_path, pythonpath=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "mine: engine card" in plain.stderr
    assert f"nuclei-unet (segmentation): {good}" in plain.stderr


@pytest.mark.skipif(find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_engines_build_without_tensorrt_says_what_to_install() -> None:
    res = run_cli("engines", "build", "nuclei-unet", "--json")
    assert res.returncode == 2, res.stdout + res.stderr
    assert json.loads(res.stdout)["error"].startswith(
        "engines build --backend tensorrt: tensorrt is not installed; install it with: "
        + install_command("gpu")
    )


def test_ahead_of_time_build_without_tensorrt_rtx_says_what_to_install() -> None:
    # (a module set to None in sys.modules is one Python cannot find: not installed)
    res = _livescope("engines", "build", "nuclei-unet", "--backend", "tensorrt-rtx",
                     "--compute-capability", "SM89", "--json", cwd=ROOT,
                     code="import sys; sys.modules['tensorrt_rtx'] = None")  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert install_command("rtx") in json.loads(res.stdout)["error"]


def test_ahead_of_time_build_with_a_tensorrt_rtx_that_fails_to_load(tmp_path: Path) -> None:
    # installed, but a library it needs is missing: a traceback, and no JSON
    (tmp_path / "tensorrt_rtx.py").write_text(
        'raise OSError("libtensorrt_rtx.so.1: cannot open shared object file")\n'
    )
    res = _livescope("engines", "build", "nuclei-unet", "--backend", "tensorrt-rtx",
                     "--compute-capability", "SM89", "--json", cwd=ROOT,
                     pythonpath=tmp_path)  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert json.loads(res.stdout)["error"].startswith(
        "tensorrt_rtx is installed but fails to load (OSError: libtensorrt_rtx.so.1: cannot "
        "open shared object file)"
    )


def test_ahead_of_time_plans_for_two_profiles_are_two_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # both went to nuclei-unet-tensorrt-rtx-aot-SM89.plan: the second build replaced
    # the first, whose JSON still named that file
    pytest.importorskip("tensorrt_rtx")
    monkeypatch.setenv("LIVESCOPE_CACHE", str(tmp_path))
    args = ("engines", "build", "nuclei-unet", "--backend", "tensorrt-rtx",
            "--compute-capability", "SM89", "--json")  # fmt: skip
    plans = []
    for extra in ((), ("--profile", "sim")):  # (in-process: two interpreters took ~5 s)
        res = CliRunner().invoke(app, [*args, *extra])
        assert res.exit_code == 0, res.stdout + res.stderr
        plans.append(json.loads(res.stdout))
    assert plans[0]["plan"] != plans[1]["plan"]
    for p in plans:
        assert Path(p["plan"]).stat().st_size == p["bytes"]


def test_engines_build_says_what_it_builds_before_a_long_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorrt_rtx")
    monkeypatch.setenv("LIVESCOPE_CACHE", str(tmp_path))
    res = run_cli("engines", "build", "nuclei-unet", "--backend", "tensorrt-rtx",
                  "--compute-capability", "SM89")  # fmt: skip
    assert res.returncode == 0, res.stderr
    said = res.stderr.index("building nuclei-unet's tensorrt-rtx plan ahead of time for SM89")
    assert said < res.stderr.index("plan: ")


def test_eval_stain_says_which_pixel_size_it_assumed(tmp_path: Path) -> None:
    # (eval states said so; eval stain took the card's pixel size silently)
    import numpy as np
    import tifffile

    rng = np.random.default_rng(0)
    for name in ("phase", "dapi"):
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "a.tif", rng.integers(100, 4000, (96, 96), np.uint16))
    args = ("eval", "stain", "--engine", "nuclei-stain", "--input", str(tmp_path / "phase"),
            "--target", str(tmp_path / "dapi"), "--json")  # fmt: skip
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "no --pixel-size: the input is taken to be at the engine's" in res.stderr
    res = run_cli(*args, "--pixel-size", "0.65")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "no --pixel-size" not in res.stderr
