"""Migrations: a fresh database is migrated on start, an up-to-date one is left alone, and
processes starting together apply each migration exactly once."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp.test_utils import TestClient

from config.settings import Settings
from storage.migrate import available, migrate
from tests.support.in_process import AppServer
from web.app import create_app

VERSIONS = [version for version, _ in available()]


async def _app_answers(database_url: str) -> None:
    settings = Settings(database_url=database_url, db_pool_min_size=1, log_level="warning")
    async with TestClient(AppServer(create_app(settings))) as client:
        response = await client.get("/api/users/")
        assert response.status == 401
        assert (await response.json())["error"] == "not_authenticated"


async def test_a_fresh_database_is_migrated_once_then_left_alone(empty_database):
    assert VERSIONS and VERSIONS[0] == "0001_initial"
    assert await migrate(empty_database) == VERSIONS
    assert await migrate(empty_database) == []
    connection = await asyncpg.connect(empty_database)
    try:
        applied = await connection.fetch("SELECT version FROM schema_migrations ORDER BY version")
        tables = {
            row["tablename"]
            for row in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        views = {
            row["viewname"]
            for row in await connection.fetch(
                "SELECT viewname FROM pg_views WHERE schemaname = 'public'"
            )
        }
    finally:
        await connection.close()
    assert [row["version"] for row in applied] == VERSIONS
    assert {"users", "api_tokens", "agents", "tickets", "ticket_event_groups"} <= tables
    assert views == {"ticket_events"}
    await _app_answers(empty_database)


async def test_the_app_migrates_a_fresh_database_on_start_and_restarts_on_it(empty_database):
    await _app_answers(empty_database)
    await _app_answers(empty_database)
    assert await migrate(empty_database) == []


async def test_an_already_migrated_database_starts_unchanged(database_url):
    assert await migrate(database_url) == []
    await _app_answers(database_url)


async def test_processes_starting_together_apply_each_migration_once(empty_database):
    results = await asyncio.gather(*(migrate(empty_database) for _ in range(3)))
    # Each migration is its own transaction, so the work may be shared out; none twice.
    applied = [version for result in results for version in result]
    assert sorted(applied) == VERSIONS
