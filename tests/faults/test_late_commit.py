"""Drill 7: a ticket whose INSERT commits late still goes out before every newer ticket.

Ids come from an identity column, so a transaction can take a lower id and commit after
others took (and committed) higher ones. The dispatcher must queue such a ticket at its id's
place once it is committed: ahead of every newer ticket still waiting.

Each repetition: connection L opens a transaction and inserts a ticket (low id), keeping the
transaction open; other tickets are inserted and committed; an agent fetches — and gets the
newer ones, the only ones committed; L commits; the dispatcher hears of it (we wait, bounded,
on its queue); the next agent's fetch must start with the late ticket.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.faults.drills import repetitions
from tests.support.invariants import Ledger, check_invariants
from web.keys import DISPATCHER

FETCH = "/api/tickets/fetch_tickets/"
SELL = "/api/tickets/sell_tickets/"


async def queued(dispatcher, ticket_id: int, *, timeout_s: float = 5.0) -> float:
    """Wait until the dispatcher's queue holds `ticket_id`; returns how long that took."""
    started = time.monotonic()
    while ticket_id not in dispatcher._core.snapshot().unassigned:
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"ticket {ticket_id} never reached the dispatcher's queue")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


@pytest.mark.slow
async def test_a_late_committed_ticket_goes_out_before_newer_waiting_ones(
    client, database_url, db, make, report
):
    dispatcher = client.app[DISPATCHER]
    await dispatcher.leading.wait()
    ledger = Ledger()
    early, late_agent = await make.agent(capacity=2), await make.agent(capacity=2)
    delays = []

    async def fetch(actor) -> list[int]:
        response = await client.post(FETCH, headers=actor.headers)
        assert response.status == 200, await response.text()
        return ledger.fetched(actor.agent_id, (await response.json())["tickets"])

    async def sell(actor, ids) -> None:
        response = await client.post(SELL, json={"ticket_ids": ids}, headers=actor.headers)
        assert response.status == 200, await response.text()
        ledger.sale_acknowledged(actor.agent_id, ids)

    for rep in range(repetitions(5)):
        slow = await asyncpg.connect(database_url)
        try:
            await slow.execute("BEGIN")
            late = await slow.fetchval("INSERT INTO tickets (title) VALUES ('late') RETURNING id")
            newer = await make.tickets(3, prefix=f"newer-{rep}-")
            assert late < newer[0]
            for t in newer:
                await queued(dispatcher, t)
            assert await fetch(early) == newer[:2], "only committed tickets go out"
            await slow.execute("COMMIT")
        finally:
            await slow.close()
        delays.append(await queued(dispatcher, late))

        got = await fetch(late_agent)
        assert got == [late, newer[2]], f"repetition {rep}: {got}, late ticket {late}"
        await sell(early, newer[:2])
        await sell(late_agent, got)
        assert dispatcher.queue_length == 0

    counts = await check_invariants(db, ledger)
    report(f"late commit → in the dispatcher's queue: max {max(delays) * 1000:.1f} ms; {counts}")
