"""An agent trades only while its user is active.

Deactivating the user gives the agent's tickets back and refuses its fetches at once, however
the user was deactivated: through the leader's API, through a standby's (which cannot reach
the dispatcher), or by plain SQL. The leader learns the last two from the database (a trigger's
NOTIFY), and applies the same rule at every load. An agent's own capacity or activity changed by
plain SQL reaches the leader the same way.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.factories import PASSWORD
from web.keys import DISPATCHER

FETCH = "/api/tickets/fetch_tickets/"
# Far above a notification's delivery; reached only when the change never arrives.
NOTICE_DEADLINE_S = 10


@pytest.fixture
def leader(client):
    """The leading app, for the `standby` fixture (this folder's own `leader` is a bare lock
    connection, which would fence `client`)."""
    return client


async def held_by(db, agent_id: int) -> list[int]:
    rows = await db.fetch(
        "SELECT id FROM tickets WHERE status = 'assigned' AND agent_id = $1 ORDER BY id", agent_id
    )
    return [row["id"] for row in rows]


async def until_released(db, agent_id: int) -> None:
    deadline = time.monotonic() + NOTICE_DEADLINE_S
    while held := await held_by(db, agent_id):
        assert time.monotonic() < deadline, f"agent {agent_id} still holds {held}"
        await asyncio.sleep(0.02)


async def fetched_ids(client, actor) -> list[int]:
    response = await client.post(FETCH, headers=actor.headers)
    assert response.status == 200, await response.text()
    return [t["id"] for t in (await response.json())["tickets"]]


async def log_in_again(client, actor) -> None:
    response = await client.post(
        "/api/auth-token/", json={"username": actor.username, "password": PASSWORD}
    )
    assert response.status == 200, await response.text()
    actor.token = (await response.json())["token"]


async def set_user_active(server, admin, user_id: int, active: bool) -> dict:
    response = await server.patch(
        f"/api/users/{user_id}/", json={"is_active": active}, headers=admin.headers
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def assert_fetch_refused(client, actor, db) -> None:
    """The token may still be cached (401 comes within its TTL): the dispatcher says 403."""
    response = await client.post(FETCH, headers=actor.headers)
    assert response.status in (401, 403), await response.text()
    assert await held_by(db, actor.agent_id) == []


async def test_deactivating_a_user_stops_its_agent_at_once_and_reactivating_restores_it(
    client, make, db
):
    ids = await make.tickets(6)
    admin = await make.admin()
    agent = await make.agent(capacity=2)
    assert await fetched_ids(client, agent) == ids[:2]

    await set_user_active(client, admin, agent.user_id, False)
    assert await held_by(db, agent.agent_id) == []
    # Its token is still in this process's cache: only the dispatcher can refuse this fetch.
    await assert_fetch_refused(client, agent, db)

    await set_user_active(client, admin, agent.user_id, True)
    await log_in_again(client, agent)  # deactivation revoked its tokens
    # The released tickets are the oldest waiting ones again.
    assert await fetched_ids(client, agent) == ids[:2]


async def test_a_user_deactivated_through_a_standby_loses_its_tickets_at_the_leader(
    leader, standby, make, db
):
    ids = await make.tickets(4)
    admin = await make.admin()
    agent = await make.agent(capacity=3)
    assert await fetched_ids(leader, agent) == ids[:3]

    # The change is the user's, which any server may make; the leader applies its effect.
    assert (await set_user_active(standby, admin, agent.user_id, False))["is_active"] is False
    await until_released(db, agent.agent_id)
    await assert_fetch_refused(leader, agent, db)


async def test_a_user_deactivated_by_plain_sql_loses_its_tickets(client, make, db):
    ids = await make.tickets(4)
    agent = await make.agent(capacity=3)
    assert await fetched_ids(client, agent) == ids[:3]

    await db.execute("UPDATE users SET is_active = false WHERE id = $1", agent.user_id)
    await until_released(db, agent.agent_id)
    await assert_fetch_refused(client, agent, db)
    assert client.app[DISPATCHER].queue_length == 4


@pytest.mark.parametrize(
    "change", ["is_active = false", "is_staff = true"], ids=["inactive user", "admin user"]
)
async def test_a_leader_starting_up_gives_back_what_such_a_users_agent_holds(
    serve, make, db, change
):
    ids = await make.tickets(3)
    agent = await make.agent(capacity=2)
    await db.execute(
        "UPDATE tickets SET status = 'assigned', agent_id = $1, assigned_at = now()"
        " WHERE id = ANY($2::bigint[])",
        agent.agent_id,
        ids[:2],
    )
    await db.execute(f"UPDATE users SET {change} WHERE id = $1", agent.user_id)

    client = await serve()
    assert await held_by(db, agent.agent_id) == []
    other = await make.agent(capacity=3)
    assert await fetched_ids(client, other) == ids


# Admins do not trade (403 on fetch and sell): an agent's user made an admin stops like one
# deactivated, or its tickets would wait forever with someone who cannot sell them.


async def set_user_staff(server, admin, user_id: int, staff: bool) -> dict:
    response = await server.patch(
        f"/api/users/{user_id}/", json={"is_staff": staff}, headers=admin.headers
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def test_making_an_agents_user_an_admin_gives_its_tickets_back(client, make, db):
    ids = await make.tickets(5)
    admin = await make.admin()
    agent = await make.agent(capacity=2)
    other = await make.agent(capacity=3)
    assert await fetched_ids(client, agent) == ids[:2]

    assert (await set_user_staff(client, admin, agent.user_id, True))["is_staff"] is True
    assert await held_by(db, agent.agent_id) == []
    # The oldest tickets go out first again, to whoever fetches next.
    assert await fetched_ids(client, other) == ids[:3]

    await set_user_staff(client, admin, agent.user_id, False)
    assert await fetched_ids(client, agent) == ids[3:5]


async def test_a_user_made_an_admin_through_a_standby_or_sql_loses_its_tickets(
    leader, standby, make, db
):
    ids = await make.tickets(4)
    admin = await make.admin()
    first, second = await make.agent(capacity=2), await make.agent(capacity=2)
    assert await fetched_ids(leader, first) == ids[:2]
    assert await fetched_ids(leader, second) == ids[2:4]

    await set_user_staff(standby, admin, first.user_id, True)
    await until_released(db, first.agent_id)
    await db.execute("UPDATE users SET is_staff = true WHERE id = $1", second.user_id)
    await until_released(db, second.agent_id)
    assert leader.app[DISPATCHER].queue_length == 4


async def test_an_agent_changed_by_plain_sql_is_applied_by_the_leader(client, make, db):
    ids = await make.tickets(8)
    lowered, deactivated = await make.agent(capacity=5), await make.agent(capacity=3)
    assert await fetched_ids(client, lowered) == ids[:5]
    assert await fetched_ids(client, deactivated) == ids[5:8]

    await db.execute("UPDATE agents SET capacity = 2 WHERE id = $1", lowered.agent_id)
    deadline = time.monotonic() + NOTICE_DEADLINE_S
    # The newest excess goes back, as through the API.
    while (held := await held_by(db, lowered.agent_id)) != ids[:2]:
        assert time.monotonic() < deadline, f"still holds {held}"
        await asyncio.sleep(0.02)
    assert await fetched_ids(client, lowered) == ids[:2]

    await db.execute("UPDATE agents SET is_active = false WHERE id = $1", deactivated.agent_id)
    await until_released(db, deactivated.agent_id)
    await assert_fetch_refused(client, deactivated, db)
