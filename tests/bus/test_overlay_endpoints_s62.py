"""Endpoints given with a bad port or a missing folder; an overlay.json that cannot be written."""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from livescope.bus import (
    DecisionServer,
    FramePublisher,
    OverlayPublisher,
    OverlaySubscriber,
    bind,
    connect,
)
from livescope.schema import LivescopeError

ipc_files = pytest.mark.skipif(
    os.name == "nt" or not hasattr(socket, "AF_UNIX") or not zmq.has("ipc"),
    reason="no ipc socket files on this platform",
)

OUT_OF_RANGE = [
    pytest.param("70000", id="70000 (ZeroMQ bound 4464)"),
    pytest.param("99999", id="99999 (ZeroMQ bound 34463)"),
    pytest.param("65536", id="65536"),
    pytest.param("-1", id="-1 (ZeroMQ bound 65535)"),
    pytest.param("8e3", id="8e3 (ZeroMQ bound 8)"),
    pytest.param("", id="no port"),
]


@pytest.fixture
def pub_socket() -> Iterator[zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    yield sock
    sock.close(0)
    ctx.term()


# ---------------------------------------------------------------- overlay.json


def test_an_overlay_json_that_cannot_be_written_names_the_run_folder(tmp_path: Path) -> None:
    """It raised FileNotFoundError naming ``.overlay.json.<pid>.<tid>.tmp``."""
    run = tmp_path / "no-such-run"
    with pytest.raises(LivescopeError) as err:
        OverlayPublisher("r1", run_dir=run, endpoint="tcp://127.0.0.1:*")
    msg = str(err.value)
    assert f"cannot write {run / 'overlay.json'}" in msg
    assert f"the run folder {run} does not exist" in msg
    assert ".tmp" not in msg
    assert not run.exists()


@ipc_files
@pytest.mark.parametrize("given", [True, False], ids=["endpoint given", "local endpoint"])
def test_an_overlay_json_that_cannot_be_written_leaves_no_socket_file(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch, given: bool
) -> None:
    """The bound ipc socket's file stayed behind (in the temp folder for a local endpoint)."""
    monkeypatch.setattr(tempfile, "tempdir", str(short_dir))
    monkeypatch.delenv("LIVESCOPE_TRANSPORT", raising=False)
    endpoint = f"ipc://{short_dir / 'overlay'}" if given else None
    with pytest.raises((LivescopeError, OSError)):  # (which one: the test above)
        OverlayPublisher("r1", run_dir=short_dir / "no-such-run", endpoint=endpoint)
    assert sorted(p.name for p in short_dir.iterdir()) == []


# ---------------------------------------------------------------- tcp ports


@pytest.mark.parametrize("port", OUT_OF_RANGE)
def test_a_tcp_port_out_of_range_is_refused_not_wrapped(
    pub_socket: zmq.Socket[bytes], port: str
) -> None:
    """ZeroMQ kept the port's low 16 bits: asked :70000, it listened on :4464."""
    endpoint = f"tcp://127.0.0.1:{port}"
    with pytest.raises(LivescopeError) as err:
        bind(pub_socket, endpoint)
    msg = str(err.value)
    assert msg.startswith(f"cannot listen on {endpoint}: Invalid argument")
    assert "from 1 to 65535" in msg
    assert pub_socket.getsockopt(zmq.LAST_ENDPOINT) in (b"", "")  # nothing bound


@pytest.mark.parametrize("port", ["*", "0"])
def test_any_free_port_is_still_bound(pub_socket: zmq.Socket[bytes], port: str) -> None:
    bound = bind(pub_socket, f"tcp://127.0.0.1:{port}")
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", bound)
    assert 1 <= int(bound.rsplit(":", 1)[1]) <= 65535


def test_a_port_out_of_range_given_to_the_agent_sockets_is_refused() -> None:
    """The endpoints a user gives (``livescope agent --frames-endpoint``...) come here."""
    with pytest.raises(LivescopeError, match=r"port '70000' is not a number from 1 to 65535"):
        FramePublisher("r1", endpoint="tcp://127.0.0.1:70000")
    with pytest.raises(LivescopeError, match=r"port '70001' is not a number from 1 to 65535"):
        FramePublisher("r1", control_endpoint="tcp://127.0.0.1:70001")
    with pytest.raises(LivescopeError, match=r"port '70002' is not a number from 1 to 65535"):
        DecisionServer(lambda d, t: pytest.fail("no decision"), endpoint="tcp://127.0.0.1:70002")


@pytest.mark.parametrize("port", [*OUT_OF_RANGE, pytest.param("*", id="*"), "0"])
def test_connecting_to_a_tcp_port_out_of_range_is_refused(
    pub_socket: zmq.Socket[bytes], port: str
) -> None:
    """It connected to :4464 when asked :70000, and waited there in vain."""
    with pytest.raises(LivescopeError, match=r"cannot connect to .*(from 1 to 65535|no port)"):
        connect(pub_socket, f"tcp://127.0.0.1:{port}")


def test_a_viewer_given_a_port_out_of_range_says_so() -> None:
    with pytest.raises(LivescopeError, match=r"port '70000' is not a number from 1 to 65535"):
        OverlaySubscriber("tcp://127.0.0.1:70000")


# ---------------------------------------------------------------- ipc folders


@ipc_files
def test_an_ipc_path_whose_folder_is_missing_names_the_folder(
    pub_socket: zmq.Socket[bytes], short_dir: Path
) -> None:
    """It said "give a free port (tcp://...)", as if the endpoint were tcp."""
    folder = short_dir / "nodir"
    endpoint = f"ipc://{folder / 'frames.sock'}"
    with pytest.raises(LivescopeError) as err:
        bind(pub_socket, endpoint)
    msg = str(err.value)
    assert msg.startswith(f"cannot listen on {endpoint}: No such file or directory")
    assert f"the folder {folder} does not exist; make it" in msg
    assert "free port" in msg.split("; ", 1)[1]  # (tcp only as the other way)
    assert not folder.exists()


@ipc_files
def test_an_ipc_path_under_a_file_says_it_is_not_a_folder(
    pub_socket: zmq.Socket[bytes], short_dir: Path
) -> None:
    data = short_dir / "data.txt"
    data.write_text("keep me")
    with pytest.raises(LivescopeError, match=f"{re.escape(str(data))} is not a folder"):
        bind(pub_socket, f"ipc://{data / 'frames.sock'}")
    assert data.read_text() == "keep me"


@ipc_files
def test_a_relative_ipc_path_in_a_missing_folder_names_the_absolute_folder(
    pub_socket: zmq.Socket[bytes], short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(short_dir)
    with pytest.raises(LivescopeError, match=f"the folder {re.escape(str(short_dir / 'nd'))} "):
        bind(pub_socket, "ipc://nd/frames.sock")
