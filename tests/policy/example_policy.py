"""A Python policy as a user writes one (loaded from a plan by ``python: module:factory``)."""

from __future__ import annotations

import useq

from livescope.policy import Firing, Observation
from livescope.schema import AddEvents, StopPosition


class EmptyField:
    """Stop imaging a position once it has shown no cell for ``frames`` time points."""

    def __init__(self, name: str, frames: int = 3) -> None:
        self.name = name
        self.frames = frames
        self.empty: dict[str, int] = {}

    def decide(self, obs: Observation) -> list[Firing]:
        run = self.empty.get(obs.position, 0) + 1 if len(obs.cells) == 0 else 0
        self.empty[obs.position] = run
        if run != self.frames:
            return []
        d = StopPosition(run_id=obs.run_id, seq=obs.seq, rule=self.name, position=obs.position)
        return [Firing(self.name, "empty_field", obs.position, d, inputs={"frames": run})]

    def state(self) -> dict[str, int]:
        return dict(self.empty)

    def restore(self, state: dict[str, int]) -> None:
        self.empty = dict(state)


class CrowdAlarm:
    """A policy with a bug that only shows at run time: it raises once a field is crowded."""

    def __init__(self, name: str, above: int = 1) -> None:
        self.name = name
        self.above = above

    def decide(self, obs: Observation) -> list[Firing]:
        if len(obs.cells) > self.above:
            raise ZeroDivisionError("crowd alarm: the user's own bug")
        return []


class TooFast:
    """Asks, on its first ``times`` fields with cells, for DAPI time points ``gap_s`` apart.

    Closer than a rig's ``guardrails.min_interval_s``, it is what the guardrails
    must refuse at run time (a declared rule asking for it is refused at load).
    """

    def __init__(self, name: str, times: int = 2, gap_s: float = 0.5) -> None:
        self.name = name
        self.times = times
        self.gap_s = gap_s
        self.fired = 0
        self.made: set[str] = set()  # (decision ids not yet given back)

    def decide(self, obs: Observation) -> list[Firing]:
        if self.fired >= self.times or len(obs.cells) == 0:
            return []
        self.fired += 1
        events = [
            useq.MDAEvent(index={"t": 100_000 + 3 * self.fired + k}, pos_name=obs.position,
                          channel={"config": "DAPI"}, min_start_time=k * self.gap_s)
            for k in range(3)
        ]  # fmt: skip
        d = AddEvents(run_id=obs.run_id, seq=obs.seq, rule=self.name, events=events)
        self.made.add(d.decision_id)
        return [Firing(self.name, "too_fast", obs.position, d, inputs={"fired": self.fired})]

    def give_back(self, decision_id: str) -> bool:
        """A decision refused as stale does not count towards ``times``."""
        if decision_id not in self.made:
            return False
        self.made.discard(decision_id)
        self.fired -= 1
        return True

    def state(self) -> dict[str, int]:
        return {"fired": self.fired}

    def restore(self, state: dict[str, int]) -> None:
        self.fired = int(state["fired"])


class BadGiveBack(TooFast):
    """Takes a firing back with a bug of its own."""

    def give_back(self, decision_id: str) -> bool:
        raise KeyError(decision_id)
