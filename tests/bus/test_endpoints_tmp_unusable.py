"""A temp folder that cannot hold socket files: the error says how to run anyway."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import zmq

from livescope.bus import FramePublisher, local_endpoint
from livescope.schema import LivescopeError

pytestmark = pytest.mark.skipif(
    not local_endpoint("x").startswith("ipc://") or not zmq.IPC_PATH_MAX_LEN,
    reason="no ipc on this platform",
)


def test_a_temp_folder_that_cannot_hold_sockets_names_the_tcp_transport(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said "give a free port ..., or leave the endpoint out": it was left out.

    (A folder gone stands for one that cannot hold socket files: WSL's Windows
    drives, some network and FUSE mounts.)
    """
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    monkeypatch.delenv("LIVESCOPE_TRANSPORT", raising=False)
    with pytest.raises(LivescopeError) as err:
        FramePublisher("r1")
    msg = str(err.value)
    assert "cannot listen on ipc://" in msg
    assert "LIVESCOPE_TRANSPORT=tcp" in msg
    assert "TMPDIR" in msg
    assert "leave the endpoint out" not in msg
