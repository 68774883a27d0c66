"""The overlay bus: analysis results of the newest frames, for live viewers.

The worker publishes one message per analysed field; viewers keep only the
newest message of each position ("latest wins"). Neither side ever waits for
the other: a viewer too far behind misses messages (that viewer only: see
`OverlayPublisher`), and the viewer's receiver thread drains its socket as fast
as it can, so what it shows is the newest frame, not a backlog.

A message is a ZeroMQ multipart message: part 1 a UTF-8 JSON header (overlay
protocol v1), then one raw C-order buffer per array, in the order the header's
``arrays`` lists them. Header fields:

``v`` (1), ``run_id``, ``seq`` (the frame's sequence number), ``position``,
``t`` (time index), ``sample_time_s`` (float or null), ``arrays`` (list of
``{"name", "dtype", "shape"}``), ``cells`` (list of ``{"label", "track", "y",
"x", "state", "p_mitosis"}``, centroids in px), ``tails`` (``{"<track id>":
[[y, x], ...]}``, oldest first, px), ``decisions`` (list of ``{"rule", "y", "x",
"accepted", "reason"}`` fired on this frame), ``field_decisions`` (only when
some fired on the whole field, with no place on it: list of ``{"rule",
"accepted", "reason"}``; not checked by `decode_overlay`).

Array names: ``raw:<channel>`` (camera frames), ``labels`` (int32 instance
labels), ``stain`` (float32 or float16 virtual stain).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from numpy.typing import NDArray

from livescope.schema import (
    HeaderError,
    LivescopeError,
    clock_ns,
    remove_file,
    while_locked,
    write_atomic,
)

from ._endpoints import (
    BusSecurity,
    bind,
    connect,
    local_endpoint,
    remove_ipc_files,
    remove_left_ipc_file,
    sub_socket,
)
from ._overlay_wire import (
    MAX_HEADER_BYTES,
    OVERLAY_DTYPES,
    OVERLAY_FILE,
    OVERLAY_VERSION,
    OverlayMessage,
    check_overlay_fields,
    decode_overlay,
)

__all__ = ["OverlayPublisher", "OverlaySubscriber"]

logger = logging.getLogger("livescope")

_CLOSE_LINGER_MS = 1000
"""How long `OverlayPublisher.close` waits for queued messages to go out, in ms."""

_LINK_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
"""What the subscriber's socket monitor reports: whether a publisher is there."""


def _plain(obj: object) -> Any:
    """JSON fallback for numpy scalars and arrays given in a header."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _placed(decisions: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Split decisions into those with a place (y, x) and those fired on the whole field."""
    if not isinstance(decisions, list | tuple):
        return decisions, []  # (sent as it is: the viewers reject it and say why)
    placed: list[Any] = []
    whole: list[dict[str, Any]] = []
    for d in decisions:
        if isinstance(d, Mapping) and (d.get("y") is None or d.get("x") is None):
            whole.append({k: d.get(k) for k in ("rule", "accepted", "reason")})
        else:
            placed.append(d)
    return placed, whole


# ---------------------------------------------------------------- publisher


