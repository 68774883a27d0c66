"""FrameFanout given what it cannot use as given: a frame not in C order, a memory bound
that cannot hold one frame."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import useq
from numpy.typing import NDArray

from livescope.schema import FrameInfo, LivescopeError
from livescope.scope._fanout import FrameFanout


class KeepSink:
    def __init__(self) -> None:
        self.images: list[NDArray[Any]] = []

    def write(self, image: NDArray[Any], info: FrameInfo) -> None:
        self.images.append(image)

    def close(self) -> None:
        pass


def _event(t: int) -> useq.MDAEvent:
    return useq.MDAEvent(index={"t": t, "c": 0}, channel={"config": "DAPI"}, pos_name="p0")


def test_a_frame_in_fortran_order_is_recorded_as_it_looks() -> None:
    # a camera image turned with .T is a Fortran-ordered view: the writer's checksum of
    # its bytes failed ("memoryview: casts are restricted to C-contiguous views") and the
    # run was cancelled at its first frame with that text
    sink = KeepSink()
    fan = FrameFanout([sink], recording_nice=0, on_cancel=lambda: None)
    image = np.arange(6 * 4, dtype=np.uint16).reshape(6, 4).T
    assert not image.flags.c_contiguous
    fan.on_frame(image, _event(0), {})
    fan.finish()
    assert (fan.frames_acquired, fan.frames_written) == (1, 1)
    (written,) = sink.images
    np.testing.assert_array_equal(written, image)
    assert written.flags.c_contiguous


@pytest.mark.parametrize("bound", [0, -1])
def test_a_memory_bound_that_holds_nothing_is_refused_naming_it(bound: int) -> None:
    with pytest.raises(ValueError, match=rf"max_held_bytes.*{bound}"):
        FrameFanout([KeepSink()], recording_nice=0, max_held_bytes=bound)


def test_a_memory_bound_smaller_than_one_frame_says_so_not_that_the_disk_is_slow() -> None:
    fan = FrameFanout([KeepSink()], recording_nice=0, on_cancel=lambda: None, max_held_bytes=100)
    fan.on_frame(np.zeros((8, 8), np.uint16), _event(0), {})  # (128 bytes)
    assert fan.overrun is not None
    assert "disk is slower" not in fan.overrun
    assert "smaller than one frame" in fan.overrun
    assert "128 bytes" in fan.overrun
    with pytest.raises(LivescopeError, match="smaller than one frame"):
        fan.finish()
