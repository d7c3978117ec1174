"""Login throttling, revocation across processes, tokens at rest, hashing off the loop."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, make_mocked_request

from storage.database import Database
from tests.support.factories import PASSWORD
from tests.support.in_process import AppServer
from web.app import create_app
from web.auth import Authenticator
from web.keys import AUTHENTICATOR, LOGIN_THROTTLE, SETTINGS

LOGIN = "/api/auth-token/"
ME = "/api/users/{}/"


async def _second_server(settings) -> TestClient:
    client = TestClient(AppServer(create_app(settings)))
    await client.start_server()
    return client


async def _until_refused(client, path, headers, *, within_s: float) -> None:
    async with asyncio.timeout(within_s):
        while (await client.get(path, headers=headers)).status != 401:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_failed_logins_are_throttled_per_username_and_address(client, make):
    await make.user(username="carol")
    wrong = {"username": "carol", "password": "not her password"}
    statuses = [(await client.post(LOGIN, json=wrong)).status for _ in range(5)]
    assert statuses == [400] * 5
    throttled = await client.post(LOGIN, json={"username": "carol", "password": PASSWORD})
    assert throttled.status == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert (await throttled.json())["error"] == "too_many_requests"
    # Another username from the same address is not affected.
    await make.user(username="dave")
    other = await client.post(LOGIN, json={"username": "dave", "password": PASSWORD})
    assert other.status == 200


async def test_a_burst_of_guesses_gets_no_more_checks_than_the_limit(client, make):
    """Guesses sent at once are counted before their passwords are checked: the throttle
    once let every request in flight past it, as many guesses as the client had connections."""
    await make.user(username="erin")
    wrong = {"username": "erin", "password": "not her password"}
    answers = await asyncio.gather(*(client.post(LOGIN, json=wrong) for _ in range(30)))
    statuses = sorted(answer.status for answer in answers)
    assert statuses == [400] * 5 + [429] * 25
    right = await client.post(LOGIN, json={"username": "erin", "password": PASSWORD})
    assert right.status == 429


async def test_one_address_trying_many_usernames_is_throttled(settings, make):
    strict = await _second_server(
        settings.model_copy(update={"login_failures_allowed_per_address": 8})
    )
    try:
        guesses = [{"username": f"nobody{n}", "password": "password1"} for n in range(20)]
        answers = await asyncio.gather(*(strict.post(LOGIN, json=guess) for guess in guesses))
        assert sorted(answer.status for answer in answers) == [400] * 8 + [429] * 12
        # A right password from that address waits out the window too.
        await make.user(username="grace")
        right = await strict.post(LOGIN, json={"username": "grace", "password": PASSWORD})
        assert right.status == 429
        assert 1 <= int(right.headers["Retry-After"]) <= 60
    finally:
        await strict.close()


async def test_a_crowd_of_right_passwords_from_one_address_all_get_in(settings, make):
    """More logins at once than the address's limit: they wait their turn, none is refused."""
    strict = await _second_server(
        settings.model_copy(update={"login_failures_allowed_per_address": 4})
    )
    try:
        users = [await make.user(username=f"shift{n}") for n in range(12)]
        logins = [
            strict.post(LOGIN, json={"username": f"shift{n}", "password": PASSWORD})
            for n in range(len(users))
        ]
        assert [answer.status for answer in await asyncio.gather(*logins)] == [200] * 12
    finally:
        await strict.close()


async def test_a_login_name_that_the_database_cannot_hold_is_refused_by_validation(client):
    """A NUL once reached the query: PostgreSQL's own message as the detail, and a throttle
    entry left behind for every such name."""
    throttle = client.app[LOGIN_THROTTLE]
    for n in range(20):
        answer = await client.post(LOGIN, json={"username": f"a\u0000{n}", "password": "p"})
        body = await answer.json()
        assert answer.status == 400, body
        assert [item["field"] for item in body["detail"]] == ["username"]
    assert throttle.tracked_keys() == 0


async def test_a_revoked_token_stops_working_on_every_process_within_a_second(
    client, settings, make
):
    user = await make.user()
    path = ME.format(user.user_id)
    other = await _second_server(settings)
    try:
        for server in (client, other):  # both have it cached now
            assert (await server.get(path, headers=user.headers)).status == 200
        assert (await client.delete(LOGIN, headers=user.headers)).status == 204
        assert (await client.get(path, headers=user.headers)).status == 401  # at once here
        await _until_refused(other, path, user.headers, within_s=1.0)
    finally:
        await other.close()


