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
import time
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


async def fetch_once_served(dispatcher: Dispatcher, agent_id: int) -> list[dict]:
    """The agent's fetch, retried through 503s (bounded) while the dispatcher recovers."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await dispatcher.fetch(agent_id)
        except CommitFailed:
            assert time.monotonic() < deadline, "the dispatcher never served again"
            await asyncio.sleep(0.1)


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


async def test_a_load_blocked_by_a_lock_waits_it_out_and_keeps_leadership(
    start_dispatcher, make, db, other_session
):
    """Holdings cut by plain SQL are given back by the load; with one of them locked, that
    write failed, the failed load gave leadership up, and every next leader's load failed
    the same way: standby 503s, and epochs burnt, for as long as the lock lasted."""
    tickets = await make.tickets(6)
    holder, other = await make.agent(capacity=3), await make.agent(capacity=2)
    dispatcher = await start_dispatcher(QUICK_LOCK_WAIT)
    epoch = dispatcher.epoch
    assert [t["id"] for t in await dispatcher.fetch(holder.agent_id)] == tickets[:3]
    held_open = await lock_row(other_session, tickets[2])
    await db.execute("UPDATE agents SET capacity = 1 WHERE id = $1", holder.agent_id)

    deadline = time.monotonic() + 10
    while dispatcher.stats.row_lock_waits_given_up < 2:  # the change, then the load
        assert time.monotonic() < deadline, "the plain-SQL change never reached the leader"
        await asyncio.sleep(0.05)
    with pytest.raises(CommitFailed):
        await dispatcher.fetch(other.agent_id)
    assert dispatcher.blocked  # /readyz says blocked_by_lock

    await held_open.rollback()
    got = await fetch_once_served(dispatcher, other.agent_id)
    assert [t["id"] for t in got] == tickets[1:3]  # the excess went back, in its place
    assert not dispatcher.blocked
    assert [t["id"] for t in await dispatcher.fetch(holder.agent_id)] == tickets[:1]
    assert (dispatcher.epoch, dispatcher.stats.leadership_lost) == (epoch, 0)


async def test_locked_rows_waited_for_in_turn_fail_the_batch_not_leadership(
    start_dispatcher, make, database_url
):
    """lock_timeout bounds each wait, not their sum: four locked rows, each let go within
    the wait allowed, held a batch past the write timeout, and leadership was given up.
    The statement limit (below the write timeout) now fails the batch as a batch."""
    tickets = await make.tickets(6)
    agent = await make.agent(capacity=4)
    options = DispatcherOptions(row_lock_wait_s=1.5, write_timeout_s=3.0, rescan_interval_s=3600)
    dispatcher = await start_dispatcher(options)
    epoch = dispatcher.epoch
    sessions = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        held = [await lock_row(session, t) for session, t in zip(sessions, tickets, strict=False)]

        async def let_go_one_a_second() -> None:
            for transaction in held:
                await asyncio.sleep(1.0)
                await transaction.rollback()

        letting_go = asyncio.create_task(let_go_one_a_second())
        with pytest.raises(CommitFailed):
            await asyncio.wait_for(dispatcher.fetch(agent.agent_id), 10)
        await letting_go
    finally:
        for session in sessions:
            await session.close()

    assert (dispatcher.epoch, dispatcher.stats.leadership_lost) == (epoch, 0)
    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == tickets[:4]


async def test_the_report_names_a_lock_on_an_agent_row(start_dispatcher, make, other_session):
    """Assigning checks the agent exists (FOR KEY SHARE): an agent row locked FOR UPDATE
    blocks that agent's fetches, and the report named nobody."""
    tickets = await make.tickets(2)
    agent = await make.agent(capacity=2)
    dispatcher = await start_dispatcher(QUICK_LOCK_WAIT)
    transaction = other_session.transaction()
    await transaction.start()
    await other_session.execute("SELECT * FROM agents WHERE id = $1 FOR UPDATE", agent.agent_id)
    with structlog.testing.capture_logs() as logs, pytest.raises(CommitFailed):
        await asyncio.wait_for(dispatcher.fetch(agent.agent_id), 4)
    await transaction.rollback()

    (blocked,) = [e for e in logs if e["event"] == "batch_blocked_by_row_lock"]
    holders = blocked["lock_holders"]
    assert [(h["pid"], h["locked"]) for h in holders] == [
        (other_session.get_server_pid(), "agents")
    ]
    assert isinstance(holders[0]["xact_start"], str)
    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == tickets


