"""Endpoints and security of the bus sockets.

Local endpoints use ipc where the platform has it and tcp on the loopback
interface elsewhere (Windows). Binding to any other address needs CURVE keys:
an unauthenticated socket never listens on a network.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import socket
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from livescope.schema import LivescopeError

__all__ = [
    "BusSecurity",
    "bind",
    "connect",
    "handshake_problem",
    "is_loopback",
    "local_endpoint",
    "pid_lives",
    "remove_ipc_files",
    "remove_left_ipc_file",
    "remove_stale_ipc_files",
    "sub_socket",
    "subscribe",
    "watch_handshake",
]

logger = logging.getLogger("livescope")

STALE_AFTER_S = 60.0
"""A socket file of livescope's in the temp folder that no process has listened on for
longer than this (s) is a killed process's and may be removed (`remove_stale_ipc_files`)."""
_swept = threading.Event()


TRANSPORT_ENV = "LIVESCOPE_TRANSPORT"
"""``tcp`` or ``ipc``: the transport of local endpoints (unset: ipc where ZeroMQ has it, not
on Windows; else tcp on the loopback interface), e.g. ``tcp`` where the temp folder cannot
hold socket files, or to run Windows' transport on Linux."""


def uses_ipc(transport: str | None = None) -> bool:
    """Whether local endpoints are ``ipc://`` (``transport``, else ``LIVESCOPE_TRANSPORT``).

    A run checks it before it writes anything: a bad ``LIVESCOPE_TRANSPORT``
    would otherwise stop it once its output folder is half made.

    Raises
    ------
    LivescopeError
        for a transport other than ``ipc`` or ``tcp``, or ``ipc`` where ZeroMQ
        has none (Windows).

    """
    if transport is None:
        transport = os.environ.get(TRANSPORT_ENV, "").strip().lower() or None
        where = f" (from the {TRANSPORT_ENV} environment variable)"
    else:
        where = ""
    if transport not in (None, "ipc", "tcp"):
        raise LivescopeError(f"transport {transport!r}{where}: give tcp or ipc")
    has_ipc = zmq.has("ipc") and os.name != "nt"
    if transport == "ipc" and not has_ipc:
        raise LivescopeError(f"transport ipc{where}: ZeroMQ has no ipc sockets here; give tcp")
    return has_ipc if transport is None else transport == "ipc"


def local_endpoint(name: str, *, transport: str | None = None) -> str:
    """Return a fresh endpoint on this host for socket ``name``.

    ``ipc://`` in the temp folder where ZeroMQ supports ipc (not on Windows),
    else ``tcp://127.0.0.1:*`` (the port is chosen when binding; `bind` returns it).
    ``transport`` (else ``LIVESCOPE_TRANSPORT``) forces ``"ipc"`` or ``"tcp"``.
    Unforced, a temp folder whose path leaves no room for a socket file's
    name (``zmq.IPC_PATH_MAX_LEN``, 107 bytes on Linux) gives tcp too; forced
    ipc there, binding fails (`bind`).
    The first ipc endpoint of a process also removes the socket files killed
    processes left in the temp folder (`remove_stale_ipc_files`).

    Raises
    ------
    LivescopeError
        as `uses_ipc`.

    """
    if uses_ipc(transport):
        if not _swept.is_set():  # once per process: what killed runs left in the temp folder
            _swept.set()
            remove_stale_ipc_files()
        # (the process id in the name: a sweep never takes the file of a process that lives)
        leaf = f"livescope-{name}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        path = os.path.join(tempfile.gettempdir(), leaf)
        forced = (transport or os.environ.get(TRANSPORT_ENV, "")).strip().lower() == "ipc"
        if forced or not _ipc_path_too_long(path):
            return f"ipc://{path}"
        logger.debug(
            "local endpoint %r on tcp: its socket file %s would be %d bytes, over the %d ipc "
            "allows (a shorter TMPDIR gives ipc)", name, path, len(os.fsencode(path)),
            zmq.IPC_PATH_MAX_LEN,
        )  # fmt: skip
    return "tcp://127.0.0.1:*"


def _ipc_path_too_long(path: str) -> bool:
    """Whether ``path`` is longer than an ipc socket file's may be (False where none is known)."""
    limit = zmq.IPC_PATH_MAX_LEN  # (0 where ZeroMQ knows none: no ipc there)
    return bool(limit) and len(os.fsencode(path)) > limit


