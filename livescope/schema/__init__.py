"""Schemas: hardware profiles, acquisition plans and the errors they raise.

Everything people edit is a frozen pydantic model with ``extra="forbid"`` and
units in field names; load with ``from_file`` (or `load_profile` / `load_plan`).
"""

from ._base import FrozenModel, format_validation_error, read_yaml
from ._errors import ConfigError, LivescopeError, PlanError, ProfileError, StageLimitError
from ._frame import FrameInfo
from ._plan import check_plan, load_plan
from ._profile import (
    Camera,
    Channel,
    ChannelSet,
    Compute,
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

__all__ = [
    "Camera",
    "Channel",
    "ChannelSet",
    "Compute",
    "ConfigError",
    "FrameInfo",
    "FrozenModel",
    "HardwareProfile",
    "LightDoseBudget",
    "LivescopeError",
    "Objective",
    "PlanError",
    "ProfileError",
    "Simulation",
    "StageLimitError",
    "Stages",
    "XYStage",
    "ZStage",
    "builtin_profile_path",
    "builtin_profiles",
    "check_plan",
    "format_validation_error",
    "load_plan",
    "load_profile",
    "read_yaml",
]
