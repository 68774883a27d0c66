"""Recording: OME-Zarr runs with per-frame event metadata, and Cell Tracking Challenge I/O."""

from ._ctc import CtcTrack, read_ctc, relabel_for_ctc, write_ctc
from ._protocol import PSink
from ._zarr import FRAMES_FILE, ZARR_NAME, OmeZarrWriter, read_frames

__all__ = [
    "FRAMES_FILE",
    "ZARR_NAME",
    "CtcTrack",
    "OmeZarrWriter",
    "PSink",
    "read_ctc",
    "read_frames",
    "relabel_for_ctc",
    "write_ctc",
]
