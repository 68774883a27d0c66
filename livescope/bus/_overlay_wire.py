"""Overlay protocol v1: the message of the overlay bus, and its validation.

A message is a ZeroMQ multipart message: part 1 a UTF-8 JSON header, then one
raw C-order buffer per array, in the order the header's ``arrays`` lists them,
in native byte order (the publisher's and the decoder's alike: little-endian on
x86-64 and ARM64; the dtype names say no byte order). `decode_overlay` checks
every field before anything uses it; the JSON is parsed as data only (never
unpickled). Header fields: see the overlay bus's module doc
(``livescope/bus/_overlay.py``); `OverlayPublisher.publish` fills them in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.schema import MAX_RUN_ID, MAX_SIDE, HeaderError

__all__ = [
    "OVERLAY_DTYPES",
    "OVERLAY_FILE",
    "OVERLAY_VERSION",
    "OverlayMessage",
    "check_overlay_fields",
    "decode_overlay",
]

OVERLAY_VERSION = 1
OVERLAY_FILE = "overlay.json"
OVERLAY_DTYPES = ("uint8", "uint16", "uint32", "int32", "float16", "float32")

MAX_HEADER_BYTES = 64 * 2**20
_MAX_ARRAYS = 64
_MAX_NBYTES = 2**34
_MAX_ITEMS = 1_000_000
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


# ---------------------------------------------------------------- message


@dataclass(frozen=True)
class OverlayMessage:
    """One received overlay message.

    Attributes
    ----------
    header
        The validated header (overlay protocol v1: its fields are listed in
        the overlay bus's module doc, ``livescope/bus/_overlay.py``).
    arrays
        Name → read-only array viewing the message's buffer.
    t_received_ns
        When the receiver thread got it (`livescope.schema.clock_ns`).

    """

    header: dict[str, Any]
    arrays: dict[str, NDArray[Any]] = field(default_factory=dict)
    t_received_ns: int = 0

    @property
    def seq(self) -> int:
        """Sequence number of the frame the results belong to."""
        return int(self.header["seq"])

    @property
    def position(self) -> str:
        """Stage position name."""
        return str(self.header["position"])


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _fail(f"header is not JSON ({type(exc).__name__}: {exc})") from None
    if type(data) is not dict:
        raise _fail(f"header must be a JSON object, got {type(data).__name__}")
    return data


def _fail(msg: str) -> HeaderError:
    return HeaderError(f"bad overlay message: {msg}")


def _is_int(v: object, lo: int = _INT_MIN, hi: int = _INT_MAX) -> bool:
    return type(v) is int and lo <= v <= hi


def _is_num(v: object) -> bool:
    return (type(v) is float and math.isfinite(v)) or (type(v) is int and _INT_MIN <= v <= _INT_MAX)


def _is_str(v: object, max_len: int = 256) -> bool:
    return type(v) is str and len(v) <= max_len


def _list(d: dict[str, Any], key: str) -> list[Any]:
    v = d.get(key, [])
    if type(v) is not list or len(v) > _MAX_ITEMS:
        raise _fail(f"{key} must be a list of at most {_MAX_ITEMS} items, got {v!r:.80}")
    return v


def _check_arrays(specs: list[Any], sizes: Sequence[int]) -> None:
    if len(specs) > _MAX_ARRAYS:
        raise _fail(f"{len(specs)} arrays, at most {_MAX_ARRAYS} allowed")
    if len(specs) != len(sizes):
        raise _fail(f"header lists {len(specs)} arrays, the message carries {len(sizes)} buffers")
    names: set[str] = set()
    for spec, size in zip(specs, sizes, strict=True):
        if type(spec) is not dict:
            raise _fail(f"arrays items must be objects, got {spec!r:.80}")
        name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
        if not _is_str(name) or not name or name in names:
            raise _fail(f"array names must be unique non-empty strings, got {name!r:.80}")
        names.add(name)
        if dtype not in OVERLAY_DTYPES:
            raise _fail(f"array {name!r}: dtype must be one of {OVERLAY_DTYPES}, got {dtype!r:.40}")
        if (
            type(shape) is not list
            or not 1 <= len(shape) <= 4
            or not all(_is_int(s, 1, MAX_SIDE) for s in shape)  # (a frame's sides at most)
        ):
            # (the limit said: a stitched label image 70000 px wide read "integers >= 1")
            raise _fail(
                f"array {name!r}: shape must be 1 to 4 integers from 1 to {MAX_SIDE}, "
                f"got {shape!r:.80}"
            )
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes > _MAX_NBYTES:
            raise _fail(f"array {name!r} of {nbytes} bytes is too large (at most {_MAX_NBYTES})")
        if nbytes != size:
            raise _fail(f"array {name!r}: buffer is {size} bytes, {dtype} {shape} needs {nbytes}")


def _check_cells(cells: list[Any]) -> None:
    for c in cells:
        if (
            type(c) is not dict
            or not _is_int(c.get("label"), 0)
            or not _is_int(c.get("track"))
            or not _is_num(c.get("y"))
            or not _is_num(c.get("x"))
            or not (c.get("state") is None or _is_str(c.get("state"), 64))
            or not (c.get("p_mitosis") is None or _is_num(c.get("p_mitosis")))
        ):
            raise _fail(
                "cells items must be {label: int >= 0, track: int, y, x: numbers, "
                f"state: str | null, p_mitosis: number | null}}, got {c!r:.120}"
            )


def _check_tails(tails: object) -> None:
    if type(tails) is not dict or len(tails) > _MAX_ITEMS:
        raise _fail(f"tails must map track ids to lists of [y, x], got {tails!r:.80}")
    for key, points in tails.items():
        digits = key[1:] if _is_str(key, 24) and key.startswith("-") else key
        if (
            not _is_str(digits, 24)
            or not digits.isascii()
            or not digits.isdecimal()
            or not _is_int(int(key))  # (a cell's track id is an int64: so is a tail's)
        ):
            raise _fail(f"tails keys must be track ids (integers as text), got {key!r:.40}")
        if type(points) is not list or len(points) > _MAX_ITEMS:
            raise _fail(f"tail of track {key} must be a list of [y, x], got {points!r:.80}")
        for p in points:
            if type(p) is not list or len(p) != 2 or not (_is_num(p[0]) and _is_num(p[1])):
                raise _fail(f"tail of track {key}: points must be [y, x] numbers, got {p!r:.80}")


def _check_decisions(decisions: list[Any]) -> None:
    for d in decisions:
        if (
            type(d) is not dict
            or not _is_str(d.get("rule"))
            or not _is_num(d.get("y"))
            or not _is_num(d.get("x"))
            or type(d.get("accepted")) is not bool
            or not _is_str(d.get("reason"), 4096)
        ):
            raise _fail(
                "decisions items must be {rule: str, y, x: numbers, accepted: bool, "
                f"reason: str}}, got {d!r:.120}"
            )


def check_overlay_fields(h: dict[str, Any], sizes: Sequence[int]) -> None:
    """Check a parsed header's version, identity fields and ``arrays`` (not its items).

    `decode_overlay` runs it first; `OverlayPublisher.publish` runs it on what it
    is about to send (cheap: no ``cells``, ``tails`` or ``decisions``), so that a
    message every viewer would reject is refused there, not lost in every viewer.

    Parameters
    ----------
    h
        The header as JSON gives it (plain ``int``, ``float``, ``str``, ``list``).
    sizes
        Bytes of each buffer of the message, in order.

    Raises
    ------
    HeaderError
        naming the first problem found.

    """
    # (type: JSON's true and 1.0 equal 1 in Python, and are no version)
    if type(h.get("v")) is not int or h.get("v") != OVERLAY_VERSION:
        # (what to do said: the viewer shows this, and nothing else, for every message)
        raise _fail(
            f"protocol version {h.get('v')!r:.40} is not {OVERLAY_VERSION} (a worker of another "
            "livescope version? run the worker and the viewer from the same livescope)"
        )
    for key, ok in (
        ("run_id", _is_str(h.get("run_id"), MAX_RUN_ID)),
        ("seq", _is_int(h.get("seq"), 0)),
        ("position", _is_str(h.get("position"))),
        ("t", _is_int(h.get("t"), 0)),
    ):
        if not ok:
            raise _fail(f"{key} is missing or invalid, got {h.get(key)!r:.80}")
    sample_time = h.get("sample_time_s")
    if sample_time is not None and not _is_num(sample_time):
        raise _fail(f"sample_time_s must be a finite number or null, got {sample_time!r:.40}")
    _check_arrays(_list(h, "arrays"), sizes)


def decode_overlay(
    raw_header: bytes, buffers: Sequence[memoryview | bytes], t_received_ns: int = 0
) -> OverlayMessage:
    """Validate one overlay message and view its buffers as arrays (no copy).

    Called by `OverlaySubscriber`'s receiver thread; usable on its own (tests,
    recorded messages). Unknown header fields are kept (forward-compatible
    within v1); the JSON is parsed as data only (never unpickled).

    Parameters
    ----------
    raw_header
        Part 1 of the message.
    buffers
        The remaining parts, one per array.
    t_received_ns
        Stored in the message.

    Raises
    ------
    HeaderError
        naming the first problem found.

    """
    if len(raw_header) > MAX_HEADER_BYTES:
        raise _fail(f"header of {len(raw_header)} bytes is larger than {MAX_HEADER_BYTES}")
    h = _json_object(raw_header)
    views = [memoryview(b) for b in buffers]
    check_overlay_fields(h, [v.nbytes for v in views])
    specs = _list(h, "arrays")
    _check_cells(_list(h, "cells"))
    _check_tails(h.get("tails", {}))
    _check_decisions(_list(h, "decisions"))
    arrays: dict[str, NDArray[Any]] = {}
    for spec, view in zip(specs, views, strict=True):
        arr = np.frombuffer(view, dtype=spec["dtype"]).reshape(spec["shape"])
        arr.flags.writeable = False
        arrays[spec["name"]] = arr
    return OverlayMessage(h, arrays, t_received_ns)
