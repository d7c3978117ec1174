"""Users CRUD: what is stored and answered, pagination, and passwords (argon2id, never shown)."""

from __future__ import annotations

import asyncio

import structlog

from tests.support.factories import PASSWORD, password_hash
from web.keys import DISPATCHER, PASSWORDS

USER_FIELDS = {"id", "username", "email", "is_staff", "is_active", "date_joined"}
ARGON2ID = "$argon2id$v=19$m=19456,t=2,p=1$"
NEW_PASSWORD = "a brand new passphrase"


async def _post_login(client, username: str, password: str):
    return await client.post("/api/auth-token/", json={"username": username, "password": password})


async def _login(client, username: str, password: str) -> int:
    return (await _post_login(client, username, password)).status


async def test_create_user_stores_argon2id_and_never_shows_or_logs_the_password(client, make, db):
    admin = await make.admin()
    with structlog.testing.capture_logs() as logs:
        response = await client.post(
            "/api/users/",
            json={"username": "carol", "password": NEW_PASSWORD, "email": "carol@example.com"},
            headers=admin.headers,
        )
        text = await response.text()
        assert response.status == 201, text
        assert await _login(client, "carol", NEW_PASSWORD) == 200
    user = await response.json()
    assert set(user) == USER_FIELDS
    assert user["username"] == "carol"
    assert user["email"] == "carol@example.com"
    assert (user["is_staff"], user["is_active"]) == (False, True)
    assert NEW_PASSWORD not in text and "argon2" not in text
    assert NEW_PASSWORD not in repr(logs)
    assert any(entry["event"] == "user_created" for entry in logs)
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user["id"])
    assert stored.startswith(ARGON2ID)


async def test_create_staff_user(client, make, db):
    admin = await make.admin()
    response = await client.post(
        "/api/users/",
        json={"username": "dora", "password": NEW_PASSWORD, "is_staff": True},
        headers=admin.headers,
    )
    assert response.status == 201
    body = await response.json()
    assert body["is_staff"] is True and body["email"] == ""
    assert await db.fetchval("SELECT is_staff FROM users WHERE username = 'dora'") is True


async def test_duplicate_username_is_a_conflict_on_create_and_on_rename(client, make, db):
    admin = await make.admin()
    taken = await make.user(username="taken")
    other = await make.user(username="other")
    create = await client.post(
        "/api/users/", json={"username": "taken", "password": NEW_PASSWORD}, headers=admin.headers
    )
    assert create.status == 409
    assert (await create.json())["error"] == "conflict"
    rename = await client.patch(
        f"/api/users/{other.user_id}/", json={"username": "taken"}, headers=admin.headers
    )
    assert rename.status == 409
    names = await db.fetch(
        "SELECT id, username FROM users WHERE id = ANY($1::bigint[])",
        [taken.user_id, other.user_id],
    )
    assert {row["username"] for row in names} == {"taken", "other"}


async def test_list_pages_in_id_order_with_default_and_maximum_limits(client, make, db):
    agent = await make.agent()
    await db.execute(
        "INSERT INTO users (username, password_hash)"
        " SELECT 'bulk' || n, $1 FROM generate_series(1, 249) AS n",
        password_hash(),
    )
    ids = [row["id"] for row in await db.fetch("SELECT id FROM users ORDER BY id")]
    assert len(ids) == 250

    first = await (await client.get("/api/users/", headers=agent.headers)).json()
    assert first["count"] == 250
    assert [user["id"] for user in first["results"]] == ids[:50]
    assert first["previous"] is None
    assert first["next"] == "/api/users/?limit=50&offset=50"

    biggest = await (await client.get("/api/users/?limit=200", headers=agent.headers)).json()
    assert [user["id"] for user in biggest["results"]] == ids[:200]
    assert all(set(user) == USER_FIELDS for user in biggest["results"])

    last = await client.get("/api/users/?limit=200&offset=200", headers=agent.headers)
    last_page = await last.json()
    assert [user["id"] for user in last_page["results"]] == ids[200:]
    assert last_page["next"] is None
    assert last_page["previous"] == "/api/users/?limit=200&offset=0"

    middle = await (await client.get("/api/users/?limit=3&offset=4", headers=agent.headers)).json()
    assert [user["id"] for user in middle["results"]] == ids[4:7]
    assert middle["previous"].endswith("limit=3&offset=1")
    assert middle["next"].endswith("limit=3&offset=7")

    # Relative links: a claimed Host or a proxy's scheme cannot end up in them.
    claimed = await client.get(
        "/api/users/?limit=3", headers={**agent.headers, "Host": "evil.example.com"}
    )
    assert (await claimed.json())["next"] == "/api/users/?limit=3&offset=3"

    beyond = await (await client.get("/api/users/?offset=1000", headers=agent.headers)).json()
    assert beyond["results"] == [] and beyond["count"] == 250

    too_many = await client.get("/api/users/?limit=201", headers=agent.headers)
    assert too_many.status == 400


