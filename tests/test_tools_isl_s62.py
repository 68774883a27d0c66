"""``tools/train_stain.py`` names the ISL folder when its files are missing.

A partial copy of the ISL data (no DAPI target) stopped training with a bare
``StopIteration`` from ``next()``; no phase slices gave an empty ``--isl-slices`` list.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_tools_inputs_s61 import _torch_tool


@pytest.mark.parametrize(
    ("files", "said"),
    [
        pytest.param(["x_z_depth-4,_PHASE_CONTRAST.png"], "no DAPI confocal target", id="no-dapi"),
        pytest.param(["x_channel-DAPI_CONFOCAL.png"], "no phase-contrast z slices", id="no-phase"),
        pytest.param([], "no phase-contrast z slices and no DAPI confocal target", id="empty"),
    ],
)
def test_a_partial_isl_folder_is_named(tmp_path: Path, files: list[str], said: str) -> None:
    tool = _torch_tool("train_stain")
    folder = tmp_path / tool.ISL
    folder.mkdir()
    for name in files:
        (folder / name).write_bytes(b"")
    with pytest.raises(SystemExit, match=said) as info:
        tool.isl_files(tmp_path)
    assert str(folder) in str(info.value)


def test_a_complete_isl_folder_gives_its_slices_and_target(tmp_path: Path) -> None:
    tool = _torch_tool("train_stain")
    folder = tmp_path / tool.ISL
    folder.mkdir()
    for name in ("a_z_depth-4,_PHASE_CONTRAST.png", "a_z_depth-5,_PHASE_CONTRAST.png",
                 "a_channel-DAPI_CONFOCAL.png"):  # fmt: skip
        (folder / name).write_bytes(b"")
    phase, dapi = tool.isl_files(tmp_path)
    assert sorted(phase) == [4, 5]
    assert dapi.name == "a_channel-DAPI_CONFOCAL.png"
