"""Reading a run folder for the run report: every part but the summary may be missing.

Each reader returns None for a file that is not there (the report then says so)
and skips a truncated last line of a JSON-lines log or of ``cells.csv`` (a run
killed mid-write), saying so in `RunData.problems`; so are a damaged line (JSON
that does not parse, a frame whose time point is no integer) and the rows of
``cells.csv`` from one the csv module cannot read. Bytes that are not UTF-8 (a
character cut in half) are read as U+FFFD, never raised.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livescope.record import DECISIONS_FILE, FRAMES_FILE, ZARR_NAME
from livescope.schema import LivescopeError

__all__ = ["RESULTS_DIR", "CellRow", "RunData", "finite_seconds", "firing_outcome", "load_run"]

RESULTS_DIR = "results"
SUMMARY_FILE = "summary.json"
_INT_COLUMNS = ("t", "seq", "label", "track", "parent")
_FLOAT_COLUMNS = ("sample_time_s", "y", "x", "area", "intensity", "p_mitosis")


@dataclass(frozen=True)
class CellRow:
    """One row of ``results/cells.csv`` (numbers parsed; a blank number is NaN or 0)."""

    position: str
    t: int
    sample_time_s: float
    track: int
    state: str
    p_mitosis: float
    parent: int = 0
    """Parent track of the cell's track (0: none known)."""


@dataclass
class RunData:
    """Everything the report reads from a run folder (None: that part is missing)."""

    run_dir: Path
    summary: dict[str, Any]
    frames: list[dict[str, Any]]
    decisions: list[dict[str, Any]] | None
    cells: list[CellRow] | None
    classes: list[str]
    """Cell-state classes, in the order of the ``p_<class>`` columns of cells.csv."""
    policy: list[dict[str, Any]] | None
    latency: list[dict[str, Any]] | None
    has_results: bool
    has_recording: bool
    problems: list[str] = field(default_factory=list)
    """Parts that exist but could not be read in full (shown in the report)."""

    @property
    def positions(self) -> list[str]:
        """Position names: the summary's, else those of the frame log, in order.

        From the frame log, those of the plan's own frames: a rule's sub-sequence
        (``p0~rule-3``, its frames ``added_by`` a decision) is no position of the plan,
        as in the summary.
        """
        named = self.summary.get("positions")
        if isinstance(named, list) and named:
            return [str(p) for p in named]
        return list(
            dict.fromkeys(
                str(f.get("position", "")) for f in self.frames if f.get("added_by") is None
            )
        )

    @property
    def channels(self) -> list[str]:
        """Channel names: the summary's, else those of the frame log, in order."""
        named = self.summary.get("channels")
        if isinstance(named, list) and named:
            return [str(c) for c in named]
        return list(dict.fromkeys(str(f.get("channel", "")) for f in self.frames))

    def sample_times(self) -> dict[tuple[str, int], float]:
        """Sample time (s) of each (position, time point), from the frame log.

        A time that is no finite number (a replayed dataset's broken timestamp) is left out.
        """
        out: dict[tuple[str, int], float] = {}
        for f in self.frames:
            st = finite_seconds(f.get("sample_time_s"))
            t = (f.get("index") or {}).get("t", 0)
            if st is not None:
                key = (str(f.get("position", "")), int(t))
                out[key] = min(out.get(key, math.inf), st)
        return out

    def seq_times(self) -> dict[int, tuple[str, int, float | None]]:
        """Position, time point and sample time (s, None: unknown) of each frame sequence number."""
        out: dict[int, tuple[str, int, float | None]] = {}
        for f in self.frames:
            if isinstance(f.get("seq"), int):
                out[f["seq"]] = (
                    str(f.get("position", "")),
                    int((f.get("index") or {}).get("t", 0)),
                    finite_seconds(f.get("sample_time_s")),
                )
        return out

    def ctc_folder(self, position: str) -> Path | None:
        """``results/ctc/<position>`` when it holds a ``res_track.txt``."""
        folder = self.run_dir / RESULTS_DIR / "ctc" / position
        return folder if (folder / "res_track.txt").is_file() else None


