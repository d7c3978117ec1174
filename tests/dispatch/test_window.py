"""The dispatcher's memory window and its safety nets, end to end on a real database."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from tests.support.in_process import AppServer
from web.app import create_app
from web.keys import DISPATCHER

FETCH = "/api/tickets/fetch_tickets/"


async def _serving(settings, **overrides) -> TestClient:
    client = TestClient(AppServer(create_app(settings.model_copy(update=overrides))))
    await client.start_server()
    await asyncio.wait_for(client.app[DISPATCHER].leading.wait(), 30)
    return client


async def _fetch(client, actor) -> list[int]:
    response = await client.post(FETCH, headers=actor.headers)
    assert response.status == 200, await response.text()
    return [t["id"] for t in (await response.json())["tickets"]]


async def test_a_window_smaller_than_the_backlog_still_hands_out_in_order(settings, make):
    ids = await make.tickets(4_500)
    client = await _serving(settings, dispatcher_window_size=1_000)
    try:
        dispatcher = client.app[DISPATCHER]
        assert dispatcher.queue_length == 1_000
        capacities = (1_000, 700, 1_000, 900, 1_000)
        agents = [await make.agent(capacity=c) for c in capacities]
        # All at once: a demand of over four times the window.
        replies = await asyncio.gather(*(_fetch(client, agent) for agent in agents))
        # Each served to its capacity until the 4,500 ran out: one agent at most is short,
        # by exactly what was missing.
        shortfalls = sorted(c - len(r) for c, r in zip(capacities, replies, strict=True))
        assert shortfalls == [0, 0, 0, 0, 100]
        assert sorted(t for reply in replies for t in reply) == ids
        assert dispatcher.queue_length <= 1_000
    finally:
        await client.close()


async def test_a_missed_notification_is_healed_by_the_periodic_rescan(settings, make, db):
    client = await _serving(settings, dispatcher_rescan_interval_s=0.2)
    try:
        dispatcher = client.app[DISPATCHER]
        agent = await make.agent(capacity=5)
        # As if the notification were lost: the insert trigger does not fire.
        await db.execute("ALTER TABLE tickets DISABLE TRIGGER tickets_notify_inserted")
        ids = await make.tickets(3)
        rescans = dispatcher.stats.rescans
        async with asyncio.timeout(10):
            while dispatcher.stats.rescans < rescans + 1 or dispatcher.queue_length < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert await _fetch(client, agent) == ids
    finally:
        await client.close()
