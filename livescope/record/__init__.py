"""Recording: OME-Zarr runs with per-frame event metadata, and Cell Tracking Challenge I/O."""

from ._ctc import CtcTrack, read_ctc, relabel_for_ctc, write_ctc
from ._decisions import DECISIONS_FILE, DecisionLog, read_decisions
from ._protocol import PSink
from ._zarr import FRAMES_FILE, ZARR_NAME, OmeZarrWriter, RecordingReader, read_frames

__all__ = [
    "DECISIONS_FILE",
    "FRAMES_FILE",
    "ZARR_NAME",
    "CtcTrack",
    "DecisionLog",
    "OmeZarrWriter",
    "PSink",
    "RecordingReader",
    "read_ctc",
    "read_decisions",
    "read_frames",
    "relabel_for_ctc",
    "write_ctc",
]