def finite_seconds(value: object) -> float | None:
    """Return a finite number of seconds, or None (not a number, NaN, infinite, too large)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # (an integer of more digits than a float holds)
        return None
    return seconds if math.isfinite(seconds) else None


def _time_point_ok(frame: dict[str, Any]) -> bool:
    """Whether a frame log line's index is an object whose time point (default 0) is an integer."""
    index = frame.get("index", {})
    if not isinstance(index, dict):
        return False
    t = index.get("t", 0)
    return isinstance(t, int) or (isinstance(t, float) and t.is_integer())


def _fields_only(
    rows: list[dict[str, Any]] | None, problems: list[str]
) -> list[dict[str, Any]] | None:
    """Keep the lines of ``latency.jsonl`` that name a field: a position and an integer t.

    (a time point that is a list or an object is unhashable: it cost the sections that
    group the analysed fields, and the line is damaged, so it costs only itself)
    """
    if rows is None:
        return None
    ok = [
        r for r in rows
        if isinstance(r.get("position"), str)
        and isinstance(t := r.get("t"), int) and not isinstance(t, bool)
    ]  # fmt: skip
    if n := len(rows) - len(ok):
        problems.append(
            f"latency.jsonl: {n} line(s) whose position is no name or whose time point is no "
            "integer skipped"
        )
    return ok


def firing_outcome(verdict: object, stage: object) -> str:
    """Outcome of one rule firing (a key of the report's marker styles)."""
    if verdict in ("accepted", "shared", "recorded"):
        return str(verdict)
    if verdict == "error":
        return "error"
    if verdict == "not_sent":
        return "not sent"
    if stage == "unanswered":
        return "unanswered"
    if stage in ("guardrail", "agent", "shared"):
        return f"rejected ({stage})"
    return "rejected"


def _read_text(path: Path) -> str:
    # (a writer killed mid-character leaves the first bytes of a UTF-8 sequence: they read as
    # U+FFFD, and the line they end is then unreadable, not the whole file)
    return path.read_bytes().decode("utf-8", errors="replace")


def _read_jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]] | None:
    if not path.is_file():
        return None
    out: list[dict[str, Any]] = []
    bad = 0
    for line in _read_text(path).splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (ValueError, RecursionError):  # (RecursionError: nested too deep, damaged)
            bad += 1
            continue
        if isinstance(item, dict):
            out.append(item)
        else:
            bad += 1
    if bad:
        problems.append(f"{path.name}: {bad} unreadable line(s) skipped")
    return out


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _csv_rows(reader: csv.DictReader[str], problems: list[str]) -> Iterator[dict[str, Any]]:
    """Yield the rows of ``cells.csv`` up to one the csv module cannot read, said in ``problems``.

    (csv.Error is no ValueError: a damaged row, e.g. a quote never closed, lost the whole
    report; after it the csv module cannot tell where rows begin, so the rest is left out)
    """
    try:
        yield from reader
    except csv.Error as exc:
        # (line_num counts the lines of the rows read in full: the damaged row begins after)
        problems.append(
            f"cells.csv: unreadable at line {reader.line_num + 1} ({exc}); the rows from there "
            "on are not shown"
        )


