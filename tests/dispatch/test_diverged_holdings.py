"""A held ticket put back in the queue by plain SQL, behind the dispatcher's back.

Not a supported way to release tickets (the release endpoint and `tickets release` are), but
the dispatcher must heal from it rather than serve from a memory that disagrees with the
database: its holder's every fetch once answered 500, and the ticket, unassigned again,
was skipped while newer tickets went out, for as long as memory lasted.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from dispatcher.actor import DispatcherOptions
from dispatcher.errors import CommitFailed, Unavailable

# Soon enough for a test to wait for one; and never within a test.
RESCAN_SOON = DispatcherOptions(rescan_interval_s=0.5)
NO_RESCAN = DispatcherOptions(rescan_interval_s=3600)


async def put_back_by_sql(db, ticket_id: int) -> None:
    await db.execute(
        "UPDATE tickets SET status = 'unassigned', agent_id = NULL, assigned_at = NULL"
        " WHERE id = $1",
        ticket_id,
    )


async def test_the_holders_next_fetch_is_a_503_then_memory_is_the_databases(
    start_dispatcher, make, db
):
    tickets = await make.tickets(6)
    holder, other = await make.agent(capacity=3), await make.agent(capacity=3)
    dispatcher = await start_dispatcher(NO_RESCAN)
    held = [t["id"] for t in await dispatcher.fetch(holder.agent_id)]
    assert held == tickets[:3]
    await put_back_by_sql(db, tickets[0])

    with pytest.raises(CommitFailed):  # a 503: retry, never a 500
        await dispatcher.fetch(holder.agent_id)

    # Memory is the database's again: the put-back ticket is the oldest waiting, so the
    # holder's top-up takes it back before anything newer.
    assert [t["id"] for t in await dispatcher.fetch(holder.agent_id)] == tickets[:3]
    assert [t["id"] for t in await dispatcher.fetch(other.agent_id)] == tickets[3:6]


async def test_the_rescan_puts_the_ticket_back_in_its_place(start_dispatcher, make, db):
    """The holder need not come back: the periodic rescan notices, and the next fetcher gets
    the put-back ticket before every newer one."""
    tickets = await make.tickets(6)
    holder, other = await make.agent(capacity=3), await make.agent(capacity=2)
    dispatcher = await start_dispatcher(RESCAN_SOON)
    assert [t["id"] for t in await dispatcher.fetch(holder.agent_id)] == tickets[:3]
    reloads = dispatcher.stats.reloads
    await put_back_by_sql(db, tickets[1])

    deadline = time.monotonic() + 10
    while dispatcher.stats.reloads == reloads:
        assert time.monotonic() < deadline, "no rescan noticed the put-back ticket"
        await asyncio.sleep(0.05)

    assert [t["id"] for t in await dispatcher.fetch(other.agent_id)] == [tickets[1], tickets[3]]
    assert [t["id"] for t in await dispatcher.fetch(holder.agent_id)] == [
        tickets[0],
        tickets[2],
        tickets[4],
    ]


async def test_a_rescan_under_load_does_not_mistake_a_batch_decided_ahead(
    start_dispatcher, make, db
):
    """Assignments decided ahead are in memory before they are in the database: a rescan
    between two batches must not take them for divergence."""
    await make.tickets(3000)
    agents = [await make.agent(capacity=5) for _ in range(40)]
    dispatcher = await start_dispatcher(DispatcherOptions(rescan_interval_s=0.05))
    reloads = dispatcher.stats.reloads
    deadline = time.monotonic() + 3

    async def trade(agent_id: int) -> None:
        while time.monotonic() < deadline:
            held = [t["id"] for t in await dispatcher.fetch(agent_id)]
            if held:
                await dispatcher.sell(agent_id, held[:2])

    await asyncio.gather(*(trade(a.agent_id) for a in agents))
    assert dispatcher.stats.rescans > 5
    assert dispatcher.stats.reloads == reloads


async def test_a_sale_in_the_fetchs_own_batch_is_no_divergence(start_dispatcher, make, db):
    """A retried fetch and a sale of what it returns, sent together, share a batch: the fetch,
    decided first, answers with the ticket the sale then sells. Memory was right all along."""
    tickets = await make.tickets(4)
    agent = await make.agent(capacity=2)
    dispatcher = await start_dispatcher(NO_RESCAN)
    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == tickets[:2]
    reloads, batches = dispatcher.stats.reloads, dispatcher.stats.batches

    fetched, sold = await asyncio.gather(
        dispatcher.fetch(agent.agent_id), dispatcher.sell(agent.agent_id, [tickets[0]])
    )

    assert dispatcher.stats.batches == batches + 1  # one batch: the case under test
    assert [t["id"] for t in fetched] == tickets[:2]
    assert sold == [tickets[0]]
    assert dispatcher.stats.reloads == reloads
    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == [tickets[1], tickets[2]]


async def test_a_leader_fenced_by_a_hand_edited_epoch_leads_afresh(start_dispatcher, make, db):
    """Every write checks the stored epoch. Moved on by hand while this process holds the
    lock, it used to fail every write and reload, for ever; leading afresh claims a new one."""
    tickets = await make.tickets(4)
    agent = await make.agent(capacity=1)
    dispatcher = await start_dispatcher(NO_RESCAN)
    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == tickets[:1]
    await db.execute("UPDATE dispatcher_leadership SET epoch = epoch + 1")
    bumped = await db.fetchval("SELECT epoch FROM dispatcher_leadership")

    with pytest.raises(CommitFailed):
        await dispatcher.sell(agent.agent_id, tickets[:1])

    deadline = time.monotonic() + 10
    while True:
        try:
            assert await dispatcher.sell(agent.agent_id, tickets[:1]) == tickets[:1]
            break
        except Unavailable:  # 503: standing by a moment, as a leader that lost its lock does
            assert time.monotonic() < deadline, "still fenced"
            await asyncio.sleep(0.05)
    assert await db.fetchval("SELECT epoch FROM dispatcher_leadership") > bumped
    assert dispatcher.epoch > bumped
    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == tickets[1:2]


async def test_a_held_ticket_sold_by_sql_is_not_answered_as_held(start_dispatcher, make, db):
    """It came back in every fetch as assigned; now the fetch gets 503 and memory is the
    database's."""
    tickets = await make.tickets(4)
    agent = await make.agent(capacity=2)
    dispatcher = await start_dispatcher(NO_RESCAN)
    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == tickets[:2]
    await db.execute(
        "UPDATE tickets SET status = 'sold', sold_at = now() WHERE id = $1", tickets[0]
    )
    with pytest.raises(CommitFailed):
        await dispatcher.fetch(agent.agent_id)
    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == [tickets[1], tickets[2]]


