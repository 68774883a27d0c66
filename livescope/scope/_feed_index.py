"""The bookkeeping of the agent's event queue (`EventFeed`) that knows nothing of a run.

The keys of every event planned or added, kept compact (`PlannedKeys`), and
the queue's heap helpers: pure functions of the data the feed hands them,
called with its lock held.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Container

import useq

__all__ = ["PlannedKeys", "QueueEntry", "heap_remove", "next_plan_due"]


QueueEntry = tuple[float, int, useq.MDAEvent]
"""A queued event: (plan time it is due, order it was queued in, the event)."""


class PlannedKeys:
    """The `event_key` of every event planned or added, kept compact.

    A set of the keys took ~110 bytes an event (48 MB for 96 positions x
    1,500 time points x 3 channels): a tuple each, and the set's table. Here
    the time points of each (position, channel, z) are bits, one per t; a t
    far beyond those bits (a decision's event far ahead), or below 0, is kept
    as its key in a set, so that no t makes the bits grow large.
    """

    __slots__ = ("_bits", "_other")

    def __init__(self) -> None:
        self._bits: dict[tuple[str, str, int], bytearray] = {}
        self._other: set[tuple[str, int, str, int]] = set()

    def add(self, key: tuple[str, int, str, int]) -> None:
        pos, t, ch, z = key
        bits = self._bits.get((pos, ch, z))
        size = 0 if bits is None else len(bits)
        # (a plan's t come one after another: the bits grow a byte at a time, a
        # bytearray over-allocates, and a t up to twice as far as those known is a bit)
        if not 0 <= t >> 3 <= 2 * size + 16:
            self._other.add(key)
            return
        if bits is None:
            bits = self._bits[(pos, ch, z)] = bytearray()
        if t >> 3 >= size:
            bits.extend(bytes((t >> 3) + 1 - size))
        bits[t >> 3] |= 1 << (t & 7)

    def __contains__(self, key: tuple[str, int, str, int]) -> bool:
        pos, t, ch, z = key
        bits = self._bits.get((pos, ch, z))
        if bits is not None and 0 <= t >> 3 < len(bits) and bits[t >> 3] >> (t & 7) & 1:
            return True
        return key in self._other  # (one that came when the bits were shorter)


def heap_remove(heap: list[QueueEntry], entry: QueueEntry) -> None:
    """Take one entry out of a heap, which stays a heap.

    One search in C (`list.index`), then a walk of one branch: not a
    re-sort of the whole queue (`heapq.heapify`), nor a look at each event.
    """
    i = heap.index(entry)
    last = heap.pop()
    if i == len(heap):
        return
    # the last entry takes its place, then goes up or down to where it belongs
    while i > 0 and last < heap[(i - 1) // 2]:
        heap[i] = heap[(i - 1) // 2]
        i = (i - 1) // 2
    n = len(heap)
    while (child := 2 * i + 1) < n:
        if child + 1 < n and heap[child + 1] < heap[child]:
            child += 1
        if not heap[child] < last:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = last


def next_plan_due(heap: list[QueueEntry], added: Container[int]) -> float:
    """Return when the earliest plan event of ``heap`` is due, or infinity.

    ``added``: the order numbers of the queued events decisions added. A
    walk down the heap in order, past the added events ahead of it: a look
    at those few, not at every plan event.
    """
    todo = [(heap[0][0], heap[0][1], 0)] if heap else []
    while todo:
        due, order, i = heapq.heappop(todo)
        if order not in added:
            return due
        for child in (2 * i + 1, 2 * i + 2):  # (a heap's children are never due earlier)
            if child < len(heap):
                heapq.heappush(todo, (heap[child][0], heap[child][1], child))
    return math.inf
