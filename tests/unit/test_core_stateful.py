"""Hypothesis drives the core through long histories against a deliberately simple model.

The model is the store as it will be once the current batch commits: a dict of ticket id ->
(status, agent) and a dict of agents, nothing clever. The fake store has the same shape and
holds only committed writes; "commit" replays the core's decisions on it through guarded
writes, as the actor does, and must then equal the model. A failed commit or a crash throws
the batch away and reloads the core from the store.

Profiles: HYPOTHESIS_PROFILE=ci (the default, >= 25,000 steps) or long (ten times more).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from dispatcher.core import (
    AgentState,
    DispatchCore,
    Fetched,
    Rejected,
    Released,
    Snapshot,
    Sold,
    TicketFact,
)

# Profile names are prefixed: a conftest may register its own "ci" (or other names: those
# run this test as "ci").
MIN_STEPS = {"ci": 25_000, "long": 250_000}
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
PROFILE = PROFILE if PROFILE in MIN_STEPS else "ci"
for _name, _examples in [("ci", 900), ("long", 9_000)]:
    settings.register_profile(
        f"dispatcher-core-{_name}",
        max_examples=_examples,
        stateful_step_count=50,
        deadline=None,
        database=None,  # keep .hypothesis/ out of the tree
        suppress_health_check=[HealthCheck.too_slow],
    )

Ticket = tuple[str, int | None]  # (status, agent id)
UNASSIGNED: Ticket = ("unassigned", None)
MAX_AGENTS = 4
ACTIVE = st.sampled_from([True, True, True, False])  # inactive agents decide little

steps_run = 0
F = TypeVar("F", bound=Callable[..., Any])


def counted(step: F) -> F:
    @functools.wraps(step)
    def run(*args: Any, **kwargs: Any) -> Any:
        global steps_run
        steps_run += 1
        return step(*args, **kwargs)

    return run  # type: ignore[return-value]


# ---------------------------------------------------------------- the model and the store


@dataclass
class Store:
    agents: dict[int, AgentState] = field(default_factory=dict)
    tickets: dict[int, Ticket] = field(default_factory=dict)

    def copy(self) -> Store:
        return Store(dict(self.agents), dict(self.tickets))

    def unassigned(self) -> list[int]:
        return sorted(t for t, ticket in self.tickets.items() if ticket == UNASSIGNED)

    def held(self, agent_id: int) -> list[int]:
        return sorted(t for t, ticket in self.tickets.items() if ticket == ("assigned", agent_id))

    def all_held(self) -> dict[int, tuple[int, ...]]:
        held = {a: tuple(self.held(a)) for a in self.agents}
        return {a: ids for a, ids in held.items() if ids}

    def fact(self, ticket_id: int) -> TicketFact:
        return TicketFact(*self.tickets[ticket_id])

    def snapshot(self, window_size: int) -> Snapshot:
        """What the actor's load() query returns: the oldest window of unassigned ids."""
        unassigned = self.unassigned()
        loaded = unassigned[:window_size]
        horizon = None if len(loaded) == len(unassigned) else loaded[-1]
        return Snapshot(
            agents=self.agents, held=self.all_held(), unassigned=loaded, horizon=horizon
        )


@dataclass(frozen=True)
class AgentWritten:
    agent_id: int
    state: AgentState


@dataclass(frozen=True)
class AgentDeleted:
    agent_id: int


@dataclass(frozen=True)
class TicketDeleted:
    ticket_id: int


Write = Fetched | Sold | Released | AgentWritten | AgentDeleted | TicketDeleted


def guard(store: Store, ticket_id: int, expected: Ticket) -> None:
    """A guarded write: the core must never decide what the store would refuse."""
    assert store.tickets.get(ticket_id) == expected, (ticket_id, store.tickets.get(ticket_id))


def apply(store: Store, write: Write) -> None:
    match write:
        case Fetched(agent_id=a, assigned=ids):
            for t in ids:
                guard(store, t, UNASSIGNED)
                store.tickets[t] = ("assigned", a)
        case Sold(agent_id=a, sold=ids, already_sold=done):
            for t in ids:
                guard(store, t, ("assigned", a))
                store.tickets[t] = ("sold", a)
            for t in done:
                guard(store, t, ("sold", a))
        case Released(agent_id=a, ticket_ids=ids):
            for t in ids:
                guard(store, t, ("assigned", a))
                store.tickets[t] = UNASSIGNED
        case AgentWritten(agent_id=a, state=state):
            store.agents[a] = state
        case AgentDeleted(agent_id=a):
            assert not store.held(a)
            del store.agents[a]
        case TicketDeleted(ticket_id=t):
            guard(store, t, UNASSIGNED)
            del store.tickets[t]


