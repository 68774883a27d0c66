"""The run report: one self-contained HTML page that shows what a run did.

`write_report` reads a run folder and writes ``report.html``: the headline
figures, cells and cell states over time, the lineage, every rule firing and
decision, per-stage latency, drops, thumbnails with mask contours and decision
markers, and the triggers scored against ground truth. Plots are inline PNGs
(matplotlib, Agg), styles inline; the page loads nothing and runs no script, so
it opens offline and can be mailed or archived as one file.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from livescope.record import ZARR_NAME, CtcTrack
from livescope.schema import FrameInfo, LivescopeError, write_atomic

from . import _report_plots as plots
from ._report_data import RESULTS_DIR, CellTable, RunData, finite_seconds, load_run
from ._report_decisions import decisions_section, truth_section
from ._report_fields import field_thumbnails
from ._report_html import as_dict, count, esc, fmt, kv_table, missing, table, value_range
from ._report_page import NO_RESULTS, ReportPage

__all__ = ["REPORT_FILE", "write_report"]

logger = logging.getLogger("livescope")

REPORT_FILE = "report.html"
MAX_LINEAGE_TRACKS = 250
"""Tracks drawn per position in the lineage tree (whole trees, dividing ones first)."""
MAX_CLOSEUP_FIGURES = 6
"""Close-ups shown as thumbnails (the first ones; the table lists them all)."""
MAX_POSITION_PLOTS = 24
"""Positions drawn in the cells and lineage sections (the first, in the plan's order; the
rest in a table): a plate of 96 wells took 30 s and made a page of 3.4 MB."""
_LATENCY_ORDER = (
    # livescope.pipeline.LATENCY_STAGES, written out so that drawing a report does not import
    # the pipeline (and with it the scope and the bus); a test keeps the two the same
    "camera_to_received",
    "queue_wait",
    "busy_wait",
    "stain",
    "segment",
    "track",
    "states",
    "engines",
    "analyse_other",
    "handoff",
    "prepare",
    "policy",
    "post",
    "decision_enqueued",
    "decision_executed",
    "end_to_end",
    "overhead",
    "store",
)
_BUS_HOPS = ("camera_to_agent", "agent_to_sent", "sent_to_received")
"""The frame bus's hops (`livescope.bus`): in the run summary's ``latency_ms`` only
(latency.jsonl has their sum per field, ``camera_to_received``)."""
_TABLE_ORDER = (*_BUS_HOPS, *_LATENCY_ORDER)
"""The latency table's stages as a frame passes them: camera → agent → bus → engines →
policy → decision → executed (then the whole field's, and the store after it)."""
# ------------------------------------------------------------------ sections


def _analysis_pace(s: dict[str, Any]) -> str:
    """Say the pace a simulated run's analysis kept ("kept up" when it ended under 1 s behind)."""
    if (pace := s.get("analysis_pace")) is not None:
        return fmt(pace)
    if s.get("time_acceleration") is not None and "analysis_behind_s" in s:
        return "kept up"
    return "—"  # a rig, a replay, a run without analysis, or a summary from before it was said


def _restarts(s: dict[str, Any]) -> str:
    """Return the worker's restarts and, of them, those it was taken for hung.

    (run summaries before session 59 do not count hangs: "—")
    """
    return f"{fmt(s.get('worker_restarts'))} · {fmt(s.get('worker_hangs'))}"


def _events(s: dict[str, Any], kind: str) -> str:
    """Return what became of a run's ``kind`` ("planned", "added") events (summary's ``events``).

    (runs before session 59 do not count them: "—")
    """
    ev = as_dict(s.get("events"))
    if not ev:
        return "—"
    return (
        f"{fmt(ev.get(f'{kind}_taken'))} · {fmt(ev.get(f'{kind}_stopped'))} of {fmt(ev.get(kind))}"
    )


def _analysis_gaps(s: dict[str, Any]) -> str:
    """Say the worker's counts of what it could not do that are above 0 ("none" if all are 0)."""
    gaps = s.get("analysis_gaps")
    if not isinstance(gaps, dict):
        return "—"  # a run without analysis, or a summary from before it was said
    said = [
        f"{k.replace('_', ' ')} {fmt(v)}"
        for k, v in gaps.items()
        if isinstance(v, int) and not isinstance(v, bool) and v > 0
    ]
    return "; ".join(said) or "none"


def _summary_section(page: ReportPage) -> str:
    run, s = page.run, page.run.summary
    decisions = as_dict(s.get("decisions"))
    accepted = decisions.get("accepted", s.get("decisions_accepted"))
    rejected = decisions.get("rejected", s.get("decisions_rejected"))
    disabled = s.get("policies_disabled") or []
    engines = as_dict(s.get("engines"))
    runtimes = as_dict(s.get("engine_runtimes"))
    truth = as_dict(s.get("truth"))
    e2e = as_dict(as_dict(s.get("latency_ms")).get("end_to_end"))
    behind = as_dict(s.get("analysis_behind_s"))
    stalls = as_dict(s.get("machine_stalls"))
    pc = as_dict(s.get("machine"))
    rows = [
        ("Run", fmt(s.get("run_id"))),
        ("Hardware profile", fmt(s.get("profile"))),
        ("Positions", fmt(run.positions)),
        ("Channels", fmt(run.channels_taken)),
        ("Time points", fmt(run.timepoints)),
        ("Duration (s) · frames per second", f"{fmt(s.get('duration_s'))} · {fmt(s.get('fps'))}"),
        (
            "Frames acquired · written · analysed",
            f"{fmt(s.get('frames_acquired'))} · {fmt(s.get('frames_written'))} · "
            f"{fmt(s.get('frames_analysed'))}",
        ),
        (
            "Dropped frames: recording · analysis",
            f"{fmt(s.get('dropped_recorded_frames'))} · {fmt(s.get('dropped_analysis_frames'))}",
        ),
        (
            "Decisions accepted · rejected · not sent · firings shared (not imaged)",
            f"{fmt(accepted)} · {fmt(rejected)} · {fmt(decisions.get('not_sent'))} · "
            f"{fmt(decisions.get('shared'))} ({fmt(decisions.get('shared_not_imaged'))})",
        ),
        (
            "Trigger precision · recall",
            f"{fmt(s.get('trigger_precision'))} · {fmt(s.get('trigger_recall'))}",
        ),
        ("Mitosis to trigger, median (s)", fmt(s.get("mitosis_to_trigger_s"))),
        (
            "Mitoses imaged by a close-up: recall · from onset, median (s)",
            f"{fmt(s.get('trigger_recall_imaged'))} · {fmt(s.get('mitosis_to_closeup_s'))}",
        ),
        ("End-to-end latency p50 · p99 (ms)", f"{fmt(e2e.get('p50'))} · {fmt(e2e.get('p99'))}"),
        (
            "Analysis behind the acquisition: most · at the end (s) · overlay stains skipped",
            f"{fmt(behind.get('max'))} · {fmt(behind.get('last'))} · "
            f"{fmt(s.get('stains_skipped_behind'))}",
        ),
        (
            "Pace, sample s per wall s: acquisition · analysis",
            f"{fmt(s.get('time_acceleration'))} · {_analysis_pace(s)}",
        ),
        (
            "Machine: CPU · logical CPUs · Python reference (ms)",
            f"{fmt(pc.get('cpu'))} · {fmt(pc.get('logical_cpus'))} · "
            f"{fmt(pc.get('cpu_reference_ms'))}",
        ),
        (
            "Machine stalls over 2 ms: per second · longest (ms) · in slow fields · in fast "
            "fields (over their overhead)",
            f"{fmt(stalls.get('over_2ms_per_s'))} · {fmt(stalls.get('max_ms'))} · "
            f"{fmt(stalls.get('slow_fields_in_a_stall'))} of {fmt(stalls.get('slow_fields'))} · "
            f"{fmt(stalls.get('fast_fields_in_a_stall'))} of {fmt(stalls.get('fast_fields'))}",
        ),
        ("Worker restarts · of them taken for hung", _restarts(s)),
        ("Analysis gaps (what the worker could not do)", _analysis_gaps(s)),
        (
            "Policies disabled",
            "; ".join(f"{d.get('rule')}: {d.get('error')}" for d in disabled if isinstance(d, dict))
            or "none",
        ),
        (
            "Engines (sha256)",
            "; ".join(f"{k} {str(v)[:12]}" for k, v in engines.items()) if engines else "—",
        ),
        (
            "Engines run on: backend · device · precision",
            "; ".join(
                f"{k}: {fmt(r.get('backend'))} · {fmt(r.get('device'))} · {fmt(r.get('precision'))}"
                for k, r in runtimes.items()
                if isinstance(r, dict)
            )
            or "—",
        ),
        (
            # (both daughters seen: not the mitoses recall is over, see the triggers' section)
            "Ground truth: tracks · divisions completed in view",
            f"{fmt(truth.get('tracks'))} · {fmt(truth.get('divisions'))}" if truth else "—",
        ),
    ]
    if s.get("replay"):  # a replay of a recorded dataset: what it replayed and how fast
        over = as_dict(s.get("replay_overhead"))
        share = over.get("share")
        rows[:0] = [
            ("Replay of", f"{fmt(s.get('dataset'))} ({fmt(s.get('format'))})"),
            (
                "Replay speed · reproducible",
                f"{fmt(s.get('speed'))} · {'yes' if s.get('deterministic') else 'no'}",
            ),
            (
                "Replay overhead (worker waiting for frames)",
                "—" if share is None else f"{100 * float(share):.1f}% of "
                f"{fmt(over.get('analysis_wall_s'))} s of analysis",
            ),
            ("What-if decisions · frames served for them",
             f"{fmt(decisions.get('what_if'))} · {fmt(decisions.get('what_if_frames_served'))}"),
        ]  # fmt: skip
    said = s.get("warnings") or []
    warnings = [said] if isinstance(said, str) else [w for w in said if isinstance(w, str)]
    if s.get("ok") is False and isinstance(s.get("error"), str):
        warnings.insert(0, f"The run did not end as planned: {s['error']}.")
    out = ""
    if warnings:
        out += "<ul>" + "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>"
    if not run.has_results:
        out += missing(
            "Analysis is missing: this run has no results/ folder (it was recorded without "
            "analysis, or its results were not saved). Sections that need the analysis say so."
        )
    out += kv_table(rows)
    if run.problems:
        out += "<ul>" + "".join(f"<li>{esc(p)}</li>" for p in run.problems) + "</ul>"
    return out


def _cells_section(page: ReportPage) -> str:
    run = page.run
    if run.cells is None:
        why = NO_RESULTS if not run.has_results else "results/cells.csv is missing"
        return missing(f"No cell table: {why}.")
    cells, out = run.cells, []
    times = run.sample_times()
    # a field without cells has no row in cells.csv: latency.jsonl says it was analysed (and
    # the frame log when it was taken)
    analysed: dict[str, set[int]] = {}
    for r in run.latency or []:
        if (key := (str(r.get("position")), r.get("t"))) in times:
            analysed.setdefault(key[0], set()).add(key[1])
    rest = []  # (positions past MAX_POSITION_PLOTS: a table row each)
    for i, pos in enumerate(run.positions):
        # (the cell table's columns, not a row object each: a long plate run has tens of
        # millions of rows)
        rows = cells.rows_of(pos)
        drawn = i < MAX_POSITION_PLOTS
        if not rows.size:
            if drawn:
                out.append(missing(f"{pos}: no cells in results/cells.csv."))
            else:
                rest.append([pos, 0, "no cells in results/cells.csv", 0])
            continue
        t_rows = cells.t[rows]
        n_at = _counts(t_rows)
        ts = sorted(n_at.keys() | analysed.get(pos, set()))
        counts = [n_at.get(t, 0) for t in ts]
        mitotic = int(np.count_nonzero(cells.p_mitosis[rows] >= 0.5))
        if not drawn:
            rest.append([pos, len(ts), value_range(counts), mitotic])
            continue
        state_rows = cells.state[rows]
        seen = [cells.state_names[k] for k in np.unique(state_rows).tolist()]
        states = list(run.classes)
        states += sorted({st for st in seen if st and st not in states})
        if "" in seen:
            states.append("unclassified")
        fractions = {}  # (a field without cells: no state has a share of it)
        for st in states:
            codes = [
                k for k, name in enumerate(cells.state_names) if (name or "unclassified") == st
            ]
            n_st = _counts(t_rows[np.isin(state_rows, codes)])
            fractions[st] = [n_st.get(t, 0) / max(n_at.get(t, 0), 1) for t in ts]
        fractions = {k: v for k, v in fractions.items() if any(v)}
        # (a time point's first row in the file: np.unique gives the first index of each)
        first_t, first_row = np.unique(t_rows, return_index=True)
        first_time: dict[int, float] = dict(
            zip(first_t.tolist(), cells.sample_time_s[rows[first_row]].tolist(), strict=True)
        )
        x = [times.get((pos, t), first_time.get(t, float(t))) for t in ts]
        png = plots.cells_over_time(x, counts, fractions, position=pos, unit=page.unit)
        out.append(
            page.plot(
                png,
                alt=f"cells and cell states over time at {pos}",
                caption=f"{pos}: {value_range(counts)} cells per time point over "
                f"{len(ts)} analysed time points; {mitotic} cell observations with "
                "P(mitosis) ≥ 0.5.",
            )
        )
    if rest:
        out.append(_not_drawn(len(run.positions), "results/cells.csv"))
        headers = ["position", "analysed time points", "cells per time point",
                   "cell observations with P(mitosis) ≥ 0.5"]  # fmt: skip
        out.append(table(headers, rest, cap=None))
    return "".join(out)


def _counts(values: np.ndarray[Any, Any]) -> dict[int, int]:
    """Return how often each value occurs."""
    unique, n = np.unique(values, return_counts=True)
    return dict(zip(unique.tolist(), n.tolist(), strict=True))


def _not_drawn(n_positions: int, source: str) -> str:
    """Say that the positions past `MAX_POSITION_PLOTS` are in the table below, not drawn."""
    return (
        f"<p>Plots of the first {MAX_POSITION_PLOTS} of {n_positions} positions (more would "
        f"make the page slow to write and to open); the others in the table below, in full in "
        f"{esc(source)}.</p>"
    )


def _read_tracks(path: Path, name: str) -> list[CtcTrack]:
    """Read a CTC ``res_track.txt``; ``name`` is the path said in the error.

    Raises
    ------
    LivescopeError
        for a line that is not four integers.

    """
    tracks = []
    text = path.read_bytes().decode("utf-8-sig", errors="replace")  # (-sig: Notepad's BOM too)
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            label, begin, end, parent = (int(p) for p in parts)
        except ValueError:  # (not four integers: a line cut short, or another file)
            raise LivescopeError(f"{name}:{n}: expected 'L B E P', got {line!r:.60}") from None
        tracks.append(CtcTrack(label, begin, end, parent))
    return tracks


def _live_tracks(cells: CellTable) -> dict[str, list[CtcTrack]]:
    """Each position's tracks as the cell table has them: first and last time point, parent."""
    spans: dict[str, dict[int, list[int]]] = {}
    for code, position in enumerate(cells.position_names):  # (a position's rows at a time)
        rows = np.flatnonzero((cells.position == code) & (cells.track > 0))
        columns = (cells.track[rows].tolist(), cells.t[rows].tolist(), cells.parent[rows].tolist())
        for track, t, parent in zip(*columns, strict=True):
            span = spans.setdefault(position, {}).setdefault(track, [t, t, parent])
            span[0], span[1] = min(span[0], t), max(span[1], t)
            span[2] = span[2] or parent
    return {
        pos: [CtcTrack(track, b, e, p) for track, (b, e, p) in sorted(by_track.items())]
        for pos, by_track in spans.items()
    }


def _lineage_section(page: ReportPage) -> str:
    run = page.run
    if not run.has_results:
        return missing(f"No lineage: {NO_RESULTS}.")
    out = []
    live: dict[str, list[CtcTrack]] | None = None  # (read from cells.csv when first needed)
    rest = []  # (positions past MAX_POSITION_PLOTS: a table row each)
    for i, pos in enumerate(run.positions):
        drawn = i < MAX_POSITION_PLOTS
        folder = run.ctc_folder(pos)
        source = ""
        if folder is None:
            if live is None:
                live = _live_tracks(run.cells) if run.cells is not None else {}
            if not live.get(pos):
                why = f"results/ctc/{pos}/res_track.txt is missing"
                if drawn:
                    out.append(missing(f"{pos}: no lineage ({why})."))
                else:
                    rest.append([pos, 0, 0, why])
                continue
            # the worker was stopped before it wrote its result (a run cut short): the
            # tracks as the cell table has them
            tracks = live[pos]
            source = (
                f" From cells.csv: results/ctc/{pos}/res_track.txt is missing (the worker did "
                "not finish), so track ids are as seen live, before late-found divisions "
                "revised them."
            )
        else:
            name = f"{RESULTS_DIR}/ctc/{pos}/res_track.txt"
            try:
                tracks = _read_tracks(folder / "res_track.txt", name)
            except (OSError, LivescopeError) as exc:  # (one position's: the others are drawn)
                if drawn:
                    out.append(missing(f"{pos}: no lineage: {exc}."))
                else:
                    rest.append([pos, 0, 0, f"no lineage: {exc}"])
                continue
        if not tracks:
            if drawn:
                out.append(missing(f"{pos}: no tracks in res_track.txt."))
            else:
                rest.append([pos, 0, 0, "no tracks in res_track.txt"])
            continue
        kids = Counter(t.parent for t in tracks if t.parent)
        total_div = sum(n > 1 for n in kids.values())
        if not drawn:
            rest.append([pos, len(tracks), total_div, source.strip() or "—"])
            continue
        png, n_drawn, cut = plots.lineage_tree(tracks, position=pos, max_tracks=MAX_LINEAGE_TRACKS)
        cap = ""
        if cut:
            cap = f" Showing {n_drawn} of {len(tracks)} tracks: the first tree cut at {n_drawn}."
        elif n_drawn < len(tracks):
            cap = (
                f" Showing {n_drawn} of {len(tracks)} tracks (whole trees, those with a division "
                "first)."
            )
        out.append(
            page.plot(
                png,
                alt=f"lineage tree of {pos}",
                caption=f"{pos}: {count(len(tracks), 'track')}, {count(total_div, 'division')} "
                "(red dots; black connectors join a mother to her daughters, grey dashed ones a "
                f"track to its continuation after a gap).{cap}{source}",
            )
        )
    if rest:
        out.append(_not_drawn(len(run.positions), "results/ctc/"))
        out.append(table(["position", "tracks", "divisions", "note"], rest, cap=None))
    return "".join(out)


def _summary_latency(summary: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], str]:
    """Return the run summary's ``latency_ms`` stages, and a note on those left out.

    A stage that is no object (a damaged summary) costs only its row, said in the note.
    """
    said = summary.get("latency_ms")
    if said is None:
        return {}, ""
    if not isinstance(said, dict):
        return {}, (
            f"summary.json's latency_ms is no object (a {type(said).__name__}): its stages are "
            "not shown (a damaged summary)."
        )
    bad = [str(k) for k, v in said.items() if not isinstance(v, dict)]
    note = ""
    if bad:
        note = (
            "summary.json's latency_ms has stages that are no object (a damaged summary), left "
            f"out of the table: {', '.join(bad)}."
        )
    return {str(k): v for k, v in said.items() if isinstance(v, dict)}, note


