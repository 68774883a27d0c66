"""``livescope worker --config`` refuses the analysis options its config file sets.

The config's values won: an option given beside it (``--seg ''``) was ignored, and
the worker ran what the user had not asked for, exiting 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livescope.schema import load_profile
from livescope.scope import demo_sequence, run_simulated

from ..conftest import run_cli

# (only a segmentation engine: the quickest analysis of a recorded run)
_CONFIG = {"segmenter": "nuclei-unet", "stain": None, "states": None}


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, Path]:
    """Return an ended run of one field, recorded without analysis, and a worker config."""
    prof = load_profile("sim").with_square_sensor(64)
    rec = tmp_path / "rec"
    run_simulated(prof, demo_sequence(prof, timepoints=1, positions=1), rec, seed=1)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(_CONFIG), encoding="utf-8")
    return rec, cfg


def _refuse(rec: Path, cfg: Path, *options: str) -> str:
    """Run a worker on ``rec`` with ``--config cfg`` and ``options``; return its refusal."""
    res = run_cli("worker", str(rec), "--config", str(cfg), *options, "--json", timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "waiting" not in res.stderr
    assert not (rec / "results").exists()  # (refused before it analysed anything)
    error: str = json.loads(res.stdout)["error"]
    return error


@pytest.mark.parametrize(
    ("option", "value", "key"),
    [
        pytest.param("--seg", "", "segmenter", id="seg-none"),
        pytest.param("--stain", "nuclei-stain", "stain", id="stain"),
        pytest.param("--states", "cell-state", "states", id="states"),
        pytest.param("--plan", "plan.yaml", "plan", id="plan"),
        pytest.param("--profile", "sim", "profile", id="profile"),
        pytest.param("--backend", "onnxruntime", "backend", id="backend"),
        pytest.param("--nucleus-diameter-um", "4", "nucleus_diameter_um", id="diameter"),
        pytest.param("--maxlen", "3", "maxlen", id="maxlen"),
        pytest.param("--idle-s", "7", "idle_s", id="idle"),
    ],
)
def test_an_analysis_option_given_with_config_is_refused_naming_it(
    recorded: tuple[Path, Path], option: str, value: str, key: str
) -> None:
    rec, cfg = recorded
    assert _refuse(rec, cfg, option, value) == (
        f"{option}: --config {cfg} sets it (its {key}); put it in the config file, "
        "or leave out --config"
    )


def test_analysis_options_given_with_config_are_all_named(recorded: tuple[Path, Path]) -> None:
    # (also when given with the value the config has, or the option's default)
    rec, cfg = recorded
    assert _refuse(rec, cfg, "--maxlen", "16", "--seg", "nuclei-unet", "--idle-s", "0") == (
        f"--seg, --maxlen and --idle-s: --config {cfg} sets them (its segmenter, maxlen, "
        "idle_s); put them in the config file, or leave out --config"
    )


def test_a_worker_with_config_and_its_other_options_runs_the_configs_engines(
    recorded: tuple[Path, Path],
) -> None:
    # options left out, and those the config cannot set (given or not), are no conflict
    rec, cfg = recorded
    res = run_cli("worker", str(rec), "--config", str(cfg), "--analyse", "--policy", "every",
                  "--json", timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert list(json.loads(res.stdout)["engines"]) == ["nuclei-unet"]
