"""Statuses beyond http.HTTPStatus that the access log, the metrics and the errors share."""

from __future__ import annotations

from aiohttp import web

# nginx's "client closed request": the client hung up before it was answered. Never sent
# (nobody is left to read it); it keeps such requests apart from the server's own failures.
CLIENT_CLOSED_REQUEST = 499


def client_gone(request: web.BaseRequest) -> bool:
    """The request's own connection is closed or closing (a reset of another connection,
    a database driver's, is a failure of ours)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def answered_status(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """The status a handler's response goes out with, or 499 when its client hung up first:
    the handler ran to completion (a fetch's assignment is kept; a retry returns it), but
    nobody reads the answer. An attribute check or two: this runs on every request."""
    if client_gone(request) and not response.prepared:
        return CLIENT_CLOSED_REQUEST
    return response.status
