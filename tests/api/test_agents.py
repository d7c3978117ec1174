"""Agents CRUD: creation as a plain insert; capacity, activity and deletion through the
dispatcher, whose effect (released tickets) shows in `held` and in the tickets table."""

from __future__ import annotations

from web.keys import DISPATCHER

AGENT_FIELDS = {"id", "user", "capacity", "is_active", "held"}


async def test_create_an_agent_with_the_default_or_a_given_capacity(client, make, db):
    admin = await make.admin()
    first, second = await make.user(), await make.user()
    default = await client.post("/api/agents/", json={"user": first.user_id}, headers=admin.headers)
    assert default.status == 201, await default.text()
    body = await default.json()
    assert set(body) == AGENT_FIELDS
    assert (body["user"], body["capacity"], body["is_active"], body["held"]) == (
        first.user_id,
        15,
        True,
        0,
    )
    given = await client.post(
        "/api/agents/", json={"user": second.user_id, "capacity": 0}, headers=admin.headers
    )
    assert given.status == 201
    assert (await given.json())["capacity"] == 0
    rows = await db.fetch("SELECT id, user_id, capacity FROM agents ORDER BY id")
    assert [tuple(row) for row in rows] == [
        (body["id"], first.user_id, 15),
        ((await given.json())["id"], second.user_id, 0),
    ]


async def test_an_agent_per_user_and_only_for_a_user_that_exists(client, make, db):
    admin = await make.admin()
    agent = await make.agent()
    again = await client.post("/api/agents/", json={"user": agent.user_id}, headers=admin.headers)
    assert again.status == 409
    assert (await again.json())["error"] == "conflict"
    missing = await client.post("/api/agents/", json={"user": 424242}, headers=admin.headers)
    assert missing.status == 400
    assert [item["field"] for item in (await missing.json())["detail"]] == ["user"]
    assert await db.fetchval("SELECT count(*) FROM agents") == 1


async def test_list_and_read_count_held_tickets_from_the_database(serve, make):
    admin = await make.admin()
    busy = await make.agent(capacity=3)
    idle = await make.agent()
    await make.tickets(3)
    client = await serve()
    dispatcher = client.app[DISPATCHER]
    held = await dispatcher.fetch(busy.agent_id)
    await dispatcher.sell(busy.agent_id, [held[0]["id"]])

    page = await (await client.get("/api/agents/", headers=idle.headers)).json()
    assert page["count"] == 2 and page["next"] is None and page["previous"] is None
    assert [(agent["id"], agent["held"]) for agent in page["results"]] == [
        (busy.agent_id, 2),
        (idle.agent_id, 0),
    ]
    own = await client.get(f"/api/agents/{busy.agent_id}/", headers=busy.headers)
    assert own.status == 200
    assert await own.json() == {
        "id": busy.agent_id,
        "user": busy.user_id,
        "capacity": 3,
        "is_active": True,
        "held": 2,
    }
    second = await client.get("/api/agents/?limit=1&offset=1", headers=admin.headers)
    second_page = await second.json()
    assert [agent["id"] for agent in second_page["results"]] == [idle.agent_id]
    assert second_page["previous"].endswith("/api/agents/?limit=1&offset=0")
    assert second_page["next"] is None


async def test_lowering_capacity_releases_the_newest_excess(serve, make, db):
    admin = await make.admin()
    agent = await make.agent(capacity=3)
    tickets = await make.tickets(3)
    client = await serve()
    await client.app[DISPATCHER].fetch(agent.agent_id)
    response = await client.patch(
        f"/api/agents/{agent.agent_id}/", json={"capacity": 1}, headers=admin.headers
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert (body["capacity"], body["held"], body["is_active"]) == (1, 1, True)
    rows = await db.fetch("SELECT id, status, agent_id FROM tickets ORDER BY id")
    assert [tuple(row) for row in rows] == [
        (tickets[0], "assigned", agent.agent_id),
        (tickets[1], "unassigned", None),
        (tickets[2], "unassigned", None),
    ]
    assert await db.fetchval("SELECT capacity FROM agents WHERE id = $1", agent.agent_id) == 1


async def test_deactivating_releases_everything_and_put_sets_both_fields(serve, make, db):
    admin = await make.admin()
    agent = await make.agent(capacity=2)
    await make.tickets(2)
    client = await serve()
    await client.app[DISPATCHER].fetch(agent.agent_id)
    response = await client.put(
        f"/api/agents/{agent.agent_id}/",
        json={"capacity": 5, "is_active": False},
        headers=admin.headers,
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert (body["capacity"], body["is_active"], body["held"]) == (5, False, 0)
    assert await db.fetchval("SELECT count(*) FROM tickets WHERE status = 'unassigned'") == 2
    # A deactivated agent is a plain user: it no longer sees agent records.
    own = await client.get(f"/api/agents/{agent.agent_id}/", headers=agent.headers)
    assert own.status == 404


async def test_an_agent_may_not_change_itself(client, make, db):
    agent = await make.agent(capacity=4)
    for body in ({"capacity": 40}, {"is_active": False}, {"capacity": 4, "is_active": False}):
        response = await client.patch(
            f"/api/agents/{agent.agent_id}/", json=body, headers=agent.headers
        )
        assert response.status == 403, body
    row = await db.fetchrow("SELECT capacity, is_active FROM agents WHERE id = $1", agent.agent_id)
    assert tuple(row) == (4, True)


async def test_delete_an_idle_agent_but_not_one_that_holds_or_sold_tickets(serve, make, db):
    admin = await make.admin()
    idle = await make.agent()
    holder = await make.agent(capacity=1)
    seller = await make.agent(capacity=1)
    await make.tickets(2)
    client = await serve()
    dispatcher = client.app[DISPATCHER]
    await dispatcher.fetch(holder.agent_id)
    [sold] = await dispatcher.fetch(seller.agent_id)
    await dispatcher.sell(seller.agent_id, [sold["id"]])

    deleted = await client.delete(f"/api/agents/{idle.agent_id}/", headers=admin.headers)
    assert deleted.status == 204, await deleted.text()
    assert await db.fetchval("SELECT count(*) FROM agents WHERE id = $1", idle.agent_id) == 0
    # The user stays: only its agent role went.
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", idle.user_id) == 1
    gone = await client.get(f"/api/agents/{idle.agent_id}/", headers=admin.headers)
    assert gone.status == 404

    holds = await client.delete(f"/api/agents/{holder.agent_id}/", headers=admin.headers)
    assert holds.status == 409
    sold_some = await client.delete(f"/api/agents/{seller.agent_id}/", headers=admin.headers)
    assert sold_some.status == 409, await sold_some.text()
    assert "deactivate" in (await sold_some.json())["detail"]
    remaining = await db.fetch("SELECT id FROM agents ORDER BY id")
    assert [row["id"] for row in remaining] == [holder.agent_id, seller.agent_id]
