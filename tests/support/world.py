"""A world of one actor per role and their objects, kept as a template database that each
permission or validation test serves a copy of (tests/api/conftest.py has the fixtures)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from yarl import URL

from config.settings import Settings
from tests.support.factories import Factory
from tests.support.in_process import AppServer
from web.app import create_app
from web.auth import new_key
from web.keys import DISPATCHER

# Everything a CRUD request could touch, in a stable order, to compare before and after.
TABLES = ("users", "api_tokens", "agents", "tickets", "ticket_event_groups")


@dataclass(frozen=True)
class World:
    """Who is who in an arranged template database: each role's headers and the ids of
    the objects the table names."""

    server: str
    template: str
    headers: dict[str, dict[str, str]]
    ids: dict[str, int]


@dataclass(frozen=True)
class Served:
    client: TestClient[Any, Any]
    db: asyncpg.Connection


async def _on_server(server: str, statement: str) -> None:
    connection = await asyncpg.connect(server)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _copy(server: str, template: str, name: str) -> str:
    # WAL_LOG (the default) rather than FILE_COPY: no checkpoint, so a copy stays cheap while
    # other tests keep the server busy (about 0.15 s against 0.9 s on a loaded machine).
    await _on_server(server, f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY WAL_LOG")
    return str(URL(server).with_path(f"/{name}"))


async def _drop(server: str, name: str) -> None:
    await _on_server(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def arrange_world(server: str) -> World:
    """A template database (from the migrated one) with one actor per role and their objects;
    drop it with `drop_world`."""
    template = f"ts_world_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(await _copy(server, "ts_template", template))
    try:
        make = Factory(connection)
        admin = await make.admin(username="admin")
        plain = await make.user(username="plain")
        owner = await make.agent(username="owner")
        other = await make.agent(username="other")
        inactive = await make.agent(username="inactive", is_active=False)
        owner_ticket, free_ticket, sold_ticket = await make.tickets(3)
        await connection.execute(
            "UPDATE tickets SET status = 'assigned', agent_id = $2, assigned_at = now()"
            " WHERE id = $1",
            owner_ticket,
            owner.agent_id,
        )
        await connection.execute(
            "UPDATE tickets SET status = 'sold', agent_id = $2, assigned_at = now(),"
            " sold_at = now() WHERE id = $1",
            sold_ticket,
            inactive.agent_id,
        )
    finally:
        await connection.close()
    assert owner.agent_id is not None and other.agent_id is not None
    return World(
        server=server,
        template=template,
        headers={
            "anonymous": {},
            "bad token": {"Authorization": f"Token {new_key()}"},
            "plain user": plain.headers,
            "agent owner": owner.headers,
            "another agent": other.headers,
            "inactive agent": inactive.headers,
            "admin": admin.headers,
        },
        ids={
            "owner_user": owner.user_id,
            "owner_agent": owner.agent_id,
            "other_agent": other.agent_id,
            "plain_user": plain.user_id,
            "owner_ticket": owner_ticket,
            "free_ticket": free_ticket,
            "sold_ticket": sold_ticket,
        },
    )


async def drop_world(world: World) -> None:
    await _drop(world.server, world.template)


@contextlib.asynccontextmanager
async def serve_copy(world: World) -> AsyncIterator[Served]:
    """A fresh copy of the world served by its own app, once its dispatcher leads (the
    steady state: right after start a request to the dispatcher is a 503 with Retry-After)."""
    name = f"ts_{uuid.uuid4().hex[:16]}"
    url = await _copy(world.server, world.template, name)
    try:
        settings = Settings(
            database_url=url, db_pool_min_size=1, db_pool_max_size=4, log_level="warning"
        )
        app = create_app(settings)
        async with TestClient(AppServer(app)) as client:
            await asyncio.wait_for(app[DISPATCHER].leading.wait(), 10)
            db = await asyncpg.connect(url)
            try:
                yield Served(client, db)
            finally:
                await db.close()
    finally:
        await _drop(world.server, name)


async def dump_tables(db: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: [tuple(row) for row in await db.fetch(f"SELECT * FROM {table} ORDER BY id")]
        for table in TABLES
    }
