"""Review of the report's per-position sections on large plates, of how it reads a damaged
run, and of ``livescope view``'s options."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from livescope.view import _report, write_report
from tests.conftest import run_cli
from tests.view.test_report_robustness import make_run, not_drawn, notes, section

_FRAME = '{"seq": 99, "position": "p0", "channel": "DAPI", "index": {"t": %s}, "sample_time_s": %s}'


def _add_line(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def _plots(html: str) -> int:
    return html.count('<img class="plot"')


# ------------------------------------------------------------------ many positions


@pytest.mark.parametrize("anchor", ["cells", "lineage"])
def test_a_plate_of_many_positions_draws_the_first_and_lists_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anchor: str
) -> None:
    # one plot per position: 96 wells took 30 s and made a 3.4 MB page (here the limit
    # is lowered to 2, not to write 25 positions)
    monkeypatch.setattr(_report, "MAX_POSITION_PLOTS", 2)
    run = make_run(tmp_path / "run", positions=("p0", "p1", "p2", "p3"), timepoints=2)
    body = section(write_report(run).read_text(encoding="utf-8"), anchor)
    assert _plots(body) == 2
    assert re.findall(r"<figcaption>(p\d):", body) == ["p0", "p1"]
    assert "the first 2 of 4 positions" in body
    # the others are not lost: a row each, with what their plot's caption gives
    rows = re.findall(r"<tr><td>(p\d)</td>(.*?)</tr>", body)
    assert [p for p, _ in rows] == ["p2", "p3"]
    assert all('<td class="num">' in r for _, r in rows)


def test_a_run_of_few_positions_draws_every_position(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", positions=("p0", "p1", "p2"), timepoints=2)
    page = write_report(run).read_text(encoding="utf-8")
    for anchor in ("cells", "lineage"):
        body = section(page, anchor)
        assert _plots(body) == 3
        assert "<table>" not in body


# ------------------------------------------------------------------ damaged lines


@pytest.mark.parametrize("log", ["frames.jsonl", "decisions.jsonl", "results/policy.jsonl"])
def test_a_deeply_nested_line_costs_only_itself(tmp_path: Path, log: str) -> None:
    # (a damaged or hostile line: json raises RecursionError, not ValueError, and no report
    # was written at all)
    run = make_run(tmp_path / "run")
    _add_line(run / log, "[" * 100_000)
    page = write_report(run).read_text(encoding="utf-8")
    assert f"{Path(log).name}: 1 unreadable line(s) skipped" in notes(page)
    assert not_drawn(page) == []
    assert _plots(page) == _plots(write_report(make_run(tmp_path / "intact")).read_text("utf-8"))


def test_a_deeply_nested_summary_is_said_to_be_unreadable(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (run / "summary.json").write_text('{"a": ' * 100_000, encoding="utf-8")
    page = write_report(run).read_text(encoding="utf-8")
    assert any(n.startswith("summary.json is not valid JSON") for n in notes(page))
    assert _plots(page) > 0


@pytest.mark.parametrize(
    ("t", "sample_time_s", "said"),
    [
        pytest.param("0", "1" + "0" * 400, "", id="time-too-large-for-a-float"),
        pytest.param("0", "-1" + "0" * 400, "", id="time-too-small-for-a-float"),
        pytest.param("Infinity", "1.0", "time point", id="infinite-time-point"),
        pytest.param("NaN", "1.0", "time point", id="nan-time-point"),
        pytest.param("null", "1.0", "time point", id="no-time-point"),
    ],
)
def test_a_frame_whose_time_is_no_number_costs_no_section(
    tmp_path: Path, t: str, sample_time_s: str, said: str
) -> None:
    run = make_run(tmp_path / "run")
    _add_line(run / "frames.jsonl", _FRAME % (t, sample_time_s))
    page = write_report(run).read_text(encoding="utf-8")
    assert not_drawn(page) == []  # (the cells and decisions sections were lost)
    assert _plots(page) == _plots(write_report(make_run(tmp_path / "intact")).read_text("utf-8"))
    if said:  # a line that says no time point is skipped, and said to be
        assert any(said in n and "frames.jsonl: 1 line" in n for n in notes(page))


@pytest.mark.parametrize(
    "line",
    [
        pytest.param('{"position": "p0", "t": [0], "ms": {"engines": 1.0}}', id="t-a-list"),
        pytest.param('{"position": "p0", "t": {"a": 1}, "ms": {}}', id="t-an-object"),
        pytest.param('{"position": "p0", "t": 1.5, "ms": {}}', id="t-no-integer"),
        pytest.param('{"position": ["p0"], "t": 0, "ms": {}}', id="position-a-list"),
    ],
)
def test_a_latency_line_of_no_field_costs_only_itself(tmp_path: Path, line: str) -> None:
    # (a time point that is a list or object raised TypeError: unhashable, and the cells and
    # drops sections were lost)
    run = make_run(tmp_path / "run")
    _add_line(run / "results" / "latency.jsonl", line)
    page = write_report(run).read_text(encoding="utf-8")
    assert not_drawn(page) == []
    assert any("latency.jsonl: 1 line(s)" in n for n in notes(page))
    assert _plots(page) == _plots(write_report(make_run(tmp_path / "intact")).read_text("utf-8"))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param('p0,1,9,60.0,"' + "x" * 200_000, id="unclosed-quote"),
        pytest.param("p0," + "x" * 200_000, id="field-over-csvs-limit"),
    ],
)
def test_a_row_of_cells_csv_that_csv_cannot_read_costs_the_rows_after_it(
    tmp_path: Path, damage: str
) -> None:
    # (csv.Error is no ValueError: it was raised out of load_run, and no report was written)
    run = make_run(tmp_path / "run", timepoints=2)
    cells = run / "results" / "cells.csv"
    rows = cells.read_text(encoding="utf-8").splitlines()
    cells.write_text("\n".join([*rows[:10], damage, *rows[10:]]) + "\n", encoding="utf-8")
    page = write_report(run).read_text(encoding="utf-8")
    said = [n for n in notes(page) if n.startswith("cells.csv: ")]
    assert len(said) == 1
    assert "line 11" in said[0]
    assert "the rows from there on are not shown" in said[0]
    assert not_drawn(page) == []
    assert _plots(section(page, "cells")) == 2  # (the 9 rows before it: both positions)


# ------------------------------------------------------------------ livescope view


@pytest.mark.parametrize(
    ("args", "said"),
    [
        pytest.param(["", "--timeout-s", "0.1"], "is empty", id="empty-run"),
        pytest.param(["run", "--timeout-s", "inf"], "must be a finite number", id="inf-timeout"),
    ],
)
def test_view_refuses_an_empty_run_or_an_endless_wait(args: list[str], said: str) -> None:
    # ("" was the current folder, and inf waited for an overlay for ever)
    res = run_cli("view", *args, "--json", timeout=60)  # (inf: the old code never returned)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert said in res.stdout + res.stderr
    assert not res.stdout.strip() or json.loads(res.stdout)["ok"] is False


def test_a_header_of_cells_csv_that_csv_cannot_read_costs_the_cells_only(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", timepoints=2)
    cells = run / "results" / "cells.csv"
    cells.write_text('position,"t' + "x" * 200_000 + "\n", encoding="utf-8")
    page = write_report(run).read_text(encoding="utf-8")
    assert any(n.startswith("cells.csv: its header cannot be read") for n in notes(page))
    assert not_drawn(page) == []
    assert _plots(section(page, "lineage")) == 2


def test_a_close_ups_time_that_is_no_number_costs_no_section(tmp_path: Path) -> None:
    # (float() of a time too large for a float raised OverflowError: the close-ups lost)
    run = make_run(tmp_path / "run")
    added = ('{"seq": 98, "position": "p0~rule-1", "channel": "DAPI", "index": {"t": 0}, '
             '"added_by": "d1", "sample_time_s": 1%s}') % ("0" * 400)  # fmt: skip
    _add_line(run / "frames.jsonl", added)
    page = write_report(run).read_text(encoding="utf-8")
    assert not_drawn(page) == []
    assert "p0~rule-1" in page
