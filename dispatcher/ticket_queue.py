"""The unassigned ticket ids, ascending, shaped for the one hot operation: take the lowest.

Almost everything the dispatcher does to its queue is "take the next n ids" (every fetch),
then "append ids above all of these" (every refill, most inserts). A sorted Python list with a
consumed prefix does both in C: taking is a slice and an offset bump, appending is `extend`.
The rare out-of-order id (a late commit, a released ticket) is a bisect and an insert: a
memmove of at most a window's worth of pointers. A general sorted container (sortedcontainers'
SortedList) paid a Python-level delete per ticket taken, which made it the dispatcher's
largest single cost under load.

Invariant: ``_ids[_head:]`` is strictly ascending and is the queue; ``_ids[:_head]`` is what
was taken and not yet cut off, and is never read.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import islice

# Cut the consumed prefix off once it is this long and at least half the list, so the
# memmove that does it is paid for by the takes that made it.
_COMPACT_AFTER = 4096


class TicketQueue:
    __slots__ = ("_head", "_ids")

    def __init__(self, ascending_ids: Iterable[int] = ()) -> None:
        """``ascending_ids`` must be strictly ascending (the core checks before it builds)."""
        self._ids: list[int] = list(ascending_ids)
        self._head = 0

    def __len__(self) -> int:
        return len(self._ids) - self._head

    def __iter__(self) -> Iterator[int]:
        return islice(self._ids, self._head, None)

    def __contains__(self, ticket_id: int) -> bool:
        ids = self._ids
        at = bisect_left(ids, ticket_id, self._head)
        return at < len(ids) and ids[at] == ticket_id

    def highest(self) -> int:
        """The highest queued id; IndexError when the queue is empty."""
        if self._head == len(self._ids):
            raise IndexError("the queue is empty")
        return self._ids[-1]

    def take_lowest(self, count: int) -> tuple[int, ...]:
        start = self._head
        stop = min(start + max(count, 0), len(self._ids))
        taken = tuple(self._ids[start:stop])
        self._head = stop
        if stop >= _COMPACT_AFTER and stop * 2 >= len(self._ids):
            del self._ids[:stop]
            self._head = 0
        return taken

    def add_missing(self, ticket_ids: Iterable[int]) -> None:
        """Queue each id at its place; ids already queued are left alone."""
        ids = self._ids
        added = sorted(set(ticket_ids))
        if added and (self._head == len(ids) or added[0] > ids[-1]):
            ids.extend(added)  # a refill: every id newer than everything queued, in one C call
            return
        for ticket_id in added:
            if self._head == len(ids) or ticket_id > ids[-1]:
                ids.append(ticket_id)  # the common case: newer than everything queued
                continue
            at = bisect_left(ids, ticket_id, self._head)
            if ids[at] != ticket_id:
                ids.insert(at, ticket_id)

    def discard(self, ticket_id: int) -> None:
        ids = self._ids
        at = bisect_left(ids, ticket_id, self._head)
        if at < len(ids) and ids[at] == ticket_id:
            del ids[at]

    def drop_highest(self, count: int) -> list[int]:
        """Remove and return the ``count`` highest ids, ascending."""
        if count <= 0:
            return []
        cut = max(len(self._ids) - count, self._head)
        dropped = self._ids[cut:]
        del self._ids[cut:]
        return dropped
