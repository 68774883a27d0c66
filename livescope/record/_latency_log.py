"""The rule for a record of the worker's ``results/latency.jsonl``.

The worker appends one JSON object per analysed field (``position``, ``t``, the ms
per stage; written by ``livescope.pipeline``'s results store). Readers (the replay's
gate, the run report) count a field as analysed only from a line that names it, and
both use `field_key`, so that they agree on which lines are damaged.
"""

from __future__ import annotations

__all__ = ["field_key"]


def field_key(rec: object) -> tuple[str, int] | None:
    """Return the (position, t) a decoded ``latency.jsonl`` line is the record of.

    None when the line names no field: it is no JSON object, its ``position`` is
    no string, or its ``t`` is no integer (a bool is none either: JSON's ``true``
    is no time point; a float such as ``1.0`` is not taken, as the worker writes
    integers). Called on any thread; raises nothing.
    """
    if not isinstance(rec, dict):
        return None
    position, t = rec.get("position"), rec.get("t")
    if not isinstance(position, str) or not isinstance(t, int) or isinstance(t, bool):
        return None
    return position, t
