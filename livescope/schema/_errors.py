"""Domain exceptions. Every error a user can cause names what is wrong."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "LivescopeError",
    "PlanError",
    "ProfileError",
    "StageLimitError",
]


class LivescopeError(Exception):
    """Base class of every error livescope raises on purpose.

    The command-line interface prints these as one clear message (no traceback).
    """


class ConfigError(LivescopeError):
    """A configuration file (profile, plan, card) is missing, unreadable or invalid.

    Parameters
    ----------
    source
        The file (or other source) that holds the configuration.
    problems
        One line per problem, each starting with the field path it concerns.

    """

    kind = "configuration"

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(
            f"{self.kind} {source!s} is invalid ({n} problem{'s' if n != 1 else ''}):\n{lines}"
        )


class ProfileError(ConfigError):
    """A hardware profile is invalid."""

    kind = "hardware profile"


class PlanError(ConfigError):
    """An acquisition plan is invalid, or does not fit the hardware profile."""

    kind = "acquisition plan"


class StageLimitError(LivescopeError, ValueError):
    """A stage was asked to move outside the travel limits of its hardware profile."""
