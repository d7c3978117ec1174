"""A ticket row locked by another session (plain SQL left in an open transaction).

The dispatcher takes no row locks, but its guarded writes must wait for anyone else's. The
batch statement used to wait until the write timeout (5 s) gave leadership up, and the next
leader's first batch waited again: every agent stalled, and leadership churned, for as long
as the transaction stayed open. Now the wait is bounded below the write timeout: the batches
that touch the row answer 503 and are retried, the leader keeps leading, and once the lock
goes the ticket goes out in its place.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import structlog

from dispatcher.actor import Dispatcher, DispatcherOptions
from dispatcher.errors import CommitFailed

QUICK_LOCK_WAIT = DispatcherOptions(row_lock_wait_s=0.2)


@pytest.fixture
async def other_session(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def lock_row(session: asyncpg.Connection, ticket_id: int) -> asyncpg.transaction:
    transaction = session.transaction()
    await transaction.start()
    await session.execute("UPDATE tickets SET title = title WHERE id = $1", ticket_id)
    return transaction


async def test_a_locked_head_of_queue_answers_503_and_leadership_stays(
    start_dispatcher, make, other_session
):
    tickets = await make.tickets(4)
    agent = await make.agent(capacity=2)
    dispatcher = await start_dispatcher(QUICK_LOCK_WAIT)
    epoch = dispatcher.epoch
    held_open = await lock_row(other_session, tickets[0])

    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(CommitFailed):
                await asyncio.wait_for(dispatcher.fetch(agent.agent_id), 4)

    assert dispatcher.role == "leader"
    assert dispatcher.epoch == epoch
    assert dispatcher.stats.leadership_lost == 0
    assert dispatcher.stats.row_lock_waits_given_up == 3
    # The operator is told whose transaction to end.
    blocked = [e for e in logs if e["event"] == "batch_blocked_by_row_lock"]
    assert len(blocked) == 3
    assert [h["pid"] for h in blocked[0]["lock_holders"]] == [other_session.get_server_pid()]
    assert "UPDATE tickets" in blocked[0]["lock_holders"][0]["query"]

    await held_open.rollback()
    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == tickets[:2]


async def test_a_sale_of_a_locked_held_ticket_answers_503_and_then_sells(
    start_dispatcher, make, other_session
):
    tickets = await make.tickets(3)
    agent = await make.agent(capacity=3)
    dispatcher = await start_dispatcher(QUICK_LOCK_WAIT)
    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == tickets
    held_open = await lock_row(other_session, tickets[1])

    with pytest.raises(CommitFailed):
        await asyncio.wait_for(dispatcher.sell(agent.agent_id, tickets[:2]), 4)
    # All or nothing: the unlocked ticket of that sale was not sold either.
    assert await other_session.fetchval("SELECT count(*) FROM tickets WHERE status = 'sold'") == 0

    await held_open.commit()
    assert await dispatcher.sell(agent.agent_id, tickets[:2]) == tickets[:2]
    assert dispatcher.stats.leadership_lost == 0


async def test_the_leadership_lock_itself_is_still_awaited_without_limit(
    start_dispatcher, database_url, other_session
):
    """The bounded wait is for rows only: a standby waits for the advisory lock as long as
    the leader holds it, in one session (lock_timeout would end that wait too, and the
    standby would reconnect again and again)."""
    leader = await start_dispatcher(QUICK_LOCK_WAIT)
    standby = Dispatcher(database_url, identity="standby", options=QUICK_LOCK_WAIT)
    await standby.start()
    try:
        first = await waiting_for_advisory_lock(other_session)
        await asyncio.sleep(1.0)  # five times the row-lock wait
        assert await waiting_for_advisory_lock(other_session) == first
        assert standby.role == "standby"
        await leader.stop()
        await asyncio.wait_for(standby.leading.wait(), 10)
    finally:
        await standby.stop()


async def waiting_for_advisory_lock(session: asyncpg.Connection) -> int:
    """The pid of the one session waiting for an advisory lock (the standby)."""
    for _ in range(100):
        pids = await session.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
            " AND datname = current_database()"
        )
        if len(pids) == 1:
            return int(pids[0]["pid"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected one session waiting for the lock, saw {pids}")
