"""``--channel-map`` on a livescope recording, and the hint for channels a profile lacks.

Found by an independent review (session 61): a livescope recording replays its
own ``plan.yaml``, whose events named the recorded channels, so the map never
reached them: ``--profile replay --channel-map DAPI=Fluo --channel-map
Phase=DAPI`` served the Phase frames as DAPI twice over (and segmented them as
nuclei), and a map onto a rig's channels was refused as "unknown channel
'Phase'" after the output folder had been written, so a rerun into it was
refused as not empty. The hint for a dataset's unknown channels proposed the
profile's last channel for the first of them only: following it for BF, then
for mCherry, ended in "two dataset channels map to ['Fluo']".
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
import tifffile
import yaml

import livescope.pipeline._replay as replay_module
from livescope.pipeline import run_replay
from livescope.record import open_dataset
from livescope.schema import LivescopeError, PlanError, load_plan, load_profile, plan_sections
from livescope.scope import demo_sequence, map_channels, run_simulated

CLOSEUP = {  # (never fires: a rule whose channels the map must rename)
    "name": "closeup",
    "when": {"cell_count": {"above": 100000}},
    "do": {"acquire": {"channels": ["Phase", "DAPI"], "loops": 2, "interval_s": 30,
                       "exposure_ms": {"DAPI": 40}}},
}  # fmt: skip


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One position × 2 time points 1 s apart, Phase + DAPI, 64² px, with a rule in its plan."""
    prof = load_profile("sim")
    prof = prof.replace(camera=prof.camera.replace(sensor_shape_px=(64, 64)).model_dump())
    out = tmp_path_factory.mktemp("rec") / "run"
    run_simulated(prof, demo_sequence(prof, timepoints=2, positions=1, interval_s=1.0), out)
    plan = out / "plan.yaml"
    text = yaml.safe_load(plan.read_text(encoding="utf-8"))
    plan.write_text(yaml.safe_dump({**text, "policies": [CLOSEUP]}), encoding="utf-8")
    return out


def _pixels(run: Path) -> dict[tuple[int, str], bytes]:
    with open_dataset(run) as ds:
        return {(f.key.t, f.key.channel): ds.read(f.key).tobytes() for f in ds.frames}


class _Stop(Exception):
    """Raised by a stand-in for `run_adaptive`: the plan it was given is what is checked."""


@pytest.fixture
def given(monkeypatch: pytest.MonkeyPatch) -> dict:
    """What `run_replay` hands `run_adaptive` (which is not run)."""
    seen: dict = {}

    def stop(profile: object, sequence: object, out: object, **kwargs: object) -> NoReturn:
        seen.update(profile=profile, sequence=sequence, policies=kwargs.get("policies"))
        raise _Stop

    monkeypatch.setattr(replay_module, "run_adaptive", stop)
    return seen


@pytest.mark.slow
def test_a_recordings_frames_are_served_under_the_names_the_map_gives(
    recording: Path, tmp_path: Path
) -> None:
    # Phase onto DAPI, DAPI onto Fluo: each recorded frame served once, under its new name
    out = tmp_path / "r"
    summary = run_replay(
        recording, out, profile="replay", channel_map={"DAPI": "Fluo", "Phase": "DAPI"}
    )
    assert summary["frames_served"] == 4
    recorded, served = _pixels(recording), _pixels(out)
    assert sorted(served) == [(0, "DAPI"), (0, "Fluo"), (1, "DAPI"), (1, "Fluo")]
    for t in (0, 1):
        assert served[(t, "DAPI")] == recorded[(t, "Phase")]
        assert served[(t, "Fluo")] == recorded[(t, "DAPI")]
    # the replay's plan and rule name the channels it ran
    assert [c.config for c in load_plan(out / "plan.yaml").channels] == ["DAPI", "Fluo"]
    acquire = plan_sections(out / "plan.yaml")["policies"][0]["do"]["acquire"]
    assert acquire["channels"] == ["DAPI", "Fluo"]
    assert acquire["exposure_ms"] == {"Fluo": 40}


def test_a_map_onto_a_rigs_channels_renames_the_recorded_plan(
    recording: Path, tmp_path: Path, given: dict
) -> None:
    # the map the hint suggests for a rig's profile: Phase and DAPI are not its channels
    cmap = {"Phase": "Brightfield", "DAPI": "405"}
    with pytest.raises(_Stop):
        run_replay(recording, tmp_path / "r", profile="spinning-disk-3200-scmos", channel_map=cmap)
    chans = given["sequence"].channels
    assert [c.config for c in chans] == ["Brightfield", "405"]
    assert [c.exposure for c in chans] == [20.0, 50.0]  # (the recorded, within the limits)
    assert given["policies"][0]["do"]["acquire"]["channels"] == ["Brightfield", "405"]
    # a plan without a map is the recorded one
    with pytest.raises(_Stop):
        run_replay(recording, tmp_path / "r2")
    assert given["sequence"] == load_plan(recording / "plan.yaml")
    assert given["policies"] == [CLOSEUP]