def expected_verdict(model: Store, agent_id: int, ticket_id: int) -> str:
    match model.tickets.get(ticket_id):
        case None:
            return "not_found"
        case ("unassigned", _):
            return "unassigned"
        case ("assigned", owner):
            return "sell" if owner == agent_id else "held_by_another_agent"
        case ("sold", owner):
            return "already_sold" if owner == agent_id else "sold_by_another_agent"
    raise AssertionError(ticket_id)


# ---------------------------------------------------------------- the machine


class DispatchMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = Store()
        self.model = Store()  # the store once the pending writes commit
        self.pending: list[Write] = []
        self.next_ticket = 1
        self.uncommitted_ids: list[int] = []  # handed out, not committed yet: late commits
        self.gone_since_load: set[int] = set()  # sold or deleted since the core last loaded
        self.next_agent = 1
        self.core: DispatchCore | None = None

    @initialize(
        window_size=st.one_of(st.integers(1, 10), st.just(100_000)),
        low_water=st.integers(0, 10),
        agents=st.lists(st.builds(AgentState, st.integers(0, 4), ACTIVE), min_size=1, max_size=3),
        tickets=st.integers(0, 12),
    )
    def start(
        self, window_size: int, low_water: int, agents: list[AgentState], tickets: int
    ) -> None:
        self.window_size = window_size
        self.low_water = min(low_water, window_size)
        for state in agents:
            self.store.agents[self.next_agent] = state
            self.next_agent += 1
        self.store.tickets = dict.fromkeys(range(1, tickets + 1), UNASSIGNED)
        self.next_ticket = tickets + 1
        self.model = self.store.copy()
        self.core = self.fresh_core()

    def fresh_core(self) -> DispatchCore:
        core = DispatchCore(window_size=self.window_size, low_water=self.low_water)
        core.load(self.store.snapshot(self.window_size))
        return core

    @property
    def c(self) -> DispatchCore:
        assert self.core is not None
        return self.core

    def decided(self, *writes: Write) -> None:
        self.pending.extend(writes)

    def any_agent(self, data: st.DataObject) -> int:
        """A known agent, active or not, or (less often) one the core has never heard of."""
        return data.draw(st.sampled_from([*sorted(self.model.agents) * 3, self.next_agent]))

    # ------------------------------------------------------------ outside the actor

    @rule(count=st.integers(1, 6), leave_a_gap=st.booleans())
    @counted
    def create_tickets(self, count: int, leave_a_gap: bool) -> None:
        if leave_a_gap:  # an insert that took its id but commits later
            self.uncommitted_ids.append(self.next_ticket)
            self.next_ticket += 1
        ids = list(range(self.next_ticket, self.next_ticket + count))
        self.next_ticket += count
        self.commit_tickets(ids)

    @precondition(lambda self: self.uncommitted_ids)
    @rule(data=st.data())
    @counted
    def commit_late_ticket(self, data: st.DataObject) -> None:
        ticket_id = data.draw(st.sampled_from(self.uncommitted_ids))
        self.uncommitted_ids.remove(ticket_id)
        self.commit_tickets([ticket_id])

    @rule(data=st.data())
    @counted
    def late_notification(self, data: st.DataObject) -> None:
        """A notification for a ticket memory already knows, or just sold or deleted."""
        held = {t for t, (status, _) in self.model.tickets.items() if status == "assigned"}
        known = sorted(self.gone_since_load | held | set(self.c.snapshot().unassigned))
        if known:
            self.c.tickets_added(data.draw(st.lists(st.sampled_from(known), max_size=3)))

    @precondition(lambda self: not self.pending and self.deleted_ids())
    @rule(data=st.data())
    @counted
    def reinsert_deleted_ticket(self, data: st.DataObject) -> None:
        """A deleted ticket's id inserted again by hand, read from the store (current)."""
        ticket_id = data.draw(st.sampled_from(self.deleted_ids()))
        self.store.tickets[ticket_id] = self.model.tickets[ticket_id] = UNASSIGNED
        self.gone_since_load.discard(ticket_id)
        self.c.tickets_added([ticket_id], current=True)

    def deleted_ids(self) -> list[int]:
        return sorted(
            t
            for t in range(1, self.next_ticket)
            if t not in self.store.tickets and t not in self.uncommitted_ids
        )

    def commit_tickets(self, ids: list[int]) -> None:
        for t in ids:
            self.store.tickets[t] = self.model.tickets[t] = UNASSIGNED
        self.c.tickets_added(ids)

    @precondition(lambda self: len(self.model.agents) < MAX_AGENTS)
    @rule(capacity=st.integers(0, 4), active=ACTIVE)
    @counted
    def create_agent(self, capacity: int, active: bool) -> None:
        agent_id, self.next_agent = self.next_agent, self.next_agent + 1
        state = AgentState(capacity, active)
        self.store.agents[agent_id] = self.model.agents[agent_id] = state
        self.c.register_agent(agent_id, state)

    # ------------------------------------------------------------ decisions

    @rule(data=st.data())
    @counted
    def fetch(self, data: st.DataObject) -> None:
        agent_id = self.any_agent(data)
        horizon = self.c.horizon
        decision = self.c.fetch(agent_id)

        state = self.model.agents.get(agent_id)
        if state is None or not state.active:
            assert decision == Rejected("unknown_agent" if state is None else "inactive_agent")
            return
        held = self.model.held(agent_id)
        room = max(0, state.capacity - len(held))
        # FIFO: the lowest unassigned ids the window covers (all of them with no horizon).
        waiting = [t for t in self.model.unassigned() if horizon is None or t <= horizon]
        assigned = waiting[:room]
        assert decision == Fetched(agent_id, tuple(sorted(held + assigned)), tuple(assigned))
        for t in assigned:
            self.model.tickets[t] = ("assigned", agent_id)
        self.decided(decision)

    @rule(data=st.data())
    @counted
    def sell_any(self, data: st.DataObject) -> None:
        known = set(self.store.tickets) | set(self.model.tickets)
        pool = sorted(known | {self.next_ticket + 100})  # and one that never existed
        self.sell(
            self.any_agent(data), data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4))
        )

    @precondition(lambda self: any(owner for _, owner in self.model.tickets.values()))
    @rule(data=st.data())
    @counted
    def sell_own(self, data: st.DataObject) -> None:
        """Held or already sold by the seller, with now and then someone else's."""
        owned = sorted(t for t, (_, owner) in self.model.tickets.items() if owner)
        agent_id = self.model.tickets[data.draw(st.sampled_from(owned))][1]
        assert agent_id is not None
        mine = [t for t in owned if self.model.tickets[t][1] == agent_id]
        ids = data.draw(st.lists(st.sampled_from(mine * 4 + owned), min_size=1, max_size=4))
        self.sell(agent_id, ids)

    def sell(self, agent_id: int, ticket_ids: list[int]) -> None:
        # The actor reads facts for what the core does not track, from the committed store.
        unknown = self.c.unknown_ticket_ids(ticket_ids)
        facts = {t: self.store.fact(t) for t in unknown if t in self.store.tickets}
        decision = self.c.sell(agent_id, ticket_ids, facts)

        state = self.model.agents.get(agent_id)
        if state is None or not state.active:
            assert decision == Rejected("unknown_agent" if state is None else "inactive_agent")
            return
        verdicts = {t: expected_verdict(self.model, agent_id, t) for t in set(ticket_ids)}
        refused = {t: v for t, v in verdicts.items() if v not in ("sell", "already_sold")}
        if refused:
            assert decision == Rejected("not_held", refused)
            return
        sold = tuple(sorted(t for t, v in verdicts.items() if v == "sell"))
        already = tuple(sorted(t for t, v in verdicts.items() if v == "already_sold"))
        assert decision == Sold(agent_id, sold, already)
        for t in sold:
            self.model.tickets[t] = ("sold", agent_id)
        self.gone_since_load.update(sold)
        self.decided(decision)

    @rule(data=st.data())
    @counted
    def release(self, data: st.DataObject) -> None:
        agent_id = self.any_agent(data)
        self.give_back(self.c.release(agent_id), self.model.held(agent_id))

    @rule(data=st.data(), capacity=st.integers(0, 4), active=ACTIVE)
    @counted
    def set_agent(self, data: st.DataObject, capacity: int, active: bool) -> None:
        agent_id = self.any_agent(data)
        state = AgentState(capacity, active)
        decision = self.c.set_agent(agent_id, state)
        if agent_id == self.next_agent:
            self.next_agent += 1
        self.model.agents[agent_id] = state
        # Deactivation gives everything back; a lower capacity the newest excess.
        self.give_back(decision, self.model.held(agent_id)[capacity if active else 0 :])
        self.decided(AgentWritten(agent_id, state))

    def give_back(self, decision: Released, expected: list[int]) -> None:
        assert decision.ticket_ids == tuple(expected)
        for t in expected:
            self.model.tickets[t] = UNASSIGNED
        self.decided(decision)

    @precondition(lambda self: any(s != "sold" for s, _ in self.model.tickets.values()))
    @rule(data=st.data())
    @counted
    def delete_ticket(self, data: st.DataObject) -> None:
        live = sorted(t for t, (status, _) in self.model.tickets.items() if status != "sold")
        ticket_id = data.draw(st.sampled_from(live))
        allowed = self.model.tickets[ticket_id] == UNASSIGNED
        assert self.c.ticket_removed(ticket_id) is allowed
        if allowed:
            del self.model.tickets[ticket_id]
            self.gone_since_load.add(ticket_id)
            self.decided(TicketDeleted(ticket_id))

    @precondition(lambda self: len(self.model.agents) > 1)
    @rule(data=st.data())
    @counted
    def forget_agent(self, data: st.DataObject) -> None:
        agent_id = data.draw(st.sampled_from(sorted(self.model.agents)))
        allowed = not self.model.held(agent_id)
        assert self.c.forget_agent(agent_id) is allowed
        if allowed:
            del self.model.agents[agent_id]
            self.decided(AgentDeleted(agent_id))

    # ------------------------------------------------------------ between batches

    @precondition(lambda self: not self.pending and self.c.refill_after() is not None)
    @rule(data=st.data())
    @counted
    def refill(self, data: st.DataObject) -> None:
        after = self.c.refill_after()
        assert after is not None
        above = [t for t in self.store.unassigned() if t > after]
        limit = data.draw(st.integers(0, self.window_size + 1))
        self.c.refilled(above[:limit], exhausted=len(above) <= limit)

    @precondition(lambda self: not self.pending)
    @rule(data=st.data())
    @counted
    def rescan(self, data: st.DataObject) -> None:
        unassigned = self.store.unassigned()
        count = data.draw(st.integers(min(1, len(unassigned)), self.window_size + 1))
        ids = unassigned[:count]
        self.c.queue_rescanned(ids, horizon=None if ids == unassigned else ids[-1])

    @rule()
    @counted
    def commit(self) -> None:
        for write in self.pending:
            apply(self.store, write)
        self.pending.clear()
        assert self.store == self.model

    @rule(crash=st.booleans())
    @counted
    def failed_commit(self, crash: bool) -> None:
        """The batch is lost; the same core reloads, or a new process starts from the store."""
        self.pending.clear()
        if crash:
            self.core = self.fresh_core()
        else:
            self.c.load(self.store.snapshot(self.window_size))
        self.model = self.store.copy()
        self.gone_since_load.clear()  # the core forgot them: a stale notification would revive
        assert self.c.snapshot() == self.store.snapshot(self.window_size)

    # ------------------------------------------------------------ after every step

    @precondition(lambda self: self.core is not None)
    @invariant()
    def memory_is_the_model(self) -> None:
        # snapshot() itself refuses a ticket in two places, over-capacity or inactive holdings,
        # an unsorted queue and queued ids above the horizon.
        snapshot = self.c.snapshot()
        assert snapshot.agents == self.model.agents
        assert snapshot.held == self.model.all_held()
        assert self.c.held_count == sum(map(len, snapshot.held.values()))
        # What the rescan asks: which of these ids memory says are held (every id known, in
        # descending order, so the answer must keep the order given).
        every_id = sorted(self.model.tickets, reverse=True)
        held_ids = {t for ids in snapshot.held.values() for t in ids}
        assert self.c.held_among(every_id) == [t for t in every_id if t in held_ids]
        horizon = snapshot.horizon
        # Window: exactly the unassigned ids up to the horizon, and no more than fits.
        covered = [t for t in self.model.unassigned() if horizon is None or t <= horizon]
        assert list(snapshot.unassigned) == covered
        assert self.c.queue_length == len(covered) <= self.window_size
        # And which queued ids the store no longer lists as unassigned: none while memory is
        # the model's; exactly those left out otherwise.
        assert self.c.queued_but_absent(self.model.unassigned(), up_to=None) == []
        left_out = covered[::2]
        listed = [t for t in self.model.unassigned() if t not in set(left_out)]
        assert self.c.queued_but_absent(listed, up_to=None) == left_out
        if covered:
            assert self.c.queued_but_absent(listed, up_to=covered[0] - 1) == []
        # A refill is asked for only when the store may have more and the queue has room.
        room = horizon is not None and len(covered) < self.window_size
        assert self.c.needs_refill(demand=10**9) is room
        rooms = [
            max(0, s.capacity - len(self.model.held(a)))
            for a, s in self.model.agents.items()
            if s.active
        ]
        assert self.c.demand([*self.model.agents, *self.model.agents, self.next_agent]) == sum(
            rooms
        )


def test_core_against_the_model() -> None:
    before = steps_run
    run_state_machine_as_test(
        DispatchMachine, settings=settings.get_profile(f"dispatcher-core-{PROFILE}")
    )
    assert steps_run - before >= MIN_STEPS[PROFILE], steps_run - before
