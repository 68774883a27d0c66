"""`livescope view` refuses an endpoint at once; the viewer logs a waiting message once, not
at its refresh rate as the count in it grows."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from livescope.view._viewer import OverlayViewer
from tests.conftest import run_cli


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:5599", "ipc:///tmp/overlay.sock"])
def test_view_refuses_an_endpoint_naming_what_it_takes(endpoint: str) -> None:
    # (taken for a folder: "tcp:/127.0.0.1:5599 does not exist" once the timeout was over)
    res = run_cli("view", endpoint, "--timeout-s", "30", "--json")
    assert res.returncode == 2, res.stdout + res.stderr
    error = json.loads(res.stdout)["error"]
    assert error.startswith("livescope view takes the run's folder (where the worker writes")
    assert "OverlayViewer(endpoint)" in error


def test_a_waiting_message_whose_count_grows_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    overlay = SimpleNamespace(text="", visible=False)
    stub = SimpleNamespace(
        subscriber=SimpleNamespace(link_problem=lambda: None),
        viewer=SimpleNamespace(text_overlay=overlay),
        _caption="", _said="", _said_key="",
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, "livescope"):
        for n in range(1, 50):
            OverlayViewer._say(stub, f"waiting: {n} overlay message(s) of another run refused")  # type: ignore[arg-type]
        OverlayViewer._say(stub, "waiting for position 'p3' (seen so far: p0)")  # type: ignore[arg-type]
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "overlay viewer: waiting: 1 overlay message(s) of another run refused",
        "overlay viewer: waiting for position 'p3' (seen so far: p0)",
    ]
    assert overlay.text == "waiting for position 'p3' (seen so far: p0)"  # (shown, each time)


@pytest.mark.parametrize(
    ("given", "scheme"),
    [("tcp:/127.0.0.1:5599", "tcp"), ("tcp:\\127.0.0.1:5599", "tcp"), ("IPC:/tmp/a.sock", "ipc")],
)
def test_an_endpoint_as_a_path_on_any_platform_is_refused(given: str, scheme: str) -> None:
    # (what Path makes of "tcp://h:p": "tcp:/h:p" here, "tcp:\h:p" on Windows)
    res = run_cli("view", given, "--timeout-s", "30", "--json")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"not an endpoint (a {scheme}:// address)" in json.loads(res.stdout)["error"]
