"""Behind a transaction pooler a session advisory lock means nothing: the service refuses."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient

from storage.leadership import NotSafeForLeadership, check_database
from tests.support import pgbouncer
from tests.support.in_process import AppServer
from web.app import create_app
from web.keys import DISPATCHER

pytestmark = pytest.mark.skipif(
    not pgbouncer.available(), reason="pgbouncer is not installed (.ci/run installs it)"
)


async def test_refuses_to_start_behind_a_transaction_pooler(settings, database_url):
    with pgbouncer.pgbouncer(database_url, pool_mode="transaction") as pooled:
        with pytest.raises(NotSafeForLeadership, match="transaction-pooled"):
            await check_database(pooled)
        server = AppServer(create_app(settings.model_copy(update={"database_url": pooled})))
        with pytest.raises(NotSafeForLeadership, match="transaction-pooled"):
            await server.start_server()
        await server.close()


async def test_serves_behind_a_session_pooler(settings, database_url, make):
    (ticket,) = await make.tickets(1)
    agent = await make.agent()
    with pgbouncer.pgbouncer(database_url, pool_mode="session") as pooled:
        await check_database(pooled)
        client = TestClient(
            AppServer(create_app(settings.model_copy(update={"database_url": pooled})))
        )
        await client.start_server()
        try:
            await asyncio.wait_for(client.app[DISPATCHER].leading.wait(), 30)
            response = await client.post("/api/tickets/fetch_tickets/", headers=agent.headers)
            assert response.status == 200
            assert [t["id"] for t in (await response.json())["tickets"]] == [ticket]
        finally:
            await client.close()
