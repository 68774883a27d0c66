"""A simulated run scored against its simulation's ground truth: triggers and tracks.

`evaluate_triggers` pairs the mitosis rules' firings with the cells the
simulation had in mitosis then (`lineage.json`, the true cell ids under each
firing's cell); `evaluate_tracks` scores each position's CTC tracks against the
simulation's (TRA, DET, LNK, divisions). Ground-truth files that are damaged or
from another version are errors naming the file.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from livescope.record import CtcTrack, field_key, read_ctc, read_frames, relabel_for_ctc, write_ctc
from livescope.schema import HardwareProfile, LivescopeError, read_jsonl_counting
from livescope.scope import ANAPHASE_SHARE
from livescope.tracking import evaluate_tracking, numbered_frames

from ._config import RESULTS_DIR
from ._results import finite_number

__all__ = ["evaluate_tracks", "evaluate_triggers"]

logger = logging.getLogger("livescope")


def evaluate_tracks(run_dir: str | Path, truth: str | Path) -> dict[str, Any]:
    """Score each position's tracks (``results/ctc/<position>``) against the simulation's.

    Per position, `livescope.tracking.evaluate_tracking` against
    ``truth/<position>`` (its ``TRA/``): TRA, DET, LNK, division precision /
    recall / F1 and counts, with ``time_points`` (the truth's) and
    ``time_points_scored``. A position that cannot be scored gets
    ``{"error": ...}`` (no CTC result written; a time point missing, so that
    the frame counts differ; a damaged mask, also logged): the run's other
    results stand.

    Time points the worker analysed with nothing to segment (a nuclear channel
    imaged every few, ``acquire_every``, and no virtual stain: ``latency.jsonl``
    holds their fields without a ``segment`` stage) are left out of both sides
    (`_score_segmented`): the truth's frames at the others, numbered 0, 1, ...,
    its tracks over them, against the tracker's own ids there (the CTC result's
    labels mapped back through its ``labels.csv``: the result splits a track at
    each skipped time point, where CTC allows no gap). Its CTC result ends at
    its last segmented time point, so that it may hold fewer masks than the
    truth has frames: scored so, it need not hold more. Where none was skipped,
    the result is scored as it is (``time_points_scored`` equals
    ``time_points``). A time point never analysed (a field missing) is scored,
    as one whose cells were all missed.
    """
    out: dict[str, Any] = {}
    ctc = Path(run_dir) / RESULTS_DIR / "ctc"
    skipped = _unsegmented(Path(run_dir) / RESULTS_DIR / "latency.jsonl")
    for gt in sorted(p for p in Path(truth).iterdir() if (p / "TRA" / "man_track.txt").is_file()):
        try:
            n = len(numbered_frames(gt / "TRA", "man_track"))  # (a gap: refused, named)
            kept = [t for t in range(n) if t not in skipped.get(gt.name, ())]
            if len(kept) < n:
                scores = _score_segmented(ctc / gt.name, gt, kept)
            else:
                scores = evaluate_tracking(ctc / gt.name, gt)
            scores = {**scores, "time_points": n, "time_points_scored": len(kept)}
        except LivescopeError as exc:
            out[gt.name] = {"error": str(exc)}
            continue
        except Exception as exc:  # e.g. a damaged mask: said, the run stands
            logger.exception("%s: the tracks could not be scored", gt.name)
            out[gt.name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        out[gt.name] = {k: v for k, v in scores.items() if k not in ("aogm", "bc")}
    return out


def _unsegmented(latency: Path) -> dict[str, set[int]]:
    """Each position's time points analysed with nothing to segment (from ``latency.jsonl``).

    A field whose line has no ``segment`` stage had no nuclear image (or no
    segmentation engine); a time point that has such a line and none with it
    (a field redone after a restart has two) was not segmented. Damaged lines
    are left out: their time points are scored.
    """
    recs, _ = read_jsonl_counting(latency)
    seen: dict[str, set[int]] = {}
    segmented: dict[str, set[int]] = {}
    for rec in recs:
        if (key := field_key(rec)) is None or not isinstance(ms := rec.get("ms"), dict):
            continue
        pos, t = key
        (segmented if "segment" in ms else seen).setdefault(pos, set()).add(t)
    return {pos: ts - segmented.get(pos, set()) for pos, ts in seen.items()}


def _score_segmented(res: Path, gt: Path, kept: list[int]) -> dict[str, Any]:
    """Score the CTC result ``res`` against the truth ``gt`` at the time points ``kept`` only.

    Both are written anew, frames ``kept`` numbered 0, 1, ...: the truth's
    tracks over them (one seen at none of them left out; its daughters then
    have no parent), and the result's as the tracker made them (its labels
    mapped back to track ids by ``labels.csv``, beside the masks, so that a
    track split at a skipped time point is one again), made a CTC result
    (`livescope.record.relabel_for_ctc`). A kept time point past the result's
    last mask is an empty frame.

    Raises
    ------
    LivescopeError
        if fewer than 2 time points are kept (nothing to link), the result or
        the truth cannot be read (`livescope.record.read_ctc`), or the result
        has no ``labels.csv`` or a label it lists no track for.

    """
    if len(kept) < 2:
        raise LivescopeError(
            f"{res}: {len(kept)} time point(s) segmented: tracking is scored on 2 or more"
        )
    true_frames, true_tracks = read_ctc(gt, "gt")
    res_frames, res_tracks = read_ctc(res, "res")
    track_of = _track_ids(res / "labels.csv")
    ids = []
    for t in kept:
        if t >= len(res_frames):
            ids.append(np.zeros(res_frames[0].shape, np.int64))
            continue
        frame = res_frames[t]
        labels = np.unique(frame[frame != 0]).tolist()
        if missing := [label for label in labels if label not in track_of]:
            raise LivescopeError(
                f"{res / 'labels.csv'} lists no track for label {missing[0]} of frame {t}: "
                "the result's tracks cannot be joined across the time points not segmented"
            )
        lut = np.zeros(int(frame.max()) + 1, np.int64)
        for label in labels:
            lut[label] = track_of[label]
        ids.append(lut[frame])
    parent_of: dict[int, int] = {}
    for tr in res_tracks:  # (by first frame: a track's first piece, whose parent is its own)
        obj, parent = track_of.get(tr.label, 0), track_of.get(tr.parent, 0)
        if obj and parent != obj:
            parent_of.setdefault(obj, parent)
    frames, tracks, _ = relabel_for_ctc(ids, parent_of)
    with tempfile.TemporaryDirectory(prefix="livescope-ctc-kept-") as tmp:
        write_ctc(Path(tmp, "res"), frames, tracks)
        write_ctc(
            Path(tmp, "gt"), [true_frames[t] for t in kept], _tracks_over(true_tracks, kept), "gt"
        )
        try:
            scores = evaluate_tracking(Path(tmp, "res"), Path(tmp, "gt"))
        except LivescopeError as exc:  # (named as the user's folders, not the copies')
            what = str(exc).replace(str(Path(tmp, "res")), str(res))
            what = what.replace(str(Path(tmp, "gt")), str(gt))
            raise LivescopeError(f"{what} (at its {len(kept)} time points segmented)") from None
    return scores


def _track_ids(path: Path) -> dict[int, int]:
    """Return each label's track id from a CTC result's ``labels.csv`` (``label,track,...``)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return {int(r["label"]): int(r["track"]) for r in csv.DictReader(fh)}
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise LivescopeError(
            f"{path}: cannot be read ({exc!r}); it maps the CTC result's labels to track ids, "
            "which join its tracks across the time points not segmented"
        ) from None


