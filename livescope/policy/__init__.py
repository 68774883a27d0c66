"""Event-triggered imaging: policies turn analysis results into decisions, guarded.

A policy sees one analysed field at a time (`Observation`: cells with track
ids, centroids, features and state probabilities; divisions; lost tracks) and
returns `Firing` objects, each carrying a decision (``livescope.schema``:
add events, move, change interval, stop a position, stop the run). Policies are
declared in the plan YAML (`Rule`, see ``_rules``) or written in Python (the
`Policy` protocol). `PolicyEngine` runs them, disables one that raises, and
checks every decision with `Guardrails` (stage travel, light dose, frame budget,
minimum interval, decision rate) before anything is sent. Pure: no I/O, no
clocks; time is the run's sample time carried by each observation.
"""

from ._actions import ACTIONS, SHARE_MARGIN, Acquire, firing_id
from ._engine import PolicyEngine, Verdict, load_policies, rules_for_profile
from ._guardrails import STALE_REFUSAL, Guardrails, parent_position
from ._observation import FEATURES, Cells, Firing, Observation
from ._rehearsal import REHEARSAL, rehearsal_closeup, rehearsal_field
from ._rules import TRIGGERS, Hit, Policy, Rule, rules_from_spec

__all__ = [
    "ACTIONS",
    "FEATURES",
    "REHEARSAL",
    "SHARE_MARGIN",
    "STALE_REFUSAL",
    "TRIGGERS",
    "Acquire",
    "Cells",
    "Firing",
    "Guardrails",
    "Hit",
    "Observation",
    "Policy",
    "PolicyEngine",
    "Rule",
    "Verdict",
    "firing_id",
    "load_policies",
    "parent_position",
    "rehearsal_closeup",
    "rehearsal_field",
    "rules_for_profile",
    "rules_from_spec",
]
