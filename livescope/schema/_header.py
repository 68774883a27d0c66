"""Wire protocol v1 of the frame bus: the header that travels with every frame.

A frame is a two-part ZeroMQ message: part 1 the header (UTF-8 JSON object),
part 2 the pixels (``inline``: the raw C-order buffer; ``shm``: empty, the pixels
are in a shared-memory slot the header names). `decode_header` validates every
field before anything uses it; a bad header raises `HeaderError` with the reason.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any, Literal, NotRequired, TypedDict, cast

from ._base import json_object
from ._errors import LivescopeError
from ._frame import roi_offset_pair

__all__ = [
    "ALLOWED_DTYPES",
    "MAX_RUN_ID",
    "MAX_SIDE",
    "PROTOCOL_VERSION",
    "FrameHeader",
    "HeaderError",
    "ShmRef",
    "check_header",
    "decode_header",
    "encode_header",
]

PROTOCOL_VERSION = 1
ALLOWED_DTYPES = ("uint8", "uint16", "uint32", "float32")
_ITEMSIZE = {"uint8": 1, "uint16": 2, "uint32": 4, "float32": 4}
_MAX_HEADER_BYTES = 64 * 1024
MAX_SIDE = 65536
"""A frame's longest side on the wire, pixels."""
MAX_RUN_ID = 128
"""A run id's most characters on the wire."""
_MAX_NBYTES = 2**34


class HeaderError(LivescopeError, ValueError):
    """A frame header (or its payload) is malformed; the message is rejected."""


class ShmRef(TypedDict):
    """Where a frame's pixels are in shared memory."""

    name: str
    slot: int
    generation: int


class FrameHeader(TypedDict):
    """Header of one frame (wire protocol v1). Units are in the names.

    Times are ``clock_ns()`` of the agent's host: ``t_camera_ns`` when the
    frame reached the agent from the camera, ``t_agent_ns`` when it was handed to
    the bus, ``t_sent_ns`` when it was sent. ``sample_time_s`` is the plan clock
    (seconds since the run started, in sample time) and ``added_by`` the id of
    the decision that added the frame's event (None for the plan's own frames);
    both are optional in v1 (absent from older senders: None; the worker times
    a frame without a sample time by its ``t_camera_ns``).
    ``roi_offset_px`` (optional too) is where the frame's centre is from the
    camera sensor's, which the stage position is the place of: (columns, rows)
    in the frame's pixels, a camera ROI off the sensor's centre. Absent or
    None: not known, taken as centred.
    """

    v: int
    run_id: str
    seq: int
    index: dict[str, int]
    channel: str
    position: str
    x_um: float | None
    y_um: float | None
    z_um: float | None
    exposure_ms: float
    pixel_size_um: float
    t_camera_ns: int
    t_agent_ns: int
    t_sent_ns: int
    shape: list[int]
    dtype: str
    payload: Literal["inline", "shm"]
    shm: ShmRef | None
    sample_time_s: float | None
    added_by: str | None
    roi_offset_px: NotRequired[list[float] | None]


