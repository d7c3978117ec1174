"""A change of a user's roles made through this process applies to its very next request.

Each process trusts a token's owner for up to AUTH_CACHE_TTL_S; other processes see a change
within that time. The process that made the change must not wait for it: an agent told it was
reactivated, or a user just made an agent, would otherwise be refused (a reactivated user's
token even refused as invalid, which a client takes as a reason to discard it).
"""

from __future__ import annotations

from tests.support.factories import PASSWORD

FETCH = "/api/tickets/fetch_tickets/"


async def _patch(client, admin, path: str, body: dict) -> None:
    response = await client.patch(path, json=body, headers=admin.headers)
    assert response.status == 200, await response.text()


async def test_reactivated_agents_and_users_fetch_on_their_next_request(client, make):
    await make.tickets(4)
    admin = await make.admin()
    agent = await make.agent(capacity=1)
    assert (await client.post(FETCH, headers=agent.headers)).status == 200

    for _ in range(3):
        await _patch(client, admin, f"/api/agents/{agent.agent_id}/", {"is_active": False})
        assert (await client.post(FETCH, headers=agent.headers)).status == 403  # cached now
        await _patch(client, admin, f"/api/agents/{agent.agent_id}/", {"is_active": True})
        assert (await client.post(FETCH, headers=agent.headers)).status == 200

        await _patch(client, admin, f"/api/users/{agent.user_id}/", {"is_active": False})
        assert (await client.post(FETCH, headers=agent.headers)).status == 401  # cached now
        await _patch(client, admin, f"/api/users/{agent.user_id}/", {"is_active": True})
        # Deactivation revoked its tokens: the reactivated user logs in afresh.
        assert (await client.post(FETCH, headers=agent.headers)).status == 401
        login = await client.post(
            "/api/auth-token/", json={"username": agent.username, "password": PASSWORD}
        )
        assert login.status == 200, await login.text()
        agent.token = (await login.json())["token"]
        assert (await client.post(FETCH, headers=agent.headers)).status == 200


async def test_a_user_made_an_agent_or_an_admin_acts_as_one_at_once(client, make):
    await make.tickets(2)
    admin = await make.admin()
    user = await make.user()
    assert (await client.post(FETCH, headers=user.headers)).status == 403  # cached: no agent

    created = await client.post(
        "/api/agents/", json={"user": user.user_id, "capacity": 1}, headers=admin.headers
    )
    assert created.status == 201, await created.text()
    assert (await client.post(FETCH, headers=user.headers)).status == 200

    await _patch(client, admin, f"/api/users/{user.user_id}/", {"is_staff": True})
    assert (await client.post(FETCH, headers=user.headers)).status == 403
    assert (await client.get("/api/users/", headers=user.headers)).status == 200


async def test_a_deleted_user_is_refused_on_its_next_request(client, make):
    admin = await make.admin()
    user = await make.user()
    assert (await client.get(f"/api/users/{user.user_id}/", headers=user.headers)).status == 200
    deleted = await client.delete(f"/api/users/{user.user_id}/", headers=admin.headers)
    assert deleted.status == 204
    # The tokens went with the user; the cache must not outlive them here.
    assert (await client.get("/api/tickets/", headers=user.headers)).status == 401
