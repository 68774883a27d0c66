"""Where engines and their plans live: the plan cache per OS, plan file names, engine names.

Also the precision a TensorRT plan is really built in (said when it is not the one
asked), checked apart from TensorRT, and with TensorRT-RTX where it is installed.
"""

from __future__ import annotations

import json
import logging
import sys
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from livescope.cli._app import app
from livescope.inference import _backends as B
from livescope.inference import _engine as E
from livescope.inference import builtin_engines
from livescope.schema import EngineCard

needs_rtx = pytest.mark.skipif(find_spec("tensorrt_rtx") is None, reason="no tensorrt-rtx here")


def _card(name: str) -> EngineCard:
    return EngineCard.from_file(builtin_engines()[name] / "card.yaml")


# ---------------------------------------------------------------- the plan cache, per OS


@pytest.mark.parametrize(
    ("platform", "env", "where"),
    [
        pytest.param("win32", {"LOCALAPPDATA": "lad"}, "lad/livescope", id="windows"),
        pytest.param("win32", {}, "home/AppData/Local/livescope", id="windows-no-localappdata"),
        pytest.param("darwin", {"XDG_CACHE_HOME": "x"}, "home/Library/Caches/livescope", id="mac"),
        pytest.param("linux", {"XDG_CACHE_HOME": "xdg"}, "xdg/livescope", id="linux-xdg"),
        pytest.param("linux", {}, "home/.cache/livescope", id="linux"),
        pytest.param("linux", {"XDG_CACHE_HOME": "rel/x"}, "home/.cache/livescope", id="rel-xdg"),
        pytest.param("freebsd14", {"XDG_CACHE_HOME": "xdg"}, "xdg/livescope", id="other-unix"),
    ],
)
def test_plans_are_cached_in_the_os_s_cache_folder(
    platform: str,
    env: dict[str, str],
    where: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (~/.cache/livescope on every OS: no Windows or macOS tool knew it for a cache)
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("LIVESCOPE_CACHE", "LOCALAPPDATA", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():  # (absolute in tmp_path, but for a relative one)
        monkeypatch.setenv(var, value if value.startswith("rel") else str(tmp_path / value))
    assert B.plan_cache_dir() == tmp_path / where / "plans"
    monkeypatch.setenv("LIVESCOPE_CACHE", str(tmp_path / "mine"))  # (it wins everywhere)
    assert B.plan_cache_dir() == tmp_path / "mine" / "plans"


# ---------------------------------------------------------------- plan file names


def test_long_plan_file_names_are_bounded_and_stay_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an engine's name is as long as its card says: under a deep Windows profile the
    # plan's path passed 260 characters, and TensorRT's error did not say why
    monkeypatch.setenv("LIVESCOPE_CACHE", str(tmp_path))
    key = "0123456789abcdef" * 2
    long_a, long_b = "nuclei-" + "a" * 300 + "-v1", "nuclei-" + "a" * 300 + "-v2"
    names = {
        B.plan_file(n, "tensorrt", key).name
        for n in (long_a, long_b, long_a + "x", "nuclei-unet")
    } | {B.plan_file(long_a, "tensorrt-rtx-aot", key[:16], "SM75", "SM80", "SM86", "SM89",
                     "SM120", "SM121").name}  # fmt: skip
    assert len(names) == 5  # (each its own file)
    for name in names:
        assert len(name) <= 120, name
        assert name.startswith("nuclei-"), name
        assert name.endswith(".plan"), name
    assert f"nuclei-unet-tensorrt-{key}.plan" in names  # (a short name is as it was)
    again = B.plan_file(long_a, "tensorrt", key)  # (the same plan is found again)
    assert again == B.plan_file(long_a, "tensorrt", key)
    assert again.parent == B.plan_cache_dir()
    timing = B.plan_file("timing", "tensorrt", "10.13", "x" * 200, suffix=".cache")
    assert timing.suffix == ".cache"
    assert len(timing.name) <= 120


# ---------------------------------------------------------------- the precision built


@pytest.mark.parametrize(
    ("library", "version", "asked", "graph", "built"),
    [
        pytest.param("tensorrt_rtx", "1.7.1.116", "fp16", "fp32", "fp32", id="rtx-fp16-of-fp32"),
        pytest.param("tensorrt", "11.0.0", "fp16", "fp32", "fp32", id="trt11-fp16-of-fp32"),
        pytest.param("tensorrt_rtx", "1.7.1", "fp32", "fp16", "fp16", id="rtx-fp32-of-fp16"),
        pytest.param("tensorrt", "10.13.3", "fp16", "fp32", "fp16", id="trt10-flag"),
        pytest.param("tensorrt_rtx", "1.7.1", "fp32", "fp32", "fp32", id="rtx-as-asked"),
        pytest.param("tensorrt", "11.0.0", "fp16", "fp16", "fp16", id="trt11-as-asked"),
    ],
)
def test_a_plan_in_another_precision_than_asked_is_said(
    library: str,
    version: str,
    asked: str,
    graph: str,
    built: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # TensorRT-RTX (and TensorRT 11) take precision from the ONNX graph: fp16 asked
    # of an fp32 model gave an fp32 plan without a word
    card = _card("nuclei-unet")
    with caplog.at_level(logging.WARNING, logger="livescope"):
        assert B._plan_precision(card, library, version, asked, graph) == built
    if built == asked:
        assert not caplog.records
    else:
        assert len(caplog.records) == 1
        said = caplog.records[0].getMessage()
        assert said.startswith(
            f"engine nuclei-unet: {library} {version} builds its plan in {built}, not the "
            f"{asked} asked"
        ), said
        assert f"export the model in {asked}" in said


@needs_rtx
def test_an_fp16_ahead_of_time_build_of_an_fp32_model_says_it_is_fp32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVESCOPE_CACHE", str(tmp_path))
    res = CliRunner().invoke(app, ["engines", "build", "cell-state", "--backend", "tensorrt-rtx",
                                   "--compute-capability", "SM89", "--precision", "fp16",
                                   "--json"])  # fmt: skip
    assert res.exit_code == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["precision"] == "fp32"
    assert "engine cell-state: tensorrt_rtx " in res.stderr, res.stderr
    assert "builds its plan in fp32, not the fp16 asked" in res.stderr, res.stderr


# ---------------------------------------------------------------- engine names


def _engine_folder(root: Path, task: str, name: str) -> Path:
    folder = root / task / name
    folder.mkdir(parents=True)
    (folder / "card.yaml").write_text(f"name: {name}\n")
    return folder


def test_two_tasks_engines_of_one_name_are_refused_naming_both(tmp_path: Path) -> None:
    # keyed by folder name only, the second engine silently took the first's place
    first = _engine_folder(tmp_path, "segmentation", "nuclei")
    second = _engine_folder(tmp_path, "virtual_stain", "nuclei")
    cells = _engine_folder(tmp_path, "classification", "cells")
    with pytest.raises(E.EngineError) as info:
        E._engines_in(tmp_path)
    assert str(info.value).startswith(f"two engines are named 'nuclei': {first} and {second}")
    (second / "card.yaml").unlink()  # (one of each name: each found by it)
    assert E._engines_in(tmp_path) == {"nuclei": first, "cells": cells}


def test_every_shipped_engine_is_found_by_its_own_name() -> None:
    shipped = builtin_engines()
    (root,) = {folder.parent.parent for folder in shipped.values()}
    assert len(shipped) == len(list(root.glob("*/*/card.yaml"))) >= 3
    for name, folder in shipped.items():
        assert folder.name == name


def test_engines_list_names_both_engines_of_one_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (an installed package's engines are in livescope/_engines: that root, made here)
    root = tmp_path / "_engines"
    first = _engine_folder(root, "segmentation", "nuclei")
    second = _engine_folder(root, "virtual_stain", "nuclei")
    monkeypatch.setattr(E, "resources", SimpleNamespace(files=lambda package: tmp_path))
    res = CliRunner().invoke(app, ["engines", "list", "--json"])
    assert res.exit_code == 2, res.stdout + res.stderr
    assert json.loads(res.stdout)["error"].startswith(
        f"two engines are named 'nuclei': {first} and {second}"
    )
