"""The permission matrix: every CRUD endpoint × method × role, and the exact status each gets.

One world is arranged once for the module and kept as a template database. Reads and
refusals run against one shared copy of it; a write that may succeed, or that reaches the
dispatcher, runs against a fresh copy of its own, so no cell depends on another. A refused
request must change nothing (the tables are compared before and after); an accepted write
must change something.

The rule behind the table (see web/handlers/users.py): 401 without a valid token; 404 when
the caller may not see the object at all; 403 when it can see it but may not do this.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from config.settings import Settings
from tests.support.factories import Factory
from web.app import create_app
from web.auth import new_key
from web.keys import DISPATCHER

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROLES = (
    "anonymous",
    "bad token",
    "plain user",
    "agent owner",
    "another agent",
    "inactive agent",
    "admin",
)

# Request bodies, by the name the table uses. A body names the world's objects in braces.
BODIES: dict[str, Any] = {
    "new user": {"username": "newcomer", "password": "a fresh password"},
    # The owner's record as it is, but for the email: a self-edit, allowed.
    "own record": {
        "username": "owner",
        "email": "owner@new.example",
        "is_staff": False,
        "is_active": True,
    },
    "email": {"email": "owner@new.example"},
    "new agent": {"user": "{plain_user}"},
    "full agent": {"capacity": 3, "is_active": True},
    "capacity": {"capacity": 3},
    "deactivate": {"is_active": False},
    "one ticket": {"title": "new"},
    "two tickets": [{"title": "a"}, {"title": "b"}],
    "full ticket": {"title": "renamed", "description": "rewritten"},
    "title": {"title": "renamed"},
}

# Paths name the world's objects in braces: the agent owner's user, agent and held ticket,
# another agent's agent (it holds nothing), a plain user, an unassigned ticket, and a ticket
# the inactive agent sold before it was deactivated.
# fmt: off
MATRIX: list[tuple[str, str, str | None, tuple[int, ...]]] = [
    # method  path                           body            anon bad plain owner other inact admin
    ("POST",   "/api/users/",                  "new user",    (401, 401, 403, 403, 403, 403, 201)),
    ("GET",    "/api/users/",                  None,          (401, 401, 403, 200, 200, 403, 200)),
    ("GET",    "/api/users/{owner_user}/",     None,          (401, 401, 404, 200, 403, 404, 200)),
    ("PUT",    "/api/users/{owner_user}/",     "own record",  (401, 401, 404, 200, 403, 404, 200)),
    ("PATCH",  "/api/users/{owner_user}/",     "email",       (401, 401, 404, 200, 403, 404, 200)),
    ("DELETE", "/api/users/{owner_user}/",     None,          (401, 401, 404, 403, 403, 404, 409)),
    ("DELETE", "/api/users/{plain_user}/",     None,          (401, 401, 403, 403, 403, 404, 204)),
    ("POST",   "/api/agents/",                 "new agent",   (401, 401, 403, 403, 403, 403, 201)),
    ("GET",    "/api/agents/",                 None,          (401, 401, 403, 200, 200, 403, 200)),
    ("GET",    "/api/agents/{owner_agent}/",   None,          (401, 401, 404, 200, 403, 404, 200)),
    ("PUT",    "/api/agents/{owner_agent}/",   "full agent",  (401, 401, 404, 403, 403, 404, 200)),
    ("PATCH",  "/api/agents/{owner_agent}/",   "capacity",    (401, 401, 404, 403, 403, 404, 200)),
    ("PATCH",  "/api/agents/{owner_agent}/",   "deactivate",  (401, 401, 404, 403, 403, 404, 200)),
    ("DELETE", "/api/agents/{owner_agent}/",   None,          (401, 401, 404, 403, 403, 404, 409)),
    ("DELETE", "/api/agents/{other_agent}/",   None,          (401, 401, 404, 403, 403, 404, 204)),
    ("POST",   "/api/agents/{owner_agent}/release/", None,    (401, 401, 404, 403, 403, 404, 200)),
    ("POST",   "/api/tickets/",                "one ticket",  (401, 401, 403, 403, 403, 403, 201)),
    ("POST",   "/api/tickets/",                "two tickets", (401, 401, 403, 403, 403, 403, 201)),
    ("GET",    "/api/tickets/",                None,          (401, 401, 200, 200, 200, 200, 200)),
    ("GET",    "/api/tickets/{owner_ticket}/", None,          (401, 401, 404, 200, 404, 404, 200)),
    ("GET",    "/api/tickets/{sold_ticket}/",  None,          (401, 401, 404, 404, 404, 404, 200)),
    ("PUT",    "/api/tickets/{owner_ticket}/", "full ticket", (401, 401, 404, 200, 404, 404, 200)),
    ("PATCH",  "/api/tickets/{owner_ticket}/", "title",       (401, 401, 404, 200, 404, 404, 200)),
    ("DELETE", "/api/tickets/{owner_ticket}/", None,          (401, 401, 404, 403, 404, 404, 409)),
    ("DELETE", "/api/tickets/{free_ticket}/",  None,          (401, 401, 404, 404, 404, 404, 204)),
]
# fmt: on

CELLS = [
    pytest.param(
        method,
        path,
        body,
        role,
        status,
        id=f"{method} {path}{f' ({body})' if body else ''} as {role}",
    )
    for method, path, body, statuses in MATRIX
    for role, status in zip(ROLES, statuses, strict=True)
]
# Everything a CRUD request could touch, in a stable order, to compare before and after.
TABLES = ("users", "api_tokens", "agents", "tickets", "ticket_events")


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
        async with TestClient(TestServer(app)) as client:
            await asyncio.wait_for(app[DISPATCHER].leading.wait(), 10)
            db = await asyncpg.connect(url)
            try:
                yield Served(client, db)
            finally:
                await db.close()
    finally:
        await _drop(world.server, name)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(template_ready: str) -> AsyncIterator[World]:
    arranged = await arrange_world(template_ready)
    yield arranged
    await drop_world(arranged)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(world: World) -> AsyncIterator[Served]:
    """One copy for every cell that must not change anything."""
    async with serve_copy(world) as served:
        yield served


def _fill(value: Any, ids: dict[str, int]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return ids[value[1:-1]]
    if isinstance(value, dict):
        return {key: _fill(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, ids) for item in value]
    return value


async def dump_tables(db: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: [tuple(row) for row in await db.fetch(f"SELECT * FROM {table} ORDER BY id")]
        for table in TABLES
    }


async def _check(
    served: Served,
    world: World,
    method: str,
    path: str,
    body: str | None,
    role: str,
    expected: int,
) -> None:
    before = await dump_tables(served.db)
    response = await served.client.request(
        method,
        path.format(**world.ids),
        json=_fill(BODIES[body], world.ids) if body else None,
        headers=world.headers[role],
    )
    text = await response.text()
    assert response.status == expected, text
    after = await dump_tables(served.db)
    if expected >= 400:
        assert (await response.json())["error"], text
        assert after == before, "a refused request changed the database"
    elif method != "GET":
        assert after != before, "an accepted write changed nothing"


@pytest.mark.parametrize(("method", "path", "body", "role", "expected"), CELLS)
async def test_permission(
    world: World,
    shared: Served,
    method: str,
    path: str,
    body: str | None,
    role: str,
    expected: int,
) -> None:
    may_write = method != "GET" and expected not in (401, 403, 404)
    if may_write:
        async with serve_copy(world) as served:
            await _check(served, world, method, path, body, role, expected)
    else:
        await _check(shared, world, method, path, body, role, expected)


async def test_the_matrix_covers_every_crud_route() -> None:
    """A new CRUD route must get its rows here."""
    from web.handlers import agents, tickets, users

    routes = {
        (operation.method, operation.path)
        for module in (users, agents, tickets)
        for operation in module.OPERATIONS
    }
    covered = {(method, re.sub(r"\{[a-z_]+\}", "{id}", path)) for method, path, _, _ in MATRIX}
    assert routes == covered
