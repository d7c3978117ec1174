"""One leader per database; standbys answer 503 and take over when the leader goes."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from aiohttp.test_utils import TestClient

from dispatcher.actor import Dispatcher, DispatcherOptions
from storage.leadership import NotSafeForLeadership
from tests.support.in_process import AppServer
from web.app import create_app
from web.keys import DISPATCHER

FETCH = "/api/tickets/fetch_tickets/"


async def test_a_second_server_is_a_standby_and_takes_over(client, settings, make, db):
    await client.app[DISPATCHER].leading.wait()
    await make.tickets(3)
    agent = await make.agent(capacity=2)
    standby = TestClient(AppServer(create_app(settings)))
    await standby.start_server()
    try:
        await standby.app[DISPATCHER].standing_by.wait()
        refused = await standby.post(FETCH, headers=agent.headers)
        assert refused.status == 503
        assert refused.headers["Retry-After"] == "1"
        # The one error shape: no `leader` field that a standby cannot fill (`/readyz` names it).
        assert (await refused.json()).keys() == {"error", "detail"}
        assert (await refused.json())["error"] == "unavailable"
        first = await client.post(FETCH, headers=agent.headers)
        held = [t["id"] for t in (await first.json())["tickets"]]
        epoch_before = await db.fetchval("SELECT epoch FROM dispatcher_leadership")

        with structlog.testing.capture_logs() as logs:
            await client.app[DISPATCHER].stop()
            await standby.app[DISPATCHER].leading.wait()
        # The hand-over reads in the logs: released here, gained there.
        events = [entry["event"] for entry in logs if entry["event"].startswith("leadership")]
        assert events == ["leadership_released", "leadership_gained"], logs

        again = await standby.post(FETCH, headers=agent.headers)
        assert again.status == 200
        assert [t["id"] for t in (await again.json())["tickets"]] == held
        assert await db.fetchval("SELECT epoch FROM dispatcher_leadership") == epoch_before + 1
    finally:
        await standby.close()


async def test_refuses_to_start_when_commits_are_not_durable(settings, database_url, db):
    database = database_url.rsplit("/", 1)[1]
    await db.execute(f"ALTER DATABASE {database} SET synchronous_commit = off")
    server = AppServer(create_app(settings))
    with pytest.raises(NotSafeForLeadership, match="synchronous_commit"):
        await server.start_server()
    await server.close()


async def test_a_dispatcher_that_fails_to_lead_backs_off_and_announces_nothing(database_url, db):
    """A failure that repeats on every attempt (here a window no query can take, which the
    settings now refuse) was retried in a tight loop: the aborted connection's own
    lost-callback cut the one-second pause short, and each attempt claimed an epoch. Nor
    may a leadership that never finished loading count as lost."""
    broken = Dispatcher(
        database_url, identity="broken", options=DispatcherOptions(window_size=2**63)
    )
    await broken.start()
    try:
        await asyncio.sleep(2.5)
        assert broken.role != "leader"
        assert broken.stats.leadership_gained == 0
        assert broken.stats.leadership_lost == 0
    finally:
        await broken.stop()
    claims = await db.fetchval("SELECT epoch FROM dispatcher_leadership")
    assert claims <= 4  # one a second at most (it was about 18 a second)