def test_a_plan_the_profile_cannot_run_is_refused_before_anything_is_written(
    recording: Path, tmp_path: Path
) -> None:
    # a channel in the recorded plan that no frame has (and no map can name) on a rig
    # that lacks it: refused with nothing in the output folder, so a rerun can use it
    rec = tmp_path / "rec"
    shutil.copytree(recording, rec)
    plan = yaml.safe_load((rec / "plan.yaml").read_text(encoding="utf-8"))
    plan["channels"].append({"config": "Cy5", "exposure": 30.0})
    plan["policies"] = []
    (rec / "plan.yaml").write_text(yaml.safe_dump(plan), encoding="utf-8")
    out = tmp_path / "r"
    cmap = {"Phase": "Brightfield", "DAPI": "405"}
    with pytest.raises(PlanError, match=r"unknown channel 'Cy5'") as err:
        run_replay(rec, out, profile="spinning-disk-3200-scmos", channel_map=cmap)
    assert "Phase → Brightfield, DAPI → 405" in str(err.value)
    assert not out.exists()


def _ome_tiff(path: Path, channels: list[str]) -> Path:
    planes = np.zeros((1, len(channels), 1, 16, 16), np.uint16)
    tifffile.imwrite(path, planes, ome=True, photometric="minisblack",
                     metadata={"axes": "TCZYX", "Channel": {"Name": channels}})  # fmt: skip
    return path


def _hint(message: str) -> dict[str, str]:
    """The ``--channel-map`` options a message suggests, as a map."""
    words = shlex.split(message.split("; pass ", 1)[1])
    assert words[::2] == ["--channel-map"] * (len(words) // 2), message
    return dict(w.split("=", 1) for w in words[1::2])


@pytest.mark.parametrize(
    ("channels", "profile", "hint"),
    [
        pytest.param(["BF", "mCherry"], "replay", {"BF": "Phase", "mCherry": "DAPI"}, id="bf"),
        pytest.param(["GFP", "DIC"], "replay", {"GFP": "DAPI", "DIC": "Phase"}, id="dic-second"),
        pytest.param(
            ["Phase", "GFP", "RFP"], "replay", {"GFP": "DAPI", "RFP": "Fluo"}, id="one-known"
        ),
        pytest.param(
            ["Bright Field", "mCherry"],
            "spinning-disk-3200-scmos",
            {"Bright Field": "Brightfield", "mCherry": "405"},
            id="spaced",
        ),
        pytest.param(["TL", "GFP"], "sim", {"TL": "Phase", "GFP": "DAPI"}, id="tl"),
        pytest.param(
            ["mCherry", "GFP"],
            "sim",
            {"mCherry": "DAPI", "GFP": "Phase"},
            id="no-fluorescence-left",
        ),
    ],
)
def test_the_hint_maps_every_unknown_channel_to_a_channel_of_its_own(
    tmp_path: Path, channels: list[str], profile: str, hint: dict[str, str]
) -> None:
    prof = load_profile(profile)
    src = _ome_tiff(tmp_path / "two.ome.tif", channels)
    with open_dataset(src) as ds:
        with pytest.raises(LivescopeError) as err:
            map_channels(ds, prof)
        assert _hint(str(err.value)) == hint
        # following it works
        mapped = map_channels(ds, prof, hint)
    assert len(set(mapped.values())) == len(channels)


def test_a_profile_with_too_few_channels_is_said_to_have_too_few(tmp_path: Path) -> None:
    src = _ome_tiff(tmp_path / "three.ome.tif", ["BF", "GFP", "RFP"])
    with open_dataset(src) as ds, pytest.raises(LivescopeError) as err:
        map_channels(ds, load_profile("sim"))
    said = str(err.value)
    assert "'BF', 'GFP', 'RFP' not in profile 'sim'" in said
    assert re.search(r"has 2 channel\(s\) free \(Phase, DAPI\) for the dataset's 3", said)
    assert "--channel-map" not in said


def test_a_channel_mapped_twice_is_refused() -> None:
    # (the last mapping was kept without a word)
    from livescope.cli._replay import parse_channel_map

    assert parse_channel_map(["GFP=Fluo", "GFP=Fluo", "BF=Phase"]) == {"GFP": "Fluo", "BF": "Phase"}
    with pytest.raises(ValueError, match="maps 'GFP' twice, to 'Fluo' and to 'DAPI'"):
        parse_channel_map(["GFP=Fluo", "GFP=DAPI"])


def test_the_hint_quotes_a_spaced_name_as_cmd_exe_takes_it(tmp_path: Path) -> None:
    # (single quotes, as shlex.quote gives, split 'Bright Field=...' in two on Windows)
    src = _ome_tiff(tmp_path / "two.ome.tif", ["Bright Field", "mCherry"])
    with open_dataset(src) as ds, pytest.raises(LivescopeError) as err:
        map_channels(ds, load_profile("spinning-disk-3200-scmos"))
    assert '--channel-map "Bright Field=Brightfield"' in str(err.value)
    assert "'" not in str(err.value).split("; pass ", 1)[1]
