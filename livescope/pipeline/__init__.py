"""The analysis pipeline: engines and trackers wired into one pass per frame.

`FrameAnalyzer` turns the frames of one field at one time point into labels,
tracks, a virtual stain and per-cell states. `PipelineWorker` (the worker
process, ``livescope worker --analyse``) feeds it from the frame bus, runs the
policies, sends decisions, writes the results store and the overlay;
`WorkerSupervisor` runs it beside the agent and restarts it if it dies. The
``score_*`` functions and `flag_divisions_ctc` score the stain and cell-state engines against ground
truth (simulated fields, annotated CTC sequences).
"""

from ._analyzer import FrameAnalyzer, FrameResult
from ._cluster import ReplaySpec, bench_replay_cluster, replay_many, run_replay_task
from ._config import LATENCY_STAGES, PLAN_FILE, RESULTS_DIR, WorkerConfig
from ._demo import DEMO_POLICIES, SLOW_FIELD_MS, run_adaptive, write_plan
from ._replay import replay_overhead, replay_policies, run_replay
from ._scoring import (
    flag_divisions_ctc,
    score_stain_simulated,
    score_states_simulated,
    views_for_seeds,
)
from ._supervisor import WorkerSupervisor
from ._truth_scores import evaluate_tracks, evaluate_triggers
from ._worker import PipelineWorker

__all__ = [
    "DEMO_POLICIES",
    "LATENCY_STAGES",
    "PLAN_FILE",
    "RESULTS_DIR",
    "SLOW_FIELD_MS",
    "FrameAnalyzer",
    "FrameResult",
    "PipelineWorker",
    "ReplaySpec",
    "WorkerConfig",
    "WorkerSupervisor",
    "bench_replay_cluster",
    "evaluate_tracks",
    "evaluate_triggers",
    "flag_divisions_ctc",
    "replay_many",
    "replay_overhead",
    "replay_policies",
    "run_adaptive",
    "run_replay",
    "run_replay_task",
    "score_stain_simulated",
    "score_states_simulated",
    "views_for_seeds",
    "write_plan",
]
