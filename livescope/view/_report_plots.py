"""The run report's figures, drawn with matplotlib's Agg renderer into PNG bytes.

Figures are `matplotlib.figure.Figure` objects with their own Agg canvas: pyplot
(and its global state, GUI backends and figure manager) is never touched, so the
report can be written from any thread and on a machine without a display.
matplotlib is imported inside the functions: ``import livescope.view`` stays light.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from livescope.record import CtcTrack

from ._report_html import fmt

if TYPE_CHECKING:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "STATUS_CAPTION",
    "STATUS_STYLE",
    "FieldPanel",
    "cells_over_time",
    "decisions_timeline",
    "downsample",
    "latency_histograms",
    "lineage_tree",
    "mask_edges",
    "plain_text",
    "thumbnails",
    "time_unit",
]

DPI = 80
"""Dots per inch of every figure: sharp enough on screen, quick to render and small."""

STATUS_STYLE: dict[str, tuple[str, str]] = {
    "accepted": ("o", "#1a9850"),
    "shared": ("o", "#91cf60"),
    "recorded": ("s", "#999999"),
    "rejected (guardrail)": ("X", "#d73027"),
    "rejected (agent)": ("X", "#fc8d59"),
    "rejected (shared)": ("X", "#f4a582"),
    "unanswered": ("X", "#878787"),
    "not sent": ("P", "#bababa"),
    "rejected": ("X", "#b2182b"),
    "error": ("^", "#000000"),
}
"""Marker and colour of each decision outcome (timeline and thumbnails)."""

STATUS_CAPTION: dict[str, str] = {
    "accepted": "green circles accepted",
    "shared": "light green circles shared (imaged by another firing's sub-sequence)",
    "recorded": "grey squares recorded only",
    "rejected (guardrail)": "red crosses rejected by a guardrail",
    "rejected (agent)": "orange crosses rejected by the microscope agent",
    "rejected (shared)": "pink crosses shared with a firing whose sub-sequence was rejected "
    "or not sent",
    "unanswered": "dark grey crosses not answered by the agent while the worker waited "
    "(it may have carried them out later)",
    "not sent": "light grey plus signs not sent (the run had ended)",
    "rejected": "dark red crosses rejected (by what, not recorded)",
    "error": "black triangles rule errors",
}
"""What each outcome's marker says, for the figures' captions (the keys of `STATUS_STYLE`)."""

_STATE_COLOURS = {
    "interphase": "#bdbdbd",
    "prophase": "#9ecae1",
    "metaphase": "#3182bd",
    "anaphase": "#08519c",
    "apoptotic": "#d73027",
    "unclassified": "#f0f0f0",
}
_OTHER_COLOURS = ("#fdae61", "#a6d96a", "#762a83", "#e7298a", "#66a61e", "#e6ab02")


def _figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    from PIL import Image

    # drawn once, and the canvas's pixels written: savefig draws a figure with a layout engine
    # twice (first to lay it out), a quarter more time for each of the report's plots
    fig.canvas.draw()
    canvas = cast("FigureCanvasAgg", fig.canvas)  # (`_figure`'s)
    rgba = np.asarray(canvas.buffer_rgba())  # type: ignore[no-untyped-call]
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="png")
    return buf.getvalue()


def plain_text(text: str) -> str:
    """Return ``text`` for matplotlib to draw as written (``$`` would start its mathtext).

    Every name from the run folder (position, rule, cell state, stage) goes through it.
    """
    return text.replace("$", r"\$")


def time_unit(max_s: float) -> tuple[str, float]:
    """Return the unit label and divisor for sample times up to ``max_s`` seconds (min or h)."""
    return ("h", 3600.0) if max_s > 3 * 3600 else ("min", 60.0)


def _state_colours(names: Sequence[str]) -> list[str]:
    out, k = [], 0
    for n in names:
        if n in _STATE_COLOURS:
            out.append(_STATE_COLOURS[n])
        else:
            out.append(_OTHER_COLOURS[k % len(_OTHER_COLOURS)])
            k += 1
    return out


def cells_over_time(
    times_s: Sequence[float],
    counts: Sequence[int],
    fractions: Mapping[str, Sequence[float]],
    *,
    position: str,
    unit: tuple[str, float],
) -> bytes:
    """Cell count (left) and stacked state fractions (right) of one position over time.

    ``fractions`` maps each state to its fraction at each of ``times_s``. Time
    points without a finite sample time (NaN: a time not logged) cannot be
    placed: they are left out, and the x axes' label says how many.
    """
    name, div = unit
    x = np.asarray(times_s, float) / div
    placed = np.isfinite(x)
    unplaced = int(x.size - np.count_nonzero(placed))
    x = x[placed]
    xlabel = f"sample time ({name})"
    if unplaced:
        xlabel += f"; {unplaced} time point{'s' if unplaced > 1 else ''} with no time, not drawn"
    fig = _figure(10.0, 2.8)
    ax_n, ax_f = fig.subplots(1, 2)
    ax_n.plot(x, np.asarray(counts, float)[placed], marker="o", ms=3, color="#333333")
    title = plain_text(position)
    ax_n.set(xlabel=xlabel, ylabel="cells", title=f"{title}: cells in view")
    ax_n.set_ylim(bottom=0)
    ax_n.grid(alpha=0.3)
    if fractions:
        states = list(fractions)
        ax_f.stackplot(
            x,
            np.asarray([fractions[s] for s in states], float).reshape(len(states), -1)[:, placed],
            labels=[plain_text(s) for s in states],
            colors=_state_colours(states),
        )
        ax_f.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    ax_f.set(
        xlabel=xlabel,
        ylabel="fraction of cells",
        title=f"{title}: cell states",
        ylim=(0, 1),
    )
    if len(x):
        ax_f.set_xlim(float(x.min()), float(max(x.max(), x.min() + 1e-9)))
    return _png(fig)


def _lineage_order(tracks: Sequence[CtcTrack]) -> list[list[CtcTrack]]:
    """Trees (each in depth-first order), those with a division first, then by start."""
    labels = {t.label for t in tracks}
    children: dict[int, list[CtcTrack]] = {}
    roots = []
    for t in sorted(tracks, key=lambda t: (t.begin, t.label)):
        if t.parent and t.parent in labels:
            children.setdefault(t.parent, []).append(t)
        else:
            roots.append(t)
    trees = []
    for root in roots:
        tree, stack = [], [root]
        while stack:
            node = stack.pop()
            tree.append(node)
            stack.extend(reversed(children.get(node.label, [])))
        trees.append(tree)
    divides = {p for p, c in children.items() if len(c) > 1}

    def key(tree: list[CtcTrack]) -> tuple[int, int, int]:
        return (0 if any(n.label in divides for n in tree) else 1, tree[0].begin, tree[0].label)

    return sorted(trees, key=key)


def lineage_tree(
    tracks: Sequence[CtcTrack], *, position: str, max_tracks: int
) -> tuple[bytes, int, bool]:
    """Lineage of one position: a line per track (first to last time point), connectors.

    Black connectors join a parent to its daughters (a division, marked with a
    dot); grey dashed ones join a track to its continuation after a gap.
    Whole trees are drawn, up to ``max_tracks`` tracks; a first tree larger
    than that is cut. Returns the PNG, the number of tracks drawn and whether
    that tree was cut.
    """
    from matplotlib.collections import LineCollection

    rows: list[CtcTrack] = []
    cut = False
    for tree in _lineage_order(tracks):
        if rows and len(rows) + len(tree) > max_tracks:
            break
        cut = len(tree) > max_tracks
        rows.extend(tree[: max_tracks - len(rows)])
    y_of = {t.label: i for i, t in enumerate(rows)}
    by_label = {t.label: t for t in rows}
    n_children: dict[int, int] = {}
    for t in rows:
        if t.parent in y_of:
            n_children[t.parent] = n_children.get(t.parent, 0) + 1
    spans = [[(t.begin - 0.3, y_of[t.label]), (t.end + 0.3, y_of[t.label])] for t in rows]
    division_links, gap_links, dots = [], [], []
    for t in rows:
        if t.parent not in y_of:
            continue
        p = by_label[t.parent]
        x0, y0, y1 = p.end + 0.3, y_of[p.label], y_of[t.label]
        link = [(x0, y0), (x0, y1), (t.begin - 0.3, y1)]
        if n_children[p.label] > 1:
            division_links.append(link)
            dots.append((x0, y0))
        else:
            gap_links.append(link)
    height = float(np.clip(0.8 + 0.06 * len(rows), 2.2, 16.0))
    fig = _figure(10.0, height)
    ax = fig.subplots()
    lw = 2.0 if len(rows) < 60 else 1.0
    ax.add_collection(LineCollection(spans, colors="#2166ac", linewidths=lw))
    ax.add_collection(LineCollection(division_links, colors="#000000", linewidths=0.8))
    ax.add_collection(
        LineCollection(gap_links, colors="#999999", linewidths=0.8, linestyles="dashed")
    )
    unique_dots = sorted(set(dots))
    if unique_dots:
        dx, dy = zip(*unique_dots, strict=True)
        ax.scatter(dx, dy, s=14, color="#d73027", zorder=3)
    if rows:
        ax.set_xlim(min(t.begin for t in rows) - 1, max(t.end for t in rows) + 1)
        ax.set_ylim(len(rows), -1)
    ax.set_yticks([])
    title = f"{plain_text(position)}: lineage"
    ax.set(xlabel="time point", ylabel=f"{len(rows)} tracks", title=title)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig), len(rows), cut


def decisions_timeline(
    events: Sequence[tuple[float, str, str]], *, unit: tuple[str, float], x_max_s: float
) -> bytes:
    """Every rule firing over sample time: one row per rule, marker per outcome.

    ``events`` are (sample time in s, rule, outcome); outcomes are keys of `STATUS_STYLE`.
    """
    name, div = unit
    rules = sorted({r for _, r, _ in events})
    row = {r: i for i, r in enumerate(rules)}
    fig = _figure(10.0, float(np.clip(1.2 + 0.35 * len(rules), 2.2, 8.0)))
    ax = fig.subplots()
    for k, (status, (marker, colour)) in enumerate(STATUS_STYLE.items()):
        # outcomes side by side within a rule's row (positions imaged together fire together),
        # all within 0.3 of its middle: a marker at the row's edge is cut off by the axes (the
        # first and last rule's) or seems to be the next rule's
        dy = 0.6 * (k / (len(STATUS_STYLE) - 1) - 0.5)
        pts = [(s / div, row[r] + dy) for s, r, st in events if st == status]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, marker=marker, s=40, color=colour, label=status, alpha=0.8)
    ax.set_yticks(range(len(rules)), [plain_text(r) for r in rules])
    ax.set_ylim(len(rules) - 0.5, -0.5)
    ax.set_xlim(-0.02 * x_max_s / div, 1.02 * max(x_max_s, 1.0) / div)
    ax.set(xlabel=f"sample time ({name})", title="rule firings and their outcome")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return _png(fig)


def latency_histograms(stages: Mapping[str, NDArray[np.float64]]) -> bytes:
    """One histogram per analysis stage (ms), p50 and p99 in each title."""
    n = len(stages)
    cols = min(4, max(n, 1))
    nrows = max(1, -(-n // cols))
    fig = _figure(2.6 * cols, 2.1 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    for ax, (stage, ms) in zip(axes, stages.items(), strict=False):
        p50, p99 = (float(v) for v in np.percentile(ms, [50, 99]))
        ax.hist(ms, bins=min(40, max(5, ms.size // 3)), color="#4393c3")
        ax.axvline(p50, color="#000000", lw=1)
        ax.axvline(p99, color="#d73027", lw=1, ls="--")
        ax.set_title(f"{plain_text(stage)}\np50 {fmt(p50)} ms · p99 {fmt(p99)} ms", fontsize=9)
        ax.set_xlabel("ms", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    return _png(fig)


@dataclass
class FieldPanel:
    """One thumbnail: a downsampled frame, its mask edges, and decision markers.

    ``image`` and ``edges`` are downsampled; ``shape`` is the full frame's (y, x)
    so that markers, in full-frame pixels, land where the rule saw the cell.
    """

    title: str
    image: NDArray[np.float32]
    shape: tuple[int, int]
    edges: NDArray[np.float32] | None = None
    """RGBA mask contours (alpha 0 off the contours), same size as ``image``."""
    markers: list[tuple[float, float, str]] = field(default_factory=list)
    """(y, x, outcome) in full-frame pixels; outcomes are keys of `STATUS_STYLE`."""


def thumbnails(panels: Sequence[FieldPanel], *, position: str) -> bytes:
    """Draw a row of thumbnails of one position."""
    fig = _figure(2.8 * len(panels), 3.2)
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)).ravel()
    for ax, p in zip(axes, panels, strict=True):
        h, w = p.shape
        extent = (-0.5, w - 0.5, h - 0.5, -0.5)
        lo, hi = (float(v) for v in np.percentile(p.image, [1.0, 99.8]))
        ax.imshow(p.image, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6), extent=extent)
        if p.edges is not None:
            ax.imshow(p.edges, extent=extent, interpolation="nearest")
        for status, (marker, colour) in STATUS_STYLE.items():
            pts = [(x, y) for y, x, st in p.markers if st == status]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(xs, ys, s=140, marker=marker, facecolors="none", edgecolors=colour)
                if marker == "o":
                    continue
                ax.scatter(xs, ys, s=60, marker=marker, color=colour)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_title(plain_text(f"{position} · {p.title}"), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return _png(fig)


def downsample(image: NDArray[Any], max_side: int) -> tuple[NDArray[np.float32], int]:
    """Block-mean an image so that its longer side is at most ``max_side``; the factor."""
    f = max(1, -(-max(image.shape) // max_side))
    img = np.asarray(image, np.float32)
    if f == 1:
        return img, 1
    h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    return img[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3)), f


def mask_edges(labels: NDArray[Any], factor: int, shape: tuple[int, int]) -> NDArray[np.float32]:
    """RGBA contours of a label image at the thumbnail's size, coloured by label."""
    from matplotlib import colormaps

    lab = np.asarray(labels)[::factor, ::factor][: shape[0], : shape[1]].astype(np.int64)
    edge = np.zeros(lab.shape, bool)
    edge[:-1] |= lab[:-1] != lab[1:]
    edge[1:] |= lab[1:] != lab[:-1]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge &= lab > 0
    lut = np.asarray(colormaps["tab20"](np.arange(20)), np.float32)
    rgba = lut[lab % 20]
    rgba[..., 3] = edge
    return rgba
