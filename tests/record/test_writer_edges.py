"""OmeZarrWriter at its edges: a close that fails under a failing run, numpy values in
the frame log, a frame size that changes mid-run."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from livescope.record import OmeZarrWriter, read_frames
from livescope.schema import LivescopeError

from .test_zarr import _info


class _RunFailed(Exception):
    """The error of the with-body: the cause the user must see."""


def test_exit_keeps_the_body_error_when_close_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="livescope")
    with (  # noqa: PT012 (the with-body is the test)
        pytest.raises(_RunFailed) as raised,
        OmeZarrWriter(tmp_path, channels=["Phase"], pixel_size_um=0.65) as w,
    ):
        w.write(np.ones((8, 8), np.uint16), _info(0, 0, "Phase"))
        # the store gone (a drive lost mid-run): close cannot write its metadata
        shutil.rmtree(w.path)
        raise _RunFailed("the camera stopped")
    assert str(raised.value) == "the camera stopped"
    notes = getattr(raised.value, "__notes__", [])
    assert any("could not be closed" in n for n in notes), notes
    assert "could not be closed" in caplog.text
    assert w.closed


def test_exit_raises_the_close_error_without_a_body_error(tmp_path: Path) -> None:
    with (  # noqa: PT012 (the with-body is the test)
        pytest.raises(FileNotFoundError, match=r"data\.ome\.zarr"),
        OmeZarrWriter(tmp_path, channels=["Phase"], pixel_size_um=0.65) as w,
    ):
        w.write(np.ones((8, 8), np.uint16), _info(0, 0, "Phase"))
        shutil.rmtree(w.path)


def test_numpy_values_are_logged_as_json_numbers(tmp_path: Path) -> None:
    event = {
        "count": np.int16(5),
        "gain": np.float32(0.5),
        "flag": np.bool_(True),
        "plain": True,
        "offsets": np.array([1, 2], np.int64),
    }
    with OmeZarrWriter(tmp_path, channels=["Phase"], pixel_size_um=0.65) as w:
        w.write(
            np.ones((8, 8), np.uint16),
            {**_info(0, np.int64(3), "Phase", z=np.int32(1)), "event": event},
        )
    line = json.loads((tmp_path / "frames.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert line["index"] == {"t": 3, "p": 0, "z": 1}
    assert all(type(v) is int for v in line["index"].values()), line["index"]
    assert type(line["event"]["count"]) is int
    assert line["event"]["count"] == 5
    assert type(line["event"]["gain"]) is float
    assert line["event"]["gain"] == 0.5
    assert line["event"]["flag"] is True  # (a bool stays a bool, not 1)
    assert line["event"]["plain"] is True
    assert line["event"]["offsets"] == [1, 2]
    assert read_frames(tmp_path)[0]["index"]["t"] == 3


@pytest.mark.parametrize(
    ("first", "second", "channel"),
    [
        pytest.param((8, 8), (8, 6), "Phase", id="roi-same-channel"),
        pytest.param((8, 8), (4, 4), "DAPI", id="binning-other-channel"),
    ],
)
def test_a_size_change_mid_run_is_refused_naming_what_to_do(
    tmp_path: Path, first: tuple[int, int], second: tuple[int, int], channel: str
) -> None:
    with OmeZarrWriter(tmp_path, channels=["Phase", "DAPI"], pixel_size_um=0.65) as w:
        w.write(np.ones(first, np.uint16), _info(0, 0, "Phase"))
        with pytest.raises(LivescopeError) as raised:
            w.write(np.ones(second, np.uint16), _info(1, 1, channel))
    msg = str(raised.value)
    assert "'p0'" in msg, msg
    assert repr(channel) in msg, msg
    assert f"{first[0]}×{first[1]}" in msg, msg
    assert f"{second[0]}×{second[1]}" in msg, msg
    assert "new acquisition" in msg, msg
    assert [f["seq"] for f in read_frames(tmp_path)] == [0]  # the refused frame is not logged
