"""Review of the simulated sample and its rendering: each test a bug found and fixed."""

from __future__ import annotations

import numpy as np
import pytest

from livescope.schema import HardwareProfile, Simulation
from livescope.scope import FieldOfView, Optics, SampleState, SimulatedSample
from livescope.scope._render import render_fluorescence, render_labels, render_phase

RENDERERS = [
    pytest.param(render_fluorescence, id="fluorescence"),
    pytest.param(render_phase, id="phase"),
    pytest.param(render_labels, id="labels"),
]


@pytest.fixture
def params(sim_profile: HardwareProfile) -> Simulation:
    assert sim_profile.simulation is not None
    return sim_profile.simulation.replace(sample_size_um=(400.0, 400.0))


def _fov(
    shape: tuple[int, int], z_um: float, pixel_um: float, wrap: tuple[float, float]
) -> FieldOfView:
    return FieldOfView(0.0, 0.0, pixel_um, shape, z_um, wrap)


@pytest.mark.parametrize("render", RENDERERS)
@pytest.mark.parametrize("z_um", [0.0, 20.0, 60.0])
def test_a_smaller_field_is_the_crop_of_a_larger_one_when_defocused(
    params: Simulation,
    render,
    z_um: float,  # type: ignore[no-untyped-def]
) -> None:
    # cells were picked for drawing by a fixed margin around the field, while their
    # drawing grows with defocus blur: a defocused cell just outside the field sent no
    # light into it, so the edges of neighbouring fields (a mosaic) disagreed
    state = SimulatedSample(params, seed=1).state_at(600.0)
    optics = Optics(na=0.75)
    big = render(state, _fov((300, 300), z_um, 0.65, params.sample_size_um), optics)
    small = render(state, _fov((100, 100), z_um, 0.65, params.sample_size_um), optics)
    crop = big[100:200, 100:200]
    if render is render_labels:
        assert np.array_equal(crop, small)
    else:  # (float32 rounding of the pixel grid only)
        np.testing.assert_allclose(small, crop, rtol=0, atol=0.01)


@pytest.mark.parametrize("render", RENDERERS)
def test_a_field_wider_than_the_sample_shows_it_periodically(
    params: Simulation,
    render,  # type: ignore[no-untyped-def]
) -> None:
    # the sample is a torus, but each cell was drawn once, at its copy nearest the
    # field's centre: the part of a field beyond the sample's size (a low-power
    # objective on a small simulated dish) was empty, and its truth too
    state = SimulatedSample(params, seed=1).state_at(600.0)
    img = render(state, _fov((500, 500), 0.0, 1.0, params.sample_size_um), Optics(na=0.3))
    period = 400  # px: the sample's 400 µm at 1 µm per pixel
    for a, b in ((img[:100], img[period:]), (img[:, :100], img[:, period:])):
        if render is render_labels:
            assert a.any()
            assert np.mean(a == b) > 0.999
        else:
            np.testing.assert_allclose(a, b, rtol=0, atol=0.01)


def _positions(params: Simulation, seed: int, times: np.ndarray) -> list[SampleState]:
    s = SimulatedSample(params, seed=seed)
    return [s.state_at(float(t)) for t in times]


def test_cells_stay_on_the_torus_at_every_step(params: Simulation) -> None:
    # daughters of a mother at the sample's edge were born across it, off the torus,
    # until the next step wrapped them
    h, w = params.sample_size_um
    for st in _positions(params, 1, np.arange(0.0, 7200.0, 10.0)):
        assert np.all((st.y_um >= -h / 2) & (st.y_um < h / 2)), st.time_s
        assert np.all((st.x_um >= -w / 2) & (st.x_um < w / 2)), st.time_s


def test_nuclei_do_not_overlap_across_the_edge_of_the_sample(params: Simulation) -> None:
    # repulsion looked for neighbours in plain coordinates, so two nuclei on either
    # side of the torus' edge never repelled: they overlapped, and in the ground truth
    # one hid (part of) the other, in fields near the stage's travel limits
    h, w = params.sample_size_um
    overlapping = 0
    for st in _positions(params, 1, np.arange(0.0, 7200.0, 100.0)):
        dy = st.y_um[:, None] - st.y_um[None, :]
        dx = st.x_um[:, None] - st.x_um[None, :]
        dy = (dy + h / 2) % h - h / 2
        dx = (dx + w / 2) % w - w / 2
        dist = np.hypot(dy, dx)
        np.fill_diagonal(dist, np.inf)
        r = st.radius_um
        overlapping += int(np.sum(dist < r[:, None] + r[None, :])) // 2
    assert overlapping == 0
