"""Recording: OME-Zarr runs with per-frame event metadata, and Cell Tracking Challenge I/O."""

from ._ctc import CtcTrack, read_ctc, relabel_for_ctc, rewrite_ctc_result, write_ctc
from ._dataset import DATASET_DTYPES, Dataset, DatasetError, FrameKey, RecordedFrame
from ._datasets import OME_TIFF_SUFFIXES, open_dataset
from ._decisions import DECISIONS_FILE, DecisionLog, read_decisions
from ._latency_log import field_key
from ._protocol import PSink
from ._zarr import (
    CODECS,
    FRAMES_FILE,
    ZARR_NAME,
    OmeZarrWriter,
    RecordingReader,
    earlier_recording,
    read_frames,
    zarr_threads,
)

__all__ = [
    "CODECS",
    "DATASET_DTYPES",
    "DECISIONS_FILE",
    "FRAMES_FILE",
    "OME_TIFF_SUFFIXES",
    "ZARR_NAME",
    "CtcTrack",
    "Dataset",
    "DatasetError",
    "DecisionLog",
    "FrameKey",
    "OmeZarrWriter",
    "PSink",
    "RecordedFrame",
    "RecordingReader",
    "earlier_recording",
    "field_key",
    "open_dataset",
    "read_ctc",
    "read_decisions",
    "read_frames",
    "relabel_for_ctc",
    "rewrite_ctc_result",
    "write_ctc",
    "zarr_threads",
]