async def test_a_locked_leadership_row_is_reported_while_the_new_leader_waits(
    start_dispatcher, database_url, other_session
):
    """The epoch claim waited for it in silence: a standby that had the advisory lock said
    nothing, and led only once the row was let go."""
    transaction = other_session.transaction()
    await transaction.start()
    await other_session.execute("SELECT * FROM dispatcher_leadership FOR UPDATE")
    waiting = Dispatcher(database_url, identity="waiting", options=QUICK_LOCK_WAIT)
    with structlog.testing.capture_logs() as logs:
        await waiting.start()
        try:
            deadline = time.monotonic() + 10
            while not any(e["event"] == "leadership_wait_failed" for e in logs):
                assert time.monotonic() < deadline, "nothing said why it does not lead"
                await asyncio.sleep(0.05)
            assert waiting.role != "leader"
            await transaction.rollback()
            await asyncio.wait_for(waiting.leading.wait(), 10)
        finally:
            await waiting.stop()
    failed = next(e for e in logs if e["event"] == "leadership_wait_failed")
    assert "lock timeout" in failed["error"]


async def test_a_malformed_admin_request_is_refused_and_the_leader_leads_on(start_dispatcher, db):
    dispatcher = await start_dispatcher(QUICK_LOCK_WAIT)
    epoch = dispatcher.epoch
    for agent_id in ("99999999999999999999999", "1e400", "-1", "true", '"7"'):
        payload = f'{{"id": "x", "op": "release", "agent_id": {agent_id}}}'
        await db.execute("SELECT pg_notify('dispatcher_admin', $1)", payload)
    await asyncio.sleep(0.5)
    assert (dispatcher.role, dispatcher.epoch, dispatcher.stats.leadership_lost) == (
        "leader",
        epoch,
        0,
    )


async def test_a_table_lock_met_while_preparing_a_batch_costs_503s_not_leadership(
    start_dispatcher, make, other_session
):
    """Preparing a batch reads (a new agent's holdings, a refill of the window); a table
    lock on tickets made that read give up, and leadership with it."""
    tickets = await make.tickets(3)
    dispatcher = await start_dispatcher(QUICK_LOCK_WAIT)
    epoch = dispatcher.epoch
    newcomer = await make.agent(capacity=2)  # unknown to memory: its first fetch reads
    transaction = other_session.transaction()
    await transaction.start()
    await other_session.execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")

    with pytest.raises(CommitFailed):
        await asyncio.wait_for(dispatcher.fetch(newcomer.agent_id), 4)

    await transaction.rollback()
    got = await fetch_once_served(dispatcher, newcomer.agent_id)
    assert [t["id"] for t in got] == tickets[:2]
    assert (dispatcher.epoch, dispatcher.stats.leadership_lost) == (epoch, 0)


async def test_a_rescan_met_by_a_table_lock_is_skipped_not_leadership(
    start_dispatcher, make, other_session
):
    tickets = await make.tickets(2)
    agent = await make.agent(capacity=2)
    options = DispatcherOptions(row_lock_wait_s=0.2, rescan_interval_s=0.3)
    dispatcher = await start_dispatcher(options)
    epoch = dispatcher.epoch
    transaction = other_session.transaction()
    await transaction.start()
    await other_session.execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
    deadline = time.monotonic() + 10
    while dispatcher.stats.row_lock_waits_given_up == 0:
        assert time.monotonic() < deadline, "no rescan met the lock"
        await asyncio.sleep(0.05)
    await transaction.rollback()

    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == tickets
    assert (dispatcher.epoch, dispatcher.stats.leadership_lost) == (epoch, 0)


async def test_an_admin_change_waiting_on_two_locks_in_turn_costs_503_not_leadership(
    start_dispatcher, make, database_url
):
    """A capacity change is two statements (the agent row, then the release of its excess),
    each allowed its own lock wait; together they outlasted the one write timeout the step
    had, and leadership was given up (a tester: epoch 17 -> 18)."""
    tickets = await make.tickets(3)
    agent = await make.agent(capacity=3)
    options = DispatcherOptions(row_lock_wait_s=1.5, write_timeout_s=2.0, rescan_interval_s=3600)
    dispatcher = await start_dispatcher(options)
    epoch = dispatcher.epoch
    assert [t["id"] for t in await dispatcher.fetch(agent.agent_id)] == tickets
    agent_row, ticket_row = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        # The ticket first: its update checks the agent exists (FOR KEY SHARE), which the
        # agent row's lock must not block (NO KEY UPDATE, as the capacity change takes).
        holding_ticket = await lock_row(ticket_row, tickets[2])
        holding_agent = agent_row.transaction()
        await holding_agent.start()
        await agent_row.execute(
            "SELECT * FROM agents WHERE id = $1 FOR NO KEY UPDATE", agent.agent_id
        )

        async def let_the_agent_go() -> None:
            await asyncio.sleep(1.2)
            await holding_agent.rollback()

        letting_go = asyncio.create_task(let_the_agent_go())
        with pytest.raises(CommitFailed):
            await asyncio.wait_for(dispatcher.update_agent(agent.agent_id, capacity=1), 15)
        await letting_go
        await holding_ticket.rollback()
    finally:
        await agent_row.close()
        await ticket_row.close()

    assert (dispatcher.epoch, dispatcher.stats.leadership_lost) == (epoch, 0)
    assert await dispatcher.update_agent(agent.agent_id, capacity=1) == [tickets[1], tickets[2]]
