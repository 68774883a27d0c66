"""Replay: a dataset that cannot be replayed is refused before ``--out`` is made (and not retried
by a cluster), a Ctrl+C before the first frame leaves nothing behind, and what a dataset does not
say is said.

Found by an independent review (reproducers were under /tmp/t65/r3_replay/).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livescope.pipeline import run_replay
from livescope.pipeline._cluster import _BAD_INPUT, ReplaySpec, _run_task, run_replay_task
from livescope.record import DatasetError, open_dataset

from ..conftest import run_cli


def _ctc(root: Path, dtypes: tuple[type, ...] = (np.uint16, np.uint16)) -> Path:
    root.mkdir(parents=True)
    for t, dtype in enumerate(dtypes):
        tifffile.imwrite(root / f"t{t:03d}.tif", np.full((32, 32), 10 + t, dtype))
    return root


def _gfp_bf(path: Path) -> Path:
    """A two-channel OME-TIFF whose channels the replay profile does not have."""
    channels = {"Name": ["GFP", "Brightfield"]}
    tifffile.imwrite(
        path, np.zeros((2, 2, 32, 32), np.uint16), ome=True,
        metadata={"axes": "TCYX", "Channel": channels},
    )  # fmt: skip
    return path


@pytest.mark.parametrize("case", ["frames of two pixel types", "channels the profile lacks"])
def test_a_dataset_that_cannot_be_replayed_is_refused_before_out_is_made_and_not_retried(
    tmp_path: Path, case: str
) -> None:
    # (the mixed frames were refused once `out` was half written: a rerun found it not empty;
    # both were plain errors, which a cluster retried 3 times, with the worker's tracebacks)
    if case == "frames of two pixel types":
        src = _ctc(tmp_path / "01", (np.uint8, np.uint16))
        said = (
            f"{src}: frame t001.tif is 32x32 px uint16, the first (t000.tif) 32x32 px uint8; "
            "a replay serves frames of one size and type"
        )
    else:
        src = _gfp_bf(tmp_path / "gfp_bf.ome.tif")
        said = (
            f"{src}: channel(s) 'GFP', 'Brightfield' not in profile 'replay' (known: Phase, "
            "DAPI, Fluo); pass --channel-map GFP=DAPI --channel-map Brightfield=Phase"
        )
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=re.escape(said)):
        run_replay(src, out)
    assert not out.exists()
    result = _run_task(run_replay_task, ReplaySpec(str(src), str(tmp_path / "task")))
    assert result == {_BAD_INPUT: f"DatasetError: {said}"}
    if case == "channels the profile lacks":  # the command says it as before
        res = run_cli("replay", str(src), "--out", str(out), "--json")
        assert res.returncode == 2, res.stderr[-2000:]
        assert json.loads(res.stdout)["error"] == said
        assert not out.exists()


@contextlib.contextmanager
def _ctrl_c_once(path: Path) -> Iterator[None]:
    """Send this process a Ctrl+C (SIGINT) once ``path`` exists.

    (The handler that raises KeyboardInterrupt is installed for the while: a shell that
    started the tests may have them ignore SIGINT.)
    """
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.01):
            if path.exists():
                os.kill(os.getpid(), signal.SIGINT)
                return

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        signal.signal(signal.SIGINT, before)


def test_a_ctrl_c_before_the_first_frame_leaves_nothing_and_the_same_out_can_be_used(
    tmp_path: Path,
) -> None:
    # the worker takes its lock as it starts, well before it is ready and a frame is served;
    # what was left (an empty recording, frame log, worker lock) made the rerun "not empty"
    src = _ctc(tmp_path / "01")
    new = tmp_path / "made" / "out"
    with _ctrl_c_once(new / "results" / "worker.lock"), pytest.raises(KeyboardInterrupt):
        run_replay(src, new, pixel_size_um=0.5)
    assert not (tmp_path / "made").exists()  # the folders it made, parent too
    empty = tmp_path / "empty"  # an empty folder given: kept, and empty again
    empty.mkdir()
    with _ctrl_c_once(empty / "results" / "worker.lock"), pytest.raises(KeyboardInterrupt):
        run_replay(src, empty, pixel_size_um=0.5)
    assert empty.is_dir()
    assert sorted(p.name for p in empty.iterdir()) == []
    summary = run_replay(src, empty, pixel_size_um=0.5)
    assert summary["frames_served"] == 2
    assert not any("states no pixel size" in w for w in summary["warnings"])


def test_a_dataset_without_a_pixel_size_is_said_to_be_taken_as_1_um_per_pixel(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # (said only with --nucleus-diameter-um: close-ups and recentring were off by the factor)
    with caplog.at_level(logging.WARNING, logger="livescope"):
        summary = run_replay(_ctc(tmp_path / "01"), tmp_path / "out")
    # (the replay's camera is no Micro-Manager's: its calibration was blamed)
    assert "Micro-Manager has no pixel size calibration" not in caplog.text
    said = [w for w in summary["warnings"] if "states no pixel size" in w]
    assert len(said) == 1, summary["warnings"]
    assert "taken as 1 µm per pixel" in said[0]
    assert said[0].endswith("pass --pixel-size")


@pytest.mark.parametrize("kind", ["plain TIFF stack", "ImageJ hyperstack"])
def test_a_tiff_without_ome_metadata_says_how_to_save_one_that_replays(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "stack.tif"
    planes = np.zeros((2, 32, 32), np.uint8)
    if kind == "plain TIFF stack":
        tifffile.imwrite(path, planes)
    else:
        tifffile.imwrite(path, planes, imagej=True, metadata={"axes": "TYX"})
    with pytest.raises(DatasetError) as err:
        open_dataset(path)
    said = str(err.value)
    assert said.startswith(f"{path}: no OME metadata; cannot tell time, channel and z apart")
    assert "OME-TIFF" in said.split("apart", 1)[1]
    assert "Bio-Formats" in said
    assert "t000.tif, t001.tif" in said
