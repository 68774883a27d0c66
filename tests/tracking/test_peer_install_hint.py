"""A peer tracker that is not installed is named with this Python's command that installs it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from livescope.schema import LivescopeError
from livescope.tracking import _peers


def test_a_missing_peer_names_the_install_command_of_this_python(monkeypatch):
    # (None in sys.modules: importing it raises ImportError, as where it is not installed)
    monkeypatch.setitem(sys.modules, "laptrack", None)
    frames = [np.zeros((16, 16), np.uint16)] * 2
    with pytest.raises(LivescopeError) as info:
        _peers.peer_track("laptrack", frames, max_distance=5.0)
    message = str(info.value)
    assert "peer tracker laptrack is not installed" in message
    # this Python's pip with livescope's dev extra, not a bare `pip` that may be another's
    assert "-m pip install" in message
    assert "[dev]" in message
