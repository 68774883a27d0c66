"""``livescope replay --workers`` is held to the PC's cores, as ``--threads`` is."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import run_cli


def test_more_local_workers_than_cores_are_refused(tmp_path: Path) -> None:
    # each local Dask worker replays a dataset with its own agent and engines: --workers
    # 1000 started as many processes, before any dataset was looked at
    cores = os.cpu_count() or 1
    ins = [tmp_path / "a", tmp_path / "b"]
    for d in ins:
        d.mkdir()
    out = tmp_path / "out"
    res = run_cli(
        "replay", *map(str, ins), "--workers", str(cores + 1), "--out", str(out), "--json"
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"--workers {cores + 1} is more than this PC's {cores} cores" in res.stdout + res.stderr
    assert not out.exists()
