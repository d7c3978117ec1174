"""What migration 0004 promises in place of the row-level foreign key and the per-ticket audit
table: the old log survives regrouping unchanged, a ticket never names a missing agent, and a
referenced agent is never deleted, renumbered or truncated, also under concurrent writers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest
from asyncpg.exceptions import ForeignKeyViolationError, RestrictViolationError

from storage.migrate import available, migrate
from tests.support.factories import Factory

WAIT_S = 10
CONSTRAINT = "tickets_agent_id_fkey"

ASSIGN = "UPDATE tickets SET status = 'assigned', agent_id = $2, assigned_at = now() WHERE id = $1"


@pytest.fixture
async def pair(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    """Two more sessions on the test database, for the races; `db` stays free to observe."""
    first = await asyncpg.connect(database_url)
    second = await asyncpg.connect(database_url)
    yield first, second
    # terminate(): after a failed assertion one of them may still be blocked in a query.
    for connection in (first, second):
        connection.terminate()


async def _apply_up_to(dsn: str, last: str) -> None:
    """What storage.migrate.migrate does, stopping after `last`."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, sql in available():
            if version > last:
                break
            async with connection.transaction():
                await connection.execute(sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)", version
                )
    finally:
        await connection.close()


async def _tickets(db: asyncpg.Connection) -> list[tuple]:
    rows = await db.fetch(
        "SELECT id, status, agent_id, assigned_at, sold_at FROM tickets ORDER BY id"
    )
    return [tuple(row) for row in rows]


async def _agent_ids(db: asyncpg.Connection) -> list[int]:
    return [row["id"] for row in await db.fetch("SELECT id FROM agents ORDER BY id")]


