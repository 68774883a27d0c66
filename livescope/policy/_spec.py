"""Checks of the settings a plan gives a rule: numbers, and the names a trigger or action takes.

`Rule` and `Acquire` (``_actions``) check the plan's ``when:`` and ``do:``
settings with these as they are built, so that a bad one is refused naming the
setting and what is wrong with it (a ``"1"`` YAML read as a string, an empty
``key:``, a misspelt or missing setting). The plan's ``policies:`` list itself
is read by `rules_from_spec` (``_rules``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

_WHOLE = frozenset({"frames", "loops", "z_planes", "max_fires"})
"""Settings that must be whole numbers. A float such as YAML's ``4.0`` passes the check:
each is made an int where it is kept (`Acquire`, the ``mitosis`` trigger, `Rule`)."""


def _check_numbers(where: str, params: Mapping[str, Any], *, skip: Iterable[str] = ()) -> None:
    """Refuse a parameter that is not a finite number (YAML's ``"1"`` is a string, ``k:`` None)."""
    for key, value in params.items():
        if key in skip:
            continue
        if value is None:  # (YAML's empty `key:`, which no setting takes as its default)
            raise ValueError(f"{where}.{key} must be a number, got nothing")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{where}.{key} must be a number, got {value!r}")
        if key in _WHOLE and not float(value).is_integer():
            raise ValueError(f"{where}.{key} must be a whole number, got {value!r}")


def _unknown_settings(cls: Any, given: Mapping[str, Any] | None) -> str:
    """Say which settings a trigger or action does not know (``""``: none)."""
    import inspect

    params = inspect.signature(cls).parameters.values()
    takes = [p.name for p in params if not p.name.startswith("_")]
    if unknown := sorted(set(given or {}) - set(takes)):
        return f"unknown setting(s) {unknown}; it takes {takes}"
    return ""


def _settings_problem(cls: Any, given: Mapping[str, Any] | None, exc: TypeError) -> str:
    """Say which settings a trigger or action does not know (not its class' __init__)."""
    import inspect

    if unknown := _unknown_settings(cls, given):
        return unknown
    params = inspect.signature(cls).parameters.values()
    takes = [p.name for p in params if not p.name.startswith("_")]
    missing = [
        p.name for p in params
        if p.default is inspect.Parameter.empty and p.name not in (given or {})
    ]  # fmt: skip
    return f"missing setting(s) {missing}; it takes {takes}" if missing else str(exc)
