"""Cases found by the review of the frame header: each failed before its fix."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from livescope.bus import FramePublisher
from livescope.schema import (
    FrameInfo,
    HeaderError,
    LivescopeError,
    clock_ns,
    decode_header,
    encode_header,
)
from tests.bus.test_fuzz import _valid_header

LONE = "\ud800"  # (a lone UTF-16 surrogate: JSON escapes it as \ud800, Python takes it)


def _header(**change: Any) -> dict[str, Any]:
    h = _valid_header()
    h.update(change)
    return h


@pytest.mark.parametrize("key", ["x_um", "exposure_ms", "pixel_size_um", "sample_time_s"])
def test_a_number_too_large_for_a_float_is_a_header_error(key: str) -> None:
    """An integer of 400 digits (JSON allows it) raised OverflowError from decode_header: the
    subscriber counted it as an error with a traceback, not as a rejected frame."""
    raw = json.dumps(_header(**{key: 10**400})).encode()
    with pytest.raises(HeaderError, match=key):
        decode_header(raw, 32)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"run_id": "r" + LONE}, id="run_id"),
        pytest.param({"channel": LONE}, id="channel"),
        pytest.param({"position": "p" + LONE}, id="position"),
        pytest.param({"added_by": LONE}, id="added_by"),
        pytest.param({"index": {"t": 1, LONE: 0}}, id="index-axis"),
        pytest.param(
            {"payload": "shm", "shm": {"name": LONE, "slot": 0, "generation": 1}}, id="shm-name"
        ),
    ],
)
def test_a_lone_surrogate_in_header_text_is_refused(change: dict[str, Any]) -> None:
    """Accepted, the name reached the worker, which failed writing it (as UTF-8) to cells.csv."""
    raw = json.dumps(_header(**change)).encode()  # (ensure_ascii: escaped as \ud800)
    with pytest.raises(HeaderError, match=next(iter(change)) + r"|surrogate"):
        decode_header(raw, None if change.get("payload") == "shm" else 32)


def test_text_beyond_ascii_goes_through_unchanged() -> None:
    h = _header(channel="µ-GFP", position="Puits A1 – Ø2", added_by="ré")
    raw = encode_header(h)  # type: ignore[arg-type]
    assert decode_header(raw, 32) == h
    # (an older sender's escaped form is the same text)
    assert decode_header(json.dumps(h).encode(), 32) == h


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("x_um", math.nan, id="nan-stage-position"),
        pytest.param("exposure_ms", math.inf, id="infinite-exposure"),
        pytest.param("position", "p" + LONE, id="lone-surrogate"),
        pytest.param("seq", np.int64(3), id="numpy-integer"),
    ],
)
def test_encode_header_names_the_field_it_cannot_carry(key: str, value: object) -> None:
    """NaN raised json's bare ValueError (no field named), a numpy integer a TypeError; a lone
    surrogate was escaped into a header that no subscriber should take."""
    with pytest.raises(HeaderError, match=key):
        encode_header(_header(**{key: value}))  # type: ignore[arg-type]


def test_a_frame_of_a_position_no_subscriber_can_take_is_refused_by_the_publisher() -> None:
    """It was sent (publish said True); the agent never heard of the problem."""
    image = np.zeros((4, 4), np.uint16)
    info = FrameInfo(
        seq=0, index={"t": 0}, position="p" + LONE, channel="DAPI", x_um=0.0, y_um=0.0,
        z_um=0.0, exposure_ms=10.0, pixel_size_um=0.65, sample_time_s=0.0, runner_time_ms=0.0,
        t_camera_ns=clock_ns(), hardware_triggered=False, added_by=None, adler32=0,
        shape=image.shape, dtype=str(image.dtype), event={},
    )  # fmt: skip
    pub = FramePublisher("r1")
    try:
        with pytest.raises(HeaderError, match="position"):
            pub.publish(image, info, clock_ns())
        assert pub.published == 0
    finally:
        pub.close()


@pytest.mark.parametrize("key", ["exposure_ms", "pixel_size_um"])
def test_a_negative_exposure_or_pixel_size_is_refused(key: str) -> None:
    # (accepted: the worker took a pixel size of -0.65 um as given)
    raw = json.dumps(_header(**{key: -0.65})).encode()
    with pytest.raises(HeaderError, match=rf"{key} must be >= 0, got -0.65"):
        decode_header(raw, 32)
    assert decode_header(json.dumps(_header(**{key: 0.0})).encode(), 32)[key] == 0.0


def test_an_empty_run_id_is_refused_by_the_publisher() -> None:
    # (frames went out; every decision of the run, which must name it, was refused)
    with pytest.raises(LivescopeError, match="at least 1 and at most 128 characters"):
        FramePublisher("")
