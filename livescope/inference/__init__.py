"""Inference: engines (ONNX models + cards) run by interchangeable backends.

`Engine` / `SegmentationEngine` load an engine folder (``engines/<task>/<name>``),
check it, and run frames through the backend chosen by `select_backend`
(TensorRT, TensorRT-RTX, torch, ONNX Runtime).
"""

from ._backends import (
    BACKENDS,
    BackendUnavailable,
    OnnxRuntimeBackend,
    PBackend,
    PSession,
    TensorRTBackend,
    TensorRTRTXBackend,
    TorchBackend,
    available_backends,
    build_plan,
    plan_cache_dir,
    select_backend,
)
from ._classical import classical_segmentation
from ._engine import (
    Engine,
    EngineError,
    SegmentationEngine,
    SegmentationResult,
    TilePlan,
    builtin_engines,
    find_engine,
    sha256_file,
)
from ._evaluate import evaluate_segmentation, paired_files
from ._metrics import IOU_THRESHOLDS, MatchCounts, match_counts, scores
from ._postprocess import labels_from_maps, labels_from_maps_gpu, normalize_percentile

__all__ = [
    "BACKENDS",
    "IOU_THRESHOLDS",
    "BackendUnavailable",
    "Engine",
    "EngineError",
    "MatchCounts",
    "OnnxRuntimeBackend",
    "PBackend",
    "PSession",
    "SegmentationEngine",
    "SegmentationResult",
    "TensorRTBackend",
    "TensorRTRTXBackend",
    "TilePlan",
    "TorchBackend",
    "available_backends",
    "build_plan",
    "builtin_engines",
    "classical_segmentation",
    "evaluate_segmentation",
    "find_engine",
    "labels_from_maps",
    "labels_from_maps_gpu",
    "match_counts",
    "normalize_percentile",
    "paired_files",
    "plan_cache_dir",
    "scores",
    "select_backend",
    "sha256_file",
]
