"""A leader connection of the tests' own, to drive the batch statement directly, and
in-process dispatchers with the options a test needs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dispatcher.actor import Dispatcher, DispatcherOptions
from storage.leadership import LeaderConnection

LOCK_KEY = 4242


@pytest.fixture
async def leader(database_url):
    connection = await LeaderConnection.acquire(
        database_url, lock_key=LOCK_KEY, holder="test", idle_timeout_s=30
    )
    yield connection
    await connection.close()


@pytest.fixture
async def start_dispatcher(database_url: str) -> AsyncIterator:
    """Start a dispatcher with given options on the test's database, once it leads;
    every one started is stopped afterwards."""
    started: list[Dispatcher] = []

    async def start(options: DispatcherOptions) -> Dispatcher:
        dispatcher = Dispatcher(database_url, identity="test", options=options)
        started.append(dispatcher)
        await dispatcher.start()
        await asyncio.wait_for(dispatcher.leading.wait(), 10)
        return dispatcher

    yield start
    for dispatcher in started:
        await dispatcher.stop()
