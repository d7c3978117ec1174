"""A sale touches no index (migration 0006): PostgreSQL writes it as a heap-only (HOT)
update. An index that mentions status or sold_at, or pages packed full, would silently
bring back two index entries per ticket sold; these tests say so instead."""

from __future__ import annotations

import asyncio
import time

from tests.support.batches import commit

# Statistics reach the shared views after the writing backend goes idle; this bounds the wait.
STATS_DEADLINE_S = 15


async def test_no_index_on_tickets_mentions_what_a_sale_changes(db):
    definitions = [
        row["definition"]
        for row in await db.fetch(
            "SELECT pg_get_indexdef(indexrelid) AS definition FROM pg_index"
            " WHERE indrelid = 'tickets'::regclass"
        )
    ]
    assert definitions, "tickets has no index at all?"
    for definition in definitions:
        assert "status" not in definition, definition
        assert "sold_at" not in definition, definition
    options = await db.fetchval("SELECT reloptions FROM pg_class WHERE oid = 'tickets'::regclass")
    assert "fillfactor=50" in (options or [])


async def _updates(db) -> tuple[int, int]:
    row = await db.fetchrow(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'tickets'"
    )
    return row["n_tup_upd"], row["n_tup_hot_upd"]


async def test_the_batch_statement_sells_as_heap_only_updates(leader, make, db):
    agents = [await make.agent(), await make.agent()]
    tickets = await make.tickets(30)
    pairs = [(ticket, agents[i % 2].agent_id) for i, ticket in enumerate(tickets)]
    before = await _updates(db)
    await commit(leader, 1, pairs, [])
    await commit(leader, 2, [], pairs)
    # The leader's backend publishes its counters when it next goes idle; force that.
    await leader._connection.execute("SELECT pg_stat_force_next_flush()")
    deadline = time.monotonic() + STATS_DEADLINE_S
    while (after := await _updates(db))[0] - before[0] < 2 * len(pairs):
        assert time.monotonic() < deadline, f"statistics never showed the updates: {after}"
        await asyncio.sleep(0.1)
    updates, hot = after[0] - before[0], after[1] - before[1]
    assert updates == 2 * len(pairs)
    # Assignments set agent_id, which the indexes hold: only the sales can be HOT, and all are.
    assert hot == len(pairs)