def remove_ipc_files(*endpoints: str | None) -> None:
    """Remove the socket files of ``ipc://`` endpoints this process bound, once closed.

    ZeroMQ leaves them behind (in the temp folder for `local_endpoint`); without
    this every run would leave its sockets' files there. Other endpoints are ignored.
    """
    for endpoint in endpoints:
        if endpoint and endpoint.startswith("ipc://") and not endpoint.startswith("ipc://@"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(endpoint[len("ipc://") :])


def remove_left_ipc_file(endpoint: str, name: str) -> None:
    """Remove the socket file a process killed before closing left for ``local_endpoint(name)``.

    Only a file of that name in the temp folder is removed: ``endpoint`` comes
    from a file another process wrote (e.g. ``overlay.json``).
    """
    if not endpoint.startswith("ipc://"):
        return
    path = Path(endpoint[len("ipc://") :])
    if path.parent == Path(tempfile.gettempdir()) and path.name.startswith(f"livescope-{name}-"):
        remove_ipc_files(endpoint)


def remove_stale_ipc_files(
    older_than_s: float = STALE_AFTER_S, *, folder: str | None = None
) -> list[str]:
    """Remove the socket files of `local_endpoint` that no process listens on; return them.

    A process that ends without closing its sockets (killed, crashed, the PC
    switched off) leaves their files in the temp folder, where nothing else
    removes them. A file is removed only if its name is livescope's, it is a
    socket of this user's, older than ``older_than_s`` (a socket bound a moment
    ago may not listen yet), the process named in it (`local_endpoint` puts its
    id there) has ended, and a connection to it is refused: no process holds
    it (on macOS a live socket whose queue is full refuses too). ``folder``:
    where to look (default: the temp folder). Nothing is done on Windows (it
    uses tcp).
    """
    if os.name == "nt" or not hasattr(socket, "AF_UNIX"):
        return []
    removed = []
    tmp = folder if folder is not None else tempfile.gettempdir()
    for entry in old_own_entries(tmp, "livescope-", stat.S_ISSOCK, older_than_s):
        if _process_lives(entry.name) or not _refuses_connections(entry.path):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(entry.path)
    return removed


def old_own_entries(
    folder: str, prefix: str, kind: Callable[[int], bool], older_than_s: float
) -> Iterator[os.DirEntry[str]]:
    """Yield the entries of ``folder`` left long enough to be judged stale (POSIX).

    Those named ``prefix...``, this user's, of ``kind`` (a `stat.S_IS*` test of
    their mode) and older than ``older_than_s``: where livescope looks for what
    ended processes left (`remove_stale_ipc_files`, `_shm.remove_stale_rings`);
    a folder it cannot read yields nothing.
    """
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.startswith(prefix):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (
                kind(st.st_mode)
                and now - st.st_mtime >= older_than_s
                and (not hasattr(os, "getuid") or st.st_uid == os.getuid())
            ):
                yield entry


def _process_lives(name: str) -> bool:
    """Return whether the process whose id a socket file's name holds is running (POSIX).

    ``livescope-<socket>-<pid>-<hex>``; a name without an id (older files) gives False.
    """
    parts = name.split("-")
    if len(parts) < 4 or not parts[-2].isdigit():
        return False
    return pid_lives(int(parts[-2]))


def pid_lives(pid: int) -> bool:
    """Return whether process ``pid`` is running (POSIX; also the rings of `livescope.bus._shm`).

    A process of another user's, or one this process may not ask about, counts as running;
    on Windows every process does (nothing is judged left behind there).
    """
    # (an if-else, not code after a return: mypy checks the else branch for POSIX only)
    if sys.platform == "win32":  # (os.kill there ends the process, whatever the signal)
        return True
    else:
        if pid <= 0:  # (0 and -1 would ask about process groups)
            return False
        try:
            os.kill(pid, 0)  # (signal 0: only asks)
        except ProcessLookupError:
            return False
        except OSError:  # (another user's process, or no permission to ask)
            return True
        return True


def _refuses_connections(path: str) -> bool:
    """Return True if nothing listens on the Unix socket file ``path`` (False on Windows)."""
    if sys.platform == "win32":  # (no AF_UNIX in Python there; the bus uses tcp)
        return False
    else:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(0.5)
            probe.connect(path)
        except ConnectionRefusedError:
            return True
        except OSError:
            return False  # (a full backlog, no permission...): left alone
        finally:
            probe.close()
        return False


def is_loopback(endpoint: str) -> bool:
    """Return True for ipc/inproc endpoints and tcp on a loopback address."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: a network address


@dataclass(frozen=True)
class BusSecurity:
    """CURVE keys (Z85 text) for sockets that listen on a network.

    The binding side holds ``server_secret``/``server_public``; connecting sides
    need ``server_public`` and their own key pair. If ``allowed_clients`` is
    given, only those client public keys may connect (pyzmq's authenticator).
    """

    server_public: bytes
    server_secret: bytes | None = None
    client_public: bytes | None = None
    client_secret: bytes | None = None
    allowed_clients: tuple[bytes, ...] | None = None
    _auth: dict[int, Any] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def generate() -> tuple[bytes, bytes]:
        """Return a new (public, secret) CURVE key pair."""
        return zmq.curve_keypair()

    def apply_server(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE server (call before bind)."""
        if self.server_secret is None:
            raise LivescopeError("a CURVE server needs server_secret")
        ctx = sock.context
        if self.allowed_clients is not None and id(ctx) not in self._auth:
            from zmq.auth import CURVE_ALLOW_ANY
            from zmq.auth.thread import ThreadAuthenticator

            # one authenticator (ZAP handler) per context, stopped by `release`
            auth = ThreadAuthenticator(ctx)
            auth.start()
            auth.configure_curve(domain="*", location=CURVE_ALLOW_ANY)
            allowed = set(self.allowed_clients)
            auth.configure_curve_callback(domain="*", credentials_provider=_Allow(allowed))
            self._auth[id(ctx)] = auth
        sock.curve_secretkey = self.server_secret
        sock.curve_publickey = self.server_public
        sock.curve_server = True

    def apply_client(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client of the server (call before connect)."""
        public, secret = self.client_public, self.client_secret
        if public is None or secret is None:
            public, secret = zmq.curve_keypair()
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = public
        sock.curve_secretkey = secret

    def release(self, ctx: zmq.Context[Any]) -> None:
        """Stop the authenticator of ``ctx`` (before terminating the context)."""
        auth = self._auth.pop(id(ctx), None)
        if auth is not None:
            auth.stop()

    def close(self) -> None:
        """Stop every authenticator thread."""
        for auth in self._auth.values():
            auth.stop()
        self._auth.clear()


class _Allow:
    def __init__(self, allowed: set[bytes]) -> None:
        self.allowed = allowed

    def callback(self, domain: str, key: bytes) -> bool:
        return zmq.utils.z85.encode(key) in self.allowed or key in self.allowed


def bind(sock: zmq.Socket[Any], endpoint: str, security: BusSecurity | None = None) -> str:
    """Bind ``sock``; refuse a network address without CURVE keys. Returns the endpoint bound.

    A relative ipc path (``ipc://frames.sock``) is bound in the current folder
    and returned absolute: the endpoint is handed to processes started
    elsewhere (``bus.json``), for whom the relative path names another file.

    Raises
    ------
    LivescopeError
        if ``endpoint`` is not a tcp, ipc or inproc address, is not loopback and
        ``security`` is None, is tcp with a port that is not ``*`` (or ``0``)
        or a number from 1 to 65535, or cannot be bound (in use, malformed, an ipc path
        whose folder does not exist, or where a file that is not a socket is).

    """
    scheme, sep, _ = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc"):
        raise LivescopeError(
            f"{endpoint!r} is not a ZeroMQ endpoint: give tcp://127.0.0.1:PORT (or "
            "tcp://127.0.0.1:* for any free port), or leave it out for a fresh local one"
        )
    if (bad := _bad_port(endpoint, wildcard=True)) is not None:
        # (ZeroMQ keeps a port's low 16 bits: asked :70000, it listened on :4464)
        raise LivescopeError(
            f"cannot listen on {endpoint}: Invalid argument ({bad}); give "
            "tcp://127.0.0.1:PORT with PORT from 1 to 65535 (tcp://127.0.0.1:* for any free "
            "port), or leave the endpoint out for a fresh local one"
        )
    given = endpoint[len("ipc://") :] if scheme == "ipc" else ""
    if given and not given.startswith("@") and given != "*":  # (no file: no folder either)
        endpoint = f"ipc://{os.path.abspath(given)}"  # (its length is what ipc limits)
    taken = _ipc_path_taken(endpoint[len("ipc://") :]) if scheme == "ipc" else None
    if taken is not None:
        raise LivescopeError(
            f"cannot listen on {endpoint}: {taken}; give another path, or "
            "tcp://127.0.0.1:PORT (tcp://127.0.0.1:* for any free port), or leave the "
            "endpoint out for a fresh local one"
        )
    _enable_ipv6(sock, endpoint)
    if security is not None:
        security.apply_server(sock)
    elif not is_loopback(endpoint):
        raise LivescopeError(
            f"refusing to bind {endpoint} without CURVE keys: livescope binds to loopback by "
            "default; to listen on a network pass BusSecurity (server key pair)"
        )
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:  # in use, malformed, or an ipc path whose folder is missing
        path = endpoint[len("ipc://") :]
        if scheme == "ipc" and _ipc_path_too_long(path):
            size = f"its path is {len(os.fsencode(path))} bytes, over ipc's {zmq.IPC_PATH_MAX_LEN}"
            if Path(given).parent == Path(tempfile.gettempdir()):  # (a `local_endpoint`)
                advice = (
                    f"the temp folder's path is too long: set {TRANSPORT_ENV}=tcp, "
                    "or a shorter TMPDIR"
                )
            else:
                advice = (
                    "give a shorter path, or tcp://127.0.0.1:PORT (tcp://127.0.0.1:* for any "
                    f"free port); {TRANSPORT_ENV}=tcp puts the endpoints not given on tcp"
                )
            raise LivescopeError(f"cannot listen on {endpoint}: {size}; {advice}") from None
        if scheme == "ipc" and Path(given).parent == Path(tempfile.gettempdir()):
            # a `local_endpoint`: the endpoint was left out, the temp folder is the trouble
            raise LivescopeError(
                f"cannot listen on {endpoint}: {exc.strerror}; the temp folder "
                f"{Path(path).parent} cannot hold the bus's socket files: set "
                f"{TRANSPORT_ENV}=tcp, or TMPDIR to a local folder that exists"
            ) from None
        if scheme == "ipc" and given and not (folder := Path(path).parent).is_dir():
            # (ZeroMQ names only the socket's path: the folder is what to make)
            why = (
                f"{folder} is not a folder; give"
                if folder.exists()
                else f"{os.strerror(errno.ENOENT)}: the folder {folder} does not exist; make "
                "it, or give"
            )
            raise LivescopeError(
                f"cannot listen on {endpoint}: {why} an ipc path in a folder that exists, or "
                "tcp://127.0.0.1:PORT (tcp://127.0.0.1:* for any free port)"
            ) from None
        raise LivescopeError(
            f"cannot listen on {endpoint}: {exc.strerror}; give a free port "
            "(tcp://127.0.0.1:PORT, or tcp://127.0.0.1:* for any), or leave the endpoint out "
            "for a fresh local one"
        ) from None
    last = sock.getsockopt(zmq.LAST_ENDPOINT)
    return last.decode() if isinstance(last, bytes) else str(last)


def _bad_port(endpoint: str, *, wildcard: bool) -> str | None:
    """Say what is wrong with a ``tcp://`` endpoint's port (None: nothing, or not tcp).

    A port is a number from 1 to 65535; binding, also ``*`` or ``0`` (any free
    port, as ZeroMQ reads them). ZeroMQ itself keeps the low 16 bits of any
    number and ignores what follows one: ``:70000`` listened on (or connected
    to) ``:4464``, ``:-1`` on ``:65535``, ``:8e3`` on ``:8``, with no error.
    """
    scheme, _, rest = endpoint.partition("://")
    if scheme != "tcp":
        return None
    _, sep, port = rest.rpartition(":")
    if not sep or "]" in port:  # (``tcp://[::1]``: the colons are the address's)
        return "no port"
    if wildcard and port in ("*", "0"):
        return None
    if port.isascii() and port.isdigit() and 1 <= int(port) <= 65535:
        return None
    return f"port {port!r} is not a number from 1 to 65535"


def _ipc_path_taken(path: str) -> str | None:
    """Say what binding ipc at ``path`` would take from someone (None: nothing, POSIX).

    ZeroMQ deletes whatever ``path`` names before it binds there, and succeeds:
    the socket file of a process that listens on it (which goes on listening,
    unreachable, its peers then reaching this one) or any file at all. A socket
    file nothing listens on (left by a process that ended) is replaced, as
    ZeroMQ does. (Another process may still bind the path between this look
    and the bind.) Not looked at on Windows (Python has no AF_UNIX there).
    """
    if os.name == "nt" or not hasattr(socket, "AF_UNIX") or path.startswith("@") or path == "*":
        return None  # (abstract names have no file; ``*`` is a fresh one ZeroMQ makes)
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None  # (nothing there; or a folder that is missing, which bind reports)
    if not stat.S_ISSOCK(mode):
        return f"{path} is a file that is not a socket (ZeroMQ would delete it)"
    if _refuses_connections(path):
        return None
    return f"another socket listens on {path} (a process that has it open)"


def _enable_ipv6(sock: zmq.Socket[Any], endpoint: str) -> None:
    """Let ``sock`` use IPv6 for a ``tcp://[IPv6 address]:PORT`` endpoint.

    ZeroMQ sockets are IPv4 only unless told: binding ``tcp://[::1]:*`` fails
    with "No such device", and connecting there never connects, saying nothing.
    """
    scheme, _, rest = endpoint.partition("://")
    if scheme != "tcp":
        return
    try:
        version = ipaddress.ip_address(rest.rsplit(":", 1)[0].strip("[]")).version
    except ValueError:
        return  # (a host or interface name, "*", an IPv4 address with a source...)
    if version == 6:
        sock.setsockopt(zmq.IPV6, 1)


def connect(sock: zmq.Socket[Any], endpoint: str, security: BusSecurity | None = None) -> None:
    """Connect ``sock`` (as a CURVE client when ``security`` is given).

    Raises
    ------
    LivescopeError
        if ``endpoint`` is not one ZeroMQ can connect to (malformed, e.g. a
        ``bus.json`` written by hand, a tcp port that is not a number from 1 to
        65535, or a transport it lacks).

    """
    if (bad := _bad_port(endpoint, wildcard=False)) is not None:
        # (ZeroMQ keeps a port's low 16 bits: it connected to :4464 when asked :70000)
        raise LivescopeError(
            f"cannot connect to {endpoint!r}: {bad}; an endpoint is tcp://HOST:PORT, "
            "PORT from 1 to 65535 (as the agent's bus.json names them)"
        )
    if security is not None:
        security.apply_client(sock)
    _enable_ipv6(sock, endpoint)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        raise LivescopeError(
            f"cannot connect to {endpoint!r}: {exc.strerror}; an endpoint is "
            "tcp://HOST:PORT or ipc://PATH (as the agent's bus.json names them)"
        ) from None


_HANDSHAKE_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def watch_handshake(sock: zmq.Socket[Any]) -> zmq.Socket[Any]:
    """Return a monitor of ``sock``'s connection and handshake (before it connects)."""
    return sock.get_monitor_socket(_HANDSHAKE_EVENTS)


def handshake_problem(monitor: zmq.Socket[Any], security: BusSecurity | None) -> str:
    """Say why a socket watched by `watch_handshake` got no answer.

    A CURVE handshake that fails gets no answer at all, as does an agent that
    is not there: the monitor tells them apart.
    """
    from zmq.utils.monitor import recv_monitor_message

    seen = 0
    while monitor.poll(0):
        seen |= int(recv_monitor_message(monitor)["event"])
    if seen & zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return (
            "the agent refused this side's CURVE key (its public key is not among the "
            "agent's allowed clients)"
        )
    if seen & (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
        if security is None:
            return (
                "the security handshake failed: the agent listens with CURVE keys; give its "
                "server public key (BusSecurity)"
            )
        return (
            "the CURVE handshake failed: the server public key given is not the agent's "
            "(or the agent listens without CURVE)"
        )
    if not seen & zmq.EVENT_CONNECTED:
        return "nothing listens there (the agent has ended, or the address is wrong)"
    return "the agent did not answer in time (it may be busy, or stopping)"


def sub_socket(ctx: zmq.Context[Any], rcvhwm: int) -> zmq.Socket[Any]:
    """Make a SUB socket receiving everything, no linger, not yet connected."""
    sock: zmq.Socket[Any] = ctx.socket(zmq.SUB)
    try:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    except BaseException:
        sock.close(0)
        raise
    return sock


def subscribe(
    ctx: zmq.Context[Any], endpoint: str, security: BusSecurity | None, rcvhwm: int
) -> zmq.Socket[Any]:
    """Open a SUB socket on ``endpoint`` receiving everything (no linger; closed on error)."""
    sock = sub_socket(ctx, rcvhwm)
    try:
        connect(sock, endpoint, security)
    except BaseException:
        sock.close(0)
        raise
    return sock
