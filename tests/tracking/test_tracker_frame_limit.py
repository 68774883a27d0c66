"""Tracker frame numbers past what its int64 frame arrays hold are refused up front."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from livescope.schema import LivescopeError
from livescope.tracking import OnlineTracker
from tests.tracking.test_tracker import disks

CELLS = [(30.0, 30.0, 6.0), (70.0, 70.0, 6.0)]


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(10**30, id="int-1e30"),
        pytest.param(1e300, id="whole-float-1e300"),
        pytest.param(2**63 - 1, id="int64-max"),
        pytest.param(np.uint64(2**64 - 1), id="numpy-uint64-max"),
        pytest.param(2**62 + 1, id="just-above-the-limit"),
    ],
)
def test_a_frame_number_above_the_limit_is_refused_and_changes_nothing(frame: Any) -> None:
    """A huge frame number failed in numpy ("Python int too large to convert to C long"),
    on that frame or on the next one (2**63 - 1 was taken, then its successor was not)."""
    tr = OnlineTracker()
    tr.update(disks((100, 100), CELLS), frame=0)
    before = tr.state()
    with pytest.raises(LivescopeError, match=r"frame must be a whole number >= 0 .*2\*\*62"):
        tr.update(disks((100, 100), CELLS), frame=frame)
    assert tr.state() == before
    # the tracks go on from frame 0
    after = tr.update(disks((100, 100), CELLS), frame=1)
    assert sorted(after.track_ids.tolist()) == [1, 2]


def test_the_limit_itself_is_a_frame_and_the_next_default_one_is_not() -> None:
    """Frame 2**62 links as any other; the frame after it (given by default) is refused
    by name instead of running into the int64 arrays later."""
    tr = OnlineTracker()
    tr.update(disks((100, 100), CELLS), frame=2**62 - 1)
    up = tr.update(disks((100, 100), CELLS), frame=2**62)
    assert sorted(up.track_ids.tolist()) == [1, 2]
    assert tr.frame == 2**62
    before = tr.state()
    with pytest.raises(LivescopeError, match=r"frame must be a whole number >= 0 .*2\*\*62"):
        tr.update(disks((100, 100), CELLS))
    assert tr.state() == before
