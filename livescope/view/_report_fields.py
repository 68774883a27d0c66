"""The report's thumbnails: recorded frames with mask contours and decision markers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from livescope.record import ZARR_NAME
from livescope.schema import HardwareProfile, LivescopeError

from . import _report_plots as plots
from ._report_data import RESULTS_DIR, RunData
from ._report_decisions import agent_answers, logged_outcome

__all__ = ["MAX_THUMBNAIL_POSITIONS", "THUMBNAILS_PER_POSITION", "THUMBNAIL_PX", "field_thumbnails"]

THUMBNAILS_PER_POSITION = 4
THUMBNAIL_PX = 256
"""Longest side of a thumbnail, pixels (frames are block-averaged down to it)."""
MAX_THUMBNAIL_POSITIONS = 16
"""Positions of the run drawn (the first, in the plan's order): each figure is ~0.3 MB of
the page, and a plate of 96 wells made a page of ~30 MB."""
# (names of nuclear stains; SPY dyes are named by target, "SPY650-DNA": "spy" alone would
# take a SPY555-tubulin channel)
_NUCLEAR_NAMES = ("dapi", "hoechst", "h2b", "nls", "nuc", "dna", "draq5")
_READ_ERRORS = (OSError, RuntimeError, ValueError, IndexError)
"""What reading a frame of the recording may raise: zarr's codecs raise RuntimeError
(blosc, zstd) or ValueError (uncompressed) on a damaged chunk; IndexError on a frame
past the array's stored extent."""


def _run_profile(run: RunData) -> HardwareProfile | None:
    """Return the rig the run was made with: its ``profile.yaml``, else the shipped one named."""
    from livescope.schema import load_profile

    name = run.summary.get("profile")
    for source in (run.run_dir / "profile.yaml", name if isinstance(name, str) else ""):
        if not source or (isinstance(source, Path) and not source.is_file()):
            continue
        try:
            return load_profile(source)
        except (LivescopeError, OSError, ValueError):
            continue  # a profile file that is damaged, gone or changed: the next, else names
    return None


def _nuclear_channels(run: RunData, channels: list[str]) -> list[str]:
    """Return ``channels``, the one the worker segments first (the thumbnails show it).

    With the run's hardware profile, as the worker chooses (`livescope.pipeline`):
    fluorescence channels whose target is nuclei, then those with no stated target
    (or not in the profile), each by name; never a label-free one or one showing
    something else. Without it, by name (DAPI, Hoechst, H2B, ...). The rest follow.
    """
    profile = _run_profile(run)
    if profile is not None:
        presets = {p.name: p for p in profile.channels.presets}
        ranked = []
        for c in channels:
            p = presets.get(c)
            if p is None:
                ranked.append((1, c))
            elif p.kind != "label_free" and p.target in ("nuclei", None):
                ranked.append((0 if p.target == "nuclei" else 1, c))
        first = [c for _, c in sorted(ranked)]
    else:
        first = [c for c in channels if any(k in c.lower() for k in _NUCLEAR_NAMES)]
    return first + [c for c in channels if c not in first]


def _series(run: RunData) -> tuple[dict[str, Any], list[str]]:
    """Each position's zarr group, and the channel names (the c axis), of the recording."""
    import zarr

    root = zarr.open_group(run.run_dir / ZARR_NAME, mode="r")
    groups = sorted(root.groups(), key=lambda kv: (not kv[0].isdigit(), kv[0].zfill(9)))
    out: dict[str, Any] = {}
    channels: list[str] = []
    for i, (key, g) in enumerate(groups):
        attrs: dict[str, Any] = dict(g.attrs)
        pos = (attrs.get("livescope") or {}).get("position")
        if not isinstance(pos, str):
            pos = run.positions[i] if i < len(run.positions) else key
        out[pos] = g
        omero = (attrs.get("ome") or {}).get("omero") or {}
        labels = [str(c.get("label", "")) for c in omero.get("channels", [])]
        channels = labels if len(labels) > len(channels) else channels
    if not channels:
        root_attrs: dict[str, Any] = dict(root.attrs)
        channels = list((root_attrs.get("livescope") or {}).get("channels") or run.channels)
    return out, channels


def _mask_files(run: RunData, position: str) -> dict[int, Path]:
    folder = run.run_dir / RESULTS_DIR / "ctc" / position
    out = {}
    for p in folder.glob("mask[0-9]*.tif"):
        digits = p.stem[4:]
        if digits.isdigit():
            out[int(digits)] = p
    return out


def _pick(ts: list[int], k: int, must: int | None) -> list[int]:
    """Up to k time points spread over ``ts``, one of them ``must`` when given."""
    idx = sorted({round(i) for i in np.linspace(0, len(ts) - 1, min(k, len(ts)))})
    picked = [ts[i] for i in idx]
    if must is not None and must not in picked:
        nearest = min(range(len(picked)), key=lambda i: abs(picked[i] - must))
        picked[nearest] = must
    return sorted(set(picked))


def field_thumbnails(
    run: RunData, *, notes: list[str], positions: Sequence[str] | None = None
) -> list[tuple[str, bytes, str]]:
    """One figure per position: (position, PNG, caption); what is missing goes to ``notes``.

    ``positions``: the run's (default; the first `MAX_THUMBNAIL_POSITIONS`, the
    rest said in ``notes``), or others of the recording (a rule's close-ups:
    sub-sequences the worker does not segment, so no missing masks are noted). A
    frame or mask that cannot be read costs its panel or contours, said in ``notes``.
    """
    import tifffile

    series, channels = _series(run)
    preferred = _nuclear_channels(run, channels)
    times = run.sample_times()
    unit_name, div = plots.time_unit(max(times.values(), default=0.0))
    fired: dict[tuple[str, int], list[tuple[float, float, str]]] = {}
    answers = agent_answers(run) if run.policy else {}
    for r in run.policy or []:
        y, x, t = r.get("y"), r.get("x"), r.get("t")
        if isinstance(y, int | float) and isinstance(x, int | float) and isinstance(t, int):
            outcome, _ = logged_outcome(r, answers)  # (as in the decisions section)
            fired.setdefault((str(r.get("position")), t), []).append((float(y), float(x), outcome))
    # each position's recorded z planes by channel and time point (one pass over the frame log)
    recorded: dict[str, dict[str, dict[int, set[int]]]] = {}
    for f in run.frames:
        idx = f.get("index") or {}
        ch = recorded.setdefault(str(f.get("position")), {}).setdefault(str(f.get("channel")), {})
        ch.setdefault(int(idx.get("t", 0)), set()).add(int(idx.get("z", 0)))
    out = []
    plan = set(run.positions)
    if positions is None:
        positions = run.positions[:MAX_THUMBNAIL_POSITIONS]
        if len(run.positions) > len(positions):
            notes.append(
                f"Thumbnails of the first {len(positions)} of {len(run.positions)} positions "
                "(the rest would make the page too large to open)."
            )
    for pos in positions:
        g = series.get(pos)
        if g is None:
            notes.append(f"{pos}: not in the recording.")
            continue
        zs = recorded.get(pos, {})
        shown = next((c for c in preferred if c in zs), None)
        if shown is None:
            notes.append(f"{pos}: no recorded frames.")
            continue
        ts = sorted(zs[shown])
        firing_ts = sorted(t for p, t in fired if p == pos and t in zs[shown])
        picked = _pick(ts, THUMBNAILS_PER_POSITION, firing_ts[0] if firing_ts else None)
        masks = _mask_files(run, pos) if run.has_results else {}
        if run.has_results and not masks and pos in plan:
            notes.append(
                f"{pos}: no masks (results/ctc/{pos}/maskTTT.tif): frames without contours."
            )
        try:
            array = g["0"]
        except KeyError:  # (a run killed between making the group and its array)
            notes.append(
                f"{pos}: its array is missing from {ZARR_NAME}/{g.path} (the run was "
                "stopped as it was made): not drawn."
            )
            continue
        c = channels.index(shown)
        panels = []
        unread: set[int] = set()
        for t in picked:
            z_all = sorted(zs[shown][t])
            z = z_all[len(z_all) // 2]
            try:
                image = np.asarray(array[t, c, z])
            except _READ_ERRORS as exc:  # (a damaged chunk: the report goes on without it)
                notes.append(
                    f"{pos}: the {shown} frame at t={t}, z={z} could not be read from "
                    f"{ZARR_NAME} (not drawn): {type(exc).__name__}: {exc}."
                )
                unread.add(t)
                continue
            small, factor = plots.downsample(image, THUMBNAIL_PX)
            edges = None
            if t in masks:
                try:
                    labels = np.asarray(tifffile.imread(masks[t]))
                except (OSError, ValueError) as exc:  # (written in place: a killed worker's last)
                    notes.append(
                        f"{pos}: {RESULTS_DIR}/ctc/{pos}/{masks[t].name} could not be read "
                        f"(t={t} drawn without contours): {type(exc).__name__}: {exc}."
                    )
                else:
                    if labels.shape == image.shape:
                        edges = plots.mask_edges(labels, factor, small.shape)
            st = times.get((pos, t), math.nan)
            when = f" · {st / div:.4g} {unit_name}" if math.isfinite(st) else ""
            panels.append(
                plots.FieldPanel(
                    title=f"t={t}{when}",
                    image=small,
                    shape=(int(image.shape[0]), int(image.shape[1])),
                    edges=edges,
                    markers=fired.get((pos, t), []),
                )
            )
        if not panels:
            continue
        picked = [t for t in picked if t not in unread]
        drawn = [st for t in picked for _, _, st in fired.get((pos, t), [])]
        caption = (
            f"{pos}: {shown} channel at time points {', '.join(map(str, picked))} of "
            f"{len(ts)}. Contours: segmented nuclei (results/ctc), one colour per track label."
            if masks
            else f"{pos}: {shown} channel at time points {', '.join(map(str, picked))} of "
            f"{len(ts)}."
        )
        if drawn:  # (the markers drawn, and only those, said as on the decisions timeline)
            caption += (
                f" {len(drawn)} rule firing(s) marked: "
                + "; ".join(v for k, v in plots.STATUS_CAPTION.items() if k in drawn)
                + "."
            )
        out.append((pos, plots.thumbnails(panels, position=pos), caption))
    return out
