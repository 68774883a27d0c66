"""What the pipeline worker runs (`WorkerConfig`) and the names of its outputs."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from typing import Any

from livescope.schema import LivescopeError

__all__ = ["LATENCY_STAGES", "PLAN_FILE", "RESULTS_DIR", "WorkerConfig"]

RESULTS_DIR = "results"
PLAN_FILE = "plan.yaml"
LATENCY_STAGES = (
    "camera_to_received",  # camera → agent → bus → worker's receiver thread
    "queue_wait",  # received → analysis starts (grouping + waiting behind earlier fields)
    "busy_wait",  # camera → analysis starts, the part the engines spent on earlier fields
    "stain", "segment", "track", "states",  # engines
    "engines",  # their sum
    "analyse_other",  # the analysis pass outside its engines (frame checks, bookkeeping)
    "handoff",  # analysed → the decision thread starts on it (it may let the next field go first)
    "prepare",  # per-cell measurements for the policies
    "policy",  # policies + guardrails
    "post",  # serialising and sending each decision as it passes (between the firings)
    "decision_enqueued",  # decision posted → the agent queued its events (ack); a field's slowest
    "decision_executed",  # the agent queued it → first frame it added was acquired
    # camera → the agent queued the decisions (→ policies done, when none fired); each posted
    # decision's end counts: a refused or unanswered one's, when the worker had every answer or
    # stopped waiting
    "end_to_end",
    "overhead",  # end_to_end − engines − busy_wait: what the pipeline itself costs
    "store",  # results store + overlay (after the decisions; off the decision path)
)  # fmt: skip


@dataclass(frozen=True)
class WorkerConfig:
    """What the worker runs (JSON round trip: `to_json` / `from_json`)."""

    profile: str = "sim"
    segmenter: str | None = "nuclei-unet"
    stain: str | None = "nuclei-stain"
    states: str | None = "cell-state"
    backend: str | None = None
    nucleus_diameter_um: float | None = None
    plan: str | None = None
    """Plan file with ``policies:`` (default: the run folder's plan.yaml)."""
    stain_every: int = 1
    """Virtual stain of every Nth time point of a field that also has a fluorescence
    frame (fields with only a label-free frame always get it: it is what is segmented)."""
    skip_stain_when_behind: bool = True
    """Skip the virtual stain of a field that also has a fluorescence frame when a later
    time point of its position is already waiting: the engines are a whole time point
    behind the acquisition, and that stain is only drawn on the overlay (the field's
    labels and states come from the fluorescence). Never when a policy reads the stain
    (a rule's ``feature: stain``, or any Python policy). Counted as
    ``stains_skipped_behind``."""
    analyse_added: bool = False
    maxlen: int = 256
    idle_s: float | None = None
    """Give up when no frame arrived for this long while the agent's bus is there
    (None: wait as long as the run goes on)."""
    watch_parent: bool = False
    """Stop when stdin closes (the supervisor holds a pipe to it: it died if it closes)."""
    tail_frames: int = 10
    overlay: bool = True
    decision_timeout_s: float = 2.0
    recording_wait_s: float = 2.0
    """How long to wait for the recorder to log a frame the bus did not deliver."""
    engine_nice: int = 0
    """Lower the engine and store threads' priority by this (Linux, per thread): the
    worker's receiving and decision threads, and the acquisition, go first."""

    def value_problems(self) -> list[str]:
        """Return what is wrong with the values (their types are checked by `from_json`).

        The limits of the `livescope worker` options that set them (``--maxlen``,
        ``--idle-s``, ...): a config's ``maxlen: 0`` was refused by the bus once an
        agent was there, a ``tail_frames: -1`` once the first cells were stored.
        """
        limits = [
            ("maxlen", self.maxlen, 1, "frames queued"),
            ("stain_every", self.stain_every, 1, "time points"),
            ("tail_frames", self.tail_frames, 0, "frames"),
            ("idle_s", self.idle_s, 0, "seconds, or null"),
            ("decision_timeout_s", self.decision_timeout_s, 0, "seconds"),
            ("recording_wait_s", self.recording_wait_s, 0, "seconds"),
        ]
        problems = [f"{key} must be >= {least} ({what}), got {value!r}"
                    for key, value, least, what in limits
                    if value is not None and value < least]  # fmt: skip
        if self.nucleus_diameter_um is not None and self.nucleus_diameter_um <= 0:
            problems.append(
                f"nucleus_diameter_um must be > 0 (µm, or null), got {self.nucleus_diameter_um!r}"
            )
        return problems

    def to_json(self) -> str:
        """Serialise (for the supervisor to hand to a worker process)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        """Read a config written by `to_json` (or by hand).

        Raises
        ------
        LivescopeError
            if it is not a JSON object, has unknown keys, or a value of the
            wrong type (naming the key and the type it takes).
        ValueError
            if it is not JSON.

        """
        data = json.loads(text)
        if not isinstance(data, dict):
            raise LivescopeError(
                f"worker config: must be a JSON object of settings, got {type(data).__name__}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(data) - known):
            raise LivescopeError(f"worker config: unknown key(s) {unknown}")
        # (a hand-written "maxlen": "256" or "overlay": "false" was taken as it was, and
        # failed far from here, or a string "false" turned the overlay on)
        hints = typing.get_type_hints(cls)
        return cls(**{k: _checked(k, v, hints[k]) for k, v in data.items()})


_TYPE_WORDS = {str: "text", bool: "true or false", int: "a whole number",
               float: "a finite number", type(None): "null"}  # fmt: skip


def _checked(key: str, value: Any, hint: Any) -> Any:
    """Return ``value`` of worker config key ``key`` if of its type ``hint`` (an int as a float)."""
    allowed = typing.get_args(hint) or (hint,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return None
        if kind is bool and isinstance(value, bool):
            return value
        if isinstance(value, bool):  # (JSON's true is no number)
            continue
        if kind is int and isinstance(value, int):
            return value
        if kind is float and isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    words = " or ".join(_TYPE_WORDS.get(k, str(k)) for k in allowed)
    raise LivescopeError(f"worker config: {key} must be {words}, got {value!r}")
