"""Endpoints that ZeroMQ would bind by taking something: refused; IPv6 loopback that works."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import zmq

from livescope.bus import DecisionClient, DecisionServer, FramePublisher
from livescope.schema import ChangeInterval, Decision, DecisionAck, LivescopeError

ipc_files = pytest.mark.skipif(
    os.name == "nt" or not hasattr(socket, "AF_UNIX") or not zmq.has("ipc"),
    reason="no ipc socket files on this platform",
)


def _accept(decision: Decision, t_rx: int) -> DecisionAck:
    return DecisionAck(
        decision_id=decision.decision_id, run_id=decision.run_id, type=decision.type,
        accepted=True, t_received_ns=t_rx,
    )  # fmt: skip


@ipc_files
def test_a_given_ipc_endpoint_another_server_listens_on_is_refused_and_left_working(
    short_dir: Path,
) -> None:
    """ZeroMQ deleted the first server's socket file and bound anew: its clients got nothing."""
    endpoint = f"ipc://{short_dir / 'decisions'}"
    first = DecisionServer(_accept, endpoint=endpoint)
    try:
        with pytest.raises(LivescopeError, match=f"cannot listen on {endpoint}: another socket"):
            DecisionServer(_accept, endpoint=endpoint)
        client = DecisionClient(endpoint)
        try:
            assert client.send(ChangeInterval(run_id="r", interval_s=5.0), timeout=10).accepted
        finally:
            client.close()
        assert first.received == 1  # (the first server's, not a second one's)
    finally:
        first.close()


@ipc_files
def test_a_given_ipc_endpoint_naming_a_file_is_refused_and_the_file_kept(
    short_dir: Path,
) -> None:
    """ZeroMQ deleted whatever the path named (a typo: a data file) and bound there."""
    data = short_dir / "frames.tif"
    data.write_bytes(b"precious pixels")
    with pytest.raises(LivescopeError, match="is a file that is not a socket"):
        FramePublisher("r", endpoint=f"ipc://{data}")
    assert data.read_bytes() == b"precious pixels"


@ipc_files
def test_a_given_ipc_endpoint_a_ended_process_left_is_bound(short_dir: Path) -> None:
    """A socket file nothing listens on is replaced (as ZeroMQ does), then removed on close."""
    path = short_dir / "frames"
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))  # (its file stays after close: a process killed)
    left.close()
    assert path.is_socket()
    pub = FramePublisher("r", endpoint=f"ipc://{path}")
    try:
        assert pub.endpoint == f"ipc://{path}"
    finally:
        pub.close()
    assert not path.exists()


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_decisions_go_through_on_the_ipv6_loopback() -> None:
    """``tcp://[::1]:*`` counts as loopback, yet binding it failed with "No such device"."""
    server = DecisionServer(_accept, endpoint="tcp://[::1]:*")
    try:
        assert server.endpoint.startswith("tcp://[::1]:")
        client = DecisionClient(server.endpoint)
        try:
            assert client.send(ChangeInterval(run_id="r", interval_s=5.0), timeout=10).accepted
        finally:
            client.close()
    finally:
        server.close()


def test_asking_whether_a_process_lives_does_not_end_it_on_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Windows ``os.kill(pid, 0)`` is TerminateProcess: asking ended the process asked about."""
    import sys

    from livescope.bus._endpoints import pid_lives

    ended: list[int] = []  # (what os.kill does on Windows, whatever the signal)
    with monkeypatch.context() as m:
        m.setattr(sys, "platform", "win32")
        m.setattr(os, "kill", lambda pid, sig: ended.append(pid))
        assert pid_lives(os.getpid())  # (this process: it runs)
    assert ended == []