async def test_a_user_reads_itself_and_bearer_works_too(client, make):
    user = await make.user(username="erin")
    response = await client.get(
        f"/api/users/{user.user_id}/", headers={"Authorization": f"Bearer {user.token}"}
    )
    assert response.status == 200
    body = await response.json()
    assert set(body) == USER_FIELDS
    assert (body["id"], body["username"], body["email"]) == (
        user.user_id,
        "erin",
        "erin@example.com",
    )


async def test_a_user_changes_its_own_email_and_password(client, make, db):
    user = await make.user(username="fay")
    response = await client.patch(
        f"/api/users/{user.user_id}/",
        json={"email": "fay@new.example", "password": NEW_PASSWORD, "current_password": PASSWORD},
        headers=user.headers,
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["email"] == "fay@new.example"
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user.user_id)
    assert stored.startswith(ARGON2ID) and stored != password_hash()
    assert await _login(client, "fay", NEW_PASSWORD) == 200
    assert await _login(client, "fay", PASSWORD) == 400


async def _token(client, username: str, password: str) -> dict[str, str]:
    """A second login: another token of the same user, as authorisation headers."""
    response = await _post_login(client, username, password)
    assert response.status == 200, await response.text()
    return {"Authorization": f"Token {(await response.json())['token']}"}


async def _tokens_of(db, user_id: int) -> int:
    return await db.fetchval("SELECT count(*) FROM api_tokens WHERE user_id = $1", user_id)


async def test_a_new_password_signs_the_user_out_everywhere_but_here(client, make, db):
    user = await make.user(username="kim")
    elsewhere = await _token(client, "kim", PASSWORD)
    me = f"/api/users/{user.user_id}/"
    # Used once, so this process has it cached: revocation must not wait for the cache.
    assert (await client.get(me, headers=elsewhere)).status == 200
    response = await client.patch(
        me, json={"password": NEW_PASSWORD, "current_password": PASSWORD}, headers=user.headers
    )
    assert response.status == 200, await response.text()
    assert (await client.get(me, headers=elsewhere)).status == 401
    assert (await client.get(me, headers=user.headers)).status == 200
    assert await _tokens_of(db, user.user_id) == 1


async def test_a_password_set_by_an_admin_revokes_every_token_of_the_user(client, make, db):
    admin = await make.admin()
    user = await make.user(username="lee")
    me = f"/api/users/{user.user_id}/"
    assert (await client.get(me, headers=user.headers)).status == 200
    response = await client.patch(me, json={"password": NEW_PASSWORD}, headers=admin.headers)
    assert response.status == 200, await response.text()
    assert (await client.get(me, headers=user.headers)).status == 401
    assert await _tokens_of(db, user.user_id) == 0
    assert (await client.get(me, headers=admin.headers)).status == 200
    assert await _login(client, "lee", NEW_PASSWORD) == 200


