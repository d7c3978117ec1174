"""The whole route table, gathered from the handler modules."""

from __future__ import annotations

from web.handlers import agents, auth, dispatch, docs, health, tickets, users
from web.routing import Operation

# dispatch comes before the tickets' `{id}` routes, whose pattern would also match its paths.
OPERATIONS: list[Operation] = [
    *auth.OPERATIONS,
    *dispatch.OPERATIONS,
    *docs.OPERATIONS,
    *users.OPERATIONS,
    *agents.OPERATIONS,
    *tickets.OPERATIONS,
    *health.OPERATIONS,
]