class OverlayPublisher:
    """Publishes overlay messages (worker side); never blocks.

    Parameters
    ----------
    run_id
        Written into every header.
    run_dir
        If given, ``run_dir/overlay.json`` tells viewers where to connect; it is
        written atomically now and removed by `close`.
    endpoint
        Where to bind (default: a fresh local endpoint).
    security
        CURVE keys; required to bind to a non-loopback address.
    sndhwm
        Messages queued per viewer; a viewer this far behind misses the next
        ones (it shows its position's next message: latest wins).

    Notes
    -----
    The socket is an XPUB: each viewer has a queue of its own, and a message
    one viewer has no room for still goes to the others. (With
    ``XPUB_NODROP`` such a message went to none: a viewer that stopped reading,
    a process stopped in a debugger or a laptop asleep on a network link, held
    back every viewer's overlay until its connection ended, minutes, or for
    good; one on a slow link slowed every viewer to its pace.) What a viewer
    missed is not seen here: it counts what it received and replaced. Call
    `publish` and `close` from one thread only.

    """

    def __init__(
        self,
        run_id: str,
        *,
        run_dir: Path | None = None,
        endpoint: str | None = None,
        security: BusSecurity | None = None,
        sndhwm: int = 4,
    ) -> None:
        self.run_id = run_id
        self._security = security
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock = self._ctx.socket(zmq.XPUB)
        self._file: Path | None = None
        self._closed = False
        bound: str | None = None
        try:
            self._sock.setsockopt(zmq.SNDHWM, sndhwm)
            self._sock.setsockopt(zmq.LINGER, 0)
            self.endpoint = bound = bind(
                self._sock, endpoint or local_endpoint("overlay"), security
            )
            if run_dir is not None:
                self._file = Path(run_dir) / OVERLAY_FILE
                _remove_stale_socket(self._file)
                info = {"run_id": run_id, "endpoint": self.endpoint, "v": OVERLAY_VERSION}
                _write_overlay_file(self._file, json.dumps(info, indent=1))
        except BaseException:
            self._sock.close(0)
            if security is not None:
                security.release(self._ctx)
            self._ctx.term()
            remove_ipc_files(bound)  # (as `close` does: else its socket file stays behind)
            raise
        self.published = 0
        self.dropped = 0
        self.bytes_published = 0
        self.subscribed = False

    def _drain_subscriptions(self) -> None:
        # XPUB hands us (un)subscriptions: read them so they never pile up, and
        # learn whether anyone listens (first subscribe / last unsubscribe).
        while True:
            try:
                msg = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] in (b"\x00", b"\x01"):
                self.subscribed = msg[:1] == b"\x01"

    def publish(self, header: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]]) -> bool:
        """Send the results of one frame; returns False if the socket refused it.

        Never blocks. The arrays are sent without a copy: they must not change
        afterwards.

        Parameters
        ----------
        header
            ``seq``, ``position``, ``t`` (required), ``sample_time_s``, ``cells``,
            ``tails``, ``decisions`` (optional: null or empty); see the module doc.
            ``v``, ``run_id`` and ``arrays`` are filled in here. Numpy scalars
            and arrays are accepted (converted to JSON numbers and lists). A
            decision with a null ``y`` or ``x`` (a rule fired on the whole
            field) is sent in ``field_decisions``.
        arrays
            Name → array (1 to 4 dimensions, a dtype of `OVERLAY_DTYPES`).

        Raises
        ------
        LivescopeError
            if the header lacks a required field or cannot be encoded (NaN,
            an unknown type), a field every viewer checks is invalid (``seq``
            or ``t`` not an integer >= 0, ``position`` not a string of at most
            256 characters, ``sample_time_s`` not a number), or an array has an
            unsupported dtype, name or shape (sides at most 65536). The
            items of ``cells``, ``tails`` and ``decisions`` are checked by the
            viewers only (`decode_overlay`).

        """
        if self._closed:
            raise LivescopeError("overlay publisher is closed")
        missing = [k for k in ("seq", "position", "t") if k not in header]
        if missing:
            raise LivescopeError(f"overlay header lacks {', '.join(missing)}")
        specs: list[dict[str, Any]] = []
        buffers: list[memoryview] = []
        for name, a in arrays.items():
            arr = np.ascontiguousarray(a)
            if not arr.dtype.isnative:
                arr = arr.astype(arr.dtype.newbyteorder("="))
            if arr.dtype.name not in OVERLAY_DTYPES or not 1 <= arr.ndim <= 4 or arr.size == 0:
                raise LivescopeError(
                    f"overlay array {name!r}: {arr.dtype} {arr.shape} is not supported "
                    f"(dtypes {', '.join(OVERLAY_DTYPES)}; 1 to 4 non-empty dimensions)"
                )
            specs.append({"name": str(name), "dtype": arr.dtype.name, "shape": list(arr.shape)})
            buffers.append(arr.data.cast("B"))
        msg = {
            "sample_time_s": None,
            **header,
            "v": OVERLAY_VERSION,
            "run_id": self.run_id,
            "arrays": specs,
        }
        for key, empty in (("cells", []), ("tails", {}), ("decisions", [])):
            if msg.get(key) is None:  # (null: none; the decoder wants a list or a map)
                msg[key] = empty
        msg["decisions"], whole = _placed(msg["decisions"])
        if whole:  # (a null y or x would have every viewer reject the whole message)
            msg["field_decisions"] = whole
        try:
            raw = json.dumps(msg, separators=(",", ":"), allow_nan=False, default=_plain).encode()
            top = {k: msg[k] for k in ("v", "run_id", "seq", "position", "t", "sample_time_s")}
            top = json.loads(json.dumps({**top, "arrays": specs}, default=_plain))
        except (TypeError, ValueError) as exc:
            raise LivescopeError(f"overlay header cannot be encoded as JSON: {exc}") from None
        try:  # (a message every viewer rejects would be counted as published here, and lost)
            if len(raw) > MAX_HEADER_BYTES:  # (cells and tails of a crowded field)
                raise HeaderError(
                    f"its header of {len(raw)} bytes is larger than {MAX_HEADER_BYTES}"
                )
            check_overlay_fields(top, [b.nbytes for b in buffers])
        except HeaderError as exc:
            raise LivescopeError(f"every viewer would reject this overlay message: {exc}") from None
        self._drain_subscriptions()
        try:
            self._sock.send_multipart([raw, *buffers], flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.dropped += 1
            return False
        self.published += 1
        self.bytes_published += len(raw) + sum(b.nbytes for b in buffers)
        return True

    def stats(self) -> dict[str, Any]:
        """Counters: ``published``, ``dropped`` (refused by the socket), ``bytes``.

        A message a viewer had no room for is not counted in ``dropped``: it
        went to the others (see the class).
        """
        return {
            "endpoint": self.endpoint,
            "published": self.published,
            "dropped": self.dropped,
            "bytes": self.bytes_published,
            "subscribed": self.subscribed,
        }

    def close(self) -> None:
        """Remove ``overlay.json`` and close the socket (idempotent).

        Waits up to 1 s for the messages still queued to go out: the run's last
        field is the one a viewer left open goes on showing.
        """
        if self._closed:
            return
        self._closed = True
        if self._file is not None:
            remove_file(self._file)  # (never raises: the socket below is closed whatever)
        self._sock.close(_CLOSE_LINGER_MS)  # (bounded: a frozen viewer never holds it up longer)
        if self._security is not None:
            self._security.release(self._ctx)
        self._ctx.term()
        remove_ipc_files(self.endpoint)

    def __enter__(self) -> OverlayPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_overlay_file(file: Path, text: str) -> None:
    """Write ``overlay.json`` atomically.

    Raises
    ------
    LivescopeError
        if it cannot be written (the run folder is missing, read-only, full).

    """
    try:
        write_atomic(file, text)
    except OSError as exc:  # (it named the temporary file beside it, not the run folder)
        why = exc.strerror or str(exc)
        if not file.parent.is_dir():
            why = f"the run folder {file.parent} does not exist"
        raise LivescopeError(f"cannot write {file}: {why}") from None


def _remove_stale_socket(file: Path) -> None:
    """Remove the socket file of the publisher ``file`` names, gone without closing.

    A worker killed (or crashed) leaves its ``overlay.json`` and, for an
    ``ipc://`` endpoint, its socket file in the temp folder; the restarted
    worker's publisher replaces the one and removes the other. Only a socket
    file of ours (`local_endpoint`'s name in the temp folder) is removed.
    """
    try:
        old = json.loads(file.read_text(encoding="utf-8")).get("endpoint")
    except (OSError, ValueError, AttributeError):
        return  # none, or not ours to read
    if isinstance(old, str):
        remove_left_ipc_file(old, "overlay")


# ---------------------------------------------------------------- subscriber


def _resolve(source: str | Path, timeout_s: float) -> tuple[str, str | None]:
    """Return (endpoint, run id or None) for an endpoint, a run folder or its overlay.json."""
    if isinstance(source, str) and "://" in source:
        return source, None
    path = Path(source)
    file = path if path.suffix == ".json" and not path.is_dir() else path / OVERLAY_FILE
    if not timeout_s >= 0:  # (also NaN, which would wait forever)
        raise LivescopeError(f"timeout_s must be a number of seconds >= 0, got {timeout_s!r}")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            # (on Windows a file being replaced, as the worker does, cannot be opened
            # for a moment: PermissionError, tried again for up to a second)
            raw = while_locked(file.read_bytes)
            break
        except FileNotFoundError:
            if (file.parent / "summary.json").is_file():  # (a run writes it as it ends)
                raise LivescopeError(
                    f"{file.parent} holds a finished run (summary.json): nothing is published "
                    f"there any more; its report is {file.parent / 'report.html'}"
                ) from None
            if time.monotonic() >= deadline:
                if not file.parent.exists():
                    raise LivescopeError(
                        f"{file.parent} does not exist (no run was started there within "
                        f"{timeout_s:g} s): check the run folder's path"
                    ) from None
                if (hint := _not_a_run(file.parent)) is not None:
                    raise LivescopeError(hint) from None
                raise LivescopeError(
                    f"no {OVERLAY_FILE} in {file.parent} after {timeout_s:g} s: is a worker "
                    "publishing overlays for this run (e.g. `livescope worker --analyse`)?"
                ) from None
            time.sleep(0.05)
        except OSError as exc:  # a folder in its place, no permission, a file being replaced
            raise LivescopeError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        info = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise LivescopeError(f"{file} is not JSON ({exc})") from None
    if (
        not isinstance(info, dict)
        or info.get("v") != OVERLAY_VERSION
        or not isinstance(info.get("endpoint"), str)
        or not isinstance(info.get("run_id"), str)
    ):
        raise LivescopeError(f"{file} is not an overlay file of version {OVERLAY_VERSION}")
    return info["endpoint"], info["run_id"]


_RUN_FILES = (OVERLAY_FILE, "bus.json", "frames.jsonl", "summary.json")
"""Files only a run folder holds (`OverlaySubscriber` tells one from a folder near it)."""


def _is_run(folder: Path) -> bool:
    try:
        return any((folder / name).is_file() for name in _RUN_FILES)
    except OSError:  # (no permission: not one to tell about)
        return False


def _not_a_run(folder: Path) -> str | None:
    """Say which run ``folder`` is in or holds, when it is not a run folder itself."""
    if _is_run(folder):
        return None
    try:  # (the first 1000 entries: a folder of many files is not searched through)
        entries = list(itertools.islice(folder.iterdir(), 1000))
        runs = sorted(p.name for p in entries if p.is_dir() and _is_run(p))
    except OSError:
        runs = []
    if runs:
        names = ", ".join(runs[:10]) + (f", ... ({len(runs)} in all)" if len(runs) > 10 else "")
        return (
            f"{folder} holds run folders ({names}), it is not one: give the run's own folder, "
            f"e.g. {folder / runs[-1]}"
        )
    for parent in list(folder.absolute().parents)[:3]:
        if _is_run(parent):
            return f"{folder} is inside the run folder {parent}: give that folder"
    return None


class OverlaySubscriber:
    """Receives overlay messages and keeps the newest one per position.

    Parameters
    ----------
    source
        A run folder (its ``overlay.json`` is waited for up to ``timeout_s``),
        the ``overlay.json`` file itself, or an endpoint (``ipc://...``,
        ``tcp://...``).
    timeout_s
        How long to wait for ``overlay.json`` to appear, in seconds.
    security
        CURVE keys when the publisher listens on a network.
    rcvhwm
        Messages the socket may queue; the receiver thread keeps it near empty.
    max_bytes
        At most this many bytes of arrays are kept (1 GiB): past it, the
        positions received longest ago are let go (`latest` returns None for
        them until their next message), except the `pinned` one. A plate of
        many positions would otherwise hold a full field of each.

    Raises
    ------
    LivescopeError
        if no ``overlay.json`` appears in time, it is invalid, or the socket
        cannot connect.

    Notes
    -----
    A receiver thread owns the socket: it drains every queued message, checks
    each one (`decode_overlay`; a bad one is counted and logged, never raised)
    and replaces the stored message of that position. A run folder's run id is
    checked too: messages of another run are rejected. `latest`, `positions`
    and `stats` may be called from any thread. A monitor of the socket tells
    whether a publisher is there (`link_problem`): a worker killed before it
    removed its ``overlay.json`` names an endpoint nothing publishes at.

    """

    def __init__(
        self,
        source: str | Path,
        *,
        timeout_s: float = 10.0,
        security: BusSecurity | None = None,
        rcvhwm: int = 16,
        max_bytes: int = 1 << 30,
    ) -> None:
        self.endpoint, self.run_id = _resolve(source, timeout_s)
        self._refused: str | None = None  # an endpoint in overlay.json that did not connect
        self._file: Path | None = None  # followed: a restarted worker binds a new endpoint
        if not (isinstance(source, str) and "://" in source):
            p = Path(source)
            self._file = p if p.suffix == ".json" and not p.is_dir() else p / OVERLAY_FILE
        self.security = security
        self.rcvhwm = rcvhwm
        self.max_bytes = max_bytes
        self.pinned: str | None = None  # the position a viewer shows: never let go
        self.counts = Counter[str]()
        self._latest: dict[str, OverlayMessage] = {}  # received longest ago first
        self._sizes: dict[str, int] = {}  # bytes of arrays kept per position
        self._seen: dict[str, None] = {}  # every position, in the order first received
        self._link = "connecting"  # connected, nothing (listens), gone, refused
        self._link_since = time.monotonic()
        self._link_wall = time.time()  # (the same moment, on the wall clock: said to the user)
        self._newest: OverlayMessage | None = None
        self._rejected: str | None = None  # why the newest message was rejected (None: taken)
        self._newer_run: str | None = None  # another run's id overlay.json names since
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        # (the socket's own, apart: an error of the receiver right after it started, read
        # here, raised instead of being said by `link_problem`, now and then)
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="livescope-overlay-rx", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)
        if self._start_error is not None:
            raise LivescopeError(f"cannot attach to the overlay bus: {self._start_error}")

    # ------------------------------------------------------------ receiver thread

    def _run(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        sock: zmq.Socket[Any] | None = None
        monitor: zmq.Socket[Any] | None = None
        try:
            # (in here: a socket that cannot be made, e.g. out of file handles, left the
            # constructor waiting 5 s and returning a subscriber with no receiver)
            sock = sub_socket(ctx, self.rcvhwm)
            monitor = sock.get_monitor_socket(_LINK_EVENTS)  # (before connecting: every event)
            connect(sock, self.endpoint, self.security)
        except Exception as exc:  # noqa: BLE001 (reported to the constructor, which raises)
            self._error = self._start_error = exc
            self._ready.set()
            self._close(ctx, sock, monitor)
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        next_check = time.monotonic() + 0.5
        try:
            while not self._stop.is_set():
                if self._file is not None and time.monotonic() > next_check:
                    next_check = time.monotonic() + 0.5
                    self._follow(sock)
                ready = dict(poller.poll(50))
                if monitor in ready:
                    self._watch(monitor)
                if sock not in ready:
                    continue
                for _ in range(1024):  # everything queued now; the newest stays
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    try:
                        self._receive(parts)
                    except Exception:
                        self.counts["errors"] += 1
                        logger.exception("overlay receiver: a message could not be handled")
        except Exception as exc:
            logger.exception("overlay receiver stopped")
            self._error = exc
        finally:
            self._close(ctx, sock, monitor)

    def _close(
        self,
        ctx: zmq.Context[Any],
        sock: zmq.Socket[Any] | None,
        monitor: zmq.Socket[Any] | None,
    ) -> None:
        if monitor is not None and sock is not None:
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
            monitor.close(0)
        if sock is not None:
            sock.close(0)
        if self.security is not None:
            self.security.release(ctx)
        ctx.term()

    def _watch(self, monitor: zmq.Socket[Any]) -> None:
        """Follow the socket monitor's events of the current endpoint (is a publisher there?)."""
        from zmq.utils.monitor import recv_monitor_message

        while monitor.poll(0):
            event = recv_monitor_message(monitor)
            if event.get("endpoint", b"").decode(errors="replace") != self.endpoint:
                continue  # an endpoint left behind when a restarted worker was followed
            kind = int(event["event"])
            if kind & zmq.EVENT_HANDSHAKE_SUCCEEDED or (
                kind & zmq.EVENT_CONNECTED and self.security is None
            ):
                state = "connected"
            elif kind & zmq.EVENT_DISCONNECTED:
                state = "gone"
            elif kind & zmq.EVENT_CONNECT_RETRIED:
                state = "gone" if self._link == "gone" else "nothing"
            elif kind & zmq.EVENT_CONNECTED:
                continue  # CURVE: connected, not yet shaken hands
            else:
                state = "refused"
            if state != self._link:
                self._set_link(state)

    def _set_link(self, state: str) -> None:
        self._link_since, self._link_wall = time.monotonic(), time.time()
        self._link = state  # (last: link_problem reads the three without a lock)

    def _follow(self, sock: zmq.Socket[Any]) -> None:
        """Connect to the endpoint a restarted worker wrote into overlay.json, if it moved."""
        assert self._file is not None
        try:
            endpoint, run_id = _resolve(self._file, 0.0)
        except LivescopeError:
            return  # gone (the worker stopped) or being rewritten: look again later
        if run_id != self.run_id and run_id is not None:
            self._newer_run = run_id  # (not followed: said by `link_problem`)
        if endpoint in (self.endpoint, self._refused) or run_id != self.run_id:
            return
        try:
            connect(sock, endpoint, self.security)
        except (zmq.ZMQError, LivescopeError) as exc:  # keep the old one; say it once
            self._refused = endpoint
            logger.warning(
                "overlay: cannot connect to %s named in %s: %s", endpoint, self._file, exc
            )
            return
        with contextlib.suppress(zmq.ZMQError):
            sock.disconnect(self.endpoint)
        logger.info("overlay moved to %s (the worker was restarted)", endpoint)
        self.endpoint = endpoint
        self._set_link("connecting")
        self.counts["reconnected"] += 1

    def _receive(self, parts: list[zmq.Frame]) -> None:
        t_rx = clock_ns()
        self.counts["messages"] += 1
        try:
            msg = decode_overlay(parts[0].bytes, [p.buffer for p in parts[1:]], t_rx)
            if self.run_id is not None and msg.header["run_id"] != self.run_id:
                raise HeaderError(f"overlay of run {msg.header['run_id']!r:.80}, not this run")
        except HeaderError as exc:
            self.counts["rejected"] += 1
            self._rejected = str(exc)
            n = self.counts["rejected"]
            if n <= 10 or n % 1000 == 0:
                logger.warning("rejected an overlay message (%d so far): %s", n, exc)
            return
        self._rejected = None
        size = sum(a.nbytes for a in msg.arrays.values())
        with self._lock:
            if self._latest.pop(msg.position, None) is not None:
                self.counts["replaced"] += 1
            self._latest[msg.position] = msg  # (last: received most recently)
            self._sizes[msg.position] = size
            self._seen.setdefault(msg.position)
            self._newest = msg
            self._let_go(keep=msg.position)
        self.counts["received"] += 1

    def _let_go(self, keep: str) -> None:
        """Let the positions received longest ago go while more than `max_bytes` is kept."""
        held = sum(self._sizes.values())
        if held <= self.max_bytes:
            return
        for position in list(self._latest):
            if held <= self.max_bytes:
                break
            if position in (keep, self.pinned) or not self._sizes[position]:
                continue  # (one without arrays frees nothing)
            del self._latest[position]
            held -= self._sizes.pop(position)
            self.counts["let_go"] += 1

    # ------------------------------------------------------------ consumer API

    def latest(self, position: str | None = None) -> OverlayMessage | None:
        """Return the newest message of ``position`` (None: of any position), or None yet.

        Does not consume: calling again returns the same message until a newer one
        arrives (compare with ``is`` to see whether anything changed).
        """
        with self._lock:
            return self._newest if position is None else self._latest.get(position)

    def positions(self) -> list[str]:
        """Positions seen so far, in the order they first arrived (also those let go)."""
        with self._lock:
            return list(self._seen)

    def was_let_go(self, position: str) -> bool:
        """Whether ``position``'s newest message was let go to keep under `max_bytes`."""
        with self._lock:
            return position in self._seen and position not in self._latest

    def link_problem(self, grace_s: float = 1.0) -> str | None:
        """Say why no overlay can be shown, or None (connected, or connecting under ``grace_s``).

        A worker killed before it removed its ``overlay.json`` (nothing publishes
        at the endpoint it names), a worker that stopped (the run ended, or it
        was killed), a CURVE handshake refused, or a publisher whose newest
        message was rejected (another protocol version: a worker of another
        livescope version; another run's). A restarted worker's new endpoint is
        followed all the same. A receiver thread that stopped on an error says so
        (nothing more would be shown).
        """
        if self._error is not None and not self._thread.is_alive():
            return f"the overlay receiver stopped on an error: {self._error!r}"
        state, since = self._link, self._link_since
        if state == "connected" and (why := self._rejected) is not None:
            n = self.counts["rejected"]
            return f"{n} overlay message(s) from {self.endpoint} rejected, the newest: {why}"
        if state == "connected" or time.monotonic() - since < grace_s:
            return None
        named = f" named in {self._file}" if self._file is not None else ""
        if state == "gone":
            at = time.strftime("%H:%M:%S", time.localtime(self._link_wall))
            # (a new run in the folder is not followed: its overlay is another run's)
            newer = (
                f"; another run ({self._newer_run}) now publishes in this folder: start the "
                "viewer again to see it"
                if self._newer_run is not None
                else ""
            )
            return (
                f"the worker stopped publishing at {at} (the run ended, or the worker was "
                f"stopped or killed){newer}"
            )
        if state == "refused":
            return f"the security handshake with {self.endpoint} failed (CURVE keys)"
        if state == "nothing":
            return (
                f"nothing publishes at {self.endpoint}{named}: the worker that wrote it has "
                "ended or was killed, or has not started yet"
            )
        return f"no answer yet from {self.endpoint}{named}"

    def stats(self) -> dict[str, Any]:
        """Return the counters, ``positions``, ``link`` and ``alive``.

        Counters: ``messages``, ``received``, ``rejected``, ``replaced``, ``errors``,
        ``reconnected`` and ``let_go``. ``link``: is a publisher there (`link_problem`).
        """
        out: dict[str, Any] = {"endpoint": self.endpoint, "run_id": self.run_id}
        keys = ("messages", "received", "rejected", "replaced", "errors", "reconnected", "let_go")
        for key in keys:
            out[key] = int(self.counts[key])
        out["positions"] = self.positions()
        out["link"] = self._link
        out["alive"] = self._thread.is_alive()
        return out

    def close(self) -> None:
        """Stop the receiver thread and close the socket."""
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> OverlaySubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
