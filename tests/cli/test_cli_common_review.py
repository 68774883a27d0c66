"""Pieces shared by commands and readers (clean-up review): each still says what it said.

The ``--profile``, ``--seed`` and ``--port`` options of `agent`, `demo` and `run`,
the benchmarks' ``--profile``, the acquisition-backend check of `agent` and
`run`, and the OME-TIFF notes about planes' times and stage positions are one
piece of code each; these pin what each command and file says.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from livescope.cli._app import app
from livescope.record import open_dataset

_PLAN = """\
channels: [{config: Phase, exposure: 20}]
time_plan: {interval: 1, loops: 2}
"""


def _invoke(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """Run ``livescope ARGS`` in-process (PLAN: a one-channel plan): (exit, stdout, stderr)."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(_PLAN, encoding="utf-8")
    argv = [str(plan) if a == "PLAN" else a for a in args]
    res = CliRunner().invoke(app, argv)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["agent", "--plan", "PLAN"], id="agent"),
        pytest.param(["run", "PLAN"], id="run"),
    ],
)
def test_an_unknown_acquisition_backend_is_refused_naming_the_known_ones(
    tmp_path: Path, command: list[str]
) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = _invoke(
        tmp_path, *command, "--out", str(out), "--backend", "micromanager", "--json"
    )
    assert code == 2
    said = "unknown acquisition backend 'micromanager'; use mda or pycromanager"
    assert json.loads(stdout)["error"] == said
    assert said in stderr
    assert not out.exists()  # (refused before the run folder is made)


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        pytest.param(["agent", "--plan", "PLAN"], "--port", "0", id="agent-port"),
        pytest.param(["run", "PLAN"], "--port", "65536", id="run-port"),
        pytest.param(["agent", "--plan", "PLAN"], "--seed", "-1", id="agent-seed"),
        pytest.param(["run", "PLAN"], "--seed", "-1", id="run-seed"),
        pytest.param(["run", "PLAN"], "--profile", "", id="run-profile"),
        pytest.param(["demo"], "--profile", " ", id="demo-profile"),
        pytest.param(["bench", "camera"], "--profile", "", id="bench-camera-profile"),
        pytest.param(["bench", "record"], "--profile", "", id="bench-record-profile"),
    ],
)
def test_a_shared_option_out_of_its_range_is_a_usage_error_naming_it(
    tmp_path: Path, command: list[str], option: str, value: str
) -> None:
    code, stdout, stderr = _invoke(tmp_path, *command, option, value)
    assert code == 2
    assert option in stderr
    assert stdout == ""  # (nothing ran)


@pytest.mark.parametrize(
    ("command", "defaults"),
    [
        pytest.param("agent", {"profile": "sim", "seed": None, "port": 4827}, id="agent"),
        pytest.param("run", {"profile": "sim", "seed": None, "port": 4827}, id="run"),
        pytest.param("demo", {"profile": "sim"}, id="demo"),
    ],
)
def test_the_shared_options_keep_each_commands_help_and_default(
    command: str, defaults: dict[str, object]
) -> None:
    import typer.main

    params = {p.name: p for p in typer.main.get_command(app).commands[command].params}  # type: ignore[attr-defined]
    helps = {
        "profile": "Hardware profile: a shipped name or a YAML path.",
        "seed": "Simulation seed (simulated profiles).",
        "port": "pycromanager: Micro-Manager's server port.",
    }
    for name, default in defaults.items():
        assert params[name].default == default
        assert params[name].help == helps[name]


_NS = 'xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"'


def _ome_tiff(path: Path, planes: str, *, name: str | None) -> Path:
    """Two 16x16 time points of one channel, in an OME ``Image`` named ``name``."""
    named = f' Name="{name}"' if name is not None else ""
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><OME {_NS} UUID="urn:uuid:1">'
        f'<Image ID="Image:0"{named}><Pixels ID="Pixels:0" DimensionOrder="XYCZT" '
        'Type="uint16" SizeX="16" SizeY="16" SizeC="1" SizeZ="1" SizeT="2" TimeIncrement="60">'
        '<Channel ID="Channel:0:0" Name="DAPI" SamplesPerPixel="1"/>'
        f'<TiffData IFD="0" PlaneCount="2"/>{planes}</Pixels></Image></OME>'
    )
    with tifffile.TiffWriter(path) as tw:
        for t in range(2):
            tw.write(np.full((16, 16), t, np.uint16), description=xml.encode() if t == 0 else None,
                     metadata=None)  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("name", "image"),
    [pytest.param("P", " (image 'P')", id="named"), pytest.param(None, "", id="unnamed")],
)
def test_ome_tiff_notes_on_plane_times_and_positions_name_the_file_and_image(
    tmp_path: Path, name: str | None, image: str
) -> None:
    planes = (
        '<Plane TheT="0" TheC="0" TheZ="0" DeltaT="0" PositionX="0" '
        'PositionXUnit="reference frame"/>'
        '<Plane TheT="1" TheC="0" TheZ="0" DeltaT="-5" DeltaTUnit="s" PositionX="0" '
        'PositionXUnit="reference frame"/>'
    )
    path = _ome_tiff(tmp_path / "a.ome.tif", planes, name=name)
    with open_dataset(path) as ds:
        assert ds.warnings == [
            f"{path}{image}: the planes' times (DeltaT) are not used: DeltaT '-5' s is no time "
            "livescope knows; time points are replayed evenly spaced (TimeIncrement, or "
            "--interval-s)",
            f"{path}{image}: stage positions PositionX '0' reference frame are no length "
            "livescope knows; replayed without them",
        ]
        assert [f.sample_time_s for f in ds.frames] == [0.0, 60.0]
        assert [f.x_um for f in ds.frames] == [None, None]
