"""Reading a run folder for the run report: every part but the summary may be missing.

Each reader returns None for a file that is not there (the report then says so)
and skips a truncated last line of a JSON-lines log or of ``cells.csv`` (a run
killed mid-write), saying so in `RunData.problems`; so are a damaged line (JSON
that does not parse, a frame whose time point is no integer) and the rows of
``cells.csv`` from one the csv module cannot read. Bytes that are not UTF-8 (a
character cut in half) are read as U+FFFD, never raised.

The files are read line by line and only what the report shows is kept: of each frame
log line the fields it reads (`FRAME_FIELDS`), of ``cells.csv`` a column table
(`CellTable`). A 72-hour plate run logs some 250,000 frames and 25 million cells:
kept whole, as Python objects, they took gigabytes.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.record import DECISIONS_FILE, FRAMES_FILE, ZARR_NAME, field_key
from livescope.schema import LivescopeError

__all__ = [
    "ADDED_FRAME_FIELDS",
    "FRAME_FIELDS",
    "RESULTS_DIR",
    "CellRow",
    "CellTable",
    "RunData",
    "finite_seconds",
    "firing_outcome",
    "load_run",
]

RESULTS_DIR = "results"
SUMMARY_FILE = "summary.json"
FRAME_FIELDS = ("seq", "position", "channel", "index", "sample_time_s", "added_by")
"""The fields of a frame log line the report reads (the others, ``event`` the largest, are
not kept); of its ``index`` only ``t`` and ``z``."""
ADDED_FRAME_FIELDS = ("t_camera_ns",)
"""Fields also kept of a frame added by a decision (``added_by``): its decision's execution
latency (the first added frame's camera time, `livescope.pipeline._demo._decision_executed_ms`);
not of the plan's own frames, most of a long run's."""
_INDEX_FIELDS = ("t", "z")
_INT64_LIMIT = 2.0**63
"""Whole numbers of cells.csv from this magnitude on fit no int64 column (read as none)."""


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True)
class CellTable:
    """The rows of ``results/cells.csv`` the report reads, column by column, in file order.

    Iterating gives each row as a `CellRow`; the report itself works on the columns
    (tens of millions of rows in a long plate run: an object each took gigabytes).
    """

    position_names: list[str]
    """Position names; `position` holds indices into it."""
    state_names: list[str]
    """Cell states ("": unclassified); `state` holds indices into it."""
    position: NDArray[np.int32]
    t: NDArray[np.int64]
    sample_time_s: NDArray[np.float64]
    """Seconds (NaN: blank or not a number)."""
    track: NDArray[np.int64]
    """Track id (0: none)."""
    state: NDArray[np.int32]
    p_mitosis: NDArray[np.float64]
    parent: NDArray[np.int64]
    """Parent track of the cell's track (0: none known)."""

    def __len__(self) -> int:
        return len(self.t)

    def __iter__(self) -> Iterator[CellRow]:
        step = 65536  # (a slice of each column as Python numbers at a time, not all of them)
        for i in range(0, len(self), step):
            cols = (self.position, self.t, self.sample_time_s, self.track, self.state,
                    self.p_mitosis, self.parent)  # fmt: skip
            for pos, t, st, track, state, p, parent in zip(
                *(c[i : i + step].tolist() for c in cols), strict=True
            ):
                yield CellRow(
                    self.position_names[pos], t, st, track, self.state_names[state], p, parent
                )

    def rows_of(self, position: str) -> NDArray[np.intp]:
        """Return the indices of one position's rows, in file order (none: an unknown name)."""
        try:
            code = self.position_names.index(position)
        except ValueError:
            return np.zeros(0, np.intp)
        return np.flatnonzero(self.position == code)


@dataclass
class RunData:
    """Everything the report reads from a run folder (None: that part is missing)."""

    run_dir: Path
    summary: dict[str, Any]
    frames: list[dict[str, Any]]
    """Each readable frame log line, in order: only its `FRAME_FIELDS` that it has (an
    added frame's `ADDED_FRAME_FIELDS` too)."""
    decisions: list[dict[str, Any]] | None
    cells: CellTable | None
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

    @property
    def channels_taken(self) -> list[str]:
        """Channel names of the plan's own frames in the frame log, else `channels`.

        The summary's ``channels`` are the recording's channel axis: the plan's
        channels, then every other preset of the rig (a close-up may add one), so
        a one-channel replay listed every preset of the replay profile.
        """
        taken = dict.fromkeys(
            str(f.get("channel", "")) for f in self.frames if f.get("added_by") is None
        )
        return list(taken) or self.channels

    @property
    def timepoints(self) -> int | None:
        """The summary's ``timepoints``, else the plan's time points in the frame log.

        (A replay's summary has none: the report showed "—".) None where neither says.
        """
        named = self.summary.get("timepoints")
        if isinstance(named, int) and not isinstance(named, bool):
            return named
        taken = {
            (f.get("index") or {}).get("t", 0) for f in self.frames if f.get("added_by") is None
        }
        return len(taken) or None

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
    """Keep the lines of ``latency.jsonl`` that name a field (`livescope.record.field_key`).

    (a time point that is a list or an object is unhashable: it cost the sections that
    group the analysed fields, and the line is damaged, so it costs only itself)
    """
    if rows is None:
        return None
    ok = [r for r in rows if field_key(r) is not None]
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


def _jsonl_objects(path: Path, problems: list[str]) -> Iterator[dict[str, Any]]:
    """Yield the object of each line of a JSON-lines file, read a line at a time.

    Once all are read, says in ``problems`` how many lines were unreadable.
    """
    bad = 0
    with path.open("rb") as fh:
        # (a UTF-8 sequence holds no newline byte: each line decodes as in the whole file; a
        # line break other than \n, e.g. \r or U+2028, ends a line as it did there)
        for raw in fh:
            for line in raw.decode("utf-8", errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except (ValueError, RecursionError):  # (RecursionError: nested too deep)
                    bad += 1
                    continue
                if isinstance(item, dict):
                    yield item
                else:
                    bad += 1
    if bad:
        problems.append(f"{path.name}: {bad} unreadable line(s) skipped")


def _read_jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]] | None:
    if not path.is_file():
        return None
    return list(_jsonl_objects(path, problems))


