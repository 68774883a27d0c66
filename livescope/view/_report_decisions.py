"""The report's decision sections: every rule firing, and the triggers against ground truth."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from . import _report_plots as plots
from ._report_data import RunData, finite_seconds, firing_outcome
from ._report_html import Fixed, as_dict, esc, fmt, missing, table
from ._report_page import NO_RESULTS, ReportPage

__all__ = ["agent_answers", "decisions_section", "logged_outcome", "truth_section"]


def agent_answers(run: RunData) -> dict[str, dict[str, Any]]:
    """Return the agent's answer to each decision it received (decisions.jsonl), by id."""
    out: dict[str, dict[str, Any]] = {}
    for rec in run.decisions or []:
        ack = as_dict(rec.get("ack"))
        decision_id = as_dict(rec.get("decision")).get("decision_id") or ack.get("decision_id")
        if isinstance(decision_id, str) and isinstance(ack.get("accepted"), bool):
            out[decision_id] = ack
    return out


def logged_outcome(record: dict[str, Any], answers: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """Return the outcome (a key of the marker styles) and reason of one policy.jsonl firing.

    One logged as unanswered (the worker's wait for the agent ran out) whose
    decision the agent's log shows answered later (``answers``, `agent_answers`)
    takes that answer: accepted (carried out) or refused, the reason saying it
    came late.
    """
    outcome = firing_outcome(record.get("verdict"), record.get("stage"))
    reason = str(record.get("reason") or "")
    late = answers.get(str(as_dict(record.get("decision")).get("decision_id")))
    if outcome == "unanswered" and late is not None:
        outcome = "accepted" if late["accepted"] else "rejected (agent)"
        said = str(late.get("reason") or "")
        reason = f"answered after the worker's wait{': ' + said if said else ''}"
    return outcome, reason


def _firings(page: ReportPage) -> list[dict[str, Any]]:
    """Rule firings (policy.jsonl; see `logged_outcome`), else the agent's decision log."""
    run = page.run
    times, seqs = run.sample_times(), run.seq_times()
    out: list[dict[str, Any]] = []
    if run.policy is not None:
        answers = agent_answers(run)
        for r in run.policy:
            pos, t = str(r.get("position", "")), r.get("t")
            st = finite_seconds(r.get("sample_time_s"))
            if st is None and isinstance(t, int):
                st = times.get((pos, t))
            outcome, reason = logged_outcome(r, answers)
            out.append(
                {
                    "time": st,
                    "rule": str(r.get("rule") or "?"),
                    "kind": as_dict(r.get("decision")).get("type") or r.get("trigger") or "",
                    "seq": r.get("seq"),
                    "position": pos,
                    "outcome": outcome,
                    "reason": reason,
                }
            )
        return out
    for rec in run.decisions or []:
        d, ack = as_dict(rec.get("decision")), as_dict(rec.get("ack"))
        seq = d.get("seq", ack.get("seq"))
        pos, _, st = seqs.get(seq, ("", 0, None)) if isinstance(seq, int) else ("", 0, None)
        out.append(
            {
                "time": st,
                "rule": str(d.get("rule") or d.get("type") or "(invalid message)"),
                "kind": str(d.get("type") or ack.get("type") or ""),
                "seq": seq,
                "position": str(d.get("position") or pos),
                "outcome": "accepted" if ack.get("accepted") else "rejected (agent)",
                "reason": str(ack.get("reason") or ""),
            }
        )
    return out


def decisions_section(page: ReportPage) -> str:
    run = page.run
    if run.policy is None and run.decisions is None:
        return missing(
            "No decisions recorded: results/policy.jsonl and decisions.jsonl are both missing."
        )
    firings = _firings(page)
    out = []
    if run.policy is None:
        out.append(
            missing(
                "Rule firings unknown (results/policy.jsonl is missing"
                f"{': ' + NO_RESULTS if not run.has_results else ''}); "
                "shown: the decisions the microscope received (decisions.jsonl)."
            )
        )
    if not firings:
        out.append("<p>No rule fired and no decision was sent during this run.</p>")
        return "".join(out)
    timed = [(f["time"], f["rule"], f["outcome"]) for f in firings if f["time"] is not None]
    if timed:
        png = plots.decisions_timeline(timed, unit=page.unit, x_max_s=page.max_time_s)
        shown = {outcome for _, _, outcome in timed}
        out.append(
            page.plot(
                png,
                alt="decisions timeline",
                caption="Each marker is one rule firing at the sample time of the frame it "
                "answered: "
                + "; ".join(v for k, v in plots.STATUS_CAPTION.items() if k in shown)
                + ".",
            )
        )
    per_rule: dict[str, Counter[str]] = {}
    for f in firings:
        per_rule.setdefault(f["rule"], Counter())[f["outcome"]] += 1
    cols = list(plots.STATUS_STYLE)
    out.append("<h3>Per rule</h3>")
    out.append(
        table(
            ["rule", "fired", *cols],
            [[r, sum(c.values()), *(c[k] for k in cols)] for r, c in sorted(per_rule.items())],
        )
    )
    reasons = Counter(
        f["reason"] or "(no reason given)"
        for f in firings
        if f["outcome"] not in ("accepted", "shared", "recorded")
    )
    if reasons:
        out.append("<h3>Why decisions were not carried out</h3>")
        out.append(table(["reason", "times"], reasons.most_common(), cap=20, what="reasons"))
    unit_name, div = page.unit
    out.append("<h3>All firings</h3>")
    out.append(
        table(
            [f"time ({unit_name})", "rule", "decision", "frame", "position", "outcome", "reason"],
            [
                [
                    None if f["time"] is None else Fixed(float(f["time"]) / div, 2),
                    f["rule"],
                    f["kind"],
                    f["seq"],
                    f["position"],
                    f["outcome"],
                    f["reason"],
                ]
                for f in firings
            ],
            what="firings",
        )
    )
    return "".join(out)


def _before_first(ev: dict[str, Any]) -> str:
    """Say from when the delay of a mitosis begun before its fields' first frame counts."""
    n = ev.get("mitoses_begun_before_first_frame")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return ""
    return (
        f" ({n} mitoses began before their fields' first frame: theirs count from that frame, "
        "when the run could first see them)"
    )


def truth_section(page: ReportPage) -> str:
    run, s = page.run, page.run.summary
    ev = s.get("evaluation")
    if not isinstance(ev, dict):
        has_gt = (run.run_dir / "ground_truth").is_dir()
        return missing(
            "No evaluation in summary.json"
            + (
                ": the run has ground truth (ground_truth/) but its triggers were not scored."
                if has_gt
                else " (runs on a real microscope have no ground truth)."
            )
        )
    if "triggers" not in ev:  # not scored: the scoring failed, or there was no ground truth
        why = f": {ev['error']}" if ev.get("error") else " (the run has no ground truth)"
        return missing(f"The triggers were not scored{why}.") + _tracking_table(s.get("tracking"))
    triggers = [t for t in ev.get("triggers") or [] if isinstance(t, dict)]
    mitoses = [m for m in ev.get("mitoses") or [] if isinstance(m, dict)]
    hits = sum(bool(t.get("ok")) for t in triggers)
    caught = sum(bool(m.get("triggered")) for m in mitoses)
    delays = [float(m["delay_s"]) for m in mitoses if isinstance(m.get("delay_s"), int | float)]
    lines = [
        f"{hits} of {len(triggers)} triggers were on a cell in mitosis "
        f"(precision {fmt(s.get('trigger_precision'))}).",
        f"{caught} of {len(mitoses)} mitoses seen in view at 2+ time points were triggered on "
        f"(recall {fmt(s.get('trigger_recall'))}): a mitosis counts when a field showed it on "
        "two of the plan's time points or more, also one begun before the run or not divided "
        "by its end (the summary's ground-truth divisions completed in view count neither).",
        f"Median delay from mitosis onset to trigger: "
        f"{fmt(float(np.median(delays)) if delays else None)} s{_before_first(ev)}.",
    ]
    if "trigger_recall_imaged" in ev:  # (a run scored before the acquisition's figures: none)
        # the detector's figures above count a trigger never sent, or refused; the
        # acquisition's, what its close-ups caught
        # (a close-up counts only if its first frame came during the mitosis: one begun
        # later imaged cells back in interphase, counted apart)
        imaged = sum(bool(m.get("imaged")) for m in mitoses)
        late = ev.get("closeups_after_mitosis")
        if isinstance(late, bool) or not isinstance(late, int):  # (none: its mitoses say it)
            late = sum(bool(m.get("closeup_after_mitosis")) for m in mitoses)
        after = f"; {late} more got one only after the mitosis" if late > 0 else ""
        divided = ev.get("closeups_after_division")
        on_daughters = (
            f" ({divided} of them only once the mother had divided, on a daughter in anaphase)"
            if isinstance(divided, int) and not isinstance(divided, bool) and divided > 0
            else ""
        )
        lines += [
            f"{imaged} of {len(mitoses)} mitoses in view got a close-up during the mitosis "
            f"from their first right trigger{on_daughters}{after} (recall imaged "
            f"{fmt(ev.get('trigger_recall_imaged'))}).",
            f"Median delay from mitosis onset to the close-up's first frame: "
            f"{fmt(ev.get('mitosis_to_closeup_s'))} s{_before_first(ev)}.",
        ]
    if ev.get("note"):
        lines.append(f"Triggers not scored: {ev['note']}.")
    out = "<p>" + "<br>".join(esc(x) for x in lines) + "</p>"
    out += _tracking_table(s.get("tracking"))
    out += "<h3>Triggers</h3>"
    out += (
        table(
            [
                "position",
                "time point",
                "sample time (s)",
                "track",
                "y",
                "x",
                "true cell",
                "correct",
                "close-up first frame (s)",
            ],
            [
                [
                    t.get("position"),
                    t.get("t"),
                    t.get("sample_time_s"),
                    t.get("track"),
                    t.get("y"),
                    t.get("x"),
                    t.get("cell_id"),
                    bool(t.get("ok")),
                    t.get("closeup_s"),
                ]
                for t in triggers
            ],
            what="triggers",
        )
        if triggers
        else "<p>No triggers.</p>"
    )
    out += "<h3>Mitoses in view</h3>"
    out += (
        table(
            [
                "positions",
                "cell",
                "onset (s)",
                "triggered",
                "delay (s)",
                "imaged",
                "close-up delay (s)",
            ],
            [
                [
                    # (one mitosis, seen in each field that overlaps it)
                    ", ".join(map(str, m["positions"]))
                    if isinstance(m.get("positions"), list)
                    else m.get("position"),
                    m.get("cell_id"),
                    m.get("onset_s"),
                    bool(m.get("triggered")),
                    m.get("delay_s"),
                    m.get("imaged"),
                    m.get("closeup_delay_s"),
                ]
                for m in mitoses
            ],
            what="mitoses",
        )
        if mitoses
        else "<p>No mitosis in view.</p>"
    )
    return out


def _tracking_table(tracking: Any) -> str:
    """Each position's tracks against the simulation's (the summary's ``tracking``)."""
    if not isinstance(tracking, dict) or not tracking:
        return ""
    rows: list[list[Any]] = []
    tolerances: set[int] = set()  # (the frames the scores matched divisions within)
    for pos, sc in sorted(tracking.items()):
        if not isinstance(sc, dict):
            continue
        if "error" in sc:
            rows.append([pos, None, None, None, None, None, f"not scored: {sc['error']}"])
            continue
        if isinstance(tol := sc.get("div_tolerance"), int) and not isinstance(tol, bool):
            tolerances.add(tol)
        divisions = f"{sc.get('divisions_matched')} of {sc.get('divisions_true')} true " \
            f"({sc.get('divisions_found')} found)"  # fmt: skip
        rows.append([pos, sc.get("tra"), sc.get("det"), sc.get("lnk"), sc.get("div_f1"),
                     sc.get("tracks"), divisions])  # fmt: skip
    head = ["position", "TRA", "DET", "LNK", "division F1", "tracks", "divisions matched"]
    tols = sorted(tolerances)
    within = ""
    if tols:
        frames = f"{tols[0]}-{tols[-1]}" if tols[-1] != tols[0] else str(tols[0])
        within = f"; divisions matched within {frames} frame{'' if frames == '1' else 's'}"
    return (
        "<h3>Tracks</h3><p>Each position's tracks scored against the simulation's with "
        f"py-ctcmetrics (Cell Tracking Challenge TRA, DET, LNK{within}).</p>"
        + table(head, rows, what="positions")
    )
