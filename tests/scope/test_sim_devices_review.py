"""Review of the simulated camera, its devices and the simulated frames: each test a bug fixed."""

from __future__ import annotations

import pytest

from livescope.schema import HardwareProfile
from livescope.scope import simulated_frames, simulated_views


def _short_travel(profile: HardwareProfile, half_um: float) -> HardwareProfile:
    xy = profile.stages.xy.replace(x_range_um=(-half_um, half_um), y_range_um=(-half_um, half_um))
    return profile.replace(stages=profile.stages.replace(xy=xy))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: simulated_frames(4, size=32, profile=p), id="frames"),
        pytest.param(
            lambda p: simulated_frames(4, size=32, profile=p, randomize=True), id="randomized"
        ),
        pytest.param(lambda p: simulated_views(3, size=32, profile=p), id="views"),
    ],
)
def test_simulated_data_stays_within_the_stage_travel(
    sim_profile: HardwareProfile, make: object
) -> None:
    # positions were drawn over the sample (±1400 µm here) whatever the stage's travel:
    # a profile whose stage travels ±600 µm failed with StageLimitError
    got = make(_short_travel(sim_profile, 600.0))  # type: ignore[operator]
    assert len(got) in (3, 4)
