"""A recording whose position group has no array yet costs that position's thumbnails only.

The writer makes a position's group, then its array: a run killed in between left a
group without ``0``, and the report's whole "Fields with overlays" section read
"This section could not be drawn: KeyError: '0'", every other position lost with it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import zarr

from livescope.schema import HardwareProfile
from livescope.scope import demo_sequence, run_simulated
from livescope.view import write_report

from .test_report_robustness import not_drawn, notes, section


def test_a_position_without_its_array_is_named_and_the_others_drawn(
    tmp_path: Path, sim_profile: HardwareProfile
) -> None:
    run = tmp_path / "run"
    run_simulated(sim_profile, demo_sequence(sim_profile, timepoints=2, positions=2), run, seed=3)
    root = zarr.open_group(run / "data.ome.zarr", mode="r")
    keys = sorted(k for k, _ in root.groups())
    assert len(keys) == 2
    shutil.rmtree(run / "data.ome.zarr" / keys[1] / "0")  # (the group made, not its array)
    page = write_report(run).read_text(encoding="utf-8")
    fields = section(page, "fields")
    assert not not_drawn(page)
    assert fields.count('<img class="plot"') == 1  # (the other position's)
    said = [n for n in notes(fields) if "array is missing" in n]
    assert said == [
        f"p1: its array is missing from data.ome.zarr/{keys[1]} (the run was stopped as it "
        "was made): not drawn."
    ]