def _ms(value: object) -> float | None:
    """Return a summary's figure if it is a finite number, else None (shown "—")."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def _decision_executed(run: RunData) -> NDArray[np.float64] | None:
    """Return each carried-out decision's execution latency (ms), as the run summary has it.

    None where the run has no decision log, none was carried out, or it cannot be read.
    """
    if run.decisions is None:
        return None
    # (the summary's own function, so that the two agree; imported here, not with the module,
    # so that a report of a run without decisions does not import the pipeline)
    from livescope.pipeline._demo import _decision_executed_ms

    try:
        ms = _decision_executed_ms(run.run_dir, cast(list[FrameInfo], run.frames))
    except OSError as exc:  # (an unreadable decision log: the summary's figures are shown)
        logger.warning("the decisions' execution latency could not be computed: %s", exc)
        return None
    return np.asarray(ms, np.float64) if ms else None


def _latency_section(page: ReportPage) -> str:
    run = page.run
    out = ""
    values: dict[str, list[float]] = {}
    if run.latency is None:
        why = NO_RESULTS if not run.has_results else "results/latency.jsonl is missing"
        out += missing(f"No per-field latencies: {why}.")
    else:
        for row in run.latency:
            for stage, ms in as_dict(row.get("ms")).items():
                if isinstance(ms, int | float) and math.isfinite(ms):
                    values.setdefault(str(stage), []).append(float(ms))
        if not values:
            out += missing("results/latency.jsonl holds no timings.")
    said, note = _summary_latency(run.summary)
    if note:
        out += missing(note)
    # (stage: its values and where they are from) for the histograms; the summary's other
    # stages (the bus's hops, counted by the bus, not per field) have only its p50 and p99
    drawn = {s: (np.asarray(v, np.float64), "results/latency.jsonl") for s, v in values.items()}
    if (
        "decision_executed" in said
        and "decision_executed" not in drawn
        and (executed := _decision_executed(run)) is not None
    ):
        drawn["decision_executed"] = (executed, "decisions.jsonl · frames.jsonl")
    known = drawn.keys() | said.keys()
    order = [s for s in _TABLE_ORDER if s in known] + sorted(known - set(_TABLE_ORDER))
    if not order:
        return out
    if drawn:
        png = plots.latency_histograms({s: drawn[s][0] for s in order if s in drawn})
        out += page.plot(
            png,
            alt="per-stage latency histograms",
            caption="Per analysed field (decision_executed: per decision carried out), "
            "milliseconds; black line p50, red dashed line p99.",
        )
    rows = []
    for s in order:
        if s in drawn:
            ms, source = drawn[s]
            p50, p99 = np.percentile(ms, [50, 99])
            rows.append([s, int(ms.size), float(p50), float(p99), float(ms.max()), source])
        else:
            v = said[s]
            rows.append([s, _ms(v.get("n")), _ms(v.get("p50")), _ms(v.get("p99")), None,
                         "run summary"])  # fmt: skip
    out += (
        "<p>n: the fields analysed, or the decisions carried out (decision_executed: from the "
        "decision queued to its first added frame). A stage from the run summary has only its "
        "p50 and p99.</p>"
    )
    headers = ["stage", "n", "p50 (ms)", "p99 (ms)", "max (ms)", "from"]
    return out + table(headers, rows, cap=None)


def _drops_section(page: ReportPage) -> str:
    run, s = page.run, page.run.summary
    bus = as_dict(s.get("bus"))
    rows = [
        ("Frames acquired", fmt(s.get("frames_acquired"))),
        ("Frames written to disk", fmt(s.get("frames_written"))),
        ("Frames that failed to record", fmt(s.get("frames_failed"))),
        ("Autofocus events that failed (frames kept)", fmt(s.get("autofocus_failed"))),
        ("Recorded frames dropped", fmt(s.get("dropped_recorded_frames"))),
        ("Frames dropped before analysis", fmt(s.get("dropped_analysis_frames"))),
        ("Frames dropped on the bus (agent side)", fmt(bus.get("dropped_in_agent"))),
        ("Frame log lines (frames.jsonl)", fmt(len(run.frames))),
        ("Analysis worker restarts · of them taken for hung", _restarts(s)),
        # (what the acquisition did with the plan's events and the decisions': a run
        # stopped early leaves some, a stopped position drops its own)
        ("Planned events: taken · stopped of all", _events(s, "planned")),
        ("Events added by decisions: taken · stopped of all", _events(s, "added")),
        (
            "Events left (never taken: the run ended first)",
            fmt(as_dict(s.get("events")).get("left")),
        ),
    ]
    out = kv_table(rows)
    recorded: dict[str, set[int]] = {}
    for f in run.frames:
        t = (f.get("index") or {}).get("t", 0)
        recorded.setdefault(str(f.get("position", "")), set()).add(int(t))
    if run.latency is not None:
        analysed_from = "results/latency.jsonl"
        pairs = {(str(r.get("position")), r.get("t")) for r in run.latency}
    elif run.cells is not None:
        analysed_from = "results/cells.csv (fields without cells are not listed there)"
        cells = run.cells
        pairs = {  # (a position's time points at a time: not a Python pair per row)
            (pos, t)
            for code, pos in enumerate(cells.position_names)
            for t in np.unique(cells.t[cells.position == code]).tolist()
        }
    elif run.has_results:
        return out + missing(
            "Analysed fields unknown: results/latency.jsonl and results/cells.csv are missing."
        )
    else:
        return out + missing(f"Analysed fields unknown: {NO_RESULTS}.")
    analysed: dict[str, set[int]] = {}
    for p, t in pairs:
        if isinstance(t, int):
            analysed.setdefault(p, set()).add(t)
    rows2 = []
    for pos in run.positions:
        ts = recorded.get(pos, set())
        done = analysed.get(pos, set())
        skipped = sorted(ts - done)
        listed = ", ".join(map(str, skipped[:20])) + (" …" if len(skipped) > 20 else "")
        rows2.append([pos, len(ts), len(ts & done), len(skipped), listed or "—"])
    out += f"<h3>Fields analysed per position</h3><p>From {esc(analysed_from)}.</p>"
    return out + table(
        [
            "position",
            "time points recorded",
            "analysed",
            "not analysed",
            "time points not analysed",
        ],
        rows2,
    )


def _fields_section(page: ReportPage) -> str:
    run = page.run
    if not run.has_recording:
        return missing(f"No thumbnails: the recording ({ZARR_NAME}) is missing.")
    notes: list[str] = []
    if not run.has_results:
        notes.append(f"No mask contours or decision markers: {NO_RESULTS}.")
    figures = field_thumbnails(run, notes=notes)
    out = "".join(missing(n) for n in notes)
    for pos, png, caption in figures:
        out += page.plot(png, alt=f"thumbnails of {pos}", caption=caption)
    return out


def _closeups_section(page: ReportPage) -> str:
    """Show the sub-sequences decisions added (close-ups): all in a table, the first drawn."""
    run = page.run
    frames_of: dict[str, list[dict[str, Any]]] = {}
    for f in run.frames:
        if f.get("added_by") is not None:
            frames_of.setdefault(str(f.get("position", "")), []).append(f)
    if not frames_of:
        return "<p>No close-ups: no decision added frames to this run.</p>"
    made_by: dict[str, dict[str, Any]] = {}
    for rec in run.decisions or []:
        d = as_dict(rec.get("decision"))
        if isinstance(d.get("decision_id"), str):
            made_by[d["decision_id"]] = d
    rows = []
    for name, frames in frames_of.items():
        d = made_by.get(str(frames[0].get("added_by")), {})
        inputs = as_dict(d.get("inputs"))
        ts = {int(as_dict(f.get("index")).get("t", 0)) for f in frames}
        when = [w for f in frames if (w := finite_seconds(f.get("sample_time_s"))) is not None]
        rows.append([
            name, d.get("rule"), inputs.get("position", name.split("~")[0]), inputs.get("t"),
            inputs.get("track"), len(ts),
            ", ".join(dict.fromkeys(str(f.get("channel")) for f in frames)), len(frames),
            min(when) if when else None, max(when) if when else None,
        ])  # fmt: skip
    n_frames = sum(len(f) for f in frames_of.values())
    out = (
        f"<p>{count(len(frames_of), 'close-up')} (sub-sequences decisions added, each at a "
        f"place of its own), {count(n_frames, 'frame')} in all. A close-up is named after its "
        "position and rule; “field t” and “track” are the field and cell it answers.</p>"
    )
    out += table(
        ["close-up", "rule", "position", "field t", "track", "time points", "channels",
         "frames", "first (s)", "last (s)"],
        rows, what="close-ups",
    )  # fmt: skip
    if not run.has_recording:
        return out + missing(f"No thumbnails: the recording ({ZARR_NAME}) is missing.")
    shown = list(frames_of)[:MAX_CLOSEUP_FIGURES]
    notes: list[str] = []
    figures = field_thumbnails(run, notes=notes, positions=shown)
    out += "".join(missing(n) for n in notes)
    if len(shown) < len(frames_of):
        out += f"<p>Thumbnails of the first {len(shown)} of {len(frames_of)} close-ups.</p>"
    for pos, png, caption in figures:
        out += page.plot(png, alt=f"thumbnails of {pos}", caption=caption)
    return out


_SECTIONS: tuple[tuple[str, str, Callable[[ReportPage], str]], ...] = (
    ("summary", "At a glance", _summary_section),
    ("cells", "Cells over time", _cells_section),
    ("lineage", "Lineage", _lineage_section),
    ("decisions", "Decisions", decisions_section),
    ("latency", "Latency", _latency_section),
    ("drops", "Drops", _drops_section),
    ("fields", "Fields with overlays", _fields_section),
    ("closeups", "Close-ups", _closeups_section),
    ("truth", "Triggers and tracks vs ground truth", truth_section),
)


def write_report(run_dir: str | Path, *, out: Path | None = None) -> Path:
    """Render a run folder into one self-contained HTML report.

    Called after a run (``livescope demo``/``run`` write it at the end) or on any
    run folder later; blocks the calling thread (a few seconds for a 30-time-point,
    3-position run) and needs no display.

    Parameters
    ----------
    run_dir
        The run folder: ``frames.jsonl`` (required), ``summary.json``,
        ``data.ome.zarr``, ``decisions.jsonl``, ``results/`` (``cells.csv``,
        ``ctc/<position>/``, ``policy.jsonl``, ``latency.jsonl``) and
        ``ground_truth/`` where present. A missing or damaged part (a run
        killed before it wrote its summary, a line or row cut short) leaves
        its section, or the summary's list of problems, saying what it is.
    out
        Where to write the report (default ``run_dir/report.html``).

    Returns
    -------
    Path
        The report written.

    Raises
    ------
    LivescopeError
        if ``run_dir`` is not a run folder (no ``frames.jsonl``).
    OSError
        if the report cannot be written.

    """
    t0 = time.perf_counter()
    run = load_run(run_dir)
    page = ReportPage(run)
    for anchor, title, build in _SECTIONS:
        page.add(anchor, title, build)
    target = Path(out) if out is not None else run.run_dir / REPORT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, page.html())
    logger.info("report %s: %d plots in %.2f s", target, page.n_plots, time.perf_counter() - t0)
    return target
