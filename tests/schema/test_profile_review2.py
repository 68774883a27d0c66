from __future__ import annotations

import os
from pathlib import Path

import pytest
import useq
import yaml

from livescope.schema import PlanError, ProfileError, builtin_profiles, check_plan, load_profile


def _write(tmp_path: Path, data: dict) -> Path:
    f = tmp_path / "rig.yaml"
    f.write_text(yaml.safe_dump(data))
    return f


def test_a_plan_channel_at_its_default_exposure_is_held_to_the_dose_cap(tmp_path: Path) -> None:
    # (a plan giving no exposure ran DAPI at its 50 ms default on a 30 ms cap: the plan
    # check only held exposures written in the plan to it)
    data = yaml.safe_load(builtin_profiles()["sim"].read_text())
    data["light_dose"]["max_exposure_ms_per_frame"] = 30
    prof = load_profile(_write(tmp_path, data))  # (the rig itself stands: a plan may give 30)
    seq = useq.MDASequence(channels=[useq.Channel(config="Phase"), useq.Channel(config="DAPI")])
    with pytest.raises(PlanError) as info:
        check_plan(seq, prof)
    assert info.value.problems == [
        "channels.1.exposure: 50.0 ms (channel 'DAPI''s default) exceeds the light-dose budget "
        "(light_dose.max_exposure_ms_per_frame = 30.0 ms)"
    ]
    ok = useq.MDASequence(channels=[useq.Channel(config="DAPI", exposure=30)])
    check_plan(ok, prof)


def test_a_label_free_default_exposure_is_not_held_to_the_dose_cap(tmp_path: Path) -> None:
    data = yaml.safe_load(builtin_profiles()["sim"].read_text())
    data["light_dose"]["max_exposure_ms_per_frame"] = 50  # DAPI's default; Phase's is 20
    data["channels"]["presets"][0]["default_exposure_ms"] = 400  # Phase: transmitted light
    prof = load_profile(_write(tmp_path, data))
    check_plan(useq.MDASequence(channels=[useq.Channel(config="Phase")]), prof)


@pytest.mark.parametrize("name", ["sim", "replay"])
def test_a_folder_named_like_a_shipped_profile_does_not_hide_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # (an output folder called sim or replay in the working directory was read as the
    # profile: "is a folder, not a YAML file")
    (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_profile(name).name == name


def test_a_file_without_suffix_is_still_read_as_a_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = yaml.safe_load(builtin_profiles()["sim"].read_text())
    data["name"] = "my-rig"
    (tmp_path / "sim").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    assert load_profile("sim").name == "my-rig"


@pytest.mark.parametrize("stem", sorted(builtin_profiles()))
def test_a_shipped_profile_is_found_by_the_name_it_gives(stem: str) -> None:
    # (a run's summary records the profile's name, widefield-2048, not its file's,
    # widefield-2048-scmos: the replay and the report's nuclear channel fell back)
    own = yaml.safe_load(builtin_profiles()[stem].read_text())["name"]
    assert load_profile(own) == load_profile(stem)


def test_a_missing_path_without_suffix_says_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "rigs" / "scope"
    with pytest.raises(ProfileError, match="file not found") as info:
        load_profile(missing)
    assert os.fspath(missing) in str(info.value)
