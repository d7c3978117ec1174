"""A leader connection of the tests' own, to drive the batch statement directly."""

from __future__ import annotations

import pytest

from storage.leadership import LeaderConnection

LOCK_KEY = 4242


@pytest.fixture
async def leader(database_url):
    connection = await LeaderConnection.acquire(
        database_url, lock_key=LOCK_KEY, holder="test", idle_timeout_s=30
    )
    yield connection
    await connection.close()