async def test_changes_without_a_password_keep_every_token(client, make, db):
    admin = await make.admin()
    user = await make.user(username="max")
    elsewhere = await _token(client, "max", PASSWORD)
    me = f"/api/users/{user.user_id}/"
    assert (
        await client.patch(me, json={"email": "max@new.example"}, headers=user.headers)
    ).status == 200
    assert (await client.patch(me, json={"is_staff": False}, headers=admin.headers)).status == 200
    for headers in (user.headers, elsewhere):
        assert (await client.get(me, headers=headers)).status == 200
    assert await _tokens_of(db, user.user_id) == 2


async def test_a_user_puts_its_own_record_back_with_a_new_email(client, make, db):
    user = await make.user(username="gus")
    response = await client.put(
        f"/api/users/{user.user_id}/",
        json={"username": "gus", "email": "gus@new.example", "is_staff": False, "is_active": True},
        headers=user.headers,
    )
    assert response.status == 200, await response.text()
    row = await db.fetchrow("SELECT email, password_hash FROM users WHERE id = $1", user.user_id)
    assert row["email"] == "gus@new.example"
    # PUT without a password keeps the one there is.
    assert row["password_hash"] == password_hash()


async def test_self_promotion_is_refused_and_changes_nothing(client, make, db):
    user = await make.user(username="hal")
    before = await db.fetchrow("SELECT * FROM users WHERE id = $1", user.user_id)
    response = await client.patch(
        f"/api/users/{user.user_id}/",
        json={"email": "hal@new.example", "is_staff": True},
        headers=user.headers,
    )
    assert response.status == 403
    assert "is_staff" in (await response.json())["detail"]
    assert await db.fetchrow("SELECT * FROM users WHERE id = $1", user.user_id) == before


