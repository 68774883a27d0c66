"""A rig profile's ``micromanager_config`` read beside the profile; ``--seed`` on a rig."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from livescope.schema import LivescopeError, builtin_profile_path, load_profile
from livescope.scope import check_micromanager_config
from tests.conftest import run_cli

SHIPPED_CFG = "C:/Program Files/Micro-Manager-2.0/Ti2_Flash4_Spectra.cfg"


def _rig(folder: Path, cfg: str) -> Path:
    """Write the shipped widefield profile into ``folder`` with ``micromanager_config: cfg``."""
    text = builtin_profile_path("widefield-2048-scmos").read_text(encoding="utf-8")
    assert SHIPPED_CFG in text
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rig.yaml"
    path.write_text(text.replace(SHIPPED_CFG, cfg), encoding="utf-8")
    return path


def test_a_relative_config_is_read_beside_the_profile_not_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--profile rig/rig.yaml` with `micromanager_config: rig.cfg` beside it: "not found",
    # as it was looked for in the folder the command ran from
    _rig(tmp_path / "rig", "configs/rig.cfg")
    (tmp_path / "rig" / "configs").mkdir()
    (tmp_path / "rig" / "configs" / "rig.cfg").write_text("# empty\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    profile = load_profile(Path("rig") / "rig.yaml")
    expected = tmp_path / "rig" / "configs" / "rig.cfg"
    assert profile.micromanager_config == expected
    assert profile.micromanager_config.is_absolute()
    check_micromanager_config(profile)  # found: nothing raised
    # a derived copy keeps it, and so does the run's copy of the profile read back
    assert profile.replace(description="x").micromanager_config == expected
    copy = tmp_path / "run" / "profile.yaml"
    copy.parent.mkdir()
    copy.write_text(yaml.safe_dump(profile.model_dump(mode="json")), encoding="utf-8")
    assert load_profile(copy).micromanager_config == expected


@pytest.mark.parametrize(
    "cfg",
    [
        pytest.param("D:/rigs/ti2.cfg", id="windows-drive"),
        pytest.param("D:\\rigs\\ti2.cfg", id="windows-backslashes"),
        pytest.param("\\\\scope-pc\\mm\\ti2.cfg", id="windows-share"),
        pytest.param("/opt/micro-manager/ti2.cfg", id="posix-absolute"),
    ],
)
def test_an_absolute_config_is_kept_as_written_on_every_platform(tmp_path: Path, cfg: str) -> None:
    # (a Windows drive path is not absolute to Linux's pathlib: it must not be put
    # under the profile's folder there)
    assert str(load_profile(_rig(tmp_path, cfg)).micromanager_config) == cfg


def test_a_missing_config_is_named_by_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the error said "rig.cfg", without the folder it was looked for in
    monkeypatch.chdir(tmp_path)
    profile = load_profile(_rig(Path("rig"), "rig.cfg"))
    with pytest.raises(LivescopeError) as err:
        check_micromanager_config(profile)
    assert str(err.value) == (
        f"Micro-Manager config {tmp_path / 'rig' / 'rig.cfg'} (micromanager_config) not found"
    )
    # a profile made in code (no file) keeps its relative path, looked for here as before
    made = profile.replace(micromanager_config="made.cfg")
    assert made.micromanager_config == Path("made.cfg")
    with pytest.raises(LivescopeError) as err:
        check_micromanager_config(made)
    assert str(err.value) == (
        f"Micro-Manager config {tmp_path / 'made.cfg'} (micromanager_config) not found"
    )


def test_run_finds_a_config_beside_the_profile_and_copies_its_absolute_path(
    tmp_path: Path,
) -> None:
    _rig(tmp_path / "rig", "rig.cfg")
    (tmp_path / "rig" / "rig.cfg").write_text("# empty\n", encoding="utf-8")
    (tmp_path / "p.yaml").write_text("channels: [DAPI]\n", encoding="utf-8")
    out = tmp_path / "out"
    res = run_cli(
        "run", "p.yaml", "--profile", str(Path("rig") / "rig.yaml"), "--out", str(out),
        "--json", cwd=tmp_path,
    )  # fmt: skip
    # (an empty config has no 'DAPI' preset: refused after the config was found and loaded)
    assert res.returncode == 2, res.stderr
    assert "(micromanager_config) not found" not in res.stdout, res.stdout
    copied = yaml.safe_load((out / "profile.yaml").read_text(encoding="utf-8"))
    assert copied["micromanager_config"] == str(tmp_path / "rig" / "rig.cfg")


def test_run_refuses_a_seed_on_a_rig_profile_before_anything_starts(tmp_path: Path) -> None:
    # `agent --seed` refused it; `run --seed` went on and ignored it
    plan = tmp_path / "p.yaml"
    plan.write_text("channels: [DAPI]\n", encoding="utf-8")
    out = tmp_path / "out"
    res = run_cli(
        "run", str(plan), "--profile", "widefield-2048-scmos", "--seed", "3",
        "--out", str(out), "--json",
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert json.loads(res.stdout)["error"] == "--seed applies to simulated profiles only"
    assert not out.exists()
