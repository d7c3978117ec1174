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

import re
from typing import Any

import pytest

from tests.support.world import Served, World, dump_tables, serve_copy

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


def _fill(value: Any, ids: dict[str, int]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return ids[value[1:-1]]
    if isinstance(value, dict):
        return {key: _fill(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, ids) for item in value]
    return value


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
