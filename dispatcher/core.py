"""The dispatcher's pure state machine: which agent holds which ticket, and who gets what next.

Rules
=====

Rule 1: every decision about who gets, keeps or gives back a ticket is taken here. The actor
around this module (``dispatcher/actor.py``) feeds it commands and facts, writes its decisions
to the store, and never second-guesses them.

Rule 2: no I/O. No asyncio, no SQL, no logging, no clock, no randomness: the same calls in the
same order give the same decisions. That is what lets Hypothesis replay a whole history
against a model (``tests/unit/test_core_stateful.py``).

Theory of operation
===================

The actor drains its inbox in batches. For each command it asks this core to decide; the core
applies the decision to its memory at once and returns it as a value (``Fetched``, ``Sold``,
``Released``, ``Rejected``) that says everything the store needs to write it with a guarded
statement. The actor commits a whole batch in one transaction and only then replies. If the
commit fails, the actor calls ``load()`` with the store's state: memory is rebuilt from
scratch, so the core keeps no undo log. Memory is therefore always "the store plus the
uncommitted decisions of the current batch".

Memory holds three things:

* agents: capacity and whether they are active;
* holdings: per agent, the tickets assigned to it and not yet sold, kept sorted;
* the queue: unassigned tickets, sorted by id, at most ``window_size`` of them.

A store with millions of unassigned tickets does not fit in the queue, so memory is a window
over the oldest of them, bounded by the **horizon**: when ``horizon`` is ``None`` the queue
holds every unassigned ticket the store has; when it is an int, every unassigned id
``<= horizon`` is in the queue and ids above it may exist in the store but are not loaded.
When the queue runs low (``needs_refill``) the actor loads the next ids above the horizon
(``refill_after``) and hands them to ``refilled()``; a periodic ``queue_rescanned()``
replaces the queue with the store's view to heal anything a lost notification left out.
Both must be called with no uncommitted decision, and before any ``tickets_added()`` that
arrived while their query ran.

The store lags memory by one batch. To judge a sale of a ticket it no longer tracks, the core
remembers its own recent verdicts on tickets that left memory (sold, released above the
horizon, deleted) before it trusts the ``TicketFact``s the actor read from the store; the
same memory stops a late notification from reviving a ticket just sold or deleted. That
memory is bounded (``RECENT_DEPARTURES``), is not part of a ``Snapshot``, and is cleared by
``load()``, when the store has caught up.

Invariants
==========

1. No ticket is ever held by two agents; a ticket is in at most one place: the queue or one
   agent's holdings.
2. Order: a fetch tops an agent up with the lowest ids in the queue. A ticket that appears late
   with a lower id (a late commit) or is released goes to its id's place in the queue, so it
   goes out before every higher waiting id.
3. An agent never holds more than its capacity; an inactive agent holds nothing.
4. Memory window: the queue holds at most ``window_size`` ids, and with a finite horizon every
   unassigned id ``<= horizon`` is queued. An id above a finite horizon must never enter the
   queue: it would jump ahead of older ids that are not loaded. Such ids (added or released)
   are dropped from memory and stay unassigned in the store until a refill brings them. When
   the queue would overflow, its highest ids are dropped and the horizon lowered to the
   highest kept, so it stays a true bound.
   Holdings are kept whole, whatever the horizon.

A decision is only a proposal until the actor commits it: nothing here replies to anyone.

WARNING
-------

The actor's writes rely on these decisions being exact: ``Fetched.assigned`` and
``Sold.sold`` are written together by ``tickets_commit_batch``, ``Released`` by
``tickets_release_many_if_held`` (``storage/sql/dispatch.sql``). Keep those guards in sync
with this file: they are the fence if memory and store ever disagree, and a guard that
misses makes the actor reload.
"""

from __future__ import annotations

from bisect import insort
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Final

from dispatcher.ticket_queue import TicketQueue

# Enough to cover every uncommitted sale, release and deletion of one batch, by a wide margin.
RECENT_DEPARTURES: Final = 65_536

TICKET_STATUSES: Final = frozenset({"unassigned", "assigned", "sold"})
REJECT_REASONS: Final = frozenset({"unknown_agent", "inactive_agent", "not_held"})
NOT_HELD_REASONS: Final = frozenset(
    {"unassigned", "held_by_another_agent", "sold_by_another_agent", "not_found"}
)

