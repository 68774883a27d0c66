from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from livescope.schema import HardwareProfile, ProfileError, builtin_profiles, load_profile
from tests.conftest import run_cli


@pytest.mark.parametrize("name", sorted(builtin_profiles()))
def test_shipped_profiles_validate(name: str) -> None:
    prof = load_profile(builtin_profiles()[name])
    assert prof.objective.pixel_size_um > 0
    assert prof.channels.presets


def test_sim_is_default_and_simulated() -> None:
    prof = load_profile()
    assert prof.name == "sim"
    assert prof.kind == "simulated"
    assert prof.simulation is not None


def test_with_square_sensor_changes_the_sensor_only(sim_profile: HardwareProfile) -> None:
    small = sim_profile.with_square_sensor(256)
    assert small.camera.sensor_shape_px == (256, 256)
    assert small.replace(camera=sim_profile.camera.model_dump()) == sim_profile


def test_profile_is_frozen(sim_profile: HardwareProfile) -> None:
    with pytest.raises(Exception, match="frozen"):
        sim_profile.name = "x"  # type: ignore[misc]
    changed = sim_profile.replace(name="other")
    assert changed.name == "other"
    assert sim_profile.name == "sim"


def _sim_dict() -> dict:
    return yaml.safe_load(builtin_profiles()["sim"].read_text())


def _mutate(path: str, value: object) -> dict:
    data = _sim_dict()
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


BAD = [
    pytest.param("camera.bit_depth", 20, "camera.bit_depth", id="bit-depth-too-high"),
    pytest.param("camera.bitdepth", 12, "camera.bitdepth: unknown field", id="misspelt-field"),
    pytest.param("camera.sensor_shape_px", [512], "camera.sensor_shape_px", id="shape-1d"),
    pytest.param("camera.max_fps", -5, "camera.max_fps", id="negative-fps"),
    pytest.param("stages.xy.x_range_um", [100, -100], "low < high", id="range-reversed"),
    pytest.param("default_objective", "100x", "default_objective '100x'", id="unknown-objective"),
    pytest.param("camera", KeyError, "camera: required field is missing", id="missing-camera"),
    pytest.param("kind", "confocal", "kind", id="unknown-kind"),
    pytest.param("simulation", None, "needs a simulation section", id="sim-without-simulation"),
    pytest.param(
        "channels.presets.0.default_exposure_ms", 5000, "exposure_min_ms <=", id="exposure-order"
    ),
    pytest.param(
        "objectives.0.pixel_size_um",
        650,
        "objectives.0 (10x): pixel_size_um 650 is 1e+03x the "
        "0.65 µm of the camera's 6.5 µm pitch through a 10x objective",
        id="pixel-size-nm-for-um",
    ),
    pytest.param(
        "camera.orientation",
        [1, 0, 0.5, 1],
        "camera.orientation (1.0, 0.0, 0.5, 1.0) is not a turn or mirror",
        id="orientation-sheared",
    ),
    pytest.param(
        "camera.offset_adu",
        100000,
        "camera.offset_adu 100000 is at or above the largest count",
        id="offset-above-range",
    ),
]


@pytest.mark.parametrize(("path", "value", "expected"), BAD)
def test_bad_profile_names_the_field(
    tmp_path: Path, path: str, value: object, expected: str
) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(_mutate(path, value)))
    with pytest.raises(ProfileError) as info:
        load_profile(f)
    assert any(expected in p for p in info.value.problems), info.value.problems
    assert str(f) in str(info.value)


def test_the_field_of_view_on_the_stage_turns_with_the_camera() -> None:
    rig = load_profile("widefield-2048-scmos")
    cam = rig.camera.replace(sensor_shape_px=(1000, 2000))
    px = rig.objective.pixel_size_um
    assert rig.replace(camera=cam.model_dump()).field_of_view_um == (1000 * px, 2000 * px)
    turned = cam.replace(orientation=(0.0, -1.0, 1.0, 0.0))  # rows along -x, columns along +y
    assert rig.replace(camera=turned.model_dump()).field_of_view_um == (2000 * px, 1000 * px)
    sim = load_profile("sim")  # the simulated camera is never turned
    with pytest.raises(ValueError, match="simulated microscope's camera is not turned"):
        sim.replace(camera=sim.camera.replace(orientation=(-1.0, 0.0, 0.0, 1.0)).model_dump())


