"""`Channel.clamp_exposure`: a replay's exposures held to a preset's limits."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import useq

from livescope.pipeline._replay import _plan_renamed
from livescope.record import Dataset, FrameKey, RecordedFrame
from livescope.schema import Channel, load_profile
from livescope.scope import replay_sequence

LIMITED = Channel(
    name="GFP", kind="fluorescence", light_source="LED 470",
    exposure_min_ms=5.0, exposure_max_ms=200.0, default_exposure_ms=20.0,
)  # fmt: skip
# a preset that gives no limits has the default ones, [1, 1000] ms
UNLIMITED = Channel(name="Phase", kind="label_free", light_source="Halogen")


@pytest.mark.parametrize(
    ("preset", "exposure_ms", "expected"),
    [
        pytest.param(LIMITED, 0.5, 5.0, id="below-min"),
        pytest.param(LIMITED, 5000.0, 200.0, id="above-max"),
        pytest.param(LIMITED, 37.5, 37.5, id="inside"),
        pytest.param(LIMITED, 5.0, 5.0, id="at-min"),
        pytest.param(LIMITED, 200.0, 200.0, id="at-max"),
        pytest.param(UNLIMITED, 0.25, 1.0, id="default-limits-below"),
        pytest.param(UNLIMITED, 2500.0, 1000.0, id="default-limits-above"),
        pytest.param(UNLIMITED, 50.0, 50.0, id="default-limits-inside"),
    ],
)
def test_an_exposure_is_held_to_the_preset_limits(
    preset: Channel, exposure_ms: float, expected: float
) -> None:
    assert preset.clamp_exposure(exposure_ms) == expected


def test_a_whole_number_comes_back_a_float() -> None:
    # (`replay_sequence` passed a recorded exposure through float(): a TIFF tag may be an int)
    got = LIMITED.clamp_exposure(40)
    assert got == 40.0
    assert type(got) is float


def test_limits_that_are_one_value_give_that_value() -> None:
    fixed = LIMITED.replace(exposure_min_ms=20.0, exposure_max_ms=20.0)
    assert [fixed.clamp_exposure(ms) for ms in (1.0, 20.0, 900.0)] == [20.0, 20.0, 20.0]


def test_nan_is_passed_through_as_before() -> None:
    # (not a limit: min/max keep a NaN given first, as both replays' own copies did)
    assert math.isnan(LIMITED.clamp_exposure(math.nan))


def test_replay_sequence_holds_a_recorded_exposure_to_the_preset() -> None:
    prof = load_profile("replay")
    low, high, unknown = prof.channels.presets[:3]
    channels = {"a": low.name, "b": high.name, "c": unknown.name}
    recorded = {"a": low.exposure_min_ms / 10, "b": high.exposure_max_ms * 10, "c": None}
    frames = [
        RecordedFrame(FrameKey("A", 0, ch), (16, 16), "uint16", exposure_ms=ms)
        for ch, ms in recorded.items()
    ]
    seq = replay_sequence(Dataset(Path("ds"), "tiff", frames), prof, channels)
    assert [(c.config, c.exposure) for c in seq.channels] == [
        (low.name, low.exposure_min_ms),
        (high.name, high.exposure_max_ms),
        (unknown.name, unknown.default_exposure_ms),  # (none recorded: the preset's default)
    ]


def test_a_renamed_recorded_plan_holds_its_exposures_to_the_new_preset() -> None:
    prof = load_profile("replay")
    low, high, blank = prof.channels.presets[:3]
    group = prof.channels.config_group
    seq = useq.MDASequence(
        channels=[
            useq.Channel(config="a", group=group, exposure=low.exposure_min_ms / 10),
            useq.Channel(config="b", group=group, exposure=high.exposure_max_ms * 10),
            useq.Channel(config="c", group=group, exposure=None),
            useq.Channel(config="kept", group=group, exposure=123.0),
        ],
    )
    out = _plan_renamed(seq, prof, {"a": low.name, "b": high.name, "c": blank.name})
    assert [(c.config, c.exposure) for c in out.channels] == [
        (low.name, low.exposure_min_ms),
        (high.name, high.exposure_max_ms),
        (blank.name, None),  # (none given: left unset, not the preset's default)
        ("kept", 123.0),  # (not renamed: as recorded, not held to any preset)
    ]
