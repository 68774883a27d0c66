"""The run report on run folders as a killed, damaged or very long run leaves them.

Most runs here are written by hand (a frame log, results/, no recording), so each
test states exactly the damage it draws a report of; the thumbnails' test records
a small simulated run.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

from livescope.schema import HardwareProfile, LivescopeError
from livescope.scope import demo_sequence, run_simulated
from livescope.view import write_report

CELLS_HEADER = ["position", "t", "seq", "sample_time_s", "label", "track", "parent", "y",
                "x", "area", "intensity", "state", "p_mitosis", "p_interphase",
                "p_prophase"]  # fmt: skip
TRACKS = "1 0 3 0\n2 0 1 0\n3 2 3 2\n4 2 3 2\n"


def _jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_run(
    run: Path,
    *,
    positions: Sequence[str] = ("p0", "p1"),
    timepoints: int = 4,
    cells: int = 3,
    rule: str = "mitosis-burst",
    state: str = "interphase",
) -> Path:
    """A run folder as a finished run with analysis leaves it (no recording)."""
    results = run / "results"
    results.mkdir(parents=True)
    frames, latency, policy, rows = [], [], [], []
    seq = 0
    for t in range(timepoints):
        for p in positions:
            st = 60.0 * t
            frames.append(
                {
                    "seq": seq,
                    "position": p,
                    "channel": "DAPI",
                    "index": {"t": t, "p": 0, "c": 0, "z": 0},
                    "sample_time_s": st,
                }
            )
            latency.append(
                {
                    "position": p,
                    "t": t,
                    "seq": seq,
                    "ms": {"segment": 5.0 + t, "end_to_end": 20.0 + t},
                }
            )
            policy.append({"rule": rule, "trigger": "p_mitosis", "position": p, "t": t,
                           "seq": seq, "sample_time_s": st, "track": 1, "y": 10.0, "x": 10.0,
                           "decision": {"type": "add_events"}, "verdict": "accepted",
                           "stage": "agent", "reason": ""})  # fmt: skip
            rows += [[p, t, seq, st, k, k, 0, 10.0, 10.0, 50, 100.0, state, 0.1, 0.9, 0.1]
                     for k in range(1, cells + 1)]  # fmt: skip
            seq += 1
    _jsonl(run / "frames.jsonl", frames)
    _jsonl(results / "latency.jsonl", latency)
    _jsonl(results / "policy.jsonl", policy)
    with (results / "cells.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([CELLS_HEADER, *rows])
    for p in positions:
        (results / "ctc" / p).mkdir(parents=True)
        (results / "ctc" / p / "res_track.txt").write_text(TRACKS)
    summary = {"run_id": "r1", "positions": list(positions), "channels": ["DAPI"],
               "timepoints": timepoints}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return run


def notes(page: str) -> list[str]:
    """The report's highlighted notes and listed problems, as text."""
    found = re.findall(r'<p class="missing">(.*?)</p>|<li>(.*?)</li>', page, re.S)
    return [a or b for a, b in found]


def section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert match is not None, anchor
    return match.group(1)


def not_drawn(page: str) -> list[str]:
    return [n for n in notes(page) if "could not be drawn" in n]


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


def _cut(path: Path, n: int) -> None:
    path.write_bytes(path.read_bytes()[:-n])


# ------------------------------------------------------------------ a run cut short


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        pytest.param(lambda s: s.unlink(), "summary.json is missing", id="missing"),
        pytest.param(lambda s: _cut(s, 10), "summary.json is not valid JSON", id="truncated"),
        pytest.param(lambda s: s.write_text(""), "summary.json is not valid JSON", id="empty"),
    ],
)
def test_a_run_killed_before_its_summary_still_gets_a_report(
    tmp_path: Path, damage: Callable[[Path], None], said: str
) -> None:
    run = make_run(tmp_path / "run")
    damage(run / "summary.json")
    page = write_report(run).read_text(encoding="utf-8")
    assert any(said in n and "did not end" in n for n in notes(page)), notes(page)
    assert not_drawn(page) == []
    # what the frame log and results/ hold is shown: positions, cells, lineage, decisions
    assert "p0: 3 cells per time point" in page
    assert page.count('<img class="plot"') == 2 * 2 + 2


