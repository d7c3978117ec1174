"""Malformed and over-reaching requests: each is refused with the right status, error code and
field, in the one error shape `{"error", "detail"}`, and changes nothing in the database.

Every case runs against one world shared by the module (see test_permissions.py): a refused
request must not change it, and that is asserted after each case.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.world import (
    Served,
    World,
    dump_tables,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

MIB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    role: str
    method: str
    path: str
    status: int
    error: str
    # The field the detail must name (dotted for nested ones), when there is one.
    names: str | None = None
    json: Any = None
    # A raw body instead of `json`, sent with `headers`.
    data: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def invalid(role: str, method: str, path: str, body: Any, names: str) -> Case:
    return Case(role, method, path, 400, "invalid", names=names, json=body)


def forbidden(role: str, method: str, path: str, body: Any) -> Case:
    return Case(role, method, path, 403, "permission_denied", json=body)


USERS, AGENTS, TICKETS = "/api/users/", "/api/agents/", "/api/tickets/"
OWN_USER, OWN_AGENT = "/api/users/{owner_user}/", "/api/agents/{owner_agent}/"
OWN_TICKET = "/api/tickets/{owner_ticket}/"
SELL = "/api/tickets/sell_tickets/"
PASSWORD = "long enough password"
JSON = {"Content-Type": "application/json"}

CASES: dict[str, Case] = {
    # The body is not JSON, or not the JSON the operation takes.
    "broken json": Case(
        "admin", "POST", TICKETS, 400, "bad_request", data=b'{"title": ', headers=JSON
    ),
    "empty body": Case("admin", "POST", USERS, 400, "bad_request", data=b"", headers=JSON),
    "not utf-8": Case(
        "admin", "POST", TICKETS, 400, "bad_request", data=b'{"title": "\xff"}', headers=JSON
    ),
    "a string, not an object": invalid("admin", "POST", TICKETS, "a title", "body"),
    # Python's int() refuses a literal of over 4,300 digits: a 400, not an unhandled error.
    "a sale naming a 5,000-digit id": Case(
        "agent owner",
        "POST",
        SELL,
        400,
        "bad_request",
        data=b'{"ticket_ids": [' + b"1" * 5000 + b"]}",
        headers=JSON,
    ),
    "a login with a 4,400-digit number": Case(
        "plain user",
        "POST",
        "/api/auth-token/",
        400,
        "bad_request",
        data=b'{"username": "x", "password": "y", "z": ' + b"9" * 4400 + b"}",
        headers=JSON,
    ),
    "a body nested 100,000 deep": Case(
        "admin",
        "POST",
        TICKETS,
        400,
        "bad_request",
        data=b"[" * 100_000 + b"]" * 100_000,
        headers=JSON,
    ),
    "a body that is not the gzip it claims": Case(
        "admin",
        "POST",
        TICKETS,
        400,
        "bad_request",
        data=b'{"title": "t"}',
        headers={**JSON, "Content-Encoding": "gzip"},
    ),
    "a body that is not the deflate it claims": Case(
        "agent owner",
        "POST",
        SELL,
        400,
        "bad_request",
        data=b'{"ticket_ids": [1]}',
        headers={**JSON, "Content-Encoding": "deflate"},
    ),
    # A key named twice in one object, at any depth: JSON leaves its meaning open.
    "a login naming its password twice": Case(
        "plain user",
        "POST",
        "/api/auth-token/",
        400,
        "bad_request",
        data=b'{"username": "plain", "password": "x", "password": "long enough password"}',
        headers=JSON,
    ),
    "a batch whose second ticket names its title twice": Case(
        "admin",
        "POST",
        TICKETS,
        400,
        "bad_request",
        data=b'[{"title": "a"}, {"title": "b", "description": "", "title": "c"}]',
        headers=JSON,
    ),
    "an array of strings": invalid("admin", "POST", TICKETS, ["a title"], "0"),
    "an array for one user": invalid("admin", "POST", USERS, [{"username": "x"}], "body"),
    # Wrong types: JSON types are taken as they are, never coerced.
    "username as number": invalid(
        "admin", "POST", USERS, {"username": 5, "password": PASSWORD}, "username"
    ),
    "is_staff as string": invalid("admin", "PATCH", OWN_USER, {"is_staff": "yes"}, "is_staff"),
    "user id as string": invalid("admin", "POST", AGENTS, {"user": "2"}, "user"),
    "capacity as string": invalid("admin", "PATCH", OWN_AGENT, {"capacity": "5"}, "capacity"),
    "capacity as float": invalid("admin", "PATCH", OWN_AGENT, {"capacity": 5.5}, "capacity"),
    "is_active as number": invalid("admin", "PATCH", OWN_AGENT, {"is_active": 1}, "is_active"),
    "title as list": invalid("admin", "POST", TICKETS, {"title": ["x"]}, "title"),
    "title null": invalid("admin", "PATCH", OWN_TICKET, {"title": None}, "title"),
    "email null": invalid("admin", "PATCH", OWN_USER, {"email": None}, "email"),
    "capacity null": invalid(
        "admin", "PUT", OWN_AGENT, {"capacity": None, "is_active": True}, "capacity"
    ),
    "bad item in a batch": invalid(
        "admin", "POST", TICKETS, [{"title": "ok"}, {"title": 7}], "1.title"
    ),
    # Missing fields name themselves.
    "user without username": invalid("admin", "POST", USERS, {"password": PASSWORD}, "username"),
    "user without password": invalid("admin", "POST", USERS, {"username": "nopass"}, "password"),
    "agent without user": invalid("admin", "POST", AGENTS, {"capacity": 3}, "user"),
    "ticket without title": invalid("admin", "POST", TICKETS, {"description": "d"}, "title"),
    "PUT ticket without description": invalid(
        "admin", "PUT", OWN_TICKET, {"title": "t"}, "description"
    ),
    "PUT agent without is_active": invalid("admin", "PUT", OWN_AGENT, {"capacity": 3}, "is_active"),
    "PUT user without is_active": invalid(
        "admin", "PUT", OWN_USER, {"username": "owner", "email": "", "is_staff": False}, "is_active"
    ),
    # Unknown fields are refused, never ignored.
    "unknown user field": invalid(
        "admin",
        "POST",
        USERS,
        {"username": "x", "password": PASSWORD, "is_superuser": True},
        "is_superuser",
    ),
    "unknown ticket field": invalid(
        "admin", "POST", TICKETS, {"title": "t", "priority": 1}, "priority"
    ),
    "agent's user not writable": invalid("admin", "PATCH", OWN_AGENT, {"user": 1}, "user"),
    # Out of range: the same limits as the database's CHECK constraints.
    "empty title": invalid("admin", "POST", TICKETS, {"title": ""}, "title"),
    "title of 201": invalid("admin", "POST", TICKETS, {"title": "x" * 201}, "title"),
    "description of 10001": invalid(
        "admin", "POST", TICKETS, {"title": "t", "description": "d" * 10_001}, "description"
    ),
    "NUL in a title": invalid("admin", "POST", TICKETS, {"title": "a\x00b"}, "title"),
    "empty batch": invalid("admin", "POST", TICKETS, [], "body"),
    "batch of 1001": invalid("admin", "POST", TICKETS, [{"title": "t"}] * 1001, "body"),
    "capacity -1": invalid("admin", "PATCH", OWN_AGENT, {"capacity": -1}, "capacity"),
    "capacity 1001": invalid("admin", "PATCH", OWN_AGENT, {"capacity": 1001}, "capacity"),
    "username with a space": invalid(
        "admin", "POST", USERS, {"username": "a b", "password": PASSWORD}, "username"
    ),
    "username of 151": invalid(
        "admin", "POST", USERS, {"username": "u" * 151, "password": PASSWORD}, "username"
    ),
    "password of 7": invalid(
        "admin", "POST", USERS, {"username": "shorty", "password": "1234567"}, "password"
    ),
    "malformed email": invalid("admin", "PATCH", OWN_USER, {"email": "not-an-email"}, "email"),
    "user id 0": invalid("admin", "POST", AGENTS, {"user": 0}, "user"),
    "user id beyond bigint": invalid("admin", "POST", AGENTS, {"user": 2**63}, "user"),
    "missing user": invalid("admin", "POST", AGENTS, {"user": 999_999}, "user"),
    # Mass assignment and self-promotion: status and agent are the dispatcher's, for anyone.
    "agent sets its ticket's status": invalid(
        "agent owner", "PATCH", OWN_TICKET, {"status": "sold"}, "status"
    ),
    "agent sets its ticket's agent": invalid(
        "agent owner", "PATCH", OWN_TICKET, {"agent": None}, "agent"
    ),
    "admin sets a ticket's status": invalid(
        "admin",
        "PUT",
        OWN_TICKET,
        {"title": "t", "description": "", "status": "unassigned"},
        "status",
    ),
    "admin creates an assigned ticket": invalid(
        "admin", "POST", TICKETS, {"title": "t", "agent": 1}, "agent"
    ),
    "admin sets held": invalid("admin", "PATCH", OWN_AGENT, {"held": 0}, "held"),
    # ... and what only admins may change is a 403 for the owner itself.
    "agent raises its capacity": forbidden("agent owner", "PATCH", OWN_AGENT, {"capacity": 1000}),
    "agent PUTs its capacity": forbidden(
        "agent owner", "PUT", OWN_AGENT, {"capacity": 0, "is_active": True}
    ),
    "agent deactivates itself": forbidden("agent owner", "PATCH", OWN_AGENT, {"is_active": False}),
    "agent makes itself staff": forbidden("agent owner", "PATCH", OWN_USER, {"is_staff": True}),
    "agent deactivates its user": forbidden("agent owner", "PATCH", OWN_USER, {"is_active": False}),
    "agent renames itself": forbidden("agent owner", "PATCH", OWN_USER, {"username": "boss"}),
    "agent PUTs itself staff": forbidden(
        "agent owner",
        "PUT",
        OWN_USER,
        {"username": "owner", "email": "", "is_staff": True, "is_active": True},
    ),
    "plain user makes itself staff": forbidden(
        "plain user", "PATCH", "/api/users/{plain_user}/", {"is_staff": True}
    ),
    # Size and media type.
    "body over 1 MiB": Case(
        "admin",
        "POST",
        TICKETS,
        413,
        "payload_too_large",
        data=b'{"title": "t", "description": "' + b"d" * MIB + b'"}',
        headers=JSON,
    ),
    "form body": Case(
        "admin",
        "POST",
        TICKETS,
        415,
        "unsupported_media_type",
        data=b"title=t",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    "text body": Case(
        "admin",
        "POST",
        USERS,
        415,
        "unsupported_media_type",
        data=b"{}",
        headers={"Content-Type": "text/plain"},
    ),
    # Query strings.
    "unknown status": Case(
        "admin", "GET", TICKETS + "?status=closed", 400, "invalid", names="status"
    ),
    "limit 0": Case("admin", "GET", TICKETS + "?limit=0", 400, "invalid", names="limit"),
    "limit 201": Case("admin", "GET", USERS + "?limit=201", 400, "invalid", names="limit"),
    "limit not a number": Case(
        "admin", "GET", AGENTS + "?limit=ten", 400, "invalid", names="limit"
    ),
    "negative offset": Case("admin", "GET", TICKETS + "?offset=-1", 400, "invalid", names="offset"),
    # Whole numbers as plain digits, each parameter once: Python's int() reads these.
    "limit with an underscore": Case(
        "admin", "GET", USERS + "?limit=1_0", 400, "invalid", names="limit"
    ),
    "limit with a plus": Case("admin", "GET", AGENTS + "?limit=+1", 400, "invalid", names="limit"),
    "offset in other digits": Case(
        "admin", "GET", TICKETS + "?offset=%D9%A1", 400, "invalid", names="offset"
    ),
    "limit given twice": Case(
        "admin", "GET", TICKETS + "?limit=5&limit=7", 400, "invalid", names="limit"
    ),
    "unknown parameter": Case(
        "admin", "GET", TICKETS + "?ordering=-id", 400, "invalid", names="ordering"
    ),
    "status on users": Case("admin", "GET", USERS + "?status=sold", 400, "invalid", names="status"),
    # A sale: 1 to 1000 ids, each a JSON integer within bigint.
    "sale without ids": invalid("agent owner", "POST", SELL, {}, "ticket_ids"),
    "sale of no ids": invalid("agent owner", "POST", SELL, {"ticket_ids": []}, "ticket_ids"),
    "sale of 1001 ids": invalid(
        "agent owner", "POST", SELL, {"ticket_ids": list(range(1, 1002))}, "ticket_ids"
    ),
    "sale of null": invalid("agent owner", "POST", SELL, {"ticket_ids": None}, "ticket_ids"),
    "sale of one id, not a list": invalid(
        "agent owner", "POST", SELL, {"ticket_ids": 1}, "ticket_ids"
    ),
    "sale of id 0": invalid("agent owner", "POST", SELL, {"ticket_ids": [0]}, "ticket_ids.0"),
    "sale of an id beyond bigint": invalid(
        "agent owner", "POST", SELL, {"ticket_ids": [2**63]}, "ticket_ids.0"
    ),
    "sale of a fractional id": invalid(
        "agent owner", "POST", SELL, {"ticket_ids": [1.5]}, "ticket_ids.0"
    ),
    "sale with an unknown field": invalid(
        "agent owner", "POST", SELL, {"ticket_ids": [1], "agent": 2}, "agent"
    ),
    # No such resource, no such method: the same JSON shape.
    "unknown path": Case("admin", "GET", "/api/nothing/", 404, "not_found"),
    "no trailing slash": Case("admin", "GET", "/api/users", 404, "not_found"),
    "non-numeric id": Case("admin", "GET", "/api/users/abc/", 404, "not_found"),
    "id 0": Case("admin", "GET", "/api/tickets/0/", 404, "not_found"),
    # int() reads any script's digits: ticket 1 must not answer to these.
    "id in Arabic-Indic digits": Case("admin", "GET", "/api/tickets/\u0661/", 404, "not_found"),
    "id in full-width digits": Case("admin", "GET", "/api/tickets/\uff11/", 404, "not_found"),
    "huge id": Case("admin", "GET", "/api/agents/99999999999999999999/", 404, "not_found"),
    "id beyond bigint": Case("admin", "GET", "/api/agents/9223372036854775808/", 404, "not_found"),
    # One spelling per resource: ticket 1 must not also answer as 01.
    "id with a leading zero": Case("admin", "GET", "/api/tickets/01/", 404, "not_found"),
    "largest id": Case("admin", "GET", "/api/tickets/9223372036854775807/", 404, "not_found"),
    "missing user id": Case("admin", "GET", "/api/users/999999/", 404, "not_found"),
    "missing ticket": Case(
        "admin", "PATCH", "/api/tickets/999999/", 404, "not_found", json={"title": "t"}
    ),
    "DELETE on a list": Case("admin", "DELETE", USERS, 405, "method_not_allowed"),
    "POST on an object": Case("admin", "POST", OWN_TICKET, 405, "method_not_allowed", json={}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_refused(world: World, shared: Served, case: Case) -> None:
    before = await dump_tables(shared.db)
    response = await shared.client.request(
        case.method,
        case.path.format(**world.ids),
        json=case.json,
        # A stream: aiohttp warns about large bodies given as bytes.
        data=io.BytesIO(case.data) if case.data is not None else None,
        headers={**world.headers[case.role], **case.headers},
    )
    payload = await response.json()
    assert response.status == case.status, payload
    assert response.headers["Content-Type"] == "application/json"  # as every success says
    assert set(payload) == {"error", "detail"}, payload
    assert payload["error"] == case.error, payload
    if case.names is not None:
        assert case.names in {item["field"] for item in payload["detail"]}, payload
    assert await dump_tables(shared.db) == before


async def test_a_body_that_is_the_gzip_it_claims_is_read(world: World, shared: Served) -> None:
    """The refusal above is of bad data, not of compression."""
    response = await shared.client.post(
        TICKETS,
        data=io.BytesIO(gzip.compress(b'{"title": "zipped"}')),
        headers={**world.headers["admin"], **JSON, "Content-Encoding": "gzip"},
    )
    created = await response.json()
    assert response.status == 201, created
    removed = await shared.client.delete(
        f"{TICKETS}{created['id']}/", headers=world.headers["admin"]
    )
    assert removed.status == 204


async def test_a_body_nested_too_deeply_is_named_so(world: World, shared: Served) -> None:
    response = await shared.client.post(
        SELL,
        data=io.BytesIO(b'{"ticket_ids": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        headers={**world.headers["agent owner"], **JSON},
    )
    payload = await response.json()
    assert response.status == 400, payload
    assert payload["detail"] == "The request body is nested too deeply to read."


async def test_a_sale_naming_its_ids_twice_is_refused(world: World, shared: Served) -> None:
    """Python keeps a repeated key's last value: this sold the owner's ticket, named second,
    where anything reading the first (a proxy, a log, another parser) saw an unheld one."""
    before = await dump_tables(shared.db)
    first, last = world.ids["free_ticket"], world.ids["owner_ticket"]
    response = await shared.client.post(
        SELL,
        data=f'{{"ticket_ids": [{first}], "ticket_ids": [{last}]}}'.encode(),
        headers={**world.headers["agent owner"], **JSON},
    )
    payload = await response.json()
    assert response.status == 400, payload
    assert payload == {
        "error": "bad_request",
        "detail": 'The request body names the key "ticket_ids" more than once in one object;'
        " send each key once.",
    }
    assert await dump_tables(shared.db) == before


@pytest.mark.parametrize(
    "spell", [str, lambda ticket_id: ticket_id == 1], ids=["as a string", "as true"]
)
async def test_a_sale_names_its_tickets_by_json_integers_only(
    world: World, shared: Served, spell: Callable[[int], Any]
) -> None:
    """The owner holds this ticket, so a lax reading of `"1"` or `true` would sell it."""
    held = world.ids["owner_ticket"]
    assert held == 1, "the world's first ticket is id 1, the one `true` would name"
    before = await dump_tables(shared.db)
    response = await shared.client.post(
        SELL, json={"ticket_ids": [spell(held)]}, headers=world.headers["agent owner"]
    )
    payload = await response.json()
    assert response.status == 400, payload
    assert [(d["field"], d["type"]) for d in payload["detail"]] == [("ticket_ids.0", "int_type")]
    assert await dump_tables(shared.db) == before


@pytest.mark.parametrize(
    ("role", "path", "body"),
    [
        ("agent owner", OWN_AGENT, {"capacity": 15, "is_active": True}),
        ("agent owner", OWN_USER, {"username": "owner", "is_staff": False, "is_active": True}),
        ("plain user", "/api/users/{plain_user}/", {"is_staff": False}),
    ],
    ids=["agent's own capacity", "agent's own user fields", "plain user's own is_staff"],
)
async def test_sending_a_current_value_is_not_a_change(
    world: World, shared: Served, role: str, path: str, body: dict[str, Any]
) -> None:
    before = await dump_tables(shared.db)
    response = await shared.client.patch(
        path.format(**world.ids), json=body, headers=world.headers[role]
    )
    assert response.status == 200, await response.text()
    assert body.items() <= (await response.json()).items()
    assert await dump_tables(shared.db) == before


async def test_no_error_leaks_a_stack_or_the_database(world: World, shared: Served) -> None:
    """A title the database cannot store is refused by validation, in plain words."""
    response = await shared.client.post(
        TICKETS, json={"title": "a\x00b"}, headers=world.headers["admin"]
    )
    payload = await response.json()
    assert response.status == 400
    assert [(d["field"], d["type"]) for d in payload["detail"]] == [
        ("title", "string_pattern_mismatch")
    ]
    assert "postgres" not in str(payload).lower()
    assert "Traceback" not in str(payload)
