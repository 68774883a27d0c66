"""How events name the positions they image, and which plan position an added event means.

The agent's event queue files each event under `position_name`; an added
event may instead give a position's name or plan index and a grid tile, which
`PlanPositions.resolve` turns into the plan position it means. The agent (to
queue and record it) and the guardrails (to book its light) both ask here, so
that they agree.
"""

from __future__ import annotations

from collections.abc import Iterable

import useq

__all__ = ["PlanPositions", "position_name"]


def position_name(event: useq.MDAEvent) -> str:
    """Name of the position an event images (``pos_name``, else ``p<index>``, plus grid tile)."""
    name = event.pos_name or f"p{event.index.get('p', 0)}"
    if "g" in event.index:
        name = f"{name}_g{event.index['g']}"
    return name


class PlanPositions:
    """The plan's positions (grid tiles apart), from its events, by `position_name`."""

    def __init__(self, events: Iterable[useq.MDAEvent] = ()) -> None:
        self._base_of_p: dict[int, str] = {}  # plan index -> the position's own name
        self._first_of: dict[str, str] = {}  # the position's own name -> its first tile
        self._tile_of: dict[str, tuple[str, int | None]] = {}  # position -> (own name, g)
        for ev in events:
            self.add(ev)

    def add(self, event: useq.MDAEvent) -> str:
        """Take in one of the plan's events; return the name of the position it images."""
        p = event.index.get("p", 0)
        base = event.pos_name or f"p{p}"
        name = position_name(event)
        self._base_of_p.setdefault(p, base)
        self._first_of.setdefault(base, name)
        self._tile_of.setdefault(name, (base, event.index.get("g")))
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._tile_of

    def base_of(self, p: int) -> str | None:
        """Return the own name (no tile) of the plan's position with index ``p``, if any."""
        return self._base_of_p.get(p)

    def resolve(self, pos_name: str | None, p: int | None, g: int | None) -> str | None:
        """Return the plan position an added event means, or None if it means none.

        ``pos_name`` (or, without one, the plan index ``p``) names the
        position; ``g`` a tile of its grid. Without ``g``, a position imaged
        as a grid means its first tile.
        """
        base = pos_name or (self._base_of_p.get(p) if p is not None else None)
        if base is None:
            return None
        if g is not None:
            tile = f"{base}_g{g}"
            return tile if tile in self._tile_of else None
        return base if base in self._tile_of else self._first_of.get(base)

    def tile_of(self, position: str) -> tuple[str, int | None]:
        """Return a plan position's own name and grid tile (``A_g1`` → ``("A", 1)``)."""
        return self._tile_of[position]
