"""Review of the simulated microscope (s63): long-run mitoses, autoshutter, text property values."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import useq

from livescope.schema import HardwareProfile
from livescope.scope import STEP_S, SimulatedMicroscope, SimulatedSample

from ..conftest import wait_for


def test_cells_held_by_the_full_dish_start_mitosis_only_as_deaths_make_room(
    sim_profile: HardwareProfile,
) -> None:
    # once deaths brought a full dish under its cap (2 x its starting cells), every cell
    # that had come due while it was full entered mitosis in the same step, and the
    # population doubled past the cap (~14,200 cells against 7,200 on the sim's dish)
    assert sim_profile.simulation is not None
    params = sim_profile.simulation.replace(
        sample_size_um=(300.0, 300.0), cycle_time_s=1200.0, mitosis_duration_s=600.0,
        death_rate_per_h=0.5,
    )  # fmt: skip
    s = SimulatedSample(params, seed=0)
    cap = 2 * len(s.state_at(0.0))  # (twice the starting cells)
    steps = round(5 * 3600 / STEP_S)
    pops = [len(s.state_at(k * STEP_S)) for k in range(steps + 1)]
    fill = next(k for k, n in enumerate(pops) if n >= cap)
    onsets = Counter(
        round(r.mitosis_onset_s / STEP_S)
        for r in s.records()
        if r.mitosis_onset_s is not None and r.mitosis_onset_s > 0
    )
    crowded = [k for k in range(fill + 1, steps + 1) if onsets[k] > max(0, cap - pops[k - 1])]
    assert not crowded, [(k * STEP_S, onsets[k], pops[k - 1]) for k in crowded[:5]]
    # (the mitoses under way when it first fills still overshoot; deaths then bring it back)
    late = pops[fill + round(2 * 3600 / STEP_S) :]
    assert max(late) <= cap, f"population {max(late)} past the cap {cap}"
    assert sum(onsets[k] for k in range(fill + 1, steps + 1)) > 10  # deaths make room


def _lit(sim: SimulatedMicroscope, frame: np.ndarray) -> float:
    """Mean counts in the nuclei over the background's of a frame of the current field."""
    labels = sim.ground_truth().labels
    assert (labels > 0).any()
    return float(frame[labels > 0].mean() - frame[labels == 0].mean())


@pytest.fixture
def lit_sim(sim: SimulatedMicroscope) -> SimulatedMicroscope:
    sim.set_time(1200.0)
    sim.core.setConfig("Channel", "DAPI")
    sim.core.setExposure(100)
    assert sim.core.getAutoShutter()  # (the sim's default, as on a rig)
    assert not sim.core.getShutterOpen()
    return sim


def test_autoshutter_snap_is_lit(lit_sim: SimulatedMicroscope) -> None:
    # UniMMCore's autoshutter does not drive Python shutters: snaps came out dark
    core = lit_sim.core
    core.snapImage()
    assert _lit(lit_sim, core.getImage()) > 200
    assert not core.getShutterOpen()
    core.setAutoShutter(False)  # a closed shutter without autoshutter: dark
    core.snapImage()
    assert abs(_lit(lit_sim, core.getImage())) < 5


def test_autoshutter_sequence_acquisition_is_lit(lit_sim: SimulatedMicroscope) -> None:
    core = lit_sim.core
    core.startSequenceAcquisition(3, 0, True)
    wait_for(lambda: not core.isSequenceRunning())
    frames = [core.popNextImage() for _ in range(core.getRemainingImageCount())]
    assert len(frames) == 3
    assert all(_lit(lit_sim, f) > 200 for f in frames), [_lit(lit_sim, f) for f in frames]


def test_autoshutter_plain_mda_run_is_lit(lit_sim: SimulatedMicroscope) -> None:
    core = lit_sim.core
    frames: list[np.ndarray] = []
    core.mda.events.frameReady.connect(lambda img, ev, meta: frames.append(img.copy()))
    core.mda.run(useq.MDASequence(channels=["DAPI"], time_plan={"interval": 0, "loops": 2}))
    assert len(frames) == 2
    assert all(_lit(lit_sim, f) > 200 for f in frames), [_lit(lit_sim, f) for f in frames]


def test_exposure_set_as_text_as_presets_store_it(sim: SimulatedMicroscope) -> None:
    # Micro-Manager presets and .cfg files hold values as text: "'>' not supported
    # between instances of 'str' and 'int'", and a preset with an exposure failed to apply
    core = sim.core
    cam = core.getCameraDevice()
    core.setProperty(cam, "Exposure", "30")
    assert core.getExposure() == 30.0
    core.defineConfig("Channel", "DAPI", cam, "Exposure", "75")
    core.setConfig("Channel", "DAPI")
    assert core.getExposure() == 75.0
    with pytest.raises(ValueError, match="exposure must be a finite number of ms > 0, got 'abc'"):
        core.setProperty(cam, "Exposure", "abc")
    assert core.getExposure() == 75.0