def _read_cells(path: Path, problems: list[str]) -> tuple[list[CellRow] | None, list[str]]:
    if not path.is_file():
        return None, []
    text = _read_text(path)
    if not text.strip():
        return [], []  # (the worker opens it as it starts; its header comes with the first cells)
    if not text.endswith("\n"):
        # a row without its newline was being written when the run was killed (a resumed
        # worker drops it too)
        text = text[: text.rfind("\n") + 1]
        problems.append("cells.csv: a half-written last row skipped (the run was cut short)")
    rows: list[CellRow] = []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        names = list(reader.fieldnames or [])
    except csv.Error as exc:
        problems.append(f"cells.csv: its header cannot be read ({exc}); cells not shown")
        return None, []
    missing = [c for c in ("position", "t") if c not in names]
    if missing:
        problems.append(f"cells.csv: no column {', '.join(missing)}; cells not shown")
        return None, []
    classes = [c[2:] for c in names if c.startswith("p_") and c != "p_mitosis"]
    bad = 0
    for rec in _csv_rows(reader, problems):
        t = _number(rec.get("t"))
        if not math.isfinite(t):
            bad += 1
            continue
        track = _number(rec.get("track"))
        parent = _number(rec.get("parent"))
        state = str(rec.get("state") or "")
        if state in classes and math.isnan(_number(rec.get(f"p_{state}"))):
            # NaN probabilities (the engine's output): the cell was not classified (a worker
            # before 2026-12-06 wrote the first NaN's class as its state; runs it recorded
            # are read as unclassified too)
            state = ""
        rows.append(
            CellRow(
                position=str(rec.get("position") or ""),
                t=int(t),
                sample_time_s=_number(rec.get("sample_time_s")),
                track=int(track) if math.isfinite(track) else 0,
                state=state,
                p_mitosis=_number(rec.get("p_mitosis")),
                parent=int(parent) if math.isfinite(parent) and parent > 0 else 0,
            )
        )
    if bad:
        problems.append(f"cells.csv: {bad} row(s) without a time point skipped")
    return rows, classes


def _read_summary(run: Path) -> tuple[dict[str, Any] | None, str]:
    """Return the run summary, or None and why it cannot be read ("is missing", ...)."""
    path = run / SUMMARY_FILE
    if not path.is_file():
        return None, "is missing"
    try:
        summary = json.loads(_read_text(path))
    except (ValueError, RecursionError) as exc:  # (RecursionError: nested too deep, damaged)
        return None, f"is not valid JSON ({exc})"
    if isinstance(summary, dict):
        return summary, ""
    return None, "does not hold a JSON object"


def load_run(run_dir: str | Path) -> RunData:
    """Read a run folder (see `write_report` for its layout).

    A run without a readable ``summary.json`` (killed before it ended) is read
    with an empty summary, the reason in `RunData.problems`.

    Raises
    ------
    LivescopeError
        if ``frames.jsonl`` is missing (not a run folder).

    """
    run = Path(run_dir)
    problems: list[str] = []
    summary, why = _read_summary(run)
    if summary is None:
        if not (run / FRAMES_FILE).is_file():
            raise LivescopeError(f"{run} is not a run folder: {SUMMARY_FILE} {why}")
        problems.append(
            f"{SUMMARY_FILE} {why}: the run did not end as planned (it was killed, or is still "
            "going on); what the summary says is not shown, the rest comes from the frame log "
            "and results/"
        )
    frames = _read_jsonl(run / FRAMES_FILE, problems)
    if frames is None:
        raise LivescopeError(f"{run} is not a run folder: {FRAMES_FILE} is missing")
    # (a time point that is no integer, e.g. NaN, Infinity or null, cost every section that
    # groups frames by time point; the line is damaged, so it costs only itself)
    if n := sum(not _time_point_ok(f) for f in frames):
        frames = [f for f in frames if _time_point_ok(f)]
        problems.append(
            f"{FRAMES_FILE}: {n} line(s) whose index is no object or whose time point is no "
            "integer skipped"
        )
    results = run / RESULTS_DIR
    cells, classes = _read_cells(results / "cells.csv", problems)
    return RunData(
        run_dir=run,
        summary=summary or {},
        frames=frames,
        decisions=_read_jsonl(run / DECISIONS_FILE, problems),
        cells=cells,
        classes=classes,
        policy=_read_jsonl(results / "policy.jsonl", problems),
        latency=_fields_only(_read_jsonl(results / "latency.jsonl", problems), problems),
        has_results=results.is_dir(),
        has_recording=(run / ZARR_NAME).is_dir(),
        problems=problems,
    )