async def test_deactivating_or_deleting_a_user_locks_it_out_everywhere_within_a_second(
    client, settings, make
):
    admin = await make.admin()
    deactivated, deleted = await make.user(), await make.user()
    other = await _second_server(settings)
    try:
        for actor in (deactivated, deleted):
            assert (await other.get(ME.format(actor.user_id), headers=actor.headers)).status == 200
        response = await client.patch(
            ME.format(deactivated.user_id), json={"is_active": False}, headers=admin.headers
        )
        assert response.status == 200
        response = await client.delete(ME.format(deleted.user_id), headers=admin.headers)
        assert response.status == 204
        await _until_refused(
            other, ME.format(deactivated.user_id), deactivated.headers, within_s=1.0
        )
        await _until_refused(other, ME.format(deleted.user_id), deleted.headers, within_s=1.0)
    finally:
        await other.close()


async def test_the_raw_token_is_stored_nowhere(client, make, db):
    await make.user(username="erin")
    response = await client.post(LOGIN, json={"username": "erin", "password": PASSWORD})
    token = (await response.json())["token"]
    tables = [
        r["tablename"]
        for r in await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    ]
    for table in tables:
        dump = await db.fetchval(f"SELECT coalesce(string_agg(t::text, ''), '') FROM {table} AS t")
        assert token not in dump, table
        assert PASSWORD not in dump, table


async def test_fifty_simultaneous_logins_do_not_stall_other_requests(client, make):
    await make.user(username="frank")
    body = {"username": "frank", "password": PASSWORD}
    logins = [asyncio.create_task(client.post(LOGIN, json=body)) for _ in range(50)]
    await asyncio.sleep(0)  # let them start
    health = await client.get("/healthz")
    assert health.status == 200
    # Hashing runs on a bounded thread pool: most logins are still queued when the event
    # loop has already answered the health check.
    assert sum(not task.done() for task in logins) >= 25
    statuses = [response.status for response in await asyncio.gather(*logins)]
    assert statuses == [200] * 50


async def test_keys_in_use_are_revalidated_together_not_one_by_one(client, make):
    """Busy agents must not cost a lookup each per TTL: the refresher keeps their keys warm.

    Without it, each of these users would be looked up again every TTL (about four more
    times each here); with it, only the first request of each reaches the single lookup.
    """
    authenticator = client.app[AUTHENTICATOR]
    users = [await make.user() for _ in range(20)]
    paths = [ME.format(user.user_id) for user in users]
    for user, path in zip(users, paths, strict=True):
        assert (await client.get(path, headers=user.headers)).status == 200
    loads, refreshes = authenticator.loads, authenticator.refreshes
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 4 * client.app[SETTINGS].auth_cache_ttl_s
    while loop.time() < deadline:
        for user, path in zip(users, paths, strict=True):
            assert (await client.get(path, headers=user.headers)).status == 200
        await asyncio.sleep(0.05)
    assert authenticator.refreshes - refreshes >= 2
    assert authenticator.loads - loads <= 5


async def test_a_refresh_that_fails_never_keeps_a_key_alive(database_url, make):
    """With the database gone, revalidation fails and the cached key expires on time: the
    next request must go to the store (and fail), never be served from a stale entry."""
    user = await make.user()
    database = await Database.connect(database_url, min_size=1, max_size=2)
    authenticator = Authenticator(database, cache_ttl_s=1.0)
    request = make_mocked_request("GET", "/", headers=user.headers)
    try:
        assert (await authenticator.principal(request)).user_id == user.user_id
        await authenticator.refresh()  # valid for one TTL from here
        assert authenticator.refreshes == 1
        await asyncio.sleep(0.6)
        assert (await authenticator.principal(request)).user_id == user.user_id  # still in use
    finally:
        await database.close()
    with pytest.raises(Exception):  # noqa: B017 - any failure of a closed pool will do
        await authenticator.refresh()
    await asyncio.sleep(0.6)  # past the good refresh's TTL, within one from the failed one
    loads = authenticator.loads
    with pytest.raises(Exception):  # noqa: B017
        await authenticator.principal(request)
    assert authenticator.loads == loads + 1  # it went to the store, not to the stale entry
