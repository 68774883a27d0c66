"""Inference: engines (ONNX models + cards) run by interchangeable backends.

`Engine` loads an engine folder (``engines/<task>/<name>``), checks it, and
runs frames through the backend chosen by `select_backend` (TensorRT,
TensorRT-RTX, torch, ONNX Runtime). Task engines on top of it:
`SegmentationEngine` (instance labels), `StainEngine` (a nuclear stain
predicted from a label-free frame) and `CellStateEngine` (every cell of a frame
classified in one call).
"""

from ._backends import (
    BACKENDS,
    CROP_BATCH,
    BackendUnavailable,
    OnnxRuntimeBackend,
    PBackend,
    PSession,
    TensorRTBackend,
    TensorRTRTXBackend,
    TorchBackend,
    available_backends,
    backend_status,
    build_plan,
    plan_cache_dir,
    plan_file,
    select_backend,
)
from ._cellstate import MITOTIC_CLASSES, CellStateEngine, CellStates, cell_crops
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
from ._evaluate import (
    as_instance_labels,
    evaluate_segmentation,
    paired_files,
    read_image,
    refuse_label_image,
)
from ._metrics import ERROR_KINDS, IOU_THRESHOLDS, MatchCounts, match_counts, scores
from ._postprocess import (
    apply_gamma,
    apply_normalisation,
    drop_weak_objects,
    instance_labels,
    labels_from_maps,
    labels_from_maps_gpu,
    labels_from_votes,
    normalize_percentile,
)
from ._stain import StainEngine, StainResult, evaluate_stain, parse_crop, stain_scores

__all__ = [
    "BACKENDS",
    "CROP_BATCH",
    "ERROR_KINDS",
    "IOU_THRESHOLDS",
    "MITOTIC_CLASSES",
    "BackendUnavailable",
    "CellStateEngine",
    "CellStates",
    "Engine",
    "EngineError",
    "MatchCounts",
    "OnnxRuntimeBackend",
    "PBackend",
    "PSession",
    "SegmentationEngine",
    "SegmentationResult",
    "StainEngine",
    "StainResult",
    "TensorRTBackend",
    "TensorRTRTXBackend",
    "TilePlan",
    "TorchBackend",
    "apply_gamma",
    "apply_normalisation",
    "as_instance_labels",
    "available_backends",
    "backend_status",
    "build_plan",
    "builtin_engines",
    "cell_crops",
    "classical_segmentation",
    "drop_weak_objects",
    "evaluate_segmentation",
    "evaluate_stain",
    "find_engine",
    "instance_labels",
    "labels_from_maps",
    "labels_from_maps_gpu",
    "labels_from_votes",
    "match_counts",
    "normalize_percentile",
    "paired_files",
    "parse_crop",
    "plan_cache_dir",
    "plan_file",
    "read_image",
    "refuse_label_image",
    "scores",
    "select_backend",
    "sha256_file",
    "stain_scores",
]
