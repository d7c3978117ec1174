"""The baseline service the benchmark compares us with: the same two endpoints, the usual way.

This is a comparison target, not the product. It runs the SAME stack as `tickets serve` —
aiohttp, the asyncpg pool opened by web/app.py's `_database` (same DB_POOL_MAX_SIZE), the
token authentication, middlewares, JSON error shape and JSON serialisation of web/ — but
does NOT start the dispatcher. Instead each request is one database transaction:

* fetch: lock the agent row, then in one statement read its held tickets and top it up to its
  capacity with the oldest unassigned tickets via `SELECT … ORDER BY id LIMIT n FOR UPDATE
  SKIP LOCKED` (the product's partial index `tickets_unassigned_by_id`), logging to
  ticket_events like the product; the held read uses an index of the baseline's own,
  built at start-up in its copy of the database (`_own_indexes`);
* sell: one guarded `UPDATE … WHERE agent_id = caller AND status = 'assigned'`, all or
  nothing (rolled back with 409 and the same `rejected: {id: reason}` body when some ticket
  is not the caller's); selling one's own sold ticket again is a no-op, as in the product.

Its SQL lives in bench/baseline.sql, beside it, on purpose: it is not the product's.

Run: `DATABASE_URL=… python -m bench.baseline --port 8001` (from the repository root).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from config.logs import configure as configure_logging
from config.settings import Settings
from dispatcher.batch import assigned_ticket
from storage.errors import translated
from storage.queries import parse
from web.app import _database, _security
from web.errors import Conflict, PermissionDenied, error_middleware
from web.handlers.dispatch import _agent_id
from web.keys import DATABASE, SETTINGS
from web.middleware import request_context_middleware
from web.routing import Operation, add_operations, json_response, parse_body, principal
from web.schemas import SellRequest

SQL: dict[str, str] = parse((Path(__file__).parent / "baseline.sql").read_text())

# The product's reasons, so a 409 body reads the same (keep in sync with dispatcher/core.py).
_NOT_HELD = {
    "unassigned": "unassigned",
    "assigned": "held_by_another_agent",
    "sold": "sold_by_another_agent",
}


async def fetch_tickets(request: web.Request) -> web.Response:
    agent_id = _agent_id(await principal(request))
    pool = request.app[DATABASE].pool
    with translated():
        async with pool.acquire() as connection, connection.transaction():
            agent = await connection.fetchrow(SQL["baseline_agent_lock"], agent_id)
            if agent is None or not agent["is_active"]:
                raise PermissionDenied("Only active agents may fetch or sell tickets.")
            rows = await connection.fetch(SQL["baseline_fetch_top_up"], agent_id, agent["capacity"])
    # Timestamps as asyncpg decoded them: the baseline reads its rows as it always has.
    tickets = [assigned_ticket(row, agent_id, timestamp=_as_decoded) for row in rows]
    return json_response({"tickets": tickets})


def _as_decoded(value: datetime) -> datetime:
    return value


class _Rejected(Exception):
    def __init__(self, rejected: dict[str, str]) -> None:
        super().__init__()
        self.rejected = rejected


def _rejections(
    agent_id: int, asked: Sequence[int], facts: dict[int, Any]
) -> tuple[list[int], dict[str, str]]:
    """(ids the caller had already sold, {id: reason} for the others)."""
    already: list[int] = []
    rejected: dict[str, str] = {}
    for ticket in asked:
        fact = facts.get(ticket)
        if fact is None:
            rejected[str(ticket)] = "not_found"
        elif fact["status"] == "sold" and fact["agent_id"] == agent_id:
            already.append(ticket)
        else:
            rejected[str(ticket)] = _NOT_HELD[fact["status"]]
    return already, rejected


async def sell_tickets(request: web.Request) -> web.Response:
    agent_id = _agent_id(await principal(request))
    body = await parse_body(request, SellRequest)
    asked = sorted(set(body.ticket_ids))
    pool = request.app[DATABASE].pool
    try:
        with translated():
            async with pool.acquire() as connection, connection.transaction():
                sold = {
                    r["id"]
                    for r in await connection.fetch(SQL["baseline_sell_if_held"], agent_id, asked)
                }
                if len(sold) != len(asked):
                    rest = [t for t in asked if t not in sold]
                    rows = await connection.fetch(SQL["baseline_ticket_facts"], rest)
                    _, rejected = _rejections(agent_id, rest, {r["id"]: r for r in rows})
                    if rejected:
                        raise _Rejected(rejected)  # rolls the transaction back
    except _Rejected as refusal:
        raise Conflict(
            "Some tickets are not held by the caller; nothing was sold.",
            extra={"rejected": dict(sorted(refusal.rejected.items()))},
        ) from None
    return json_response({"sold": asked})


OPERATIONS = [
    Operation(
        "POST",
        "/api/tickets/fetch_tickets/",
        fetch_tickets,
        summary="Baseline fetch: one transaction, FOR UPDATE SKIP LOCKED",
        tag="baseline",
    ),
    Operation(
        "POST",
        "/api/tickets/sell_tickets/",
        sell_tickets,
        summary="Baseline sell: one transaction, guarded UPDATE",
        tag="baseline",
    ),
]


async def _own_indexes(app: web.Application) -> AsyncIterator[None]:
    """The index a per-request design needs and the product dropped (migration 0006): every
    baseline fetch reads the caller's held tickets from the database, where ours reads them
    from memory. Built in the baseline's own copy of the database, before it takes traffic."""
    async with app[DATABASE].pool.acquire() as connection:
        await connection.execute(SQL["baseline_indexes"])
    yield


def create_baseline_app(settings: Settings) -> web.Application:
    """The product's app pieces (middlewares, database, security) with the baseline's routes
    and no dispatcher."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[request_context_middleware, error_middleware],
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.extend([_database, _own_indexes, _security])
    add_operations(app, OPERATIONS)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    parser.add_argument("--host", default=None, help="default: $HOST or 127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: $PORT or 8000")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings(**overrides)
    # Exactly what `tickets serve` does (cli/main.py), minus the dispatcher.
    configure_logging(level=settings.log_level, log_format=settings.log_format)
    web.run_app(
        create_baseline_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=10,
    )


if __name__ == "__main__":
    main()