def encode_header(header: FrameHeader) -> bytes:
    """Serialise a header (compact JSON in UTF-8; never pickle).

    Raises
    ------
    HeaderError
        naming the field that JSON cannot carry or that `decode_header` would
        refuse as not text: a NaN or infinite number (e.g. a stage position),
        a value of another type, a string with a lone surrogate; or for a header
        larger than `decode_header` takes.

    """
    try:
        # (not ensure_ascii: a lone surrogate then fails here, at the sender, instead of being
        # escaped into a header every subscriber refuses)
        text = json.dumps(header, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        raw = text.encode()
    except (ValueError, TypeError) as exc:
        raise _unencodable(header, exc) from None
    if len(raw) > _MAX_HEADER_BYTES:  # (`decode_header` refuses it: e.g. an index of long names)
        raise _fail(f"{len(raw)} bytes is larger than {_MAX_HEADER_BYTES}")
    return raw


def _unencodable(header: FrameHeader, exc: Exception) -> HeaderError:
    """Name the field of ``header`` that cannot be encoded (``exc``: json's error)."""
    for key, value in header.items():
        try:
            json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
        except (ValueError, TypeError) as field_exc:
            return _fail(
                f"{key} = {value!r:.80} cannot go on the wire ({field_exc}): a header holds "
                "finite numbers and Unicode text"
            )
    return _fail(f"cannot be encoded ({exc})")


def _fail(msg: str) -> HeaderError:
    return HeaderError(f"bad frame header: {msg}")


def _int(d: dict[str, Any], key: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    v = d.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise _fail(f"{key} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _is_text(s: str) -> bool:
    r"""Whether ``s`` is Unicode text (JSON's ``\ud800`` escapes a lone surrogate, which is not).

    A lone surrogate let through fails later, where the name is written as
    UTF-8 (the worker's cells.csv), and stops the analysis.
    """
    if s.isascii():
        return True
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


def _str(d: dict[str, Any], key: str, max_len: int = 256) -> str:
    v = d.get(key)
    if not isinstance(v, str) or len(v) > max_len:
        raise _fail(f"{key} must be a string of at most {max_len} characters, got {v!r:.80}")
    if not _is_text(v):
        raise _fail(
            f"{key} {v!r:.80} holds a lone UTF-16 surrogate (\\ud800-\\udfff escaped alone), "
            "which is not Unicode text"
        )
    return v


def _num(
    d: dict[str, Any], key: str, optional: bool = False, lo: float | None = None
) -> float | None:
    v = d.get(key)
    if v is None and optional:
        return None
    x = math.nan
    if isinstance(v, int | float) and not isinstance(v, bool):
        # (an integer too large for a float stays NaN: JSON allows any number of digits)
        with contextlib.suppress(OverflowError):
            x = float(v)
    if not math.isfinite(x):
        raise _fail(f"{key} must be a finite number, got {v!r:.80}")
    if lo is not None and x < lo:
        # (a negative pixel size placed every cell and close-up mirrored; 0: not known)
        raise _fail(f"{key} must be >= {lo:g}, got {v!r:.80}")
    return x


def decode_header(raw: bytes, payload_nbytes: int | None = None) -> FrameHeader:
    """Parse and validate a header.

    Parameters
    ----------
    raw
        Part 1 of the message.
    payload_nbytes
        Size of part 2 for ``inline`` frames (checked against shape and dtype).

    Raises
    ------
    HeaderError
        naming the first problem found.

    """
    if len(raw) > _MAX_HEADER_BYTES:
        raise _fail(f"{len(raw)} bytes is larger than {_MAX_HEADER_BYTES}")
    try:
        d = json_object(raw, "header")
    except ValueError as exc:
        raise _fail(str(exc)) from None
    return _checked(d, payload_nbytes)


def check_header(header: FrameHeader) -> None:
    """Raise if `decode_header` would refuse ``header`` once encoded (a sender, before sending).

    The receiver's own checks, run on the header as built: a name longer than
    the wire carries, a negative exposure, an index of 2**31 or more. (A dict
    key that is not text, which JSON would turn into text, is refused here.)
    Its size once encoded is checked by `encode_header`.

    Raises
    ------
    HeaderError
        naming the first field refused.

    """
    _checked(cast("dict[str, Any]", header), None)


def _checked(d: dict[str, Any], payload_nbytes: int | None) -> FrameHeader:
    """Return the header ``d`` holds, every field checked (`decode_header`)."""
    v = d.get("v")
    if type(v) is not int or v != PROTOCOL_VERSION:  # (true and 1.0 equal 1 in Python)
        raise _fail(f"protocol version {v!r} is not {PROTOCOL_VERSION}")
    index = d.get("index")
    if not isinstance(index, dict) or not all(
        isinstance(k, str) and _is_text(k) and type(i) is int and 0 <= i < 2**31
        for k, i in index.items()
    ):
        raise _fail(f"index must map axis names to non-negative integers, got {index!r:.80}")
    shape = d.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 4
        or not all(type(s) is int and 1 <= s <= MAX_SIDE for s in shape)
    ):
        raise _fail(f"shape must be 1 to 4 positive integers, got {shape!r:.80}")
    dtype = d.get("dtype")
    if dtype not in ALLOWED_DTYPES:
        raise _fail(f"dtype must be one of {ALLOWED_DTYPES}, got {dtype!r:.40}")
    nbytes = math.prod(shape) * _ITEMSIZE[dtype]
    if nbytes > _MAX_NBYTES:
        raise _fail(f"frame of {nbytes} bytes is too large")
    payload = d.get("payload")
    shm = d.get("shm")
    if payload == "inline":
        if shm is not None:
            raise _fail("inline frames carry no shm reference")
        if payload_nbytes is not None and payload_nbytes != nbytes:
            raise _fail(f"payload is {payload_nbytes} bytes, shape and dtype need {nbytes}")
    elif payload == "shm":
        if not isinstance(shm, dict):
            raise _fail("shm frames need a shm reference")
        _str(shm, "name", 128)
        _int(shm, "slot", 0, 1 << 20)
        _int(shm, "generation")
        if payload_nbytes not in (None, 0):
            raise _fail("shm frames carry no inline payload")
    else:
        raise _fail(f"payload must be 'inline' or 'shm', got {payload!r:.40}")
    added_by = d.get("added_by")
    if added_by is not None:
        added_by = _str(d, "added_by", 64)
    header = FrameHeader(
        v=PROTOCOL_VERSION,
        run_id=_str(d, "run_id", MAX_RUN_ID),
        seq=_int(d, "seq"),
        index={str(k): int(i) for k, i in index.items()},
        channel=_str(d, "channel"),
        position=_str(d, "position"),
        x_um=_num(d, "x_um", optional=True),
        y_um=_num(d, "y_um", optional=True),
        z_um=_num(d, "z_um", optional=True),
        exposure_ms=_num(d, "exposure_ms", lo=0.0) or 0.0,
        pixel_size_um=_num(d, "pixel_size_um", lo=0.0) or 0.0,
        t_camera_ns=_int(d, "t_camera_ns"),
        t_agent_ns=_int(d, "t_agent_ns"),
        t_sent_ns=_int(d, "t_sent_ns"),
        shape=list(shape),
        dtype=str(dtype),
        payload=payload,
        shm=None
        if shm is None
        else ShmRef(name=shm["name"], slot=shm["slot"], generation=shm["generation"]),
        sample_time_s=_num(d, "sample_time_s", optional=True),
        added_by=added_by,
    )
    offset = d.get("roi_offset_px")
    if offset is not None:
        pair = roi_offset_pair(offset)
        if pair is None or max(abs(pair[0]), abs(pair[1])) > MAX_SIDE:
            raise _fail(
                f"roi_offset_px must be [columns, rows], each a number of at most {MAX_SIDE} "
                f"px either way, got {offset!r:.80}"
            )
        header["roi_offset_px"] = list(pair)
    return header
