"""fetch_tickets / sell_tickets over HTTP, one behaviour per test."""

from __future__ import annotations

import asyncio

import pytest

from web.keys import DISPATCHER

FETCH = "/api/tickets/fetch_tickets/"
SELL = "/api/tickets/sell_tickets/"


@pytest.fixture
async def leading_client(client):
    await client.app[DISPATCHER].leading.wait()
    return client


async def fetch(client, actor) -> list[dict]:
    response = await client.post(FETCH, headers=actor.headers)
    assert response.status == 200, await response.text()
    return (await response.json())["tickets"]


async def test_fetch_hands_out_the_oldest_tickets_up_to_capacity(leading_client, make, db):
    ids = await make.tickets(20)
    agent = await make.agent(capacity=15)
    tickets = await fetch(leading_client, agent)
    assert [t["id"] for t in tickets] == ids[:15]
    assert {t["status"] for t in tickets} == {"assigned"}
    assert {t["agent"] for t in tickets} == {agent.agent_id}
    rows = await db.fetch("SELECT id FROM tickets WHERE agent_id = $1 ORDER BY id", agent.agent_id)
    assert [r["id"] for r in rows] == ids[:15]
    events = await db.fetchval("SELECT count(*) FROM ticket_events WHERE event = 'assigned'")
    assert events == 15


async def test_a_second_fetch_returns_the_same_tickets(leading_client, make):
    await make.tickets(20)
    agent = await make.agent(capacity=5)
    first = await fetch(leading_client, agent)
    second = await fetch(leading_client, agent)
    assert [t["id"] for t in first] == [t["id"] for t in second]


async def test_two_agents_never_share_and_take_in_order(leading_client, make):
    ids = await make.tickets(10)
    one, two = await make.agent(capacity=4), await make.agent(capacity=4)
    got_one = [t["id"] for t in await fetch(leading_client, one)]
    got_two = [t["id"] for t in await fetch(leading_client, two)]
    assert got_one == ids[:4]
    assert got_two == ids[4:8]


async def test_sell_frees_capacity_and_is_idempotent(leading_client, make, db):
    ids = await make.tickets(6)
    agent = await make.agent(capacity=3)
    held = [t["id"] for t in await fetch(leading_client, agent)]
    response = await leading_client.post(SELL, json={"ticket_ids": held[:2]}, headers=agent.headers)
    assert response.status == 200
    assert (await response.json()) == {"sold": held[:2]}
    again = await leading_client.post(SELL, json={"ticket_ids": held[:2]}, headers=agent.headers)
    assert again.status == 200
    topped = [t["id"] for t in await fetch(leading_client, agent)]
    assert topped == [held[2], ids[3], ids[4]]
    sold = await db.fetchval("SELECT count(*) FROM tickets WHERE status = 'sold'")
    assert sold == 2


async def test_selling_what_you_do_not_hold_is_all_or_nothing(leading_client, make, db):
    await make.tickets(6)
    one, two = await make.agent(capacity=3), await make.agent(capacity=3)
    mine = [t["id"] for t in await fetch(leading_client, one)]
    theirs = [t["id"] for t in await fetch(leading_client, two)]
    response = await leading_client.post(
        SELL, json={"ticket_ids": [mine[0], theirs[0], 999999]}, headers=one.headers
    )
    assert response.status == 409
    body = await response.json()
    assert body["rejected"] == {
        str(theirs[0]): "held_by_another_agent",
        "999999": "not_found",
    }
    assert await db.fetchval("SELECT count(*) FROM tickets WHERE status = 'sold'") == 0


async def test_admins_and_inactive_agents_get_403(leading_client, make):
    admin = await make.admin()
    inactive = await make.agent(is_active=False)
    for actor in (admin, inactive):
        response = await leading_client.post(FETCH, headers=actor.headers)
        assert response.status == 403
        response = await leading_client.post(SELL, json={"ticket_ids": [1]}, headers=actor.headers)
        assert response.status == 403


async def test_tickets_inserted_by_plain_sql_reach_the_queue(leading_client, make, db):
    agent = await make.agent(capacity=3)
    assert await fetch(leading_client, agent) == []
    ids = await make.tickets(2)
    dispatcher = leading_client.app[DISPATCHER]
    for _ in range(200):  # the NOTIFY is asynchronous; bounded wait on its effect
        if dispatcher.queue_length == 2:
            break
        import asyncio

        await asyncio.sleep(0.01)
    assert [t["id"] for t in await fetch(leading_client, agent)] == ids


