"""Request ids and the access log.

Every request gets an id (taken from `X-Request-ID` when it looks sane, else generated),
bound into every log line written while serving it and echoed in the response.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

import structlog
from aiohttp import web

from web.metrics import route_label
from web.statuses import CLIENT_CLOSED_REQUEST, answered_status

log = structlog.get_logger("web.access")

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
REQUEST_ID = web.RequestKey("request_id", str)
USER_ID = web.RequestKey("user_id", int)


@web.middleware
async def request_context_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    offered = request.headers.get("X-Request-ID", "")
    request_id = offered if _SANE_REQUEST_ID.match(offered) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    status = 500
    try:
        response = await handler(request)
        status = answered_status(request, response)
        headers = response.headers
        headers["X-Request-ID"] = request_id
        # Answers carry tokens and private data: no cache (a browser's, a proxy's) keeps one,
        # and no browser reads JSON as anything else.
        headers.setdefault("Cache-Control", "no-store")
        headers["X-Content-Type-Options"] = "nosniff"
        return response
    except asyncio.CancelledError:
        status = CLIENT_CLOSED_REQUEST  # the client hung up (or the server stops): unanswered
        raise
    finally:
        # Building the line's fields cost several µs a request even when the level dropped it.
        if log.is_enabled_for(logging.INFO):
            log.info(
                "request",
                method=request.method,
                route=route_label(request),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                user_id=request.get(USER_ID),
            )
        structlog.contextvars.unbind_contextvars("request_id")