async def test_admin_changes_any_field_and_a_deactivated_user_is_locked_out(client, make, db):
    admin = await make.admin()
    user = await make.user(username="ivy")
    response = await client.patch(
        f"/api/users/{user.user_id}/",
        json={"username": "ivy2", "is_staff": True, "is_active": False},
        headers=admin.headers,
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert (body["username"], body["is_staff"], body["is_active"]) == ("ivy2", True, False)
    row = await db.fetchrow(
        "SELECT username, is_staff, is_active FROM users WHERE id = $1", user.user_id
    )
    assert tuple(row) == ("ivy2", True, False)
    assert (await client.get(f"/api/users/{user.user_id}/", headers=user.headers)).status == 401

    replaced = await client.put(
        f"/api/users/{user.user_id}/",
        json={
            "username": "ivy",
            "email": "",
            "is_staff": False,
            "is_active": True,
            "password": NEW_PASSWORD,
        },
        headers=admin.headers,
    )
    assert replaced.status == 200
    assert await _login(client, "ivy", NEW_PASSWORD) == 200


async def test_delete_a_user_takes_its_tokens(client, make, db):
    admin = await make.admin()
    user = await make.user()
    response = await client.delete(f"/api/users/{user.user_id}/", headers=admin.headers)
    assert response.status == 204
    assert await response.read() == b""
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", user.user_id) == 0
    assert (
        await db.fetchval("SELECT count(*) FROM api_tokens WHERE user_id = $1", user.user_id) == 0
    )
    again = await client.delete(f"/api/users/{user.user_id}/", headers=admin.headers)
    assert again.status == 404


async def test_delete_a_user_with_an_idle_agent_deletes_the_agent_through_the_dispatcher(
    serve, make, db
):
    admin = await make.admin()
    agent = await make.agent()
    client = await serve()
    response = await client.delete(f"/api/users/{agent.user_id}/", headers=admin.headers)
    assert response.status == 204, await response.text()
    assert await db.fetchval("SELECT count(*) FROM agents WHERE id = $1", agent.agent_id) == 0
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", agent.user_id) == 0


async def test_a_user_whose_agent_holds_or_sold_tickets_cannot_be_deleted(serve, make, db):
    admin = await make.admin()
    holder = await make.agent(capacity=1)
    seller = await make.agent(capacity=1)
    await make.tickets(2)
    client = await serve()
    dispatcher = client.app[DISPATCHER]
    await dispatcher.fetch(holder.agent_id)
    [sold] = await dispatcher.fetch(seller.agent_id)
    await dispatcher.sell(seller.agent_id, [sold["id"]])
    before = await db.fetch("SELECT * FROM users ORDER BY id")

    holds = await client.delete(f"/api/users/{holder.user_id}/", headers=admin.headers)
    assert holds.status == 409
    sold_some = await client.delete(f"/api/users/{seller.user_id}/", headers=admin.headers)
    assert sold_some.status == 409
    assert "deactivate" in (await sold_some.json())["detail"]
    assert await db.fetch("SELECT * FROM users ORDER BY id") == before
    assert await db.fetchval("SELECT count(*) FROM agents") == 2


async def test_the_last_active_admin_cannot_be_demoted_deactivated_or_deleted(client, make, db):
    admin = await make.admin()
    me = f"/api/users/{admin.user_id}/"
    before = await db.fetchrow("SELECT * FROM users WHERE id = $1", admin.user_id)
    for method, body in (
        ("PATCH", {"is_staff": False}),
        ("PATCH", {"is_active": False}),
        ("PUT", {"username": admin.username, "email": "", "is_staff": True, "is_active": False}),
        ("DELETE", None),
    ):
        response = await client.request(method, me, json=body, headers=admin.headers)
        assert response.status == 409, (method, body, await response.text())
        assert "last active admin" in (await response.json())["detail"]
    assert await db.fetchrow("SELECT * FROM users WHERE id = $1", admin.user_id) == before
    # Anything else about the last admin may change.
    response = await client.patch(me, json={"email": "boss@new.example"}, headers=admin.headers)
    assert response.status == 200, await response.text()


async def test_an_admin_goes_once_another_remains(client, make, db):
    first, second = await make.admin(username="first"), await make.admin(username="second")
    response = await client.patch(
        f"/api/users/{second.user_id}/", json={"is_active": False}, headers=first.headers
    )
    assert response.status == 200, await response.text()
    response = await client.delete(f"/api/users/{first.user_id}/", headers=first.headers)
    assert response.status == 409, await response.text()
    promoted = await make.user(username="third")
    response = await client.patch(
        f"/api/users/{promoted.user_id}/", json={"is_staff": True}, headers=first.headers
    )
    assert response.status == 200, await response.text()
    response = await client.delete(f"/api/users/{first.user_id}/", headers=first.headers)
    assert response.status == 204, await response.text()
    assert await db.fetchval("SELECT count(*) FROM users WHERE is_staff AND is_active") == 1


async def test_two_admins_removing_each_other_at_once_leave_one(client, make, db):
    """Each request alone is allowed (the other admin remains); together only one may be."""
    for round_no in range(10):
        a = await make.admin(username=f"a{round_no}")
        b = await make.admin(username=f"b{round_no}")
        await db.execute(
            "UPDATE users SET is_active = false WHERE is_staff AND id <> ALL($1::bigint[])",
            [a.user_id, b.user_id],
        )
        statuses = sorted(
            response.status
            for response in await asyncio.gather(
                client.patch(
                    f"/api/users/{b.user_id}/", json={"is_staff": False}, headers=a.headers
                ),
                client.patch(
                    f"/api/users/{a.user_id}/", json={"is_staff": False}, headers=b.headers
                ),
            )
        )
        # The loser is refused as the last admin (409), or, when the winner committed before
        # the loser's request was authorised, is no admin any more and sees no one (404).
        assert statuses in ([200, 404], [200, 409]), (round_no, statuses)
        assert await db.fetchval("SELECT count(*) FROM users WHERE is_staff AND is_active") == 1


async def test_a_removal_decided_on_a_stale_read_still_keeps_an_admin(
    client, make, db, monkeypatch
):
    """A request that read its target as no active admin, then waited (here in password
    hashing) while others made the target the only active admin, wrote its deactivation
    unchecked: no active admin was left (the black-box probe did it 4 times in 4)."""
    boss = await make.admin(username="boss")
    spare = await make.admin(username="spare", is_active=False)
    hashing = asyncio.Event()
    may_finish = asyncio.Event()
    hasher = client.app[PASSWORDS]
    real_hash = hasher.hash

    async def held_hash(password: str) -> str:
        hashing.set()
        await may_finish.wait()
        return await real_hash(password)

    monkeypatch.setattr(hasher, "hash", held_hash)
    spare_url = f"/api/users/{spare.user_id}/"
    stale = asyncio.create_task(
        client.patch(
            spare_url,
            json={"is_active": False, "password": "a new passphrase"},
            headers=boss.headers,
        )
    )
    await asyncio.wait_for(hashing.wait(), 10)
    response = await client.patch(spare_url, json={"is_active": True}, headers=boss.headers)
    assert response.status == 200, await response.text()
    response = await client.patch(
        f"/api/users/{boss.user_id}/", json={"is_staff": False}, headers=boss.headers
    )
    assert response.status == 200, await response.text()
    may_finish.set()

    response = await asyncio.wait_for(stale, 10)
    assert response.status == 409, await response.text()
    assert "last active admin" in (await response.json())["detail"]
    assert await db.fetchval("SELECT count(*) FROM users WHERE is_staff AND is_active") == 1


async def test_deactivation_revokes_the_users_tokens_so_reactivation_revives_none(client, make, db):
    """A compromised account is deactivated; reactivated, it used to accept every old token
    again, the attacker's included. Its owner now logs in afresh."""
    admin = await make.admin()
    user = await make.user(username="jay")
    url = f"/api/users/{user.user_id}/"
    for is_active in (False, True):
        response = await client.patch(url, json={"is_active": is_active}, headers=admin.headers)
        assert response.status == 200, await response.text()

    assert (
        await db.fetchval("SELECT count(*) FROM api_tokens WHERE user_id = $1", user.user_id) == 0
    )
    assert (await client.get(url, headers=user.headers)).status == 401
    # A change that leaves is_active alone, or sets it true, keeps the tokens.
    fresh = await make.user(username="kay")
    for body in ({"email": "kay@new.example"}, {"is_active": True}):
        response = await client.patch(
            f"/api/users/{fresh.user_id}/", json=body, headers=admin.headers
        )
        assert response.status == 200, await response.text()
    assert (await client.get(f"/api/users/{fresh.user_id}/", headers=fresh.headers)).status == 200


async def test_a_users_own_new_password_needs_the_current_one(client, make, db):
    """A token alone (a leaked one, say) changed the password, signed the owner out
    everywhere else and kept the thief's session: it took over the account."""
    user = await make.user(username="nell")
    me = f"/api/users/{user.user_id}/"
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user.user_id)
    for confirmation in ({}, {"current_password": "not my password"}):
        response = await client.patch(
            me, json={"password": NEW_PASSWORD, **confirmation}, headers=user.headers
        )
        assert response.status == 403, await response.text()
        assert "current_password" in (await response.json())["detail"]
    assert (
        await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user.user_id) == stored
    )
    assert await _login(client, "nell", PASSWORD) == 200
    # An admin setting someone else's password needs none (it is not theirs to know).
    admin = await make.admin()
    response = await client.patch(me, json={"password": NEW_PASSWORD}, headers=admin.headers)
    assert response.status == 200, await response.text()


async def test_guessing_the_current_password_is_throttled_like_logins(client, make):
    user = await make.user(username="olga")
    me = f"/api/users/{user.user_id}/"
    statuses = []
    for _ in range(6):
        response = await client.patch(
            me, json={"password": NEW_PASSWORD, "current_password": "a guess"}, headers=user.headers
        )
        statuses.append(response.status)
    assert statuses == [403] * 5 + [429]
    assert await _login(client, "olga", PASSWORD) == 429  # the same (username, address) limit
