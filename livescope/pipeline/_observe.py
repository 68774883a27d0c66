"""What the policies see of a field: its cells, divisions and lost tracks (`Observation`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.policy import Cells, Observation
from livescope.schema import UNTURNED, LivescopeError, roi_offset_pair
from livescope.tracking import TrackerSnapshot, measure_objects

from ._analyzer import FrameResult
from ._jobs import Field

__all__ = ["observe", "roi_offset_um", "sample_time_of"]


def sample_time_of(header: dict[str, Any]) -> float:
    """Return a frame's sample time, s: its ``sample_time_s``, else its camera stamp.

    livescope's own agent stamps every frame with the run's clock (the plan's
    sample time on the simulated microscope, the time since the acquisition
    began on a real rig). A frame from a publisher of your own may carry none
    (it is optional in wire protocol v1): it is then timed by its camera stamp
    (``t_camera_ns``, the sender's monotonic clock, in s), so that cooldowns and
    rates still count seconds; only differences of it mean anything.
    """
    sample_t = header.get("sample_time_s")
    if sample_t is not None:
        return float(sample_t)
    return int(header.get("t_camera_ns") or 0) / 1e9


def roi_offset_um(header: dict[str, Any], pixel_size_um: float) -> tuple[float, float]:
    """Return where a frame's centre is from the camera sensor's, µm along its (columns, rows).

    Its ``roi_offset_px`` (a camera ROI off the sensor's centre) is in its own
    pixels, which the cells' frame's need not be (another channel's, binned
    otherwise): times its own pixel size, else ``pixel_size_um``. (0, 0) for a
    frame that carried none, or none that is two finite numbers (recorded
    before it was, or from a publisher of your own): centred on the stage
    position, as before.
    """
    offset = roi_offset_pair(header.get("roi_offset_px"))
    if offset is None:
        return (0.0, 0.0)
    cols, rows = offset
    px = float(header.get("pixel_size_um") or 0.0) or pixel_size_um
    return (cols * px, rows * px)


def observe(
    fld: Field,
    res: FrameResult,
    *,
    nuclear_frame: NDArray[Any] | None,
    pixel_size_um: float | None,
    run_id: str,
    engines: dict[str, str],
    tracker: TrackerSnapshot | None,
    orientation: tuple[float, float, float, float] = UNTURNED,
) -> Observation:
    """Measure a field's tracked cells for the policies (the decision thread, per field).

    ``nuclear_frame`` is the frame the cells' intensities are measured in
    (None: the virtual stain); ``engines`` those that ran for the field (name →
    sha256); ``tracker`` the position's tracker as of this field, for lineage and
    track ages (a snapshot: the main thread may already be tracking the next
    field; None only when nothing was segmented); ``orientation`` the camera's
    against the stage (the profile's ``camera.orientation``).
    """
    h = fld.header
    # the frame the cells' centroids are pixels of (their labels'), which `stage_xy` turns
    # into stage µm about its centre: a field's frames need not share a shape (a label-free
    # channel binned, its virtual stain then left out), and its first frame's put every
    # close-up off by the difference
    frame = res.labels if res.labels is not None else next(iter(fld.frames.values()))
    shape = tuple(int(s) for s in frame.shape[-2:])
    stage = None
    if h.get("x_um") is not None and h.get("y_um") is not None:
        # (z: the middle of a z-stack, not its last plane, which the header gives)
        stage = (float(h["x_um"]), float(h["y_um"]), fld.z_centre_um())
    px = pixel_size_um or 1.0
    common: dict[str, Any] = {
        "run_id": run_id or str(h.get("run_id", "")),
        "seq": int(h.get("seq", 0)),
        "position": fld.position,
        "t": fld.t,
        "sample_time_s": sample_time_of(h),
        "pixel_size_um": px,
        "shape": (shape[0], shape[1]),
        "stage_um": stage,
        "roi_offset_um": roi_offset_um(h, px),
        "engines": engines,
        "orientation": orientation,
    }
    if res.labels is None or res.tracks is None:  # (its cells unknown: no rule counts them 0)
        return Observation(**common, segmented=False)
    if tracker is None:
        raise LivescopeError(f"position {fld.position!r} was tracked but has no tracker")
    nuclear = nuclear_frame if nuclear_frame is not None else res.stain
    objs = res.objects if res.objects is not None else measure_objects(res.labels, nuclear)
    rows = np.searchsorted(objs.labels, res.tracks.labels)  # objs.labels ascend
    n = int(rows.size)
    tracks = res.tracks.track_ids.astype(np.int64)
    lineage, first = tracker.parents, tracker.first_frame
    parents = np.array([lineage.get(int(t), 0) for t in tracks.tolist()], np.int64)
    age = np.array([fld.t - first.get(int(t), fld.t) for t in tracks.tolist()], np.int64)
    stain = np.full(n, np.nan)
    if res.stain is not None and n:
        # per-cell means over the foreground only: ~0.35 against ~1 ms per 512² frame here
        # with the index from a bool mask (no scan for the largest label: each cell's label
        # is in the foreground, so the counts reach it)
        flat = res.labels.ravel()
        fg = np.flatnonzero(flat != 0)
        sums = np.bincount(flat[fg], weights=res.stain.ravel()[fg])
        lab = objs.labels[rows]
        stain = sums[lab] / np.maximum(objs.areas[rows], 1)
    p_mit = np.full(n, np.nan)
    state: tuple[str, ...] = ("",) * n
    if res.states is not None and len(res.states):
        by_label = {int(i): k for k, i in enumerate(res.states.ids.tolist())}
        pm = res.states.p_mitosis
        best = np.argmax(res.states.probs, axis=1)
        # a cell the classifier did not score (NaN probabilities) has no state: argmax
        # would name the first NaN's class (interphase)
        unscored = set(np.flatnonzero(np.isnan(res.states.probs).any(axis=1)).tolist())
        ks = [by_label.get(int(lab)) for lab in res.tracks.labels.tolist()]
        # (nor a p_mitosis: a row NaN only in another class gave one, and a rule fired on a
        # cell the results store says was not scored)
        p_mit = np.array([np.nan if k is None or k in unscored else float(pm[k]) for k in ks])
        state = tuple(
            "" if k is None or k in unscored else res.states.classes[int(best[k])] for k in ks
        )
    intens = objs.intensities[rows] if objs.intensities is not None else np.full(n, np.nan)
    cells = Cells(
        labels=res.tracks.labels.astype(np.int64),
        tracks=tracks,
        parents=parents,
        age=age,
        y=objs.centroids[rows, 0] if n else np.zeros(0),
        x=objs.centroids[rows, 1] if n else np.zeros(0),
        area=objs.areas[rows] if n else np.zeros(0),
        intensity=np.asarray(intens, np.float64),
        stain=np.asarray(stain, np.float64),
        p_mitosis=p_mit,
        state=state,
    )
    divisions = tuple((d.parent, d.daughters) for d in res.tracks.divisions)
    return Observation(**common, cells=cells, divisions=divisions, lost=res.tracks.lost)
