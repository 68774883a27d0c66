"""The run report's figures and words checked against what the run folder holds.

Each test draws a report (or one of its figures) of a run whose contents it
states, and checks that what the page shows is what happened: every firing on
the timeline in its rule's row, a field without cells counted as none, numbers
written as numbers, the thumbnails' caption naming the markers drawn, and a
killed run's positions those of its plan.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from livescope.view import write_report
from livescope.view._report_data import load_run
from livescope.view._report_html import fmt
from livescope.view._report_plots import (
    STATUS_CAPTION,
    STATUS_STYLE,
    decisions_timeline,
)

from .test_report_robustness import make_run, section
from .test_report_robustness import recorded_run as recorded_run

# ------------------------------------------------------------------ the decisions timeline


def _pixels_of(png: bytes, colour: str, *, alpha: float = 0.8) -> np.ndarray:
    """Where the PNG shows ``colour`` drawn at ``alpha`` over white (rows, columns)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), float)
    want = np.asarray([int(colour[i : i + 2], 16) for i in (1, 3, 5)], float)
    want = alpha * want + (1 - alpha) * 255.0
    return np.argwhere(np.abs(rgb - want).max(axis=-1) < 12)


@pytest.mark.parametrize("outcome", ["accepted", "rejected (agent)", "rejected"])
def test_the_timeline_shows_every_firing_of_a_lone_rule(outcome: str) -> None:
    # one rule that fired at ten time points: ten markers of the outcome's colour in the plot
    # (the first outcomes' markers were drawn above the row, out of the axes, and not seen)
    events = [(60.0 * i, "mitosis-burst", outcome) for i in range(10)]
    png = decisions_timeline(events, unit=("min", 60.0), x_max_s=1200.0)  # (in its left half)
    width = Image.open(io.BytesIO(png)).width
    found = _pixels_of(png, STATUS_STYLE[outcome][1])
    columns = np.unique(found[found[:, 1] < 0.6 * width][:, 1])  # (the legend is right of it)
    markers = 0 if not columns.size else 1 + int(np.sum(np.diff(columns) > 10))
    assert markers == 10, (outcome, columns)  # (they are 1 min, ~30 px, apart)


def test_the_timeline_draws_each_firing_in_the_half_of_its_own_rule() -> None:
    # rule "b" accepted, rule "a" refused at the same times: the plot's upper half is a's
    # row, its lower half b's (b's green circles were drawn in a's half)
    events = [(60.0 * i, "a", "rejected (agent)") for i in range(10)]
    events += [(60.0 * i, "b", "accepted") for i in range(10)]
    png = decisions_timeline(events, unit=("min", 60.0), x_max_s=600.0)
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    width = rgb.shape[1]
    spines = np.flatnonzero((rgb.max(axis=-1) < 80).sum(axis=1) > 0.4 * width)
    middle = (spines.min() + spines.max()) / 2  # (the top and bottom spines)
    for rule_half, outcome in ((-1, "rejected (agent)"), (1, "accepted")):
        found = _pixels_of(png, STATUS_STYLE[outcome][1])
        rows = found[found[:, 1] < 0.6 * width][:, 0]
        assert rows.size, outcome
        assert np.all(np.sign(rows - middle) == rule_half), (outcome, middle, rows.min())


# ------------------------------------------------------------------ cells over time


def _drop_cells(run: Path, position: str, t: int) -> None:
    """Remove a field's rows from cells.csv: the field was analysed and held no cells."""
    path = run / "results" / "cells.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    kept = [r for r in rows if not (r[0] == position and r[1] == str(t))]
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(kept)


def test_a_field_analysed_without_cells_counts_as_none(tmp_path: Path) -> None:
    # the worker writes no row of cells.csv for a field without cells (all cells left the
    # view, or focus was lost); latency.jsonl says the field was analysed
    run = make_run(tmp_path / "run")
    _drop_cells(run, "p0", 2)
    page = section(write_report(run).read_text(encoding="utf-8"), "cells")
    assert "p0: 0–3 cells per time point over 4 analysed time points" in page
    assert "p1: 3 cells per time point over 4 analysed time points" in page


