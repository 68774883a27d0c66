"""Tracking: the causal tracker used live, sequences, and CTC scoring.

`OnlineTracker` links one frame's instance labels at a time to stable track ids,
closes short gaps, detects divisions and keeps the lineage; its state saves and
restores. `track_sequence` runs it over a recorded sequence; `evaluate_tracking`
scores a Cell Tracking Challenge result with py-ctcmetrics.
"""

from ._evaluate import evaluate_tracking, gt_folder_hint, numbered_frames
from ._objects import ObjectTable, measure_objects
from ._sequence import TrackedSequence, track_sequence
from ._tracker import OnlineTracker, TrackerConfig, TrackerSnapshot
from ._updates import Division, Revision, TrackUpdate

__all__ = [
    "Division",
    "ObjectTable",
    "OnlineTracker",
    "Revision",
    "TrackUpdate",
    "TrackedSequence",
    "TrackerConfig",
    "TrackerSnapshot",
    "evaluate_tracking",
    "gt_folder_hint",
    "measure_objects",
    "numbered_frames",
    "track_sequence",
]
