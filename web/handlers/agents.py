"""Agents: admins manage them; active agents may list them and read their own record.

Refusals follow the rule in web/handlers/users.py: 404 when the caller may not see the agent
at all (plain users, and deactivated agents, see no agent records), 403 when it can see it
(an active agent lists every agent) but may not do this to it. An agent may not change its
own capacity or activity; sending the value it already has is not a change.

Capacity, activity and deletion go through the dispatcher, never straight to SQL: it holds
them in memory and releases tickets as they change. Creation is a plain insert, as the
dispatcher meets a new agent on its first fetch.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from storage.errors import Conflict as StorageConflict
from web.auth import Principal, require_admin, require_admin_or_agent
from web.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from web.keys import AUTHENTICATOR, DATABASE, DISPATCHER
from web.pagination import page
from web.routing import Operation, json_response, parse_body, parse_query, path_id, principal
from web.schemas import (
    Agent,
    AgentCreate,
    AgentReplace,
    AgentUpdate,
    Page,
    PageQuery,
    ReleaseResponse,
)

log = structlog.get_logger(__name__)


async def create_agent(request: web.Request) -> web.Response:
    caller = await principal(request)
    require_admin(caller)
    body = await parse_body(request, AgentCreate)
    try:
        row = await request.app[DATABASE].fetchrow(
            "agents_insert_if_user_exists", body.user, body.capacity
        )
    except StorageConflict:
        raise Conflict("That user already has an agent.") from None
    if row is None:
        raise ValidationFailed([{"field": "user", "message": "No such user.", "type": "not_found"}])
    request.app[AUTHENTICATOR].forget_user(row["user"])
    log.info("agent_created", agent_id=row["id"], user_id=row["user"], by=caller.user_id)
    return json_response(Agent.model_validate(row), status=201)


async def list_agents(request: web.Request) -> web.Response:
    caller = await principal(request)
    require_admin_or_agent(caller)
    query = parse_query(request, PageQuery)
    database = request.app[DATABASE]
    count = await database.fetchval("agents_count")
    rows = await database.fetch("agents_page", query.limit, query.offset, query.after or 0)
    return json_response(page(request, query, count, [Agent.model_validate(row) for row in rows]))


async def _visible_agent(request: web.Request, caller: Principal) -> dict[str, Any]:
    """The agent in the path, if the caller may see it (404 otherwise) and act on it (403)."""
    agent_id = path_id(request)
    if not (caller.is_admin or caller.is_agent):
        raise NotFound()
    row = await request.app[DATABASE].fetchrow("agents_by_id", agent_id)
    if row is None:
        raise NotFound()
    if not (caller.is_admin or agent_id == caller.agent_id):
        raise PermissionDenied("Agents may read only their own agent record.")
    return row


async def read_agent(request: web.Request) -> web.Response:
    row = await _visible_agent(request, await principal(request))
    return json_response(Agent.model_validate(row))


async def _update_agent(
    request: web.Request, kind: type[AgentReplace | AgentUpdate]
) -> web.Response:
    caller = await principal(request)
    current = await _visible_agent(request, caller)
    body = await parse_body(request, kind)
    changes = body.model_dump(exclude_unset=True)
    if not caller.is_admin:
        refused = sorted(name for name, value in changes.items() if value != current[name])
        if refused:
            raise PermissionDenied(f"Only admins may change an agent's {', '.join(refused)}.")
        return json_response(Agent.model_validate(current))
    if changes:
        released = await request.app[DISPATCHER].update_agent(current["id"], **changes)
        request.app[AUTHENTICATOR].forget_user(current["user"])
        log.info(
            "agent_updated",
            agent_id=current["id"],
            fields=sorted(changes),
            released=len(released),
            by=caller.user_id,
        )
    row = await request.app[DATABASE].fetchrow("agents_by_id", current["id"])
    if row is None:
        raise NotFound()
    return json_response(Agent.model_validate(row))


async def replace_agent(request: web.Request) -> web.Response:
    return await _update_agent(request, AgentReplace)


async def update_agent(request: web.Request) -> web.Response:
    return await _update_agent(request, AgentUpdate)


async def delete_agent_through_dispatcher(request: web.Request, agent_id: int) -> None:
    """Delete through the dispatcher: 409 while the agent holds tickets (AgentHoldsTickets,
    mapped by web/errors.py) or has sold any (their rows keep referring to it)."""
    try:
        await request.app[DISPATCHER].delete_agent(agent_id)
    except StorageConflict:
        raise Conflict(
            "The agent has sold tickets, so it cannot be deleted; "
            "deactivate it instead (is_active: false)."
        ) from None
    log.info("agent_deleted", agent_id=agent_id)


async def delete_agent(request: web.Request) -> web.Response:
    caller = await principal(request)
    row = await _visible_agent(request, caller)
    if not caller.is_admin:
        raise PermissionDenied("Only admins may delete agents.")
    await delete_agent_through_dispatcher(request, row["id"])
    request.app[AUTHENTICATOR].forget_user(row["user"])
    return web.Response(status=204)


async def release_agent(request: web.Request) -> web.Response:
    """Give every ticket the agent holds back to the queue, each at its creation-order place,
    so they go out before every newer waiting ticket."""
    caller = await principal(request)
    row = await _visible_agent(request, caller)
    if not caller.is_admin:
        raise PermissionDenied("Only admins may release an agent's tickets.")
    released = await request.app[DISPATCHER].release_agent(row["id"])
    log.info("agent_released", agent_id=row["id"], released=len(released), by=caller.user_id)
    return json_response(ReleaseResponse(released=released))


_AGENT = "/api/agents/{id}/"

OPERATIONS = [
    Operation(
        "POST",
        "/api/agents/",
        create_agent,
        summary="Make a user an agent (admins)",
        description="400 naming `user` when there is no such user; 409 when it is an agent.",
        tag="agents",
        body=AgentCreate,
        responses={201: Agent},
    ),
    Operation(
        "GET",
        "/api/agents/",
        list_agents,
        summary="List agents in id order (admins and agents)",
        tag="agents",
        query=PageQuery,
        responses={200: Page[Agent]},
    ),
    Operation(
        "GET",
        _AGENT,
        read_agent,
        summary="Read an agent (admins, or the agent itself)",
        tag="agents",
        responses={200: Agent},
    ),
    Operation(
        "PUT",
        _AGENT,
        replace_agent,
        summary="Set an agent's capacity and activity (admins)",
        description="Lowering capacity or deactivating releases tickets back to the queue.",
        tag="agents",
        body=AgentReplace,
        responses={200: Agent},
    ),
    Operation(
        "PATCH",
        _AGENT,
        update_agent,
        summary="Change an agent's capacity or activity (admins)",
        description="Lowering capacity or deactivating releases tickets back to the queue.",
        tag="agents",
        body=AgentUpdate,
        responses={200: Agent},
    ),
    Operation(
        "DELETE",
        _AGENT,
        delete_agent,
        summary="Delete an agent that holds no tickets and has sold none (admins)",
        description="409 otherwise: release its tickets, or deactivate it instead.",
        tag="agents",
        responses={204: None},
    ),
    Operation(
        "POST",
        "/api/agents/{id}/release/",
        release_agent,
        summary="Return the agent's held tickets to the queue (admins)",
        description=(
            "Each ticket goes back to its creation-order place, ahead of every newer waiting"
            " ticket. Answers the released ids, oldest first."
        ),
        tag="agents",
        responses={200: ReleaseResponse},
    ),
]