# Verdicts of a sale that succeed; every other verdict is a NOT_HELD_REASONS entry.
SELL: Final = "sell"
ALREADY_SOLD: Final = "already_sold"

# (where the ticket is, is it the seller's?) -> verdict. Where comes from memory first, then
# the core's recent departures, then the store's facts; a missing entry is a bug, not a case.
SELL_VERDICTS: Final[Mapping[tuple[str, bool | None], str]] = {
    ("held", True): SELL,
    ("held", False): "held_by_another_agent",
    ("unassigned", None): "unassigned",
    ("assigned", False): "held_by_another_agent",
    # Memory wins: the store still shows a release that is not committed yet.
    ("assigned", True): "unassigned",
    ("sold", True): ALREADY_SOLD,
    ("sold", False): "sold_by_another_agent",
    ("gone", None): "not_found",
}


# ---------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class AgentState:
    capacity: int
    active: bool

    def __post_init__(self) -> None:
        if self.capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {self.capacity}")


@dataclass(frozen=True, slots=True)
class TicketFact:
    """What the store says of a ticket the core does not track."""

    status: str
    agent_id: int | None

    def __post_init__(self) -> None:
        if self.status not in TICKET_STATUSES:
            raise ValueError(f"unknown ticket status {self.status!r}")
        if (self.status == "unassigned") != (self.agent_id is None):
            raise ValueError(f"a {self.status} ticket with agent_id={self.agent_id}")


