"""Schemas: hardware profiles, acquisition plans and the errors they raise.

Everything people edit is a frozen pydantic model with ``extra="forbid"`` and
units in field names; load with ``from_file`` (or `load_profile` / `load_plan`).
"""

from ._base import FrozenModel, format_validation_error, read_yaml, write_atomic
from ._card import (
    CardInput,
    CardOutput,
    DataRef,
    EngineCard,
    EngineCardError,
    Normalisation,
    PostProcess,
    Tiling,
    TrainingRecord,
)
from ._data import data_root, require_data_root
from ._decision import (
    AddEvents,
    ChangeInterval,
    Decision,
    DecisionAck,
    Move,
    StopPosition,
    StopRun,
    parse_decision,
)
from ._errors import ConfigError, LivescopeError, PlanError, ProfileError, StageLimitError
from ._frame import FrameInfo
from ._header import (
    ALLOWED_DTYPES,
    PROTOCOL_VERSION,
    FrameHeader,
    HeaderError,
    ShmRef,
    decode_header,
    encode_header,
)
from ._plan import PLAN_SECTIONS, check_plan, load_plan, plan_sections
from ._profile import (
    Camera,
    Channel,
    ChannelSet,
    Compute,
    Guardrails,
    HardwareProfile,
    LightDoseBudget,
    Objective,
    Simulation,
    Stages,
    XYStage,
    ZStage,
    builtin_profile_path,
    builtin_profiles,
    load_profile,
)
from ._threads import lower_thread_priority

__all__ = [
    "ALLOWED_DTYPES",
    "PLAN_SECTIONS",
    "PROTOCOL_VERSION",
    "AddEvents",
    "Camera",
    "CardInput",
    "CardOutput",
    "ChangeInterval",
    "Channel",
    "ChannelSet",
    "Compute",
    "ConfigError",
    "DataRef",
    "Decision",
    "DecisionAck",
    "EngineCard",
    "EngineCardError",
    "FrameHeader",
    "FrameInfo",
    "FrozenModel",
    "Guardrails",
    "HardwareProfile",
    "HeaderError",
    "LightDoseBudget",
    "LivescopeError",
    "Move",
    "Normalisation",
    "Objective",
    "PlanError",
    "PostProcess",
    "ProfileError",
    "ShmRef",
    "Simulation",
    "StageLimitError",
    "Stages",
    "StopPosition",
    "StopRun",
    "Tiling",
    "TrainingRecord",
    "XYStage",
    "ZStage",
    "builtin_profile_path",
    "builtin_profiles",
    "check_plan",
    "data_root",
    "decode_header",
    "encode_header",
    "format_validation_error",
    "load_plan",
    "load_profile",
    "lower_thread_priority",
    "parse_decision",
    "plan_sections",
    "read_yaml",
    "require_data_root",
    "write_atomic",
]