def _read_frames(path: Path, problems: list[str]) -> list[dict[str, Any]] | None:
    """Read the frame log: of each line with an integer time point its `FRAME_FIELDS`.

    A frame added by a decision (``added_by``) keeps its `ADDED_FRAME_FIELDS` too.
    """
    if not path.is_file():
        return None
    frames = []
    names: dict[str, str] = {}  # (one string object per position or channel name, not a line's)
    n_bad_t = 0
    for line in _jsonl_objects(path, problems):
        # (a time point that is no integer, e.g. NaN, Infinity or null, cost every section
        # that groups frames by time point; the line is damaged, so it costs only itself)
        if not _time_point_ok(line):
            n_bad_t += 1
            continue
        frame = {}
        for key in FRAME_FIELDS:
            if key in line:
                value = line[key]
                if isinstance(value, str):
                    value = names.setdefault(value, value)
                elif key == "index":
                    value = {k: value[k] for k in _INDEX_FIELDS if k in value}
                frame[key] = value
        if line.get("added_by"):
            frame.update((key, line[key]) for key in ADDED_FRAME_FIELDS if key in line)
        frames.append(frame)
    if n_bad_t:
        problems.append(
            f"{path.name}: {n_bad_t} line(s) whose index is no object or whose time point is no "
            "integer skipped"
        )
    return frames


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


def _whole(value: float) -> int | None:
    """Return a number of cells.csv as a whole number for an int64 column (None: it is none)."""
    return int(value) if math.isfinite(value) and abs(value) < _INT64_LIMIT else None


def _up_to_last_newline(lines: Iterable[str]) -> Iterator[str]:
    """Yield the lines up to the last one that ends in a newline."""
    held: list[str] = []  # (lines since the last "\n": a lone "\r" ends a line, not a row)
    for line in lines:
        if line.endswith("\n"):
            yield from held
            held.clear()
            yield line
        else:
            held.append(line)


def _ends_in_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _read_cells(path: Path, problems: list[str]) -> tuple[CellTable | None, list[str]]:
    if not path.is_file():
        return None, []
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        head = []  # (blank lines before the header are still the csv module's to read)
        for line in fh:
            head.append(line)
            if line.strip():
                break
        else:
            # the worker opens it as it starts; its header comes with the first cells
            return _cell_columns({}, {}, array("i"), array("q"), array("d"), array("q"),
                                 array("i"), array("d"), array("q")), []  # fmt: skip
        if not _ends_in_newline(path):
            # a row without its newline was being written when the run was killed (a resumed
            # worker drops it too)
            problems.append("cells.csv: a half-written last row skipped (the run was cut short)")
        lines = _up_to_last_newline(itertools.chain(head, fh))
        return _cell_table(csv.DictReader(lines), problems)


