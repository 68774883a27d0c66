"""The analysis pipeline: engines and trackers wired into one pass per frame.

`FrameAnalyzer` turns the frames of one field at one time point into labels,
tracks, a virtual stain and per-cell states. The worker process (``livescope
worker --analyse``) feeds it from the frame bus. The ``score_*`` functions and
`flag_divisions_ctc` score the stain and cell-state engines against ground
truth (simulated fields, annotated CTC sequences).
"""

from ._analyzer import FrameAnalyzer, FrameResult
from ._scoring import (
    flag_divisions_ctc,
    score_stain_simulated,
    score_states_simulated,
    views_for_seeds,
)

__all__ = [
    "FrameAnalyzer",
    "FrameResult",
    "flag_divisions_ctc",
    "score_stain_simulated",
    "score_states_simulated",
    "views_for_seeds",
]
