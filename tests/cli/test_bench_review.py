from __future__ import annotations

import glob
import multiprocessing as mp
import os
import tempfile

import numpy as np
import pytest

from livescope.schema import LivescopeError, load_profile
from tests.conftest import run_cli


def _left_by_this_process() -> set[str]:
    """Shared-memory rings and ipc socket files named after this process."""
    pid = os.getpid()
    rings = set(glob.glob(f"/dev/shm/lvs_{pid}_*"))
    sockets = set(glob.glob(os.path.join(tempfile.gettempdir(), f"livescope-*-{pid}-*")))
    return rings | sockets


def test_bus_bench_run_that_fails_leaves_no_receiver_ring_or_socket_file() -> None:
    from livescope.bus._bench import _run_mode

    children, left = set(mp.active_children()), _left_by_this_process()
    frames = np.zeros((1, 8, 8), np.complex64)  # a dtype the bus refuses: the first send raises
    with pytest.raises(LivescopeError, match="cannot go on the frame bus"):
        _run_mode("shm", frames, 2)
    assert set(mp.active_children()) <= children  # the receiver process is gone
    assert _left_by_this_process() <= left  # the ring is unlinked, the socket files removed


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"sizes": ()}, "sizes", id="no-sizes"),
        pytest.param({"sizes": (-1,)}, "sizes", id="negative-size"),
        pytest.param({"sizes": (0,)}, "sizes", id="zero-size"),
        pytest.param({"repeats": 0}, "repeats", id="no-repeats"),
        pytest.param({"paced_fps": 0.0}, "paced run", id="zero-fps"),
        pytest.param({"paced_fps": float("nan")}, "paced run", id="nan-fps"),
        pytest.param({"paced_seconds": 0.001}, "paced run", id="paced-run-of-no-frames"),
    ],
)
def test_bus_bench_refuses_nonsense_before_it_runs(kwargs: dict[str, object], match: str) -> None:
    from livescope.bus import bench_bus

    args: dict[str, object] = {"sizes": (512,), "paced_seconds": 0.5, "repeats": 1} | kwargs
    with pytest.raises(LivescopeError, match=match):
        bench_bus(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cells", "frames"),
    [
        pytest.param([], 3, id="no-counts"),
        pytest.param([10], 1, id="one-frame-none-timed"),
        pytest.param([0, 10], 3, id="zero-cells"),
    ],
)
def test_track_scaling_refuses_nonsense(cells: list[int], frames: int) -> None:
    from livescope.cli._track_bench import bench_scaling

    with pytest.raises(LivescopeError, match="cell"):
        bench_scaling(cells, frames)


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan")])
def test_camera_bench_refuses_a_case_of_no_time(seconds: float) -> None:
    from livescope.scope import bench_camera

    with pytest.raises(LivescopeError, match="seconds"):
        bench_camera(load_profile("sim"), sizes=(64,), seconds=seconds)


def test_bus_bench_says_at_once_when_its_receiver_dies() -> None:
    from livescope.bus._bench import _run_mode

    children = set(mp.active_children())
    # one byte: the raw receiver reads uint16 pixels, fails on it and ends without a report
    with pytest.raises(RuntimeError, match=r"ended \(exit code 1\) before it could report"):
        _run_mode("raw", np.zeros((1, 1, 1), np.uint8), 1)
    assert set(mp.active_children()) <= children


def test_camera_bench_at_a_size_of_no_target_meets_none() -> None:
    # a size without a target counted as meeting it: "all_targets_met" true with no
    # target checked at all
    from livescope.schema import load_profile
    from livescope.scope import bench_camera

    out = bench_camera(load_profile("sim"), sizes=(64,), seconds=0.01, channels=("DAPI",))
    assert [r["meets_target"] for r in out["results"]] == [None]
    assert out["all_targets_met"] is None


def test_bench_replay_cluster_refuses_a_single_dataset() -> None:
    # (one dataset cannot use a second worker: its 2-vs-1 ratio was noise)
    res = run_cli("bench", "replay-cluster", "--datasets", "1", "--json")
    assert res.returncode == 2
    assert "--datasets" in res.stderr
