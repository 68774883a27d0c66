"""Ground truth of a simulated run, written beside the recording in CTC layout.

For each position, the truth of every time point (cell-id masks from the
simulation, the same for all channels and z planes of that time point) is kept
as it is acquired (``<position>/cell_ids/tTTTT.tif``, which trigger scoring
reads); at the end it is written as a Cell Tracking Challenge ground
truth (``<position>/TRA/man_trackTTT.tif`` + ``man_track.txt``), with the sim's
cell ids and mitosis onsets in ``<position>/cells.json`` and the lineage of every
simulated cell in ``lineage.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray

from livescope.record import relabel_for_ctc, write_ctc
from livescope.schema import FrameInfo, LivescopeError, write_atomic

from ._engine import roi_at_offset
from ._sim import SimulatedMicroscope

__all__ = ["GroundTruthWriter"]

logger = logging.getLogger("livescope")


class GroundTruthWriter:
    """A sink that records the simulated truth of each acquired (position, time point).

    Parameters
    ----------
    sim
        The simulated microscope the run acquires from.
    out_dir
        Folder for the ground truth (created).

    """

    def __init__(self, sim: SimulatedMicroscope, out_dir: str | Path) -> None:
        self.sim = sim
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._frames: dict[str, dict[int, Path]] = {}  # position -> t -> cell-id mask file
        self._seen: set[str] = set()  # plan positions with a frame (its truth written or not)
        self.summary: dict[str, Any] = {}

    def write(self, image: NDArray[Any], info: FrameInfo) -> None:
        """Record the truth of the frame's (position, t), once per pair (writer thread).

        Frames added by decisions (close-ups at their own positions) are left out:
        the truth follows the plan's positions. The truth is drawn with the frame's
        own pixel size, shape and place on the sensor (``info``: its
        ``roi_offset_px``, binning 1 as the simulated camera's), not the
        objective and ROI in use when this runs: the runner may have changed
        them since. Only a frame that does not say where its ROI was (no
        ``roi_offset_px``: recorded before it was) is taken to sit where the
        camera's ROI does now, if that has its size.

        Raises
        ------
        LivescopeError
            if the frame has no sample time or stage position, or a pixel size,
            shape or ROI offset the simulated microscope cannot reproduce
            (`SimulatedMicroscope.ground_truth`). The (position, t) is then left
            without truth; `close` writes the rest.

        """
        if info.get("added_by"):
            return
        pos, t = info["position"], int(info["index"].get("t", 0))
        if t in self._frames.get(pos, {}):
            return
        self._seen.add(pos)
        if info["sample_time_s"] is None or info["x_um"] is None or info["y_um"] is None:
            raise LivescopeError(
                f"frame {info['seq']} has no sample time or stage position; "
                "ground truth needs frames recorded by the livescope engine"
            )
        truth = self.sim.ground_truth(
            info["sample_time_s"],
            info["x_um"],
            info["y_um"],
            pixel_size_um=info["pixel_size_um"],
            shape=info["shape"],
            roi=_roi_of(info, self.sim.profile.camera.sensor_shape_px),
        )
        folder = self.out_dir / pos / "cell_ids"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"t{t:04d}.tif"
        tifffile.imwrite(path, truth.labels, compression="zlib")
        # (listed only once its truth is written: a position listed with none, its
        # truth refused or failed, made `close` fail and write no lineage)
        self._frames.setdefault(pos, {})[t] = path

    def close(self) -> None:
        """Write the CTC ground truth of every position and the lineage.

        A position with no truth written (every frame's refused, `write` raised for
        each) is left out, logged.
        """
        records = self.sim.lineage()
        parent_of = {r.cell_id: r.parent_id for r in records}
        by_id = {r.cell_id: r for r in records}
        positions: dict[str, Any] = {}
        for pos in sorted(self._seen - self._frames.keys()):
            logger.warning("%s: no ground truth written (each frame's refused); the position "
                           "is left out", pos)  # fmt: skip
        for pos, files in self._frames.items():
            ts = sorted(files)
            ids = [np.asarray(tifffile.imread(files[t])) for t in ts]
            # CTC frame k is time point k, as in the worker's result: a time point not
            # acquired (a frame the rig refused) is an empty frame, not left out (the
            # later frames would be numbered one short and scored against the wrong ones)
            by_t = dict(zip(ts, ids, strict=True))
            blank = np.zeros_like(ids[0])
            ids = [by_t.get(t, blank) for t in range(ts[-1] + 1)]
            # in view only: a daughter that drifts in from outside the field later, or a
            # cell that leaves and comes back, is not linked (no tracker could see it);
            # the gap counts acquired time points, so a track goes on over one not
            # acquired (as the worker's result links it: else each such link scored as
            # a redundant edge)
            frames, tracks, object_of = relabel_for_ctc(
                ids, parent_of, max_link_gap=1, not_acquired=set(range(len(ids))) - set(ts)
            )
            write_ctc(self.out_dir / pos, frames, tracks, kind="gt")
            cells = {
                str(label): {
                    "cell_id": cid,
                    "parent_id": by_id[cid].parent_id,
                    "mitosis_onset_s": by_id[cid].mitosis_onset_s,
                    "fate": by_id[cid].fate,
                }
                for label, cid in object_of.items()
            }
            divisions = (
                sum(
                    1 for t in tracks if t.parent and sum(u.parent == t.parent for u in tracks) == 2
                )
                // 2
            )
            write_atomic(  # (a run killed mid-write leaves none, not half a file)
                self.out_dir / pos / "cells.json",
                json.dumps({"timepoints": ts, "tracks": cells}, indent=1),
            )
            positions[pos] = {"frames": len(ids), "tracks": len(tracks), "divisions": divisions}
        write_atomic(self.out_dir / "lineage.json", json.dumps([asdict(r) for r in records]))
        self.summary = {
            "positions": positions,
            "tracks": sum(p["tracks"] for p in positions.values()),
            "divisions": sum(p["divisions"] for p in positions.values()),
        }


def _roi_of(info: FrameInfo, sensor_shape_px: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Return the camera ROI (x, y, width, height; sensor pixels) a frame was taken with.

    Worked back from its ``roi_offset_px`` and shape (`roi_at_offset`, the
    inverse of the engine's `roi_offset_px`), on the sensor (``sensor_shape_px``,
    (height, width)) at binning 1, the simulated camera's. None where the frame
    does not say (no offset recorded).

    Raises
    ------
    LivescopeError
        if the offset puts the ROI between sensor pixels (the frame was not
        taken on this sensor).

    """
    offset = info.get("roi_offset_px")
    if offset is None:
        return None
    roi = roi_at_offset(offset, info["shape"], sensor_shape_px)
    if roi is None:
        h, w = (int(s) for s in info["shape"][-2:])
        rows, cols = sensor_shape_px
        raise LivescopeError(
            f"frame {info['seq']}'s roi_offset_px {tuple(offset)} puts its {h} x {w} px ROI "
            f"between pixels of the {rows} x {cols} px sensor; its ground truth cannot be "
            "drawn (was the frame taken on this simulated microscope?)"
        )
    return roi
