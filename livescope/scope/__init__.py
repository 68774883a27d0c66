"""Acquisition side: the simulated microscope, the acquisition engine and runs.

The simulated microscope is a pymmcore-plus ``UniMMCore`` with pure-Python
devices rendering a living cell population, with ground truth for every frame.
"""

from ._agent import ScopeAgent, interrupted_summary
from ._bench import CAMERA_TARGETS_FPS, bench_camera, bench_record
from ._demo import (
    BACKENDS,
    check_micromanager_config,
    demo_sequence,
    run_micromanager,
    run_simulated,
)
from ._engine import SAMPLE_TIME_KEY, LivescopeEngine
from ._fanout import FrameFanout, frame_info, position_name
from ._feed import EventFeed
from ._frames import SimulatedView, simulated_frames, simulated_views
from ._pycromanager import PycromanagerAgent
from ._pycromanager_core import adapt_core, read_saved_frame, to_pycromanager_event
from ._render import FieldOfView, Optics
from ._replay import (
    WORKER_FAILED,
    ReplayAgent,
    ReplayCamera,
    ReplayEngine,
    ReplayGate,
    ReplayMicroscope,
    ReplaySource,
    check_gate_timeout,
    check_speed,
    run_replay_scope,
)
from ._replay_plan import frames_in_plan, map_channels, replay_sequence
from ._sample import ANAPHASE_SHARE, STEP_S, CellRecord, CellState, SampleState, SimulatedSample
from ._sim import FrameTruth, SimulatedMicroscope, expose
from ._truth import GroundTruthWriter

__all__ = [
    "ANAPHASE_SHARE",
    "BACKENDS",
    "CAMERA_TARGETS_FPS",
    "SAMPLE_TIME_KEY",
    "STEP_S",
    "WORKER_FAILED",
    "CellRecord",
    "CellState",
    "EventFeed",
    "FieldOfView",
    "FrameFanout",
    "FrameTruth",
    "GroundTruthWriter",
    "LivescopeEngine",
    "Optics",
    "PycromanagerAgent",
    "ReplayAgent",
    "ReplayCamera",
    "ReplayEngine",
    "ReplayGate",
    "ReplayMicroscope",
    "ReplaySource",
    "SampleState",
    "ScopeAgent",
    "SimulatedMicroscope",
    "SimulatedSample",
    "SimulatedView",
    "adapt_core",
    "bench_camera",
    "bench_record",
    "check_gate_timeout",
    "check_micromanager_config",
    "check_speed",
    "demo_sequence",
    "expose",
    "frame_info",
    "frames_in_plan",
    "interrupted_summary",
    "map_channels",
    "position_name",
    "read_saved_frame",
    "replay_sequence",
    "run_micromanager",
    "run_replay_scope",
    "run_simulated",
    "simulated_frames",
    "simulated_views",
    "to_pycromanager_event",
]
