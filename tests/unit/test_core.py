"""One rule per test; each step asserts the core's whole state (``snapshot()``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

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

ACTIVE_2 = AgentState(capacity=2, active=True)
ACTIVE_3 = AgentState(capacity=3, active=True)
INACTIVE = AgentState(capacity=3, active=False)


def state(
    agents: Mapping[int, AgentState],
    held: Mapping[int, Sequence[int]] | None = None,
    unassigned: Sequence[int] = (),
    horizon: int | None = None,
) -> Snapshot:
    return Snapshot(agents=agents, held=held or {}, unassigned=unassigned, horizon=horizon)


def core_with(snapshot: Snapshot, *, window_size: int = 100, low_water: int = 0) -> DispatchCore:
    core = DispatchCore(window_size=window_size, low_water=low_water)
    core.load(snapshot)
    assert core.snapshot() == snapshot
    return core


# ---------------------------------------------------------------- fetch


def test_fetch_hands_out_lowest_ids_across_agents() -> None:
    agents = {1: ACTIVE_2, 2: ACTIVE_2}
    core = core_with(state(agents, unassigned=[1, 2, 3, 4, 5]))

    assert core.fetch(2) == Fetched(2, held=(1, 2), assigned=(1, 2))
    assert core.snapshot() == state(agents, {2: [1, 2]}, [3, 4, 5])

    assert core.fetch(1) == Fetched(1, held=(3, 4), assigned=(3, 4))
    assert core.snapshot() == state(agents, {2: [1, 2], 1: [3, 4]}, [5])
    assert (core.held_count, core.queue_length) == (4, 1)


def test_fetch_never_exceeds_capacity() -> None:
    agents = {1: ACTIVE_3}
    core = core_with(state(agents, {1: [1]}, [2, 3, 4, 5]))

    assert core.fetch(1) == Fetched(1, held=(1, 2, 3), assigned=(2, 3))
    assert core.snapshot() == state(agents, {1: [1, 2, 3]}, [4, 5])


def test_fetch_takes_what_is_left_when_the_queue_is_short() -> None:
    agents = {1: ACTIVE_3}
    core = core_with(state(agents, unassigned=[7]))

    assert core.fetch(1) == Fetched(1, held=(7,), assigned=(7,))
    assert core.fetch(1) == Fetched(1, held=(7,), assigned=())
    assert core.snapshot() == state(agents, {1: [7]})


def test_refetch_is_idempotent_then_tops_up() -> None:
    agents = {1: ACTIVE_2}
    core = core_with(state(agents, unassigned=[1, 2, 3, 4]))

    first = core.fetch(1)
    assert first == Fetched(1, held=(1, 2), assigned=(1, 2))
    assert core.fetch(1) == Fetched(1, held=first.held, assigned=())
    assert core.snapshot() == state(agents, {1: [1, 2]}, [3, 4])

    assert core.sell(1, [1]) == Sold(1, sold=(1,), already_sold=())
    assert core.fetch(1) == Fetched(1, held=(2, 3), assigned=(3,))
    assert core.snapshot() == state(agents, {1: [2, 3]}, [4])


@pytest.mark.parametrize(("agent_id", "reason"), [(9, "unknown_agent"), (2, "inactive_agent")])
def test_fetch_rejects_unknown_and_inactive_agents(agent_id: int, reason: str) -> None:
    before = state({1: ACTIVE_2, 2: INACTIVE}, unassigned=[1, 2])
    core = core_with(before)

    assert core.fetch(agent_id) == Rejected(reason)
    assert core.snapshot() == before


# ---------------------------------------------------------------- sell

# Agent 1 holds 10, 11; agent 2 holds 20; 30 is queued. The core does not track 40..44 (the
# horizon is 39); the store says:
SELL_FACTS = {
    40: TicketFact("sold", 1),
    41: TicketFact("sold", 2),
    42: TicketFact("assigned", 2),
    43: TicketFact("unassigned", None),
}  # and nothing of 44
SELL_AGENTS = {1: ACTIVE_3, 2: ACTIVE_3, 3: INACTIVE}
SELL_BEFORE = state(SELL_AGENTS, {1: [10, 11], 2: [20]}, [30], horizon=39)


@pytest.mark.parametrize(
    ("ticket_ids", "decision", "held_by_1"),
    [
        ([10], Sold(1, sold=(10,), already_sold=()), [11]),
        ([11, 10, 11], Sold(1, sold=(10, 11), already_sold=()), []),
        ([40, 10], Sold(1, sold=(10,), already_sold=(40,)), [11]),
        ([40], Sold(1, sold=(), already_sold=(40,)), [10, 11]),
        ([10, 20], Rejected("not_held", {20: "held_by_another_agent"}), [10, 11]),
        ([10, 30], Rejected("not_held", {30: "unassigned"}), [10, 11]),
        ([10, 41], Rejected("not_held", {41: "sold_by_another_agent"}), [10, 11]),
        ([10, 42], Rejected("not_held", {42: "held_by_another_agent"}), [10, 11]),
        ([10, 43], Rejected("not_held", {43: "unassigned"}), [10, 11]),
        ([10, 44], Rejected("not_held", {44: "not_found"}), [10, 11]),
        (
            [44, 30, 11],
            Rejected("not_held", {30: "unassigned", 44: "not_found"}),
            [10, 11],
        ),
    ],
)
def test_sell_is_all_or_nothing(
    ticket_ids: list[int], decision: Sold | Rejected, held_by_1: list[int]
) -> None:
    core = core_with(SELL_BEFORE)
    assert core.unknown_ticket_ids(ticket_ids) == {t for t in ticket_ids if t >= 40}

    assert core.sell(1, ticket_ids, SELL_FACTS) == decision
    assert core.snapshot() == state(SELL_AGENTS, {1: held_by_1, 2: [20]}, [30], horizon=39)


@pytest.mark.parametrize(("agent_id", "reason"), [(9, "unknown_agent"), (3, "inactive_agent")])
def test_sell_rejects_unknown_and_inactive_agents(agent_id: int, reason: str) -> None:
    core = core_with(SELL_BEFORE)

    assert core.sell(agent_id, [40], SELL_FACTS) == Rejected(reason)
    assert core.snapshot() == SELL_BEFORE


def test_sell_trusts_its_own_uncommitted_decisions_over_stale_facts() -> None:
    # The store has not seen this batch: it still says 10 and 11 are assigned to agent 1.
    stale = {10: TicketFact("assigned", 1), 11: TicketFact("assigned", 1)}
    agents = {1: ACTIVE_3, 2: ACTIVE_3}
    core = core_with(state(agents, {1: [10, 11]}, [5], horizon=9))

    assert core.sell(1, [10]) == Sold(1, sold=(10,), already_sold=())
    assert core.sell(1, [10], stale) == Sold(1, sold=(), already_sold=(10,))
    assert core.sell(2, [10], stale) == Rejected("not_held", {10: "sold_by_another_agent"})
    assert core.release(1) == Released(1, (11,))  # above the horizon: dropped from memory
    assert core.sell(2, [11], stale) == Rejected("not_held", {11: "unassigned"})
    assert core.snapshot() == state(agents, {}, [5], horizon=9)


# ---------------------------------------------------------------- order


def test_released_tickets_go_out_before_newer_waiting_ids() -> None:
    agents = {1: ACTIVE_2, 2: ACTIVE_2}
    core = core_with(state(agents, {1: [2, 3]}, [5, 6]))

    assert core.release(1) == Released(1, (2, 3))
    assert core.snapshot() == state(agents, {}, [2, 3, 5, 6])
    assert core.fetch(2) == Fetched(2, held=(2, 3), assigned=(2, 3))
    assert core.snapshot() == state(agents, {2: [2, 3]}, [5, 6])


def test_late_lower_id_goes_first() -> None:
    agents = {1: ACTIVE_2}
    core = core_with(state(agents, unassigned=[5, 6]))

    core.tickets_added([3, 7])
    assert core.snapshot() == state(agents, {}, [3, 5, 6, 7])
    assert core.fetch(1) == Fetched(1, held=(3, 5), assigned=(3, 5))
    assert core.snapshot() == state(agents, {1: [3, 5]}, [6, 7])


def test_tickets_added_ignores_known_and_sold_ids() -> None:
    agents = {1: ACTIVE_2}
    core = core_with(state(agents, {1: [1, 2]}, [3]))
    assert core.sell(1, [1]) == Sold(1, sold=(1,), already_sold=())

    core.tickets_added([1, 2, 3, 3, 4])  # 1 sold, 2 held, 3 queued: late notifications
    assert core.snapshot() == state(agents, {1: [2]}, [3, 4])


# ---------------------------------------------------------------- horizon and window


def test_ids_above_the_horizon_are_dropped() -> None:
    agents = {1: ACTIVE_3}
    core = core_with(state(agents, {1: [9]}, [5, 6], horizon=6))

    core.tickets_added([4, 7])
    assert core.snapshot() == state(agents, {1: [9]}, [4, 5, 6], horizon=6)

    assert core.release(1) == Released(1, (9,))  # unassigned in the store, not in memory
    assert core.snapshot() == state(agents, {}, [4, 5, 6], horizon=6)
    assert core.unknown_ticket_ids([6, 7, 9]) == {7, 9}


def test_tickets_added_beyond_the_window_lower_the_horizon() -> None:
    agents = {1: ACTIVE_2}
    core = core_with(state(agents, unassigned=[2, 4]), window_size=3)

    core.tickets_added([5, 6])
    assert core.snapshot() == state(agents, {}, [2, 4, 5], horizon=5)
    core.tickets_added([1])
    assert core.snapshot() == state(agents, {}, [1, 2, 4], horizon=4)


def test_release_beyond_the_window_lowers_the_horizon() -> None:
    agents = {1: ACTIVE_2}
    core = core_with(state(agents, {1: [1, 8]}, [3, 5, 7], horizon=9), window_size=3)

    assert core.release(1) == Released(1, (1, 8))
    assert core.snapshot() == state(agents, {}, [1, 3, 5], horizon=5)


@pytest.mark.parametrize(
    ("horizon", "queued", "low_water", "demand", "needed"),
    [
        (None, 0, 2, 5, False),  # nothing more in the store
        (9, 1, 2, 0, True),
        (9, 2, 2, 0, False),
        (9, 2, 2, 1, True),
        (9, 4, 2, 9, False),  # the queue is full: a refill cannot help
    ],
)
def test_needs_refill(
    horizon: int | None, queued: int, low_water: int, demand: int, needed: bool
) -> None:
    snapshot = state({}, unassigned=range(1, queued + 1), horizon=horizon)
    core = core_with(snapshot, window_size=4, low_water=low_water)

    assert core.needs_refill(demand) is needed
    assert core.refill_after() == horizon


@pytest.mark.parametrize(
    ("ids", "exhausted", "after"),
    [
        ([4, 6], False, state({}, unassigned=[1, 3, 4, 6], horizon=6)),
        ([4, 6], True, state({}, unassigned=[1, 3, 4, 6])),
        ([], False, state({}, unassigned=[1, 3], horizon=3)),
        ([], True, state({}, unassigned=[1, 3])),
        ([4, 6, 7, 8], False, state({}, unassigned=[1, 3, 4, 6, 7], horizon=7)),
        ([4, 6, 7, 8], True, state({}, unassigned=[1, 3, 4, 6, 7], horizon=7)),
    ],
)
def test_refilled(ids: list[int], exhausted: bool, after: Snapshot) -> None:
    core = core_with(state({}, unassigned=[1, 3], horizon=3), window_size=5)

    core.refilled(ids, exhausted=exhausted)
    assert core.snapshot() == after


@pytest.mark.parametrize(("horizon", "ids"), [(None, [4]), (3, [3, 4]), (3, [5, 4]), (3, [4, 4])])
def test_refilled_refuses_ids_that_do_not_follow_the_horizon(
    horizon: int | None, ids: list[int]
) -> None:
    before = state({}, unassigned=[1, 3], horizon=horizon)
    core = core_with(before)

    with pytest.raises(ValueError):
        core.refilled(ids, exhausted=False)
    assert core.snapshot() == before


def test_queue_rescanned_replaces_the_queue_but_memory_wins_for_holdings() -> None:
    agents = {1: ACTIVE_2}
    core = core_with(state(agents, {1: [2]}, [4, 5], horizon=5), window_size=3)

    core.queue_rescanned([1, 2, 3, 6, 7], horizon=None)
    assert core.snapshot() == state(agents, {1: [2]}, [1, 3, 6], horizon=6)
    with pytest.raises(ValueError):
        core.queue_rescanned([1, 8], horizon=7)


# ---------------------------------------------------------------- agents


@pytest.mark.parametrize(
    ("new_state", "released", "held", "queue"),
    [
        (AgentState(1, True), (4, 6), [2], [3, 4, 5, 6]),  # the newest excess goes back
        (AgentState(3, True), (), [2, 4, 6], [3, 5]),
        (AgentState(5, True), (), [2, 4, 6], [3, 5]),
        (AgentState(0, True), (2, 4, 6), [], [2, 3, 4, 5, 6]),
        (AgentState(5, False), (2, 4, 6), [], [2, 3, 4, 5, 6]),  # deactivation: all go back
    ],
)
def test_set_agent_releases_what_no_longer_fits(
    new_state: AgentState, released: tuple[int, ...], held: list[int], queue: list[int]
) -> None:
    core = core_with(state({1: ACTIVE_3}, {1: [2, 4, 6]}, [3, 5]))

    assert core.set_agent(1, new_state) == Released(1, released)
    assert core.snapshot() == state({1: new_state}, {1: held}, queue)


def test_deactivated_agent_is_refused_until_reactivated() -> None:
    core = core_with(state({1: ACTIVE_2}, {1: [1]}, [2, 3]))

    assert core.set_agent(1, INACTIVE) == Released(1, (1,))
    assert core.fetch(1) == Rejected("inactive_agent")
    assert core.demand([1]) == 0
    assert core.snapshot() == state({1: INACTIVE}, {}, [1, 2, 3])

    assert core.set_agent(1, ACTIVE_2) == Released(1, ())
    assert core.fetch(1) == Fetched(1, held=(1, 2), assigned=(1, 2))
    assert core.snapshot() == state({1: ACTIVE_2}, {1: [1, 2]}, [3])


def test_set_agent_registers_an_unknown_agent() -> None:
    core = core_with(state({}, unassigned=[1]))

    assert core.set_agent(4, ACTIVE_2) == Released(4, ())
    assert core.knows_agent(4)
    assert core.snapshot() == state({4: ACTIVE_2}, {}, [1])


def test_register_agent_takes_the_stores_holdings() -> None:
    core = core_with(state({1: ACTIVE_2}, {1: [1]}, [2], horizon=5))

    core.register_agent(2, ACTIVE_3, held=[9, 7])
    assert core.snapshot() == state({1: ACTIVE_2, 2: ACTIVE_3}, {1: [1], 2: [7, 9]}, [2], 5)
    for agent_id, agent_state, held in [
        (2, ACTIVE_3, []),  # known already
        (3, ACTIVE_3, [1]),  # held by agent 1
        (3, ACTIVE_3, [2]),  # queued
        (3, ACTIVE_2, [10, 11, 12]),  # over capacity
        (3, INACTIVE, [10]),  # an inactive agent holds nothing
    ]:
        with pytest.raises(ValueError):
            core.register_agent(agent_id, agent_state, held)
    assert core.snapshot() == state({1: ACTIVE_2, 2: ACTIVE_3}, {1: [1], 2: [7, 9]}, [2], 5)


def test_forget_agent_refuses_while_it_holds_tickets() -> None:
    core = core_with(state({1: ACTIVE_2, 2: ACTIVE_2}, {1: [1]}, [2]))

    assert core.forget_agent(1) is False
    assert core.forget_agent(2) is True
    assert core.forget_agent(3) is True
    assert core.snapshot() == state({1: ACTIVE_2}, {1: [1]}, [2])
    assert core.fetch(2) == Rejected("unknown_agent")


def test_demand_counts_each_known_active_agent_once() -> None:
    agents = {1: ACTIVE_3, 2: ACTIVE_2, 3: INACTIVE, 4: AgentState(1, True)}
    core = core_with(state(agents, {1: [1], 4: [2]}))

    assert core.demand([1, 1, 2, 3, 4, 9]) == 2 + 2 + 0 + 0


# ---------------------------------------------------------------- deletion


def test_ticket_removed() -> None:
    agents = {1: ACTIVE_3}
    core = core_with(state(agents, {1: [1, 2]}, [3, 4], horizon=5))
    assert core.sell(1, [2]) == Sold(1, sold=(2,), already_sold=())

    assert [core.ticket_removed(t) for t in [1, 2, 3, 9]] == [False, False, True, True]
    assert core.snapshot() == state(agents, {1: [1]}, [4], horizon=5)
    core.tickets_added([3])  # a late notification does not revive a deleted ticket
    assert core.sell(1, [3], {3: TicketFact("unassigned", None)}) == Rejected(
        "not_held", {3: "not_found"}
    )
    assert core.snapshot() == state(agents, {1: [1]}, [4], horizon=5)


# ---------------------------------------------------------------- loading and values


@pytest.mark.parametrize(
    ("agents", "held", "unassigned", "horizon"),
    [
        ({1: ACTIVE_2}, {1: [1]}, [1], None),  # queued and held
        ({1: ACTIVE_2, 2: ACTIVE_2}, {1: [1], 2: [1]}, [], None),  # held twice
        ({1: ACTIVE_2}, {1: [1, 1]}, [], None),
        ({}, {}, [2, 1], None),  # not ascending
        ({}, {}, [1, 1], None),
        ({}, {}, [1, 7], 6),  # above the horizon
        ({}, {1: [1]}, [], None),  # held by an unknown agent
        ({1: ACTIVE_2}, {1: [1, 2, 3]}, [], None),  # over capacity
        ({1: INACTIVE}, {1: [1]}, [], None),  # inactive yet holding
    ],
)
def test_snapshot_refuses_broken_states(
    agents: dict[int, AgentState],
    held: dict[int, list[int]],
    unassigned: list[int],
    horizon: int | None,
) -> None:
    with pytest.raises(ValueError):
        Snapshot(agents=agents, held=held, unassigned=unassigned, horizon=horizon)


def test_load_refuses_a_queue_larger_than_the_window_and_keeps_its_state() -> None:
    before = state({1: ACTIVE_2}, {1: [9]}, [1, 2])
    core = core_with(before, window_size=2)

    with pytest.raises(ValueError):
        core.load(state({}, unassigned=[1, 2, 3]))
    assert core.snapshot() == before


def test_load_replaces_everything() -> None:
    core = core_with(state({1: ACTIVE_2}, {1: [9]}, [1, 2]))
    assert core.fetch(1) == Fetched(1, held=(1, 9), assigned=(1,))

    fresh = state({2: ACTIVE_3}, {2: [4]}, [5], horizon=5)
    core.load(fresh)
    assert core.snapshot() == fresh
    assert not core.knows_agent(1)
    assert core.holdings(1) == ()


def test_snapshots_of_the_same_state_compare_equal() -> None:
    from_store = Snapshot(
        agents={1: ACTIVE_2, 2: ACTIVE_2}, held={1: [3, 1], 2: []}, unassigned=[4], horizon=None
    )
    assert from_store == state({1: ACTIVE_2, 2: ACTIVE_2}, {1: (1, 3)}, (4,))


@pytest.mark.parametrize(
    "make",
    [
        lambda: AgentState(capacity=-1, active=True),
        lambda: TicketFact("lost", None),
        lambda: TicketFact("sold", None),
        lambda: TicketFact("unassigned", 1),
        lambda: Rejected("nope"),
        lambda: Rejected("not_held", {1: "nope"}),
        lambda: DispatchCore(window_size=0),
        lambda: DispatchCore(window_size=4, low_water=5),
    ],
)
def test_invalid_values_never_exist(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_low_water_defaults_to_half_the_window() -> None:
    assert DispatchCore(window_size=10).low_water == 5
    assert DispatchCore().window_size == 100_000
