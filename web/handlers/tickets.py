"""Tickets: admins create, edit and delete them; an active agent sees and edits its own.

Refusals follow the rule in web/handlers/users.py. An agent sees only the tickets assigned to
it or sold by it, in lists and one by one, so any other ticket is 404 to it, exactly as if it
did not exist; plain users (and deactivated agents) see none, and get an empty list. An agent
may change the title and description of its own tickets; deleting one is 403.

`status` and `agent` are never written here: the request models forbid them (400), and
deletion goes through the dispatcher, which holds the queue in memory. Creation is a plain
insert; the dispatcher hears of new tickets through the table's NOTIFY trigger, and this
process's own dispatcher, if it leads, at once: a fetch sent after the 201 sees the ticket.
"""

from __future__ import annotations

from typing import Any

import pydantic
import structlog
from aiohttp import web

from web.auth import Principal, require_admin
from web.errors import NotFound, PermissionDenied
from web.keys import DATABASE, DISPATCHER
from web.pagination import page
from web.routing import Operation, json_response, parse_body, parse_query, path_id, principal
from web.schemas import (
    Page,
    Ticket,
    TicketBatch,
    TicketCreate,
    TicketQuery,
    TicketReplace,
    TicketUpdate,
)

log = structlog.get_logger(__name__)

_ONE: pydantic.TypeAdapter[TicketCreate] = pydantic.TypeAdapter(TicketCreate)
_MANY: pydantic.TypeAdapter[list[TicketCreate]] = pydantic.TypeAdapter(TicketBatch)


async def create_tickets(request: web.Request) -> web.Response:
    """One object makes one ticket; an array of 1..1000 makes them all or none, in order."""
    caller = await principal(request)
    require_admin(caller)
    # The JSON's shape picks the model, so errors name `title` or `3.title`, never both
    # branches of a union. A validation error becomes a 400 in web/errors.py.
    data = await parse_body(request, Any)
    many = isinstance(data, list)
    given = _MANY.validate_python(data) if many else [_ONE.validate_python(data)]
    rows = await request.app[DATABASE].fetch(
        "tickets_insert_many",
        [ticket.title for ticket in given],
        [ticket.description for ticket in given],
    )
    tickets = [Ticket.model_validate(row) for row in sorted(rows, key=lambda row: row["id"])]
    request.app[DISPATCHER].tickets_inserted(tickets[0].id, tickets[-1].id)
    log.info("tickets_created", count=len(tickets), first_id=tickets[0].id, by=caller.user_id)
    return json_response(tickets if many else tickets[0], status=201)


async def list_tickets(request: web.Request) -> web.Response:
    caller = await principal(request)
    query = parse_query(request, TicketQuery)
    database = request.app[DATABASE]
    window = (query.limit, query.offset, query.after or 0)
    if caller.is_admin and query.status is None:
        count = await database.fetchval("tickets_count")
        rows = await database.fetch("tickets_page", *window)
    elif caller.is_admin and query.status == "unassigned":
        count = await database.fetchval("tickets_count_unassigned")
        rows = await database.fetch("tickets_page_unassigned", *window)
    elif caller.is_admin:
        count = await database.fetchval("tickets_count_by_status", query.status)
        rows = await database.fetch("tickets_page_by_status", query.status, *window)
    elif caller.is_agent:
        mine = (caller.agent_id, query.status)
        count = await database.fetchval("tickets_count_by_agent", *mine)
        rows = await database.fetch("tickets_page_by_agent", *mine, *window)
    else:
        count, rows = 0, []
    return json_response(page(request, query, count, [Ticket.model_validate(row) for row in rows]))


def _owns(caller: Principal, ticket: dict[str, Any]) -> bool:
    return caller.is_agent and ticket["agent"] == caller.agent_id


async def _visible_ticket(request: web.Request, caller: Principal) -> dict[str, Any]:
    """The ticket in the path if the caller may see it: admins all, agents their own (404)."""
    ticket_id = path_id(request)
    if not (caller.is_admin or caller.is_agent):
        raise NotFound()
    row = await request.app[DATABASE].fetchrow("tickets_by_id", ticket_id)
    if row is None or not (caller.is_admin or _owns(caller, row)):
        raise NotFound()
    return row


async def read_ticket(request: web.Request) -> web.Response:
    row = await _visible_ticket(request, await principal(request))
    return json_response(Ticket.model_validate(row))


async def _update_ticket(
    request: web.Request, kind: type[TicketReplace | TicketUpdate]
) -> web.Response:
    caller = await principal(request)
    current = await _visible_ticket(request, caller)
    body = await parse_body(request, kind)
    changes = body.model_dump(exclude_unset=True)
    # An agent's edit only lands while the ticket is still its own (it may have been released
    # since it was read); an admin's has no such guard.
    holder = None if caller.is_admin else caller.agent_id
    row = await request.app[DATABASE].fetchrow(
        "tickets_update_text_if_agent",
        current["id"],
        changes.get("title"),
        changes.get("description"),
        holder,
    )
    if row is None:
        raise NotFound()
    log.info("ticket_updated", ticket_id=row["id"], fields=sorted(changes), by=caller.user_id)
    return json_response(Ticket.model_validate(row))


async def replace_ticket(request: web.Request) -> web.Response:
    return await _update_ticket(request, TicketReplace)


async def update_ticket(request: web.Request) -> web.Response:
    return await _update_ticket(request, TicketUpdate)


async def delete_ticket(request: web.Request) -> web.Response:
    """Only unassigned tickets can be deleted; an assigned or sold one is a 409 (TicketHeld)."""
    caller = await principal(request)
    row = await _visible_ticket(request, caller)
    if not caller.is_admin:
        raise PermissionDenied("Only admins may delete tickets.")
    await request.app[DISPATCHER].delete_ticket(row["id"])
    log.info("ticket_deleted", ticket_id=row["id"], by=caller.user_id)
    return web.Response(status=204)


_TICKET = "/api/tickets/{id}/"

OPERATIONS = [
    Operation(
        "POST",
        "/api/tickets/",
        create_tickets,
        summary="Create a ticket, or up to 1000 at once from an array (admins)",
        description="An array is created all or nothing, in order, and answered in id order.",
        tag="tickets",
        body=TicketCreate | TicketBatch,
        responses={201: Ticket | list[Ticket]},
    ),
    Operation(
        "GET",
        "/api/tickets/",
        list_tickets,
        summary="List tickets in id order: admins see all, agents their own",
        tag="tickets",
        query=TicketQuery,
        responses={200: Page[Ticket]},
    ),
    Operation(
        "GET",
        _TICKET,
        read_ticket,
        summary="Read a ticket (admins, or the agent it is assigned to)",
        tag="tickets",
        responses={200: Ticket},
    ),
    Operation(
        "PUT",
        _TICKET,
        replace_ticket,
        summary="Replace a ticket's title and description (admins, or its agent)",
        tag="tickets",
        body=TicketReplace,
        responses={200: Ticket},
    ),
    Operation(
        "PATCH",
        _TICKET,
        update_ticket,
        summary="Change a ticket's title or description (admins, or its agent)",
        tag="tickets",
        body=TicketUpdate,
        responses={200: Ticket},
    ),
    Operation(
        "DELETE",
        _TICKET,
        delete_ticket,
        summary="Delete an unassigned ticket (admins)",
        description="409 when it is assigned or sold.",
        tag="tickets",
        responses={204: None},
    ),
]
