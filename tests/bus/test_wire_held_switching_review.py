"""Review of the overlay wire format, held sends and thread switching: what a user is told."""

from __future__ import annotations

import json

import numpy as np
import pytest

from livescope.bus import OverlayPublisher, decode_overlay
from livescope.bus._overlay_wire import check_overlay_fields
from livescope.schema import MAX_SIDE, HeaderError, LivescopeError

from .test_overlay_review import good_raw as raw_header


def test_a_label_image_too_wide_is_refused_naming_the_largest_side() -> None:
    # (a stitched label image 70000 px wide was refused with "shape must be 1 to 4
    # integers >= 1, got [2, 70000]": every side was an integer >= 1)
    wide = MAX_SIDE + 4464
    with OverlayPublisher("run-1") as pub:
        with pytest.raises(LivescopeError, match=f"shape .*from 1 to {MAX_SIDE}"):
            pub.publish(
                {"seq": 1, "position": "p0", "t": 0}, {"labels": np.zeros((2, wide), np.uint8)}
            )
        assert pub.stats()["published"] == 0
    spec = [{"name": "labels", "dtype": "uint8", "shape": [2, wide]}]
    with pytest.raises(HeaderError, match=f"from 1 to {MAX_SIDE}, got \\[2, {wide}\\]"):
        decode_overlay(raw_header(arrays=spec), [bytes(2 * wide)])


def test_an_array_past_the_byte_limit_is_refused_naming_the_limit() -> None:
    # a label volume of 8 planes of MAX_SIDE x MAX_SIDE int32: every side allowed, the
    # whole too large; the error said "too large" and not what is allowed
    shape = [8, MAX_SIDE, MAX_SIDE]
    nbytes = 8 * MAX_SIDE * MAX_SIDE * 4
    h = json.loads(raw_header(arrays=[{"name": "labels", "dtype": "int32", "shape": shape}]))
    with pytest.raises(HeaderError, match=f"{nbytes} bytes is too large \\(at most {2**34}\\)"):
        check_overlay_fields(h, [nbytes])  # (sizes only: nothing of that size is made)


@pytest.mark.parametrize(
    "v",
    [pytest.param(2, id="newer"), pytest.param(0, id="older"), pytest.param(None, id="none")],
)
def test_a_message_of_another_protocol_version_says_what_to_do(v: object) -> None:
    # (the viewer's link_problem shows this for every message of a worker of another
    # livescope version: it said the number, not that the two must be of one version)
    with pytest.raises(HeaderError, match=r"is not 1 \(a worker of another livescope version"):
        decode_overlay(raw_header(v=v), [bytes(64)])
