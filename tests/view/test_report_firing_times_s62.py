"""The "All firings" table gives each firing's time to the two decimals it was taken to.

The time was rounded to 2 decimals, then written at 3 significant digits: in a 12 h
run firings at 11.50 h and 11.57 h read "11.5" and "11.6" (6-minute steps), in a 3 h
run 170.17 and 170.83 min read "170" and "171".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from livescope.view import write_report
from livescope.view._report_html import Fixed, fmt

from .test_report_robustness import make_run


@pytest.mark.parametrize(
    ("times_s", "unit", "said"),
    [
        pytest.param((41400.0, 41640.0), "h", ["11.50", "11.57"], id="12-h-run"),
        pytest.param((10210.0, 10250.0), "min", ["170.17", "170.83"], id="3-h-run"),
    ],
)
def test_firing_times_keep_two_decimals(
    tmp_path: Path, times_s: tuple[float, float], unit: str, said: list[str]
) -> None:
    run = make_run(tmp_path / "run", positions=("p0",), timepoints=2)
    results = run / "results"
    lines = [json.loads(line) for line in (results / "policy.jsonl").read_text().splitlines()]
    for rec, st in zip(lines, times_s, strict=True):
        rec["sample_time_s"] = st
    (results / "policy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    frames = [json.loads(line) for line in (run / "frames.jsonl").read_text().splitlines()]
    for rec, st in zip(frames, times_s, strict=True):
        rec["sample_time_s"] = st
    (run / "frames.jsonl").write_text("".join(json.dumps(r) + "\n" for r in frames))
    page = write_report(run).read_text(encoding="utf-8")
    table = page[page.index("<h3>All firings</h3>") :]
    assert f"<th>time ({unit})</th>" in table
    shown = re.findall(r'<tr><td class="num">([^<]*)</td><td>mitosis-burst</td>', table)
    assert shown == said


def test_a_fixed_number_is_written_with_its_places() -> None:
    assert (fmt(Fixed(1234.5, 2)), fmt(Fixed(0.1, 3)), fmt(Fixed(2.0, 0))) == (
        "1,234.50", "0.100", "2",
    )  # fmt: skip
    assert fmt(11.57) == "11.6"  # (other numbers: 3 significant digits, as before)
