"""Follow-ups of session 60: a worker given up on a held-open file, an NDTiff pixel size
that is no number, a policy's channel YAML reads as a number."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from livescope.pipeline import WorkerConfig, WorkerSupervisor
from livescope.policy import load_policies
from livescope.record import open_dataset
from livescope.schema import LivescopeError, load_profile

from .conftest import write_ndtiff


class _HeldOpen(WorkerSupervisor):
    """A supervisor whose first worker crashes once ready, and whose restarted workers find
    ``cells.csv`` held open as they trim it (the results store's own refusal)."""

    restart_delay_s = 0.0

    def _spawn(self, resume: bool) -> subprocess.Popen[bytes]:
        res = str(self.results)
        if resume:  # as a spreadsheet on Windows refuses the rewrite
            script = (
                "import pathlib\n"
                "from livescope.pipeline import _results\n"
                "def locked(path, data):\n"
                "    raise PermissionError(13, 'Access is denied', str(path) + '.tmp')\n"
                "_results.write_atomic = locked\n"
                f"_results.trim_results(pathlib.Path({res!r}), {{'p0': 0}}, {{'p0': 0}})\n"
            )
        else:
            script = (
                "import pathlib, sys, time\n"
                f"pathlib.Path({res!r}, 'ready').write_text(str(time.time()))\n"
                "print('RuntimeError: CUDA error', file=sys.stderr)\n"
                "sys.exit(1)\n"
            )
        return subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip


def test_a_worker_given_up_on_a_held_open_file_says_so_and_how_to_analyse_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # its last line said "close it, and the worker resumes ... giving up": closing it then
    # resumed nothing, as no worker was started again for the rest of the run
    run = tmp_path / "run"
    sup = _HeldOpen(run, WorkerConfig(), max_restarts=2)
    (sup.results / "cells.csv").write_text("position,t\np0,0\np0,1\n", encoding="utf-8")
    sup.start()
    with pytest.raises(LivescopeError, match="the worker failed") as got:
        sup.wait(60)
    assert sup.exits == [1, 1, 1]
    cells = sup.results / "cells.csv"
    said = (
        f"the worker was given up after 2 restarts in a row: {cells} was held open by another "
        "program (a spreadsheet?) or not writable, and a resumed worker must rewrite it; the "
        "rest of the run goes unanalysed. Close it and, once the run has ended, analyse the "
        f"rest with `livescope worker {run} --config {run / 'results' / 'worker-config.json'} "
        f"--resume` (then `livescope report {run}`)"
    )
    assert sup.error == said
    assert (sup.results / "worker.failed").read_text(encoding="utf-8") == said
    assert said in str(got.value)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"{said} (see {sup.results / 'worker.log'})"]
    # each restart still says the worker's own reason, which no longer promises a resume
    restarts = [r.getMessage() for r in caplog.records if "restarting it" in r.getMessage()]
    assert len(restarts) == 2
    assert f"{cells} is open in another program" in restarts[1]
    assert "resumes" not in caplog.text


@pytest.mark.parametrize("tag", ["PixelSizeUm", "PixelSize_um"])
def test_an_ndtiff_pixel_size_that_is_no_number_is_none_with_a_warning(
    tmp_path: Path, tag: str
) -> None:
    # (a bare ValueError: could not convert string to float: 'n/a', naming no dataset)
    root = write_ndtiff(
        tmp_path / "nd", lambda t, p, c: np.zeros((16, 24), np.uint16), timepoints=2,
        positions=1, tags=lambda t, p, c: {tag: "0.5" if c == 0 else "n/a"},
    )  # fmt: skip
    with open_dataset(root) as ds:
        sizes = {(f.key.t, f.key.channel): f.pixel_size_um for f in ds.frames}
        warnings, where = list(ds.warnings), ds.path
    assert sizes == {(0, "Phase"): 0.5, (1, "Phase"): 0.5, (0, "DAPI"): None, (1, "DAPI"): None}
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{where}: the pixel size (PixelSizeUm / PixelSize_um) of 2 ")
    assert "is not a number (the first, {" in warnings[0]
    assert (
        "'n/a'); they are replayed without a pixel size (--pixel-size gives one)" in (warnings[0])
    )


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        pytest.param("[405]", "acquire.channels.0: 405 is read as a number", id="int"),
        pytest.param("[DAPI, 488.5]", "acquire.channels.1: 488.5 is read as a number",
                     id="float-second"),
    ],
)  # fmt: skip
def test_a_policy_channel_yaml_reads_as_a_number_is_told_to_be_quoted(
    tmp_path: Path, channels: str, expected: str
) -> None:
    # (it said only "acquire.channels must be channel names, got [405]"; the plan's
    # channels say to quote it since f9b6e1c)
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "time_plan: {interval: 60, loops: 2}\n"
        "policies:\n"
        "  - name: closeup\n"
        "    when: {mitosis: {}}\n"
        f"    do: {{acquire: {{channels: {channels}}}}}\n",
        encoding="utf-8",
    )
    value = expected.split(": ")[1].split(" ")[0]
    with pytest.raises(LivescopeError) as got:
        load_policies(plan, load_profile("sim"))
    assert str(got.value) == (
        f"{plan}: policies.0 (closeup): {expected}, not a channel preset's name; write it in "
        f"quotes: '{value}'"
    )
