"""Liveness and readiness of a leader, a standby, a leader that lost its lock, and no database."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient

from tests.support.in_process import AppServer
from tests.support.proxy import Proxy
from web.app import create_app
from web.keys import DATABASE, DISPATCHER

FETCH = "/api/tickets/fetch_tickets/"
DEADLINE_S = 15  # seconds; only reached when something is broken
# Far above the probe's own 0.5 s, far below a frozen database's indefinite silence.
FROZEN_ANSWER_BOUND_S = 5


async def readiness(client: TestClient) -> tuple[int, dict]:
    response = await client.get("/readyz")
    body = await response.json()
    if response.status == 503:
        assert response.headers["Retry-After"] == "1"
    else:
        assert "Retry-After" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    return response.status, body


async def leadership(db) -> dict:
    return dict(
        await db.fetchrow("SELECT epoch, holder, holder_pid, since FROM dispatcher_leadership")
    )


async def test_liveness_answers_ok(client):
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    assert response.headers["X-Request-ID"]


async def test_the_leader_is_ready_and_reports_its_backlog(leader, make, db):
    await make.tickets(5)
    agent = await make.agent(capacity=2)
    fetched = await leader.post(FETCH, headers=agent.headers)
    assert fetched.status == 200

    status, body = await readiness(leader)

    row = await leadership(db)
    assert status == 200
    assert body == {
        "ready": True,
        "role": "leader",
        "reason": None,
        "leader": {
            "identity": leader.app[DISPATCHER].identity,
            "epoch": row["epoch"],
            "since": row["since"].isoformat().replace("+00:00", "Z"),
            "pid": row["holder_pid"],
        },
        "database": "ok",
        "backlog": 3,
    }


async def test_a_standby_is_not_ready_and_names_the_leader(leader, standby, db):
    status, body = await readiness(standby)

    row = await leadership(db)
    assert status == 503
    assert body["role"] == "standby"
    assert body["reason"] == "not_leader"
    assert body["database"] == "ok"
    assert body["backlog"] is None
    assert body["leader"]["identity"] == row["holder"] == leader.app[DISPATCHER].identity
    assert body["leader"]["epoch"] == row["epoch"] == leader.app[DISPATCHER].epoch
    assert body["leader"]["pid"] == row["holder_pid"]
    assert (await readiness(leader))[0] == 200


async def test_a_leader_that_loses_its_lock_stops_being_ready_until_it_leads_again(
    leader, db, settings
):
    dispatcher = leader.app[DISPATCHER]
    status, before = await readiness(leader)
    assert status == 200
    left = asyncio.create_task(dispatcher.standing_by.wait())

    # End the leader's lock session, and queue for the lock ourselves before the dispatcher
    # can reconnect: it stays a standby, observably, until we let go.
    await db.execute("SELECT pg_terminate_backend(holder_pid) FROM dispatcher_leadership")
    await db.execute("SELECT pg_advisory_lock($1)", settings.dispatcher_lock_key)
    await asyncio.wait_for(left, DEADLINE_S)

    status, during = await readiness(leader)
    assert status == 503
    assert during["role"] == "standby"
    assert during["reason"] == "not_leader"
    assert during["leader"] == {
        "identity": None,
        "epoch": None,
        "since": None,
        "pid": await db.fetchval("SELECT pg_backend_pid()"),
    }

    await db.execute("SELECT pg_advisory_unlock($1)", settings.dispatcher_lock_key)
    await asyncio.wait_for(dispatcher.leading.wait(), DEADLINE_S)

    status, after = await readiness(leader)
    assert status == 200
    assert after["leader"]["epoch"] == before["leader"]["epoch"] + 1
    assert after["leader"]["pid"] != before["leader"]["pid"]
    assert dispatcher.stats.leadership_lost == 1


async def test_a_leader_fenced_by_a_newer_epoch_is_not_ready(leader, db):
    # As if another process had taken the lock and claimed the next epoch while this one has
    # not yet noticed (a half-open connection): the database's word wins.
    await db.execute("UPDATE dispatcher_leadership SET epoch = epoch + 1")

    status, body = await readiness(leader)

    assert status == 503
    assert body["role"] == "leader"
    assert body["reason"] == "lock_lost"


async def test_liveness_needs_no_database_but_readiness_does(leader):
    await leader.app[DATABASE].close()

    live = await leader.get("/healthz")
    status, body = await readiness(leader)

    assert live.status == 200
    assert status == 503
    assert body["database"] == "unavailable"
    assert body["reason"] == "database_unavailable"
    assert body["role"] == "leader"
    assert body["leader"]["identity"] == leader.app[DISPATCHER].identity


async def test_readiness_answers_while_the_database_is_frozen(
    database_url, settings, aiohttp_client
):
    """A database that takes no traffic at all (frozen, partitioned): the probe says so within
    its own timeout instead of hanging with it. Bounded in time, not timed."""
    async with Proxy.to(database_url) as proxy:
        app = create_app(settings.model_copy(update={"database_url": proxy.dsn(database_url)}))
        client = await aiohttp_client(AppServer(app))
        await asyncio.wait_for(client.app[DISPATCHER].leading.wait(), DEADLINE_S)
        assert (await readiness(client))[0] == 200
        proxy.stall()
        try:
            async with asyncio.timeout(FROZEN_ANSWER_BOUND_S):
                status, body = await readiness(client)
        finally:
            proxy.resume()
        assert status == 503
        assert body["reason"] == "database_unavailable"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_answer_head_as_they_answer_get(client, path):
    """Load balancers and uptime checks often probe with HEAD: the same status and headers,
    no body."""
    got = await client.get(path)
    head = await client.head(path)
    assert head.status == got.status == 200
    assert head.headers["Content-Type"] == got.headers["Content-Type"]
    assert await head.read() == b""
