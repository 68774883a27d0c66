"""One analysis pass per time point of one position: segment, track, stain, classify.

`FrameAnalyzer.analyse` takes the frames of one field at one time point (a
nuclear-stain frame, a label-free frame, or both) and returns, in one pass:

1. the virtual stain of the label-free frame (when a stain engine is loaded);
2. instance labels of the nuclei, segmented from the real stain, or from the
   virtual one when no fluorescence frame was acquired;
3. track ids for those nuclei (one causal tracker per position) with births,
   losses and divisions;
4. every cell's state probabilities (when a cell-state engine is loaded),
   classified from the same nuclear signal as the segmentation.

Each stage's time is reported apart. A field with no cells yields empty labels,
tracks and states, never an error.

A position whose pixel size (objective, binning) or frame shape (ROI) changes
starts its tracks anew: pixel centroids of two scales cannot be linked, so the
tracks seen before the change end there (reported lost) and new ones begin
(track ids go on from the old ones; the lineage is kept). A field its tracker
ignores (a time point tracked already, or out of order) changes neither. A
field with no nuclear image (a label-free frame without a stain engine: the
nuclear channel is imaged every few time points) is not tracked, and its tracker
is told so (`OnlineTracker.skip`): the tracks go on across it, a gap being
counted in time points that had a nuclear image. Each
position's view is in `FrameAnalyzer.views`, saved and restored with its tracker
(`FrameResult.view`: as of one field).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.inference import (
    CellStateEngine,
    CellStates,
    SegmentationEngine,
    StainEngine,
    find_engine,
)
from livescope.schema import EngineCard, LivescopeError
from livescope.tracking import (
    ObjectTable,
    OnlineTracker,
    TrackerConfig,
    TrackUpdate,
    measure_objects,
)

__all__ = ["FrameAnalyzer", "FrameResult"]

logger = logging.getLogger("livescope")

SAME_PIXEL_SIZE = 0.03
"""Pixel sizes of one position within this fraction are one view (as `Objective.matches`)."""


@dataclass
class FrameResult:
    """What one pass gave for one position at one time point."""

    position: str
    frame: int
    labels: NDArray[np.int32] | None = None
    tracks: TrackUpdate | None = None
    stain: NDArray[np.float32] | None = None
    states: CellStates | None = None
    nuclear_source: str = ""
    """``fluorescence`` or ``virtual_stain``: what was segmented and classified."""
    objects: ObjectTable | None = None
    """Per-object centroid, area and mean nuclear signal (rows follow ascending labels)."""
    ms: dict[str, float] = field(default_factory=dict)
    view: tuple[float | None, tuple[int, ...]] | None = None
    """The position's view once this field is tracked: pixel size (µm; None: never known)
    and frame shape (px), as in `FrameAnalyzer.views` (None: nothing was tracked)."""

    def cell_table(self) -> list[dict[str, Any]]:
        """One row per cell: label, track id, and its state and ``p_mitosis`` when classified."""
        if self.labels is None or self.tracks is None:
            return []
        track_of = self.tracks.mapping()
        rows: list[dict[str, Any]] = [
            {"label": int(lab), "track": int(track_of.get(int(lab), 0))}
            for lab in self.tracks.labels.tolist()
        ]
        if self.states is not None and len(self.states):
            by_label = {int(i): k for k, i in enumerate(self.states.ids.tolist())}
            p_mit = self.states.p_mitosis
            # a cell the classifier did not score (NaN probabilities) has no state, as in
            # the policies' `Observation`: argmax would name the first NaN's class
            unscored = set(np.flatnonzero(np.isnan(self.states.probs).any(axis=1)).tolist())
            for row in rows:
                k = by_label.get(row["label"])
                if k is None or k in unscored:
                    continue
                row["state"] = self.states.classes[int(np.argmax(self.states.probs[k]))]
                row["p_mitosis"] = round(float(p_mit[k]), 4)
        return rows


class FrameAnalyzer:
    """Engines and per-position trackers for one run.

    Parameters
    ----------
    segmenter, stain, states
        Engine names or folders (None: that stage is skipped).
    backend
        Backend for every engine (None: the best available).
    nucleus_diameter_um
        Typical nucleus diameter, µm (> 0); with a frame's pixel size it sets the
        segmentation engine's rescaling. None: frames are segmented as they are.
    tracker_config
        Settings of the per-position trackers.

    """

    def __init__(
        self,
        *,
        segmenter: str | Path | None = "nuclei-unet",
        stain: str | Path | None = None,
        states: str | Path | None = None,
        backend: str | None = None,
        nucleus_diameter_um: float | None = None,
        tracker_config: TrackerConfig | None = None,
    ) -> None:
        if states is not None and segmenter is None:
            raise LivescopeError(
                "the cell-state stage needs a segmentation engine (cells to classify)"
            )
        if nucleus_diameter_um is not None and not (
            math.isfinite(nucleus_diameter_um) and nucleus_diameter_um > 0
        ):
            # (refused here, before any engine loads: at the first field it was blamed on
            # the engine's diameter in pixels, and without a pixel size it was ignored)
            raise LivescopeError(
                f"nucleus diameter must be a number > 0 µm, got {nucleus_diameter_um} "
                "(None: frames are segmented as they are)"
            )
        self.backend = backend
        self.segmenter_name = segmenter
        self.nucleus_diameter_um = nucleus_diameter_um
        self.stain = StainEngine(stain, backend=backend) if stain is not None else None
        try:
            self.states = CellStateEngine(states, backend=backend) if states is not None else None
        except BaseException:
            if self.stain is not None:  # (its device memory goes now, not when collected)
                self.stain.close()
            raise
        self._segmenters: dict[float | None, SegmentationEngine] = {}
        self.tracker_config = tracker_config
        self.trackers: dict[str, OnlineTracker] = {}
        self.views: dict[str, tuple[float | None, tuple[int, ...]]] = {}
        """Each position's view: its last pixel size (µm; None: never known) and frame shape
        (a change of either starts its tracks anew); a resumed worker restores it with
        `trackers`."""
        self._frames: dict[str, int] = {}
        self._stain_misfit: set[str] = set()  # positions told their stain is left out

    def _segmenter(self, pixel_size_um: float | None) -> SegmentationEngine:
        diameter = None
        if self.nucleus_diameter_um is not None and pixel_size_um:
            diameter = round(self.nucleus_diameter_um / pixel_size_um, 2)
        if diameter not in self._segmenters:
            if self.segmenter_name is None:  # pragma: no cover (checked by callers)
                raise LivescopeError("no segmentation engine loaded")
            self._segmenters[diameter] = SegmentationEngine(
                self.segmenter_name, backend=self.backend, object_diameter_px=diameter
            )
        return self._segmenters[diameter]

    def analyse(
        self,
        *,
        fluorescence: NDArray[Any] | None = None,
        label_free: NDArray[Any] | None = None,
        position: str = "p0",
        pixel_size_um: float | None = None,
        frame: int | None = None,
        stain: bool = True,
    ) -> FrameResult:
        """Run every loaded stage on one field at one time point (see the module).

        ``frame`` is the field's time index (default: one more than the last one
        of this position); a jump tells the tracker that frames were missed. A
        field with no nuclear image to segment tells it that this one had nothing
        to miss (see the module).
        ``stain=False`` skips the virtual stain of a field that has a
        fluorescence frame (it is always made when it is the only nuclear signal).

        ``pixel_size_um`` is the frames' (None: unknown; the engines then take
        the frames as they are); a change of it, or of the frame's shape, at a
        position starts its tracks anew (see the module).

        Raises
        ------
        LivescopeError
            if there is no frame, a frame has no pixels, or the pixel size is not
            a number > 0; an `EngineError` (a LivescopeError) if an engine refuses
            a frame (NaN or infinite values, under 8 px, a pixel size more than 8x
            off its card's).

        """
        if fluorescence is None and label_free is None:
            raise LivescopeError("analyse needs a fluorescence frame, a label-free frame, or both")
        for what, arr in (("fluorescence", fluorescence), ("label-free", label_free)):
            if arr is not None and np.asarray(arr).size == 0:
                raise LivescopeError(
                    f"position {position!r}: the {what} frame has no pixels (shape "
                    f"{np.asarray(arr).shape}); check the camera's ROI"
                )
        if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
            # (0 is what Micro-Manager reports without a pixel size calibration: the
            # segmentation took it as unknown, the stain and cell-state engines refused it)
            raise LivescopeError(
                f"position {position!r}: pixel size must be a number > 0 µm, got "
                f"{pixel_size_um} (pass None when the frames' pixel size is unknown)"
            )
        if (
            fluorescence is not None and label_free is not None and self.stain is not None
            and fluorescence.shape != label_free.shape
        ):  # fmt: skip
            # (the stain is measured under the labels pixel by pixel: a stain of another
            # shape read a wrong place of it for every cell, or failed on an index)
            stain = False
            if position not in self._stain_misfit:
                self._stain_misfit.add(position)
                logger.warning(
                    "position %r: the fluorescence frame is %s pixels, the label-free one %s: "
                    "its virtual stain is left out (it cannot be laid over the cells; acquire "
                    "both channels with the same binning and camera ROI)",
                    position, fluorescence.shape, label_free.shape,
                )  # fmt: skip
        if frame is None:
            frame = self._frames.get(position, -1) + 1
        # (the last frame tracked: one given again, or out of order, that the tracker
        # ignores does not set the next default frame back)
        self._frames[position] = max(frame, self._frames.get(position, -1))
        res = FrameResult(position=position, frame=frame)
        if label_free is not None and self.stain is not None and (stain or fluorescence is None):
            t0 = time.perf_counter()
            res.stain = self.stain.predict(label_free, pixel_size_um=pixel_size_um).image
            res.ms["stain"] = 1000 * (time.perf_counter() - t0)
        nuclear: NDArray[Any] | None
        if fluorescence is not None:
            nuclear, res.nuclear_source = fluorescence, "fluorescence"
        elif res.stain is not None:
            nuclear, res.nuclear_source = res.stain, "virtual_stain"
        else:
            nuclear = None
        if nuclear is None and (tracker := self.trackers.get(position)) is not None:
            # nothing to segment at this time point (a nuclear channel imaged every few,
            # no virtual stain): its tracks have missed no frame here; counted as a gap, each
            # nuclear frame ended every track and started it anew
            tracker.skip(frame)
        if nuclear is None or self.segmenter_name is None:
            return res
        t0 = time.perf_counter()
        if float(np.max(nuclear)) == float(np.min(nuclear)):
            labels = np.zeros(nuclear.shape, np.int32)
        else:
            # a virtual stain is already in normalised units: its own percentiles would
            # stretch a dark frame's noise (lamp off) into phantom nuclei
            virtual = res.nuclear_source == "virtual_stain"
            labels = self._segmenter(pixel_size_um).segment(nuclear, normalised=virtual).labels
        res.labels = labels
        t1 = time.perf_counter()
        tracker, ended = self._tracker(position, frame, pixel_size_um, labels.shape)
        res.objects = measure_objects(labels, nuclear)  # measured once: tracker and policies
        res.tracks = tracker.update(res.objects, frame=frame)
        res.view = self.views.get(position)
        if res.tracks.ignored:
            # (the tracker's own warning names no position; the cells are still returned,
            # and stored, with track 0)
            logger.warning(
                "position %r t=%d: not tracked (%s); its %d cell(s) have track 0",
                position, frame, res.tracks.ignored, len(res.tracks.labels),
            )  # fmt: skip
        if ended:
            res.tracks = dataclasses.replace(res.tracks, lost=ended + res.tracks.lost)
        t2 = time.perf_counter()
        res.ms["segment"] = 1000 * (t1 - t0)
        res.ms["track"] = 1000 * (t2 - t1)
        if self.states is not None:
            res.states = self.states.classify(nuclear, labels, pixel_size_um=pixel_size_um)
            res.ms["states"] = 1000 * (time.perf_counter() - t2)
        return res

    def _tracker(
        self, position: str, frame: int, pixel_size_um: float | None, shape: tuple[int, ...]
    ) -> tuple[OnlineTracker, tuple[int, ...]]:
        """Return the position's tracker, and the tracks a change of view ended (see the module)."""
        tracker = self.trackers.get(position)
        if tracker is not None and frame <= tracker.frame:
            # the tracker ignores it (given again, or late): a late field of the view before
            # ended the tracks of the new one, and the next field every track once more
            return tracker, ()
        last_px, last_shape = self.views.get(position, (None, shape))
        px = pixel_size_um if pixel_size_um is not None else last_px
        self.views[position] = (px, shape)
        if tracker is None:
            tracker = self.trackers[position] = OnlineTracker(self.tracker_config)
            return tracker, ()
        rescaled = (
            px is not None and last_px is not None
            and abs(px - last_px) > SAME_PIXEL_SIZE * min(px, last_px)
        )  # fmt: skip
        if not rescaled and shape == last_shape:
            return tracker, ()
        # linked in pixels, a cell near the middle of a 20x field would continue the track
        # of whichever cell sat there at 10x (and every gate and area is off by the zoom)
        snap = tracker.snapshot()
        ids, seen = snap.tracks["id"].tolist(), snap.tracks["last_seen"].tolist()
        ended = tuple(t for t, s in zip(ids, seen, strict=True) if s == snap.frame)
        state = snap.state()
        state["tracks"] = {c: [] for c in state["tracks"]}  # ids and lineage go on
        tracker = self.trackers[position] = OnlineTracker.from_state(state)
        logger.warning(
            "position %r: the frames went from %s px at %s µm to %s px at %s µm (another "
            "objective, binning or ROI): its %d track(s) end here and new ones begin",
            position, last_shape, last_px, shape, px, len(ended),
        )  # fmt: skip
        return tracker, ended

    def warm_up(self, shape: tuple[int, int], pixel_size_um: float | None = None) -> float:
        """Run every loaded engine once on a synthetic field of ``shape``; return seconds taken.

        First calls allocate, compile kernels, capture CUDA graphs and let cudnn
        choose its algorithms (on a GPU ~4 s for the shipped engines, here ~0.5
        s more than a later field): done before the run, the first fields do
        not pay for it, nor do the fields queued behind them. A dim background
        with a grid of bright discs of the run's nucleus size (16 px without
        one) gives the segmentation and the classifier cells. No tracker is touched.
        """
        t0 = time.perf_counter()
        h, w = shape
        rng = np.random.default_rng(0)
        frame = rng.normal(200, 10, shape).clip(0, None)
        yy, xx = np.mgrid[:h, :w]
        # (discs of 16 px, at 40x a fifth of a 12 µm nucleus, vanished when the segmentation
        # shrank the frame to its nucleus size: no cells, and the classifier was left cold)
        r = 8.0
        if self.nucleus_diameter_um is not None and pixel_size_um:
            r = self.nucleus_diameter_um / pixel_size_um / 2
        period = max(2, min(round(5 * r), h, w))
        half = period // 2
        frame[((yy % period) - half) ** 2 + ((xx % period) - half) ** 2 < r * r] += 800
        frame = frame.astype(np.uint16)
        if self.stain is not None:
            self.stain.predict(frame, pixel_size_um=pixel_size_um)
        if self.segmenter_name is not None:
            labels = self._segmenter(pixel_size_um).segment(frame).labels
            if self.states is not None and labels.any():
                self.states.classify(frame, labels, pixel_size_um=pixel_size_um)
                self.states.warm_up_batches()
        return time.perf_counter() - t0

    def engine_hashes(self) -> dict[str, str]:
        """Engine name → model sha256 of every engine of the run (recorded with decisions).

        The segmentation engine's comes from its card when none is loaded yet
        (it is loaded for the first frame's pixel size, which sets its scale);
        loading it checks the model against that sha256.
        """
        out = {e.name: e.card.sha256 for e in (self.stain, self.states) if e is not None}
        if self.segmenter_name is not None:
            seg = next(iter(self._segmenters.values()), None)
            if seg is not None:
                out[seg.name] = seg.card.sha256
            else:
                card = EngineCard.from_file(find_engine(self.segmenter_name) / "card.yaml")
                out[card.name] = card.sha256
        return out

    def engine_runtimes(self) -> dict[str, dict[str, str]]:
        """Engine name → backend, device and precision of every loaded engine.

        The segmentation engine is there once a field or `warm_up` has loaded it.
        """
        engines = [next(iter(self._segmenters.values()), None), self.stain, self.states]
        return {e.name: e.runtime() for e in engines if e is not None}

    def engines_used(self, res: FrameResult, *, stain_decides: bool = True) -> dict[str, str]:
        """Engine name → model sha256 of the engines that ran for ``res`` (its stage times).

        ``stain_decides`` False: the policies read no virtual stain, so a stain
        made only for the overlay (the field's fluorescence was segmented) is
        left out: the decisions did not depend on it (and a worker that skipped
        it to catch up records the same engines as a replay that made it).
        """
        ran: list[Any] = []
        if "stain" in res.ms and (stain_decides or res.nuclear_source == "virtual_stain"):
            ran.append(self.stain)
        if "segment" in res.ms:
            ran.append(next(iter(self._segmenters.values()), None))
        if "states" in res.ms:
            ran.append(self.states)
        return {e.name: e.card.sha256 for e in ran if e is not None}

    def close(self) -> None:
        """Free every engine's session (and its device memory)."""
        for e in (*self._segmenters.values(), self.stain, self.states):
            if e is not None:
                e.close()
        self._segmenters.clear()

    def __enter__(self) -> FrameAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
