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
"""

from __future__ import annotations

import logging
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
            for row in rows:
                k = by_label.get(row["label"])
                if k is None:
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
        Typical nucleus diameter; with a frame's pixel size it sets the
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
        self.backend = backend
        self.segmenter_name = segmenter
        self.nucleus_diameter_um = nucleus_diameter_um
        self.stain = StainEngine(stain, backend=backend) if stain is not None else None
        self.states = CellStateEngine(states, backend=backend) if states is not None else None
        self._segmenters: dict[float | None, SegmentationEngine] = {}
        self.tracker_config = tracker_config
        self.trackers: dict[str, OnlineTracker] = {}
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
        of this position); a jump tells the tracker that frames were missed.
        ``stain=False`` skips the virtual stain of a field that has a
        fluorescence frame (it is always made when it is the only nuclear signal).

        Raises
        ------
        LivescopeError
            if there is no frame.

        """
        if fluorescence is None and label_free is None:
            raise LivescopeError("analyse needs a fluorescence frame, a label-free frame, or both")
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
        self._frames[position] = frame
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
        if position not in self.trackers:
            self.trackers[position] = OnlineTracker(self.tracker_config)
        res.objects = measure_objects(labels, nuclear)  # measured once: tracker and policies
        res.tracks = self.trackers[position].update(res.objects, frame=frame)
        t2 = time.perf_counter()
        res.ms["segment"] = 1000 * (t1 - t0)
        res.ms["track"] = 1000 * (t2 - t1)
        if self.states is not None:
            res.states = self.states.classify(nuclear, labels, pixel_size_um=pixel_size_um)
            res.ms["states"] = 1000 * (time.perf_counter() - t2)
        return res

    def warm_up(self, shape: tuple[int, int], pixel_size_um: float | None = None) -> float:
        """Run every loaded engine once on a synthetic field of ``shape``; return seconds taken.

        First calls allocate, compile kernels, capture CUDA graphs and let cudnn
        choose its algorithms (on a GPU ~4 s for the shipped engines, here ~0.5
        s more than a later field): done before the run, the first fields do
        not pay for it, nor do the fields queued behind them. A dim background
        with a grid of bright discs gives the segmentation and the classifier
        cells. No tracker is touched.
        """
        t0 = time.perf_counter()
        h, w = shape
        rng = np.random.default_rng(0)
        frame = rng.normal(200, 10, shape).clip(0, None)
        yy, xx = np.mgrid[:h, :w]
        frame[((yy % 40) - 20) ** 2 + ((xx % 40) - 20) ** 2 < 64] += 800
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
