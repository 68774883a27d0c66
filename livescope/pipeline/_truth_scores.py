"""A simulated run scored against its simulation's ground truth: triggers and tracks.

`evaluate_triggers` pairs the mitosis rules' firings with the cells the
simulation had in mitosis then (`lineage.json`, the true cell ids under each
firing's cell); `evaluate_tracks` scores each position's CTC tracks against the
simulation's (TRA, DET, LNK, divisions). Ground-truth files that are damaged or
from another version are errors naming the file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from livescope.record import field_key, read_frames
from livescope.schema import HardwareProfile, LivescopeError, read_jsonl_counting
from livescope.scope import ANAPHASE_SHARE
from livescope.tracking import evaluate_tracking

from ._config import RESULTS_DIR
from ._results import finite_number

__all__ = ["evaluate_tracks", "evaluate_triggers"]

logger = logging.getLogger("livescope")


def evaluate_tracks(run_dir: str | Path, truth: str | Path) -> dict[str, Any]:
    """Score each position's tracks (``results/ctc/<position>``) against the simulation's.

    Per position, `livescope.tracking.evaluate_tracking` against
    ``truth/<position>`` (its ``TRA/``): TRA, DET, LNK, division precision /
    recall / F1 and counts. A position that cannot be scored gets
    ``{"error": ...}`` (no CTC result written; a time point missing, so that
    the frame counts differ; a damaged mask, also logged): the run's other
    results stand.
    """
    out: dict[str, Any] = {}
    ctc = Path(run_dir) / RESULTS_DIR / "ctc"
    for gt in sorted(p for p in Path(truth).iterdir() if (p / "TRA" / "man_track.txt").is_file()):
        try:
            scores = evaluate_tracking(ctc / gt.name, gt)
        except LivescopeError as exc:
            out[gt.name] = {"error": str(exc)}
            continue
        except Exception as exc:  # e.g. a damaged mask: said, the run stands
            logger.exception("%s: the tracks could not be scored", gt.name)
            out[gt.name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        out[gt.name] = {k: v for k, v in scores.items() if k not in ("aogm", "bc")}
    return out


def evaluate_triggers(
    run_dir: str | Path,
    profile: HardwareProfile,
    *,
    rules: list[str] | None = None,
    truth: str | Path | None = None,
) -> dict[str, Any]:
    """Score mitosis triggers against the simulation's ground truth.

    A trigger is correct when the cell it fired on (the true cell under its
    centroid) was in mitosis at that frame's sample time: a mother between
    mitosis onset and division, or a daughter in anaphase/telophase (then it is
    its mother's mitosis). A true mitosis is its mother's (the simulation's cell
    ids are global): fields that overlap, a grid's tiles, see the same one.
    Precision counts only the first trigger on each true mitosis as right: a
    repeat on one already triggered, in its field or another, is a wasted
    acquisition and counts as wrong. A true mitosis counts as observable when it
    was in view in at least two plan time points of a position; recall is over
    those. A
    firing given back to its rule (its close-up refused as stale:
    ``guardrails.max_decision_age_s``) is no trigger: its rule may fire on the
    cell again, and that firing is (``triggers_given_back`` counts them).

    ``truth``: the ground truth's folder (default ``run_dir/ground_truth``; a
    replay's is its recording's, whose time points and sample times it serves).
    ``rules``: the mitosis rules to score (None: every mitosis firing); an empty
    list (the plan has none) scores no recall unless a policy fired on mitoses.
    A damaged line of ``policy.jsonl`` (no JSON object; a firing that names no
    field, `livescope.record.field_key`, or whose sample time or place is no
    number) is left out, their number said.

    Returns precision, recall and the median onset-to-trigger delay (s, to the
    field's sample time): the detector's, every firing counted whether its
    close-up was sent, refused or taken. Beside them the acquisition's:
    ``trigger_recall_imaged``, the share of the observable mitoses whose first
    right trigger got a close-up taken (its own decision's, or the one a shared
    firing's reason names, with a frame in ``frames.jsonl``) whose first frame
    came during the mitosis (while a trigger on its cells would be right: the
    mother between onset and division, a daughter in anaphase), and
    ``mitosis_to_closeup_s``, the median from onset to those close-ups' first
    frames. A close-up begun later images cells back in interphase: counted
    apart (``closeups_after_mitosis``; ``closeup_after_mitosis`` per mitosis).
    Then the ground truth's folder and the per-trigger and per-mitosis lists (a
    mitosis with every field that saw it).

    Raises
    ------
    LivescopeError
        if ``truth`` holds no ``lineage.json``, ``profile`` is not simulated, or
        a ground-truth file is damaged (naming the file and what is wrong).

    """
    run = Path(run_dir)
    truth = Path(truth) if truth is not None else run / "ground_truth"
    if not (truth / "lineage.json").is_file():
        raise LivescopeError(f"{truth} holds no simulation ground truth (lineage.json)")
    sim = profile.simulation
    if sim is None:
        raise LivescopeError(f"profile {profile.name!r} is not simulated")
    anaphase_s = ANAPHASE_SHARE * sim.mitosis_duration_s
    lineage = _read_lineage(truth / "lineage.json")

    def mitosis_of(cid: int, when: float) -> int | None:
        r = lineage.get(cid)
        if r is None:
            return None
        onset, end = r.get("mitosis_onset_s"), r.get("end_s")
        if onset is not None and onset <= when and (end is None or when <= end):
            return cid
        parent = lineage.get(int(r["parent_id"]))
        # (`<`: the simulation turns a daughter back to interphase at birth + anaphase)
        if parent is not None and r["birth_s"] <= when < r["birth_s"] + anaphase_s:
            return int(parent["cell_id"])
        return None

    daughters: dict[int, list[int]] = {}
    for cid, r in lineage.items():
        daughters.setdefault(int(r["parent_id"]), []).append(cid)

    def during(mother: int, when: float) -> bool:
        """Whether a cell of ``mother``'s mitosis was in it at ``when`` (as `mitosis_of`)."""
        return any(mitosis_of(c, when) == mother for c in (mother, *daughters.get(mother, ())))

    times: dict[tuple[str, int], float] = {}
    closeup_at: dict[str, float] = {}  # a decision's first frame (sample time, s)
    for f in read_frames(run):
        when = f.get("sample_time_s")
        if when is None:
            continue
        if not f.get("added_by"):
            times.setdefault((str(f["position"]), int(f["index"].get("t", 0))), float(when))
        else:
            did = str(f["added_by"])
            closeup_at[did] = min(float(when), closeup_at.get(did, float(when)))
    masks: dict[tuple[str, int], Any] = {}

    def mask(pos: str, t: int) -> Any:
        if (pos, t) not in masks:
            p = truth / pos / "cell_ids" / f"t{t:04d}.tif"
            masks[(pos, t)] = _read_cell_ids(p) if p.is_file() else None
        return masks[(pos, t)]

    # the true mitoses seen: mother -> position -> sample times it was seen mitotic there.
    # Keyed by the mother alone (the simulation's cell ids are global): fields that overlap,
    # a grid's tiles, see one mitosis, which is one to catch, and a trigger in each is a repeat
    seen: dict[int, dict[str, set[float]]] = {}
    for (pos, t), when in sorted(times.items()):
        m = mask(pos, t)
        if m is None:
            continue
        for cid in np.unique(m[m > 0]).tolist():
            mother = mitosis_of(int(cid), when)
            if mother is not None:
                seen.setdefault(mother, {}).setdefault(pos, set()).add(when)
    # (observable: in view on two plan time points of one field)
    observable = {k for k, v in seen.items() if any(len(ts) >= 2 for ts in v.values())}

    triggers: list[dict[str, Any]] = []
    given_back = 0
    log = run / RESULTS_DIR / "policy.jsonl"
    recs, damaged = read_jsonl_counting(log)
    # each field's close-ups, by sub-sequence name: the one a shared firing names is its own
    subs: dict[tuple[Any, ...], dict[str, str]] = {}
    for rec in recs:
        own, name = _closeup(rec)
        if own is not None and name is not None:
            subs.setdefault(_field_of(rec), {})[name] = own
    for rec in recs:
        if rec.get("trigger") != "mitosis" or (rules and rec.get("rule") not in rules):
            continue
        if (key := field_key(rec)) is None or not _firing_numbers(rec):
            damaged += 1
            continue
        if rec.get("given_back"):  # taken back by its rule (refused as stale): not a trigger
            given_back += 1
            continue
        pos, t = key
        when = float(rec.get("sample_time_s") or times.get((pos, t), 0.0))
        cid = _cell_at(mask(pos, t), rec.get("y"), rec.get("x"))
        mother = mitosis_of(cid, when) if cid else None
        # the close-up that images its cell: its own decision's, or (a shared firing, no
        # decision of its own) the one its reason names; taken if frames.jsonl holds a frame
        # of it (not one never sent, refused, or left when the run ended)
        closeup = _closeup(rec)[0] or _shared_closeup(rec, subs.get(_field_of(rec), {}))
        triggers.append({"position": pos, "t": t, "sample_time_s": when, "track": rec.get("track"),
                         "y": rec.get("y"), "x": rec.get("x"), "cell_id": cid,
                         "mitosis_of": mother, "ok": mother is not None,
                         "verdict": rec.get("verdict"), "closeup": closeup,
                         "closeup_s": closeup_at.get(closeup) if closeup else None})  # fmt: skip
    if damaged:
        # (one raised, and the run's trigger scores were lost; a bool or float time point
        # was taken for a field's)
        logger.warning("%s: %d damaged line(s) left out of the trigger scores (no JSON object "
                       "that names a field's position and time point, or a sample time or "
                       "place that is no number)", log, damaged)  # fmt: skip
    # each true mitosis's first right trigger (by its mother, in whichever field it fired)
    first: dict[int, dict[str, Any]] = {}
    for tr in sorted(triggers, key=lambda tr: tr["sample_time_s"]):
        tr["duplicate"] = False
        if tr["ok"]:
            mother = int(tr["mitosis_of"])
            tr["duplicate"] = mother in first
            first.setdefault(mother, tr)
    mitoses: list[dict[str, Any]] = []
    delays, closeup_delays = [], []
    for mother in sorted(observable):
        onset = lineage[mother].get("mitosis_onset_s")
        hit = first.get(mother)
        delay = closeup_delay = None
        taken = hit is not None and hit["closeup_s"] is not None
        # imaged: its close-up began while the cell was still in mitosis (the window in which
        # its trigger would be right); one begun later imaged interphase cells
        imaged = hit is not None and taken and during(mother, float(hit["closeup_s"]))
        if hit is not None and onset is not None:
            delay = round(hit["sample_time_s"] - float(onset), 1)
            delays.append(delay)
            if imaged:
                closeup_delay = round(hit["closeup_s"] - float(onset), 1)
                closeup_delays.append(closeup_delay)
        fields = sorted(seen[mother])
        # ``position``: the field of its first right trigger, else the first that saw it;
        # ``positions``: every field that saw it mitotic
        mitoses.append({"position": hit["position"] if hit is not None else fields[0],
                        "positions": fields, "cell_id": mother, "onset_s": onset,
                        "triggered": hit is not None, "delay_s": delay, "imaged": imaged,
                        "closeup_after_mitosis": taken and not imaged,
                        "closeup_delay_s": closeup_delay})  # fmt: skip
    n_ok = sum(tr["ok"] for tr in triggers)
    hits = sum(m["triggered"] for m in mitoses)
    n_imaged = sum(m["imaged"] for m in mitoses)
    counted = [k for k in first if k in observable]
    # a plan without a mitosis rule (and no policy of its own firing on mitoses) was not
    # asked to catch them: a recall of 0 would blame it for what it never tried
    no_rule = rules is not None and not rules and not triggers
    scored = bool(mitoses) and not no_rule  # (recall's, both)
    return {
        # a second trigger on a mitosis already triggered counts against precision
        "precision": round(len(first) / len(triggers), 4) if triggers else None,
        "recall": round(hits / len(mitoses), 4) if scored else None,
        "note": "the plan has no mitosis rule" if no_rule else None,  # (why: not scored)
        "mitosis_to_trigger_s": _median(delays),
        # the acquisition's: the mitoses whose first right trigger got a close-up taken while
        # they lasted, and from onset to its first frame (the figures above are the
        # detector's, sent or not)
        "trigger_recall_imaged": round(n_imaged / len(mitoses), 4) if scored else None,
        "mitosis_to_closeup_s": _median(closeup_delays),
        "triggers_fired": len(triggers),
        "triggers_given_back": given_back,
        "triggers_correct": n_ok,
        "duplicate_triggers": n_ok - len(first),
        "mitoses_observable": len(mitoses),
        "mitoses_triggered": hits,
        "mitoses_imaged": n_imaged,
        "closeups_after_mitosis": sum(m["closeup_after_mitosis"] for m in mitoses),
        "mitoses_triggered_outside_observable": len(first) - len(counted),
        "ground_truth": str(truth.resolve()),
        "triggers": triggers,
        "mitoses": mitoses,
    }


_TRUTH_AGAIN = "damaged, or written by another version: simulate the run again to score it"
_LINEAGE_FIELDS: tuple[tuple[str, type[float] | type[int]], ...] = (
    ("cell_id", int), ("parent_id", int), ("birth_s", float), ("end_s", float),
    ("mitosis_onset_s", float),
)  # fmt: skip


def _read_lineage(path: Path) -> dict[int, dict[str, Any]]:
    """Return a simulation's ``lineage.json``, its cells by id (ids whole, times in s).

    Raises
    ------
    LivescopeError
        naming the file and what is wrong: not JSON, not a list of cells, or a
        cell without a whole-number ``cell_id`` / ``parent_id`` and a number
        ``birth_s``, or with an ``end_s`` / ``mitosis_onset_s`` not a number.

    """
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # (ValueError: not UTF-8, or not JSON)
        raise LivescopeError(f"{path}: cannot be read as JSON ({exc}; {_TRUTH_AGAIN})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise LivescopeError(f"{path}: not a list of cells ({_TRUTH_AGAIN})")
    lineage: dict[int, dict[str, Any]] = {}
    for n, r in enumerate(rows):
        cell: dict[str, Any] = {}
        for key, kind in _LINEAGE_FIELDS:
            value = r.get(key)
            if value is None and key in ("end_s", "mitosis_onset_s"):  # (not yet, never)
                cell[key] = None
                continue
            try:
                cell[key] = kind(value)
            except (TypeError, ValueError):
                what = f"no {key}" if value is None else f"{key} {value!r:.40}, not a number"
                raise LivescopeError(f"{path}: cell {n} has {what} ({_TRUTH_AGAIN})") from None
        lineage[cell["cell_id"]] = cell
    return lineage


def _read_cell_ids(path: Path) -> Any:
    """Return one time point's true cell ids (a 2-D mask, ``<position>/cell_ids/tTTTT.tif``).

    Raises
    ------
    LivescopeError
        naming the file if it cannot be read or is not a 2-D image.

    """
    try:
        m = np.asarray(tifffile.imread(path))
    except Exception as exc:  # noqa: BLE001 (tifffile and its decoders raise many kinds:
        # TiffFileError, struct.error on a file cut short, zlib's errors on damaged data)
        raise LivescopeError(f"{path}: cannot be read ({exc!r}; {_TRUTH_AGAIN})") from None
    if m.ndim != 2:
        raise LivescopeError(f"{path}: a mask of cell ids is 2-D, this one {m.shape}")
    return m


# (how `livescope.policy`'s engine begins a shared firing's reason: the sub-sequence's name next)
_SHARED = "imaged by the sub-sequence "


def _field_of(rec: dict[str, Any]) -> tuple[Any, ...]:
    """Return the field a ``policy.jsonl`` line was decided on (position, time point, seq)."""
    return (rec.get("position"), rec.get("t"), rec.get("seq"))


def _closeup(rec: dict[str, Any]) -> tuple[str | None, str | None]:
    """Return a firing's own decision's id and sub-sequence name (None each: not logged)."""
    d = rec.get("decision")
    if not isinstance(d, dict):
        return None, None
    did, events = d.get("decision_id"), d.get("events")
    ev = events[0] if isinstance(events, list) and events else None
    name = ev.get("pos_name") if isinstance(ev, dict) else None
    return (did if isinstance(did, str) else None, name if isinstance(name, str) else None)


def _shared_closeup(rec: dict[str, Any], subs: dict[str, str]) -> str | None:
    """Return the decision id of the close-up a shared firing's reason names, in its field.

    ``subs``: the field's close-ups (sub-sequence name -> decision id). None when the
    reason names none of them (not shared, or its close-up's decision was not logged).
    """
    reason = rec.get("reason")
    if not isinstance(reason, str) or not reason.startswith(_SHARED):
        return None
    rest = reason.removeprefix(_SHARED)
    return next((did for name, did in subs.items() if rest.startswith(f"{name} of ")), None)


def _median(delays: list[float]) -> float | None:
    """Return the median of ``delays`` (s, to 0.1 s), None for none."""
    return round(float(np.median(delays)), 1) if delays else None


def _firing_numbers(rec: dict[str, Any]) -> bool:
    """Whether a firing's ``sample_time_s``, ``y`` and ``x`` are each a finite number or null."""
    return all(
        v is None or finite_number(v) is not None
        for v in (rec.get("sample_time_s"), rec.get("y"), rec.get("x"))
    )


def _cell_at(m: Any, y: Any, x: Any, radius: int = 4) -> int:
    """Return the true cell id under (y, x), else the nearest one within ``radius`` px (0: none)."""
    if m is None or y is None or x is None:
        return 0
    r, c = round(float(y)), round(float(x))
    h, w = m.shape
    if 0 <= r < h and 0 <= c < w and m[r, c]:
        return int(m[r, c])
    # (clipped to the mask at both ends: a negative slice end would count from the far side)
    r0, r1 = min(h, max(0, r - radius)), min(h, max(0, r + radius + 1))
    c0, c1 = min(w, max(0, c - radius)), min(w, max(0, c + radius + 1))
    win = m[r0:r1, c0:c1]
    ys, xs = np.nonzero(win)
    d2 = (ys + r0 - r) ** 2 + (xs + c0 - c) ** 2
    if ys.size == 0 or d2.min() > radius**2:  # (the window's corners are further)
        return 0
    k = int(np.argmin(d2))
    return int(win[ys[k], xs[k]])