_UNASSIGNED: Final = TicketFact("unassigned", None)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole state, as the store loads it or as memory holds it.

    Normalised on construction (mappings become dicts, id lists become sorted tuples, agents
    holding nothing are left out of ``held``) so that two snapshots of the same state compare
    equal. Raises ValueError for a state that breaks an invariant.
    """

    agents: Mapping[int, AgentState]
    held: Mapping[int, Sequence[int]]
    unassigned: Sequence[int]
    horizon: int | None

    def __post_init__(self) -> None:
        held = {a: tuple(sorted(ids)) for a, ids in self.held.items() if ids}
        object.__setattr__(self, "agents", dict(self.agents))
        object.__setattr__(self, "held", held)
        object.__setattr__(self, "unassigned", tuple(self.unassigned))
        self._validate()

    def _validate(self) -> None:
        unassigned = self.unassigned
        _check_ascending(unassigned)
        if self.horizon is not None and unassigned and unassigned[-1] > self.horizon:
            raise ValueError(f"unassigned id {unassigned[-1]} is above the horizon")
        everywhere = [*unassigned, *(t for ids in self.held.values() for t in ids)]
        if len(everywhere) != len(set(everywhere)):
            raise ValueError("a ticket is in two places")
        for agent_id, ids in self.held.items():
            state = self.agents.get(agent_id)
            if state is None:
                raise ValueError(f"tickets held by unknown agent {agent_id}")
            _check_holdings(agent_id, state, len(ids))


def _check_holdings(agent_id: int, state: AgentState, count: int) -> None:
    if count > (state.capacity if state.active else 0):
        raise ValueError(f"agent {agent_id} cannot hold {count} tickets in state {state}")


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Fetched:
    agent_id: int
    held: tuple[int, ...]  # everything held after the top-up, ascending
    assigned: tuple[int, ...]  # the newly assigned part of it, ascending


@dataclass(frozen=True, slots=True)
class Sold:
    agent_id: int
    sold: tuple[int, ...]  # newly sold: to be written
    already_sold: tuple[int, ...]  # sold by this agent before: a retry, nothing to write


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: Mapping[int, str] = field(default_factory=dict)  # ticket id -> NOT_HELD_REASONS

    def __post_init__(self) -> None:
        if self.reason not in REJECT_REASONS:
            raise ValueError(f"unknown rejection reason {self.reason!r}")
        if not NOT_HELD_REASONS.issuperset(self.detail.values()):
            raise ValueError(f"unknown not-held reason in {self.detail}")
        object.__setattr__(self, "detail", dict(self.detail))


@dataclass(frozen=True, slots=True)
class Released:
    """Tickets given back: queued at their id's place, or dropped above the horizon.

    Either way they are unassigned in the store once written.
    """

    agent_id: int
    ticket_ids: tuple[int, ...]


# ---------------------------------------------------------------- the machine


class DispatchCore:
    def __init__(self, *, window_size: int = 100_000, low_water: int | None = None) -> None:
        """``window_size`` bounds the queue (memory); ``low_water`` defaults to half of it so
        that a refill happens well before fetches could drain the queue."""
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        low_water = window_size // 2 if low_water is None else low_water
        if not 0 <= low_water <= window_size:
            raise ValueError(f"low_water must be in [0, {window_size}], got {low_water}")
        self._window_size = window_size
        self.low_water = low_water
        self._agents: dict[int, AgentState] = {}
        # agent id -> its tickets, ascending: a plain list, as holdings are a capacity's worth
        self._held: dict[int, list[int]] = {}
        self._owner: dict[int, int] = {}
        self._queue = TicketQueue()
        self._horizon: int | None = None
        # ticket id -> its fate (None: deleted), for tickets that left memory by a decision
        # An OrderedDict, not a dict: evicting the oldest must be O(1), and a plain dict's
        # `next(iter(...))` slows down as deletions pile up at its front.
        self._departed: OrderedDict[int, TicketFact | None] = OrderedDict()

    # ------------------------------------------------------------ loading

    def load(self, snapshot: Snapshot) -> None:
        """Replace all state with the store's. Raises ValueError if it does not fit the window
        (the Snapshot itself refuses a ticket in two places and the other broken states)."""
        if len(snapshot.unassigned) > self._window_size:
            raise ValueError(f"{len(snapshot.unassigned)} unassigned ids exceed the window")
        self._agents = dict(snapshot.agents)
        self._held = {agent_id: [] for agent_id in self._agents}
        self._owner = {}
        for agent_id, ids in snapshot.held.items():
            self._hold(agent_id, ids)
        self._queue = TicketQueue(snapshot.unassigned)
        self._horizon = snapshot.horizon
        self._departed = OrderedDict()

    def snapshot(self) -> Snapshot:
        """Memory as a Snapshot; equal to the store's right after a load or a commit-and-reload."""
        return Snapshot(
            agents=self._agents,
            held={agent_id: tuple(ids) for agent_id, ids in self._held.items()},
            unassigned=tuple(self._queue),
            horizon=self._horizon,
        )

    # ------------------------------------------------------------ queries

    @property
    def window_size(self) -> int:
        return self._window_size

    @property
    def horizon(self) -> int | None:
        return self._horizon

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    @property
    def held_count(self) -> int:
        """Tickets assigned and not sold, over all agents."""
        return len(self._owner)

    def knows_agent(self, agent_id: int) -> bool:
        return agent_id in self._agents

    def holdings(self, agent_id: int) -> tuple[int, ...]:
        return tuple(self._held.get(agent_id, ()))

    def queued_but_absent(self, ids: Sequence[int], *, up_to: int | None) -> list[int]:
        """Queued ids (``<= up_to``, if given) that ``ids``, the store's unassigned ids, lacks:
        each left the queue in the store without a decision of ours."""
        present = set(ids)
        return [t for t in self._queue if (up_to is None or t <= up_to) and t not in present]

    def held_among(self, ids: Iterable[int]) -> list[int]:
        """Those of ``ids`` that memory says an agent holds, in the order given."""
        return [t for t in ids if t in self._owner]

    def unknown_ticket_ids(self, ids: Iterable[int]) -> set[int]:
        """Ids neither queued nor held: the ones a sale needs TicketFacts for."""
        return {t for t in ids if t not in self._owner and t not in self._queue}

    def demand(self, agent_ids: Iterable[int]) -> int:
        """How many tickets fetches by these agents could take (each agent counted once)."""
        return sum(self._room(a) for a in set(agent_ids) if self._check_agent(a) is None)

    def needs_refill(self, demand: int = 0) -> bool:
        """True if the store may have more and the queue is below low water plus demand.

        Capped at a full window: a refill cannot help a full queue, and asking for one would
        loop the actor.
        """
        wanted = min(self._window_size, self.low_water + demand)
        return self._horizon is not None and len(self._queue) < wanted

    def refill_after(self) -> int | None:
        """The id above which the actor should load more; None if the store has no more."""
        return self._horizon

    # ------------------------------------------------------------ store news

    def refilled(self, ids: Sequence[int], *, exhausted: bool) -> None:
        """The next unassigned ids above the horizon, ascending; ``exhausted`` if that is all.

        Raises ValueError if there was nothing to refill or the ids do not follow the horizon.
        """
        if self._horizon is None:
            raise ValueError("nothing to refill: the queue holds every unassigned ticket")
        _check_ascending(ids, above=self._horizon)
        self._queue.add_missing(t for t in ids if t not in self._owner)
        if exhausted:
            self._horizon = None
        elif ids:
            self._horizon = ids[-1]
        self._trim()

    def queue_rescanned(self, ids: Sequence[int], *, horizon: int | None) -> None:
        """Replace the queue with the store's view (ascending, all ``<= horizon``).

        Tickets held in memory are skipped: memory wins for holdings.
        """
        _check_ascending(ids)
        if horizon is not None and ids and ids[-1] > horizon:
            raise ValueError(f"rescanned id {ids[-1]} is above the horizon {horizon}")
        self._queue = TicketQueue(t for t in ids if t not in self._owner)
        self._horizon = horizon
        self._trim()

    def tickets_added(self, ids: Iterable[int], *, current: bool = False) -> None:
        """New unassigned tickets in the store. Ids already known or above the horizon are
        ignored; a late lower id takes its place ahead of higher waiting ids.

        A notification may be stale, so an id memory saw sold or deleted is not revived,
        unless `current`: the ids were read from the store after every decision was
        committed, so they are unassigned there now, and a remembered sale or deletion is
        out of date (the id was inserted again by hand; left out, newer tickets would go
        out first until the next rescan)."""
        if current:
            found = {t for t in ids if t not in self._owner}
            for t in found:
                self._departed.pop(t, None)
        else:
            found = {
                t for t in ids if t not in self._owner and self._fate(t) not in ("sold", "deleted")
            }
        self._enqueue(found)

    def ticket_removed(self, ticket_id: int) -> bool:
        """May this unassigned ticket be deleted? False if held or just sold; else forget it."""
        if ticket_id in self._owner or self._fate(ticket_id) == "sold":
            return False
        self._queue.discard(ticket_id)
        self._depart(ticket_id, None)
        return True

    # ------------------------------------------------------------ agents

    def register_agent(self, agent_id: int, state: AgentState, held: Sequence[int] = ()) -> None:
        """Learn an agent from the store. Raises ValueError if it is known already or its
        holdings clash with memory."""
        if agent_id in self._agents:
            raise ValueError(f"agent {agent_id} is known already")
        _check_holdings(agent_id, state, len(set(held)))
        clash = {t for t in held if t in self._owner or t in self._queue}
        if clash:
            raise ValueError(f"tickets {sorted(clash)} are already elsewhere in memory")
        self._agents[agent_id] = state
        self._held[agent_id] = []
        self._hold(agent_id, set(held))

    def set_agent(self, agent_id: int, state: AgentState) -> Released:
        """Change capacity or activity. Deactivation releases everything; a capacity below the
        holdings releases the newest excess. An unknown agent is registered."""
        if agent_id not in self._agents:
            self.register_agent(agent_id, state)
            return Released(agent_id, ())
        self._agents[agent_id] = state
        keep = state.capacity if state.active else 0
        return self._release(agent_id, tuple(self._held[agent_id][keep:]))

    def release(self, agent_id: int) -> Released:
        """Give all of an agent's tickets back (nothing for an unknown agent)."""
        return self._release(agent_id, self.holdings(agent_id))

    def forget_agent(self, agent_id: int) -> bool:
        """An agent was deleted. False, and nothing changes, while it holds tickets."""
        if self._held.get(agent_id):
            return False
        self._agents.pop(agent_id, None)
        self._held.pop(agent_id, None)
        return True

    # ------------------------------------------------------------ decisions

    def fetch(self, agent_id: int) -> Fetched | Rejected:
        """Top the agent up to its capacity with the lowest queued ids.

        At or over capacity nothing is assigned, so a retried fetch returns the same tickets.
        """
        rejected = self._check_agent(agent_id)
        if rejected is not None:
            return rejected
        assigned = self._queue.take_lowest(self._room(agent_id))
        self._hold(agent_id, assigned)
        return Fetched(agent_id, self.holdings(agent_id), assigned)

    def sell(
        self,
        agent_id: int,
        ticket_ids: Sequence[int],
        facts: Mapping[int, TicketFact] | None = None,
    ) -> Sold | Rejected:
        """Sell tickets the agent holds; all or nothing.

        ``facts`` are the store's view of ids in ``unknown_ticket_ids``. Ids the agent sold
        before succeed without a write (a retry is safe); any other id makes the whole sale a
        ``Rejected('not_held', {id: why})`` and changes nothing.
        """
        rejected = self._check_agent(agent_id)
        if rejected is not None:
            return rejected
        asked = sorted(set(ticket_ids))
        owner = self._owner
        sold: tuple[int, ...]
        already_sold: tuple[int, ...]
        if all(owner.get(t) == agent_id for t in asked):
            # The usual sale, every id held by the seller: no verdict table needed.
            sold, already_sold = tuple(asked), ()
        else:
            facts = facts or {}
            verdicts = {t: SELL_VERDICTS[self._where(agent_id, t, facts)] for t in asked}
            refused = {t: v for t, v in verdicts.items() if v not in (SELL, ALREADY_SOLD)}
            if refused:
                return Rejected("not_held", refused)
            sold = tuple(t for t, v in verdicts.items() if v == SELL)
            already_sold = tuple(t for t, v in verdicts.items() if v == ALREADY_SOLD)
        for t in sold:
            self._unhold(t)
        self._depart_all(sold, TicketFact("sold", agent_id))
        return Sold(agent_id, sold, already_sold)

    # ------------------------------------------------------------ internals

    def _check_agent(self, agent_id: int) -> Rejected | None:
        state = self._agents.get(agent_id)
        if state is None:
            return Rejected("unknown_agent")
        if not state.active:
            return Rejected("inactive_agent")
        return None

    def _room(self, agent_id: int) -> int:
        return max(0, self._agents[agent_id].capacity - len(self._held[agent_id]))

    def _where(
        self, agent_id: int, ticket_id: int, facts: Mapping[int, TicketFact]
    ) -> tuple[str, bool | None]:
        owner = self._owner.get(ticket_id)
        if owner is not None:
            return ("held", owner == agent_id)
        if ticket_id in self._queue:
            return ("unassigned", None)
        # Recent decisions first: the store's facts lag them until the batch commits.
        fact = self._departed[ticket_id] if ticket_id in self._departed else facts.get(ticket_id)
        if fact is None:
            return ("gone", None)
        if fact.agent_id is None:
            return (fact.status, None)
        return (fact.status, fact.agent_id == agent_id)

    def _hold(self, agent_id: int, ids: Iterable[int]) -> None:
        held = self._held[agent_id]
        owner = self._owner
        for t in ids:
            insort(held, t)
            owner[t] = agent_id

    def _unhold(self, ticket_id: int) -> None:
        self._held[self._owner.pop(ticket_id)].remove(ticket_id)

    def _release(self, agent_id: int, ids: tuple[int, ...]) -> Released:
        for t in ids:
            self._unhold(t)
        self._enqueue(ids)
        for t in ids:
            if t not in self._queue:  # above the horizon: the store keeps it unassigned
                self._depart(t, _UNASSIGNED)
        return Released(agent_id, ids)

    def _enqueue(self, ids: Iterable[int]) -> None:
        """Queue unassigned ids at their place, except those the window does not cover."""
        horizon = self._horizon
        self._queue.add_missing(t for t in ids if horizon is None or t <= horizon)
        self._trim()

    def _trim(self) -> None:
        """Keep the queue within the window by dropping the highest ids, lowering the horizon
        so that it still bounds what memory holds."""
        excess = len(self._queue) - self._window_size
        if excess > 0:
            for t in self._queue.drop_highest(excess):
                self._depart(t, _UNASSIGNED)  # the store may still show an uncommitted owner
            self._horizon = self._queue.highest()

    def _depart(self, ticket_id: int, fate: TicketFact | None) -> None:
        self._depart_all((ticket_id,), fate)

    def _depart_all(self, ticket_ids: Iterable[int], fate: TicketFact | None) -> None:
        departed = self._departed
        for t in ticket_ids:
            if t in departed:
                departed.move_to_end(t)  # newest last
            departed[t] = fate
        for _ in range(len(departed) - RECENT_DEPARTURES):
            departed.popitem(last=False)

    def _fate(self, ticket_id: int) -> str:
        """What a recent decision did to a ticket no longer in memory: 'sold', 'deleted', or
        'unassigned' (also when no decision is remembered)."""
        if ticket_id not in self._departed:
            return "unassigned"
        fate = self._departed[ticket_id]
        return "deleted" if fate is None else fate.status


def _check_ascending(ids: Sequence[int], *, above: int | None = None) -> None:
    if any(a >= b for a, b in pairwise(ids)):
        raise ValueError("ids must be strictly ascending")
    if above is not None and ids and ids[0] <= above:
        raise ValueError(f"id {ids[0]} is not above {above}")
