"""Graceful shutdown: SIGTERM under load loses nothing that was acknowledged.

`tickets serve` runs as a real process; 30 agents loop fetch → sell over HTTP. On SIGTERM
aiohttp stops accepting connections, lets requests in flight finish, then the dispatcher
commits its batch in flight, answers every waiter and releases the lock. So every 200 a
client saw is in the database, requests cut short get an error (never a 200 that is lost),
the process exits 0 within seconds, and the next server leads at once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.deploy.conftest import START_TIMEOUT_S, Started, serve, wait_until
from tests.support.factories import Actor, Factory
from tests.support.servers import SELL, Server

AGENTS = 30
CAPACITY = 5
TICKETS = 30_000
# SIGTERM once this many sales were acknowledged: the load is in full swing by then.
SALES_BEFORE_SIGTERM = 600
EXIT_BOUND_S = 10.0


@dataclass
class Acknowledged:
    """What the clients were told (200s only), per agent."""

    held: dict[int, set[int]] = field(default_factory=dict)  # agent -> tickets a fetch returned
    sold: dict[int, set[int]] = field(default_factory=dict)  # agent -> tickets a sell confirmed
    statuses: dict[int, int] = field(default_factory=dict)  # status -> count (0: no answer)

    def count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    @property
    def sales(self) -> int:
        return sum(len(ids) for ids in self.sold.values())


async def agent_loop(
    http: aiohttp.ClientSession, server: Server, agent: Actor, seen: Acknowledged
) -> None:
    """fetch → sell what it holds, until the server stops answering."""
    assert agent.agent_id is not None
    held = seen.held.setdefault(agent.agent_id, set())
    sold = seen.sold.setdefault(agent.agent_id, set())
    refused = 0
    while refused < 3:
        answer = await server.fetch(http, agent.headers, timeout_s=5)
        seen.count(answer.status)
        if answer.status != 200:
            refused += answer.status == 0
            await asyncio.sleep(0.05)
            continue
        ids = [ticket["id"] for ticket in answer.body["tickets"]]
        held.update(ids)
        if not ids:
            await asyncio.sleep(0.05)
            continue
        answer = await server.post(http, SELL, agent.headers, {"ticket_ids": ids}, timeout_s=5)
        seen.count(answer.status)
        if answer.status == 200:
            sold.update(answer.body["sold"])
        elif answer.status == 0:
            refused += 1


async def check_acknowledged(db: asyncpg.Connection, seen: Acknowledged) -> None:
    rows = await db.fetch("SELECT id, status, agent_id FROM tickets WHERE status <> 'unassigned'")
    state = {row["id"]: (row["status"], row["agent_id"]) for row in rows}
    for agent, tickets in seen.held.items():
        for ticket in tickets:
            # Held by that agent, or sold by it since.
            assert state.get(ticket, (None, None))[1] == agent, (ticket, agent, state.get(ticket))
    for agent, tickets in seen.sold.items():
        for ticket in tickets:
            assert state.get(ticket) == ("sold", agent), (ticket, agent, state.get(ticket))


@pytest.mark.slow
async def test_sigterm_under_load_exits_0_and_keeps_every_acknowledged_answer(
    started: Started, tmp_path: Path, database_url: str, make: Factory, db: asyncpg.Connection
) -> None:
    await make.tickets(TICKETS)
    agents = [await make.agent(capacity=CAPACITY) for _ in range(AGENTS)]
    server = serve(started, tmp_path, database_url, "s1")
    seen = Acknowledged()
    connector = aiohttp.TCPConnector(limit=AGENTS * 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        await server.wait_ready(http, agents[0].headers, want="leader", timeout_s=START_TIMEOUT_S)
        load = [asyncio.create_task(agent_loop(http, server, a, seen)) for a in agents]

        async def busy() -> bool:
            return seen.sales >= SALES_BEFORE_SIGTERM or any(t.done() for t in load)

        await wait_until(busy, timeout_s=60, what=f"{SALES_BEFORE_SIGTERM} sales")
        assert not any(t.done() for t in load), [t.exception() for t in load if t.done()]
        sales_before = seen.sales

        signalled = time.monotonic()
        server.send(signal.SIGTERM)
        code = await server.wait_exit(timeout_s=EXIT_BOUND_S)
        took = time.monotonic() - signalled
        done, pending = await asyncio.wait(load, timeout=30)
        assert not pending, "clients still running 30 s after the server exited"
        for task in done:
            task.result()

    assert code == 0, server.stderr_tail()
    print(
        f"SIGTERM → exit 0 in {took:.2f} s; sales acknowledged {sales_before} before,"
        f" {seen.sales} in all; answers by status {dict(sorted(seen.statuses.items()))}"
    )
    assert seen.sales > sales_before or seen.statuses.get(0, 0) > 0
    await check_acknowledged(db, seen)
    errors = [e for e in server.logs() if e.get("level") in ("error", "critical")]
    assert errors == [], errors

    # The lock went with the process: nobody holds it, and a server started now leads as
    # soon as it is up (its first answers may be 503 while its dispatcher starts).
    await wait_until(lambda: lock_free(db), timeout_s=2, what="the lock released")
    second = serve(started, tmp_path, database_url, "s2")
    async with aiohttp.ClientSession() as http:
        await second.wait_ready(http, agents[0].headers, timeout_s=START_TIMEOUT_S)
        answering = time.monotonic()
        await second.wait_ready(http, agents[0].headers, want="leader", timeout_s=5)
    print(f"second server: first 200 {time.monotonic() - answering:.2f} s after its first answer")
    assert [e["epoch"] for e in second.events("leadership_gained")] == [2]


async def lock_free(db: asyncpg.Connection) -> bool:
    held = await db.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return held == 0
