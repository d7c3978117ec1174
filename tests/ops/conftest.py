"""A leading server (the `client` fixture's, once it leads) and a standby beside it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from config.settings import Settings
from web.app import create_app
from web.keys import DISPATCHER

# Far above what any step here takes; only reached when something is broken.
DEADLINE_S = 15


@pytest.fixture
async def leader(client: TestClient) -> TestClient:
    await asyncio.wait_for(client.app[DISPATCHER].leading.wait(), DEADLINE_S)
    return client


@pytest.fixture
async def standby(leader: TestClient, settings: Settings) -> AsyncIterator[TestClient]:
    """A second in-process server on the same database: it waits for the lock."""
    second = TestClient(TestServer(create_app(settings)))
    await second.start_server()
    try:
        await asyncio.wait_for(second.app[DISPATCHER].standing_by.wait(), DEADLINE_S)
        yield second
    finally:
        # Stop the leader first: a standby's stop() otherwise waits out its 10 s grace inside
        # pg_advisory_lock (see the report); this way it takes over and then stops at once.
        await leader.app[DISPATCHER].stop()
        await second.close()
