"""Past states asked in time order go on from the last one simulated again, not each from a
checkpoint.

The truth of frames is drawn a little behind the camera, time point after time point:
each past state was simulated again from its checkpoint (up to 29 steps), under the
microscope's lock, 8-20 times the cost of a frame's truth before.
"""

from __future__ import annotations

import pytest

from livescope.schema import Simulation
from livescope.scope import STEP_S, SimulatedSample
from livescope.scope import _sample as sample_module

from .test_sample_history_s62 import _assert_same, params  # noqa: F401 (fixture)


def test_past_states_in_time_order_cost_the_steps_between_them(
    params: Simulation,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = SimulatedSample(params, seed=5)
    s.state_at(400 * STEP_S)  # (the camera at step 400: steps 300-320 are far behind it)
    steps = []
    real = SimulatedSample._advance

    def advance(self: SimulatedSample) -> None:
        steps.append(self._t_step)
        real(self)

    monkeypatch.setattr(SimulatedSample, "_advance", advance)
    asked = list(range(301, 321, 2))  # (every other step, in time order)
    states = {k: s.state_at(k * STEP_S) for k in asked}
    base = max(k for k in s._checkpoints if k <= asked[0])
    # the first from its checkpoint, then each on from the one before
    assert len(steps) == asked[-1] - base
    monkeypatch.undo()
    straight = SimulatedSample(params, seed=5)
    for k in asked:
        _assert_same(states[k], straight.state_at(k * STEP_S))
    assert sample_module._RECENT_STEPS * STEP_S >= 600  # (10 min of truth behind: at once)