async def test_released_tickets_go_out_again_before_newer_ones(leading_client, make, db):
    ids = await make.tickets(6)
    admin = await make.admin()
    first, second = await make.agent(capacity=2), await make.agent(capacity=2)
    assert [t["id"] for t in await fetch(leading_client, first)] == ids[:2]
    assert [t["id"] for t in await fetch(leading_client, second)] == ids[2:4]
    response = await leading_client.post(
        f"/api/agents/{first.agent_id}/release/", headers=admin.headers
    )
    assert response.status == 200
    assert await response.json() == {"released": ids[:2]}
    third = await make.agent(capacity=3)
    # Older than every waiting ticket, the released ones go first, then the queue goes on.
    assert [t["id"] for t in await fetch(leading_client, third)] == [ids[0], ids[1], ids[4]]
    events = await db.fetch("SELECT ticket_id FROM ticket_events WHERE event = 'released'")
    assert sorted(e["ticket_id"] for e in events) == ids[:2]


async def test_deactivating_a_user_releases_its_agents_tickets(leading_client, make, db):
    ids = await make.tickets(3)
    admin = await make.admin()
    agent = await make.agent(capacity=2)
    await fetch(leading_client, agent)
    response = await leading_client.patch(
        f"/api/users/{agent.user_id}/", json={"is_active": False}, headers=admin.headers
    )
    assert response.status == 200
    held = await db.fetchval("SELECT count(*) FROM tickets WHERE status = 'assigned'")
    assert held == 0
    other = await make.agent(capacity=3)
    assert [t["id"] for t in await fetch(leading_client, other)] == ids


async def test_holdings_changed_behind_its_back_are_repaired_not_fatal(leading_client, make, db):
    ids = await make.tickets(4)
    agent = await make.agent(capacity=1)  # created after the leader loaded its snapshot
    await db.execute(
        "UPDATE tickets SET status = 'assigned', agent_id = $1, assigned_at = now()"
        " WHERE id = ANY($2::bigint[])",
        agent.agent_id,
        ids[:3],
    )
    tickets = await fetch(leading_client, agent)
    assert [t["id"] for t in tickets] == [ids[0]]
    held = await db.fetch("SELECT id FROM tickets WHERE status = 'assigned' ORDER BY id")
    assert [r["id"] for r in held] == [ids[0]]
    other = await make.agent(capacity=3)
    assert [t["id"] for t in await fetch(leading_client, other)] == ids[1:]


async def test_a_sale_of_a_ticket_assigned_in_the_same_batch_waits_for_the_next(
    leading_client, make, db
):
    ids = await make.tickets(2)
    agent = await make.agent(capacity=2)
    dispatcher = leading_client.app[DISPATCHER]
    # Both land in one batch: the sale guesses an id the fetch is about to assign.
    fetched, sold = await asyncio.gather(
        dispatcher.fetch(agent.agent_id), dispatcher.sell(agent.agent_id, [ids[0]])
    )
    assert [t["id"] for t in fetched] == ids
    assert sold == [ids[0]]
    rows = await db.fetch("SELECT id, status FROM tickets ORDER BY id")
    assert [(r["id"], r["status"]) for r in rows] == [(ids[0], "sold"), (ids[1], "assigned")]
    assert dispatcher.stats.failed_commits == 0


async def test_callers_that_go_away_still_get_their_decisions_committed(leading_client, make, db):
    """A client that disconnects cancels only its own wait: the sale it asked for is still
    committed, the other callers of the same batches are answered, and the actor goes on."""
    dispatcher = leading_client.app[DISPATCHER]
    await make.tickets(40 * 3)
    agents = [await make.agent(capacity=3) for _ in range(40)]
    held = {a.agent_id: [t["id"] for t in await fetch(leading_client, a)] for a in agents}
    leaving, staying = agents[::2], agents[1::2]
    gone = [asyncio.ensure_future(dispatcher.sell(a.agent_id, held[a.agent_id])) for a in leaving]
    kept = [asyncio.ensure_future(dispatcher.sell(a.agent_id, held[a.agent_id])) for a in staying]
    await asyncio.sleep(0)  # every sale is in the inbox
    for waiting in gone:
        waiting.cancel()
    assert await asyncio.gather(*kept) == [held[a.agent_id] for a in staying]
    # All sales went into the inbox before the actor ran, so they shared these batches: the
    # abandoned ones are committed by now, before anyone retried them.
    sold = await db.fetchval("SELECT count(*) FROM tickets WHERE status = 'sold'")
    assert sold == 40 * 3
    assert all(waiting.cancelled() for waiting in gone)
    # A retry by a caller that went away sees its sale done (already sold is a success).
    for agent in leaving:
        assert await dispatcher.sell(agent.agent_id, held[agent.agent_id]) == held[agent.agent_id]