def test_without_a_latency_log_the_cell_table_gives_the_time_points(tmp_path: Path) -> None:
    # (an older run folder: the fields analysed are only those with cells)
    run = make_run(tmp_path / "run")
    _drop_cells(run, "p0", 2)
    (run / "results" / "latency.jsonl").unlink()
    page = section(write_report(run).read_text(encoding="utf-8"), "cells")
    assert "p0: 3 cells per time point over 3 analysed time points" in page


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (999.7, "1,000"),
        (-999.6, "-1,000"),
        (99.96, "100"),
        (999.4, "999"),
        (12345.6, "12,346"),
        (0.00012345, "0.000123"),
        (1.5e-05, "1.5e-05"),
        (float("inf"), "inf"),
    ],
)
def test_a_number_is_written_without_exponent_from_1000_up(value: float, said: str) -> None:
    # (999.7 was "1e+03": a latency, a duration or a frame rate just under 1000)
    assert fmt(value) == said


def test_the_summary_gives_a_duration_just_under_1000_s_in_full(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    summary.update(duration_s=999.8, fps=4.0)
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    page = section(write_report(run).read_text(encoding="utf-8"), "summary")
    assert "<td>1,000 · 4</td>" in page


# ------------------------------------------------------------------ thumbnails


def test_the_thumbnails_caption_names_the_markers_drawn(recorded_run: Path) -> None:
    # a firing made after the last frame (not sent): a plus sign on the thumbnail; the
    # caption said circles and crosses, and nothing of plus signs
    firing = {"rule": "mitosis-burst", "trigger": "p_mitosis", "position": "p0", "t": 1,
              "seq": 1, "sample_time_s": 1.0, "track": 1, "y": 25.0, "x": 25.0,
              "decision": {"type": "add_events"}, "verdict": "not_sent", "stage": "not_sent",
              "reason": "the run has ended (what-if: not sent)"}  # fmt: skip
    (recorded_run / "results" / "policy.jsonl").write_text(json.dumps(firing) + "\n")
    page = section(write_report(recorded_run).read_text(encoding="utf-8"), "fields")
    assert "1 rule firing(s) marked: " + STATUS_CAPTION["not sent"] + "." in page
    assert "cross" not in page
    assert "circle" not in page


# ------------------------------------------------------------------ speed


def test_each_figure_is_rendered_once() -> None:
    # savefig lays a constrained-layout figure out in a draw of its own, then draws it
    # again: twice the time of every plot of the report (three per position)
    from livescope.view import _report_plots as plots

    fig = plots._figure(4.0, 3.0)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set(title="t", xlabel="x", ylabel="y")
    draws: list[object] = []
    fig.canvas.mpl_connect("draw_event", draws.append)
    png = plots._png(fig)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(draws) == 1
    size = Image.open(io.BytesIO(png)).size
    assert size == (4 * plots.DPI, 3 * plots.DPI)


# ------------------------------------------------------------------ a run cut short


def test_a_killed_runs_positions_are_the_plans_not_its_sub_sequences(tmp_path: Path) -> None:
    # without a summary, the positions come from the frame log: a rule's close-up of a cell
    # (frames added by a decision, at position "p0~mitosis-burst-0") is no position
    run = make_run(tmp_path / "run")
    (run / "summary.json").unlink()
    closeup = [{"seq": 100 + t, "position": "p0~mitosis-burst-0", "channel": "DAPI",
                "index": {"t": t, "z": 0, "c": 0}, "sample_time_s": 61.0 + 5 * t,
                "added_by": "d-1"} for t in range(3)]  # fmt: skip
    with (run / "frames.jsonl").open("a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(f) + "\n" for f in closeup)
    page = write_report(run).read_text(encoding="utf-8")
    assert "<th>Positions</th><td>p0, p1</td>" in page
    closeups = section(page, "closeups")  # (listed there, as a close-up)
    assert "mitosis-burst-0" in closeups
    assert "mitosis-burst-0" not in page.replace(closeups, "")
    assert page.count('<img class="plot"') == 2 * 2 + 2


# ------------------------------------------------------------------ cell states


def test_a_cell_whose_state_probabilities_are_nan_is_unclassified(tmp_path: Path) -> None:
    # the engine returned NaN for a cell: the worker writes its probabilities as "nan" and,
    # the argmax of NaNs being the first NaN's class, its state as "interphase"
    run = make_run(tmp_path / "run")
    path = run / "results" / "cells.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header = rows[0]
    for r in rows[1:]:
        if r[0] == "p0" and r[1] == "2":
            r[header.index("p_mitosis")] = ""
            r[header.index("p_interphase")] = r[header.index("p_prophase")] = "nan"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    cells = load_run(run).cells
    assert cells is not None
    states = Counter((c.position, c.t, c.state) for c in cells)
    assert states[("p0", 2, "")] == 3
    assert states[("p0", 2, "interphase")] == 0
    assert states[("p0", 1, "interphase")] == 3  # (those with probabilities are as written)


def test_counts_and_latency_titles_are_written_in_words_and_in_full() -> None:
    # "1 divisions" in the lineage caption; "p99 4.36e+03 ms" in a latency histogram's title
    from livescope.view._report_html import count, fmt

    assert count(1, "division") == "1 division"
    assert count(0, "division") == "0 divisions"
    assert count(1234, "track") == "1,234 tracks"
    assert fmt(4357.2) == "4,357"


def test_a_killed_runs_lineage_is_drawn_from_its_cell_table(tmp_path: Path) -> None:
    # res_track.txt is written when the worker finishes: a run cut short had no lineage,
    # though cells.csv holds every cell's track and parent
    run = make_run(tmp_path / "run", positions=("p0",), timepoints=4, cells=2)
    shutil.rmtree(run / "results" / "ctc")
    path = run / "results" / "cells.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    head = rows[0]
    extra = []  # track 1 divides after t=1 into tracks 3 and 4
    for r in rows[1:]:
        if r[head.index("track")] == "1" and int(r[head.index("t")]) >= 2:
            r[head.index("track")], r[head.index("parent")] = "3", "1"
            twin = list(r)
            twin[head.index("track")] = twin[head.index("label")] = "4"
            extra.append(twin)
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows + extra)
    page = write_report(run).read_text(encoding="utf-8")
    lineage = section(page, "lineage")
    assert "no lineage" not in lineage
    assert "p0: 4 tracks, 1 division" in lineage
    assert "From cells.csv" in lineage
    assert '<img class="plot"' in lineage


def test_the_closeups_decisions_added_are_listed_with_what_they_answer(tmp_path: Path) -> None:
    # a rule's close-ups (most of a demo's frames) appeared nowhere in the report
    run = make_run(tmp_path / "run", positions=("p0",))
    channels = list(enumerate(("Phase", "DAPI")))
    frames = [{"seq": 100 + 2 * t + c, "position": "p0~mitosis-burst-0", "channel": ch,
               "index": {"t": t, "z": 0, "c": c}, "sample_time_s": 70.0 + 30 * t,
               "added_by": "d-1"} for t in range(3) for c, ch in channels]  # fmt: skip
    with (run / "frames.jsonl").open("a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(f) + "\n" for f in frames)
    decision = {"decision_id": "d-1", "rule": "mitosis-burst", "type": "add_events",
                "inputs": {"position": "p0", "t": 1, "track": 7}}  # fmt: skip
    (run / "decisions.jsonl").write_text(
        json.dumps({"decision": decision, "ack": {"accepted": True}}) + "\n", encoding="utf-8"
    )
    page = section(write_report(run).read_text(encoding="utf-8"), "closeups")
    assert "1 close-up (" in page
    assert "6 frames in all" in page
    row = ("<td>p0~mitosis-burst-0</td><td>mitosis-burst</td><td>p0</td>"
           '<td class="num">1</td><td class="num">7</td><td class="num">3</td>'
           '<td>Phase, DAPI</td><td class="num">6</td><td class="num">70</td>'
           '<td class="num">130</td>')  # fmt: skip
    assert row in page
    assert "No thumbnails: the recording (data.ome.zarr) is missing." in page
    # a run without close-ups says so
    plain = section(write_report(make_run(tmp_path / "plain")).read_text(encoding="utf-8"),
                    "closeups")  # fmt: skip
    assert "No close-ups: no decision added frames to this run." in plain
