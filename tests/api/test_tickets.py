"""Tickets CRUD: single and bulk creation, visibility (admins all, agents their own), the
status filter with pagination, edits of title and description, deletion through the
dispatcher."""

from __future__ import annotations

from yarl import URL

from web.keys import DISPATCHER

TICKET_FIELDS = {
    "id",
    "title",
    "description",
    "status",
    "agent",
    "created_at",
    "assigned_at",
    "sold_at",
}


async def test_create_one_ticket(client, make, db):
    admin = await make.admin()
    response = await client.post(
        "/api/tickets/", json={"title": "Printer on fire"}, headers=admin.headers
    )
    assert response.status == 201, await response.text()
    ticket = await response.json()
    assert set(ticket) == TICKET_FIELDS
    assert (ticket["title"], ticket["description"], ticket["status"], ticket["agent"]) == (
        "Printer on fire",
        "",
        "unassigned",
        None,
    )
    assert ticket["assigned_at"] is None and ticket["sold_at"] is None
    row = await db.fetchrow("SELECT title, status FROM tickets WHERE id = $1", ticket["id"])
    assert tuple(row) == ("Printer on fire", "unassigned")


async def test_create_a_batch_in_order_and_at_the_limits(client, make, db):
    admin = await make.admin()
    batch = [{"title": f"t{n}", "description": f"d{n}"} for n in range(5)]
    response = await client.post("/api/tickets/", json=batch, headers=admin.headers)
    assert response.status == 201, await response.text()
    created = await response.json()
    assert [(t["title"], t["description"]) for t in created] == [
        (b["title"], b["description"]) for b in batch
    ]
    ids = [t["id"] for t in created]
    assert ids == sorted(ids) and len(set(ids)) == 5

    longest = {"title": "x" * 200, "description": "y" * 10_000}
    edge = await client.post("/api/tickets/", json=[longest], headers=admin.headers)
    assert edge.status == 201
    assert isinstance(await edge.json(), list)

    thousand = [{"title": f"bulk {n}"} for n in range(1000)]
    big = await client.post("/api/tickets/", json=thousand, headers=admin.headers)
    assert big.status == 201
    big_ids = [t["id"] for t in await big.json()]
    assert big_ids == list(range(big_ids[0], big_ids[0] + 1000))
    assert await db.fetchval("SELECT count(*) FROM tickets") == 1006


async def test_a_batch_is_all_or_nothing(client, make, db):
    admin = await make.admin()
    batch = [{"title": "fine"}, {"title": ""}, {"title": "fine too"}]
    response = await client.post("/api/tickets/", json=batch, headers=admin.headers)
    assert response.status == 400
    assert [item["field"] for item in (await response.json())["detail"]] == ["1.title"]
    over = await client.post("/api/tickets/", json=[{"title": "t"}] * 1001, headers=admin.headers)
    assert over.status == 400
    assert await db.fetchval("SELECT count(*) FROM tickets") == 0


async def _arrange_holdings(serve, make):
    """A served app in which an agent holds two tickets and has sold one, another agent holds
    one, and two tickets wait in the queue."""
    mine = await make.agent(capacity=3)
    theirs = await make.agent(capacity=1)
    ids = await make.tickets(6)
    client = await serve()
    dispatcher = client.app[DISPATCHER]
    await dispatcher.fetch(mine.agent_id)  # ids 0..2
    await dispatcher.fetch(theirs.agent_id)  # id 3
    await dispatcher.sell(mine.agent_id, [ids[1]])
    return client, mine, theirs, ids


async def test_admins_list_everything_and_filter_by_status_with_pagination(serve, make):
    admin = await make.admin()
    client, _, _, ids = await _arrange_holdings(serve, make)

    everything = await (await client.get("/api/tickets/", headers=admin.headers)).json()
    assert everything["count"] == 6
    assert [t["id"] for t in everything["results"]] == ids

    assigned = await client.get(
        "/api/tickets/?status=assigned&limit=2&offset=1", headers=admin.headers
    )
    page = await assigned.json()
    assert page["count"] == 3
    assert [t["id"] for t in page["results"]] == [ids[2], ids[3]]
    assert page["next"] is None
    assert page["previous"].endswith("status=assigned&limit=2&offset=0")

    first = await (
        await client.get("/api/tickets/?limit=2&status=unassigned", headers=admin.headers)
    ).json()
    assert [t["id"] for t in first["results"]] == [ids[4], ids[5]]
    assert all(t["status"] == "unassigned" and t["agent"] is None for t in first["results"])

    sold = await (await client.get("/api/tickets/?status=sold", headers=admin.headers)).json()
    assert [(t["id"], t["status"]) for t in sold["results"]] == [(ids[1], "sold")]
    assert sold["results"][0]["sold_at"] is not None