def test_a_folder_without_a_frame_log_is_no_run_whatever_its_summary(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    no_log = rf"{re.escape(str(tmp_path))} is not a run folder: it holds no frames\.jsonl"
    with pytest.raises(LivescopeError, match=no_log):
        write_report(tmp_path)
    (tmp_path / "summary.json").write_text("{oops")
    with pytest.raises(LivescopeError, match=no_log):
        write_report(tmp_path)
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(LivescopeError, match=no_log):
        write_report(tmp_path)


@pytest.mark.parametrize("make", ["missing", "file"])
def test_a_path_that_is_no_folder_is_named_as_such(tmp_path: Path, make: str) -> None:
    # (a library caller's write_report was told "summary.json is missing" of either)
    run = tmp_path / "run"
    if make == "file":
        run.write_text("x", encoding="utf-8")
    said = "does not exist: give a run folder" if make == "missing" else "is a file, not a run"
    with pytest.raises(LivescopeError, match=re.escape(f"{run} {said}")):
        write_report(run)


def test_a_half_written_last_row_of_cells_csv_is_left_out(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    _append(run / "results" / "cells.csv", b"p1,3,7,180.0,9,9")  # killed mid-row
    page = write_report(run).read_text(encoding="utf-8")
    assert "p1: 3 cells per time point" in page  # (not 3–4)
    assert "unclassified" not in page
    assert any("cells.csv" in n and "half-written last row" in n for n in notes(page))


def test_an_empty_cells_csv_is_a_table_without_cells_yet(tmp_path: Path) -> None:
    # the worker opens cells.csv when it starts and writes its header with the first cells
    run = make_run(tmp_path / "run")
    (run / "results" / "cells.csv").write_bytes(b"")
    page = write_report(run).read_text(encoding="utf-8")
    said = notes(section(page, "cells"))
    assert said == ["p0: no cells in results/cells.csv.", "p1: no cells in results/cells.csv."]
    assert "no column" not in page
    assert "cells.csv is missing" not in page


@pytest.mark.parametrize(
    "name", ["frames.jsonl", "decisions.jsonl", "results/policy.jsonl", "results/cells.csv"]
)
def test_a_character_cut_in_half_at_the_end_of_a_file_is_no_traceback(
    tmp_path: Path, name: str
) -> None:
    run = make_run(tmp_path / "run")
    # a killed writer leaves the first byte of a two-byte UTF-8 character ("ü")
    _append(run / name, '{"position": "Brü'.encode()[:-1] if name != "results/cells.csv"
            else "Brü".encode()[:-1])  # fmt: skip
    page = write_report(run).read_text(encoding="utf-8")
    assert not_drawn(page) == []
    assert any(Path(name).name in n for n in notes(page)), notes(page)


def test_an_empty_results_folder_says_which_files_are_missing(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    shutil.rmtree(run / "results")
    (run / "results").mkdir()
    page = write_report(run).read_text(encoding="utf-8")
    assert "results/ is missing" not in page  # (it is there, empty)
    assert "Analysed fields unknown: results/latency.jsonl and results/cells.csv are " \
        "missing." in page  # fmt: skip


@pytest.mark.parametrize("position", ["p0", "p1"])
def test_a_damaged_track_file_costs_the_lineage_of_its_position_only(
    tmp_path: Path, position: str
) -> None:
    run = make_run(tmp_path / "run")
    _cut(run / "results" / "ctc" / position / "res_track.txt", 4)
    page = section(write_report(run).read_text(encoding="utf-8"), "lineage")
    assert page.count('<img class="plot"') == 1
    (said,) = notes(page)
    assert said.startswith(f"{position}: no lineage: results/ctc/{position}/res_track.txt:4:")


# ------------------------------------------------------------------ odd values


@pytest.mark.parametrize(
    "row",
    [
        pytest.param("p1,inf,7,180.0,9,9,0,1,1,1,1,interphase,0.1,0.5,0.5", id="t-inf"),
        pytest.param("p1,3,7,180.0,9,-inf,0,1,1,1,1,interphase,0.1,0.5,0.5", id="track-inf"),
        pytest.param("p1,3,7,180.0,9,9,nan,1e999,1,1,1,interphase,nan,0.5,0.5", id="floats"),
        pytest.param("p1,3,7,inf,9,9,0,1,1,1,1,interphase,inf,nan,-inf", id="times-inf"),
    ],
)
def test_non_finite_numbers_in_cells_csv_are_no_traceback(tmp_path: Path, row: str) -> None:
    run = make_run(tmp_path / "run")
    _append(run / "results" / "cells.csv", row.encode() + b"\n")
    page = write_report(run).read_text(encoding="utf-8")
    assert not_drawn(page) == []
    assert "p0: 3 cells per time point" in page


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("results/latency.jsonl", {"position": "p0", "t": 5, "ms": [1, 2]}),
        ("results/policy.jsonl", {"rule": "x", "position": "p0", "t": 1, "decision": "add"}),
        ("decisions.jsonl", {"decision": "add_events", "ack": True}),
        ("frames.jsonl", {"seq": 99, "position": "p0", "index": "t=4", "sample_time_s": 1.0}),
        ("summary.json", None),
    ],
)
def test_a_value_of_the_wrong_type_is_no_traceback(
    tmp_path: Path, name: str, line: dict[str, Any] | None
) -> None:
    run = make_run(tmp_path / "run")
    if line is None:  # a hand-edited summary
        summary = json.loads((run / name).read_text())
        summary.update(engines=["nuclei-unet"], engine_runtimes=[], policies_disabled="x",
                       warnings="check the lamp", decisions=3)  # fmt: skip
        (run / name).write_text(json.dumps(summary))
    else:
        _append(run / name, json.dumps(line).encode() + b"\n")
    page = write_report(run).read_text(encoding="utf-8")
    assert not_drawn(page) == []
    assert page.count('<img class="plot"') == 2 * 2 + 2
    if line is None:
        assert "<li>check the lamp</li>" in page  # (not a bullet per letter)


@pytest.mark.parametrize(
    "name", ["A1 $\\frac$", "cost $5 to $10", "50% $x^$", "<script>alert(1)</script>"]
)
def test_names_are_drawn_and_shown_as_written(tmp_path: Path, name: str) -> None:
    # a position, a rule and a cell state of that name: in plot titles, ticks and legends
    run = make_run(tmp_path / "run", positions=(name, "p1"), rule=name, state=name)
    page = write_report(run).read_text(encoding="utf-8")
    assert not_drawn(page) == []
    assert page.count('<img class="plot"') == 2 * 2 + 2
    assert "<script" not in page
    if "<" in name:
        assert name not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_names_are_escaped_as_matplotlib_text() -> None:
    from livescope.view._report_plots import plain_text

    assert plain_text("cost $5 to $10") == r"cost \$5 to \$10"
    assert plain_text("A1, site 2") == "A1, site 2"


# ------------------------------------------------------------------ thumbnails


@pytest.fixture
def recorded_run(tmp_path: Path, sim_profile: HardwareProfile) -> Path:
    """A small simulated recording (1 position, 2 time points) and its masks."""
    run = tmp_path / "run"
    run_simulated(sim_profile, demo_sequence(sim_profile, timepoints=2, positions=1), run, seed=3)
    folder = run / "results" / "ctc" / "p0"
    folder.mkdir(parents=True)
    shape = zarr.open_group(run / "data.ome.zarr", mode="r")["0/0"].shape[-2:]
    for t in range(2):
        labels = np.zeros(shape, np.uint16)
        labels[10:40, 10:40] = 1
        tifffile.imwrite(folder / f"mask{t:03d}.tif", labels)
    return run


def test_a_truncated_mask_costs_its_contours_only(recorded_run: Path) -> None:
    # the worker writes maskTTT.tif in place: a killed worker leaves the last one cut short
    _cut(recorded_run / "results" / "ctc" / "p0" / "mask001.tif", 1000)
    page = section(write_report(recorded_run).read_text(encoding="utf-8"), "fields")
    assert page.count('<img class="plot"') == 1
    (said,) = notes(page)
    assert said.startswith(
        "p0: results/ctc/p0/mask001.tif could not be read (t=1 drawn without contours): "
    )


# ------------------------------------------------------------------ a long run


def test_a_long_run_gives_a_small_report_quickly(tmp_path: Path) -> None:
    run = make_run(
        tmp_path / "run", positions=("p0", "p1", "p2", "p3"), timepoints=250, cells=100
    )  # fmt: skip  (100,000 rows of cells.csv, 1,000 firings)
    t0 = time.perf_counter()
    page = write_report(run).read_text(encoding="utf-8")
    took = time.perf_counter() - t0
    assert len(page) < 2_000_000
    assert took < 60  # (~2 s on a 2-core PC; a loose bound for a busy machine)
    assert "Showing the first 100 of 1000 firings." in page


# ------------------------------------------------------------------ what the analysis could not do


@pytest.mark.parametrize(
    ("gaps", "said"),
    [
        pytest.param(
            {"fields_missing": 2, "cells_revisions_not_applied": 1, "overlay_errors": 0},
            "fields missing 2; cells revisions not applied 1",
            id="some",
        ),
        pytest.param({"fields_missing": 0, "overlay_errors": 0}, "none", id="none"),
        pytest.param(None, "—", id="not-said"),
        pytest.param({"fields_missing": "x", "overlay_errors": 3}, "overlay errors 3", id="bad"),
    ],
)
def test_the_summary_says_what_the_analysis_could_not_do(
    tmp_path: Path, gaps: dict[str, Any] | None, said: str
) -> None:
    run = make_run(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    if gaps is not None:
        summary["analysis_gaps"] = gaps
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    page = write_report(run).read_text(encoding="utf-8")
    row = re.search(r"<th>Analysis gaps[^<]*</th>\s*<td>(.*?)</td>", section(page, "summary"))
    assert row is not None
    assert row.group(1) == said


def test_a_tree_larger_than_the_plot_is_said_to_be_cut(tmp_path: Path) -> None:
    # the first tree alone held more tracks than the plot draws: it was cut, and the
    # caption still said "whole trees"
    run = make_run(tmp_path / "run", positions=("p0",))
    lines = [f"{k} {k.bit_length() - 1} {k.bit_length() - 1} {k // 2}" for k in range(1, 301)]
    (run / "results" / "ctc" / "p0" / "res_track.txt").write_text("\n".join(lines) + "\n")
    page = section(write_report(run).read_text(encoding="utf-8"), "lineage")
    assert "Showing 250 of 300 tracks" in page
    assert "whole trees" not in page
    assert "the first tree cut" in page
