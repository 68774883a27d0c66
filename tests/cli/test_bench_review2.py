from __future__ import annotations

import math
from pathlib import Path

import pytest

from livescope.schema import LivescopeError, load_profile


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        # one frame: the agent ran twice, then numpy failed on an empty list of intervals
        pytest.param({"frames": 1}, "2 frames", id="one-frame"),
        pytest.param({"interval_ms": math.nan}, "interval must be", id="nan-interval"),
        pytest.param({"interval_ms": 0.0}, "interval must be", id="zero-interval"),
        # nan > interval is false, so it passed for a worker that cannot keep up
        pytest.param({"worker_sleep_ms": math.nan}, "worker sleep", id="nan-worker-sleep"),
        pytest.param({"worker_sleep_ms": math.inf}, "worker sleep", id="inf-worker-sleep"),
    ],
)
def test_pacing_bench_refuses_nonsense_before_it_runs(kwargs: dict[str, float], match: str) -> None:
    from livescope.cli._pacing_bench import bench_pacing

    args: dict[str, float] = {"frames": 3, "interval_ms": 50.0, "worker_sleep_ms": 200.0} | kwargs
    with pytest.raises(LivescopeError, match=match):
        bench_pacing(**args)  # type: ignore[arg-type]


def test_pacing_case_whose_slow_worker_failed_is_an_error_not_a_result(tmp_path: Path) -> None:
    # the worker thread fails on an error of its own (here: it cannot sleep NaN ms); the
    # case was reported as a slow-worker case that met its target, with no worker at all
    from livescope.cli._pacing_bench import _case

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "stage_positions: [{x: 0, y: 0, z: 0}]\n"
        "channels: [{config: DAPI, exposure: 20}]\n"
        "time_plan: {interval: 0.05, loops: 3}\n",
        encoding="utf-8",
    )
    with pytest.raises(LivescopeError, match="the slow worker failed: ValueError"):
        _case(tmp_path, plan, 3, 50.0, math.nan)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        # (a size or channel that fails used to fail only after the sizes before it ran)
        pytest.param({"sizes": (64, 0)}, "sizes", id="zero-size"),
        pytest.param({"sizes": ()}, "sizes", id="no-sizes"),
        pytest.param({"channels": ("DAPI", "GFP")}, "no channel 'GFP'", id="unknown-channel"),
    ],
)
def test_camera_bench_refuses_nonsense_before_it_runs(
    kwargs: dict[str, object], match: str
) -> None:
    from livescope.scope import bench_camera

    args: dict[str, object] = {"sizes": (64,), "seconds": 0.01, "channels": ("DAPI",)} | kwargs
    with pytest.raises(LivescopeError, match=match):
        bench_camera(load_profile("sim"), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"sizes": (0,)}, "sizes", id="zero-size"),
        pytest.param({"sizes": ()}, "sizes", id="no-sizes"),
        # no codec: the JSON held zarr's own path alone, nothing of the recorder measured
        pytest.param({"codecs": ()}, "codecs", id="no-codecs"),
        pytest.param({"codecs": ("zstd", "lz4")}, "codecs", id="unknown-codec"),
    ],
)
def test_record_bench_refuses_nonsense_before_it_runs(
    kwargs: dict[str, object], match: str
) -> None:
    from livescope.scope import bench_record

    args: dict[str, object] = {"sizes": (32,), "frames": 1, "repeats": 1} | kwargs
    with pytest.raises(LivescopeError, match=match):
        bench_record(load_profile("sim"), **args)  # type: ignore[arg-type]
