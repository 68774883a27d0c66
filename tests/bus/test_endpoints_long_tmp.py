"""A temp folder too long for ipc socket files: local endpoints on tcp, given ones refused."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import zmq

from livescope.bus import DecisionClient, DecisionServer, FramePublisher, bind, local_endpoint
from livescope.schema import ChangeInterval, Decision, DecisionAck, LivescopeError

pytestmark = pytest.mark.skipif(
    not local_endpoint("x").startswith("ipc://") or not zmq.IPC_PATH_MAX_LEN,
    reason="no ipc on this platform",
)


def _accept(decision: Decision, t_rx: int) -> DecisionAck:
    return DecisionAck(
        decision_id=decision.decision_id, run_id=decision.run_id, type=decision.type,
        accepted=True, t_received_ns=t_rx,
    )  # fmt: skip


def _temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, socket_path_bytes: int) -> Path:
    """Make the temp folder one whose `local_endpoint("frames")` paths are that long."""
    leaf = len(f"livescope-frames-{os.getpid()}-") + 12  # (its name: see `local_endpoint`)
    pad = socket_path_bytes - len(os.fsencode(tmp_path)) - 1 - 1 - leaf
    if pad < 1:
        pytest.skip(f"the test's own folder {tmp_path} is too long already")
    folder = tmp_path / ("t" * pad)
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.delenv("LIVESCOPE_TRANSPORT", raising=False)
    return folder


@pytest.mark.parametrize(
    ("over", "scheme"),
    [
        pytest.param(0, "ipc", id="at-the-limit"),
        pytest.param(1, "tcp", id="one-byte-over"),
        pytest.param(100, "tcp", id="far-over"),
    ],
)
def test_local_endpoints_go_on_tcp_where_the_temp_folder_leaves_ipc_no_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, over: int, scheme: str
) -> None:
    _temp_folder(tmp_path, monkeypatch, zmq.IPC_PATH_MAX_LEN + over)
    endpoint = local_endpoint("frames")
    assert endpoint.startswith(f"{scheme}://")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    try:
        assert bind(sock, endpoint).startswith(f"{scheme}://")  # (bound: it fits)
    finally:
        sock.close(0)
        ctx.term()


def test_a_publisher_binds_where_the_temp_folder_is_too_long_for_ipc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _temp_folder(tmp_path, monkeypatch, zmq.IPC_PATH_MAX_LEN + 40)
    pub = FramePublisher("r")
    try:
        assert pub.endpoint.startswith("tcp://127.0.0.1:")
        assert pub.control_endpoint.startswith("tcp://127.0.0.1:")
    finally:
        pub.close()


def test_decisions_go_through_where_the_temp_folder_is_too_long_for_ipc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _temp_folder(tmp_path, monkeypatch, zmq.IPC_PATH_MAX_LEN + 40)
    server = DecisionServer(_accept)
    client = DecisionClient(server.endpoint)
    try:
        assert server.endpoint.startswith("tcp://127.0.0.1:")
        decision = ChangeInterval(run_id="r", interval_s=5.0)
        assert client.send(decision, timeout=30).accepted
    finally:
        client.close()
        server.close()


def test_ipc_forced_in_a_temp_folder_too_long_for_it_is_refused_naming_the_tcp_transport(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _temp_folder(tmp_path, monkeypatch, zmq.IPC_PATH_MAX_LEN + 40)
    monkeypatch.setenv("LIVESCOPE_TRANSPORT", "ipc")
    with pytest.raises(LivescopeError, match="LIVESCOPE_TRANSPORT=tcp, or a shorter TMPDIR"):
        FramePublisher("r")


def test_a_given_ipc_endpoint_too_long_is_refused_naming_the_tcp_transport(
    tmp_path: Path,
) -> None:
    path = tmp_path / ("s" * (zmq.IPC_PATH_MAX_LEN + 1 - len(os.fsencode(tmp_path)) - 1))
    assert len(os.fsencode(path)) == zmq.IPC_PATH_MAX_LEN + 1
    with pytest.raises(LivescopeError) as caught:
        DecisionServer(_accept, endpoint=f"ipc://{path}")
    message = str(caught.value)
    assert f"{zmq.IPC_PATH_MAX_LEN + 1} bytes, over ipc's {zmq.IPC_PATH_MAX_LEN}" in message
    assert "LIVESCOPE_TRANSPORT=tcp" in message
    assert "leave the endpoint out" not in message  # (it would not help: it was given)
    assert not path.exists()
