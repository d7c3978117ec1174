"""fetch_tickets and sell_tickets: the agent's side of the dispatcher."""

from __future__ import annotations

from aiohttp import web

from web.auth import Principal
from web.errors import PermissionDenied
from web.keys import DISPATCHER
from web.routing import Operation, json_response, parse_body, principal
from web.schemas import FetchResponse, SellRejectedBody, SellRequest, SellResponse


def _agent_id(caller: Principal) -> int:
    # Admins are not agents, even with an agent row: dispatching is for the agents' side.
    if caller.is_admin or not caller.is_agent or caller.agent_id is None:
        raise PermissionDenied("Only active agents may fetch or sell tickets.")
    return caller.agent_id


async def fetch_tickets(request: web.Request) -> web.Response:
    agent_id = _agent_id(await principal(request))
    tickets = await request.app[DISPATCHER].fetch(agent_id)
    return json_response({"tickets": tickets})


async def sell_tickets(request: web.Request) -> web.Response:
    agent_id = _agent_id(await principal(request))
    body = await parse_body(request, SellRequest)
    sold = await request.app[DISPATCHER].sell(agent_id, body.ticket_ids)
    return json_response({"sold": sold})


OPERATIONS = [
    Operation(
        "POST",
        "/api/tickets/fetch_tickets/",
        fetch_tickets,
        summary="Get every ticket you hold, topped up to your capacity, oldest first",
        description=(
            "Idempotent: a repeated call returns the same tickets plus any top-up, so a client"
            " that lost a response can retry. 503 with Retry-After on a standby or when the"
            " batch could not be committed (nothing was assigned)."
        ),
        tag="dispatch",
        responses={200: FetchResponse},
    ),
    Operation(
        "POST",
        "/api/tickets/sell_tickets/",
        sell_tickets,
        summary="Sell tickets you hold (all or nothing)",
        description=(
            "Every id must be held by the caller; one the caller already sold is a no-op"
            " success. Otherwise 409 with `rejected: {id: reason}` and nothing changes."
        ),
        tag="dispatch",
        body=SellRequest,
        responses={200: SellResponse, 409: SellRejectedBody},
    ),
]