async def test_agents_see_only_their_own_and_plain_users_nothing(serve, make):
    plain = await make.user()
    client, mine, theirs, ids = await _arrange_holdings(serve, make)

    own = await (await client.get("/api/tickets/", headers=mine.headers)).json()
    assert own["count"] == 3
    assert [(t["id"], t["status"], t["agent"]) for t in own["results"]] == [
        (ids[0], "assigned", mine.agent_id),
        (ids[1], "sold", mine.agent_id),
        (ids[2], "assigned", mine.agent_id),
    ]
    held = await (await client.get("/api/tickets/?status=assigned", headers=mine.headers)).json()
    assert [t["id"] for t in held["results"]] == [ids[0], ids[2]]
    paged = await (await client.get("/api/tickets/?limit=1&offset=1", headers=mine.headers)).json()
    assert [t["id"] for t in paged["results"]] == [ids[1]]
    assert paged["count"] == 3 and paged["next"] and paged["previous"]

    other = await (await client.get("/api/tickets/", headers=theirs.headers)).json()
    assert [t["id"] for t in other["results"]] == [ids[3]]
    nothing = await (await client.get("/api/tickets/", headers=plain.headers)).json()
    assert nothing == {"count": 0, "next": None, "previous": None, "results": []}

    assert (await client.get(f"/api/tickets/{ids[0]}/", headers=mine.headers)).status == 200
    for invisible in (ids[3], ids[4]):
        response = await client.get(f"/api/tickets/{invisible}/", headers=mine.headers)
        assert response.status == 404


async def test_the_agent_edits_title_and_description_of_its_ticket(serve, make, db):
    client, mine, _, ids = await _arrange_holdings(serve, make)
    patched = await client.patch(
        f"/api/tickets/{ids[0]}/", json={"title": "Renamed"}, headers=mine.headers
    )
    assert patched.status == 200, await patched.text()
    body = await patched.json()
    assert (body["title"], body["description"], body["status"]) == (
        "Renamed",
        "about 1",
        "assigned",
    )
    put = await client.put(
        f"/api/tickets/{ids[0]}/",
        json={"title": "Again", "description": "New words"},
        headers=mine.headers,
    )
    assert put.status == 200
    row = await db.fetchrow(
        "SELECT title, description, status, agent_id FROM tickets WHERE id = $1", ids[0]
    )
    assert tuple(row) == ("Again", "New words", "assigned", mine.agent_id)
    refused = await client.patch(
        f"/api/tickets/{ids[3]}/", json={"title": "Not mine"}, headers=mine.headers
    )
    assert refused.status == 404
    assert await db.fetchval("SELECT title FROM tickets WHERE id = $1", ids[3]) == "ticket4"


async def test_admins_edit_any_ticket(client, make, db):
    admin = await make.admin()
    [ticket] = await make.tickets(1)
    response = await client.patch(
        f"/api/tickets/{ticket}/", json={"description": "More detail"}, headers=admin.headers
    )
    assert response.status == 200
    assert (await response.json())["title"] == "ticket1"
    assert await db.fetchval("SELECT description FROM tickets WHERE id = $1", ticket) == (
        "More detail"
    )


async def test_delete_only_unassigned_tickets(serve, make, db):
    admin = await make.admin()
    newcomer = await make.agent(capacity=1)
    client, _, _, ids = await _arrange_holdings(serve, make)
    deleted = await client.delete(f"/api/tickets/{ids[4]}/", headers=admin.headers)
    assert deleted.status == 204, await deleted.text()
    assert await db.fetchval("SELECT count(*) FROM tickets WHERE id = $1", ids[4]) == 0
    assert (await client.get(f"/api/tickets/{ids[4]}/", headers=admin.headers)).status == 404
    for held_or_sold in (ids[0], ids[1]):
        response = await client.delete(f"/api/tickets/{held_or_sold}/", headers=admin.headers)
        assert response.status == 409
    assert await db.fetchval("SELECT count(*) FROM tickets") == 5
    # The queue still hands out the next ticket in order: the deleted one is gone from it.
    fetched = await client.app[DISPATCHER].fetch(newcomer.agent_id)
    assert [t["id"] for t in fetched] == [ids[5]]


async def test_walking_by_id_skips_and_repeats_nothing_while_the_list_changes(client, make):
    """With offsets, rows that leave a filtered list shift every later page: a walk of the
    queue while agents fetch skipped tickets. `after` continues from the last id seen."""
    admin = await make.admin()
    agent = await make.agent(capacity=3)
    ids = await make.tickets(20)
    url: str | None = "/api/tickets/?status=unassigned&limit=5&after=0"
    seen: list[int] = []
    while url is not None:
        response = await client.get(url, headers=admin.headers)
        assert response.status == 200, await response.text()
        body = await response.json()
        assert body["previous"] is None
        seen += [t["id"] for t in body["results"]]
        if len(seen) == 5:
            # The three oldest leave the queue between two pages.
            await client.post("/api/tickets/fetch_tickets/", headers=agent.headers)
        url = body["next"] and URL(body["next"]).path_qs
        assert url is None or ("after=" in url and "offset=" not in url)
    # Every ticket still waiting when its page was read, once each, in order.
    assert seen == ids

    # Each list takes it: users and agents too, counted whole.
    users = await (await client.get("/api/users/?after=0&limit=1", headers=admin.headers)).json()
    assert users["count"] >= 2 and len(users["results"]) == 1
    later = await (
        await client.get(f"/api/agents/?after={agent.agent_id - 1}", headers=admin.headers)
    ).json()
    assert [a["id"] for a in later["results"]] == [agent.agent_id]