def _tracks_over(tracks: list[CtcTrack], kept: list[int]) -> list[CtcTrack]:
    """``tracks`` over the frames ``kept`` (numbered 0, 1, ...); one at none of them is left out.

    A daughter whose parent was left out has none.
    """
    out: dict[int, CtcTrack] = {}
    for tr in tracks:
        begin, end = bisect_left(kept, tr.begin), bisect_right(kept, tr.end) - 1
        if begin <= end:
            out[tr.label] = CtcTrack(tr.label, begin, end, tr.parent)
    return [
        tr if tr.parent in out else CtcTrack(tr.label, tr.begin, tr.end, 0) for tr in out.values()
    ]


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
    Precision counts only each rule's first trigger on each true mitosis as
    right: a repeat by a rule on one it already triggered, in its field or
    another, is a wasted acquisition and counts as wrong (a second mitosis rule's,
    a record-only one beside a close-up one, is no repeat). A true mitosis counts
    as observable when it was in view in at least two plan time points of a
    position; recall is over those. A right firing given back to its rule (its
    close-up refused as stale: ``guardrails.max_decision_age_s``) is no trigger:
    its rule may fire on the cell again, and that firing is; a wrong one is a
    wrong trigger (``triggers_given_back`` counts both).

    ``truth``: the ground truth's folder (default ``run_dir/ground_truth``; a
    replay's is its recording's, whose time points and sample times it serves).
    ``rules``: the mitosis rules to score (None: every mitosis firing); an empty
    list (the plan has none) scores no recall unless a policy fired on mitoses.
    A damaged line of ``policy.jsonl`` (no JSON object; a firing that names no
    field, `livescope.record.field_key`, or whose sample time or place is no
    number) is left out, their number said.

    Returns precision, recall and the median onset-to-trigger delay (s, to the
    field's sample time): the detector's, every firing counted whether its
    close-up was sent, refused or taken. A mitosis begun before the run first
    imaged the fields that saw it is timed from that first frame instead, when
    the run could first have seen it (``mitoses_begun_before_first_frame``;
    ``begun_before_first_frame`` per mitosis). Beside them the acquisition's:
    ``trigger_recall_imaged``, the share of the observable mitoses whose rules'
    first right triggers got a close-up taken (its own decision's, or the one a
    shared firing's reason names, with a frame in ``frames.jsonl``), the
    earliest, whose first frame came during the mitosis (while a trigger on its
    cells would be right: the mother between onset and division, a daughter in
    anaphase; of them, ``closeups_after_division`` began once the mother had
    divided), and ``mitosis_to_closeup_s``, the median from onset (as above) to
    those close-ups' first frames. A close-up begun later images cells back in
    interphase: counted apart (``closeups_after_mitosis``;
    ``closeup_after_mitosis`` per mitosis).
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
        pos, t = key
        when = float(rec.get("sample_time_s") or times.get((pos, t), 0.0))
        cid = _cell_at(mask(pos, t), rec.get("y"), rec.get("x"))
        mother = mitosis_of(cid, when) if cid else None
        if rec.get("given_back"):  # taken back by its rule (refused as stale)
            given_back += 1
            # a right one is no trigger (its rule may fire on the cell again, no repeat);
            # a wrong one is still the detector's mistake
            if mother is not None:
                continue
        # the close-up that images its cell: its own decision's, or (a shared firing, no
        # decision of its own) the one its reason names; taken if frames.jsonl holds a frame
        # of it (not one never sent, refused, or left when the run ended)
        closeup = _closeup(rec)[0] or _shared_closeup(rec, subs.get(_field_of(rec), {}))
        triggers.append({"rule": rec.get("rule"), "position": pos, "t": t, "sample_time_s": when,
                         "track": rec.get("track"), "given_back": bool(rec.get("given_back")),
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
    # each true mitosis's first right trigger of each rule (by its mother, in whichever field
    # it fired): a second rule's, a plan's record-only one beside its close-up one, no repeat
    first: dict[tuple[Any, int], dict[str, Any]] = {}
    for tr in sorted(triggers, key=lambda tr: tr["sample_time_s"]):
        tr["duplicate"] = False
        if tr["ok"]:
            of_rule = (tr["rule"], int(tr["mitosis_of"]))
            tr["duplicate"] = of_rule in first
            first.setdefault(of_rule, tr)
    firsts: dict[int, list[dict[str, Any]]] = {}  # (by time: the first rule's first)
    for (_, mother), tr in sorted(first.items(), key=lambda kv: kv[1]["sample_time_s"]):
        firsts.setdefault(mother, []).append(tr)
    # when the run could first have seen a mitosis: its fields' first frame, for one begun
    # before it (the simulation starts cells up to most of a mitosis in), else its onset
    field_from: dict[str, float] = {}
    for (pos, _), when in times.items():
        field_from[pos] = min(when, field_from.get(pos, when))
    mitoses: list[dict[str, Any]] = []
    delays, closeup_delays = [], []
    for mother in sorted(observable):
        onset = lineage[mother].get("mitosis_onset_s")
        hits_of = firsts.get(mother, [])
        hit = hits_of[0] if hits_of else None
        delay = closeup_delay = None
        # its close-up: the earliest taken of its rules' first right triggers
        shot = [float(tr["closeup_s"]) for tr in hits_of if tr["closeup_s"] is not None]
        closeup_s = min(shot) if shot else None
        # imaged: its close-up began while the cell was still in mitosis (the window in which
        # its trigger would be right); one begun later imaged interphase cells
        imaged = closeup_s is not None and during(mother, closeup_s)
        fields = sorted(seen[mother])
        first_frame = min(field_from[p] for p in fields)
        early = onset is not None and float(onset) < first_frame
        if hit is not None and onset is not None:
            since = first_frame if early else float(onset)
            delay = round(hit["sample_time_s"] - since, 1)
            delays.append(delay)
            if imaged and closeup_s is not None:
                closeup_delay = round(closeup_s - since, 1)
                closeup_delays.append(closeup_delay)
        end = lineage[mother].get("end_s")
        after_division = imaged and closeup_s is not None and end is not None and closeup_s >= end
        # ``position``: the field of its first right trigger, else the first that saw it;
        # ``positions``: every field that saw it mitotic
        mitoses.append({"position": hit["position"] if hit is not None else fields[0],
                        "positions": fields, "cell_id": mother, "onset_s": onset,
                        "begun_before_first_frame": early,
                        "triggered": hit is not None, "delay_s": delay, "imaged": imaged,
                        "closeup_after_mitosis": closeup_s is not None and not imaged,
                        # (imaged, but by a daughter in anaphase: the mother had divided)
                        "closeup_after_division": after_division,
                        "closeup_delay_s": closeup_delay})  # fmt: skip
    n_ok = sum(tr["ok"] for tr in triggers)
    hits = sum(m["triggered"] for m in mitoses)
    n_imaged = sum(m["imaged"] for m in mitoses)
    counted = [k for k in firsts if k in observable]
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
        # of the imaged, those whose close-up began once the mother had divided
        "closeups_after_division": sum(m["closeup_after_division"] for m in mitoses),
        # (their delays from the field's first frame, when the run could first see them)
        "mitoses_begun_before_first_frame": sum(m["begun_before_first_frame"] for m in mitoses),
        "mitoses_triggered_outside_observable": len(firsts) - len(counted),
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
