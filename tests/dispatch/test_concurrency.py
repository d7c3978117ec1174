"""Hundreds of agents at once over real HTTP, with retry storms: invariants 1-3 hold.

Checked from two independent records: what the agents were told (the 200 responses) and
what the database says (tickets and the ticket_events audit log).
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import aiohttp
import pytest

from web.keys import DISPATCHER

FETCH = "/api/tickets/fetch_tickets/"
SELL = "/api/tickets/sell_tickets/"
AGENTS = 500
ROUNDS = 3
TICKETS = 12_000


async def _post(session, url, headers, payload=None):
    """POST, retrying 503s as a real client would (bounded)."""
    for _ in range(50):
        async with session.post(url, json=payload, headers=headers) as response:
            if response.status != 503:
                return response.status, await response.json()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} kept answering 503")


@pytest.mark.slow
async def test_many_agents_with_retry_storms_keep_every_invariant(client, make, db):
    await client.app[DISPATCHER].leading.wait()
    rng = random.Random(20261127)
    ids = await make.tickets(TICKETS)
    agents = [await make.agent(capacity=rng.randint(1, 15)) for _ in range(AGENTS)]
    capacity = {a.agent_id: c for a, c in zip(agents, await _capacities(db, agents), strict=True)}
    seen_by: dict[int, set[int]] = defaultdict(set)  # ticket -> agents it was shown to
    last_reply: dict[int, list[int]] = {}
    sold_ack: dict[int, set[int]] = defaultdict(set)
    base = str(client.make_url(""))
    connector = aiohttp.TCPConnector(limit=AGENTS * 2)
    async with aiohttp.ClientSession(base, connector=connector) as session:

        async def fetch(agent) -> list[int]:
            status, body = await _post(session, FETCH, agent.headers)
            assert status == 200, body
            got = [t["id"] for t in body["tickets"]]
            assert got == sorted(got), "each reply lists the oldest first"
            assert len(got) <= capacity[agent.agent_id]
            assert {t["agent"] for t in body["tickets"]} <= {agent.agent_id}
            for ticket in got:
                seen_by[ticket].add(agent.agent_id)
            return got

        async def one_round(agent) -> None:
            # A retry storm: the same fetch sent 1-5 times at once must answer identically
            # unless a top-up landed between them; all answers are this agent's alone.
            storm = await asyncio.gather(*(fetch(agent) for _ in range(rng.randint(1, 5))))
            held = max(storm, key=len)
            to_sell = [t for t in held if rng.random() < 0.6]
            if to_sell:
                status, body = await _post(session, SELL, agent.headers, {"ticket_ids": to_sell})
                assert status == 200, body
                assert body["sold"] == sorted(to_sell)
                sold_ack[agent.agent_id].update(to_sell)

        for _ in range(ROUNDS):
            await asyncio.gather(*(one_round(agent) for agent in agents))
        finals = await asyncio.gather(*(fetch(agent) for agent in agents))
        last_reply = {agent.agent_id: got for agent, got in zip(agents, finals, strict=True)}

    # 1. No ticket was ever shown to two agents.
    shared = {t: a for t, a in seen_by.items() if len(a) > 1}
    assert not shared, f"tickets shown to several agents: {dict(list(shared.items())[:5])}"

    # 2/3. The final replies equal the committed holdings, within capacity.
    rows = await db.fetch("SELECT id, agent_id, status FROM tickets WHERE status <> 'unassigned'")
    held_db: dict[int, list[int]] = defaultdict(list)
    sold_db: dict[int, set[int]] = defaultdict(set)
    for row in sorted(rows, key=lambda r: r["id"]):
        if row["status"] == "assigned":
            held_db[row["agent_id"]].append(row["id"])
        else:
            sold_db[row["agent_id"]].add(row["id"])
    for agent in agents:
        assert last_reply[agent.agent_id] == held_db.get(agent.agent_id, [])
        assert len(held_db.get(agent.agent_id, [])) <= capacity[agent.agent_id]
        assert sold_ack[agent.agent_id] == sold_db.get(agent.agent_id, set())

    # Order: what left the queue is exactly a prefix of the tickets in creation order.
    taken = sorted(row["id"] for row in rows)
    assert taken == ids[: len(taken)]

    # The audit log agrees: each ticket assigned once, sold only by its assignee.
    events = await db.fetch("SELECT ticket_id, event, agent_id FROM ticket_events ORDER BY id")
    owner: dict[int, int] = {}
    for event in events:
        if event["event"] == "assigned":
            assert event["ticket_id"] not in owner, "assigned twice"
            owner[event["ticket_id"]] = event["agent_id"]
        elif event["event"] == "sold":
            assert owner.get(event["ticket_id"]) == event["agent_id"]
    assert set(owner) == set(taken)

    stats = client.app[DISPATCHER].stats
    assert stats.failed_commits == 0
    assert stats.batches < stats.commands, "requests were batched"
    assert stats.pipelined > 0, "batches were decided while others committed"


async def _capacities(db, agents) -> list[int]:
    rows = await db.fetch(
        "SELECT id, capacity FROM agents WHERE id = ANY($1::bigint[])", [a.agent_id for a in agents]
    )
    by_id = {r["id"]: r["capacity"] for r in rows}
    return [by_id[a.agent_id] for a in agents]
