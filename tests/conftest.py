"""Every test runs against a real PostgreSQL: a private embedded cluster started once per session
(or the server at TEST_DATABASE_URL), with a migrated template database cloned per test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from config.settings import Settings
from storage.migrate import migrate
from tests.support.factories import Factory
from tests.support.in_process import AppServer
from tests.support.postgres import Cluster
from web.app import create_app
from web.keys import DISPATCHER

TEMPLATE = "ts_template"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A maintenance DSN of the server the tests use."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    cluster = Cluster()
    cluster.start()
    try:
        yield cluster.dsn()
    finally:
        cluster.destroy()


def _with_database(dsn: str, database: str) -> str:
    return str(URL(dsn).with_path(f"/{database}"))


async def _create_template(server: str) -> None:
    connection = await asyncpg.connect(server)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        await connection.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await connection.close()
    await migrate(_with_database(server, TEMPLATE))


@pytest.fixture(scope="session")
def template_ready(server_url: str) -> str:
    asyncio.run(_create_template(server_url))
    return server_url


@contextlib.asynccontextmanager
async def _scratch_database(server: str, *, template: str | None) -> AsyncIterator[str]:
    """A database of the test's own, dropped afterwards; its URL."""
    name = f"ts_{uuid.uuid4().hex[:16]}"
    clone = f" TEMPLATE {template} STRATEGY WAL_LOG" if template else ""
    connection = await asyncpg.connect(server)
    try:
        await connection.execute(f"CREATE DATABASE {name}{clone}")
    finally:
        await connection.close()
    try:
        yield _with_database(server, name)
    finally:
        connection = await asyncpg.connect(server)
        try:
            await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await connection.close()


@pytest.fixture
async def database_url(template_ready: str) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own."""
    async with _scratch_database(template_ready, template=TEMPLATE) as url:
        yield url


@pytest.fixture
async def empty_database(server_url: str) -> AsyncIterator[str]:
    """A new database with nothing in it, not even schema_migrations."""
    async with _scratch_database(server_url, template=None) as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: object) -> Settings:
    return Settings(
        database_url=database_url, db_pool_min_size=1, db_pool_max_size=10, log_level="warning"
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for arranging and asserting in SQL."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
def make(db: asyncpg.Connection) -> Factory:
    return Factory(db)


# Far above what any start-up takes; reached only when something is broken.
LEAD_DEADLINE_S = 30


@pytest.fixture
async def client(settings: Settings, aiohttp_client):
    client = await aiohttp_client(AppServer(create_app(settings)))
    # Fetch and sell answer 503 until the dispatcher leads; tests start from a leading server.
    await asyncio.wait_for(client.app[DISPATCHER].leading.wait(), LEAD_DEADLINE_S)
    return client


@pytest.fixture
def serve(settings: Settings, aiohttp_client):
    """Start the app once the test has arranged its data, so the dispatcher's first snapshot
    holds it (tickets inserted later reach it by NOTIFY, a moment later), and wait until the
    dispatcher leads. (Depending on `settings` first makes the app stop before its database
    is dropped.)"""

    async def start() -> TestClient:
        client = await aiohttp_client(AppServer(create_app(settings)))
        await asyncio.wait_for(client.app[DISPATCHER].leading.wait(), LEAD_DEADLINE_S)
        return client

    return start


@pytest.fixture
def leader(client: TestClient) -> TestClient:
    """The `client` fixture's app, which leads."""
    return client


@pytest.fixture
async def standby(leader: TestClient, settings: Settings) -> AsyncIterator[TestClient]:
    """A second in-process server on the same database, waiting for the lock."""
    second = TestClient(AppServer(create_app(settings)))
    await second.start_server()
    try:
        await asyncio.wait_for(second.app[DISPATCHER].standing_by.wait(), LEAD_DEADLINE_S)
        yield second
    finally:
        await second.close()
