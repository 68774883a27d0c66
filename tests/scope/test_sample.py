from __future__ import annotations

import numpy as np
import pytest

from livescope.schema import HardwareProfile, Simulation
from livescope.scope import STEP_S, CellState, SimulatedSample


@pytest.fixture
def params(sim_profile: HardwareProfile) -> Simulation:
    assert sim_profile.simulation is not None
    return sim_profile.simulation.replace(sample_size_um=(800.0, 800.0))


def _same(a, b) -> bool:  # type: ignore[no-untyped-def]
    return all(
        np.array_equal(getattr(a, f), getattr(b, f))
        for f in ("ids", "y_um", "x_um", "radius_um", "state", "brightness")
    )


def test_same_seed_same_sample(params: Simulation) -> None:
    a = SimulatedSample(params, seed=3).state_at(1800)
    b = SimulatedSample(params, seed=3).state_at(1800)
    c = SimulatedSample(params, seed=4).state_at(1800)
    assert _same(a, b)
    assert not _same(a, c)


def test_random_access_in_time_is_consistent(params: Simulation) -> None:
    s = SimulatedSample(params, seed=1)
    late = s.state_at(3000)
    early_again = s.state_at(600)  # from history
    fresh = SimulatedSample(params, seed=1)
    assert _same(early_again, fresh.state_at(600))
    assert _same(late, fresh.state_at(3000))
    assert s.state_at(605) is s.state_at(600)  # piecewise constant within a step
    with pytest.raises(ValueError, match=">= 0"):
        s.state_at(-1)


def test_divisions_have_two_daughters_with_parent(params: Simulation) -> None:
    s = SimulatedSample(params, seed=2)
    s.state_at(3600)
    records = {r.cell_id: r for r in s.records()}
    mothers = [r for r in records.values() if r.fate == "divided"]
    assert len(mothers) > 5
    for m in mothers:
        kids = [r for r in records.values() if r.parent_id == m.cell_id]
        assert len(kids) == 2
        assert all(k.birth_s == m.end_s for k in kids)
        assert m.mitosis_onset_s is not None
        assert m.end_s is not None
        assert m.mitosis_onset_s < m.end_s
        # the mother is gone from the state from her division on, the daughters are there
        assert m.end_s is not None
        after = s.state_at(m.end_s)
        assert m.cell_id not in after.ids
        assert {k.cell_id for k in kids} <= set(after.ids.tolist())
        before = s.state_at(m.end_s - STEP_S)
        assert m.cell_id in before.ids


def test_mitosis_phases_are_visible_in_state(params: Simulation) -> None:
    s = SimulatedSample(params, seed=2)
    seen: set[int] = set()
    for t in np.arange(0, 3600, 60.0):
        seen |= set(s.state_at(float(t)).state.tolist())
    assert {
        CellState.INTERPHASE,
        CellState.PROPHASE,
        CellState.METAPHASE,
        CellState.ANAPHASE,
    } <= seen


def test_cells_die_and_disappear(params: Simulation) -> None:
    s = SimulatedSample(params.replace(death_rate_per_h=2.0), seed=5)
    s.state_at(3600)
    dead = [r for r in s.records() if r.fate == "died"]
    assert dead
    for r in dead[:5]:
        assert r.end_s is not None
        assert r.cell_id not in s.state_at(r.end_s).ids
        assert r.apoptosis_onset_s is not None
        assert r.apoptosis_onset_s < r.end_s


def test_cells_move_and_wrap(params: Simulation) -> None:
    s = SimulatedSample(params, seed=0)
    a, b = s.state_at(0), s.state_at(1800)
    common, ia, ib = np.intersect1d(a.ids, b.ids, return_indices=True)
    assert common.size > 10
    moved = np.hypot(a.y_um[ia] - b.y_um[ib], a.x_um[ia] - b.x_um[ib])
    assert np.median(moved) > 5.0  # drift + random motion over 30 min
    h, w = params.sample_size_um
    assert np.all(np.abs(b.y_um) <= h / 2)
    assert np.all(np.abs(b.x_um) <= w / 2)
