"""A Python policy as a user writes one (loaded from a plan by ``python: module:factory``)."""

from __future__ import annotations

from livescope.policy import Firing, Observation
from livescope.schema import StopPosition


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
