"""A close-up whose exposure the rule leaves out is refused naming the preset's default.

A profile whose DAPI default is over the light-dose cap refused every rule acquiring
DAPI without an exposure as "acquire.exposure_ms DAPI: 1500 ms exceeds ...": a field
the user never wrote.
"""

from __future__ import annotations

import pytest

from livescope.policy import rules_for_profile
from livescope.schema import HardwareProfile, LivescopeError, load_profile


def _profile(default_ms: float, cap_ms: float) -> HardwareProfile:
    prof = load_profile("sim")
    presets = tuple(
        p.model_copy(update={"default_exposure_ms": default_ms}) if p.name == "DAPI" else p
        for p in prof.channels.presets
    )
    return prof.model_copy(update={
        "channels": prof.channels.model_copy(update={"presets": presets}),
        "light_dose": prof.light_dose.model_copy(update={"max_exposure_ms_per_frame": cap_ms}),
    })  # fmt: skip


@pytest.mark.parametrize(
    ("exposure", "said"),
    [
        pytest.param(None, "acquire.exposure_ms DAPI: 1500 ms (channel 'DAPI''s "
                     "default_exposure_ms in the profile) exceeds", id="left-out"),
        pytest.param({"DAPI": 1500}, "acquire.exposure_ms DAPI: 1500 ms exceeds", id="given"),
    ],
)  # fmt: skip
def test_the_exposure_refused_says_where_it_came_from(
    exposure: dict[str, float] | None, said: str
) -> None:
    acquire: dict[str, object] = {"channels": ["DAPI"]}
    if exposure is not None:
        acquire["exposure_ms"] = exposure
    spec = [{"name": "a", "when": {"mitosis": {}}, "do": {"acquire": acquire}}]
    with pytest.raises(LivescopeError) as info:
        rules_for_profile(spec, _profile(1500, 1000), source="plan.yaml")
    assert f"plan.yaml: policies.0 (a): {said} light_dose.max_exposure_ms_per_frame" in str(
        info.value
    )