def test_every_error_is_listed(tmp_path: Path) -> None:
    data = _mutate("camera.bit_depth", 99)
    data["stages"]["z"]["z_range_um"] = [5, 1]
    data["colour"] = "blue"
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError) as info:
        load_profile(f)
    text = "\n".join(info.value.problems)
    assert "camera.bit_depth" in text
    assert "stages.z" in text
    assert "colour: unknown field" in text


def test_duplicate_channels_rejected(tmp_path: Path) -> None:
    data = _sim_dict()
    data["channels"]["presets"].append(dict(data["channels"]["presets"][0]))
    f = tmp_path / "dup.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match="repeated"):
        load_profile(f)


def test_micromanager_needs_config(tmp_path: Path) -> None:
    data = yaml.safe_load(builtin_profiles()["widefield-2048-scmos"].read_text())
    del data["micromanager_config"]
    f = tmp_path / "rig.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match="micromanager_config"):
        load_profile(f)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("name: [unclosed\n", "line 2", id="yaml-syntax"),
        pytest.param(
            "- just\n- a list\n",
            "expected a mapping of key: value lines, got a list",
            id="not-a-mapping",
        ),
        pytest.param("# only a comment\n", "the file is empty", id="empty"),
        pytest.param("name: a\nCamera: {}\n", r"Camera: unknown field", id="capital-typo"),
        pytest.param("\x89PNG\r\n\x1a\n\xff\xfe", "not a text file", id="binary"),
        pytest.param(
            "name: a\ndescription: 5 \xb5m\n",  # (latin-1 bytes: Notepad's 'ANSI')
            r"not UTF-8 text \(byte 0xb5 on line 2",
            id="ansi",
        ),
        pytest.param("\xff\xfen\x00a\x00", "saved as UTF-16", id="utf-16"),
        pytest.param(
            "name: a\nguardrails: {min_interval_s: 1}\nname: b\n",
            r"line 3, column 1: .*key 'name' is given twice \(first on line 1\)",
            id="duplicate-key",
        ),
    ],
)
def test_unreadable_yaml(tmp_path: Path, text: str, expected: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_bytes(text.encode("latin-1"))
    with pytest.raises(ProfileError, match=expected):
        HardwareProfile.from_file(f)


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    from livescope.schema import read_yaml

    f = tmp_path / "m.yaml"
    f.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")
    assert read_yaml(f)["other"] == {"x": 3, "y": 2}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="file not found"):
        load_profile(tmp_path / "nope.yaml")
    with pytest.raises(ProfileError, match="is a folder, not a YAML file"):
        load_profile(tmp_path)


def test_unknown_shipped_name() -> None:
    with pytest.raises(ProfileError, match="no shipped profile called 'simm'"):
        load_profile("simm")


def test_cli_profile_check_reports_every_error(tmp_path: Path) -> None:
    good = builtin_profiles()["sim"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_mutate("camera.bit_depth", 20)))
    res = run_cli("profile", "check", str(good), str(bad), "--json")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] is False
    by_file = {r["file"]: r for r in out["results"]}
    assert by_file[str(good)]["valid"] is True
    assert any("camera.bit_depth" in p for p in by_file[str(bad)]["problems"])

    plain = run_cli("profile", "check", str(bad))
    assert plain.returncode == 1
    assert "camera.bit_depth" in plain.stderr
    assert "Traceback" not in plain.stderr


def test_cli_profile_check_all_shipped() -> None:
    res = run_cli("profile", "check", *map(str, builtin_profiles().values()), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["ok"] is True


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 0.0])
def test_an_endless_or_no_time_acceleration_is_refused(value: float) -> None:
    # (inf made every wait of the simulated scope NaN: the run hung after its first time point)
    sim = load_profile("sim").simulation
    assert sim is not None
    with pytest.raises(ValueError, match="time_acceleration"):
        sim.replace(time_acceleration=value)


@pytest.mark.parametrize("text", ["inf", "nan", "0", "-2", "fast"])
def test_a_replay_speed_must_be_a_finite_factor(text: str) -> None:
    from livescope.cli._replay import parse_speed

    with pytest.raises(ValueError, match="use realtime, max or a factor > 0"):
        parse_speed(text)
    assert parse_speed("10x") == 10.0
