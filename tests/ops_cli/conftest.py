"""The operations commands end to end: the installed `tickets` script in a subprocess (run in a
worker thread, so that an in-process leader on the test's event loop keeps answering), against
this test's database; servers, when a test needs them, are in-process apps on that database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from config.settings import Settings
from tests.cli.conftest import Tickets, explain
from web.app import create_app
from web.keys import DISPATCHER

# Far above what any step takes; reached only when something is broken.
DEADLINE_S = 15


@pytest.fixture
def tickets(database_url: str, tmp_path: Path) -> Tickets:
    return Tickets(database_url=database_url, cwd=tmp_path)


async def run_json(tickets: Tickets, *args: str) -> Any:
    """Run `tickets *args --json`; exit 0 expected; the parsed stdout."""
    result = await tickets.run(*args, "--json")
    assert result.returncode == 0, explain(result)
    return json.loads(result.stdout)


@pytest.fixture
async def leader(client: TestClient) -> TestClient:
    """The `client` fixture's app, once it leads."""
    await asyncio.wait_for(client.app[DISPATCHER].leading.wait(), DEADLINE_S)
    return client


@pytest.fixture
async def standby(leader: TestClient, settings: Settings) -> AsyncIterator[TestClient]:
    """A second in-process server on the same database, waiting for the lock."""
    second = TestClient(TestServer(create_app(settings)))
    await second.start_server()
    try:
        await asyncio.wait_for(second.app[DISPATCHER].standing_by.wait(), DEADLINE_S)
        yield second
    finally:
        # The leader first: a standby's stop() would otherwise wait out its 10 s grace inside
        # pg_advisory_lock; this way it takes over, then stops at once.
        await leader.app[DISPATCHER].stop()
        await second.close()
