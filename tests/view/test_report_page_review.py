"""Review of the report's page (`ReportPage`) and of ``livescope view``'s refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from livescope.cli._view import no_display_reason
from livescope.view import write_report
from tests.conftest import ROOT
from tests.view.test_report_robustness import make_run, not_drawn, section

_FRAME = '{"seq": 99, "position": "p0", "channel": "DAPI", "index": {"t": %s}, "sample_time_s": %s}'


def _add_frame(run: Path, t: str, sample_time_s: str, *, first: bool = False) -> None:
    """Add a frame log line (JSON as Python writes it: NaN and Infinity as such)."""
    log = run / "frames.jsonl"
    line = _FRAME % (t, sample_time_s) + "\n"
    text = log.read_text(encoding="utf-8")
    log.write_text(line + text if first else text + line, encoding="utf-8")


@pytest.mark.parametrize(
    ("sample_time_s", "first"),
    [
        pytest.param("Infinity", False, id="infinite"),
        pytest.param("NaN", True, id="nan-first"),
    ],
)
def test_a_time_that_is_no_finite_number_costs_no_section(
    tmp_path: Path, sample_time_s: str, first: bool
) -> None:
    # (the frame log is written with json.dumps: a replayed dataset's broken timestamp
    # is logged as Infinity or NaN)
    run = make_run(tmp_path / "run")
    _add_frame(run, "0", sample_time_s, first=first)
    page = write_report(run).read_text(encoding="utf-8")
    assert not_drawn(page) == []
    assert page.count('<img class="plot"') == 2 * 2 + 2
    assert "<th>time (min)</th>" in page  # (make_run's 3 minutes are not put in hours)


@pytest.mark.parametrize(
    ("t", "sample_time_s"),
    [
        pytest.param("0", "1" + "0" * 400, id="time-too-large-for-a-float"),
        pytest.param("Infinity", "1.0", id="infinite-time-point"),
    ],
)
def test_a_number_no_float_holds_costs_its_sections_only(
    tmp_path: Path, t: str, sample_time_s: str
) -> None:
    run = make_run(tmp_path / "run")
    _add_frame(run, t, sample_time_s)
    page = write_report(run).read_text(encoding="utf-8")  # (raised OverflowError: no report)
    assert not_drawn(page) == []  # (the frame's time left out: no section lost)
    assert "r1" in section(page, "summary")  # the rest of the report is there
    assert '<img class="plot"' in page


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"QT_QPA_PLATFORM": "wayland;xcb", "DISPLAY": ":0"}, id="x11-session"),
        pytest.param({"QT_QPA_PLATFORM": "xcb;wayland", "WAYLAND_DISPLAY": "w"}, id="wayland"),
        # (offscreen, after it, is never tried: it could not draw napari's canvas)
        pytest.param(
            {"QT_QPA_PLATFORM": "wayland;offscreen", "WAYLAND_DISPLAY": "w"},
            id="wayland-before-offscreen",
        ),
    ],
)
def test_a_list_of_qt_platforms_needs_one_that_can_start(env: dict[str, str]) -> None:
    # Qt tries each platform of the list in turn (many desktops set "wayland;xcb")
    assert no_display_reason(env, "linux") is None


def test_a_list_of_qt_platforms_none_of_which_can_start_is_refused() -> None:
    why = no_display_reason({"QT_QPA_PLATFORM": "wayland;xcb"}, "linux")
    assert why is not None
    assert "needs a graphical display and none is set" in why
    assert "QT_QPA_PLATFORM='wayland;xcb'" in why


def test_a_refusal_for_the_qt_platform_names_it_and_not_a_missing_display() -> None:
    why = no_display_reason({"QT_QPA_PLATFORM": "wayland", "DISPLAY": ":0"}, "linux")
    assert why is not None
    assert "needs a graphical display and none is set" in why
    assert "QT_QPA_PLATFORM='wayland'" in why
    assert "only DISPLAY is set" in why
    assert "no DISPLAY" not in why  # (DISPLAY is set: Qt was told not to use it)


def test_an_empty_position_is_refused(tmp_path: Path) -> None:
    # `--position "$POS"` with POS unset: the viewer waited for position "" for ever
    # (no display: the option is checked before it)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-m", "livescope", "view", str(tmp_path), "--position", "",
         "--timeout-s", "0.2", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    error = json.loads(res.stdout)["error"]
    assert "--position" in error
    assert "is empty" in error


def test_a_report_of_the_current_folder_is_named_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a killed run (no summary, so no run id), its report written from inside its folder
    run = make_run(tmp_path / "run-42")
    (run / "summary.json").unlink()
    monkeypatch.chdir(run)
    page = write_report(".").read_text(encoding="utf-8")
    assert "<title>Run report: run-42</title>" in page
    assert "<h1>Run report: run-42</h1>" in page


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="names are UTF-8 elsewhere")
def test_a_run_folder_whose_name_is_not_utf8_gets_its_report(tmp_path: Path) -> None:
    # (a Latin-1 "café" on an old share: Python reads its byte as a lone surrogate)
    run = make_run(tmp_path / os.fsdecode(b"caf\xe9-run"))
    page = write_report(run).read_text(encoding="utf-8")  # (raised UnicodeEncodeError)
    assert "<h1>Run report: r1</h1>" in page
    assert "caf?-run" in page
    assert not_drawn(page) == []
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # (no temp)