def _cell_columns(
    positions: dict[str, int],
    states: dict[str, int],
    position: array[int],
    t: array[int],
    sample_time_s: array[float],
    track: array[int],
    state: array[int],
    p_mitosis: array[float],
    parent: array[int],
) -> CellTable:
    # (numpy arrays on the arrays' own buffers, not copies: a copy doubled the peak)
    return CellTable(
        list(positions),
        list(states),
        np.frombuffer(position, np.int32),
        np.frombuffer(t, np.int64),
        np.frombuffer(sample_time_s, np.float64),
        np.frombuffer(track, np.int64),
        np.frombuffer(state, np.int32),
        np.frombuffer(p_mitosis, np.float64),
        np.frombuffer(parent, np.int64),
    )


def _cell_table(
    reader: csv.DictReader[str], problems: list[str]
) -> tuple[CellTable | None, list[str]]:
    """Read the rows of ``cells.csv`` into columns (arrays, not an object per row)."""
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
    positions: dict[str, int] = {}
    states: dict[str, int] = {}
    position, t_col, track_col, state_col, parent_col = (array("i"), array("q"), array("q"),
                                                        array("i"), array("q"))  # fmt: skip
    time_col, p_col = array("d"), array("d")
    bad = 0
    for rec in _csv_rows(reader, problems):
        t = _whole(_number(rec.get("t")))
        if t is None:
            bad += 1
            continue
        track = _whole(_number(rec.get("track")))
        parent = _whole(_number(rec.get("parent")))
        state = str(rec.get("state") or "")
        if state in classes and math.isnan(_number(rec.get(f"p_{state}"))):
            # NaN probabilities (the engine's output): the cell was not classified (a worker
            # before 2026-12-06 wrote the first NaN's class as its state; runs it recorded
            # are read as unclassified too)
            state = ""
        position.append(positions.setdefault(str(rec.get("position") or ""), len(positions)))
        t_col.append(t)
        time_col.append(_number(rec.get("sample_time_s")))
        track_col.append(track or 0)
        state_col.append(states.setdefault(state, len(states)))
        p_col.append(_number(rec.get("p_mitosis")))
        parent_col.append(parent if parent is not None and parent > 0 else 0)
    if bad:
        problems.append(f"cells.csv: {bad} row(s) without a time point skipped")
    columns = (position, t_col, time_col, track_col, state_col, p_col, parent_col)
    return _cell_columns(positions, states, *columns), classes


def _refuse_no_run_folder(run: Path) -> None:
    """Raise unless ``run`` is a folder with a frame log, saying what it is instead.

    (Not "summary.json is missing", which a run killed before its end lacks too,
    of a path that does not exist, a file or an empty folder alike.)
    """
    if not run.exists():
        raise LivescopeError(
            f"{run} does not exist: give a run folder (a demo, run, agent or replay)"
        )
    if not run.is_dir():
        in_run = (run.parent / FRAMES_FILE).is_file()
        hint = f" (give the run folder it is in, {run.parent})" if in_run else ""
        raise LivescopeError(f"{run} is a file, not a run folder{hint}")
    if not (run / FRAMES_FILE).is_file():
        raise LivescopeError(
            f"{run} is not a run folder: it holds no {FRAMES_FILE} (the frame log every run writes)"
        )


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
        if ``run_dir`` is no run folder: it does not exist, is a file, or holds
        no ``frames.jsonl`` (the frame log every run writes).

    """
    run = Path(run_dir)
    _refuse_no_run_folder(run)
    problems: list[str] = []
    summary, why = _read_summary(run)
    if summary is None:
        problems.append(
            f"{SUMMARY_FILE} {why}: the run did not end as planned (it was killed, or is still "
            "going on); what the summary says is not shown, the rest comes from the frame log "
            "and results/"
        )
    frames = _read_frames(run / FRAMES_FILE, problems)
    if frames is None:
        raise LivescopeError(f"{run} is not a run folder: {FRAMES_FILE} is missing")
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
