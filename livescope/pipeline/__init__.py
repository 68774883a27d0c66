"""The analysis pipeline: engines and trackers wired into one pass per frame.

`FrameAnalyzer` turns the frames of one field at one time point into labels,
tracks, a virtual stain and per-cell states. The worker process (``livescope
worker --analyse``) feeds it from the frame bus.
"""

from ._analyzer import FrameAnalyzer, FrameResult

__all__ = ["FrameAnalyzer", "FrameResult"]