async def _missing_agent_id(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT coalesce(max(id), 0) + 1000 FROM agents"))


async def _hold(db: asyncpg.Connection, ticket: int, agent: int, *, sold: bool = False) -> None:
    await db.execute(
        "UPDATE tickets SET status = $3, agent_id = $2, assigned_at = now(),"
        " sold_at = CASE WHEN $3 = 'sold' THEN now() END WHERE id = $1",
        ticket,
        agent,
        "sold" if sold else "assigned",
    )


async def _blocked_on_a_lock(db: asyncpg.Connection, pid: int) -> None:
    while True:
        waiting = await db.fetchval(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
        )
        if waiting == "Lock":
            return
        await asyncio.sleep(0.02)


async def _assert_blocked(db: asyncpg.Connection, task: asyncio.Task, pid: int) -> None:
    await asyncio.wait_for(_blocked_on_a_lock(db, pid), WAIT_S)
    await asyncio.sleep(0.3)
    assert not task.done(), "the statement should wait for the other transaction"


# 1 -- the audit log survives regrouping ------------------------------------------------


async def test_the_per_ticket_log_reads_back_unchanged_after_regrouping(empty_database):
    await _apply_up_to(empty_database, "0003_ticket_events_at")
    connection = await asyncpg.connect(empty_database)
    try:
        make = Factory(connection)
        one, two = await make.agent(), await make.agent()
        t1, t2, t3, t4, t5, t6 = await make.tickets(6)
        a, b = one.agent_id, two.agent_id
        # Interleaved agents inside a batch, and a later epoch reusing batch number 7 with
        # an (event, agent) already seen there: grouping must not merge across epochs, and
        # the order must follow the log rather than the batch numbers.
        log = [
            (t1, "assigned", a, 1, 7),
            (t4, "assigned", b, 1, 7),
            (t2, "assigned", a, 1, 7),
            (t5, "assigned", b, 1, 7),
            (t3, "assigned", a, 1, 7),
            (t1, "sold", a, 1, 8),
            (t4, "released", b, 1, 8),
            (t2, "sold", a, 1, 8),
            (t6, "deleted", None, 1, 8),
            (t4, "deleted", None, 1, 8),
            (t3, "released", a, 2, 7),
            (t5, "sold", b, 2, 7),
            (t3, "assigned", b, 2, 7),
        ]
        await connection.executemany(
            "INSERT INTO ticket_events (ticket_id, event, agent_id, epoch, batch)"
            " VALUES ($1, $2, $3, $4, $5)",
            log,
        )
        assert await connection.fetchval("SELECT count(*) FROM ticket_events") == len(log)
    finally:
        await connection.close()

    versions = [version for version, _ in available()]
    later = versions[versions.index("0003_ticket_events_at") + 1 :]
    assert await migrate(empty_database) == later

    connection = await asyncpg.connect(empty_database)
    try:
        view = await connection.fetch(
            "SELECT id, ticket_id, event, agent_id, epoch, batch FROM ticket_events"
            " ORDER BY id, ticket_id"
        )
        groups = await connection.fetch(
            "SELECT id, ticket_ids, event, agent_id, epoch, batch FROM ticket_event_groups"
            " ORDER BY id"
        )
        is_view = await connection.fetchval(
            "SELECT true FROM pg_views WHERE schemaname = 'public' AND viewname = 'ticket_events'"
        )
    finally:
        await connection.close()

    assert is_view
    assert Counter(tuple(row)[1:] for row in view) == Counter(log)

    def key(row) -> tuple:
        return (row["epoch"], row["batch"], row["event"], row["agent_id"])

    keys_in_log_order = list(dict.fromkeys((e, bt, ev, ag) for _, ev, ag, e, bt in log))
    assert [key(g) for g in groups] == keys_in_log_order
    expected_ids: dict[tuple[int, int, str, int | None], list[int]] = {
        k: [] for k in keys_in_log_order
    }
    for ticket, event, agent, epoch, batch in log:
        expected_ids[(epoch, batch, event, agent)].append(ticket)
    assert {key(g): sorted(g["ticket_ids"]) for g in groups} == {
        k: sorted(v) for k, v in expected_ids.items()
    }

    batches_by_id = list(dict.fromkeys((row["epoch"], row["batch"]) for row in view))
    assert batches_by_id == [(1, 7), (1, 8), (2, 7)]


# 2 -- a ticket never names a missing agent ---------------------------------------------


async def test_assigning_a_ticket_to_a_missing_agent_fails_and_changes_nothing(db, make):
    agent = await make.agent()
    (ticket,) = await make.tickets(1)
    missing = await _missing_agent_id(db)
    before = await _tickets(db)

    with pytest.raises(ForeignKeyViolationError) as refused:
        await db.execute(ASSIGN, ticket, missing)
    assert refused.value.constraint_name == CONSTRAINT
    assert await _tickets(db) == before

    await db.execute(ASSIGN, ticket, agent.agent_id)
    row = await db.fetchrow("SELECT status, agent_id FROM tickets WHERE id = $1", ticket)
    assert tuple(row) == ("assigned", agent.agent_id)


async def test_inserting_an_assigned_ticket_needs_an_existing_agent(db, make):
    agent = await make.agent()
    missing = await _missing_agent_id(db)
    insert = (
        "INSERT INTO tickets (title, status, agent_id, assigned_at)"
        " VALUES ('held', 'assigned', $1, now()) RETURNING id"
    )
    before = await _tickets(db)

    with pytest.raises(ForeignKeyViolationError) as refused:
        await db.fetchval(insert, missing)
    assert refused.value.constraint_name == CONSTRAINT
    assert await _tickets(db) == before

    ticket = await db.fetchval(insert, agent.agent_id)
    assert await db.fetchval("SELECT agent_id FROM tickets WHERE id = $1", ticket) == (
        agent.agent_id
    )


async def test_one_missing_agent_fails_a_multi_row_update_as_a_whole(db, make):
    agent = await make.agent()
    first, second = await make.tickets(2)
    missing = await _missing_agent_id(db)
    update = (
        "UPDATE tickets AS t SET status = 'assigned', agent_id = v.agent, assigned_at = now()"
        " FROM (VALUES ($1::bigint, $2::bigint), ($3::bigint, $4::bigint)) AS v(ticket, agent)"
        " WHERE t.id = v.ticket"
    )
    before = await _tickets(db)

    with pytest.raises(ForeignKeyViolationError):
        await db.execute(update, first, agent.agent_id, second, missing)
    assert await _tickets(db) == before


async def test_many_tickets_naming_one_existing_agent_are_accepted(db, make):
    # The check compares agents found with distinct agents named: repeats must not count twice.
    one, two = await make.agent(), await make.agent()
    tickets = await make.tickets(5)
    await db.execute(
        "UPDATE tickets SET status = 'assigned', assigned_at = now(),"
        " agent_id = CASE WHEN id = $2 THEN $3::bigint ELSE $1::bigint END",
        one.agent_id,
        tickets[-1],
        two.agent_id,
    )
    held = await db.fetch("SELECT agent_id, count(*) FROM tickets GROUP BY agent_id")
    assert {row["agent_id"]: row["count"] for row in held} == {one.agent_id: 4, two.agent_id: 1}


# 3 -- a referenced agent is never deleted ----------------------------------------------


@pytest.mark.parametrize("sold", [False, True], ids=["holding", "sold-only"])
async def test_an_agent_with_a_ticket_cannot_be_deleted(db, make, sold):
    agent = await make.agent()
    (ticket,) = await make.tickets(1)
    await _hold(db, ticket, agent.agent_id, sold=sold)

    with pytest.raises(RestrictViolationError) as refused:
        await db.execute("DELETE FROM agents WHERE id = $1", agent.agent_id)
    assert refused.value.constraint_name == CONSTRAINT
    assert await _agent_ids(db) == [agent.agent_id]


async def test_deleting_several_agents_fails_whole_when_one_has_a_ticket(db, make):
    idle, busy = await make.agent(), await make.agent()
    (ticket,) = await make.tickets(1)
    await _hold(db, ticket, busy.agent_id)

    with pytest.raises(RestrictViolationError):
        await db.execute(
            "DELETE FROM agents WHERE id = ANY($1::bigint[])", [idle.agent_id, busy.agent_id]
        )
    assert await _agent_ids(db) == sorted([idle.agent_id, busy.agent_id])


async def test_an_agent_without_tickets_can_be_deleted(db, make):
    idle, busy = await make.agent(), await make.agent()
    (ticket,) = await make.tickets(1)
    await _hold(db, ticket, busy.agent_id)

    assert await db.execute("DELETE FROM agents WHERE id = $1", idle.agent_id) == "DELETE 1"
    assert await _agent_ids(db) == [busy.agent_id]


async def test_deleting_an_agent_outside_read_committed_is_refused(db, make):
    # A REPEATABLE READ snapshot can miss an assignment committed after it was taken.
    agent = await make.agent()

    with pytest.raises(RestrictViolationError):
        async with db.transaction(isolation="repeatable_read"):
            await db.execute("DELETE FROM agents WHERE id = $1", agent.agent_id)
    assert await _agent_ids(db) == [agent.agent_id]


# 4 -- nor renumbered, nor truncated ----------------------------------------------------


async def test_an_agents_id_cannot_change(db, make):
    agent = await make.agent()
    (ticket,) = await make.tickets(1)
    await _hold(db, ticket, agent.agent_id)

    with pytest.raises(RestrictViolationError):
        await db.execute("UPDATE agents SET id = DEFAULT WHERE id = $1", agent.agent_id)
    assert await _agent_ids(db) == [agent.agent_id]
    assert await db.fetchval("SELECT agent_id FROM tickets WHERE id = $1", ticket) == (
        agent.agent_id
    )


@pytest.mark.parametrize("sold", [False, True], ids=["holding", "sold-only"])
async def test_agents_cannot_be_truncated_while_a_ticket_names_one(db, make, sold):
    agent = await make.agent()
    (ticket,) = await make.tickets(1)
    await _hold(db, ticket, agent.agent_id, sold=sold)

    with pytest.raises(RestrictViolationError) as refused:
        await db.execute("TRUNCATE agents")
    # Our trigger's refusal, not some other reason TRUNCATE could fail for.
    assert "truncated" in str(refused.value)
    assert await _agent_ids(db) == [agent.agent_id]


async def test_agents_can_be_truncated_when_no_ticket_names_one(db, make):
    await make.agent()
    await make.tickets(2)

    await db.execute("TRUNCATE agents")
    assert await _agent_ids(db) == []


# 5 -- races between an assignment and a delete -----------------------------------------


async def test_a_delete_waits_for_an_uncommitted_assignment_then_is_refused(db, make, pair):
    assigner, deleter = pair
    agent = await make.agent()
    (ticket,) = await make.tickets(1)

    assignment = assigner.transaction()
    await assignment.start()
    await assigner.execute(ASSIGN, ticket, agent.agent_id)
    delete = asyncio.create_task(
        deleter.execute("DELETE FROM agents WHERE id = $1", agent.agent_id)
    )
    await _assert_blocked(db, delete, deleter.get_server_pid())

    await assignment.commit()
    with pytest.raises(RestrictViolationError):
        await asyncio.wait_for(delete, WAIT_S)
    assert await _agent_ids(db) == [agent.agent_id]
    row = await db.fetchrow("SELECT status, agent_id FROM tickets WHERE id = $1", ticket)
    assert tuple(row) == ("assigned", agent.agent_id)


async def test_an_assignment_waits_for_an_uncommitted_delete_then_is_refused(db, make, pair):
    assigner, deleter = pair
    agent = await make.agent()
    (ticket,) = await make.tickets(1)
    before = await _tickets(db)

    deletion = deleter.transaction()
    await deletion.start()
    assert await deleter.execute("DELETE FROM agents WHERE id = $1", agent.agent_id) == ("DELETE 1")
    assign = asyncio.create_task(assigner.execute(ASSIGN, ticket, agent.agent_id))
    await _assert_blocked(db, assign, assigner.get_server_pid())

    await deletion.commit()
    with pytest.raises(ForeignKeyViolationError):
        await asyncio.wait_for(assign, WAIT_S)
    assert await _agent_ids(db) == []
    assert await _tickets(db) == before


async def test_an_assignment_waits_for_a_delete_that_rolls_back_then_succeeds(db, make, pair):
    # The check must wait for the deleter's outcome, not refuse on seeing the row locked.
    assigner, deleter = pair
    agent = await make.agent()
    (ticket,) = await make.tickets(1)

    deletion = deleter.transaction()
    await deletion.start()
    await deleter.execute("DELETE FROM agents WHERE id = $1", agent.agent_id)
    assign = asyncio.create_task(assigner.execute(ASSIGN, ticket, agent.agent_id))
    await _assert_blocked(db, assign, assigner.get_server_pid())

    await deletion.rollback()
    assert await asyncio.wait_for(assign, WAIT_S) == "UPDATE 1"
    row = await db.fetchrow("SELECT status, agent_id FROM tickets WHERE id = $1", ticket)
    assert tuple(row) == ("assigned", agent.agent_id)


async def test_the_previous_release_can_still_write_per_ticket_audit_rows(db, make: Factory):
    """A leader of the previous version, still running during a rolling deploy, logs one row
    per ticket into ticket_events — inside its batch statement's CTE. The view takes it."""
    agent = await make.agent()
    first, second = await make.tickets(2)
    await db.execute(
        "WITH assigned AS ("
        "  UPDATE tickets SET status = 'assigned', agent_id = $3, assigned_at = now()"
        "  WHERE id = ANY(ARRAY[$1, $2]::bigint[]) RETURNING id, agent_id"
        "), logged AS ("
        "  INSERT INTO ticket_events (ticket_id, event, agent_id, epoch, batch)"
        "  SELECT id, 'assigned', agent_id, 7, 70 FROM assigned"
        ") SELECT count(*) FROM assigned",
        first,
        second,
        agent.agent_id,
    )
    rows = await db.fetch(
        "SELECT ticket_id, event, agent_id, epoch, batch FROM ticket_events ORDER BY ticket_id"
    )
    assert [tuple(r) for r in rows] == [
        (first, "assigned", agent.agent_id, 7, 70),
        (second, "assigned", agent.agent_id, 7, 70),
    ]
