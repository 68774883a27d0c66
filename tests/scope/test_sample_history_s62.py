"""The simulated sample's memory of past states: bounded, and the same states as before."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from livescope.schema import HardwareProfile, Simulation
from livescope.scope import STEP_S, SampleState, SimulatedMicroscope, SimulatedSample
from livescope.scope import _sample as sample_module

_FIELDS = (
    "ids",
    "y_um",
    "x_um",
    "radius_um",
    "aspect",
    "angle_rad",
    "brightness",
    "state",
    "progress",
    "texture",
)


def _assert_same(a: SampleState, b: SampleState) -> None:
    assert a.time_s == b.time_s
    for f in _FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f"{f} at {a.time_s} s")


@pytest.fixture
def params(sim_profile: HardwareProfile) -> Simulation:
    assert sim_profile.simulation is not None
    return sim_profile.simulation.replace(sample_size_um=(600.0, 600.0))


def _lineage(s: SimulatedSample) -> list[tuple[object, ...]]:
    return [
        (r.cell_id, r.parent_id, r.birth_s, r.end_s, r.fate, r.mitosis_onset_s, r.apoptosis_onset_s)
        for r in s.records()
    ]


def test_past_states_asked_in_any_order_are_those_of_a_straight_run(params: Simulation) -> None:
    # times within the two hours kept, well behind the newest step, in random order,
    # with steps forward in between; and older ones (simulated again from the seed)
    rng = np.random.default_rng(4)
    times = [5000.0, *rng.uniform(0, 5000, 40).tolist(), 5400.0, *rng.uniform(0, 5400, 20)]
    times += [2300.0, 100.0, 6000.0, 5990.0]
    s = SimulatedSample(params, seed=11)
    asked = {t: s.state_at(t) for t in times}
    straight = SimulatedSample(params, seed=11)  # asked forward only: every state fresh
    for t in sorted(asked):
        _assert_same(asked[t], straight.state_at(t))
    assert _lineage(s) == _lineage(straight)
    # piecewise constant within a step: the very same state, also one simulated again
    assert s.state_at(4005.0) is s.state_at(4000.0 + STEP_S / 2)


def test_frames_and_truth_of_past_times_unchanged(
    sim_profile: HardwareProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sim_profile.simulation is not None
    profile = sim_profile.replace(
        simulation=sim_profile.simulation.replace(sample_size_um=(1000.0, 1000.0)).model_dump()
    )

    def run() -> list[np.ndarray]:
        out = []
        with SimulatedMicroscope(profile, seed=5) as sim:
            sim.core.setShutterOpen(True)
            group = profile.channels.config_group
            for t in (3600.0, 600.0, 3300.0, 3590.0, 1000.0, 7200.0, 6100.0):
                for preset in profile.channels.presets:
                    sim.core.setConfig(group, preset.name)
                    sim.set_time(t)
                    sim.core.snapImage()
                    out.append(np.asarray(sim.core.getImage()).copy())
                for back in (0.0, 450.0, 1800.0):
                    out.append(sim.ground_truth(max(t - back, 0.0)).labels)
        return out

    frames = run()
    # every state of the two hours kept whole, as the sample used to
    monkeypatch.setattr(sample_module, "_RECENT_STEPS", 10**6, raising=False)
    monkeypatch.setattr(sample_module, "_HISTORY_STEPS", 10**6)
    reference = run()
    assert len(frames) == len(reference)
    for k, (a, b) in enumerate(zip(frames, reference, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"image {k}")


def test_memory_of_past_states_is_bounded(params: Simulation) -> None:
    s = SimulatedSample(params, seed=2)
    s.state_at(STEP_S)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        newest = s.state_at(720 * STEP_S)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    one_state = sum(getattr(newest, f).nbytes for f in _FIELDS)
    # 720 states kept whole took over 600 states' worth; now 30 whole states and a
    # checkpoint (about 1.4 states) every 30 steps, plus the lineage
    assert kept < 100 * one_state, f"{kept / 1e6:.1f} MB kept, {one_state / 1e3:.1f} kB a state"
    # and every state of those two hours is still served (from a checkpoint)
    _assert_same(s.state_at(STEP_S), SimulatedSample(params, seed=2).state_at(STEP_S))