async def test_the_rescan_learns_a_queued_ticket_assigned_by_sql(start_dispatcher, make, db):
    """Dropped from the queue without a word, it was held in the database by an agent whose
    fetches left it out, over its capacity, and which a release did not give back."""
    tickets = await make.tickets(6)
    agent = await make.agent(capacity=3)
    dispatcher = await start_dispatcher(RESCAN_SOON)
    reloads = dispatcher.stats.reloads
    await db.execute(
        "UPDATE tickets SET status = 'assigned', agent_id = $1, assigned_at = now() WHERE id = $2",
        agent.agent_id,
        tickets[4],
    )
    deadline = time.monotonic() + 10
    while dispatcher.stats.reloads == reloads:
        assert time.monotonic() < deadline, "no rescan noticed the hand-assigned ticket"
        await asyncio.sleep(0.05)
    # Memory knows the agent holds it: a fetch tops up to its capacity around it.
    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == [
        tickets[0],
        tickets[1],
        tickets[4],
    ]
    assert sorted(await dispatcher.release_agent(agent.agent_id)) == [
        tickets[0],
        tickets[1],
        tickets[4],
    ]


async def test_the_rescan_drops_a_queued_ticket_deleted_by_sql_without_a_reload(
    start_dispatcher, make, db
):
    tickets = await make.tickets(4)
    agent = await make.agent(capacity=2)
    dispatcher = await start_dispatcher(RESCAN_SOON)
    reloads, rescans = dispatcher.stats.reloads, dispatcher.stats.rescans
    await db.execute("DELETE FROM tickets WHERE id = $1", tickets[0])
    deadline = time.monotonic() + 10
    while dispatcher.stats.rescans < rescans + 2:
        assert time.monotonic() < deadline, "no rescan"
        await asyncio.sleep(0.05)
    assert dispatcher.stats.reloads == reloads
    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == tickets[1:3]


async def test_the_held_tickets_are_read_by_primary_key(db, make):
    """A join over an unnest of ids and agents was planned as a scan of the whole table, a
    stall of ~100 ms in every batch that reread held tickets (`make bench`'s p99 tripled)."""
    from storage.queries import QUERIES

    await make.tickets(20_000)
    await db.execute("ANALYZE tickets")
    await db.execute("SET plan_cache_mode = force_generic_plan")
    await db.execute(f"PREPARE payloads AS {QUERIES['tickets_payload_by_ids']}")
    plan = "\n".join(
        row[0] for row in await db.fetch("EXPLAIN EXECUTE payloads('{1,2,3}'::bigint[])")
    )
    assert "Seq Scan" not in plan, plan
    assert "tickets_pkey" in plan, plan


async def test_deleting_a_ticket_put_back_by_sql_answers_done_and_heals_memory(
    start_dispatcher, make, db
):
    """The delete is committed (the database had the ticket unassigned); it used to answer
    503, "nothing of it took effect", though the ticket was gone."""
    tickets = await make.tickets(4)
    holder, other = await make.agent(capacity=2), await make.agent(capacity=2)
    dispatcher = await start_dispatcher(NO_RESCAN)
    assert [t["id"] for t in await dispatcher.fetch(holder.agent_id)] == tickets[:2]
    await put_back_by_sql(db, tickets[0])
    reloads = dispatcher.stats.reloads

    await dispatcher.delete_ticket(tickets[0])  # no error: done

    assert await db.fetchval("SELECT count(*) FROM tickets WHERE id = $1", tickets[0]) == 0
    assert [t["id"] for t in await dispatcher.fetch(holder.agent_id)] == [tickets[1], tickets[2]]
    assert dispatcher.stats.reloads == reloads + 1  # before that fetch was decided
    assert [t["id"] for t in await dispatcher.fetch(other.agent_id)] == [tickets[3]]


async def test_a_deleted_tickets_id_inserted_again_goes_out_in_its_place(
    start_dispatcher, make, db
):
    """Memory remembered the id as deleted and ignored its insert until the next rescan
    (30 s), while newer tickets went out first."""
    tickets = await make.tickets(4)
    agent = await make.agent(capacity=2)
    dispatcher = await start_dispatcher(NO_RESCAN)
    await dispatcher.delete_ticket(tickets[0])
    await db.execute(
        "INSERT INTO tickets (id, title) OVERRIDING SYSTEM VALUE VALUES ($1, 'again')", tickets[0]
    )

    deadline = time.monotonic() + 10
    while dispatcher.queue_length < 4:
        assert time.monotonic() < deadline, "the insert never reached the queue"
        await asyncio.sleep(0.02)

    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == tickets[:2]
